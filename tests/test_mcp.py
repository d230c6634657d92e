"""``runbook-rag mcp``: the index over the Model Context Protocol, driven by the SDK's own client
over stdio and streamable HTTP.

The caller is the server's (named when it starts, or the request's bearer token), never a tool
argument: probes as one principal never see another's runbooks, by search, answer, passage id,
proposal or error message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from runbook_rag import RunbookIndex, Settings
from runbook_rag.access import is_entitled
from runbook_rag.embedding import SentenceTransformerEmbedder
from runbook_rag.errors import ConfigError
from runbook_rag.mcp_server import TOOLS, load_mcp_tokens, principal_of_token_file, require_mcp
from runbook_rag.records import Principal
from runbook_rag.service import token_digest

from .conftest import SAMPLES
from .test_cli import run
from .test_service import ended_or_healthy, free_port
from .waiting import wait_exit, wait_until

KEY = "audit-key-for-tests-0123456789"
SOURCE = "platform/postgres-primary-failover.md"  # dba reads it, sre does not
REINIT = "patronictl reinit payments-db payments-db-0"
SRE = Principal("sam", frozenset({"sre"}))
TOOL_NAMES = {"search_runbooks", "ask_runbooks", "get_runbook_section", "propose_action"}
READ_ONLY = {"search_runbooks", "ask_runbooks", "get_runbook_section"}
TOKENS = {"sre": "tok-mcp-sre", "dba": "tok-mcp-dba", "http-only": "tok-http-only"}
MISSING = "no passage with that id that you may read"


def tokens_file(path: Path) -> Path:
    entries = [
        {"token_sha256": token_digest(TOKENS["sre"]), "user": "sam", "groups": ["sre"], "endpoints": ["mcp"]},
        {
            "token_sha256": token_digest(TOKENS["dba"]),
            "user": "dee",
            "groups": ["dba"],
            "endpoints": ["mcp", "search"],
        },
        # Known to `serve` (search and ask by default), not allowed here.
        {"token_sha256": token_digest(TOKENS["http-only"]), "user": "bot", "groups": ["sre"]},
    ]
    path.write_text(json.dumps(entries))
    return path


def server_env(folder: Path) -> dict[str, str]:
    """A server's environment: its audit trail and requests kept out of the shared index."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "RUNBOOK_RAG_AUDIT_KEY": KEY,
        "RUNBOOK_RAG_AUDIT_LOG": str(folder / "audit.log"),
        "RUNBOOK_RAG_AUDIT_HEAD": str(folder / "audit.head"),
        "RUNBOOK_RAG_ACTIONS_DB": str(folder / "actions.sqlite3"),
    }


def audit_records(env: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(env["RUNBOOK_RAG_AUDIT_LOG"]).read_text().splitlines()]


@dataclass
class Session:
    """A connected SDK client session, called from synchronous tests through a portal."""

    portal: BlockingPortal
    session: ClientSession
    calls: int = 0

    def call(self, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        self.calls += 1
        return self.portal.call(functools.partial(self.session.call_tool, tool, arguments))

    def tools(self) -> list[Any]:
        return list(self.portal.call(self.session.list_tools).tools)


@contextlib.contextmanager
def connected(opened: Any) -> Iterator[Session]:
    with start_blocking_portal() as portal, portal.wrap_async_context_manager(opened) as session:
        yield Session(portal, session)


@contextlib.asynccontextmanager
async def over_stdio(index: Path, env: dict[str, str], *caller: str) -> AsyncIterator[ClientSession]:
    """``python -m runbook_rag mcp`` spawned by the SDK's stdio client, PYTHONPATH inherited."""
    args = ["-m", "runbook_rag", "mcp", "--index", str(index), *caller]
    params = StdioServerParameters(command=sys.executable, args=args, env=env)
    with (Path(env["RUNBOOK_RAG_AUDIT_LOG"]).parent / "server.stderr").open("a") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


@contextlib.asynccontextmanager
async def over_http(url: str, token: str) -> AsyncIterator[ClientSession]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def said(result: CallToolResult) -> str:
    """Everything a result tells the caller: its text blocks and every string of its data."""

    def strings(value: Any) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for k, v in value.items():
                yield str(k)
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)
        elif value is not None:
            yield str(value)

    texts = [getattr(block, "text", "") for block in result.content]
    return "\n".join([*texts, *strings(result.structured_content)])


