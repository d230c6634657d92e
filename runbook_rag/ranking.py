"""Entitlement-filtered retrieval: dense, lexical, and their fusion.

Both retrievers search only what the principal may read, inside their own index: the
principal becomes the ``where`` filter of the vector query
(:func:`runbook_rag.access.where_filter`), and the same filter's label sets become the
lexical index's mask. Every result is re-checked against the labels stored with it
before it becomes a :class:`~runbook_rag.records.Hit`.

Hybrid ranking is reciprocal rank fusion of the two candidate lists, then a query's
exact identifiers (alert, metric, command names, error codes) lift the passages that
name them: in a title or heading first, then in the body.

Each hit carries two numbers. ``evidence`` is the hit's own evidence that it answers the
query: the mean of its cosine similarity and the share of the query's terms (IDF-weighted
over the visible chunks) it contains. Ranking is not by evidence alone (rank fusion and
named identifiers decide the order), so ``score``, the number shown next to a hit, is the
evidence capped by the score of the hit ranked above it: scores never rise down the list,
and the first hit's score is its evidence. Answers abstain when that first score is below
the calibrated threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from .access import check_entitled, where_filter
from .embedding import Embedder
from .encoders import OnnxQueryEncoder
from .errors import QueryError
from .lexical import LexicalIndex, identifiers, terms
from .records import Hit, Principal, QueryTrace
from .redaction import redact
from .store import ChromaStore, StoredMatch, commands_of

Mode = Literal["hybrid", "dense", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "lexical")
MAX_QUERY_CHARS = 2000
MAX_K = 50
CANDIDATES = 50
# Rank-fusion constant and weights (tuned on evals/sample_runbooks.jsonl, see the README).
RRF_K = 10
DENSE_WEIGHT = 1.0
LEXICAL_WEIGHT = 1.0
# An identifier counts as a name (lifting the passages that hold it) only when it occurs in
# at most this many visible runbooks: "KubeNodeEviction", not "StatefulSet" or "PagerDuty".
IDENTIFIER_MAX_DOCUMENTS = 3
# Evidence = COSINE_SHARE * cosine + (1 - COSINE_SHARE) * weighted term coverage.
COSINE_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class Retrievers:
    """One generation's two indexes and the query encoder."""

    store: ChromaStore
    lexical: LexicalIndex
    embedder: Embedder | OnnxQueryEncoder
    label_keys: Sequence[str]


