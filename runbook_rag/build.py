"""Building an index: sources -> redacted documents -> chunks -> embeddings -> a published generation.

Builds are incremental. Every chunk carries a content key, a hash of its embedded
(redacted) text and of the settings that shape it (chunker version, model, window).
A build embeds only the keys the published generation does not already hold and
copies the other vectors, so a rebuild with no change embeds nothing and writes
nothing, a changed document re-embeds only its changed chunks, a moved file or a
change of labels alone re-embeds nothing, and a removed document's chunks are gone
from the new generation. The new generation is complete before it is published,
and the old one is removed only after (see :mod:`runbook_rag.generations`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .access import AccessMap, approval_policy, label_key
from .actions import step_commands
from .chunking import chunk_document
from .embedding import Embedder, SentenceTransformerEmbedder, encoder_kind
from .errors import ConfigError, IndexStateError, SourceError
from .generations import (
    ENCODERS,
    SCHEMA_VERSION,
    FileLayout,
    Layout,
    Manifest,
    build_lock,
    new_generation_name,
    package_versions,
)
from .lexical import CHUNKS_FILE, LexicalIndex
from .records import BuildReport, BuildWarning, Chunk, Quarantined, Skipped
from .redaction import redact, redact_document
from .screening import DocumentScreen
from .settings import SourceLimits
from .sources import load_documents

CHUNKER_VERSION = 1
log = logging.getLogger("runbook_rag")
DEFAULT_LIMITS = SourceLimits()
# Texts per embedding call when reporting progress: a multiple of any usual batch size, so the
# length-sorted slices form the same batches one large call would.
EMBED_SLICE = 512


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a build is: ``done`` of ``total`` documents parsed or chunks embedded.

    Given to a build's ``progress`` callback after each step; ``done`` only grows and
    reaches ``total`` when the stage ends. A stage with nothing to do reports nothing.
    """

    stage: Literal["documents", "embedding"]
    done: int
    total: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything a build derives from the sources, before touching the store."""

    chunks: list[Chunk]
    documents: int
    skipped: list[Skipped]
    warnings: list[BuildWarning]
    findings: dict[str, dict[str, int]]
    quarantined: list[Quarantined]


@dataclass(frozen=True, slots=True)
class Diff:
    """Documents and chunks that differ from the published generation."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    relabelled: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    to_embed: int = 0
    reused: int = 0
    removed_chunks: int = 0
    relabelled_chunks: int = 0
    unchanged: bool = False

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "added": self.added,
            "changed": self.changed,
            "relabelled": self.relabelled,
            "removed": self.removed,
        }


def prepare(
    source_dirs: Sequence[Path | str],
    *,
    embedder: Embedder,
    access_map: AccessMap | None = None,
    limits: SourceLimits = DEFAULT_LIMITS,
    progress: ProgressCallback | None = None,
) -> Prepared:
    """Load, redact, chunk and screen every source (no store involved); ``progress`` hears of
    each document done."""
    max_chunks = limits.max_chunks_per_document
    loaded = load_documents(
        source_dirs,
        access_map=access_map,
        max_bytes=limits.max_file_bytes,
        max_line_chars=limits.max_line_chars,
        max_words=max_chunks * embedder.max_tokens,
    )
    skipped = list(loaded.skipped)
    findings: dict[str, dict[str, int]] = {}
    quarantined: list[Quarantined] = []
    chunks: list[Chunk] = []
    kept = 0
    total = len(loaded.documents)
    for done, raw in enumerate(loaded.documents, start=1):
        if progress is not None:
            # Counted as each document starts (the loop skips some with `continue`).
            progress(Progress("documents", done - 1, total))
        # Redaction sits here, between parsing and everything else.
        doc, counts = redact_document(raw)
        if counts:
            findings[doc.source] = counts
        screener = None if doc.allow_instructions else DocumentScreen(doc)
        whole = screener.document() if screener else None
        if whole is not None:
            # A title or document-level field reaches every hit of the document: quarantine all of it.
            quarantined.append(Quarantined(doc.source, 1, doc.text.count("\n") + 1, whole.label))
            reason = f"quarantined: its {whole.where} reads as instructions to a model ({whole.rule})"
            skipped.append(Skipped(doc.source, reason))
            continue
        try:
            doc_chunks = chunk_document(
                doc, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens, max_chunks=max_chunks
            )
        except SourceError as exc:
            skipped.append(Skipped(doc.source, redact(exc.reason).text, exc.line))
            continue
        except RecursionError:
            skipped.append(Skipped(doc.source, "nested too deeply to chunk safely"))
            continue
        approvers, two_person = approval_policy(doc, access_map)
        clean = []
        for chunk in doc_chunks:
            # The heading path is screened with the body: it is embedded and shown with every hit.
            flag = screener.chunk(chunk) if screener else None
            if flag is None:
                commands = step_commands(chunk.text, chunk.start_line)
                clean.append(replace(chunk, commands=commands, approvers=approvers, two_person=two_person))
            else:
                quarantined.append(Quarantined(doc.source, chunk.start_line, chunk.end_line, flag.label))
        if clean:
            kept += 1
            chunks.extend(clean)
        else:
            skipped.append(
                Skipped(doc.source, "every passage was quarantined" if doc_chunks else "no indexable text")
            )
    if progress is not None and total:
        progress(Progress("documents", total, total))
    skipped.sort(key=lambda s: s.source)
    return Prepared(chunks, kept, skipped, list(loaded.warnings), findings, quarantined)


