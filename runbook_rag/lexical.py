"""The lexical index: BM25 over the same redacted chunks as the vector store.

bm25s builds and stores the index (a sparse matrix of Lucene BM25 term scores, kept
as plain ``.npy`` files in the generation). Those stored scores bake in corpus-wide
statistics, and a statistic counted over chunks a caller may not read is a count of
restricted text. So a search re-derives each posting's term frequency (an integer,
recovered exactly) and re-scores it with the statistics of the chunks the caller may
read: their number, their average length and each term's document frequency. A
principal's scores are those of a bm25s index built from only their chunks.

Entitlements are a boolean mask over the index's chunks, made from the same visible
label sets as the vector-store filter and cached per set; a query touches only the
posting lists of its own terms, never every chunk.

Tokens: words are split at case changes and separators (``KubePodCrashLooping`` also
yields ``kube``, ``pod``, ``crash``, ``loop``), stemmed with the Snowball English stemmer
and stripped of bm25s's English stop words. Identifier-like words (camelCase, snake_case,
letters mixed with digits, dotted or hyphenated names) are also kept whole as
``=identifier`` terms, so an exact identifier outweighs its parts (and, when it is one
word, also as the term the same word typed in lower case gives).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import threading
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .errors import IndexStateError

K1 = 1.2
B = 0.75
CHUNKS_FILE = "chunks.json"

_WORD = re.compile(r"[^\W_](?:[\w.\-]*[^\W_])?")
_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+|[^\W\d_]+")
_CAMEL = re.compile(r"[a-z][A-Z]")
_DIGIT = re.compile(r"\d")
_LETTER = re.compile(r"[^\W\d_]")
# Quantities and classes, not names: 30s, 800ms, 5xx, 3ds, p99, v2, sev1.
_QUANTITY = re.compile(r"\d+[^\W\d_]{1,3}|[^\W\d_]{1,3}\d{1,3}", re.IGNORECASE)


@functools.cache
def _stopwords() -> frozenset[str]:
    """bm25s's English stop words, read from its module alone: importing the package
    would load SciPy, which only building the index needs."""
    spec = importlib.util.find_spec("bm25s")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("bm25s is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "stopwords.py"
    module = importlib.util.module_from_spec(
        cast(Any, importlib.util.spec_from_file_location("_bm25s_stopwords", path))
    )
    cast(Any, module.__spec__).loader.exec_module(module)
    return frozenset(module.STOPWORDS_EN)


@functools.cache
def _stemmer() -> object:
    import Stemmer

    return Stemmer.Stemmer("english")


@functools.lru_cache(maxsize=200_000)
def _stem(word: str) -> str:
    return str(_stemmer().stemWord(word))  # type: ignore[attr-defined]


def is_identifier(word: str) -> bool:
    """Whether ``word`` reads as a name (alert, metric, command, error code), not prose."""
    if _CAMEL.search(word) or "_" in word:
        return True
    if _DIGIT.search(word) and _LETTER.search(word):
        return len(word) >= 4 and not _QUANTITY.fullmatch(word)
    return len(word) >= 4 and word.count("-") + word.count(".") >= 2 and not word.endswith(".")


def terms(text: str) -> list[str]:
    """The index terms of ``text`` (documents and queries go through the same function)."""
    out: list[str] = []
    for word in _WORD.findall(text):
        out.extend(_word_terms(word))
    return out


@functools.lru_cache(maxsize=65_536)
def _word_terms(word: str) -> tuple[str, ...]:
    """The index terms of one word (a runbook repeats its words: each is analysed once)."""
    out: list[str] = []
    stop = _stopwords()
    if is_identifier(word):
        out.append("=" + word.lower())
        if word.isalnum():
            out.append(_stem(word.lower()))  # as it reads typed in lower case
    for part in _PART.findall(word):
        low = part.lower()
        if low not in stop and (len(low) > 1 or low.isdigit()):
            out.append(_stem(low))
    return tuple(out)


def identifiers(query_terms: Iterable[str]) -> list[str]:
    """The whole-identifier terms among ``query_terms``."""
    return [t for t in dict.fromkeys(query_terms) if t.startswith("=")]


def _idf(df: np.ndarray | float, n: float) -> np.ndarray:
    return np.log1p((n - df + 0.5) / (np.asarray(df, dtype=np.float64) + 0.5))


@dataclass(frozen=True, slots=True)
class _View:
    """The statistics of the chunks one set of label sets may read."""

    mask: np.ndarray
    count: int
    avg_len: float


@dataclass(frozen=True, slots=True)
class _Matrix:
    """The term-by-chunk BM25 score matrix (compressed sparse columns, one column per
    term) and the term vocabulary, in the files bm25s writes."""

    vocab: dict[str, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    params: dict[str, Any]
    """bm25s's parameters, kept so that bm25s (and earlier versions of this index) can load it."""

    FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy")
    VOCAB = "vocab.index.json"
    PARAMS = "params.index.json"

    def save(self, folder: Path) -> None:
        for name, values in zip(self.FILES, (self.data, self.indices, self.indptr), strict=True):
            np.save(folder / name, values)
        (folder / self.VOCAB).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        (folder / self.PARAMS).write_text(json.dumps(self.params, indent=4), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path) -> _Matrix:
        data, indices, indptr = (np.load(folder / name, mmap_mode="r") for name in cls.FILES)
        vocab = json.loads((folder / cls.VOCAB).read_text(encoding="utf-8"))
        if not isinstance(vocab, dict) or len(indptr) != len(vocab) + 1:
            raise ValueError("the term vocabulary does not match the score matrix")
        params = json.loads((folder / cls.PARAMS).read_text(encoding="utf-8"))
        return cls(vocab, data, indices, indptr, params if isinstance(params, dict) else {})


