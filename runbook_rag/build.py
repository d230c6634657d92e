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

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import numpy as np

from .access import AccessMap, approval_policy, label_key
from .actions import step_commands
from .chunking import chunk_document
from .embedding import Embedder, SentenceTransformerEmbedder, encoder_kind
from .encoders import RECIPES
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
from .lexical import CHUNKS_FILE, LexicalBuilder, LexicalIndex
from .records import BuildReport, BuildWarning, Chunk, Quarantined, Skipped
from .redaction import redact, redact_document
from .screening import DocumentScreen
from .settings import SourceLimits
from .sources import stream_documents

if TYPE_CHECKING:
    from .store import ChromaStore
    from .store_process import StoreProcess

CHUNKER_VERSION = 1
log = logging.getLogger("runbook_rag")
DEFAULT_LIMITS = SourceLimits()
# Texts per embedding call when reporting progress: a multiple of any usual batch size, so the
# length-sorted slices form the same batches one large call would.
EMBED_SLICE = 512


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a build is: ``done`` of ``total`` runbook files dealt with (parsed and chunked,
    or skipped), or of chunks embedded.

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
    chunks: list[Chunk] = []
    for item in prepared_documents(source_dirs, embedder=embedder, access_map=access_map, limits=limits):
        if isinstance(item, Progress):
            if progress is not None:
                progress(item)
        elif isinstance(item, Prepared):
            return replace(item, chunks=chunks)
        else:
            chunks.extend(item)
    raise AssertionError("prepared_documents ends with its summary")


