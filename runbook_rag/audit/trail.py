"""The trail itself: HMAC-chained records appended under a lock, sealed by a head, verified."""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..atomic import fsync_dir
from ..errors import ConfigError, RunbookRagError
from ..redaction import redact

GENESIS = "0" * 64
MIN_KEY_BYTES = 16
HEAD_KIND = "runbook-rag.audit-head"
# Prefixed to what a head's HMAC covers; a record's HMAC covers a JSON object, which starts with "{".
_HEAD_DOMAIN = b"runbook-rag.audit-head.v1\x00"
_MAX_HEAD_BYTES = 1024
_CHUNK = 1 << 14


class AuditError(RunbookRagError):
    """The audit record could not be written: the query it records fails."""

    exit_code = 1

    def __init__(self, reason: str, *, path: Path | str) -> None:
        self.reason = reason
        self.path = str(path)
        super().__init__(f"{path}: cannot write the audit record: {reason}")


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(key: bytes, record: dict[str, Any]) -> str:
    return hmac.new(key, _canonical(record), hashlib.sha256).hexdigest()


def _same(a: object, b: str) -> bool:
    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value).text
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


class AuditLog:
    """Appends chained records to ``path`` and seals each one in the ``head`` file.

    ``head=None`` keeps no head: cutting the log's tail then goes unnoticed.
    """

    def __init__(
        self, path: Path | str, *, key: bytes, head: Path | str | None, keep_query_text: bool = True
    ) -> None:
        self.path = Path(path)
        self.head = Path(head) if head is not None else None
        if self.head is not None and self.head.resolve() == self.path.resolve():
            raise ConfigError("the audit head must be another file than the log", path=self.head)
        self._key = key
        self._keep_text = keep_query_text

    def query_digest(self, query: str) -> str:
        """The query's HMAC: lets an auditor match a known query without the log keeping its text."""
        return hmac.new(self._key, query.encode(), hashlib.sha256).hexdigest()

    @property
    def keeps_query_text(self) -> bool:
        """Whether records keep the (masked) query, or only its HMAC."""
        return self._keep_text

    def derive_key(self, purpose: str) -> bytes:
        """A key for another use (signing grants), derived from the audit key: holding it
        does not give the audit key."""
        return hmac.new(self._key, f"runbook-rag derived key: {purpose}".encode(), hashlib.sha256).digest()

    def append(self, **fields: Any) -> dict[str, Any]:
        """Write one record (``ts``, ``request_id`` and the chain are added) and seal it; returns it.

        Raises :class:`AuditError` when it cannot, or when the log does not match its head.
        """
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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "r+b", buffering=0) as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    if self.head is None:
                        record["prev"] = _last_mac(fh)
                        record["mac"] = _mac(self._key, record)
                        self._write(fh, record)
                    else:
                        self._append_sealed(fh, record, self.head)
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise AuditError("the log is a symbolic link; name the file itself", path=self.path) from None
            raise AuditError(exc.strerror or str(exc) or type(exc).__name__, path=self.path) from None
        return record

    def _append_sealed(self, fh: IO[bytes], record: dict[str, Any], head: Path) -> None:
        records, tip = self._tip(fh, head)
        record["prev"] = tip
        record["mac"] = _mac(self._key, record)
        # The temporary head first: a head folder that cannot be written fails the query before
        # the log holds a record of it.
        tmp = head.with_name(f".{head.name}.{secrets.token_hex(6)}.partial")
        try:
            head.parent.mkdir(parents=True, exist_ok=True)
            out = os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        except OSError as exc:
            raise AuditError(
                f"cannot write its head {head} ({exc.strerror}); set RUNBOOK_RAG_AUDIT_HEAD to a "
                "writable file apart from the log",
                path=self.path,
            ) from None
        replaced = False
        try:
            self._write(fh, record)
            try:
                out.write(_head_bytes(self._key, records + 1, record["mac"]))
                out.flush()
                os.fsync(out.fileno())
                out.close()
                os.replace(tmp, head)
                replaced = True
                fsync_dir(head.parent)
            except OSError as exc:
                raise AuditError(
                    f"the record was written but its head {head} was not ({exc.strerror}); "
                    "the next append seals it",
                    path=self.path,
                ) from None
        finally:
            out.close()
            if not replaced:
                tmp.unlink(missing_ok=True)

    def _write(self, fh: IO[bytes], record: dict[str, Any]) -> None:
        # One write(2) of the whole line: a killed process leaves all of it or none.
        os.write(fh.fileno(), _canonical(record) + b"\n")
        os.fsync(fh.fileno())

    def _tip(self, fh: IO[bytes], head: Path) -> tuple[int, str]:
        """The log's record count and last MAC, taken from its head after checking that the log
        still ends with the record the head seals (or with valid records written after it)."""
        try:
            sealed = _read_head(head, self._key)
        except OSError as exc:
            raise AuditError(f"cannot read its head {head} ({exc.strerror})", path=self.path) from None
        if sealed is None:  # a new log, or one written before it had a head: counted once
            return _count_lines(fh), _last_mac(fh)
        if isinstance(sealed, str):
            raise AuditError(f"its head {head} {sealed}", path=self.path)
        start = _after_sealed(fh, sealed)
        if start is None:
            if fh.seek(0, os.SEEK_END) == 0:
                problem = f"the log is empty, but its head {head} seals {_n(sealed.records)}"
            else:
                problem = (
                    f"the log does not hold the record its head {head} seals (record "
                    f"{sealed.records}): records were cut from its end, or it was replaced or "
                    "restored from an older copy"
                )
            raise AuditError(f"{problem}; run `runbook-rag audit verify`", path=self.path)
        records, tip = sealed.records, sealed.last_mac
        fh.seek(start)
        for line in _split_lines(fh.read()):
            mac = _checked_mac(self._key, line, tip)
            if mac is None:
                raise AuditError(
                    f"a record after the one its head {head} seals does not verify (added without "
                    "the key?); run `runbook-rag audit verify`",
                    path=self.path,
                )
            records, tip = records + 1, mac
        return records, tip