def sources(result: CallToolResult) -> list[str]:
    assert not result.is_error, said(result)
    return [hit["source"] for hit in (result.structured_content or {})["hits"]]


# --- what the tools declare ------------------------------------------------------------------


def test_tool_schemas_take_no_identity_and_admit_nothing_else() -> None:
    assert {t.name for t in TOOLS} == TOOL_NAMES
    for tool in TOOLS:
        schema = tool.schema()
        assert schema["additionalProperties"] is False
        assert not {"user", "users", "user_id", "group", "groups", "principal"} & set(schema["properties"])
        assert tool.read_only == (tool.name in READ_ONLY)


def test_a_missing_sdk_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)
    monkeypatch.setitem(sys.modules, "mcp.server", None)
    with pytest.raises(ConfigError, match=r"pip install 'runbook-rag\[mcp\]'"):
        require_mcp()


def test_the_tokens_file_of_serve_with_mcp_endpoints(tmp_path: Path) -> None:
    callers = load_mcp_tokens(tokens_file(tmp_path / "tokens.json"))
    assert {c.principal.user_id: "mcp" in c.endpoints for c in callers.values()} == {
        "sam": True,
        "dee": True,
        "bot": False,  # unset endpoints are serve's defaults, which do not include mcp
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"- {{token_sha256: {token_digest('x')}, user: u, groups: [sre], endpoints: [mcpp]}}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: entry 1: endpoints must be among"):
        load_mcp_tokens(bad)
    bad.write_text("- {token_sha256: abc, user: u, groups: [sre], endpoints: [mcp]}\n")
    with pytest.raises(ConfigError, match="64 hex digits"):
        load_mcp_tokens(bad)


def test_a_token_file_names_the_stdio_caller_and_errors_never_quote_it(tmp_path: Path) -> None:
    tokens = tokens_file(tmp_path / "tokens.json")
    token = tmp_path / "token"
    token.write_text(TOKENS["dba"] + "\n")
    assert principal_of_token_file(token, tokens) == Principal("dee", frozenset({"dba"}))
    for refused in (TOKENS["http-only"], "tok-nobody-knows"):
        token.write_text(refused)
        with pytest.raises(ConfigError, match="endpoints do not list mcp") as exc:
            principal_of_token_file(token, tokens)
        assert refused not in str(exc.value)
    token.write_text("")
    with pytest.raises(ConfigError, match="one bearer token"):
        principal_of_token_file(token, tokens)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ((), "name the caller"),
        (("--user", "sam"), "name the caller"),
        (("--user", "sam", "--group", "sre", "--token-file", "t"), "not both"),
        (("--token-file", "t"), "needs --tokens"),
        (("--http",), "--http needs --tokens"),
        (("--http", "--tokens", "t", "--user", "sam", "--group", "sre"), "each request's token"),
    ],
)
def test_cli_refuses_an_unnamed_or_doubly_named_caller(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...], problem: str
) -> None:
    code, _, err = run(capsys, "mcp", "--index", "nowhere", *args)
    assert code == 2 and problem in err


# --- through the SDK's client over stdio ---------------------------------------------------


@dataclass
class Forbidden:
    """What sre may never see: runbooks, passage ids, and text found only in those runbooks."""

    titles: dict[str, str] = field(default_factory=dict)  # source -> title
    chunk_ids: set[str] = field(default_factory=set)
    lines: dict[str, str] = field(default_factory=dict)  # source -> a line only it holds
    commands: dict[str, str] = field(default_factory=dict)  # source -> a command of it
    markers: set[str] = field(default_factory=set)

    def leaks(self, result: CallToolResult, *asked: str) -> list[str]:
        """Markers the result carries, besides what the probe itself sent."""
        text = said(result)
        for value in asked:
            text = text.replace(value, "")
        return sorted(m for m in self.markers if m in text)