def prepared_documents(
    source_dirs: Sequence[Path | str],
    *,
    embedder: Embedder,
    access_map: AccessMap | None = None,
    limits: SourceLimits = DEFAULT_LIMITS,
) -> Iterator[list[Chunk] | Progress | Prepared]:
    """Load, redact, chunk and screen every source, one document at a time: yields each
    document's chunks as soon as they are ready, a :class:`Progress` as each document
    starts, and last a :class:`Prepared` summary without the chunks."""
    max_chunks = limits.max_chunks_per_document
    streamed = stream_documents(
        source_dirs,
        access_map=access_map,
        max_bytes=limits.max_file_bytes,
        max_line_chars=limits.max_line_chars,
        max_words=max_chunks * embedder.max_tokens,
    )
    findings: dict[str, dict[str, int]] = {}
    quarantined: list[Quarantined] = []
    skipped: list[Skipped] = []  # after loading
    kept = 0
    total = streamed.files
    found_skipped = len(streamed.skipped)  # found, and not runbooks that can be read
    taken = reported = 0
    if total:
        yield Progress("documents", 0, total)
    # Each document is parsed as it is taken, and its text let go of once it is chunked.
    for raw in streamed.documents:
        # Files done: the documents taken before this one and the files that failed to load.
        done = taken + len(streamed.skipped) - found_skipped
        if done > reported:
            yield Progress("documents", done, total)
            reported = done
        taken += 1
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
                doc,
                count_tokens=embedder.count_tokens,
                max_tokens=embedder.max_tokens,
                max_chunks=max_chunks,
                counts_add_up=getattr(embedder, "counts_add_up", False),
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
            yield clean
        else:
            skipped.append(
                Skipped(doc.source, "every passage was quarantined" if doc_chunks else "no indexable text")
            )
    if total:
        yield Progress("documents", total, total)
    skipped = sorted([*streamed.skipped, *skipped], key=lambda s: s.source)
    yield Prepared([], kept, skipped, list(streamed.warnings), findings, quarantined)


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
        shape += f"\x1f{RECIPES[kind]}"
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

    The stages overlap: a thread loads, redacts, screens and chunks the documents while this
    one embeds what they yield, a window of texts at a time, and a third writes the new
    generation's store a slice of vectors behind the encoder. The new generation is opened
    at once when nothing is published, else when the first chunk that differs from the
    published one is seen (a build that changes nothing opens none, unless it holds more
    chunks than :data:`HOLD` before it can tell: it then writes ahead and discards what it
    wrote), and it is published only once complete.
    """
    from .store import metadata_of

    started = time.perf_counter()
    index_path = Path(index_path)
    check_sources(source_dirs)
    layout = layout or FileLayout(index_path)
    with build_lock(index_path):
        published = _Published.read(layout, embedder)
        writer = None if dry_run else _Pipeline(layout, embedder, published, progress=progress)
        try:
            records: dict[str, _Record] = {}
            count = 0
            summary: Prepared | None = None
            stream = prepared_documents(source_dirs, embedder=embedder, access_map=access_map, limits=limits)
            with _ahead(stream, depth=QUEUE_DEPTH) as items:
                if writer is not None:
                    writer.start()  # while the first documents are prepared
                for item in items:
                    if isinstance(item, Progress):
                        if writer is not None and item.stage == "documents" and item.done == 0:
                            writer.sources(item.total)
                        if progress is not None:
                            progress(item)
                        continue
                    if isinstance(item, Prepared):
                        summary = item
                        continue
                    for chunk in item:
                        key = content_key(chunk, embedder)
                        record = _record({**metadata_of(chunk), "content_key": key})
                        records[chunk.chunk_id] = record
                        count += 1
                        if writer is not None:
                            writer.add(chunk, key, changed=published.records.get(chunk.chunk_id) != record)
            assert summary is not None, "the document stream ends with its summary"
            if not count and not allow_empty:
                raise ConfigError(
                    "nothing to index: no document yielded chunks; refusing to replace the index with an "
                    "empty one (pass allow_empty / --allow-empty to do it anyway)",
                    path=", ".join(map(str, source_dirs)),
                )
            diff = _diff(published.records, records)
            report = _report(summary, count, diff)
            del records
            generation = layout.pointer() or ""
            if writer is not None and not diff.unchanged:
                writer.expect(diff.to_embed)
                generation = writer.publish(documents=summary.documents, report=_kept(report))
            elif writer is not None:
                # Nothing to re-index: the published generation stays as it is, and this
                # build's report is kept beside it when it says something new.
                writer.discard()
                _, manifest = layout.load()
                if manifest.report != _kept(report):
                    layout.record_report(manifest, _kept(report))
        except BaseException:
            if writer is not None:
                writer.discard()
            raise
        if not dry_run:
            layout.remove_stale()
    return replace(
        report,
        embedded=0 if diff.unchanged or dry_run else diff.to_embed,
        seconds=time.perf_counter() - started,
        generation=generation,
        dry_run=dry_run,
    )


# Documents prepared ahead of the encoder: enough for a window of chunks while it works.
QUEUE_DEPTH = 512
# Texts taken from the documents before they are embedded (longest first): the first window
# is small, so that the encoder starts early, and each next one twice as large.
FIRST_WINDOW = 32
WINDOW = 2048
# The texts of a build's last slice: what is left to write once the encoder stops.
TAIL_SLICE = 64
# Chunks per write to the store.
WRITE_BATCH = 2048
# Writes queued for the write thread, the one it is doing included: the encoder goes on while
# a write takes longer than the slice after it, and memory stays bounded.
WRITES_IN_FLIGHT = 2
# Chunks held back, before the first change is seen, before the new generation is written.
HOLD = 8192
# A build with nothing to reuse (the first, or another model's index) of at least this many
# documents writes its store from a process of its own: Chroma holds the GIL while it writes,
# which would stall the encoder's threads (see runbook_rag.store_process). Starting that
# process costs about a second of CPU, which only a build of many chunks wins back.
STORE_PROCESS_DOCUMENTS = 200

_T = TypeVar("_T")


@contextlib.contextmanager
def _ahead(items: Iterator[_T], *, depth: int) -> Generator[Iterator[_T], None, None]:
    """``items``, produced by a thread of their own, started on entry, up to ``depth`` items
    ahead of the caller.

    An error in the thread is raised where the caller takes the item it failed to produce;
    on exit, the thread stops at its next item.
    """
    channel: queue.Queue[tuple[_T | None, BaseException | None, bool]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[_T | None, BaseException | None, bool]) -> bool:
        while not stop.is_set():
            try:
                channel.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None, False)):
                    return
        except BaseException as exc:  # handed to the caller, which raises it
            put((None, exc, True))
            return
        put((None, None, True))

    def taken() -> Iterator[_T]:
        while True:
            item, error, last = channel.get()
            if error is not None:
                raise error
            if last:
                return
            yield cast(_T, item)

    thread = threading.Thread(target=produce, name="runbook-rag-prepare", daemon=True)
    thread.start()
    try:
        yield taken()
    finally:
        stop.set()
        thread.join()


# What the diff needs of a chunk's metadata: its source, content key and labels, and digests
# of the whole metadata and of the metadata without the access fields.
_Record = tuple[str, str, Any, bytes, bytes]
_ACCESS_KEYS = ("acl", "acl_key", "approvers", "two_person")


def _record(meta: dict[str, Any]) -> _Record:
    def digest(fields: dict[str, Any]) -> bytes:
        text = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=repr)
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    acl = meta.get("acl")
    return (
        str(meta.get("source")),
        str(meta.get("content_key")),
        tuple(acl) if isinstance(acl, list) else acl,
        digest(meta),
        digest({k: v for k, v in meta.items() if k not in _ACCESS_KEYS}),
    )


@dataclass(frozen=True, slots=True)
class _Published:
    """The published generation as far as a build reuses it: its store, each chunk's
    record, and a chunk holding each content key."""

    store: Any = None
    records: dict[str, _Record] = field(default_factory=dict)
    holder: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, layout: Layout, embedder: Embedder) -> _Published:
        """The published store and its chunks' records, when its vectors can be reused."""
        if layout.pointer() is None:
            return cls()
        try:
            store, manifest = layout.load()
            if manifest.model_id != embedder.model_id or manifest.dimension != embedder.dimension:
                return cls()  # another model: nothing to reuse
            records: dict[str, _Record] = {}
            holder: dict[str, str] = {}
            for batch in store.metadata_batches():
                for cid, meta in batch.items():
                    records[cid] = _record(meta)
                    holder.setdefault(str(meta.get("content_key")), cid)
        except IndexStateError as exc:
            log.warning("the published generation cannot be read (%s): rebuilding from scratch", exc.reason)
            return cls()
        return cls(store, records, holder)


