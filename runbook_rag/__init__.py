"""runbook-rag: entitlement-aware search and cited answers over operational runbooks.

>>> from runbook_rag import Principal, RunbookIndex
>>> RunbookIndex.build(["sample_runbooks"])                     # doctest: +SKIP
>>> index = RunbookIndex()                                      # doctest: +SKIP
>>> index.search("card declines spiking", principal=Principal("ana", frozenset({"sre"})))  # doctest: +SKIP
"""

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