@dataclass(frozen=True, slots=True)
class _Sealed:
    records: int
    last_mac: str


def _head_mac(key: bytes, body: dict[str, Any]) -> str:
    return hmac.new(key, _HEAD_DOMAIN + _canonical(body), hashlib.sha256).hexdigest()


def _head_bytes(key: bytes, records: int, last_mac: str) -> bytes:
    body = {"kind": HEAD_KIND, "records": records, "last_mac": last_mac}
    return _canonical({**body, "mac": _head_mac(key, body)}) + b"\n"


def _read_head(path: Path, key: bytes) -> _Sealed | str | None:
    """The head at ``path``; None when there is none, or why it is not a head sealed with ``key``."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_HEAD_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        head = json.loads(data) if len(data) <= _MAX_HEAD_BYTES else None
    except ValueError:
        head = None
    if not (
        isinstance(head, dict)
        and set(head) == {"kind", "records", "last_mac", "mac"}
        and head["kind"] == HEAD_KIND
        and type(head["records"]) is int
        and head["records"] >= 0
        and isinstance(head["last_mac"], str)
    ):
        return "is not an audit head"
    body = {k: head[k] for k in ("kind", "records", "last_mac")}
    if not _same(head["mac"], _head_mac(key, body)):
        return "has an HMAC that does not match: it was altered, or sealed with another key"
    return _Sealed(head["records"], head["last_mac"])


def _n(records: int) -> str:
    return f"{records} record" + ("" if records == 1 else "s")


def _split_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line]


def _checked_mac(key: bytes, line: bytes, prev: str) -> str | None:
    """The line's ``mac`` when it is a canonical record with a valid HMAC following ``prev``."""
    try:
        record = json.loads(line)
        mac = record.pop("mac")
    except (ValueError, KeyError, AttributeError, TypeError):
        return None
    valid = (
        _same(mac, _mac(key, record))
        and line == _canonical({**record, "mac": mac})
        and record.get("prev") == prev
    )
    return str(mac) if valid else None