def _diff(old: dict[str, _Record], new: dict[str, _Record]) -> Diff:
    def by_doc(records: dict[str, _Record]) -> dict[str, dict[str, tuple[bytes, bytes]]]:
        docs: dict[str, dict[str, tuple[bytes, bytes]]] = defaultdict(dict)
        for cid, (source, _, _, whole, bare) in records.items():
            docs[source][cid] = (whole, bare)
        return docs

    old_docs, new_docs = by_doc(old), by_doc(new)
    added = sorted(set(new_docs) - set(old_docs))
    removed = sorted(set(old_docs) - set(new_docs))
    changed: list[str] = []
    relabelled: list[str] = []
    for source in sorted(set(old_docs) & set(new_docs)):
        before, after = old_docs[source], new_docs[source]
        if before != after:
            same_content = {c: d[1] for c, d in before.items()} == {c: d[1] for c, d in after.items()}
            (relabelled if same_content else changed).append(source)
    relabelled_chunks = sum(
        1 for cid, r in new.items() if cid in old and old[cid][1] == r[1] and old[cid][2] != r[2]
    )
    old_keys = {r[1] for r in old.values()}
    needed = {r[1] for r in new.values()}
    return Diff(
        added=added,
        changed=changed,
        relabelled=relabelled,
        removed=removed,
        to_embed=len(needed - old_keys),
        reused=sum(1 for r in new.values() if r[1] in old_keys),
        removed_chunks=sum(1 for cid in old if cid not in new),
        relabelled_chunks=relabelled_chunks,
        unchanged=bool(old) and all(new.get(cid) == r for cid, r in old.items()) and len(old) == len(new),
    )


