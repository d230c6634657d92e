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
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, RunbookRagError
from .redaction import redact

GENESIS = "0" * 64
MIN_KEY_BYTES = 16


class AuditError(RunbookRagError):
    """The audit record could not be written: the query it records fails."""

    exit_code = 1

    def __init__(self, reason: str, *, path: Path | str) -> None:
        self.reason = reason
        self.path = str(path)
        super().__init__(f"{path}: cannot write the audit record: {reason}")


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


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: bytes, record: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class AuditLog:
    """Appends chained records to ``path``."""

    def __init__(self, path: Path | str, *, key: bytes, keep_query_text: bool = True) -> None:
        self.path = Path(path)
        self._key = key
        self._keep_text = keep_query_text

    def query_digest(self, query: str) -> str:
        """The query's HMAC: lets an auditor match a known query without the log keeping its text."""
        return hmac.new(self._key, query.encode(), hashlib.sha256).hexdigest()

    def append(self, **fields: Any) -> dict[str, Any]:
        """Write one record (``ts``, ``request_id`` and the chain are added); returns it."""
        record: dict[str, Any] = {
            "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": fields.pop("request_id", None) or "r" + secrets.token_hex(8),
        }
        query = fields.pop("query", None)
        if query is not None:
            masked = redact(query).text
            if self._keep_text:
                record["query"] = masked
            record["query_hmac"] = self.query_digest(masked)
        record.update(_scrub(fields))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b", buffering=0) as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    record["prev"] = _last_mac(fh)
                    record["mac"] = _mac(self._key, record)
                    # One write(2) of the whole line: a killed process leaves all of it or none.
                    os.write(fh.fileno(), _canonical(record) + b"\n")
                    os.fsync(fh.fileno())
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditError(exc.strerror or type(exc).__name__, path=self.path) from None
        return record


def _last_mac(fh: Any) -> str:
    """The ``mac`` of the file's last line (the chain's head), or the genesis value."""
    end = fh.seek(0, os.SEEK_END)
    if end == 0:
        return GENESIS
    step, tail = 4096, b""
    pos = end
    while pos > 0:
        pos = max(0, pos - step)
        fh.seek(pos)
        tail = fh.read(end - pos)
        lines = tail.rstrip(b"\n").split(b"\n")
        if len(lines) > 1 or pos == 0:
            try:
                return str(json.loads(lines[-1])["mac"])
            except (ValueError, KeyError) as exc:
                raise OSError(f"the log's last line is not an audit record ({type(exc).__name__})") from None
    return GENESIS  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of checking a log: ``bad_line`` is the first line that breaks the chain."""

    records: int
    bad_line: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.bad_line is None


def verify(path: Path | str, *, key: bytes) -> Verdict:
    """Check every line's HMAC and the chain from the first line to the last."""
    prev = GENESIS
    count = 0
    for number, line in _lines(Path(path)):
        try:
            record = json.loads(line)
            mac = record.pop("mac")
        except (ValueError, KeyError, AttributeError):
            return Verdict(count, number, "not an audit record")
        if not hmac.compare_digest(str(mac), _mac(key, record)):
            return Verdict(count, number, "the record was altered (its HMAC does not match)")
        if line != _canonical({**record, "mac": mac}):
            # Same parsed content, other bytes (a duplicated key, spacing): what a reader sees may differ.
            return Verdict(count, number, "the record was altered (it is not in canonical form)")
        if record.get("prev") != prev:
            return Verdict(
                count, number, "the chain is broken: a record before it was removed, added or moved"
            )
        prev = str(mac)
        count += 1
    return Verdict(count)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open(path, "rb") as fh:
            for number, line in enumerate(fh, start=1):
                yield number, line.rstrip(b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the audit log: {exc.strerror}", path=path) from None