@pytest.fixture(scope="module")
def forbidden(
    sample_index_path: Path, model: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory
) -> Forbidden:
    """Read as an operator of every group, in this process (its own audit trail)."""
    folder = tmp_path_factory.mktemp("operator")
    settings = Settings(audit_log=folder / "audit.log", audit_key=KEY, audit_head=folder / "audit.head")
    seen: dict[str, Any] = {}
    with RunbookIndex(sample_index_path, settings=settings, embedder=model) as index:
        operator = Principal("operator", index.labelled_groups())
        for path in sorted(SAMPLES.rglob("*.md")):
            query = path.stem.replace("-", " ")
            for hit in index.search(query, principal=operator, k=50, per_document=0):
                seen[hit.chunk_id] = hit
    allowed = [h for h in seen.values() if is_entitled(SRE, h.labels)]
    visible = "\n".join(h.title + "\n" + h.text for h in allowed)
    visible += "\n".join(
        (SAMPLES / s).read_text() for s in {h.source for h in allowed} if (SAMPLES / s).is_file()
    )
    out = Forbidden()
    for hit in seen.values():
        if is_entitled(SRE, hit.labels):
            continue
        out.titles[hit.source] = hit.title
        out.chunk_ids.add(hit.chunk_id)
        for line in (line.strip() for line in hit.text.splitlines()):
            if len(line) >= 40 and line not in visible:
                out.lines.setdefault(hit.source, line)
                out.markers.add(line)
        if hit.commands:
            out.commands.setdefault(hit.source, hit.commands[0].command)
    out.markers |= out.chunk_ids
    out.markers |= {m for m in [*out.titles, *out.titles.values()] if m not in visible}
    assert SOURCE in out.titles and len(out.titles) >= 5 and len(out.chunk_ids) >= 20
    return out


@pytest.fixture(scope="module")
def sre_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return server_env(tmp_path_factory.mktemp("mcp-sre"))


@pytest.fixture(scope="module")
def sre(sample_index_path: Path, sre_env: dict[str, str]) -> Iterator[Session]:
    with connected(over_stdio(sample_index_path, sre_env, "--user", "sam", "--group", "sre")) as session:
        yield session


@pytest.mark.slow
def test_tools_list_no_identity_arguments_and_annotate_read_only(sre: Session) -> None:
    tools = sre.tools()
    assert {t.name for t in tools} == TOOL_NAMES  # never approve, deny or redeem

    def keys(value: Any) -> Iterator[str]:
        if isinstance(value, dict):
            for k, v in value.items():
                yield k
                yield from keys(v)
        elif isinstance(value, list):
            for v in value:
                yield from keys(v)

    for tool in tools:
        schema = tool.input_schema
        assert schema["additionalProperties"] is False
        assert not {"user", "user_id", "groups", "group", "principal"} & set(keys(schema)), tool.name
        assert tool.annotations.read_only_hint is (tool.name in READ_ONLY)
        assert tool.annotations.destructive_hint is False


@pytest.mark.slow
def test_search_ask_and_a_section_as_the_caller_named_at_start(sre: Session) -> None:
    result = sre.call("search_runbooks", {"query": "kafka broker down under-replicated partitions", "k": 3})
    hits = result.structured_content["hits"]
    assert 1 <= len(hits) <= 3 and hits[0]["source"] == "platform/kafka-broker-down.md"
    assert {"chunk_id", "source", "heading", "lines", "text", "commands"} <= set(hits[0])
    assert json.loads(result.content[0].text) == result.structured_content
    section = sre.call("get_runbook_section", {"chunk_id": hits[0]["chunk_id"]})
    assert not section.is_error and section.structured_content["text"] == hits[0]["text"]
    answer = sre.call("ask_runbooks", {"question": "a kafka broker is down, what do I check first?"})
    assert not answer.is_error
    assert {"answer", "abstained", "mode", "citations", "commands"} <= set(answer.structured_content)
    assert answer.structured_content["mode"] == "extractive"
    assert answer.structured_content["citations"][0]["source"] == "platform/kafka-broker-down.md"