def _lines_backward(fh: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    """The file's non-empty lines from the last to the first, each with its offset."""
    pos = fh.seek(0, os.SEEK_END)
    rest = b""
    while pos > 0:
        step = min(_CHUNK, pos)
        pos -= step
        fh.seek(pos)
        rest = fh.read(step) + rest
        first, *lines = rest.split(b"\n")
        offset = pos + len(rest)
        for line in reversed(lines):
            offset -= len(line) + 1
            if line:
                yield offset + 1, line
        rest = first
    if rest:
        yield 0, rest


def _after_sealed(fh: IO[bytes], sealed: _Sealed) -> int | None:
    """The offset just after the line of the record the head seals, or None when it is not there."""
    if sealed.records == 0 and sealed.last_mac == GENESIS:
        return 0
    needle = b'"mac":"' + sealed.last_mac.encode() + b'"'
    for offset, line in _lines_backward(fh):
        if needle in line:
            try:
                if json.loads(line).get("mac") == sealed.last_mac:
                    return offset + len(line) + 1
            except (ValueError, AttributeError):
                pass  # not a record: verification names it
    return None


def _count_lines(fh: IO[bytes]) -> int:
    fh.seek(0)
    count, last = 0, b"\n"
    while chunk := fh.read(_CHUNK):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


def _last_mac(fh: IO[bytes]) -> str:
    """The ``mac`` of the file's last line (the chain's head), or the genesis value."""
    for _, line in _lines_backward(fh):
        try:
            return str(json.loads(line)["mac"])
        except (ValueError, KeyError, TypeError) as exc:
            raise OSError(f"the log's last line is not an audit record ({type(exc).__name__})") from None
    return GENESIS


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of checking a log; ``ok`` when ``reason`` is None.

    ``bad_line`` is the first line that breaks the chain (None when the chain holds, or the
    problem is the log against its head). ``head`` is the head file the log was checked
    against, ``head_checked`` whether there was one (without it, records cut from the end
    cannot be noticed), and ``head_records`` how many records it seals: fewer than
    ``records`` when valid records were written after it.
    """

    records: int
    bad_line: int | None = None
    reason: str | None = None
    head: str | None = None
    head_checked: bool = False
    head_records: int | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        """The verdict as JSON-ready data (what ``audit verify --json`` prints)."""
        return {
            "ok": self.ok,
            "records": self.records,
            "bad_line": self.bad_line,
            "reason": self.reason,
            "head": {"path": self.head, "checked": self.head_checked, "records": self.head_records},
        }


def verify(path: Path | str, *, key: bytes, head: Path | str | None = None) -> Verdict:
    """Check every line's HMAC and the chain from the first line to the last, then the log
    against its ``head`` when there is one: records cut from its end, an emptied, deleted or
    older log, or a head altered or sealed with another key all fail."""
    path = Path(path)
    head_path = Path(head) if head is not None else None
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as fh:
            return _verify_open(fh, key, head_path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _verdict(0, None, "the log is a symbolic link: verify the file itself", head_path, None)
        raise ConfigError(f"cannot read the audit log: {exc.strerror}", path=path) from None
    # No log: a failure when its head says it held records, else an error as for any unreadable log.
    sealed = _head_for_verify(head_path, key)
    if isinstance(sealed, str):
        return _verdict(0, None, f"the log is missing, and its head {head_path} {sealed}", head_path, sealed)
    if isinstance(sealed, _Sealed) and sealed.records > 0:
        reason = f"the log is missing, but its head seals {_n(sealed.records)}: it was deleted or moved"
        return _verdict(0, None, reason, head_path, sealed)
    raise ConfigError("cannot read the audit log: No such file or directory", path=path)


def _verify_open(fh: IO[bytes], key: bytes, head: Path | None) -> Verdict:
    # The head and the log's length are read under the writers' lock, so an append in between
    # cannot make one look ahead of the other; the chain is then read without holding it.
    fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
    try:
        sealed = _head_for_verify(head, key)
        size = os.fstat(fh.fileno()).st_size
    finally:
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    wanted = sealed.records if isinstance(sealed, _Sealed) else -1
    sealed_mac = prev = GENESIS
    count = 0
    for number, line in _lines(fh, size):
        try:
            record = json.loads(line)
            mac = record.pop("mac")
        except (ValueError, KeyError, AttributeError, TypeError):
            return _verdict(count, number, "not an audit record", head, sealed)
        if not _same(mac, _mac(key, record)):
            return _verdict(count, number, "the record was altered (its HMAC does not match)", head, sealed)
        if line != _canonical({**record, "mac": mac}):
            # Same parsed content, other bytes (a duplicated key, spacing): what a reader sees may differ.
            return _verdict(
                count, number, "the record was altered (it is not in canonical form)", head, sealed
            )
        if record.get("prev") != prev:
            reason = "the chain is broken: a record before it was removed, added or moved"
            return _verdict(count, number, reason, head, sealed)
        prev = str(mac)
        count += 1
        if count == wanted:
            sealed_mac = prev
    if isinstance(sealed, str):
        return _verdict(count, None, f"the head {head} {sealed}", head, sealed)
    if isinstance(sealed, _Sealed):
        return _verdict(count, None, _against_head(count, sealed, sealed_mac), head, sealed)
    return _verdict(count, None, None, head, sealed)


def _verdict(
    records: int, bad_line: int | None, reason: str | None, head: Path | None, sealed: _Sealed | str | None
) -> Verdict:
    return Verdict(
        records,
        bad_line,
        reason,
        head=str(head) if head is not None else None,
        head_checked=sealed is not None,
        head_records=sealed.records if isinstance(sealed, _Sealed) else None,
    )


def _against_head(records: int, sealed: _Sealed, sealed_mac: str) -> str | None:
    """Why a valid chain of ``records`` does not match its head, or None when it does."""
    if records < sealed.records:
        if records == 0:
            return f"the log is empty, but its head seals {_n(sealed.records)}: it was emptied or replaced"
        cut = sealed.records - records
        lost = "its last record was" if cut == 1 else f"its last {cut} records were"
        return (
            f"the log ends after record {records}, but its head seals {_n(sealed.records)}: "
            f"{lost} cut, or an older copy of the log was restored"
        )
    if sealed_mac != sealed.last_mac:
        return f"record {sealed.records} is not the one its head seals: the log was replaced or rewritten"
    return None


def _head_for_verify(head: Path | None, key: bytes) -> _Sealed | str | None:
    if head is None:
        return None
    try:
        return _read_head(head, key)
    except OSError as exc:
        raise ConfigError(f"cannot read the audit head: {exc.strerror}", path=head) from None


def _lines(fh: IO[bytes], size: int) -> Iterator[tuple[int, bytes]]:
    """The numbered lines of the log's first ``size`` bytes."""
    remaining = size
    for number, line in enumerate(fh, start=1):
        if remaining <= 0:
            return
        line = line[:remaining]
        remaining -= len(line)
        yield number, line.rstrip(b"\n")
