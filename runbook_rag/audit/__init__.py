"""A tamper-evident audit trail: one HMAC-chained JSON line per search, ask or eval query.

Each line carries the HMAC of the line before it (``prev``) and its own HMAC (``mac``)
over its canonical JSON, keyed with ``RUNBOOK_RAG_AUDIT_KEY`` (or a key file). Editing,
deleting, inserting or reordering a line breaks the chain at that line, and
:func:`verify` names it. Appends take an exclusive lock on the file, so processes can
share one log; a record that cannot be written fails the query (no unaudited answers).
Every record passes through the redactor, and a query can be kept as its HMAC only.

What a record holds: UTC time, request id, principal id and groups, interface
(library, cli, http), the query (masked) or its HMAC, the chunk and source ids
returned, how many candidates the access filter withheld (for auditors only; never
returned to a caller), mode, model, tokens, latency and outcome.

A chain alone cannot show that records were cut from its end. So every append, under the
same lock, also replaces a small *head* file kept apart from the log: the record count
and the last record's MAC, HMAC'ed with the audit key (the head names its kind and its
HMAC is taken after a domain prefix, so a head never passes for a record, nor a record
for a head). An append refuses (:class:`AuditError`, so the query fails) when the log
does not end with the record its head seals, and :func:`verify` fails the same log. The
head protects against someone without the key cutting the log's tail, emptying or
deleting the log, or restoring an older copy of it. It does not protect against anyone
holding the key (they can write any log and head), nor against rolling back or deleting
the log and its head together (deleting only the head leaves a log that verifies
unchecked, and the next append seals it afresh). Keep the head on other storage than
the log, or ship it off the machine, to cover those. Records written after the head
(an append interrupted between the two writes, or a writer without a head) are valid
links of the chain: verification accepts them and the next append seals them.

The key, log and head of an index are resolved by :func:`resolve_audit`, the one place
the library and ``runbook-rag audit verify`` both use.
"""

from .events import AuditEvent, Auditor, open_auditor
from .keys import AuditSetup, default_head, load_key, resolve_audit
from .trail import GENESIS, HEAD_KIND, MIN_KEY_BYTES, AuditError, AuditLog, Verdict, verify

__all__ = [
    "GENESIS",
    "HEAD_KIND",
    "MIN_KEY_BYTES",
    "AuditError",
    "AuditEvent",
    "AuditLog",
    "AuditSetup",
    "Auditor",
    "Verdict",
    "default_head",
    "load_key",
    "open_auditor",
    "resolve_audit",
    "verify",
]