def check_sources(source_dirs: Sequence[Path | str]) -> None:
    """Raise :class:`ConfigError` naming the first source that is not a readable folder."""
    for raw in source_dirs:
        if not str(raw).strip():
            raise ConfigError("an empty path is not a source folder", path="''")
        source_dir = Path(raw)
        try:
            usable = source_dir.is_dir() and os.access(source_dir, os.R_OK | os.X_OK)
        except OSError as exc:
            raise ConfigError(
                f"source folder cannot be read: {os.strerror(exc.errno or 0)}", path=source_dir
            ) from None
        if not usable:
            raise ConfigError(
                "source folder does not exist, is not a folder or is not readable", path=source_dir
            )


def content_key(chunk: Chunk, embedder: Embedder) -> str:
    """Identifies a chunk's vector: its embedded text and everything that shapes it, the
    encoder's kind included (torch keys are those of indexes built before there was a choice)."""
    shape = f"{CHUNKER_VERSION}\x1f{embedder.model_id}\x1f{embedder.dimension}\x1f{embedder.max_tokens}"
    kind = encoder_kind(embedder)
    if kind != "torch":
        shape += f"\x1f{kind}"
    return hashlib.sha256(f"{shape}\x1f{chunk.embed_text}".encode()).hexdigest()[:32]


def build_index(
    source_dirs: Sequence[Path | str],
    *,
    index_path: Path | str,
    embedder: Embedder,
    layout: Layout | None = None,
    access_map: AccessMap | None = None,
    allow_empty: bool = False,
    limits: SourceLimits = DEFAULT_LIMITS,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
) -> BuildReport:
    """Bring the index at ``index_path`` up to date with ``source_dirs``.

    With ``dry_run`` nothing is written: the report's diff says what a build would do.
    ``progress`` is called as documents are parsed and chunks embedded (see :class:`Progress`).
    """
    from .store import metadata_of

    started = time.perf_counter()
    index_path = Path(index_path)
    check_sources(source_dirs)
    layout = layout or FileLayout(index_path)
    with build_lock(index_path):
        prepared = prepare(
            source_dirs, embedder=embedder, access_map=access_map, limits=limits, progress=progress
        )
        if not prepared.chunks and not allow_empty:
            raise ConfigError(
                "nothing to index: no document yielded chunks; refusing to replace the index with an empty "
                "one (pass allow_empty / --allow-empty to do it anyway)",
                path=", ".join(map(str, source_dirs)),
            )
        keys = [content_key(c, embedder) for c in prepared.chunks]
        new_meta = {
            c.chunk_id: {**metadata_of(c), "content_key": k}
            for c, k in zip(prepared.chunks, keys, strict=True)
        }
        old_store, old_meta = _published_state(layout, embedder)
        diff = _diff(old_meta, new_meta)
        generation = layout.pointer() or ""
        if not dry_run and not diff.unchanged:
            vectors = _vectors(prepared.chunks, keys, old_store, old_meta, embedder, progress=progress)
            generation = _write_generation(layout, prepared, keys, vectors, embedder, diff)
        elif not dry_run:
            # Nothing to re-index: the published generation stays as it is, and this
            # build's report is kept beside it when it says something new.
            _, manifest = layout.load()
            report = _kept(_report(prepared, diff))
            if manifest.report != report:
                layout.record_report(manifest, report)
        if not dry_run:
            layout.remove_stale()
    return replace(
        _report(prepared, diff),
        embedded=0 if diff.unchanged or dry_run else diff.to_embed,
        seconds=time.perf_counter() - started,
        generation=generation,
        dry_run=dry_run,
    )


