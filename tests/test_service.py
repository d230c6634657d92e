"""The HTTP service: a real uvicorn server on 127.0.0.1 and a real HTTP client."""

from __future__ import annotations

import contextlib
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
from typing import Any

import httpx
import pytest
import uvicorn

from runbook_rag import RunbookIndex, Settings
from runbook_rag.audit import verify
from runbook_rag.errors import ConfigError
from runbook_rag.service import create_app, load_tokens, token_digest

from .conftest import HashEmbedder

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
    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


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
    return httpx.post(url + path, json=body, headers=headers, timeout=30)


def test_no_token_or_a_bad_token_is_401(service) -> None:
    url, _ = service
    for token in (None, "nope"):
        got = post(url, "/v1/search", {"query": "kafka"}, token)
        assert got.status_code == 401 and got.json()["error"]["code"] == "unauthorized"
        assert got.headers["www-authenticate"] == "Bearer"
    got = httpx.post(url + "/v1/ask", json={"question": "x"}, headers={"Authorization": "Basic abc"})
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
    assert httpx.get(url + "/healthz").json()["status"] == "ok"
    assert httpx.get(url + "/metrics").status_code == 401
    assert (
        httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKENS['sre']}"}).status_code == 403
    )
    metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKENS['metrics']}"}).text
    assert 'runbook_rag_requests_total{endpoint="/v1/search",outcome="200"}' in metrics
    assert "runbook_rag_request_seconds_bucket" in metrics
    assert "runbook_rag_withheld_candidates_total" in metrics
    assert "runbook_rag_index_generation_info{generation=" in metrics
    assert 'endpoint="/v1/nope"' not in metrics
    schema = httpx.get(url + "/openapi.json").json()
    assert {"/v1/search", "/v1/ask"} <= set(schema["paths"])


def test_requests_are_audited_and_the_log_verifies(service) -> None:
    url, log = service
    post(url, "/v1/search", {"query": "card 4111 1111 1111 1111 declined"}, TOKENS["sre"])
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and all(r["interface"] == "http" for r in records)
    assert records[-1]["principal"] == {"id": "sam", "groups": ["sre"]}
    assert "4111 1111 1111 1111" not in log.read_text()
    assert verify(log, key=KEY.encode()).ok


def test_rate_limit_per_token(tmp_path: Path, sample_index_path: Path, model) -> None:
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


def test_killed_mid_load_and_restarted_the_audit_log_verifies(
    tmp_path: Path, sample_index_path: Path
) -> None:
    log = tmp_path / "audit.log"
    tokens = tokens_file(tmp_path / "tokens.json")
    env = {**os.environ, "RUNBOOK_RAG_AUDIT_KEY": KEY}
    exe = str(Path(sys.executable).with_name("runbook-rag"))

    def start() -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        proc = subprocess.Popen(
            [
                exe,
                "serve",
                "--index",
                str(sample_index_path),
                "--tokens",
                str(tokens),
                "--port",
                str(port),
                "--audit-log",
                str(log),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                time.sleep(0.2)
        proc.kill()
        raise AssertionError("the service did not start")

    def load(url: str, n: int) -> None:
        def one(i: int) -> None:
            with contextlib.suppress(httpx.HTTPError):  # the server is being killed
                post(url, "/v1/search", {"query": f"kafka consumer lag {i}"}, TOKENS["sre"])

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, range(n)))

    proc, url = start()
    loader = threading.Thread(target=load, args=(url, 400))
    loader.start()
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    loader.join()
    before = verify(log, key=KEY.encode())
    assert before.ok and before.records > 0
    proc, url = start()
    try:
        load(url, 20)
    finally:
        proc.terminate()
        proc.wait(10)
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
