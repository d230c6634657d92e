"""The one error tree of runbook-rag.

Every error the library raises on purpose derives from :class:`RunbookRagError`::

    RunbookRagError
    ├── SourceError          a source document cannot be indexed (file, line)
    │   ├── FrontMatterError     malformed or unknown front matter
    │   ├── AccessLabelError     missing or malformed access labels
    │   │   └── SidecarError     a Confluence sidecar unreadable or off its schema (file, field)
    │   ├── UnsafeSourceError    a link out of the source folder, or not a regular file
    │   └── SourceLimitError     a document over a cost cap (line length, chunks)
    ├── ConfigError          bad settings or access map (file, line)
    ├── EmbeddingError       the embedding model cannot be loaded or used
    ├── ConfluenceError      the Confluence API cannot be read
    ├── IndexStateError      the index on disk cannot be used
    │   ├── IndexNotFoundError   no published index at the path
    │   └── ModelMismatchError   the index was built with another model
    ├── QueryError           a query or its options are invalid
    ├── ActionError          a guarded action cannot go ahead (request id)
    │   ├── ActionRefused        a proposal, approval or denial the rules refuse
    │   └── GrantInvalid         a grant that cannot be redeemed for this command
    └── AccessViolation      a record reached a principal it is not entitled to

Errors never carry the text of a restricted chunk: messages name files, lines
and ids only.
"""

from __future__ import annotations

from pathlib import Path


class RunbookRagError(Exception):
    """Base class of every error raised by runbook-rag."""

    exit_code = 1


class SourceError(RunbookRagError):
    """A source document cannot be indexed; the rest of the build goes on."""

    def __init__(self, reason: str, *, source: str, line: int | None = None) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


class FrontMatterError(SourceError):
    """The front matter is not valid YAML, not a mapping, or has unknown keys."""


class AccessLabelError(SourceError):
    """The document has no access labels, or malformed ones."""


class SidecarError(AccessLabelError):
    """A Confluence page's sidecar (its metadata and read restrictions) cannot be read, is not
    valid JSON, or breaks the sidecar schema: the page is not indexed, never indexed without it."""

    def __init__(
        self,
        reason: str,
        *,
        source: str,
        sidecar: str,
        field: str | None = None,
        line: int | None = None,
    ) -> None:
        self.sidecar = sidecar
        self.field = field
        super().__init__(reason, source=source, line=line)


class UnsafeSourceError(SourceError):
    """A source is a link that leaves its source folder, or not a regular file (a FIFO, a
    device, a socket): it is skipped unread."""


class SourceLimitError(SourceError):
    """A document exceeds a cost cap (a line too long, too many chunks) and is skipped."""


class ConfigError(RunbookRagError):
    """Settings, an access map or a query file are invalid."""

    exit_code = 2

    def __init__(self, reason: str, *, path: Path | str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.line = line
        where = f"{path}:{line}" if path is not None and line is not None else path
        super().__init__(f"{where}: {reason}" if where is not None else reason)


class EmbeddingError(RunbookRagError):
    """The embedding model cannot be loaded or used."""


class ConfluenceError(RunbookRagError):
    """The Confluence API could not be read (the message never carries the token)."""


class IndexStateError(RunbookRagError):
    """The index on disk cannot be used as asked (missing, locked, built with another model)."""

    def __init__(self, reason: str, *, path: Path | str) -> None:
        self.reason = reason
        self.path = str(path)
        super().__init__(f"{path}: {reason}")


class IndexNotFoundError(IndexStateError):
    """No published index exists at the path."""


class ModelMismatchError(IndexStateError):
    """The index was built with a different embedding model than the one configured."""


class QueryError(RunbookRagError):
    """A query or its options are invalid (empty, too long, k out of range)."""

    exit_code = 2


class ActionError(RunbookRagError):
    """A guarded action cannot go ahead. The message names the request, never the text of a
    runbook the caller may not read."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ActionRefused(ActionError):
    """A proposal, approval or denial the approval rules refuse (self-approval, an approver
    who may not read the runbook or is outside its approver groups, a command not in it)."""

    exit_code = 2


class GrantInvalid(ActionError):
    """A grant that cannot be redeemed for this command: forged, truncated, expired, used,
    denied, or for another command."""

    exit_code = 1


class AccessViolation(RunbookRagError):
    """A record was about to reach a principal who is not entitled to it.

    Raised, never swallowed: it means a filter failed upstream.
    """

    exit_code = 70

    def __init__(self, *, chunk_id: str, user_id: str) -> None:
        self.chunk_id = chunk_id
        self.user_id = user_id
        super().__init__(f"access check failed for chunk {chunk_id} and principal {user_id!r}")