def _params(bm25: Any, num_docs: int) -> dict[str, Any]:
    """The parameters bm25s saves with an index (``BM25.save``'s ``params.index.json``)."""
    import bm25s

    names = ("k1", "b", "delta", "method", "idf_method", "dtype", "int_dtype")
    params = {name: getattr(bm25, name) for name in names}
    return {**params, "num_docs": num_docs, "version": bm25s.__version__, "backend": bm25.backend}


class LexicalIndex:
    """BM25 over one generation's chunks, searched within a caller's visible label sets."""

    def __init__(
        self,
        matrix: _Matrix,
        chunk_ids: Sequence[str],
        lengths: np.ndarray,
        acl: np.ndarray,
        keys: Sequence[str],
        documents: np.ndarray,
        content_keys: Sequence[str] = (),
    ) -> None:
        self._matrix = matrix
        self._content_keys = list(content_keys) or [""] * len(chunk_ids)
        self.chunk_ids = list(chunk_ids)
        self._documents = documents
        self._lengths = lengths.astype(np.float64)
        self._acl = acl
        self._keys = list(keys)
        self._vocab = matrix.vocab
        self._data = matrix.data
        self._indices = matrix.indices
        self._indptr = matrix.indptr
        self._avg_all = float(self._lengths.mean()) if len(self._lengths) else 1.0
        self._views: dict[frozenset[str], _View] = {}
        self._positions: dict[str, int] | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.chunk_ids)

    @classmethod
    def build(cls, entries: Iterable[Sequence[str]], *, previous: LexicalIndex | None = None) -> LexicalIndex:
        """Index ``(chunk_id, source, text, label_key[, content_key])`` entries.

        A chunk whose content key ``previous`` (the published generation's index) already
        holds takes its terms from there instead of being tokenised again.
        """
        builder = LexicalBuilder(previous=previous)
        for chunk_id, source, text, key, *rest in entries:
            builder.add(chunk_id, source, text, key, rest[0] if rest else "")
        return builder.build()

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._matrix.save(folder)
        np.save(folder / "lengths.npy", self._lengths.astype(np.int32))
        np.save(folder / "acl.npy", self._acl)
        np.save(folder / "documents.npy", self._documents)
        (folder / CHUNKS_FILE).write_text(
            json.dumps(
                {"chunk_ids": self.chunk_ids, "label_keys": self._keys, "content_keys": self._content_keys}
            ),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, folder: Path) -> LexicalIndex:
        """The index saved in ``folder``, its arrays memory-mapped read-only."""
        try:
            meta = json.loads((folder / CHUNKS_FILE).read_text(encoding="utf-8"))
            matrix = _Matrix.load(folder)
            lengths = np.load(folder / "lengths.npy")
            acl = np.load(folder / "acl.npy")
            documents = np.load(folder / "documents.npy")
        except (OSError, ValueError, KeyError) as exc:
            raise IndexStateError(f"the lexical index is unreadable: {exc}", path=folder) from exc
        if not len(meta["chunk_ids"]) == len(lengths) == len(acl) == len(documents):
            raise IndexStateError("the lexical index is inconsistent", path=folder)
        return cls(
            matrix,
            meta["chunk_ids"],
            lengths,
            acl,
            meta["label_keys"],
            documents,
            meta.get("content_keys", ()),
        )

    def _view(self, visible: frozenset[str]) -> _View:
        view = self._views.get(visible)
        if view is None:
            codes = [i for i, key in enumerate(self._keys) if key in visible]
            mask = np.isin(self._acl, codes)
            count = int(mask.sum())
            avg = float(self._lengths[mask].mean()) if count else 1.0
            view = _View(mask, count, avg)
            with self._lock:
                if len(self._views) >= 256:
                    self._views.clear()
                self._views[visible] = view
        return view

    def top(self, query_terms: Sequence[str], *, visible: frozenset[str], n: int) -> list[tuple[str, float]]:
        """The ``n`` best chunks among those with a label set in ``visible``, best first."""
        view = self._view(visible)
        if not view.count:
            return []
        total = len(self.chunk_ids)
        touched: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        for term in dict.fromkeys(query_terms):
            tid = self._vocab.get(term)
            if tid is None:
                continue
            lo, hi = int(self._indptr[tid]), int(self._indptr[tid + 1])
            docs = self._indices[lo:hi]
            keep = view.mask[docs]
            if not keep.any():
                continue
            docs, stored = docs[keep], self._data[lo:hi][keep].astype(np.float64)
            # Recover the term frequency from the stored score, then re-score with the view's stats.
            tfc = stored / _idf(hi - lo, total)
            lengths = self._lengths[docs]
            tf = np.rint(tfc * K1 * (1 - B + B * lengths / self._avg_all) / (1 - tfc))
            touched.append(docs)
            parts.append(_idf(len(docs), view.count) * tf / (K1 * (1 - B + B * lengths / view.avg_len) + tf))
        if not touched:
            return []
        docs = np.concatenate(touched)
        scores = np.bincount(docs, weights=np.concatenate(parts), minlength=total)
        docs = np.unique(docs)
        if len(docs) > n:
            docs = docs[np.argpartition(-scores[docs], n - 1)[:n]]
        order = np.lexsort((docs, -scores[docs]))
        return [(self.chunk_ids[d], float(scores[d])) for d in docs[order].tolist()]

    def weights(self, query_terms: Sequence[str], *, visible: frozenset[str]) -> dict[str, float]:
        """Each distinct query term's IDF among the visible chunks (a term none of them has
        weighs the most: it is what the visible runbooks do not cover)."""
        view = self._view(visible)
        out: dict[str, float] = {}
        for term in dict.fromkeys(query_terms):
            tid = self._vocab.get(term)
            df = 0
            if tid is not None:
                docs = self._indices[int(self._indptr[tid]) : int(self._indptr[tid + 1])]
                df = int(view.mask[docs].sum())
            out[term] = float(_idf(df, max(view.count, 1)))
        return out

    def _position(self, chunk_id: str) -> int | None:
        if self._positions is None:
            self._positions = {c: i for i, c in enumerate(self.chunk_ids)}
        return self._positions.get(chunk_id)

    def document_of(self, chunk_id: str) -> int:
        """A number standing for the chunk's source document (-1 when unknown)."""
        position = self._position(chunk_id)
        return -1 if position is None else int(self._documents[position])

    def label_key_of(self, chunk_id: str) -> str | None:
        """The chunk's label set, as its key (None when the chunk is unknown)."""
        position = self._position(chunk_id)
        return None if position is None else self._keys[int(self._acl[position])]

    def naming(self, term: str, *, visible: frozenset[str], max_documents: int) -> list[str]:
        """The visible chunks containing ``term``, when they come from at most
        ``max_documents`` runbooks (a name, not a common word); else none."""
        tid = self._vocab.get(term)
        if tid is None:
            return []
        docs = self._indices[int(self._indptr[tid]) : int(self._indptr[tid + 1])]
        docs = docs[self._view(visible).mask[docs]]
        if len(np.unique(self._documents[docs])) > max_documents:
            return []
        return [self.chunk_ids[d] for d in docs.tolist()]


