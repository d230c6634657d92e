"""``runbook-rag mcp``: the index as a Model Context Protocol server, for agents.

Four tools over one :class:`~runbook_rag.index.RunbookIndex` (interface ``mcp``, so every call
is audited as coming from here): ``search_runbooks``, ``ask_runbooks`` and
``get_runbook_section`` read, ``propose_action`` asks for a runbook's command to be run (a
request that people approve elsewhere: nothing here approves, denies or redeems).

Identity is the server's, never the model's. No tool takes a user or groups, and an argument
a tool does not declare is an error (every input schema says ``additionalProperties: false``
and the arguments are checked against it). Over stdio the principal is fixed when the server
starts; over streamable HTTP each request's bearer token is verified against the hashed tokens
file of ``serve`` (the SDK's token-verifier hook), and the token must list ``mcp`` among its
``endpoints``: an unknown token is refused 401, a known one without ``mcp`` 403.

A library error becomes a tool error carrying the library's one-line message, which names ids
and files, never the text of a passage the caller may not read; a passage that is missing and
one that is forbidden give the same error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .actions import MAX_COMMAND_CHARS
from .errors import AccessViolation, ConfigError, RunbookRagError
from .records import Principal

if TYPE_CHECKING:
    from mcp.server import Server, ServerRequestContext
    from mcp_types import CallToolResult

    from .index import RunbookIndex
    from .service import Caller

MCP = "mcp"
"""The endpoint name a token must list to be served here."""
INTERFACE = "mcp"
MAX_TOKEN_CHARS = 4096
_INSTALL = "the MCP server needs the mcp package: pip install 'runbook-rag[mcp]'"


class SearchArgs(BaseModel):
    """``search_runbooks``: any other argument (a user, groups) is refused."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=2000, description="What to look for, in plain words.")
    k: int = Field(5, ge=1, le=50, description="How many passages to return.")


class AskArgs(BaseModel):
    """``ask_runbooks``: any other argument is refused."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000, description="The question to answer.")


class SectionArgs(BaseModel):
    """``get_runbook_section``: any other argument is refused."""

    model_config = ConfigDict(extra="forbid")

    chunk_id: str = Field(
        min_length=1, max_length=200, description="A passage id, as a search hit or a citation gives it."
    )


class ProposeArgs(BaseModel):
    """``propose_action``: any other argument is refused."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(
        min_length=1, max_length=1000, description="The runbook, by its source path as hits name it."
    )
    command: str = Field(
        min_length=1, max_length=MAX_COMMAND_CHARS, description="The command, as the runbook has it."
    )
    reason: str | None = Field(None, max_length=2000, description="Why it should run.")


def _search(index: RunbookIndex, principal: Principal, args: SearchArgs) -> dict[str, Any]:
    hits = index.search(args.query, principal=principal, k=args.k)
    return {"hits": [h.to_dict() for h in hits]}


def _ask(index: RunbookIndex, principal: Principal, args: AskArgs) -> dict[str, Any]:
    answer = index.answer(args.question, principal=principal).to_dict()
    keys = ("answer", "abstained", "mode", "citations", "commands", "fallback_reason")
    return {k: answer[k] for k in keys}


def _section(index: RunbookIndex, principal: Principal, args: SectionArgs) -> dict[str, Any]:
    return dict(index.section(args.chunk_id, principal=principal).to_dict())


def _propose(index: RunbookIndex, principal: Principal, args: ProposeArgs) -> dict[str, Any]:
    request = index.propose(args.source, args.command, principal=principal, reason=args.reason).to_dict()
    return {k: request[k] for k in ("id", "risk", "reasons", "status", "approvals_needed", "expires_at")}


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One tool: its arguments' model, whether it only reads, and the library call it makes."""

    name: str
    title: str
    description: str
    arguments: type[BaseModel]
    read_only: bool
    run: Callable[[RunbookIndex, Principal, Any], dict[str, Any]]

    def schema(self) -> dict[str, Any]:
        """The input schema: the arguments' model, which admits no other property."""
        schema = self.arguments.model_json_schema()
        schema.pop("description", None)
        return schema


