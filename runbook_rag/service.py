"""``runbook-rag serve``: the index over HTTP for bots, with bearer tokens, limits and metrics.

A caller is whoever its bearer token says: the tokens file maps the SHA-256 of each
token to a user and groups, and groups in a request body are rejected (422) and
in headers ignored. ``POST /v1/search`` and ``POST /v1/ask`` return the CLI's
``--json`` objects; ``GET /healthz``; ``GET /metrics`` in Prometheus format; the
OpenAPI schema at ``/openapi.json``. Every request is audited by the index (interface
``http``); errors are JSON and say nothing about documents the caller may not read.

Guarded actions (:mod:`runbook_rag.guard`) live under ``/v1/actions``: ``POST /v1/actions``
proposes (201), ``POST /v1/actions/{id}/approve`` and ``.../deny`` decide, ``POST
/v1/actions/redeem`` uses a grant up, ``GET /v1/actions`` lists the requests of runbooks the
caller may read. A token calls them only when its ``endpoints`` name them (``propose``,
``approve``, ``deny``, ``redeem``, or ``actions`` for all of these and the list): never by
default. A refusal is 403 ``action_refused`` (a missing request and one of a runbook the
caller may not read are refused alike), a grant that cannot be redeemed 409 ``grant_invalid``,
each with the library's reason.

Hostile clients: a request that announces a body is authenticated from its headers
before a byte of the body is read, and the body is read in a stream that stops at the
limit (chunked or not), so no request makes the server hold more than ``max_body``.
Each connection must deliver its whole request within ``request_timeout`` seconds of
opening (or of the first byte of the next request on a kept-alive connection), and the
server holds at most ``max_connections`` connections, ``max_connections_per_client``
from any one address, refusing the rest at once: half-open floods from one address
leave room for every other caller.
"""

import asyncio
import hashlib
import ipaddress
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from . import tracing
from .actions import MAX_COMMAND_CHARS, STATUSES
from .audit import AuditEvent
from .errors import (
    AccessViolation,
    ActionRefused,
    ConfigError,
    GrantInvalid,
    IndexStateError,
    QueryError,
    RunbookRagError,
)
from .records import Principal

