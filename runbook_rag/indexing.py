"""Building an index: sources -> chunks -> embeddings -> a new published generation.

An index folder holds generations (``gen-*``), each a complete Chroma store plus a
``manifest.json``, and a ``CURRENT`` pointer naming the one being served. A build
writes a new generation and then publishes it by atomically replacing the pointer
(write a temp file, fsync, ``os.replace``), so a failed or killed build never
touches what readers see. Only one build runs per index at a time (a file lock).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .access import AccessMap, label_key
from .chunking import chunk_document
from .embedding import Embedder, SentenceTransformerEmbedder
from .errors import ConfigError, IndexNotFoundError, IndexStateError, SourceError
from .records import BuildReport, Chunk, Quarantined, Skipped
from .redaction import redact, redact_document
from .screening import screen
from .sources import DEFAULT_MAX_BYTES, load_documents

SCHEMA_VERSION = 1
POINTER = "CURRENT"
LOCK = ".build.lock"
ENCODERS = "encoders"


class Manifest(BaseModel):
    """What a generation holds and how it was built (``manifest.json``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int
    generation: str
    built_at: str
    model_id: str
    dimension: int
    max_tokens: int
    package_version: str
    documents: int
    chunks: int
    label_sets: list[str]
    skipped: list[dict[str, object]]
    query_encoder: str | None = None
    findings: dict[str, dict[str, int]] = {}
    quarantined: list[dict[str, object]] = []

    @staticmethod
    def report_fields(
        documents: int,
        skipped: list[Skipped],
        findings: dict[str, dict[str, int]],
        quarantined: list[Quarantined],
    ) -> dict[str, Any]:
        """The build-report part of a manifest (counts only: never a value)."""
        return {
            "documents": documents,
            "skipped": [s.to_dict() for s in skipped],
            "findings": findings,
            "quarantined": [q.to_dict() for q in quarantined],
        }


def build_index(
    source_dirs: Sequence[Path | str],
    *,
    index_path: Path | str,
    embedder: Embedder,
    access_map: AccessMap | None = None,
    allow_empty: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> BuildReport:
    """Index every runbook under ``source_dirs`` into a new generation and publish it."""
    started = time.perf_counter()
    index_path = Path(index_path)
    for source_dir in map(Path, source_dirs):
        if not source_dir.is_dir():
            raise ConfigError("source folder does not exist or is not a folder", path=source_dir)
    index_path.mkdir(parents=True, exist_ok=True)
    with _build_lock(index_path):
        loaded = load_documents(source_dirs, access_map=access_map, max_bytes=max_bytes)
        skipped = list(loaded.skipped)
        findings: dict[str, dict[str, int]] = {}
        quarantined: list[Quarantined] = []
        chunks: list[Chunk] = []
        kept = 0
        for raw in loaded.documents:
            # Redaction sits here, between parsing and everything else.
            doc, counts = redact_document(raw)
            if counts:
                findings[doc.source] = counts
            try:
                doc_chunks = chunk_document(
                    doc, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens
                )
            except SourceError as exc:
                skipped.append(Skipped(doc.source, redact(exc.reason).text, exc.line))
                continue
            clean = []
            for chunk in doc_chunks:
                flag = None if doc.allow_instructions else screen(chunk.text)
                if flag is None:
                    clean.append(chunk)
                else:
                    quarantined.append(Quarantined(doc.source, chunk.start_line, chunk.end_line, flag.rule))
            if clean:
                kept += 1
                chunks.extend(clean)
            else:
                reason = "every passage was quarantined" if doc_chunks else "no indexable text"
                skipped.append(Skipped(doc.source, reason))
        if not chunks and not allow_empty:
            raise ConfigError(
                "nothing to index: no document yielded chunks; refusing to publish an empty index "
                "(pass allow_empty / --allow-empty to do it anyway)",
                path=", ".join(map(str, source_dirs)),
            )
        skipped.sort(key=lambda s: s.source)
        embedded = _write_generation(
            index_path,
            chunks,
            embedder,
            Manifest.report_fields(kept, skipped, findings, quarantined),
        )
        generation = read_pointer(index_path)
        assert generation is not None
        _remove_stale_generations(index_path)
    return BuildReport(
        documents=kept,
        chunks=len(chunks),
        embedded=embedded,
        skipped=tuple(skipped),
        seconds=time.perf_counter() - started,
        generation=generation,
        warnings=tuple(loaded.warnings),
        findings=findings,
        quarantined=tuple(quarantined),
    )


def _write_generation(
    index_path: Path, chunks: list[Chunk], embedder: Embedder, report: dict[str, Any]
) -> int:
    from .store import ChromaStore

    name = "gen-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(3)
    gen_dir = index_path / name
    try:
        vectors = embedder.embed([c.embed_text for c in chunks])
        store = ChromaStore(gen_dir, create=True)
        store.add(chunks, vectors)
        query_encoder = None
        if isinstance(embedder, SentenceTransformerEmbedder):
            encoder = f"{ENCODERS}/{embedder.fingerprint}"
            if embedder.export_query_encoder(index_path / encoder):
                query_encoder = encoder
        manifest = Manifest(
            schema_version=SCHEMA_VERSION,
            generation=name,
            built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            model_id=embedder.model_id,
            dimension=embedder.dimension,
            max_tokens=embedder.max_tokens,
            package_version=_package_version(),
            chunks=len(chunks),
            label_sets=sorted({label_key(c.labels) for c in chunks}),
            query_encoder=query_encoder,
            **report,
        )
        _atomic_write(gen_dir / "manifest.json", manifest.model_dump_json(indent=2))
        _atomic_write(index_path / POINTER, name + "\n")
    except BaseException:
        shutil.rmtree(gen_dir, ignore_errors=True)
        raise
    return len(chunks)


def read_pointer(index_path: Path) -> str | None:
    """The name of the published generation, or None when nothing is published."""
    try:
        name = (index_path / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def load_manifest(index_path: Path) -> tuple[Path, Manifest]:
    """The published generation's folder and manifest."""
    name = read_pointer(index_path)
    if name is None:
        raise IndexNotFoundError(
            "no index has been built here (run: runbook-rag build SOURCE_DIR)", path=index_path
        )
    gen_dir = index_path / name
    try:
        manifest = Manifest.model_validate_json((gen_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise IndexStateError(
            f"published generation {name} has no readable manifest: {exc}", path=index_path
        ) from exc
    if manifest.schema_version != SCHEMA_VERSION:
        raise IndexStateError(
            f"index schema {manifest.schema_version} is not supported "
            f"(expected {SCHEMA_VERSION}); rebuild it",
            path=index_path,
        )
    return gen_dir, manifest


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _remove_stale_generations(index_path: Path) -> None:
    """Keep the published generation and the one before it (for rollback), and the query
    encoders they use; remove everything else a build may have left behind."""
    current = read_pointer(index_path)
    generations = sorted(p for p in index_path.glob("gen-*") if p.is_dir())
    complete = [p.name for p in generations if (p / "manifest.json").exists()]
    older = [name for name in complete if name != current]
    keep = {current, *older[-1:]}
    encoders = set()
    for path in generations:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
            continue
        with contextlib.suppress(OSError, ValueError):
            manifest = Manifest.model_validate_json((path / "manifest.json").read_text(encoding="utf-8"))
            encoders.add(manifest.query_encoder)
    for path in (index_path / ENCODERS).glob("*"):
        if f"{ENCODERS}/{path.name}" not in encoders:
            shutil.rmtree(path, ignore_errors=True)
    for tmp in index_path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _build_lock(index_path: Path) -> Iterator[None]:
    with open(index_path / LOCK, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexStateError("another build holds the lock on this index", path=index_path) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _package_version() -> str:
    try:
        return version("runbook-rag")
    except PackageNotFoundError:
        return "0+unknown"
