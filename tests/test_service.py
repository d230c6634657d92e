"""The HTTP service: a real uvicorn server on 127.0.0.1 and a real HTTP client."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import uvicorn

from runbook_rag import RunbookIndex, Settings
from runbook_rag import service as service_module
from runbook_rag.audit import verify
from runbook_rag.cli import main
from runbook_rag.errors import ConfigError
from runbook_rag.service import create_app, load_tokens, server_config, token_digest

from .conftest import HashEmbedder
from .waiting import WAIT, join, wait_exit, wait_until

pytestmark = pytest.mark.slow

KEY = "audit-key-for-tests-0123456789"
TOKENS = {"dba": "tok-dba-1", "sre": "tok-sre-1", "search-only": "tok-search-1", "metrics": "tok-prom-1"}
FAILOVER = "postgres primary is down, how do I fail over with patroni?"
RESTRICTED = "platform/postgres-primary-failover.md"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tokens_file(path: Path) -> Path:
    entries = [
        {"token_sha256": token_digest(TOKENS["dba"]), "user": "dee", "groups": ["dba"]},
        {"token_sha256": token_digest(TOKENS["sre"]), "user": "sam", "groups": ["sre"]},
        {
            "token_sha256": token_digest(TOKENS["search-only"]),
            "user": "bot",
            "groups": ["sre"],
            "endpoints": ["search"],
        },
        {
            "token_sha256": token_digest(TOKENS["metrics"]),
            "user": "prometheus",
            "groups": ["monitoring"],
            "endpoints": ["metrics"],
        },
    ]
    path.write_text(json.dumps(entries))
    return path


class Server:
    """The service's own uvicorn configuration (limits and deadline included), in a thread.

    It listens on a socket bound here to a port the system picks, so no other process can
    take the port between choosing it and serving on it.
    """

    def __init__(self, app: Any, **limits: Any) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.server = uvicorn.Server(server_config(app, host="127.0.0.1", port=self.port, **limits))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), "uvicorn to start")
        if not self.server.started:
            self.socket.close()
            raise AssertionError("uvicorn stopped before it started serving")
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        join(self.thread, "uvicorn's shutdown")
        self.socket.close()


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, sample_index_path: Path, model
) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("svc")
    log = tmp / "audit.log"
    index = RunbookIndex(
        sample_index_path, settings=Settings(audit_log=log, audit_key=KEY), embedder=model, interface="http"
    )
    server = Server(create_app(index, load_tokens(tokens_file(tmp / "tokens.json"))))
    yield server.url, log
    server.stop()


def post(url: str, path: str, body: Any, token: str | None = None, **headers: str) -> httpx.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(url + path, json=body, headers=headers, timeout=WAIT)


def get(url: str, **headers: str) -> httpx.Response:
    return httpx.get(url, headers=headers, timeout=WAIT)


def test_no_token_or_a_bad_token_is_401(service) -> None:
    url, _ = service
    for token in (None, "nope"):
        got = post(url, "/v1/search", {"query": "kafka"}, token)
        assert got.status_code == 401 and got.json()["error"]["code"] == "unauthorized"
        assert got.headers["www-authenticate"] == "Bearer"
    got = post(url, "/v1/ask", {"question": "x"}, Authorization="Basic abc")
    assert got.status_code == 401


def test_groups_smuggled_in_the_body_or_headers_change_nothing(service) -> None:
    url, _ = service
    smuggled = post(url, "/v1/search", {"query": FAILOVER, "groups": ["dba"]}, TOKENS["sre"])
    assert smuggled.status_code == 422 and "groups" in smuggled.json()["error"]["message"]
    plain = post(url, "/v1/search", {"query": FAILOVER, "k": 10}, TOKENS["sre"]).json()
    spoofed = post(
        url,
        "/v1/search",
        {"query": FAILOVER, "k": 10},
        TOKENS["sre"],
        **{"X-Groups": "dba", "X-Forwarded-Groups": "dba", "X-Remote-Groups": "dba", "X-User": "dee"},
    ).json()
    assert [h["chunk_id"] for h in spoofed["hits"]] == [h["chunk_id"] for h in plain["hits"]]
    assert RESTRICTED not in {h["source"] for h in spoofed["hits"]}


def test_every_endpoint_keeps_restricted_runbooks_out(service) -> None:
    url, _ = service
    search = post(url, "/v1/search", {"query": FAILOVER, "k": 50}, TOKENS["sre"])
    ask = post(url, "/v1/ask", {"question": FAILOVER}, TOKENS["sre"])
    assert search.status_code == ask.status_code == 200
    assert RESTRICTED not in {h["source"] for h in search.json()["hits"]}
    assert RESTRICTED not in {c["source"] for c in ask.json()["citations"]}
    for body in (search.text, ask.text):  # the restricted runbook's own text never crosses
        assert "Manual failover procedure" not in body and "Switchover (planned)" not in body
    dba = post(url, "/v1/search", {"query": FAILOVER, "k": 3}, TOKENS["dba"]).json()
    assert dba["hits"][0]["source"] == RESTRICTED
    answer = post(url, "/v1/ask", {"question": FAILOVER}, TOKENS["dba"]).json()
    assert answer["citations"][0]["source"] == RESTRICTED and answer["mode"] == "extractive"
    assert set(answer) >= {"answer", "abstained", "citations", "mode", "fallback_reason", "usage"}


def test_limits_and_clear_errors(service) -> None:
    url, _ = service
    assert post(url, "/v1/ask", {"question": "x"}, TOKENS["search-only"]).status_code == 403
    big = post(url, "/v1/search", {"query": "x" * 40_000}, TOKENS["sre"])
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    bad_k = post(url, "/v1/search", {"query": "kafka", "k": 500}, TOKENS["sre"])
    assert bad_k.status_code == 422 and bad_k.json()["error"]["code"] == "invalid_request"
    blank = post(url, "/v1/search", {"query": "   "}, TOKENS["sre"])
    assert blank.status_code == 422 and blank.json()["error"]["code"] == "invalid_query"


def test_health_metrics_and_openapi(service) -> None:
    url, _ = service
    post(url, "/v1/search", {"query": FAILOVER}, TOKENS["sre"])
    post(url, "/v1/nope", {"query": FAILOVER}, TOKENS["sre"])
    assert get(url + "/healthz").json()["status"] == "ok"
    assert get(url + "/metrics").status_code == 401
    assert get(url + "/metrics", Authorization=f"Bearer {TOKENS['sre']}").status_code == 403
    metrics = get(url + "/metrics", Authorization=f"Bearer {TOKENS['metrics']}").text
    assert 'runbook_rag_requests_total{endpoint="/v1/search",outcome="200"}' in metrics
    assert "runbook_rag_request_seconds_bucket" in metrics
    assert "runbook_rag_withheld_candidates_total" in metrics
    assert "runbook_rag_index_generation_info{generation=" in metrics
    assert 'endpoint="/v1/nope"' not in metrics
    schema = get(url + "/openapi.json").json()
    assert {"/v1/search", "/v1/ask"} <= set(schema["paths"])


def test_requests_are_audited_and_the_log_verifies(service) -> None:
    url, log = service
    post(url, "/v1/search", {"query": "card 4111 1111 1111 1111 declined"}, TOKENS["sre"])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and all(r["interface"] == "http" for r in records)
    assert records[-1]["principal"] == {"id": "sam", "groups": ["sre"]}
    assert "4111 1111 1111 1111" not in log.read_text()
    assert verify(log, key=KEY.encode()).ok


def test_rate_limit_per_token(
    tmp_path: Path, sample_index_path: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The limiter's clock stands still: however long the requests take, no token comes back.
    frozen = time.monotonic()
    clock = SimpleNamespace(monotonic=lambda: frozen, perf_counter=time.perf_counter)
    monkeypatch.setattr(service_module, "time", clock)
    index = RunbookIndex(
        sample_index_path, settings=Settings(audit_log=tmp_path / "a.log", audit_key=KEY), embedder=model
    )
    server = Server(create_app(index, load_tokens(tokens_file(tmp_path / "t.json")), per_minute=3))
    try:
        codes = [
            post(server.url, "/v1/search", {"query": "kafka"}, TOKENS["sre"]).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        limited = post(server.url, "/v1/search", {"query": "kafka"}, TOKENS["sre"])
        assert int(limited.headers["retry-after"]) >= 1
        assert post(server.url, "/v1/search", {"query": "kafka"}, TOKENS["dba"]).status_code == 200
    finally:
        server.stop()


def test_a_new_generation_is_served_without_a_restart(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    doc = src / "a.md"
    doc.write_text("---\ntitle: Widget\naccess: [sre]\n---\n# Widget\n\nRestart the widget daemon.\n")
    path = tmp_path / "idx"
    RunbookIndex.build([src], path=path, embedder=HashEmbedder())
    index = RunbookIndex(path, settings=Settings(audit_key=KEY), embedder=HashEmbedder(), interface="http")
    server = Server(create_app(index, load_tokens(tokens_file(tmp_path / "t.json"))))
    try:
        first = post(server.url, "/v1/search", {"query": "widget"}, TOKENS["sre"]).json()["hits"][0]["text"]
        doc.write_text("---\ntitle: Widget\naccess: [sre]\n---\n# Widget\n\nDrain the widget queue first.\n")
        RunbookIndex.build([src], path=path, embedder=HashEmbedder())
        second = post(server.url, "/v1/search", {"query": "widget"}, TOKENS["sre"]).json()["hits"][0]["text"]
        assert "Restart" in first and "Drain" in second
    finally:
        server.stop()


def test_tokens_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("- {token_sha256: abc, user: u, groups: [sre]}\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: entry 1: token_sha256 must be 64 hex"):
        load_tokens(bad)
    bad.write_text("- {token: plain, user: u, groups: [sre]}\n")
    with pytest.raises(ConfigError, match="entry 1"):
        load_tokens(bad)


def ended_or_healthy(proc: subprocess.Popen[bytes], url: str) -> bool:
    if proc.poll() is not None:
        return True
    try:
        return httpx.get(url + "/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def start_service(index: Path, tokens: Path, log: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``runbook-rag serve`` as its own process, once it answers /healthz.

    The port is free when chosen, but another process may bind it before the service does:
    a service that exits before it answers is started again on another port.
    """
    exe = str(Path(sys.executable).with_name("runbook-rag"))
    stderr = log.with_name(log.name + ".stderr")
    for _ in range(3):
        port = free_port()
        command = [exe, "serve", "--index", str(index), "--tokens", str(tokens), "--port", str(port)]
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [*command, "--audit-log", str(log), *args],
                env={**os.environ, "RUNBOOK_RAG_AUDIT_KEY": KEY},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(functools.partial(ended_or_healthy, proc, url), "the service to answer /healthz")
        except AssertionError:
            proc.kill()
            proc.wait()
            raise
        if proc.poll() is None:
            return proc, url
        proc.wait()
    raise AssertionError(f"the service exited before it answered: {stderr.read_text()[-2000:]}")