class _Pipeline:
    """Takes a build's chunks in order and writes them to a new generation as their vectors
    become known: reused from the published generation by content key, or embedded a
    window of texts at a time (longest first), a slice per call. Each slice's chunks are
    written by a thread of its own while the next slice is embedded, one batch at a time."""

    def __init__(
        self, layout: Layout, embedder: Embedder, published: _Published, *, progress: ProgressCallback | None
    ) -> None:
        self._layout = layout
        self._embedder = embedder
        self._published = published
        self._progress = progress
        self._writer: GenerationWriter | None = None
        self._held: list[tuple[Chunk, str]] = []  # in order, not yet in the store
        self._waiting = 0  # of those, how many wait for a text in _pending to be embedded
        self._pending: dict[str, str] = {}  # content key -> text, to embed
        self._ready: dict[str, Any] = {}  # content key -> vector embedded, not yet stored
        self._fresh: dict[str, str] = {}  # content key -> the chunk stored with its new vector
        self._embedded = 0
        self._total: int | None = None
        self._window = min(FIRST_WINDOW, WINDOW)
        self._writes: ThreadPoolExecutor | None = None
        self._written: deque[Future[object]] = deque()  # the writes queued, oldest first
        self._write_failed = threading.Event()  # the writes queued after it do nothing
        self._unindexed: list[tuple[Chunk, str]] = []  # in order, not yet in the lexical index
        self._documents = 0
        self._opening: Future[object] | None = None  # the new store being created
        # Chunks whose text this build embedded for a chunk already written: their vector is read
        # back from the new store, which waits for the write in flight, so they are written
        # together, at the end or a batch at a time.
        self._later: list[tuple[Chunk, str]] = []

    def start(self) -> None:
        """Open the encoder while the first documents are prepared."""
        encoder_kind(self._embedder)

    def sources(self, documents: int) -> None:
        """The number of documents the build reads, known before their first chunk: when
        nothing is published, the new generation's store is written by a process of its own
        for :data:`STORE_PROCESS_DOCUMENTS` or more."""
        self._documents = documents

    def add(self, chunk: Chunk, key: str, *, changed: bool) -> None:
        """Take the next chunk; ``changed`` when the published generation lacks it as it is."""
        if key in self._pending:
            self._waiting += 1
        elif key not in self._published.holder and key not in self._fresh and key not in self._ready:
            self._pending[key] = chunk.embed_text
            self._waiting += 1
        self._held.append((chunk, key))
        if self._writer is not None:
            self._unindexed.append((chunk, key))
        elif (changed and self._published.records) or len(self._held) >= HOLD:
            self._open()
        if len(self._pending) >= self._window:
            self._embed()
            if self._writer is not None:
                self._store()
        elif self._writer is not None and len(self._held) - self._waiting >= WRITE_BATCH:
            self._store()

    def expect(self, total: int) -> None:
        """The number of texts this build embeds, known once every document is chunked:
        from now on, ``progress`` hears of them (and first of those already embedded)."""
        self._total = total
        if total:
            self._report(0)
            if self._embedded:
                self._report(self._embedded)

    def publish(self, *, documents: int, report: dict[str, Any]) -> str:
        """Write what is left, then the query encoder and manifest, and publish. Every chunk is
        known by now: the lexical index is written while the last texts are embedded."""
        if self._writer is None:
            self._open()
        writer, unindexed, self._unindexed = self._writer, self._unindexed, []
        assert writer is not None

        def index() -> None:
            for chunk, key in unindexed:
                writer.index(chunk, key)
            writer.save_lexical()

        self._submit(index)
        if self._pending:
            self._embed(last=True)
        self._store(now=True)
        self._drain()
        self._stop_writing()
        assert self._writer is not None
        return write_generation(
            self._layout, [], [], [], self._embedder, documents=documents, report=report, into=self._writer
        )

    def discard(self) -> None:
        """Remove whatever this build wrote (the published generation is untouched)."""
        with contextlib.suppress(BaseException):  # the build failed already, or wrote nothing
            self._drain()
        self._stop_writing()
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    def _drain(self, *, leave: int = 0) -> None:
        """Wait for the writes queued, all but the last ``leave``; raise what one raised."""
        while len(self._written) > leave:
            self._written.popleft().result()

    def _stop_writing(self) -> None:
        if self._writes is not None:
            self._writes.shutdown(wait=True)
            self._writes = None

    def _open(self) -> None:
        if self._writer is None:
            own_process = not self._published.records and self._documents >= STORE_PROCESS_DOCUMENTS
            self._writer = GenerationWriter(self._layout, self._embedder.dimension, own_process=own_process)
            self._unindexed.extend(self._held)
            self._submit(self._writer.open)  # the store is created on the write thread
            self._opening = self._written[-1]

    def _embed(self, *, last: bool = False) -> None:
        """Embed the pending texts, a slice at a time; the chunks of each slice are written
        while the next one is embedded. The ``last`` texts of a build end with a slice of the
        :data:`TAIL_SLICE` longest: it takes long enough to embed for the slice before it to be
        written meanwhile, and what is left to write once the encoder stops is small.

        When nothing is published, the new generation is opened as the encoder starts (every
        chunk is new): its store is created while the first texts are embedded, and not
        before, so that the first documents are prepared with nothing else to compete with."""
        if self._writer is None and not self._published.records:
            self._open()
        keys = sorted(self._pending, key=lambda k: -len(self._pending[k]))
        cuts = list(range(0, len(keys), EMBED_SLICE))
        if last and len(keys) > TAIL_SLICE:
            keys = keys[TAIL_SLICE:] + keys[:TAIL_SLICE]
            cuts = [c for c in cuts if c < len(keys) - TAIL_SLICE] + [len(keys) - TAIL_SLICE]
        for start, stop in zip(cuts, [*cuts[1:], len(keys)], strict=True):
            part = keys[start:stop]
            vectors = np.asarray(self._embedder.embed([self._pending.pop(k) for k in part]), dtype=np.float32)
            self._ready.update(zip(part, vectors, strict=True))
            self._embedded += len(part)
            if self._total is not None:
                self._report(self._embedded)
            if self._writer is not None and self._pending:
                self._store()
        self._waiting = 0
        self._window = min(2 * self._window, WINDOW)

    def _store(self, *, now: bool = False) -> None:
        """Write every held chunk whose vector is known, in batches, and index the chunks
        taken since the last call (in order), on the write thread. While the new store is
        still being created (a store process starting), this waits for a later call, unless
        ``now`` or :data:`HOLD` chunks are held: the encoder goes on meanwhile."""
        assert self._writer is not None
        creating = self._opening is not None and not self._opening.done()
        if creating and not now and len(self._held) < HOLD:
            return
        writable: list[tuple[Chunk, str]] = []
        held: list[tuple[Chunk, str]] = []
        for chunk, key in self._held:
            if key in self._pending:
                held.append((chunk, key))
            elif key in self._fresh and key not in self._ready:
                self._later.append((chunk, key))
            else:
                writable.append((chunk, key))
        self._held = held
        if now or len(self._later) >= WRITE_BATCH:
            writable.extend(self._later)
            self._later = []
        unindexed, self._unindexed = self._unindexed, []
        if not writable and unindexed:
            self._write(unindexed, [], [], None)
        for start in range(0, len(writable), WRITE_BATCH):
            batch = writable[start : start + WRITE_BATCH]
            vectors = self._vectors(batch)
            self._write(unindexed, [c for c, _ in batch], [k for _, k in batch], vectors)
            unindexed = []
            for chunk, key in batch:
                if key in self._ready:
                    self._fresh[key] = chunk.chunk_id
            for _, key in batch:
                self._ready.pop(key, None)

    def _write(
        self, unindexed: list[tuple[Chunk, str]], chunks: list[Chunk], keys: list[str], vectors: Any
    ) -> None:
        """Index ``unindexed`` and store ``chunks`` with their keys and vectors, on the write thread."""
        writer = self._writer
        assert writer is not None

        def write() -> None:
            for chunk, key in unindexed:
                writer.index(chunk, key)
            if chunks:
                writer.store(chunks, keys, vectors)

        self._submit(write)

    def _submit(self, job: Callable[[], object]) -> None:
        """Run ``job`` on the write thread after the ones before it, unless one of them failed;
        wait first while :data:`WRITES_IN_FLIGHT` are queued."""
        self._drain(leave=WRITES_IN_FLIGHT - 1)
        if self._writes is None:
            self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runbook-rag-write")
        failed = self._write_failed

        def run() -> None:
            if failed.is_set():
                return
            try:
                job()
            except BaseException:
                failed.set()
                raise

        self._written.append(self._writes.submit(run))

    def _vectors(self, batch: list[tuple[Chunk, str]]) -> Any:
        assert self._writer is not None
        out = np.empty((len(batch), self._embedder.dimension), dtype=np.float32)
        old: list[tuple[int, str]] = []
        new: list[tuple[int, str]] = []
        for n, (_, key) in enumerate(batch):
            vector = self._ready.get(key)
            if vector is not None:
                out[n] = vector
            elif key in self._fresh:
                new.append((n, self._fresh[key]))  # a text this build embedded for an earlier chunk
            else:
                old.append((n, self._published.holder[key]))
        if old:
            out[[n for n, _ in old]] = self._published.store.vectors([cid for _, cid in old])
        if new:
            self._drain()  # those vectors may be in the batch being written
            out[[n for n, _ in new]] = self._writer.vector_store.vectors([cid for _, cid in new])
        return out

    def _report(self, done: int) -> None:
        if self._progress is not None and self._total:
            self._progress(Progress("embedding", done, self._total))


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


