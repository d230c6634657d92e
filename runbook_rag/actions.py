"""Guarded actions' records and state: requests, their approvals and one-use grants.

The rules (who may propose, approve or deny what) are :mod:`runbook_rag.guard`'s; this module
keeps what they decide. Requests live in a SQLite file beside the generations (never in one),
so they survive rebuilds and restarts; writes run in ``BEGIN IMMEDIATE`` transactions, so
several processes can share the file.

A *grant* is the last approval's result: ``rrg1.<claims>.<mac>``, the claims (request id,
the SHA-256 of the command's canonical form and the language that form was taken in, the
requester, the expiry, a nonce kept with the request) in base64url JSON, HMAC-SHA256-signed
with a key derived from the audit key. Redeeming it checks the signature (in constant time),
the command, the expiry, and then uses it up in one transaction (an update that only an
approved, unexpired request with that nonce matches; the time is read once the transaction
holds the write lock), so of several processes redeeming one grant exactly one succeeds. A
denial clears the nonce, so a revoked grant verifies but matches nothing. Anything that is
not a grant of this book, of any type or length, is :class:`GrantInvalid`. The library never
runs a command.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .commands import classify, extract_commands, normalize
from .errors import ActionRefused, ConfigError, GrantInvalid
from .records import StepCommand

STATUSES = ("pending", "not_required", "approved", "denied", "redeemed", "expired")
GRANT_PREFIX = "rrg1"
MAX_GRANT_CHARS = 2048
MAX_COMMAND_CHARS = 8192
REQUEST_ID = re.compile(r"a[0-9a-f]{16}")


def command_digest(command: str, language: str = "shell") -> str:
    """The SHA-256 of a command's canonical form (what a grant is bound to)."""
    return hashlib.sha256(normalize(command, language).encode()).hexdigest()


def step_commands(markdown: str, start_line: int = 1) -> tuple[StepCommand, ...]:
    """The commands of a passage of Markdown starting at ``start_line``, each with its risk."""
    out = []
    for command in extract_commands(markdown, start_line):
        verdict = classify(command.text, command.language)
        out.append(
            StepCommand(
                command.text,
                command.language,
                command.start_line,
                command.end_line,
                verdict.risk,
                verdict.reasons,
            )
        )
    return tuple(out)


