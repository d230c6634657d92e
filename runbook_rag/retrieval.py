"""Entitlement-filtered dense retrieval.

The principal's entitlements become the ``where`` filter of the vector query
(:func:`runbook_rag.access.where_filter`), and every result is re-checked before
it becomes a :class:`~runbook_rag.records.Hit`.
"""

from __future__ import annotations

from collections.abc import Iterable

from .access import check_entitled, where_filter
from .embedding import Embedder, OnnxQueryEncoder
from .errors import QueryError
from .records import Hit, Principal
from .redaction import redact
from .store import ChromaStore, StoredMatch

MAX_QUERY_CHARS = 2000
MAX_K = 50


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


def dense_search(
    store: ChromaStore,
    embedder: Embedder | OnnxQueryEncoder,
    *,
    label_keys: Iterable[str],
    principal: Principal,
    query: str,
    k: int,
) -> list[Hit]:
    """The ``k`` chunks closest to ``query`` among those ``principal`` may read."""
    query = validate_query(query, k)
    where = where_filter(principal, label_keys)
    if where is None:
        return []
    vector = embedder.embed([query])[0]
    return [_to_hit(match, principal) for match in store.query(vector, where=where, k=k)]


def _to_hit(match: StoredMatch, principal: Principal) -> Hit:
    labels = match.labels
    check_entitled(principal, chunk_id=match.chunk_id, labels=labels)
    meta = match.metadata
    return Hit(
        chunk_id=match.chunk_id,
        source=str(meta["source"]),
        title=str(meta["title"]),
        heading_path=match.heading_path,
        start_line=int(meta["start_line"]),
        end_line=int(meta["end_line"]),
        score=1.0 - match.distance,
        text=match.text,
        labels=labels,
        url=str(meta["url"]) if meta.get("url") else None,
    )