def test_killed_mid_load_and_restarted_the_audit_log_verifies(
    tmp_path: Path, sample_index_path: Path
) -> None:
    log = tmp_path / "audit.log"
    tokens = tokens_file(tmp_path / "tokens.json")

    def start() -> tuple[subprocess.Popen[bytes], str]:
        return start_service(sample_index_path, tokens, log)

    def load(url: str, n: int) -> None:
        def one(i: int) -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server is being killed
                post(url, "/v1/search", {"query": f"kafka consumer lag {i}"}, TOKENS["sre"])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(n)))

    proc, url = start()
    loader = threading.Thread(target=load, args=(url, 400))
    loader.start()
    try:  # until the load is under way: records are being written
        wait_until(lambda: log.exists() and log.read_bytes().count(b"\n") >= 20, "20 audit records")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        join(loader, "the load against the killed service")
    before = verify(log, key=KEY.encode())
    assert before.ok and before.records > 0
    proc, url = start()
    try:
        load(url, 20)
    finally:
        proc.terminate()
        wait_exit(proc, "the service, terminated,")
    after = verify(log, key=KEY.encode())
    assert after.ok and after.records >= before.records + 20


def test_an_unwritable_audit_trail_is_503_and_no_answer(
    tmp_path: Path, sample_index_path: Path, model
) -> None:
    (tmp_path / "blocked.log").mkdir()
    index = RunbookIndex(
        sample_index_path,
        settings=Settings(audit_log=tmp_path / "blocked.log", audit_key=KEY),
        embedder=model,
        interface="http",
    )
    server = Server(create_app(index, load_tokens(tokens_file(tmp_path / "t.json"))))
    try:
        for path, body in (("/v1/search", {"query": FAILOVER}), ("/v1/ask", {"question": FAILOVER})):
            got = post(server.url, path, body, TOKENS["dba"])
            assert got.status_code == 503 and got.json() == {
                "error": {"code": "unavailable", "message": "the service cannot answer now"}
            }
    finally:
        server.stop()


