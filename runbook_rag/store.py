"""The vector store: the only module that imports chromadb.

One Chroma collection per index generation, with embeddings always supplied by
us (Chroma's default embedding function would try to download a model). The HNSW
graph uses cosine space and a search ``ef`` high enough that filtered results
match exact search at the sizes we measured.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from .access import LABEL_SEP, label_key
from .errors import IndexStateError
from .records import Chunk, StepCommand

COLLECTION = "runbooks"
HNSW: dict[str, Any] = {
    "space": "cosine",
    "ef_construction": 200,
    "ef_search": 128,
    "max_neighbors": 32,
}


@dataclass(frozen=True, slots=True)
class StoredMatch:
    """A raw store result, before any access check."""

    chunk_id: str
    distance: float
    text: str
    metadata: dict[str, Any]

    @property
    def labels(self) -> tuple[str, ...]:
        return labels_of(self.metadata)

    @property
    def heading_path(self) -> tuple[str, ...]:
        return tuple(json.loads(self.metadata.get("heading_path", "[]")))


class ChromaStore:
    """Chunks, their embeddings and metadata in one Chroma collection.

    Opened on first use, so a command that never searches never starts Chroma. A
    published local store is opened ``read_only``: Chroma's embedded client writes to
    every store it opens (a lock table, the HNSW files), and a published generation is
    never written again, so this process opens a private copy of it instead, removed
    when the store is closed or the process exits.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        create: bool = False,
        read_only: bool = False,
        client: Any = None,
        collection: str = COLLECTION,
    ) -> None:
        """The collection in a local store at ``path``, or ``collection`` through ``client``
        (a Chroma server, see :func:`server_client`)."""
        self.path = path
        self.name = collection
        self._create = create
        self._read_only = read_only and client is None
        self._client = client
        self._collection_handle: Any = None
        self._copy: Path | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._owns_client = False
        self._warming: threading.Thread | None = None
        self._open_lock = threading.RLock()
        self._lock = threading.Lock()
        self._allowed: dict[str, list[str]] = {}
        self._total: int | None = None
        if create:
            self._open()

    @property
    def _collection(self) -> Any:
        handle = self._collection_handle
        if handle is None:
            with self._open_lock:
                if self._collection_handle is None:
                    self._open()
                handle = self._collection_handle
        return handle

    def warm(self) -> None:
        """Start opening the store in the background (a query encodes its text meanwhile);
        the first use waits for it, and reports any error itself."""
        if self._collection_handle is not None or self._warming is not None:
            return

        def open_quietly() -> None:
            with contextlib.suppress(Exception):
                self._collection  # noqa: B018  (opens it)

        self._warming = threading.Thread(target=open_quietly, name="runbook-rag-store-open")
        self._warming.start()

    def _open(self) -> None:
        import chromadb

        where = str(self.path) if self.path is not None else self.name
        try:
            if self._client is None:
                assert self.path is not None
                copy = private_copy(self.path) if self._read_only else None
                try:
                    client = local_client(copy or self.path)
                except BaseException:
                    _release(None, copy)
                    raise
                self._client, self._copy, self._owns_client = client, copy, True
                self._finalizer = weakref.finalize(self, _release, client, copy)
            if self._create:
                self._collection_handle = self._client.create_collection(
                    self.name, configuration=cast(Any, {"hnsw": HNSW}), embedding_function=None
                )
            else:
                self._collection_handle = self._client.get_collection(self.name, embedding_function=None)
        except (ValueError, chromadb.errors.ChromaError) as exc:
            self.close()
            raise IndexStateError(f"cannot open the vector store: {exc}", path=where) from exc
        except OSError as exc:
            self.close()
            raise IndexStateError(f"cannot open the vector store: {exc.strerror or exc}", path=where) from exc

    def close(self) -> None:
        """Let go of the store: its client when this store made it, and this process's
        private copy. Using the store again opens it again."""
        with self._open_lock:
            self._collection_handle = None
            if self._owns_client:
                self._client = None
                self._owns_client = False
            if self._finalizer is not None:
                self._finalizer()
                self._finalizer = None
            self._copy = None
            self._warming = None

    def add(self, chunks: Sequence[Chunk], embeddings: Any, keys: Sequence[str]) -> None:
        """Write chunks with their vectors (one row each: a float32 array or lists of floats)
        and content keys, in batches no larger than the client takes at once."""
        import numpy as np

        vectors = np.asarray(embeddings, dtype=np.float32)
        if len(vectors) != len(chunks) or len(keys) != len(chunks):
            raise ValueError("chunks, vectors and keys differ in number")
        step = max(1, min(5000, int(self._client.get_max_batch_size())))
        for i in range(0, len(chunks), step):
            batch = chunks[i : i + step]
            self._collection.add(
                ids=[c.chunk_id for c in batch],
                embeddings=vectors[i : i + step],
                documents=[c.text for c in batch],
                metadatas=[
                    {**metadata_of(c), "content_key": k}
                    for c, k in zip(batch, keys[i : i + step], strict=True)
                ],
            )

    def embeddings(self, ids: set[str]) -> dict[str, list[float]]:
        """The stored vectors of ``ids``, as lists of floats."""
        wanted = sorted(ids)
        return dict(zip(wanted, self.vectors(wanted).tolist(), strict=True))

    def vectors(self, ids: Sequence[str]) -> Any:
        """The stored vectors of ``ids``, one float32 row each in the order given (for reuse
        by the next generation); raises :class:`IndexStateError` when one is missing."""
        import numpy as np

        unique = list(dict.fromkeys(ids))
        rows: dict[str, Any] = {}
        for i in range(0, len(unique), 5000):
            got = self._collection.get(ids=unique[i : i + 5000], include=["embeddings"])
            rows.update(zip(got["ids"], got["embeddings"], strict=True))
        missing = [cid for cid in unique if cid not in rows]
        if missing:
            raise IndexStateError(f"the store holds no vector for chunk {missing[0]}", path=self._where)
        out = np.empty((len(ids), self._dimension(rows)), dtype=np.float32)
        for n, cid in enumerate(ids):
            out[n] = rows[cid]
        return out

    @staticmethod
    def _dimension(rows: dict[str, Any]) -> int:
        return len(next(iter(rows.values()))) if rows else 0

    @property
    def _where(self) -> str:
        return str(self.path) if self.path is not None else self.name

    def metadata_batches(self, size: int = 5000) -> Iterator[dict[str, dict[str, Any]]]:
        """Every chunk id with its metadata, ``size`` chunks at a time."""
        total = self.count()
        for offset in range(0, total, size):
            got = self._collection.get(include=["metadatas"], limit=size, offset=offset)
            yield {
                cid: dict(meta or {}) for cid, meta in zip(got["ids"], got["metadatas"] or [], strict=True)
            }

    def nearest(
        self, embedding: Sequence[float], *, where: dict[str, Any], k: int
    ) -> list[tuple[str, float]]:
        """Ids and cosine distances of the nearest chunks among those matching ``where``,
        searched inside Chroma's index.

        A generation never changes once written, so ``where`` is resolved to its matching
        ids once per store and the nearest-neighbour search runs restricted to those ids:
        Chroma resolves a metadata filter in SQLite on every query, which costs more than
        the search itself (see benchmarks/filter_representation.py). Texts and metadata
        are fetched later, for the few chunks returned.
        """
        result = self._query_within(embedding, where, k, ["distances"])
        if result is None:
            return []
        return [(cid, float(d)) for cid, d in zip(result["ids"][0], result["distances"][0], strict=True)]

    def nearest_matches(
        self, embedding: Sequence[float], *, where: dict[str, Any], k: int
    ) -> list[StoredMatch]:
        """The ``k`` nearest chunks among those matching ``where``, with their text and
        metadata, in one query (:meth:`nearest`, fetching what a caller is given)."""
        result = self._query_within(embedding, where, k, ["documents", "metadatas", "distances"])
        return [] if result is None else self._matches(result)

    def _query_within(
        self, embedding: Sequence[float], where: dict[str, Any], k: int, include: list[str]
    ) -> Any:
        allowed = self._allowed_ids(where)
        if not allowed:
            return None
        if self._total is None:
            self._total = self.count()
        # A filter that matches every chunk restricts nothing: skip passing every id.
        restrict = {"ids": allowed} if len(allowed) < self._total else {}
        return self._collection.query(
            query_embeddings=cast(Any, [list(embedding)]),
            n_results=min(k, len(allowed)),
            include=cast(Any, include),
            **restrict,
        )

    def query_unfiltered(self, embedding: Sequence[float], *, k: int) -> list[StoredMatch]:
        """The nearest chunks with no access filter: for benchmarks and index checks only,
        never on a read path that returns chunks to a caller."""
        return self._matches(
            self._collection.query(
                query_embeddings=cast(Any, [list(embedding)]),
                n_results=k,
                include=["documents", "metadatas", "distances"],
            )
        )

    def nearest_ids(self, embedding: Sequence[float], *, k: int) -> list[str]:
        """The ids of the ``k`` nearest chunks of the whole collection, and nothing else: how
        much the access filter withheld, for the audit trail (their labels are looked up in
        the generation's lexical index, not fetched)."""
        vector = cast(Any, [list(embedding)])
        return list(self._collection.query(query_embeddings=vector, n_results=k, include=[])["ids"][0])

    def score_ids(self, embedding: Sequence[float], ids: Sequence[str]) -> list[StoredMatch]:
        """The chunks ``ids`` (those that exist) with their exact cosine distance to ``embedding``."""
        import numpy as np

        if not ids:
            return []
        got = self._collection.get(ids=list(ids), include=["embeddings", "documents", "metadatas"])
        query = np.asarray(embedding, dtype=np.float64)
        vectors = np.asarray(got["embeddings"], dtype=np.float64).reshape(len(got["ids"]), -1)
        norms = np.linalg.norm(vectors, axis=1) * (np.linalg.norm(query) or 1.0)
        cosines = vectors @ query / np.where(norms == 0, 1.0, norms)
        return [
            StoredMatch(cid, 1.0 - float(cos), doc or "", dict(meta or {}))
            for cid, cos, doc, meta in zip(
                got["ids"], cosines.tolist(), got["documents"], got["metadatas"], strict=True
            )
        ]

    def documents(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """Every chunk's id, text and metadata, in batches (to derive the lexical index)."""
        total = self.count()
        for offset in range(0, total, 5000):
            got = self._collection.get(include=["documents", "metadatas"], limit=5000, offset=offset)
            for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
                yield cid, doc or "", dict(meta or {})

    def _allowed_ids(self, where: dict[str, Any]) -> list[str]:
        key = json.dumps(where, sort_keys=True)
        with self._lock:
            cached = self._allowed.get(key)
        if cached is None:
            cached = list(self._collection.get(where=where, include=[])["ids"])
            with self._lock:
                if len(self._allowed) >= 256:
                    self._allowed.clear()
                self._allowed[key] = cached
        return cached

    @staticmethod
    def _matches(result: Any) -> list[StoredMatch]:
        return [
            StoredMatch(cid, float(dist), doc or "", dict(meta or {}))
            for cid, dist, doc, meta in zip(
                result["ids"][0],
                result["distances"][0],
                result["documents"][0],
                result["metadatas"][0],
                strict=True,
            )
        ]

    def chunk(self, chunk_id: str, where: dict[str, Any]) -> StoredMatch | None:
        """The chunk ``chunk_id`` when ``where`` (the principal's filter) allows it, else None."""
        got = self._collection.get(ids=[chunk_id], where=where, include=["documents", "metadatas"])
        if not got["ids"]:
            return None
        return StoredMatch(got["ids"][0], 0.0, got["documents"][0] or "", dict(got["metadatas"][0] or {}))

    def runbook(self, source: str, where: dict[str, Any]) -> list[StoredMatch]:
        """The chunks of the runbook ``source`` that ``where`` (the principal's filter) allows."""
        got = self._collection.get(
            where={"$and": [{"source": source}, where]}, include=["documents", "metadatas"]
        )
        return [
            StoredMatch(cid, 0.0, doc or "", dict(meta or {}))
            for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True)
        ]

    def count(self) -> int:
        return int(self._collection.count())

    def all_metadata(self) -> dict[str, dict[str, Any]]:
        """Every chunk id with its metadata (for verification and reports)."""
        got = self._collection.get(include=["metadatas"])
        return {cid: dict(meta or {}) for cid, meta in zip(got["ids"], got["metadatas"] or [], strict=True)}