class LexicalBuilder:
    """Builds a :class:`LexicalIndex` one chunk at a time: each chunk is tokenised as it is
    added and only its term ids are kept (four bytes a term), so a build never holds every
    chunk's text at once."""

    def __init__(self, *, previous: LexicalIndex | None = None) -> None:
        self._previous = _TermBags(previous) if previous is not None else None
        self._content_keys: list[str] = []
        self._chunk_ids: list[str] = []
        self._token_ids: list[array[int]] = []
        self._keys: dict[str, int] = {}
        self._acl = array("i")
        self._sources: dict[str, int] = {}
        self._documents = array("i")
        self._vocab: dict[str, int] = {"": 0}

    def __len__(self) -> int:
        return len(self._chunk_ids)

    def add(self, chunk_id: str, source: str, text: str, label_key: str, content_key: str = "") -> None:
        """Index one chunk: its id, source document, indexed text, label-set key and content key."""
        self._chunk_ids.append(chunk_id)
        self._content_keys.append(content_key)
        self._documents.append(self._sources.setdefault(source, len(self._sources)))
        bag = self._previous.get(content_key) if self._previous is not None and content_key else None
        tokens = bag if bag is not None else terms(text)
        vocab = self._vocab
        self._token_ids.append(array("i", [vocab.setdefault(t, len(vocab)) for t in tokens] or [0]))
        self._acl.append(self._keys.setdefault(label_key, len(self._keys)))

    def build(self) -> LexicalIndex:
        """The index of every chunk added, in the order added."""
        import bm25s

        bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
        if self._chunk_ids:
            bm25.index((self._token_ids, self._vocab), create_empty_token=False, show_progress=False)
            scores = bm25.scores
            matrix = _Matrix(
                dict(bm25.vocab_dict),
                np.asarray(scores["data"]),
                np.asarray(scores["indices"]),
                np.asarray(scores["indptr"]),
                _params(bm25, int(scores["num_docs"])),
            )
        else:
            empty = np.zeros(len(self._vocab) + 1, dtype=np.int32)
            matrix = _Matrix(self._vocab, np.zeros(0), np.zeros(0, dtype=np.int32), empty, _params(bm25, 0))
        lengths = np.array([len(ids) for ids in self._token_ids], dtype=np.int32)
        return LexicalIndex(
            matrix,
            self._chunk_ids,
            lengths,
            np.frombuffer(self._acl, dtype=np.int32).copy(),
            list(self._keys),
            np.frombuffer(self._documents, dtype=np.int32).copy(),
            self._content_keys,
        )