@pytest.mark.slow
@pytest.mark.parametrize("extra", [{"groups": ["dba"]}, {"user": "dee"}, {"principal": {"groups": ["dba"]}}])
def test_an_argument_that_tries_to_set_the_caller_is_refused(sre: Session, extra: dict[str, Any]) -> None:
    for tool, arguments in [
        ("search_runbooks", {"query": "postgres primary failover"}),
        ("ask_runbooks", {"question": "how do I fail over the postgres primary?"}),
        ("get_runbook_section", {"chunk_id": "x"}),
        ("propose_action", {"source": SOURCE, "command": REINIT}),
    ]:
        result = sre.call(tool, {**arguments, **extra})
        [name] = extra
        assert result.is_error and result.structured_content is None
        assert said(result) == f"invalid arguments: {name}: Extra inputs are not permitted"


@pytest.mark.slow
def test_library_errors_are_one_line_tool_errors(sre: Session) -> None:
    for tool, arguments in [
        ("search_runbooks", {"query": ""}),
        ("search_runbooks", {"query": "x", "k": 500}),
        ("get_runbook_section", {}),
        ("approve_action", {"request_id": "r1"}),
    ]:
        result = sre.call(tool, arguments)
        assert result.is_error and "\n" not in said(result) and "Traceback" not in said(result)
    assert said(sre.call("approve_action", {"request_id": "r1"})) == "no tool named 'approve_action'"


@pytest.mark.slow
def test_leak_probes_as_another_principal(sre: Session, forbidden: Forbidden) -> None:
    """sre probes every runbook it may not read: by title, by words of its name, by a line only
    it holds, by each passage id, and by proposing its commands. Nothing of them comes back,
    and the errors are those of things that do not exist."""
    before, leaks = sre.calls, []

    def probe(tool: str, **arguments: Any) -> CallToolResult:
        result = sre.call(tool, arguments)
        leaks.extend(
            f"{tool}{arguments}: {m}" for m in forbidden.leaks(result, *map(str, arguments.values()))
        )
        return result

    for source, title in forbidden.titles.items():
        for query in {title, Path(source).stem.replace("-", " "), forbidden.lines.get(source, title)}:
            assert set(sources(probe("search_runbooks", query=query, k=50))).isdisjoint(forbidden.titles)
        probe("ask_runbooks", question=f"{title}: what are the steps?")
        command = forbidden.commands.get(source, "true")
        refused = probe("propose_action", source=source, command=command)
        unknown = sre.call("propose_action", {"source": "nowhere/none.md", "command": command})
        assert refused.is_error and said(refused).replace(source, "?") == said(unknown).replace(
            "nowhere/none.md", "?"
        )
    for chunk_id in sorted(forbidden.chunk_ids):
        result = probe("get_runbook_section", chunk_id=chunk_id)
        assert result.is_error and said(result) == MISSING
    assert said(sre.call("get_runbook_section", {"chunk_id": "no-such-passage"})) == MISSING
    assert leaks == []
    probes = sre.calls - before
    print(
        f"\nMCP leak probes over stdio: {probes} calls, {len(forbidden.titles)} forbidden runbooks, 0 leaks"
    )
    assert probes >= 100


@pytest.mark.slow
def test_every_call_is_audited_with_interface_mcp(sre: Session, sre_env: dict[str, str]) -> None:
    sre.call("search_runbooks", {"query": "dns resolution failures"})
    sre.call("get_runbook_section", {"chunk_id": "no-such-passage"})
    records = audit_records(sre_env)
    assert {r["interface"] for r in records} == {"mcp"}
    assert {r["principal"]["id"] for r in records} == {"sam"}
    assert {"search", "section"} <= {r["action"] for r in records}