def read_reply(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (WAIT s bounds a hang)."""
    sock.settimeout(WAIT)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def request_head(framing: str, authorization: str | None, path: str = "/v1/search") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: runbooks\r\nContent-Type: application/json\r\n{framing}\r\n"
    if authorization:
        head += f"Authorization: {authorization}\r\n"
    return (head + "\r\n").encode()


@pytest.mark.parametrize("authorization", [None, "Bearer tok-unknown-7", "Basic dG9rLXNyZS0xOg==", "Bearer"])
@pytest.mark.parametrize("framing", ["Transfer-Encoding: chunked", "Content-Length: 900"])
def test_a_body_is_not_read_before_its_token_is_known(
    service, authorization: str | None, framing: str
) -> None:
    url, _ = service
    for path in ("/v1/search", "/v1/ask", "/v1/unknown"):
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=WAIT) as sock:
            # Headers only: the server answers without waiting for a body it will not read.
            sock.sendall(request_head(framing, authorization, path))
            reply = read_reply(sock)
        assert reply.startswith(b"HTTP/1.1 401 "), reply[:80]
        assert b"connection: close" in reply.lower() and b'"unauthorized"' in reply


def test_a_body_over_the_limit_is_refused_as_it_streams(service) -> None:
    url, _ = service
    bearer = f"Bearer {TOKENS['sre']}"
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=WAIT) as sock:
        sock.sendall(request_head("Content-Length: 16385", bearer))  # announced: refused unread
        assert read_reply(sock).startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=WAIT) as sock:
        sock.sendall(request_head("Transfer-Encoding: chunked", bearer))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(8):  # 32 KiB in 4 KiB chunks: the server stops reading after 16 KiB
                sock.sendall(b"1000\r\n" + b"a" * 4096 + b"\r\n")
        reply = read_reply(sock)
    assert reply == b"" or reply.startswith(b"HTTP/1.1 413 ")
    small = post(url, "/v1/search", {"query": "kafka lag"}, TOKENS["sre"])
    assert small.status_code == 200


def peak_rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


def send_big_body(port: int, framing: str, authorization: str | None, size: int) -> bytes:
    """Stream ``size`` bytes of body until the server closes; what it answered, if anything."""
    piece = b"x" * 65536
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request_head(framing, authorization))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(size // len(piece)):
                sock.sendall(b"10000\r\n" + piece + b"\r\n" if "chunked" in framing else piece)
        return read_reply(sock)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
def test_oversized_bodies_leave_the_servers_peak_memory_flat(tmp_path: Path, sample_index_path: Path) -> None:
    tokens = tokens_file(tmp_path / "tokens.json")
    proc, url = start_service(sample_index_path, tokens, tmp_path / "audit.log")
    try:
        for _ in range(3):  # settle: the first queries load the encoder and filters
            assert post(url, "/v1/search", {"query": FAILOVER}, TOKENS["sre"]).status_code == 200
        before = peak_rss(proc.pid)
        size = 64 * 1024 * 1024
        for authorization in (f"Bearer {TOKENS['sre']}", None):
            for framing in ("Transfer-Encoding: chunked", f"Content-Length: {size}"):
                reply = send_big_body(port_of(url), framing, authorization, size)
                assert reply == b"" or reply.startswith((b"HTTP/1.1 413 ", b"HTTP/1.1 401 ")), reply[:60]
        grown = peak_rss(proc.pid) - before
        assert grown < 8 * 1024 * 1024, f"peak memory grew by {grown / 2**20:.1f} MiB"
        assert post(url, "/v1/search", {"query": FAILOVER}, TOKENS["sre"]).status_code == 200
    finally:
        proc.terminate()
        wait_exit(proc, "the service, terminated,")


def test_half_open_and_slow_clients_are_disconnected_and_others_served(
    tmp_path: Path, sample_index_path: Path, model
) -> None:
    index = RunbookIndex(
        sample_index_path, settings=Settings(audit_log=tmp_path / "a.log", audit_key=KEY), embedder=model
    )
    app = create_app(index, load_tokens(tokens_file(tmp_path / "t.json")))
    server = Server(app, request_timeout=3.0, max_connections=16, max_connections_per_client=8)
    port, body = server.port, {"query": "kafka consumer lag"}
    bearer = {"Authorization": f"Bearer {TOKENS['sre']}"}
    try:
        with contextlib.ExitStack() as opened:
            flood = []
            for _ in range(30):  # never finish their headers
                sock = opened.enter_context(socket.create_connection(("127.0.0.1", port), timeout=WAIT))
                sock.sendall(b"POST /v1/search HTTP/1.1\r\nHost: runbooks\r\nContent-Le")
                flood.append(sock)
            # The flood holds its address's share; a caller from another address is served.
            other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=WAIT)
            with other:
                assert other.post(server.url + "/v1/search", json=body, headers=bearer).status_code == 200
            replies = [read_reply(sock) for sock in flood]
        refused = sum(r.startswith(b"HTTP/1.1 503 ") for r in replies)
        timed_out = sum(r.startswith(b"HTTP/1.1 408 ") for r in replies)
        assert refused + timed_out == 30 and refused >= 1 and timed_out >= 1

        # A client that trickles its headers is closed all the same: bytes do not extend the deadline.
        # At five bytes a second at most, its head would take more than WAIT s to arrive in full.
        padding = "X-Padding: " + "p" * int(WAIT / 0.2)
        head = request_head(f"Content-Length: 2\r\n{padding}", bearer["Authorization"])
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.settimeout(0.2)
            sent, reply = 0, None
            while reply is None and sent < len(head):
                sock.sendall(head[sent : sent + 1])
                sent += 1
                try:
                    reply = sock.recv(1024)  # waits for the close, 0.2 s at a time
                except TimeoutError:
                    continue
            assert sent < len(head) and reply is not None and reply.startswith(b"HTTP/1.1 408 ")

        # A body that stops halfway is closed too, and the connection's slot is freed.
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(request_head("Content-Length: 100", bearer["Authorization"]) + b'{"query": ')
            assert not read_reply(sock).startswith(b"HTTP/1.1 200")
        assert post(server.url, "/v1/search", body, **bearer).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    "endpoints", [["metrics", "search"], ["ask", "metrics"], ["search", "metrics", "ask"]]
)
def test_a_token_that_may_query_and_read_metrics_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], endpoints: list[str]
) -> None:
    path = tmp_path / "tokens.yaml"
    entries = [
        {
            "token_sha256": token_digest("tok-prom-2"),
            "user": "prometheus",
            "groups": ["m"],
            "endpoints": ["metrics"],
        },
        {
            "token_sha256": token_digest("tok-mixed"),
            "user": "grafana-bot",
            "groups": ["sre"],
            "endpoints": endpoints,
        },
    ]
    path.write_text(json.dumps(entries))
    with pytest.raises(ConfigError, match=r"tokens\.yaml: entry 2: the token of user 'grafana-bot' combines"):
        load_tokens(path)
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--index", str(tmp_path / "no-index"), "--tokens", str(path)])
    assert stopped.value.code == 2
    assert "grafana-bot" in capsys.readouterr().err


def served_from_127(url: str, body: dict[str, Any], bearer: dict[str, str]) -> int:
    """Poll until a request from 127.0.0.1 is served (slots freed), up to 60 s; its status."""
    deadline = time.monotonic() + 60
    status = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.post(url + "/v1/search", json=body, headers=bearer, timeout=30).status_code
            if status == 200:
                return status
        time.sleep(0.1)
    return status


def test_upgrades_and_clients_that_stop_reading_give_their_slots_back(
    tmp_path: Path, sample_index_path: Path, model
) -> None:
    index = RunbookIndex(
        sample_index_path, settings=Settings(audit_log=tmp_path / "a.log", audit_key=KEY), embedder=model
    )
    app = create_app(index, load_tokens(tokens_file(tmp_path / "t.json")))
    server = Server(app, request_timeout=2.0, max_connections_per_client=2)
    body, bearer = {"query": "kafka consumer lag"}, {"Authorization": f"Bearer {TOKENS['sre']}"}
    try:
        for key in ("dGhlIHNhbXBsZSBub25jZQ==", "x3JJHMbDL1EzLkh9GBhXDw=="):
            for path in ("/v1/search", "/healthz", "/ws"):
                with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                    sock.sendall(
                        f"GET {path} HTTP/1.1\r\nHost: runbooks\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
                    )
                    assert not sock.recv(4096).startswith(b"HTTP/1.1 101")
        assert served_from_127(server.url, body, bearer) == 200

        # Two clients that ask for many responses and never read them hold both of the
        # address's slots, until they have stopped reading for the request timeout.
        stalled = []
        for _ in range(2):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: runbooks\r\n\r\n" * 3000)
            stalled.append(sock)
        assert served_from_127(server.url, body, bearer) == 200
        for sock in stalled:
            sock.close()
    finally:
        server.stop()


def test_a_body_for_an_endpoint_the_token_may_not_call_or_with_two_tokens_is_not_read(service) -> None:
    url, _ = service
    for authorization, status in (
        (f"Bearer {TOKENS['metrics']}", b"403"),  # a metrics token posting to /v1/search
        (f"Bearer {TOKENS['search-only']}\r\nAuthorization: Bearer {TOKENS['sre']}", b"400"),
        (f"Bearer tok-unknown\r\nAuthorization: Bearer {TOKENS['sre']}", b"400"),
    ):
        with socket.create_connection(("127.0.0.1", port_of(url)), timeout=30) as sock:
            sock.sendall(request_head("Content-Length: 900", authorization))
            assert read_reply(sock).startswith(b"HTTP/1.1 " + status + b" ")
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=30) as sock:
        sock.sendall(request_head("Content-Length: 900", f"Bearer {TOKENS['search-only']}", "/v1/ask"))
        assert read_reply(sock).startswith(b"HTTP/1.1 403 ")


def test_tokens_files_with_a_repeated_token_or_a_user_with_metrics_and_query_tokens_are_refused(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    base = {"user": "bot", "groups": ["sre"]}
    path.write_text(
        json.dumps(
            [
                {**base, "token_sha256": token_digest("tok-a")},
                {**base, "token_sha256": token_digest("tok-a").upper()},
            ]
        )
    )
    with pytest.raises(ConfigError, match="entry 2: the same token as another entry"):
        load_tokens(path)
    path.write_text(
        json.dumps(
            [
                {**base, "token_sha256": token_digest("tok-a"), "endpoints": ["ask"]},
                {**base, "token_sha256": token_digest("tok-b"), "endpoints": ["metrics"]},
            ]
        )
    )
    with pytest.raises(ConfigError, match="entry 2: user 'bot' holds tokens for metrics and for ask"):
        load_tokens(path)