TOOLS = (
    ToolSpec(
        "search_runbooks",
        "Search runbooks",
        "The runbook passages that best match a query, best first, among those this server's "
        "caller may read: each with its chunk_id, source, heading, lines, text and the commands "
        "it holds with their risk.",
        SearchArgs,
        True,
        _search,
    ),
    ToolSpec(
        "ask_runbooks",
        "Ask the runbooks",
        "A cited answer to a question from the runbooks this server's caller may read, or an "
        "abstention when they do not hold one. Each citation names the passage it came from; "
        "each command the answer shows carries its risk and whether a cited passage holds it.",
        AskArgs,
        True,
        _ask,
    ),
    ToolSpec(
        "get_runbook_section",
        "Read a runbook passage",
        "One passage in full, by the chunk_id a search hit or a citation gives. The same error "
        "whether the passage does not exist or this server's caller may not read it.",
        SectionArgs,
        True,
        _section,
    ),
    ToolSpec(
        "propose_action",
        "Propose a runbook command",
        "Ask for one command of a runbook to be run: it must be in a runbook this server's caller "
        "may read. Gives the request's id, risk and status: read-only commands need no approval, "
        "the others wait for people to approve them (never through this server).",
        ProposeArgs,
        False,
        _propose,
    ),
)

Identify = Callable[["ServerRequestContext[Any, Any]"], Principal | None]


def fixed_identity(principal: Principal) -> Identify:
    """Every call is ``principal``'s (stdio: one caller, named when the server starts)."""
    return lambda _ctx: principal


def bearer_identity(callers: dict[str, Caller]) -> Identify:
    """Each call is the principal of the bearer token its HTTP request carried, looked up again
    in ``callers`` (None when there is none, or it may not call ``mcp``)."""
    from .service import token_digest

    def identify(ctx: ServerRequestContext[Any, Any]) -> Principal | None:
        request = ctx.request
        user = request.scope.get("user") if request is not None and hasattr(request, "scope") else None
        access = getattr(user, "access_token", None)
        token = getattr(access, "token", None)
        if not isinstance(token, str):
            return None
        caller = callers.get(token_digest(token))
        return caller.principal if caller is not None and MCP in caller.endpoints else None

    return identify


def create_server(index: RunbookIndex, identify: Identify) -> Server[Any]:
    """The MCP server over ``index``, each call run as the principal ``identify`` gives."""
    import anyio
    import mcp_types as types
    from mcp.server import Server

    by_name = {tool.name: tool for tool in TOOLS}
    listed = types.ListToolsResult(
        tools=[
            types.Tool(
                name=tool.name,
                title=tool.title,
                description=tool.description,
                input_schema=tool.schema(),
                annotations=types.ToolAnnotations(
                    title=tool.title,
                    read_only_hint=tool.read_only,
                    destructive_hint=False,
                    idempotent_hint=tool.read_only,
                    open_world_hint=False,
                ),
            )
            for tool in TOOLS
        ]
    )

    async def list_tools(
        ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listed

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            return _error(f"no tool named {params.name!r}")
        principal = identify(ctx)
        if principal is None:
            return _error("no caller: a bearer token that may call mcp is required")
        try:
            arguments = tool.arguments.model_validate(params.arguments or {})
        except ValidationError as exc:
            return _error(f"invalid arguments: {_problems(exc)}")
        try:
            result = await anyio.to_thread.run_sync(tool.run, index, principal, arguments)
        except AccessViolation:
            return _error("internal error")
        except RunbookRagError as exc:
            return _error(str(exc))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=json.dumps(result, ensure_ascii=False))],
            structured_content=result,
        )

    return Server("runbook-rag", version=_version(), on_list_tools=list_tools, on_call_tool=call_tool)


def _error(message: str) -> CallToolResult:
    import mcp_types as types

    flat = " ".join(message.split())
    return types.CallToolResult(content=[types.TextContent(type="text", text=flat)], is_error=True)