@pytest.mark.slow
def test_propose_over_stdio_and_no_way_to_approve(
    sample_index_path: Path, tmp_path: Path, forbidden: Forbidden
) -> None:
    env = server_env(tmp_path / "dba")
    token = tmp_path / "token"
    token.write_text(TOKENS["dba"])
    tokens = tokens_file(tmp_path / "tokens.json")
    caller = ("--token-file", str(token), "--tokens", str(tokens))
    with connected(over_stdio(sample_index_path, env, *caller)) as dba:
        hits = dba.call("search_runbooks", {"query": "postgres primary failover patroni", "k": 3})
        assert sources(hits)[0] == SOURCE
        chunk_id = hits.structured_content["hits"][0]["chunk_id"]
        assert chunk_id in forbidden.chunk_ids  # what sre was refused, dba reads
        assert forbidden.leaks(hits)  # the markers do catch that runbook where it may be shown
        assert not dba.call("get_runbook_section", {"chunk_id": chunk_id}).is_error
        proposed = dba.call(
            "propose_action", {"source": SOURCE, "command": REINIT, "reason": "replica broken"}
        )
        assert not proposed.is_error, said(proposed)
        request = proposed.structured_content
        assert {"id", "risk", "status", "approvals_needed"} <= set(request)
        assert (request["risk"], request["status"], request["approvals_needed"]) == (
            "destructive",
            "pending",
            2,
        )
        for name in ("approve_action", "deny_action", "redeem_grant"):
            assert dba.call(name, {"request_id": request["id"]}).is_error
    records = audit_records(env)
    assert {r["interface"] for r in records} == {"mcp"} and {r["principal"]["id"] for r in records} == {"dee"}
    assert [r["outcome"] for r in records if r["action"] == "action.propose"] == ["pending"]


# --- over streamable HTTP -------------------------------------------------------------------


@pytest.fixture(scope="module")
def http_server(
    sample_index_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """``runbook-rag mcp --http`` in its own process, once it answers /healthz (a port another
    process took first makes it exit: it is started again on another)."""
    folder = tmp_path_factory.mktemp("mcp-http")
    env = server_env(folder)
    tokens = tokens_file(folder / "tokens.json")
    for _ in range(3):
        port = free_port()
        command = [sys.executable, "-m", "runbook_rag", "mcp", "--http", "--port", str(port)]
        with (folder / "server.stderr").open("ab") as err:
            proc = subprocess.Popen(
                [*command, "--index", str(sample_index_path), "--tokens", str(tokens)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(functools.partial(ended_or_healthy, proc, url), "the MCP server to answer /healthz")
        except AssertionError:
            proc.kill()
            proc.wait()
            raise
        if proc.poll() is None:
            break
        proc.wait()
    else:
        raise AssertionError(
            f"the server exited before it answered: {(folder / 'server.stderr').read_text()}"
        )
    try:
        yield url + "/mcp", env
    finally:
        proc.terminate()
        wait_exit(proc, "the MCP server, terminated,")


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer tok-nobody-knows", 401),
        (f"Basic {TOKENS['sre']}", 401),
        (f"Bearer {TOKENS['http-only']}", 403),  # known to serve, but mcp is not among its endpoints
        (f"Bearer {TOKENS['sre']}", 200),
    ],
)
def test_http_refuses_a_missing_bad_or_unlisted_token(
    http_server: tuple[str, dict[str, str]], authorization: str | None, status: int
) -> None:
    url, _ = http_server
    headers = {"Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    response = httpx.post(url, json=INITIALIZE, headers=headers, timeout=30)
    assert response.status_code == status
    if status != 200:
        assert "serverInfo" not in response.text


@pytest.mark.slow
def test_http_each_request_is_its_tokens_caller(
    http_server: tuple[str, dict[str, str]], forbidden: Forbidden
) -> None:
    url, env = http_server
    with connected(over_http(url, TOKENS["dba"])) as dba, connected(over_http(url, TOKENS["sre"])) as sre:
        hits = dba.call("search_runbooks", {"query": "postgres primary failover patroni"})
        assert sources(hits)[0] == SOURCE and forbidden.leaks(hits)
        leaks = []
        for title in forbidden.titles.values():
            result = sre.call("search_runbooks", {"query": title, "k": 50})
            assert set(sources(result)).isdisjoint(forbidden.titles)
            leaks += forbidden.leaks(result, title)
            result = sre.call("ask_runbooks", {"question": title})
            leaks += forbidden.leaks(result, title)
        for chunk_id in sorted(forbidden.chunk_ids):
            result = sre.call("get_runbook_section", {"chunk_id": chunk_id})
            assert said(result) == MISSING
        assert leaks == []
        refused = sre.call("search_runbooks", {"query": "postgres", "groups": ["dba"]})
        assert refused.is_error and "groups" in said(refused)
    print(f"\nMCP leak probes over HTTP: {sre.calls} calls, 0 leaks")
    records = audit_records(env)
    assert {r["interface"] for r in records} == {"mcp"}
    assert {r["principal"]["id"] for r in records} == {"sam", "dee"}