def labels_of(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """A stored chunk's label list (empty, so entitled to no one, when missing or malformed)."""
    acl = metadata.get("acl")
    return tuple(acl) if isinstance(acl, list) else ()


def commands_of(metadata: Mapping[str, Any]) -> tuple[StepCommand, ...]:
    """A stored chunk's commands with their risk (none when missing or malformed)."""
    try:
        rows = json.loads(metadata.get("commands") or "[]")
        return tuple(
            StepCommand(str(t), str(lang), int(a), int(b), str(r), tuple(why))
            for t, lang, a, b, r, why in rows
        )
    except (TypeError, ValueError):
        return ()


def approval_policy_of(metadata: Mapping[str, Any]) -> tuple[tuple[str, ...], bool]:
    """A stored chunk's approver groups and whether it needs two approvers."""
    approvers = metadata.get("approvers")
    groups = tuple(g for g in approvers.split(LABEL_SEP) if g) if isinstance(approvers, str) else ()
    return groups, metadata.get("two_person") is True


def metadata_of(chunk: Chunk) -> dict[str, Any]:
    """The metadata stored with a chunk: its labels as a list and as a label-set key, its
    commands with their risk, and who may approve them."""
    meta: dict[str, Any] = {
        "doc_id": chunk.doc_id,
        "source": chunk.source,
        "title": chunk.title,
        "heading_path": json.dumps(list(chunk.heading_path), ensure_ascii=False),
        "start_line": chunk.start_line,
        "end_line": chunk.end_line,
        "acl": list(chunk.labels),
        "acl_key": label_key(chunk.labels),
    }
    if chunk.url:
        meta["url"] = chunk.url
    if chunk.commands:
        meta["commands"] = json.dumps(
            [
                [c.command, c.language, c.start_line, c.end_line, c.risk, list(c.reasons)]
                for c in chunk.commands
            ],
            ensure_ascii=False,
        )
    if chunk.approvers:
        meta["approvers"] = label_key(chunk.approvers)
    if chunk.two_person:
        meta["two_person"] = True
    return meta


def private_copy(path: Path) -> Path:
    """A copy of the Chroma files of the store at ``path`` (the SQLite file and the
    segment folders) in a new temporary folder that only this process uses."""
    sweep_private_copies()
    copy = Path(tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-"))
    try:
        for entry in path.iterdir():
            if entry.name == "chroma.sqlite3":
                shutil.copyfile(entry, copy / entry.name)
            elif entry.is_dir() and _is_segment(entry.name):
                shutil.copytree(entry, copy / entry.name)
    except OSError:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    return copy


COPY_PREFIX = "runbook-rag-store-"


def _release(client: Any, copy: Path | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
    if copy is not None:
        shutil.rmtree(copy, ignore_errors=True)


def sweep_private_copies() -> None:
    """Remove the private store copies of processes that ended without removing theirs."""
    for entry in Path(tempfile.gettempdir()).glob(f"{COPY_PREFIX}*-*"):
        pid = entry.name.removeprefix(COPY_PREFIX).partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _is_segment(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def local_client(path: Path) -> Any:
    """An embedded Chroma store in ``path`` (one process writes it at a time)."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    return chromadb.PersistentClient(
        path=str(path), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    )


class ChromaServer:
    """A Chroma server (``chroma run`` or a distributed deployment): its collections and the
    registry collection that records, per index name, the published manifest."""

    REGISTRY = "runbook-rag-registry"

    def __init__(self, client: Any) -> None:
        self.client = client
        self._registry = client.get_or_create_collection(self.REGISTRY, embedding_function=None)

    @classmethod
    def connect(
        cls, *, host: str, port: int, ssl: bool, token: str | None, tenant: str, database: str
    ) -> ChromaServer:
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        headers = {"Authorization": f"Bearer {token}"} if token else None
        try:
            client = chromadb.HttpClient(
                host=host,
                port=port,
                ssl=ssl,
                headers=headers,
                tenant=tenant,
                database=database,
                settings=ChromaSettings(anonymized_telemetry=False),
            )
            return cls(client)
        except (ValueError, chromadb.errors.ChromaError) as exc:
            # The message names the server, never the token.
            raise IndexStateError(
                f"cannot reach the Chroma server: {type(exc).__name__}", path=f"{host}:{port}"
            ) from None

    def record(self, name: str) -> tuple[str | None, dict[str, Any]]:
        """The registry record of index ``name``: its published manifest (JSON) and metadata."""
        got = self._registry.get(ids=[name], include=["documents", "metadatas"])
        if not got["ids"]:
            return None, {}
        return got["documents"][0], dict(got["metadatas"][0] or {})

    def put_record(self, name: str, document: str, metadata: dict[str, Any]) -> None:
        """Replace the registry record of index ``name`` in one upsert."""
        self._registry.upsert(ids=[name], embeddings=[[1.0]], documents=[document], metadatas=[metadata])

    def close(self) -> None:
        """Close the connection to the server. Chroma 1.5's HTTP client (and the admin client
        inside it) leaves its connection pool open when closed, so the pools are closed here."""
        clients = (self.client, getattr(self.client, "_admin_client", None))
        sessions = [getattr(getattr(c, "_server", None), "_session", None) for c in clients]
        with contextlib.suppress(Exception):
            self.client.close()
        for session in sessions:
            if session is not None and callable(getattr(session, "close", None)):
                with contextlib.suppress(Exception):
                    session.close()

    def store(self, collection: str, *, create: bool = False) -> ChromaStore:
        return ChromaStore(client=self.client, collection=collection, create=create)

    def collections(self) -> list[str]:
        return [c if isinstance(c, str) else c.name for c in self.client.list_collections()]

    def drop(self, collection: str) -> None:
        import chromadb

        with contextlib.suppress(ValueError, chromadb.errors.ChromaError):
            self.client.delete_collection(collection)