@dataclass(frozen=True, slots=True)
class RunbookView:
    """What one principal may read of one runbook: its labels, commands and approval policy."""

    source: str
    labels: tuple[str, ...]
    commands: tuple[StepCommand, ...]
    approvers: tuple[str, ...]
    two_person: bool


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """A proposed command and where its approval stands.

    ``expires_at`` is when a pending request lapses, or when an approved request's grant does.
    """

    id: str
    source: str
    command: str
    start_line: int
    end_line: int
    risk: str
    reasons: tuple[str, ...]
    requester: str
    status: str
    approvals_needed: int
    approved_by: tuple[str, ...]
    created_at: float
    expires_at: float | None
    reason: str | None = None
    denied_by: str | None = None
    labels: tuple[str, ...] = field(default=(), repr=False)
    language: str = "shell"

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "source": self.source,
            "command": self.command,
            "language": self.language,
            "lines": [self.start_line, self.end_line],
            "risk": self.risk,
            "reasons": list(self.reasons),
            "requester": self.requester,
            "reason": self.reason,
            "status": self.status,
            "approvals_needed": self.approvals_needed,
            "approved_by": list(self.approved_by),
            "denied_by": self.denied_by,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at) if self.expires_at is not None else None,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of an approval or a denial; ``grant`` once the last approval needed is in."""

    request: ActionRequest
    grant: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "id": self.request.id,
            "status": self.request.status,
            "approvals_needed": self.request.approvals_needed,
            "approved_by": list(self.request.approved_by),
        }
        if self.grant is not None:
            out["grant"] = self.grant
            out["expires_at"] = _iso(self.request.expires_at or 0.0)
        return out


@dataclass(frozen=True, slots=True)
class Redemption:
    """A grant redeemed: the command it lets the executor run, once."""

    request_id: str
    command: str
    risk: str
    source: str
    requester: str

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.request_id,
            "valid": True,
            "command": self.command,
            "risk": self.risk,
            "source": self.source,
            "requester": self.requester,
        }


def same_person(a: str, b: str) -> bool:
    """User ids name one person regardless of case and surrounding blanks."""
    return a.strip().casefold() == b.strip().casefold()


class ActionBook:
    """The requests of one index and their one-use state, in a SQLite file.

    Writes run in ``BEGIN IMMEDIATE`` transactions, so several processes can share the file.
    ``clock`` gives the time (seconds since the epoch).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        key: bytes,
        grant_ttl: float = 900.0,
        pending_ttl: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._key = key
        self.grant_ttl = grant_ttl
        self.pending_ttl = pending_ttl
        self.clock = clock
        self._ready = False

    @contextlib.contextmanager
    def _db(self, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self._create()
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"cannot open the action requests: {exc}", path=self.path) from None
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise ConfigError(f"cannot use the action requests: {exc}", path=self.path) from None
            raise
        finally:
            conn.close()

    def _create(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            conn = sqlite3.connect(self.path, timeout=30)
            try:
                with conn:
                    conn.executescript(_SCHEMA)
                    columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
                    if "language" not in columns:  # a file made before requests kept it
                        conn.execute("ALTER TABLE requests ADD COLUMN language TEXT NOT NULL DEFAULT 'shell'")
            finally:
                conn.close()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot create the action requests: {exc}", path=self.path) from None
        self._ready = True

    def add(self, request: ActionRequest) -> None:
        """Store a new request."""
        with self._db(write=True) as db:
            db.execute(
                "INSERT INTO requests (id, source, command, start_line, end_line, risk, reasons, requester,"
                " reason, status, approvals_needed, labels, created_at, expires_at, language)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    request.id,
                    request.source,
                    request.command,
                    request.start_line,
                    request.end_line,
                    request.risk,
                    json.dumps(list(request.reasons)),
                    request.requester,
                    request.reason,
                    request.status,
                    request.approvals_needed,
                    json.dumps(list(request.labels)),
                    request.created_at,
                    request.expires_at,
                    request.language,
                ),
            )

    def get(self, request_id: str) -> ActionRequest | None:
        """The request ``request_id``, or None."""
        with self._db() as db:
            return self._get(db, request_id)

    def requests(self, *, status: str | None = None) -> list[ActionRequest]:
        """Every request, newest first; only those with ``status`` when given."""
        with self._db() as db:
            ids = [row[0] for row in db.execute("SELECT id FROM requests ORDER BY created_at DESC, id")]
            found = [r for r in (self._get(db, i) for i in ids) if r is not None]
        return [r for r in found if status is None or r.status == status]

    def approve(
        self, request_id: str, approver: str, *, needed: int, risk: str | None = None
    ) -> tuple[ActionRequest, str | None]:
        """Record ``approver``'s approval; with the last one needed, the request is approved and
        its grant returned. Re-checks, in the transaction, that it is still pending and that the
        approver is neither its requester nor an earlier approver. ``risk``, when the rules
        found the command riskier now than when it was proposed, replaces the stored one
        (never lowers it)."""
        with self._db(write=True) as db:
            request = self._get(db, request_id)
            if request is None or request.status != "pending":
                raise ActionRefused(_not_pending(request_id, request))
            if risk is not None and risk != request.risk:
                db.execute("UPDATE requests SET risk = ? WHERE id = ?", (risk, request_id))
            if same_person(request.requester, approver):
                raise ActionRefused(f"request {request_id}: its requester cannot approve it")
            if any(same_person(done, approver) for done in request.approved_by):
                raise ActionRefused(
                    f"request {request_id}: you approved it already; another approver is needed"
                )
            now = self.clock()
            db.execute(
                "INSERT INTO approvals (request_id, approver, at) VALUES (?, ?, ?)",
                (request_id, approver, now),
            )
            needed = max(needed, request.approvals_needed)
            grant = None
            if len(request.approved_by) + 1 >= needed:
                nonce = secrets.token_urlsafe(12)
                # The expiry the grant states is the one the book checks, to the millisecond.
                expires = round(now + self.grant_ttl, 3)
                db.execute(
                    "UPDATE requests SET status = 'approved', approvals_needed = ?, nonce = ?, expires_at = ?"
                    " WHERE id = ?",
                    (needed, nonce, expires, request_id),
                )
                grant = self._sign(request, nonce, expires)
            else:
                db.execute("UPDATE requests SET approvals_needed = ? WHERE id = ?", (needed, request_id))
            updated = self._get(db, request_id)
        assert updated is not None
        return updated, grant

    def deny(self, request_id: str, by: str) -> ActionRequest:
        """Deny a pending request (or revoke an approved grant not yet redeemed)."""
        with self._db(write=True) as db:
            request = self._get(db, request_id)
            if request is None or request.status not in ("pending", "approved"):
                raise ActionRefused(_not_pending(request_id, request))
            db.execute(
                "UPDATE requests SET status = 'denied', denied_by = ?, nonce = NULL WHERE id = ?",
                (by, request_id),
            )
            updated = self._get(db, request_id)
        assert updated is not None
        return updated

    def redeem(self, grant: str, command: str) -> ActionRequest:
        """Check ``grant`` for ``command`` and use it up; raise :class:`GrantInvalid` saying why not."""
        claims = self._verify(grant)
        if not isinstance(command, str) or not command.strip() or len(command) > MAX_COMMAND_CHARS:
            raise GrantInvalid(f"the command must be text of 1 to {MAX_COMMAND_CHARS} characters")
        if not _same(claims["cmd"], command_digest(command, claims["lang"])):
            raise GrantInvalid("the grant is for another command")
        with self._db(write=True) as db:
            # The time is read once the write lock is held: waiting for it cannot stretch a grant.
            now = self.clock()
            if now >= claims["exp"]:
                raise GrantInvalid(f"the grant expired at {_iso(claims['exp'])}")
            used = db.execute(
                "UPDATE requests SET status = 'redeemed', redeemed_at = ?"
                " WHERE id = ? AND status = 'approved' AND nonce = ? AND expires_at > ?",
                (now, claims["id"], claims["n"], now),
            ).rowcount
            request = self._get(db, claims["id"])
        if used == 1 and request is not None:
            return request
        if request is not None and request.status == "redeemed":
            raise GrantInvalid("the grant was redeemed already (a grant is good for one use)")
        if request is not None and request.status == "denied":
            raise GrantInvalid(f"request {request.id} was denied or its grant revoked")
        if request is not None and request.status == "expired":
            raise GrantInvalid(f"request {request.id} expired")
        raise GrantInvalid("the grant is not valid for any approved request")

    def request_of(self, grant: object) -> str | None:
        """The request id a grant names, when its signature verifies (for the audit trail)."""
        try:
            return str(self._verify(grant)["id"])
        except GrantInvalid:
            return None

    def _sign(self, request: ActionRequest, nonce: str, expires: float) -> str:
        claims = {
            "id": request.id,
            "cmd": command_digest(request.command, request.language),
            "lang": request.language,
            "req": request.requester,
            "exp": expires,
            "n": nonce,
        }
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        signed = f"{GRANT_PREFIX}.{body}"
        return f"{signed}.{_b64(hmac.new(self._key, signed.encode(), hashlib.sha256).digest())}"

    def _verify(self, grant: object) -> dict[str, Any]:
        """The claims of a grant signed with this book's key; :class:`GrantInvalid` for anything
        else (any type, any length, any text), never another error."""
        malformed = GrantInvalid("the grant is malformed, or its signature does not verify")
        if not isinstance(grant, str) or len(grant) > MAX_GRANT_CHARS:
            raise malformed
        parts = grant.strip().split(".")
        if len(parts) != 3 or parts[0] != GRANT_PREFIX:
            raise malformed
        signed = f"{parts[0]}.{parts[1]}"
        expected = _b64(hmac.new(self._key, signed.encode(), hashlib.sha256).digest())
        if not _same(parts[2], expected):
            raise malformed
        try:
            claims = json.loads(_unb64(parts[1]))
        except ValueError:
            raise malformed from None
        keys: dict[str, type | tuple[type, ...]] = {
            "id": str,
            "cmd": str,
            "lang": str,
            "req": str,
            "exp": (int, float),
            "n": str,
        }
        if not isinstance(claims, dict) or not all(
            isinstance(claims.get(k), t) and not isinstance(claims.get(k), bool) for k, t in keys.items()
        ):
            raise malformed
        return claims

    def _get(self, db: sqlite3.Connection, request_id: str) -> ActionRequest | None:
        row = db.execute(
            "SELECT id, source, command, start_line, end_line, risk, reasons, requester, reason, status,"
            " approvals_needed, labels, created_at, expires_at, denied_by, language"
            " FROM requests WHERE id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            return None
        approvers = tuple(
            a
            for (a,) in db.execute(
                "SELECT approver FROM approvals WHERE request_id = ? ORDER BY at", (row[0],)
            )
        )
        status, expires, created = row[9], row[13], row[12]
        now = self.clock()
        if status == "pending":
            # A shorter setting shortens the wait; a longer one never revives an expired request.
            lapse = created + self.pending_ttl
            expires = lapse if expires is None else min(expires, lapse)
        if status in ("pending", "approved") and expires is not None and now >= expires:
            status = "expired"
        return ActionRequest(
            id=row[0],
            source=row[1],
            command=row[2],
            start_line=row[3],
            end_line=row[4],
            risk=row[5],
            reasons=tuple(json.loads(row[6])),
            requester=row[7],
            reason=row[8],
            status=status,
            approvals_needed=row[10],
            labels=tuple(json.loads(row[11])),
            created_at=created,
            expires_at=expires,
            approved_by=approvers,
            denied_by=row[14],
            language=row[15],
        )


_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    command TEXT NOT NULL,
    start_line INTEGER NOT NULL,
    end_line INTEGER NOT NULL,
    risk TEXT NOT NULL,
    reasons TEXT NOT NULL,
    requester TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL,
    approvals_needed INTEGER NOT NULL,
    labels TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    nonce TEXT,
    denied_by TEXT,
    redeemed_at REAL,
    language TEXT NOT NULL DEFAULT 'shell'
);
CREATE TABLE IF NOT EXISTS approvals (
    request_id TEXT NOT NULL REFERENCES requests(id),
    approver TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (request_id, approver)
);
"""


def _not_pending(request_id: str, request: ActionRequest | None) -> str:
    if request is None:
        return f"request {request_id}: no such request you may act on"
    return f"request {request_id} is {request.status}, not pending"


def _same(given: object, expected: str) -> bool:
    """A constant-time comparison of ``given`` (any value) with ``expected``."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
