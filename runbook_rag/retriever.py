"""``RunbookRetriever``: the index as a llama-index retriever, bound to one principal.

LlamaIndex query engines and agents call ``retrieve(query)``; nothing in that call
can name a principal, so the one given at construction is the only one it searches
as. Results are the same entitlement-filtered, re-checked hits as
:meth:`RunbookIndex.search`, as ``NodeWithScore`` records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .records import Principal

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as exc:  # pragma: no cover - exercised by installs without the extra
    raise ConfigError(
        f"RunbookRetriever needs llama-index ({exc.name} is missing): pip install 'runbook-rag[llm]'"
    ) from None

if TYPE_CHECKING:
    from .index import RunbookIndex


class RunbookRetriever(BaseRetriever):  # type: ignore[misc]
    """Retrieve from ``index`` as ``principal``, ``k`` passages a query."""

    def __init__(self, index: RunbookIndex, principal: Principal, *, k: int = 5, **kwargs: Any) -> None:
        if not isinstance(principal, Principal):
            raise TypeError("RunbookRetriever needs a Principal")
        super().__init__(**kwargs)
        self._index = index
        self._principal = principal
        self._k = k

    @property
    def principal(self) -> Principal:
        return self._principal

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self._index.search(query_bundle.query_str, principal=self._principal, k=self._k)
        return [
            NodeWithScore(
                node=TextNode(
                    id_=hit.chunk_id,
                    text=hit.text,
                    metadata={
                        "source": hit.source,
                        "title": hit.title,
                        "heading": hit.heading,
                        "lines": f"{hit.start_line}-{hit.end_line}",
                        **({"url": hit.url} if hit.url else {}),
                    },
                ),
                score=hit.score,
            )
            for hit in hits
        ]
