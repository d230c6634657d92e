"""OpenTelemetry traces: spans of queries, model calls and service requests, with the SDK's
in-memory exporter; nothing when tracing is not asked for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from runbook_rag import Principal, RunbookIndex, tracing
from runbook_rag.service import create_app, load_tokens
from runbook_rag.settings import Settings

from .openai_server import FakeOpenAI
from .test_service import KEY, TOKENS, Server, tokens_file
from .waiting import WAIT

ROOT = Path(__file__).resolve().parent.parent
DBA = Principal("dee", frozenset({"dba", "secret-group-name"}))
QUESTION = "postgres primary is down, how do I fail over?"
PAN = "4111 1111 1111 1111"


@pytest.fixture()
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer_provider(provider)
    yield exporter
    tracing.use_tracer_provider(None)
    provider.shutdown()


def by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in finished}


def children(finished: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[str]:
    return [s.name for s in finished if s.parent is not None and s.parent.span_id == parent.context.span_id]


def every_value(finished: tuple[ReadableSpan, ...]) -> str:
    return json.dumps([dict(s.attributes or {}) for s in finished], default=str)


def index_at(path: Path, tmp_path: Path, **settings: Any) -> RunbookIndex:
    return RunbookIndex(path, settings=Settings(audit_log=tmp_path / "audit.log", **settings))


@pytest.mark.slow
def test_a_search_is_a_span_with_a_retrieve_child(spans, sample_index_path: Path, tmp_path: Path) -> None:
    index = index_at(sample_index_path, tmp_path)
    hits = index.search(f"{QUESTION} card {PAN}", principal=DBA)
    finished = spans.get_finished_spans()
    named = by_name(finished)
    root = named["runbook_rag search"]
    assert root.parent is None and children(finished, root) == ["retrieve"]
    attrs = dict(root.attributes or {})
    assert attrs["enduser.id"] == "dee" and attrs["runbook_rag.action"] == "search"
    assert attrs["runbook_rag.results"] == len(hits) and attrs["runbook_rag.generation"].startswith("gen-")
    assert PAN not in every_value(finished) and "fail over" in attrs["runbook_rag.query"]
    # Groups are never in a trace, nor any passage's text.
    assert "secret-group-name" not in every_value(finished) and "dba" not in every_value(finished)
    assert not any(hit.text[:40] in every_value(finished) for hit in hits)


@pytest.mark.slow
def test_no_query_text_where_the_audit_trail_keeps_only_its_hmac(
    spans, sample_index_path: Path, tmp_path: Path
) -> None:
    index = index_at(sample_index_path, tmp_path, audit_keep_query_text=False)
    index.search(QUESTION, principal=DBA)
    assert "runbook_rag.query" not in dict(
        by_name(spans.get_finished_spans())["runbook_rag search"].attributes or {}
    )


@pytest.mark.slow
def test_an_answer_through_a_model_has_prompt_chat_and_validate_spans(
    spans, sample_index_path: Path, tmp_path: Path
) -> None:
    server = FakeOpenAI()
    try:
        index = index_at(
            sample_index_path, tmp_path, llm_base_url=server.base_url, llm_model="good", llm_timeout=WAIT
        )
        answer = index.answer(QUESTION, principal=DBA)
    finally:
        server.close()
    assert answer.mode == "llm"
    finished = spans.get_finished_spans()
    named = by_name(finished)
    root = named["runbook_rag ask"]
    assert children(finished, root) == ["retrieve", "prompt", "chat good", "validate"]
    chat = dict(named["chat good"].attributes or {})
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.request.model"] == "good"
    assert chat["gen_ai.response.model"] == "good" and tuple(chat["gen_ai.response.finish_reasons"]) == (
        "stop",
    )
    assert (chat["gen_ai.usage.input_tokens"], chat["gen_ai.usage.output_tokens"]) == (321, 42)
    assert named["chat good"].kind.name == "CLIENT"
    assert dict(root.attributes or {})["runbook_rag.answer_mode"] == "llm"
    assert answer.text not in every_value(finished)


@pytest.mark.slow
def test_a_failing_model_call_is_a_failed_span_with_its_reason(
    spans, sample_index_path: Path, tmp_path: Path
) -> None:
    server = FakeOpenAI()
    try:
        index = index_at(
            sample_index_path, tmp_path, llm_base_url=server.base_url, llm_model="error", llm_retries=0
        )
        answer = index.answer(QUESTION, principal=DBA)
    finally:
        server.close()
    assert answer.fallback_reason == "llm_error"
    chat = by_name(spans.get_finished_spans())["chat error"]
    assert (
        chat.status.status_code.name == "ERROR" and dict(chat.attributes or {})["error.type"] == "llm_error"
    )


@pytest.mark.slow
def test_eval_queries_are_spans(spans, sample_index_path: Path, tmp_path: Path) -> None:
    from runbook_rag.evaluation import EvalQuery

    index = index_at(sample_index_path, tmp_path)
    index.evaluate([EvalQuery(id="q", query=QUESTION, relevant=[], groups=["dba"])])
    names = [s.name for s in spans.get_finished_spans()]
    assert names.count("runbook_rag eval") == 2 and names.count("retrieve") == 2


@pytest.mark.slow
def test_a_service_request_is_the_parent_of_its_query(spans, sample_index_path: Path, tmp_path: Path) -> None:
    index = RunbookIndex(
        sample_index_path, settings=Settings(audit_log=tmp_path / "a.log", audit_key=KEY), interface="http"
    )
    server = Server(create_app(index, load_tokens(tokens_file(tmp_path / "tokens.json"))))
    try:
        reply = httpx.post(
            f"{server.url}/v1/search",
            json={"query": QUESTION},
            headers={"Authorization": f"Bearer {TOKENS['dba']}"},
            timeout=WAIT,
        )
    finally:
        server.stop()
    assert reply.status_code == 200
    finished = spans.get_finished_spans()
    named = by_name(finished)
    request = named["POST /v1/search"]
    assert request.kind.name == "SERVER" and request.parent is None
    assert dict(request.attributes or {})["http.response.status_code"] == 200
    assert children(finished, request) == ["runbook_rag search"]
    assert dict(named["runbook_rag search"].attributes or {})["runbook_rag.interface"] == "http"


def test_without_a_provider_or_settings_spans_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    tracing.use_tracer_provider(None)
    assert not tracing.is_on()
    with tracing.span("x", {"a": 1}) as span:
        span.set_attribute("b", 2)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    assert not tracing.is_on()


def test_without_opentelemetry_installed_nothing_breaks(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing any of them now fails
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    tracing.use_tracer_provider(None)
    assert not tracing.is_on()
    with tracing.span("x") as span:
        span.set_attribute("a", 1)


@pytest.mark.slow
def test_the_standard_environment_variables_turn_tracing_on(sample_index_path: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "runbook-search",
        "RUNBOOK_RAG_AUDIT_LOG": str(tmp_path / "audit.log"),
        "PYTHONPATH": str(ROOT),
    }
    args = [
        "search",
        QUESTION,
        "--user",
        "dee",
        "--group",
        "dba",
        "--index",
        str(sample_index_path),
        "--json",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "runbook_rag", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "runbook_rag search"' in done.stdout and '"name": "retrieve"' in done.stdout
    assert '"service.name": "runbook-search"' in done.stdout
    plain = subprocess.run(
        [sys.executable, "-m", "runbook_rag", *args],
        env={k: v for k, v in env.items() if not k.startswith("OTEL_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert plain.returncode == 0 and '"name": "runbook_rag search"' not in plain.stdout
    assert json.loads(plain.stdout)["hits"]
