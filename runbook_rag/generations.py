"""The on-disk layout of an index: generations, the pointer, manifests and the build lock.

An index folder holds generations (``gen-*``), each a complete Chroma store plus a
``manifest.json``, and a ``CURRENT`` pointer naming the one being served. A build
writes a new generation and then publishes it by atomically replacing the pointer
(write a temp file, fsync, ``os.replace``, fsync the folder), so a failed or killed
build never touches what readers see; the next build removes what it left behind.
Only one build runs per index at a time (an advisory file lock, released by the
kernel when its holder dies).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict

from .atomic import atomic_write
from .errors import IndexNotFoundError, IndexStateError
from .records import BuildReport
from .settings import EncoderKind

log = logging.getLogger("runbook_rag")

if TYPE_CHECKING:
    from .settings import ChromaSettings
    from .store import ChromaServer, ChromaStore
    from .store_process import StoreProcess

SCHEMA_VERSION = 1
POINTER = "CURRENT"
LOCK = ".build.lock"
ENCODERS = "encoders"
MANIFEST = "manifest.json"
LEXICAL = "lexical"
LAST_BUILD = "last-build.json"


class Manifest(BaseModel):
    """What a generation holds and how it was built (``manifest.json``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_version: int
    generation: str
    built_at: str
    model_id: str
    dimension: int
    max_tokens: int
    chunker: dict[str, Any] = {}
    versions: dict[str, str] = {}
    documents: int
    chunks: int
    label_sets: list[str]
    label_set_counts: dict[str, int] = {}
    query_encoder: str | None = None
    encoder: EncoderKind = "torch"
    """What embedded every vector of the generation (torch for manifests written before the
    setting existed, when it was the only one)."""
    report: dict[str, Any] = {}

    def build_report(self) -> BuildReport:
        """The last build's report (counts and names), as the build returned it."""
        return BuildReport.from_dict({**self.report, "generation": self.generation})


def new_generation_name() -> str:
    """Sortable by creation time; unique across concurrent processes."""
    return "gen-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + secrets.token_hex(3)


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
        manifest = Manifest.model_validate_json((gen_dir / MANIFEST).read_text(encoding="utf-8"))
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


def _with_last_report(index_path: Path, manifest: Manifest) -> Manifest:
    """``manifest`` with the report of the last build, when that build published nothing."""
    try:
        record = json.loads((index_path / LAST_BUILD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return manifest
    if not isinstance(record, dict) or record.get("generation") != manifest.generation:
        return manifest
    report = record.get("report")
    return manifest.model_copy(update={"report": report}) if isinstance(report, dict) else manifest


def write_manifest(gen_dir: Path, manifest: Manifest) -> None:
    atomic_write(gen_dir / MANIFEST, manifest.model_dump_json(indent=2))


def publish(index_path: Path, name: str) -> None:
    """Make generation ``name`` the one readers see, atomically."""
    atomic_write(index_path / POINTER, name + "\n")


def remove_stale(index_path: Path) -> None:
    """Keep the published generation and the one before it (for rollback), and the query
    encoders they use; remove everything else, including what a killed build left."""
    current = read_pointer(index_path)
    generations = sorted(p for p in index_path.glob("gen-*") if p.is_dir())
    complete = [p.name for p in generations if (p / MANIFEST).exists()]
    older = [name for name in complete if name != current and name < (current or "")]
    keep = {current, *older[-1:]}
    encoders = set()
    for path in generations:
        if path.name not in keep:
            shutil.rmtree(path, ignore_errors=True)
            continue
        with contextlib.suppress(OSError, ValueError):
            encoders.add(Manifest.model_validate_json((path / MANIFEST).read_text("utf-8")).query_encoder)
    for path in (index_path / ENCODERS).glob("*"):
        if f"{ENCODERS}/{path.name}" not in encoders:
            shutil.rmtree(path, ignore_errors=True)
    for tmp in index_path.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


def check_index_folder(path: Path, *, create: bool = False) -> None:
    """Raise :class:`IndexStateError` naming ``path`` unless it can hold an index: a folder (or,
    to read, nothing yet: then there is no index), readable; with ``create``, made when
    missing, writable, and not another tool's folder."""
    try:
        if path.exists() and not path.is_dir():
            raise IndexStateError("not a folder (an index is a folder)", path=path)
        if not path.exists():
            if not create:
                return
            path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.R_OK | os.X_OK) or (create and not os.access(path, os.W_OK)):
            raise IndexStateError("permission denied", path=path)
        pointer = path / POINTER
        if pointer.exists() and not pointer.is_file():
            raise IndexStateError(f"{POINTER} is not a file: not a runbook-rag index", path=path)
        if create and not _ours(path):
            raise IndexStateError(
                "not empty and not a runbook-rag index; refusing to write into another tool's folder "
                "(choose a new or empty folder)",
                path=path,
            )
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.ENOTDIR:
            reason = "a part of the path is not a folder"
        raise IndexStateError(reason, path=exc.filename or path) from None


def _ours(path: Path) -> bool:
    """An empty folder, or one holding what only an index holds."""
    # confluence-mirror: where a build syncs Confluence pages, before it takes the lock;
    # cache: the default cache directory of the libraries a build loads.
    marks = {POINTER, LOCK, ENCODERS, LEXICAL, LAST_BUILD, "confluence-mirror", "cache"}
    names = [p.name for p in path.iterdir()]
    return not names or any(n in marks or n.startswith("gen-") for n in names)


@contextlib.contextmanager
def build_lock(index_path: Path) -> Iterator[None]:
    """Exclusive for the duration of a build; fails at once when another build holds it.
    Makes the index folder when it is missing."""
    check_index_folder(index_path, create=True)
    try:
        fh = open(index_path / LOCK, "a+")  # noqa: SIM115 (closed below, after the lock is released)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise IndexStateError(f"cannot open the build lock: {reason}", path=index_path) from None
    with fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexStateError(
                "another build is running on this index (it holds the build lock); try again when it ends",
                path=index_path,
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def verify_generation(layout: Layout, store: ChromaStore, manifest: Manifest) -> list[str]:
    """Check a published generation: the store matches the manifest, every chunk has
    valid labels, and nothing is left over."""
    from .access import LabelError, label_key, validate_labels

    problems = []
    metas = store.all_metadata()
    if len(metas) != manifest.chunks:
        problems.append(f"the store holds {len(metas)} chunks, the manifest says {manifest.chunks}")
    counts: dict[str, int] = {}
    for cid, meta in metas.items():
        try:
            labels = validate_labels(meta.get("acl"))
        except LabelError as exc:
            problems.append(f"chunk {cid}: {exc}")
            continue
        if meta.get("acl_key") != label_key(labels):
            problems.append(f"chunk {cid}: label-set key does not match its labels")
        counts[label_key(labels)] = counts.get(label_key(labels), 0) + 1
        for name in ("source", "title", "heading_path", "start_line", "end_line", "content_key"):
            if name not in meta:
                problems.append(f"chunk {cid}: no {name}")
    if sorted(counts) != manifest.label_sets:
        problems.append("the label sets in the store differ from the manifest's")
    if manifest.label_set_counts and counts != manifest.label_set_counts:
        problems.append("chunk counts per label set differ from the manifest's")
    lexical = layout.lexical_dir(manifest.generation)
    if not (lexical / "chunks.json").exists():
        problems.append("the lexical index is missing (searches derive it from the store)")
    else:
        from .lexical import LexicalIndex

        try:
            if sorted(LexicalIndex.load(lexical).chunk_ids) != sorted(metas):
                problems.append("the lexical index's chunks differ from the store's")
        except IndexStateError as exc:
            problems.append(str(exc))
    for name in layout.orphans():
        problems.append(f"orphan: {name} is an unfinished or stale generation (the next build removes it)")
    if manifest.query_encoder and not (layout.path / manifest.query_encoder).is_dir():
        problems.append(f"the query encoder {manifest.query_encoder} is missing")
    return problems


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("runbook-rag", "chromadb", "sentence-transformers", "torch", "onnxruntime"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


class Layout(Protocol):
    """Where an index's generations live; the file and Chroma-server layouts implement it."""

    path: Path
    """The local index folder (build lock, query encoders, lexical indexes)."""
    refresh_interval: float
    """Seconds between checks of the pointer by long-lived readers (0: before every query)."""
    keeps_derived: bool
    """Whether a lexical index derived from the store is kept in :meth:`lexical_dir` (never
    inside a published generation, which is not written again)."""

    def pointer(self) -> str | None: ...
    def load(self) -> tuple[ChromaStore, Manifest]: ...
    def create_store(self, name: str, *, own_process: bool = False) -> ChromaStore | StoreProcess: ...
    def publish(self, manifest: Manifest) -> None: ...
    def record_report(self, manifest: Manifest, report: dict[str, Any]) -> None: ...
    def lexical_dir(self, name: str) -> Path: ...
    def discard(self, name: str) -> None: ...
    def remove_stale(self) -> None: ...
    def orphans(self) -> list[str]: ...
    def close(self) -> None: ...


class FileLayout:
    """Generations as Chroma folders under the index folder (the embedded default)."""

    refresh_interval = 0.0
    keeps_derived = False

    def __init__(self, path: Path) -> None:
        check_index_folder(path)
        self.path = path

    def pointer(self) -> str | None:
        return read_pointer(self.path)

    def load(self) -> tuple[ChromaStore, Manifest]:
        from .store import ChromaStore

        gen_dir, manifest = load_manifest(self.path)
        return ChromaStore(gen_dir, read_only=True), _with_last_report(self.path, manifest)

    def create_store(self, name: str, *, own_process: bool = False) -> ChromaStore | StoreProcess:
        """A new store for generation ``name``. With ``own_process`` it is written by a process
        of its own (see :mod:`runbook_rag.store_process`), or by this one when none can be
        started."""
        from .store import ChromaStore

        if own_process:
            from .store_process import StoreProcess

            try:
                return StoreProcess(self.path / name)
            except IndexStateError as exc:
                log.warning("writing the vector store from this process: %s", exc.reason)
                self.discard(name)  # whatever the child began
        return ChromaStore(self.path / name, create=True)

    def publish(self, manifest: Manifest) -> None:
        write_manifest(self.path / manifest.generation, manifest)
        publish(self.path, manifest.generation)

    def record_report(self, manifest: Manifest, report: dict[str, Any]) -> None:
        """Keep the report of a build that changed nothing beside the index: the published
        generation itself is never written again."""
        record = {"generation": manifest.generation, "report": report}
        atomic_write(self.path / LAST_BUILD, json.dumps(record, ensure_ascii=False, indent=2))

    def lexical_dir(self, name: str) -> Path:
        return self.path / name / LEXICAL

    def discard(self, name: str) -> None:
        shutil.rmtree(self.path / name, ignore_errors=True)

    def remove_stale(self) -> None:
        remove_stale(self.path)

    def orphans(self) -> list[str]:
        current = self.pointer()
        return [p.name for p in self.path.glob("gen-*") if p.name != current and not (p / MANIFEST).exists()]

    def close(self) -> None:
        """Nothing to let go of: each store closes itself."""


class ServerLayout:
    """Generations as collections on a Chroma server, for several builders and bots.

    The pointer and the published manifest live on the server too, in one record of a
    registry collection (``runbook-rag-registry``, one record per index name): publishing
    is a single-record upsert, so readers on any machine see the old generation or the
    new one. The local index folder keeps the build lock, the query encoder and a copy of
    each generation's lexical index (a reader on another machine derives its own copy
    from the server's collection on first open).
    """

    refresh_interval = 1.0  # a pointer check is a request: at most once a second

    keeps_derived = True

    def __init__(self, path: Path, server: ChromaServer) -> None:
        self.path = path
        self.name = (
            "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in path.resolve().name) or "default"
        )
        self._server = server

    def _collection(self, generation: str) -> str:
        return f"rr-{self.name}-{generation}"

    def pointer(self) -> str | None:
        return self._server.record(self.name)[1].get("generation") or None

    def load(self) -> tuple[ChromaStore, Manifest]:
        document, _ = self._server.record(self.name)
        if not document:
            raise IndexNotFoundError(
                f"no index named {self.name!r} on the Chroma server (run: runbook-rag build SOURCE_DIR)",
                path=self.path,
            )
        try:
            manifest = Manifest.model_validate_json(document)
        except ValueError as exc:
            raise IndexStateError(f"the published manifest is unreadable: {exc}", path=self.path) from exc
        if manifest.schema_version != SCHEMA_VERSION:
            raise IndexStateError(
                f"index schema {manifest.schema_version} is not supported; rebuild it", path=self.path
            )
        return self._server.store(self._collection(manifest.generation)), manifest

    def create_store(self, name: str, *, own_process: bool = False) -> ChromaStore | StoreProcess:
        """A new collection for generation ``name``, written from this process either way: the
        server's client waits on the network without holding the GIL."""
        return self._server.store(self._collection(name), create=True)

    def publish(self, manifest: Manifest) -> None:
        previous = self.pointer() or ""
        if previous == manifest.generation:
            previous = self._server.record(self.name)[1].get("previous", "")
        self._write(manifest, previous)

    def record_report(self, manifest: Manifest, report: dict[str, Any]) -> None:
        manifest = manifest.model_copy(update={"report": report})
        self._write(manifest, self._server.record(self.name)[1].get("previous", ""))

    def _write(self, manifest: Manifest, previous: str) -> None:
        metadata = {"generation": manifest.generation, "previous": previous}
        self._server.put_record(self.name, manifest.model_dump_json(), metadata)

    def lexical_dir(self, name: str) -> Path:
        return self.path / LEXICAL / name

    def discard(self, name: str) -> None:
        self._server.drop(self._collection(name))
        shutil.rmtree(self.lexical_dir(name), ignore_errors=True)

    def remove_stale(self) -> None:
        for name in self._stale():
            self._server.drop(name)
        _, meta = self._server.record(self.name)
        keep = {meta.get("generation"), meta.get("previous")}
        for path in (self.path / LEXICAL).glob("*"):
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
        for path in (self.path / ENCODERS).glob(".encoder-*"):
            shutil.rmtree(path, ignore_errors=True)

    def _stale(self) -> list[str]:
        _, meta = self._server.record(self.name)
        keep = {self._collection(g) for g in (meta.get("generation"), meta.get("previous")) if g}
        prefix = f"rr-{self.name}-gen-"
        return [n for n in self._server.collections() if n.startswith(prefix) and n not in keep]

    def orphans(self) -> list[str]:
        return self._stale()

    def close(self) -> None:
        self._server.close()


def open_layout(path: Path, chroma: ChromaSettings) -> Layout:
    """The layout the settings select: a Chroma server when ``chroma.host`` is set."""
    if not chroma.host:
        return FileLayout(path)
    from .store import ChromaServer

    check_index_folder(path, create=True)
    server = ChromaServer.connect(
        host=chroma.host,
        port=chroma.port,
        ssl=chroma.ssl,
        token=chroma.token.get_secret_value() if chroma.token else None,
        tenant=chroma.tenant,
        database=chroma.database,
    )
    return ServerLayout(path, server)