def _report(prepared: Prepared, chunks: int, diff: Diff) -> BuildReport:
    """What this build found and changed: counts and names, never a value."""
    return BuildReport(
        documents=prepared.documents,
        chunks=chunks,
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


class GenerationWriter:
    """A new generation being written: its store, taken in batches, and its lexical index,
    taken one chunk at a time in order. Nothing of it is seen until it is published.

    With ``own_process``, a local store is written by a process of its own (see
    :meth:`FileLayout.create_store`)."""

    def __init__(self, layout: Layout, dimension: int, *, own_process: bool = False) -> None:
        self.layout = layout
        self.name = new_generation_name()
        self.dimension = dimension
        self.own_process = own_process
        self.counts: dict[str, int] = defaultdict(int)
        self.chunks = 0
        self._store: ChromaStore | StoreProcess | None = None
        self._creating = threading.Lock()
        self._lexical = LexicalBuilder(previous=_published_lexical(layout))
        self._lexical_saved = False

    @property
    def vector_store(self) -> ChromaStore | StoreProcess:
        """The generation's store (see :meth:`open`)."""
        return self.open()

    def open(self) -> ChromaStore | StoreProcess:
        """The generation's store, created on the first call (by the writing thread, in a build)."""
        with self._creating:
            if self._store is None:
                self._store = self.layout.create_store(self.name, own_process=self.own_process)
            return self._store

    def index(self, chunk: Chunk, key: str) -> None:
        """Add the next chunk to the lexical index."""
        self._lexical.add(chunk.chunk_id, chunk.source, chunk.embed_text, label_key(chunk.labels), key)

    def store(self, chunks: Sequence[Chunk], keys: Sequence[str], vectors: Any) -> None:
        """Write chunks with their vectors (rows of a float32 array) and content keys to the store."""
        self.vector_store.add(chunks, vectors, keys)
        for chunk in chunks:
            self.counts[label_key(chunk.labels)] += 1
        self.chunks += len(chunks)

    def save_lexical(self) -> None:
        """Save the lexical index; call once every chunk is indexed (their vectors may still
        be on their way to the store)."""
        self._lexical.build().save(self.layout.lexical_dir(self.name))
        self._lexical_saved = True

    def finish(self) -> None:
        """Close the store (Chroma finishes its files before the generation is published),
        saving the lexical index meanwhile unless it is saved; call once every chunk is stored."""
        if len(self._lexical) != self.chunks:
            raise IndexStateError(
                f"the lexical index holds {len(self._lexical)} chunks, the store {self.chunks}",
                path=self.layout.path,
            )
        store = self.vector_store
        if self._lexical_saved:
            store.close()
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="runbook-rag-close") as closing:
            closed = closing.submit(store.close)
            self.save_lexical()
            closed.result()

    def discard(self) -> None:
        """Remove everything written."""
        if self._store is not None:
            self._store.close()
        self.layout.discard(self.name)