def _published_state(layout: Layout, embedder: Embedder) -> tuple[Any, dict[str, dict[str, Any]]]:
    """The published store and its chunk metadata, when its vectors can be reused."""
    if layout.pointer() is None:
        return None, {}
    try:
        store, manifest = layout.load()
        if manifest.model_id != embedder.model_id or manifest.dimension != embedder.dimension:
            return None, {}  # another model: nothing to reuse
        return store, store.all_metadata()
    except IndexStateError as exc:
        log.warning("the published generation cannot be read (%s): rebuilding from scratch", exc.reason)
        return None, {}


def _diff(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> Diff:
    def by_doc(meta: dict[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
        docs: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for cid, m in meta.items():
            docs[str(m["source"])][cid] = m
        return docs

    old_docs, new_docs = by_doc(old), by_doc(new)
    added = sorted(set(new_docs) - set(old_docs))
    removed = sorted(set(old_docs) - set(new_docs))
    changed: list[str] = []
    relabelled: list[str] = []
    for source in sorted(set(old_docs) & set(new_docs)):
        before, after = old_docs[source], new_docs[source]
        if before != after:
            same_content = _without_labels(before) == _without_labels(after)
            (relabelled if same_content else changed).append(source)
    relabelled_chunks = sum(
        1
        for cid, m in new.items()
        if cid in old and old[cid].get("content_key") == m["content_key"] and old[cid]["acl"] != m["acl"]
    )
    old_keys = {m.get("content_key") for m in old.values()}
    needed = {m["content_key"] for m in new.values()}
    return Diff(
        added=added,
        changed=changed,
        relabelled=relabelled,
        removed=removed,
        to_embed=len(needed - old_keys),
        reused=sum(1 for m in new.values() if m["content_key"] in old_keys),
        removed_chunks=sum(1 for cid in old if cid not in new),
        relabelled_chunks=relabelled_chunks,
        unchanged=bool(old) and old == new,
    )


_ACCESS_KEYS = ("acl", "acl_key", "approvers", "two_person")


def _without_labels(chunks: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {cid: {k: v for k, v in m.items() if k not in _ACCESS_KEYS} for cid, m in chunks.items()}


def _vectors(
    chunks: list[Chunk],
    keys: list[str],
    old_store: Any,
    old_meta: dict[str, dict[str, Any]],
    embedder: Embedder,
    *,
    progress: ProgressCallback | None = None,
) -> list[list[float]]:
    """Reuse the published vector of every known content key; embed only the rest."""
    have: dict[str, str] = {}
    for cid, meta in old_meta.items():
        have.setdefault(str(meta.get("content_key")), cid)
    wanted = {k: have[k] for k in set(keys) if k in have}
    reused = old_store.embeddings({cid for cid in wanted.values()}) if wanted else {}
    vectors: dict[str, list[float]] = {k: reused[cid] for k, cid in wanted.items() if cid in reused}
    missing = list(dict.fromkeys(k for k in keys if k not in vectors))
    if missing:
        text_of = {k: c.embed_text for c, k in zip(chunks, keys, strict=True)}
        texts = [text_of[k] for k in missing]
        fresh = embedder.embed(texts) if progress is None else _embed_reporting(texts, embedder, progress)
        vectors.update(zip(missing, fresh, strict=True))
    return [vectors[k] for k in keys]


def _embed_reporting(texts: list[str], embedder: Embedder, progress: ProgressCallback) -> list[list[float]]:
    """Embed in slices of similar length, reporting after each: sorted longest first, as one
    large call would batch them, so slicing adds no padding."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out: list[list[float]] = [[] for _ in texts]
    progress(Progress("embedding", 0, len(texts)))
    for start in range(0, len(order), EMBED_SLICE):
        part = order[start : start + EMBED_SLICE]
        for i, vector in zip(part, embedder.embed([texts[i] for i in part]), strict=True):
            out[i] = vector
        progress(Progress("embedding", start + len(part), len(texts)))
    return out


def _published_lexical(layout: Layout) -> LexicalIndex | None:
    """The published generation's lexical index, whose terms unchanged chunks reuse."""
    current = layout.pointer()
    if current is None or not (layout.lexical_dir(current) / CHUNKS_FILE).exists():
        return None
    try:
        return LexicalIndex.load(layout.lexical_dir(current))
    except IndexStateError as exc:
        log.warning("the published lexical index cannot be read (%s): tokenising every chunk", exc.reason)
        return None


def _report(prepared: Prepared, diff: Diff) -> BuildReport:
    """What this build found and changed: counts and names, never a value."""
    return BuildReport(
        documents=prepared.documents,
        chunks=len(prepared.chunks),
        embedded=0 if diff.unchanged else diff.to_embed,
        skipped=tuple(prepared.skipped),
        seconds=0.0,
        generation="",
        warnings=tuple(prepared.warnings),
        findings=prepared.findings,
        quarantined=tuple(prepared.quarantined),
        reused=diff.reused,
        removed=diff.removed_chunks,
        relabelled=diff.relabelled_chunks,
        diff=diff.to_dict(),
    )


def _kept(report: BuildReport) -> dict[str, Any]:
    """The report as the manifest keeps it: without the timing, generation and dry-run flag of
    one run (read back with ``Manifest.build_report()``)."""
    return {k: v for k, v in report.to_dict().items() if k not in ("seconds", "generation", "dry_run")}


def _write_generation(
    layout: Layout,
    prepared: Prepared,
    keys: list[str],
    vectors: list[list[float]],
    embedder: Embedder,
    diff: Diff,
) -> str:
    return write_generation(
        layout,
        prepared.chunks,
        keys,
        vectors,
        embedder,
        documents=prepared.documents,
        report=_kept(_report(prepared, diff)),
    )


def write_generation(
    layout: Layout,
    chunks: Sequence[Chunk],
    keys: Sequence[str],
    vectors: Sequence[Sequence[float]],
    embedder: Embedder,
    *,
    documents: int,
    report: dict[str, Any],
) -> str:
    """Write a complete generation (store, lexical index, query encoder, manifest) and publish it;
    on any failure, remove what was written and leave the published generation as it was."""
    name = new_generation_name()
    try:
        store = layout.create_store(name)
        store.add(chunks, vectors, keys)
        LexicalIndex.build(
            (
                (c.chunk_id, c.source, c.embed_text, label_key(c.labels), k)
                for c, k in zip(chunks, keys, strict=True)
            ),
            previous=_published_lexical(layout),
        ).save(layout.lexical_dir(name))
        query_encoder = None
        if isinstance(embedder, SentenceTransformerEmbedder):
            encoder = f"{ENCODERS}/{embedder.query_encoder_name}"
            if embedder.export_query_encoder(layout.path / encoder):
                query_encoder = encoder
        counts: dict[str, int] = defaultdict(int)
        for chunk in chunks:
            counts[label_key(chunk.labels)] += 1
        layout.publish(
            Manifest(
                schema_version=SCHEMA_VERSION,
                generation=name,
                built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                model_id=embedder.model_id,
                dimension=embedder.dimension,
                max_tokens=embedder.max_tokens,
                chunker={"version": CHUNKER_VERSION, "max_tokens": embedder.max_tokens},
                versions=package_versions(),
                documents=documents,
                chunks=len(chunks),
                label_sets=sorted(counts),
                label_set_counts=dict(sorted(counts.items())),
                query_encoder=query_encoder,
                encoder=encoder_kind(embedder),
                report=report,
            )
        )
    except BaseException:
        layout.discard(name)
        raise
    return name
