"""runbook-rag: entitlement-aware search and cited answers over operational runbooks.

>>> from runbook_rag import Principal, RunbookIndex
>>> RunbookIndex.build(["sample_runbooks"])                     # doctest: +SKIP
>>> index = RunbookIndex()                                      # doctest: +SKIP
>>> index.search("card declines spiking", principal=Principal("ana", frozenset({"sre"})))  # doctest: +SKIP

The public names are imported on first use, so ``import runbook_rag`` (and with it
``runbook-rag --help``) loads none of Chroma, the embedding model, numpy or pydantic.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .access import AccessMap
    from .errors import RunbookRagError
    from .index import RunbookIndex
    from .records import Answer, BuildReport, Citation, Hit, Principal, Skipped
    from .settings import Settings

__all__ = [
    "AccessMap",
    "Answer",
    "BuildReport",
    "Citation",
    "Hit",
    "Principal",
    "RunbookIndex",
    "RunbookRagError",
    "Settings",
    "Skipped",
]

# The module each public name comes from; keep in step with the imports above.
_HOMES = {
    "AccessMap": ".access",
    "Answer": ".records",
    "BuildReport": ".records",
    "Citation": ".records",
    "Hit": ".records",
    "Principal": ".records",
    "RunbookIndex": ".index",
    "RunbookRagError": ".errors",
    "Settings": ".settings",
    "Skipped": ".records",
}


def _resolve(name: str) -> object:
    """Import the public ``name`` from its module and keep it, so the next lookup is direct."""
    try:
        home = _HOMES[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value: object = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def _names() -> list[str]:
    return sorted({*globals(), *__all__})


if not TYPE_CHECKING:
    # PEP 562 hooks, hidden from type checkers: they see the imports above instead, and a
    # misspelt name stays an error rather than becoming whatever __getattr__ returns.
    __getattr__ = _resolve
    __dir__ = _names
