"""Where an index's audit trail is: its log, key and head, resolved in one place for the
library and ``runbook-rag audit verify``."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from ..errors import ConfigError
from ..settings import AuditSettings
from .trail import MIN_KEY_BYTES

_LOCAL_KEY = ".audit.key"


def load_key(*, key: str | None = None, key_file: Path | str | None = None) -> bytes:
    """The audit key, from a value or a file (at least 16 bytes)."""
    if key_file is not None:
        try:
            raw = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the audit key file: {exc.strerror}", path=key_file) from None
    elif key:
        raw = key.encode()
    else:
        raise ConfigError("no audit key: set RUNBOOK_RAG_AUDIT_KEY or RUNBOOK_RAG_AUDIT_KEY_FILE")
    if len(raw) < MIN_KEY_BYTES:
        raise ConfigError(f"the audit key must be at least {MIN_KEY_BYTES} bytes")
    return raw


@dataclass(frozen=True, slots=True)
class AuditSetup:
    """Where an audit trail's log, key and head are (see :func:`resolve_audit`)."""

    log: Path
    head: Path
    key_file: Path | None
    """The file holding the key; None when the key is ``RUNBOOK_RAG_AUDIT_KEY``."""
    key_value: SecretStr | None = None
    local_key: bool = False
    """The key file is the index's own, made on first use."""

    def load_key(self, *, create: bool = False) -> bytes:
        """The key; with ``create``, the index's own key file is made when it does not exist yet."""
        if self.key_file is None:
            return load_key(key=self.key_value.get_secret_value() if self.key_value else None)
        if create and self.local_key:
            _make_local_key(self.key_file)
        return load_key(key_file=self.key_file)


def resolve_audit(
    settings: AuditSettings,
    *,
    index: Path | str,
    log: Path | str | None = None,
    key_file: Path | str | None = None,
    head: Path | str | None = None,
) -> AuditSetup:
    """The log, key and head of an index's audit trail; explicit arguments win over ``settings``.

    The key: ``key_file``, else ``settings.key_file``, else ``settings.key``, else the index's
    own ``.audit.key``. The log: ``log``, else ``settings.log``, else ``audit.log`` in the index
    folder. The head: ``head``, else ``settings.head``, else :func:`default_head` beside the key
    file, or in the index folder when the key comes from ``RUNBOOK_RAG_AUDIT_KEY``.
    """
    folder = Path(index)
    log_path = Path(log) if log is not None else settings.log or folder / "audit.log"
    key_path = Path(key_file) if key_file is not None else settings.key_file
    local = key_path is None and settings.key is None
    if local:
        key_path = folder / _LOCAL_KEY
    if head is not None:
        head_path = Path(head)
    elif settings.head is not None:
        head_path = settings.head
    else:
        head_path = default_head(log_path, beside=key_path or folder / _LOCAL_KEY)
    return AuditSetup(
        log=log_path,
        head=head_path,
        key_file=key_path,
        key_value=settings.key if key_path is None else None,
        local_key=local,
    )


def default_head(log: Path | str, *, beside: Path | str) -> Path:
    """The head of ``log`` kept beside the key file ``beside``: ``<key stem>.<log name>-<id>.head``.

    One head per log (several logs may share a key): ``<id>`` is taken from the log's absolute
    path as configured (links are not followed: a log swapped for a link keeps its head), so
    the library and the CLI find the same head for the same file.
    """
    log, beside = Path(log), Path(beside)
    ident = hashlib.sha256(os.fsencode(os.path.abspath(log))).hexdigest()[:12]
    return beside.with_name(f"{beside.stem}.{log.name[:64]}-{ident}.head")


def _make_local_key(path: Path) -> None:
    """A random key kept in the index folder (mode 0600). Set RUNBOOK_RAG_AUDIT_KEY from a
    secret store instead, so the key does not sit by the log."""
    if path.exists():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise ConfigError(
            f"cannot create the audit key here ({exc.strerror}); set RUNBOOK_RAG_AUDIT_KEY "
            "(and RUNBOOK_RAG_AUDIT_LOG and RUNBOOK_RAG_AUDIT_HEAD when the index folder is read-only)",
            path=path,
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