def write_generation(
    layout: Layout,
    chunks: Sequence[Chunk],
    keys: Sequence[str],
    vectors: Any,
    embedder: Embedder,
    *,
    documents: int,
    report: dict[str, Any],
    into: GenerationWriter | None = None,
) -> str:
    """Write a complete generation (store, lexical index, query encoder, manifest) and publish it;
    on any failure, remove what was written and leave the published generation as it was.

    ``chunks`` are written with their content ``keys`` and ``vectors`` (one row each) in
    batches, after what ``into`` (a generation written so far) already holds.
    """
    writer = into or GenerationWriter(layout, embedder.dimension)
    name = writer.name
    try:
        for start in range(0, len(chunks), WRITE_BATCH):
            stop = start + WRITE_BATCH
            for chunk, key in zip(chunks[start:stop], keys[start:stop], strict=True):
                writer.index(chunk, key)
            writer.store(
                chunks[start:stop], keys[start:stop], np.asarray(vectors[start:stop], dtype=np.float32)
            )
        writer.finish()
        query_encoder = None
        if isinstance(embedder, SentenceTransformerEmbedder):
            encoder = f"{ENCODERS}/{embedder.query_encoder_name}"
            if embedder.export_query_encoder(layout.path / encoder):
                query_encoder = encoder
        counts = writer.counts
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
                chunks=writer.chunks,
                label_sets=sorted(counts),
                label_set_counts=dict(sorted(counts.items())),
                query_encoder=query_encoder,
                encoder=encoder_kind(embedder),
                report=report,
            )
        )
    except BaseException:
        writer.discard()
        raise
    return name