security = logging.getLogger("runbook_rag.security")
MAX_BODY_BYTES = 16 * 1024
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 1024
MAX_CONNECTIONS_PER_CLIENT = 64
# Guarded actions are never a default: a token is granted them by name, one by one (an executor
# needs only ``redeem``), or all of them, with the list of requests, as ``actions``.
ACTION_ENDPOINTS = frozenset({"actions", "propose", "approve", "deny", "redeem"})
ENDPOINTS = frozenset({"search", "ask", "metrics", "mcp"}) | ACTION_ENDPOINTS
DEFAULT_ENDPOINTS = frozenset({"search", "ask"})
# Endpoints that query the runbooks (``mcp``: the MCP server's tools, see runbook_rag.mcp_server).
QUERY_ENDPOINTS = frozenset({"search", "ask", "mcp"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# (method, path pattern, endpoint name, metrics label): the one place a request is named.
_ROUTES = (
    ("POST", re.compile(r"/v1/search"), "search", "/v1/search"),
    ("POST", re.compile(r"/v1/ask"), "ask", "/v1/ask"),
    ("GET", re.compile(r"/metrics"), "metrics", "/metrics"),
    ("GET", re.compile(r"/v1/actions"), "actions", "/v1/actions"),
    ("POST", re.compile(r"/v1/actions"), "propose", "/v1/actions"),
    ("POST", re.compile(r"/v1/actions/redeem"), "redeem", "/v1/actions/redeem"),
    ("POST", re.compile(r"/v1/actions/[^/]+/approve"), "approve", "/v1/actions/{id}/approve"),
    ("POST", re.compile(r"/v1/actions/[^/]+/deny"), "deny", "/v1/actions/{id}/deny"),
)


class TokenEntry(BaseModel):
    """One line of the tokens file: a token's SHA-256, never the token itself."""

    model_config = ConfigDict(extra="forbid")

    token_sha256: str
    user: str = Field(min_length=1, max_length=200)
    groups: list[str] = Field(min_length=1)
    endpoints: list[str] | None = Field(
        None,
        description=(
            "Allowed endpoints (search, ask, metrics, mcp for the MCP server, and for guarded actions "
            "propose, approve, deny, redeem, or actions for all of them and the list of requests); "
            "search and ask when unset."
        ),
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a token is, and what it may call."""

    principal: Principal
    endpoints: frozenset[str]


def route_of(method: str, path: str) -> tuple[str, str] | None:
    """The endpoint name a token must hold for ``method path``, and its metrics label (the
    route, never a request id); None for a request no token may make."""
    method = "GET" if method == "HEAD" else method
    for verb, pattern, name, label in _ROUTES:
        if verb == method and pattern.fullmatch(path):
            return name, label
    return None


def may_call(caller: Caller, method: str, path: str) -> bool:
    """Whether ``caller``'s token may make the request ``method path``."""
    route = route_of(method, path)
    return route is not None and route[0] in caller.endpoints


def load_tokens(path: Path | str) -> dict[str, Caller]:
    """``{sha256: caller}`` from a YAML or JSON file (a list, or ``{"tokens": [...]}``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the tokens file: {exc}", path=path) from None
    entries = data.get("tokens") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise ConfigError("the tokens file must list {token_sha256, user, groups} entries", path=path)
    out: dict[str, Caller] = {}
    by_user: dict[str, set[str]] = {}
    for number, raw in enumerate(entries, start=1):
        try:
            entry = TokenEntry.model_validate(raw)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise ConfigError(
                f"entry {number}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}", path=path
            ) from None
        digest = entry.token_sha256.lower()
        if not _SHA256.match(digest):
            raise ConfigError(f"entry {number}: token_sha256 must be 64 hex digits", path=path)
        allowed = frozenset(entry.endpoints) if entry.endpoints is not None else DEFAULT_ENDPOINTS
        if not allowed <= ENDPOINTS:
            raise ConfigError(f"entry {number}: endpoints must be among {sorted(ENDPOINTS)}", path=path)
        if "actions" in allowed:
            allowed |= ACTION_ENDPOINTS
        if "metrics" in allowed and allowed & QUERY_ENDPOINTS:
            # The withheld counter moves with the caller's own queries: one token holding both
            # could learn from /metrics how many restricted runbooks match what it asks.
            raise ConfigError(
                f"entry {number}: the token of user {entry.user!r} combines metrics with "
                f"{' and '.join(sorted(allowed & QUERY_ENDPOINTS))}; give the monitoring system "
                "a token of its own with endpoints: [metrics]",
                path=path,
            )
        if digest in out:
            raise ConfigError(f"entry {number}: the same token as another entry", path=path)
        held = by_user.setdefault(entry.user, set())
        held |= allowed
        if "metrics" in held and held & QUERY_ENDPOINTS:
            raise ConfigError(
                f"entry {number}: user {entry.user!r} holds tokens for metrics and for "
                f"{' and '.join(sorted(held & QUERY_ENDPOINTS))}; the monitoring system needs a user "
                "of its own",
                path=path,
            )
        out[digest] = Caller(Principal(entry.user, frozenset(entry.groups)), allowed)
    return out


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SearchBody(BaseModel):
    """``POST /v1/search``. Any other field (such as ``groups``) is rejected."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(5, ge=1, le=50)


class AskBody(BaseModel):
    """``POST /v1/ask``. Any other field (such as ``groups``) is rejected."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000)


class ProposeBody(BaseModel):
    """``POST /v1/actions``: one command of one runbook. Any other field is rejected."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=1000)
    command: str = Field(min_length=1, max_length=MAX_COMMAND_CHARS)
    reason: str | None = Field(None, max_length=2000)


class ApproveBody(BaseModel):
    """``POST /v1/actions/{id}/approve``: no fields (the approver is the token's user)."""

    model_config = ConfigDict(extra="forbid")


class DenyBody(BaseModel):
    """``POST /v1/actions/{id}/deny``. Any other field is rejected."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=2000)


class RedeemBody(BaseModel):
    """``POST /v1/actions/redeem``: the grant and the exact command about to run."""

    model_config = ConfigDict(extra="forbid")

    grant: str = Field(min_length=1)
    command: str = Field(min_length=1, max_length=MAX_COMMAND_CHARS)


class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests, bursts up to the same number."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when allowed, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


def create_app(
    index: Any,
    tokens: dict[str, Caller],
    *,
    per_minute: int = 600,
    max_body: int = MAX_BODY_BYTES,
) -> Any:
    """The FastAPI application serving ``index`` (a :class:`RunbookIndex` with interface "http")."""
    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi import Path as PathParam
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    requests = Counter("runbook_rag_requests", "Requests", ["endpoint", "outcome"], registry=registry)
    latency = Histogram(
        "runbook_rag_request_seconds",
        "Request latency",
        ["endpoint", "outcome"],
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        registry=registry,
    )
    llm_tokens = Counter("runbook_rag_llm_tokens", "Model tokens", ["kind"], registry=registry)
    llm_cost = Counter("runbook_rag_llm_cost_usd", "Estimated model cost", registry=registry)
    fallbacks = Counter("runbook_rag_llm_fallbacks", "Extractive fallbacks", ["reason"], registry=registry)
    withheld = Counter(
        "runbook_rag_withheld_candidates", "Candidates the access filter withheld", registry=registry
    )
    generation = Gauge(
        "runbook_rag_index_generation_info", "Served generation", ["generation"], registry=registry
    )
    actions = Counter(
        "runbook_rag_actions",
        "Guarded-action steps by operation and outcome",
        ["operation", "outcome"],
        registry=registry,
    )
    limiter = RateLimiter(per_minute)
    bearer = HTTPBearer(auto_error=False)

    def observe(event: AuditEvent) -> None:
        if event.action.startswith("action."):  # outcomes are a short fixed list; ids are not labels
            actions.labels(event.action.removeprefix("action."), event.outcome).inc()
            return
        withheld.inc(event.withheld or 0)
        if event.prompt_tokens:
            llm_tokens.labels("prompt").inc(event.prompt_tokens)
        if event.completion_tokens:
            llm_tokens.labels("completion").inc(event.completion_tokens)
        if event.fallback_reason:
            fallbacks.labels(event.fallback_reason).inc()

    index.subscribers.append(observe)

    app = FastAPI(title="runbook-rag", version="1", description=__doc__)

    def record(method: str, path: str, status: int, seconds: float) -> None:
        route = route_of(method, path)
        if route is not None and route[0] != "metrics":  # known routes only: no label per path or id
            requests.labels(route[1], str(status)).inc()
            latency.labels(route[1], str(status)).observe(seconds)

    app.add_middleware(_Gate, tokens=tokens, max_body=max_body, record=record)

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse(
            {"error": {"code": code, "message": message}}, status_code=status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> Any:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in exc.errors()[:5]
        ]
        return error(422, "invalid_request", "; ".join(problems))

    @app.exception_handler(RunbookRagError)
    async def library_error(_: Request, exc: RunbookRagError) -> Any:
        if isinstance(exc, QueryError):
            return error(422, "invalid_query", str(exc))
        if isinstance(exc, ActionRefused):
            return error(403, "action_refused", exc.reason)
        if isinstance(exc, GrantInvalid):
            return error(409, "grant_invalid", exc.reason)
        if isinstance(exc, IndexStateError):
            return error(503, "index_unavailable", "the index is not available")
        if isinstance(exc, AccessViolation):
            security.error("security: an access check failed serving user %s; answered 500", exc.user_id)
            return error(500, "internal_error", "internal error")
        return error(503, "unavailable", "the service cannot answer now")

    def caller(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        digest = token_digest(credentials.credentials)
        known = tokens.get(digest)
        if known is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        if not may_call(known, request.method, request.url.path):
            raise HTTPException(403, "this token may not call this endpoint")
        wait = limiter.take(digest)
        if wait:
            raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": str(max(1, round(wait)))})
        return known.principal

    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> Any:
        codes = {
            401: "unauthorized",
            403: "forbidden",
            404: "not_found",
            405: "method_not_allowed",
            429: "rate_limited",
        }
        return error(
            exc.status_code, codes.get(exc.status_code, "error"), str(exc.detail), dict(exc.headers or {})
        )

    @app.post("/v1/search")
    def post_search(body: SearchBody, principal: Annotated[Principal, Depends(caller)]) -> dict[str, Any]:
        hits = index.search(body.query, principal=principal, k=body.k)
        return {"hits": [h.to_dict() for h in hits]}

    @app.post("/v1/ask")
    def post_ask(body: AskBody, principal: Annotated[Principal, Depends(caller)]) -> dict[str, Any]:
        answer = index.answer(body.question, principal=principal)
        if answer.usage and answer.usage.cost:
            llm_cost.inc(answer.usage.cost)
        return dict(answer.to_dict())

    @app.post("/v1/actions", status_code=201)
    def post_action(body: ProposeBody, principal: Annotated[Principal, Depends(caller)]) -> dict[str, Any]:
        request = index.propose(body.source, body.command, principal=principal, reason=body.reason)
        return dict(request.to_dict())

    @app.get("/v1/actions")
    def get_actions(
        principal: Annotated[Principal, Depends(caller)],
        status: Annotated[str | None, Query(pattern=f"^({'|'.join(STATUSES)})$")] = None,
    ) -> dict[str, Any]:
        found = index.action_requests(principal=principal, status=status)
        return {"requests": [r.to_dict() for r in found]}

    @app.post("/v1/actions/redeem")
    def post_redeem(body: RedeemBody, principal: Annotated[Principal, Depends(caller)]) -> dict[str, Any]:
        return dict(index.redeem(body.grant, body.command, principal=principal).to_dict())

    @app.post("/v1/actions/{request_id}/approve")
    def post_approve(
        request_id: Annotated[str, PathParam(max_length=100)],
        principal: Annotated[Principal, Depends(caller)],
        body: ApproveBody | None = None,
    ) -> dict[str, Any]:
        return dict(index.approve(request_id, principal=principal).to_dict())

    @app.post("/v1/actions/{request_id}/deny")
    def post_deny(
        request_id: Annotated[str, PathParam(max_length=100)],
        principal: Annotated[Principal, Depends(caller)],
        body: DenyBody | None = None,
    ) -> dict[str, Any]:
        reason = body.reason if body is not None else None
        return dict(index.deny(request_id, principal=principal, reason=reason).to_dict())

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "generation": index.manifest.generation}

    @app.get("/metrics")
    def metrics(_: Annotated[Principal, Depends(caller)]) -> Any:
        # Behind a token with the "metrics" endpoint: the withheld counter moves with each query,
        # so it is for the monitoring system, never for the callers whose queries it counts.
        generation.clear()
        generation.labels(index.manifest.generation).set(1)
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    return app


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _Gate:
    """Outermost ASGI layer: a body is read only for a known token, and never past the limit.

    The token is checked from the headers before any body byte is read: a request with more
    than one ``Authorization`` header gets 400, an unknown token 401, a token that may not
    call the endpoint 403, and the connection closes with the body unread. The body is then
    read in a stream that stops at ``max_body`` (413), and handed on to the application whole.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        tokens: dict[str, Caller],
        max_body: int,
        record: Callable[[str, str, int, float], None],
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = max_body
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        route = route_of(scope["method"], scope["path"])
        # One span per request, named by its route (never by an id in the path).
        name = f"{scope['method']} {route[1] if route else 'unknown'}"
        attributes = {"http.request.method": scope["method"], "http.route": route[1] if route else None}
        with tracing.span(name, attributes, kind="server") as span:
            try:
                admitted = await self._admit(scope, receive)
                if isinstance(admitted, int):
                    await _refuse(sending, admitted, self.max_body)
                else:
                    await self.app(scope, admitted, sending)
            finally:
                span.set_attribute("http.response.status_code", status)
                self.record(scope["method"], scope["path"], status, time.perf_counter() - started)

    async def _admit(self, scope: Scope, receive: Receive) -> int | Receive:
        """The status to refuse with, or how the application receives the request's body."""
        length: bytes | None = None
        chunked = False
        token = ""
        authorizations = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"authorization":
                authorizations += 1
                scheme, _, credentials = value.decode("latin-1").partition(" ")
                token = credentials.strip() if scheme.lower() == "bearer" else ""
        if not chunked and (length is None or length == b"0"):
            return receive
        if authorizations > 1:
            return 400
        caller = self.tokens.get(token_digest(token)) if token else None
        if caller is None:
            return 401
        if not may_call(caller, scope["method"], scope["path"]):
            return 403
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return 400
            body += message.get("body", b"")
            if len(body) > self.max_body:
                return 413
            if not message.get("more_body", False):
                break
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        return replay


_REFUSALS = {
    400: ("bad_request", "the request could not be read (one Authorization header, one body)"),
    401: ("unauthorized", "a known bearer token is required"),
    403: ("forbidden", "this token may not call this endpoint"),
    413: ("too_large", "request bodies are limited to {max_body} bytes"),
}


async def _refuse(send: Send, status: int, max_body: int) -> None:
    """A JSON error that closes the connection: the body it leaves unread is never read."""
    code, message = _REFUSALS[status]
    payload = json.dumps({"error": {"code": code, "message": message.format(max_body=max_body)}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ConnectionLimits:
    """Open connections in all and per client address; one event loop updates it."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._open: Counter[str] = Counter()
        self._count = 0

    def admit(self, client: str) -> bool:
        if self._count >= self.total or self._open[client] >= self.per_client:
            return False
        self._open[client] += 1
        self._count += 1
        return True

    def release(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]
        self._count -= 1


def _client_key(address: str) -> str:
    """Whom a connection is counted against: its IPv4 address, or its IPv6 /64 network."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip.ipv4_mapped or ip) if ip.version == 6 else str(ip)


_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
)
_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def _guarded_protocol(limits: ConnectionLimits, request_timeout: float) -> type:
    """uvicorn's httptools protocol with connection limits and a deadline for each request.

    A connection over a limit is answered 503 and closed before its request is read. A
    connection whose request has not fully arrived ``request_timeout`` seconds after it
    opened, or after the first byte of the next request, is answered 408 (when no response
    is under way) and closed; so is one that stops reading its response for as long.
    Clients are counted by address (an IPv6 client by its /64 network).
    """
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _peer: str | None = None
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            peer = _client_key(self.client[0] if self.client else "")
            if not limits.admit(peer):
                transport.write(_BUSY)
                transport.close()
                return
            self._peer = peer
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._peer is not None:
                limits.release(self._peer)
                self._peer = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

        def pause_writing(self) -> None:
            # The client is not reading its response: it has as long as a request to resume.
            super().pause_writing()
            self._arm()

        def resume_writing(self) -> None:
            super().resume_writing()
            if self.cycle is None or self.cycle.more_body is False:
                self._disarm()

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(request_timeout, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                # The application may still be answering: its writes go nowhere from now on,
                # as after any lost connection (a closing transport would raise on them).
                self.cycle.disconnected = True
                self.cycle.message_event.set()
            if self.flow.write_paused:  # a client that does not read would hold a close open
                self.transport.abort()
                return
            if self.cycle is None or self.cycle.response_complete:
                self.transport.write(_TIMEOUT)
            self.transport.close()

    return GuardedHttpToolsProtocol


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    request_timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
) -> Any:
    """The uvicorn configuration that serves ``app`` with the connection limits and deadline."""
    import uvicorn

    if request_timeout <= 0 or max_connections < 1 or max_connections_per_client < 1:
        raise ConfigError("the request timeout and connection limits must be positive")
    limits = ConnectionLimits(max_connections, max_connections_per_client)
    protocol = _guarded_protocol(limits, request_timeout)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        ws="none",  # no WebSocket routes: an upgrade request is plain HTTP, counted and timed
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def serve(
    index_path: Path | None,
    tokens_file: Path,
    *,
    host: str,
    port: int,
    audit_log: Path | None = None,
    per_minute: int = 600,
    request_timeout: float = REQUEST_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
    max_connections_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    from .index import RunbookIndex
    from .settings import Settings

    tokens = load_tokens(tokens_file)  # before the index: a bad tokens file fails at once
    settings = Settings(**({"audit_log": audit_log} if audit_log else {}))  # type: ignore[arg-type]
    index = RunbookIndex(index_path, settings=settings, interface="http")
    app = create_app(index, tokens, per_minute=per_minute)
    config = server_config(
        app,
        host=host,
        port=port,
        request_timeout=request_timeout,
        max_connections=max_connections,
        max_connections_per_client=max_connections_per_client,
    )
    uvicorn.Server(config).run()