def validate_query(query: str, k: int) -> str:
    """Return the query, redacted and stripped, or raise :class:`QueryError`.

    Card numbers and secrets in a query are masked before it is embedded or logged.
    """
    if not isinstance(query, str) or not query.strip():
        raise QueryError("the query is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if not 1 <= k <= MAX_K:
        raise QueryError(f"k must be between 1 and {MAX_K}")
    return redact(query).text.strip()


def rank(
    retrievers: Retrievers,
    *,
    principal: Principal,
    query: str,
    k: int,
    mode: Mode = "hybrid",
    per_document: int = 0,
    trace: QueryTrace | None = None,
) -> list[Hit]:
    """The ``k`` best chunks for ``query`` among those ``principal`` may read, best first.

    ``per_document`` (when above 0) caps how many chunks of one source are returned. When
    ``trace`` is given, ``trace.withheld`` is set to how many of the ``k`` nearest chunks of
    the whole index the access filter kept from the principal: for the audit trail only.
    """
    if mode not in MODES:
        raise QueryError(f"unknown retrieval mode {mode!r} (choose from {', '.join(MODES)})")
    query = validate_query(query, k)
    where = where_filter(principal, retrievers.label_keys)
    store, lexical = retrievers.store, retrievers.lexical
    if where is None and trace is None:
        return []
    vector = retrievers.embedder.embed([query])[0]
    visible = frozenset(where["acl_key"]["$in"]) if where is not None else frozenset()
    if trace is not None:
        trace.withheld = sum(lexical.label_key_of(c) not in visible for c in store.nearest_ids(vector, k=k))
    if where is None:
        return []
    depth = max(CANDIDATES, 4 * k)
    query_terms = terms(query)

    if mode == "dense" and not per_document:
        # The k nearest are the hits: fetched with their text in the one filtered query.
        nearest = store.nearest_matches(vector, where=where, k=k)
        return _hits(nearest, principal, lexical, query_terms, visible)
    dense = [c for c, _ in store.nearest(vector, where=where, k=depth)] if mode != "lexical" else []
    ranked = [c for c, _ in lexical.top(query_terms, visible=visible, n=depth)] if mode != "dense" else []
    fused: dict[str, float] = {}
    for weight, ids in ((DENSE_WEIGHT, dense), (LEXICAL_WEIGHT, ranked)):
        for rank, chunk_id in enumerate(ids, start=1):
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (RRF_K + rank)

    # Chunks naming the query's identifiers, with how many of them each names.
    named: dict[str, int] = {}
    if mode != "dense":
        for term in identifiers(query_terms):
            for chunk_id in lexical.naming(term, visible=visible, max_documents=IDENTIFIER_MAX_DOCUMENTS):
                named[chunk_id] = named.get(chunk_id, 0) + 1
                fused.setdefault(chunk_id, 0.0)

    order = sorted(fused, key=lambda c: (-named.get(c, 0), -fused[c], c))
    if per_document:
        wanted: list[str] = []
        counts: dict[int, int] = {}
        for chunk_id in order:
            document = lexical.document_of(chunk_id)
            counts[document] = counts.get(document, 0) + 1
            if counts[document] <= per_document:
                wanted.append(chunk_id)
                if len(wanted) == k + len(named):
                    break
    else:
        wanted = order[: k + len(named)]
    matches = {m.chunk_id: m for m in store.score_ids(vector, wanted)}
    chosen = [matches[c] for c in wanted if c in matches]
    if named:
        identifier_terms = set(identifiers(query_terms))
        chosen.sort(
            key=lambda m: (
                -named.get(m.chunk_id, 0),
                not (m.chunk_id in named and _named_in_heading(m, identifier_terms)),
                wanted.index(m.chunk_id),
            )
        )
    if per_document:
        seen: dict[str, int] = {}
        kept = []
        for match in chosen:
            source = str(match.metadata["source"])
            seen[source] = seen.get(source, 0) + 1
            if seen[source] <= per_document:
                kept.append(match)
        chosen = kept
    return _hits(chosen[:k], principal, lexical, query_terms, visible)


def _hits(
    chosen: list[StoredMatch],
    principal: Principal,
    lexical: LexicalIndex,
    query_terms: list[str],
    visible: frozenset[str],
) -> list[Hit]:
    """``chosen``, best first, as re-checked hits with their evidence scores."""
    weights = lexical.weights(query_terms, visible=visible)
    hits = []
    ceiling = 1.0
    for match in chosen:
        hit = _to_hit(match, principal, weights, ceiling)
        ceiling = hit.score
        hits.append(hit)
    return hits


def _named_in_heading(match: StoredMatch, identifier_terms: set[str]) -> bool:
    head = " ".join((str(match.metadata["title"]), *match.heading_path))
    return bool(identifier_terms.intersection(terms(head)))


def passage_hit(match: StoredMatch, principal: Principal) -> Hit:
    """A stored chunk fetched by id as a hit for ``principal`` (re-checked), scored 1."""
    return replace(_to_hit(match, principal, {}, 1.0), score=1.0, evidence=None)


def _to_hit(match: StoredMatch, principal: Principal, weights: dict[str, float], ceiling: float) -> Hit:
    labels = match.labels
    check_entitled(principal, chunk_id=match.chunk_id, labels=labels)
    meta = match.metadata
    heading_path = match.heading_path
    title = str(meta["title"])
    present = set(terms("\n".join((title, " ".join(heading_path), match.text))))
    total = sum(weights.values())
    coverage = sum(w for t, w in weights.items() if t in present) / total if total else 0.0
    cosine = min(1.0, max(0.0, 1.0 - match.distance))
    evidence = COSINE_SHARE * cosine + (1 - COSINE_SHARE) * coverage
    return Hit(
        chunk_id=match.chunk_id,
        source=str(meta["source"]),
        title=title,
        heading_path=heading_path,
        start_line=int(meta["start_line"]),
        end_line=int(meta["end_line"]),
        score=min(evidence, ceiling),
        text=match.text,
        labels=labels,
        url=str(meta["url"]) if meta.get("url") else None,
        evidence=evidence,
        commands=commands_of(meta),
    )