class _TermBags:
    """The terms of each content key of an index, recovered from its stored matrix on demand."""

    def __init__(self, index: LexicalIndex) -> None:
        keys = index._content_keys
        self._at = {key: i for i, key in enumerate(keys) if key}
        self._words: list[str] = []
        if not self._at or not len(index._indices):
            self._at = {}
            return
        self._words = sorted(index._vocab, key=index._vocab.__getitem__)
        df = np.diff(index._indptr)
        term_of = np.repeat(np.arange(len(df)), df)
        docs = index._indices.astype(np.int64)
        tfc = index._data.astype(np.float64) / _idf(df[term_of], len(index.chunk_ids))
        norm = K1 * (1 - B + B * index._lengths[docs] / index._avg_all)
        order = np.argsort(docs, kind="stable")
        self._terms = term_of[order].astype(np.int32)
        self._counts = np.rint(tfc * norm / (1 - tfc)).astype(np.int32)[order]
        self._bounds = np.searchsorted(docs[order], np.arange(len(index.chunk_ids) + 1))

    def get(self, content_key: str) -> list[str] | None:
        """The terms of ``content_key`` (with their counts), or None when the index lacks it."""
        i = self._at.get(content_key)
        if i is None:
            return None
        lo, hi = int(self._bounds[i]), int(self._bounds[i + 1])
        words = self._words
        return [
            words[t]
            for t, n in zip(self._terms[lo:hi].tolist(), self._counts[lo:hi].tolist(), strict=True)
            for _ in range(n)
        ]