def _problems(exc: ValidationError) -> str:
    """Which arguments were wrong and how, never their values."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()[:5]
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runbook-rag")
    except PackageNotFoundError:
        return ""


def require_mcp() -> None:
    """Fail with the extra to install when the ``mcp`` package is missing."""
    try:
        import mcp.server  # noqa: F401
    except ImportError:
        raise ConfigError(_INSTALL) from None


def load_mcp_tokens(path: Path | str) -> dict[str, Caller]:
    """``{sha256: caller}`` from ``serve``'s tokens file. Only the callers whose endpoints name
    ``mcp`` are served here; the others are known, and refused 403."""
    from .service import load_tokens

    return load_tokens(path)


def principal_of_token_file(token_file: Path | str, tokens_file: Path | str) -> Principal:
    """The principal of the bearer token kept in ``token_file``, verified against the hashed
    ``tokens_file`` (the token must list ``mcp``). Errors never quote the token."""
    from .service import token_digest

    token_file = Path(token_file)
    try:
        with token_file.open(encoding="utf-8") as handle:
            token = handle.read(MAX_TOKEN_CHARS + 1).strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not readable text"
        raise ConfigError(f"cannot read the token file: {reason}", path=token_file) from None
    if not token or len(token) > MAX_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError("the token file must hold one bearer token", path=token_file)
    caller = load_mcp_tokens(tokens_file).get(token_digest(token))
    if caller is None or MCP not in caller.endpoints:
        raise ConfigError(
            f"the token is not in the tokens file {tokens_file}, or its endpoints do not list {MCP}",
            path=token_file,
        )
    return caller.principal


def serve_stdio(index: RunbookIndex, principal: Principal) -> None:
    """Serve ``index`` over stdin/stdout as ``principal`` until the client closes the stream."""
    require_mcp()
    import anyio
    from mcp.server.stdio import stdio_server

    server = create_server(index, fixed_identity(principal))

    async def run() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(run)


class TokensVerifier:
    """The SDK's token-verifier hook over the hashed tokens file: a known token's scopes are
    its endpoints, so the server can refuse (403) one that does not list ``mcp``."""

    def __init__(self, tokens: dict[str, Caller]) -> None:
        self.tokens = tokens

    async def verify_token(self, token: str) -> Any:
        from mcp.server.auth.provider import AccessToken

        from .service import token_digest

        digest = token_digest(token)
        caller = self.tokens.get(digest)
        if caller is None:
            return None
        # The subject is the token's own digest, so an HTTP session opened with one token is
        # refused to every other token, even one of the same user.
        return AccessToken(
            token=token,
            client_id=caller.principal.user_id,
            subject=digest,
            scopes=sorted(caller.endpoints),
        )


def http_app(index: RunbookIndex, tokens: dict[str, Caller], *, host: str, port: int) -> Any:
    """The streamable-HTTP application: ``/mcp`` behind bearer tokens, ``/healthz`` open."""
    require_mcp()
    from mcp.server.auth.settings import AuthSettings
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "generation": index.manifest.generation})

    server = create_server(index, bearer_identity(tokens))
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    return server.streamable_http_app(
        streamable_http_path="/mcp",
        json_response=True,
        stateless_http=True,
        host=host,
        # The tokens file's operator issues the tokens; no OAuth routes are served.
        auth=AuthSettings(issuer_url=base, resource_server_url=None, required_scopes=[MCP]),
        token_verifier=TokensVerifier(tokens),
        custom_starlette_routes=[Route("/healthz", healthz, methods=["GET"])],
    )


def serve_http(index: RunbookIndex, tokens: dict[str, Caller], *, host: str, port: int) -> None:
    """Serve ``index`` over streamable HTTP at ``http://host:port/mcp`` until interrupted."""
    import uvicorn

    app = http_app(index, tokens, host=host, port=port)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, ws="none")
    uvicorn.Server(config).run()
