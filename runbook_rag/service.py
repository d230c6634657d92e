"""``runbook-rag serve``: the index over HTTP for bots, with bearer tokens, limits and metrics.

A caller is whoever its bearer token says: the tokens file maps the SHA-256 of each
token to a user and groups, and groups in a request body are rejected (422) and
in headers ignored. ``POST /v1/search`` and ``POST /v1/ask`` return the CLI's
``--json`` objects; ``GET /healthz``; ``GET /metrics`` in Prometheus format; the
OpenAPI schema at ``/openapi.json``. Every request is audited by the index (interface
``http``); errors are JSON and say nothing about documents the caller may not read.
"""

import hashlib
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import AccessViolation, ConfigError, IndexStateError, QueryError, RunbookRagError
from .records import Principal

security = logging.getLogger("runbook_rag.security")
MAX_BODY_BYTES = 16 * 1024
ENDPOINTS = frozenset({"search", "ask", "metrics"})
DEFAULT_ENDPOINTS = frozenset({"search", "ask"})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TokenEntry(BaseModel):
    """One line of the tokens file: a token's SHA-256, never the token itself."""

    model_config = ConfigDict(extra="forbid")

    token_sha256: str
    user: str = Field(min_length=1, max_length=200)
    groups: list[str] = Field(min_length=1)
    endpoints: list[str] | None = Field(
        None, description="Allowed endpoints (search, ask, metrics); search and ask when unset."
    )


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a token is, and what it may call."""

    principal: Principal
    endpoints: frozenset[str]


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
    from fastapi import Depends, FastAPI, HTTPException, Request
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
    limiter = RateLimiter(per_minute)
    bearer = HTTPBearer(auto_error=False)

    def observe(record: dict[str, Any]) -> None:
        withheld.inc(record.get("withheld") or 0)
        tokens_used = record.get("tokens") or {}
        for kind in ("prompt", "completion"):
            if tokens_used.get(kind):
                llm_tokens.labels(kind).inc(tokens_used[kind])
        if record.get("fallback_reason"):
            fallbacks.labels(record["fallback_reason"]).inc()

    index.listeners.append(observe)

    app = FastAPI(title="runbook-rag", version="1", description=__doc__)

    def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse(
            {"error": {"code": code, "message": message}}, status_code=status, headers=headers
        )

    @app.middleware("http")
    async def limits(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        started = time.perf_counter()
        endpoint = request.url.path
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body):
            response = error(413, "too_large", f"request bodies are limited to {max_body} bytes")
        elif request.method == "POST" and length is None:
            body = await request.body()
            response = (
                error(413, "too_large", f"request bodies are limited to {max_body} bytes")
                if len(body) > max_body
                else await call_next(request)
            )
        else:
            response = await call_next(request)
        if endpoint in ("/v1/search", "/v1/ask"):  # known routes only: no label per unknown path
            outcome = str(response.status_code)
            requests.labels(endpoint, outcome).inc()
            latency.labels(endpoint, outcome).observe(time.perf_counter() - started)
        return response

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
        if request.url.path.rsplit("/", 1)[-1] not in known.endpoints:
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
    def search(body: SearchBody, principal: Annotated[Principal, Depends(caller)]) -> dict[str, Any]:
        hits = index.search(body.query, principal=principal, k=body.k)
        return {"hits": [h.to_dict() for h in hits]}

    @app.post("/v1/ask")
    def ask(body: AskBody, principal: Annotated[Principal, Depends(caller)]) -> dict[str, Any]:
        answer = index.answer(body.question, principal=principal)
        if answer.usage and answer.usage.cost:
            llm_cost.inc(answer.usage.cost)
        return dict(answer.to_dict())

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


def serve(
    index_path: Path | None,
    tokens_file: Path,
    *,
    host: str,
    port: int,
    audit_log: Path | None = None,
    per_minute: int = 600,
) -> None:
    """Run the service with uvicorn until interrupted."""
    import uvicorn

    from .index import RunbookIndex
    from .settings import Settings

    settings = Settings(**({"audit_log": audit_log} if audit_log else {}))  # type: ignore[arg-type]
    index = RunbookIndex(index_path, settings=settings, interface="http")
    app = create_app(index, load_tokens(tokens_file), per_minute=per_minute)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
