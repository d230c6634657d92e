"""Measuring a model's answers on a known query set: citation validity, support per
sentence, fallbacks by reason, abstention agreement, must_include recall, tokens, cost and
latency. End to end against the fake OpenAI server (tests/openai_server.py) with scripted
good, unsupported and hallucinating replies, over the sample index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runbook_rag import Principal, RunbookIndex
from runbook_rag.evaluation import EvalQuery, ModelOutcome, QueryResult, load_queries, model_metrics
from runbook_rag.settings import Settings
from runbook_rag.support import SentenceSupport

from .openai_server import INVENTED_HOST, USAGE, FakeOpenAI
from .test_cli import run
from .waiting import WAIT

# The "scripted" model answers each of these as the scenario its subject picks (SCRIPT).
LINES = [
    {
        "id": "pg",  # unsupported-number: a quoted sentence, then one with a number of its own
        "query": "postgres primary is down, how do I fail over?",
        "relevant": ["platform/postgres-primary-failover.md"],
        "groups": ["dba"],
        "must_include": ["Cluster  State", "patronictl"],
    },
    {
        "id": "redis",  # paraphrase-good: a quoted sentence, reworded
        "query": "redis session cache is evicting keys, memory is full",
        "relevant": ["platform/redis-memory-pressure.md"],
        "groups": ["sre"],
    },
    {
        "id": "kafka",  # hallucinate: cites a block the prompt never had, twice: falls back
        "query": "a kafka broker of ledger-kafka is down",
        "relevant": ["platform/kafka-broker-down.md"],
        "groups": ["sre"],
    },
    {
        "id": "acq",  # unsupported-host: a quoted sentence, then one naming an invented host
        "query": "acquirer timeouts, how do I fail over to the other acquirer?",
        "relevant": ["payments/psp-acquirer-timeout-failover.md"],
        "groups": ["payments-oncall"],
    },
    {
        "id": "refund",  # malformed: no JSON, twice: falls back, and no citation was invalid
        "query": "refund stuck in PENDING for hours",
        "relevant": ["payments/refund-processing-stuck.md"],
        "groups": ["payments-oncall"],
        "must_include": ["RefundPendingAgeHigh"],
    },
    {
        "id": "none",  # nothing relevant: abstains without asking the model
        "query": "how do I book a meeting room for the team offsite?",
        "relevant": [],
        "groups": ["sre"],
    },
]
ISSUE_KEYS = {
    "support_rate",
    "invalid_citation_rate",
    "ungrounded_command_rate",
    "fallback_rate",
    "abstention_agreement",
    "must_include_recall",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "latency_ms_p50",
    "latency_ms_p95",
}
PRICES = {"prompt": 1.0, "completion": 2.0}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture()
def queries(tmp_path: Path) -> Path:
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in LINES), encoding="utf-8")
    return path


def model_index(path: Path, server: FakeOpenAI, model: str) -> RunbookIndex:
    settings = Settings(
        llm_base_url=server.base_url,
        llm_model=model,
        llm_retries=1,
        llm_timeout=WAIT,
        llm_prices={model: PRICES},
    )
    return RunbookIndex(path, settings=settings)


@pytest.mark.slow
def test_scripted_replies_give_exact_rates(
    server: FakeOpenAI, sample_index_path: Path, queries: Path
) -> None:
    report = model_index(sample_index_path, server, "scripted").evaluate(load_queries(queries))
    llm = report.metrics["llm"]
    calls = 1 + 1 + 2 + 1 + 2  # the two invalid replies were each asked again; "none" never asked
    assert {k: llm[k] for k in llm if k not in ("latency_ms_p50", "latency_ms_p95", "latency_ms_total")} == {
        "answers": 6,
        "model_answers": 3,
        "not_asked": 1,
        "fallback_rate": 0.3333,
        "fallback_by_reason": {"invalid_output": 0.3333},
        "ungrounded_command_rate": 0.0,
        "ungrounded_commands": 0,
        "invalid_citation_rate": 0.2,  # kafka, of the 5 answers the model replied to
        "invalid_citation_replies": 2,
        "support_rate": 0.6,  # pg 1 of 2, redis 1 of 1, acq 1 of 2
        "sentences": 5,
        "unsupported_sentences": 2,
        "unsupported_answer_rate": 0.6667,
        "abstention_agreement": 1.0,
        "must_include_recall": 0.6667,  # "patronictl" is not in the pg answer
        "prompt_tokens": calls * USAGE["prompt_tokens"],
        "completion_tokens": calls * USAGE["completion_tokens"],
        "cost": round(
            (calls * USAGE["prompt_tokens"] * 1.0 + calls * USAGE["completion_tokens"] * 2.0) / 1e6, 6
        ),
        "prompt_tokens_per_answer": round(calls * USAGE["prompt_tokens"] / 6, 1),
        "completion_tokens_per_answer": round(calls * USAGE["completion_tokens"] / 6, 1),
        "cost_per_answer": round(
            (calls * USAGE["prompt_tokens"] + calls * USAGE["completion_tokens"] * 2) / 6e6, 6
        ),
        "stage_ms_p50": llm["stage_ms_p50"],
    }
    assert set(llm["stage_ms_p50"]) == {"retrieve", "prompt", "llm", "validate"}
    assert 0 < llm["latency_ms_p50"] <= llm["latency_ms_p95"] <= llm["latency_ms_total"]
    outcomes = {r.id: r.model for r in report.results}
    pg, acq = outcomes["pg"], outcomes["acq"]
    assert pg is not None and acq is not None
    assert [s.supported for s in pg.sentences] == [True, False] and pg.sentences[1].reason == "specific"
    assert acq.sentences[1].missing == (INVENTED_HOST,)
    assert outcomes["kafka"] is not None and outcomes["kafka"].rejected == ("citation", "citation")
    assert outcomes["refund"] is not None and outcomes["refund"].rejected == ("format", "format")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (
            "paraphrase-good",
            {"support_rate": 1.0, "unsupported_answer_rate": 0.0, "invalid_citation_rate": 0.0},
        ),
        ("unsupported-number", {"support_rate": 0.5, "unsupported_answer_rate": 1.0, "fallback_rate": 0.0}),
        ("unsupported-host", {"support_rate": 0.5, "unsupported_answer_rate": 1.0, "fallback_rate": 0.0}),
        ("unsupported", {"support_rate": 0.5, "unsupported_answer_rate": 1.0, "invalid_citation_rate": 0.0}),
        (
            "hallucinate",
            {
                "support_rate": None,
                "invalid_citation_rate": 1.0,
                "fallback_by_reason": {"invalid_output": 0.8333},
            },
        ),
        ("malformed", {"invalid_citation_rate": 0.0, "fallback_rate": 0.8333, "invalid_citation_replies": 0}),
    ],
)
def test_each_scenario_alone(
    server: FakeOpenAI, sample_index_path: Path, queries: Path, scenario: str, expected: dict[str, Any]
) -> None:
    llm = model_index(sample_index_path, server, scenario).evaluate(load_queries(queries)).metrics["llm"]
    assert {k: llm[k] for k in expected} == expected
    assert llm["abstention_agreement"] == 1.0


@pytest.mark.slow
def test_a_citation_corrected_on_the_retry_counts_as_a_reply_only(
    server: FakeOpenAI, sample_index_path: Path, queries: Path
) -> None:
    # "hallucinate-once" cites a missing block in the first reply the server ever sends for it.
    llm = (
        model_index(sample_index_path, server, "hallucinate-once")
        .evaluate(load_queries(queries))
        .metrics["llm"]
    )
    assert (llm["invalid_citation_rate"], llm["invalid_citation_replies"], llm["fallback_rate"]) == (
        0.0,
        1,
        0.0,
    )


@pytest.mark.slow
def test_the_answer_records_which_check_refused_each_reply(
    server: FakeOpenAI, sample_index_path: Path
) -> None:
    dba = Principal("dee", frozenset({"dba"}))
    question = "postgres primary is down, how do I fail over?"
    for model, rejected in [("hallucinate", ("citation", "citation")), ("malformed", ("format", "format"))]:
        answer = model_index(sample_index_path, server, model).answer(question, principal=dba)
        assert answer.usage is not None and answer.usage.rejected == rejected
    good = model_index(sample_index_path, server, "good").answer(question, principal=dba)
    assert good.usage is not None and good.usage.rejected == ()


@pytest.mark.slow
def test_eval_cli_json_per_query_and_table(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    server: FakeOpenAI,
    sample_index_path: Path,
    queries: Path,
) -> None:
    monkeypatch.setenv("RUNBOOK_RAG_LLM_PRICES", json.dumps({"scripted": PRICES}))
    base = ["eval", str(queries), "--index", str(sample_index_path), "--llm-base-url", server.base_url]
    code, out, _ = run(capsys, *base, "--llm-model", "scripted", "--json", "--per-query")
    report = json.loads(out)
    assert code == 0 and set(report["llm"]) >= ISSUE_KEYS
    assert {"answers", "model_answers", "ungrounded_commands"} <= set(report["llm"])  # kept
    assert report["llm"]["support_rate"] == 0.6 and report["llm"]["invalid_citation_rate"] == 0.2
    detail = {r["id"]: r["llm"] for r in report["results"]}
    assert detail["pg"]["must_include_missing"] == ["patronictl"]
    assert detail["pg"]["support_rate"] == 0.5 and detail["pg"]["mode"] == "llm"
    assert [s["supported"] for s in detail["acq"]["sentences"]] == [True, False]
    assert detail["acq"]["sentences"][1]["missing"] == [INVENTED_HOST]
    assert (detail["kafka"]["fallback_reason"], detail["kafka"]["invalid_citation"]) == (
        "invalid_output",
        True,
    )
    assert detail["kafka"]["rejected_replies"] == ["citation", "citation"]
    assert detail["none"]["abstained"] and detail["none"]["prompt_tokens"] is None
    assert detail["redis"]["prompt_tokens"] == USAGE["prompt_tokens"] and detail["redis"]["latency_ms"] > 0
    code, out, _ = run(capsys, *base, "--llm-model", "scripted")
    table = out.split("model answers\n", 1)
    assert code == 0 and len(table) == 2
    rows = dict(line.split(None, 1) for line in table[1].splitlines())
    assert rows["support_rate"] == "0.6" and rows["fallback_by_reason"] == "invalid_output 0.3333"
    assert float(rows["cost"]) > 0 and "{" not in out


def test_must_include_is_an_optional_list_of_strings(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    lines = [
        {"id": "a", "query": "q", "relevant": [], "must_include": ["x", "y"]},
        {"id": "b", "query": "q", "relevant": []},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert [q.must_include for q in load_queries(path)] == [["x", "y"], []]


def outcome(**fields: Any) -> ModelOutcome:
    defaults: dict[str, Any] = {"answered_by_model": True, "fallback_reason": None, "ungrounded_commands": 0}
    return ModelOutcome(**{**defaults, "asked": True, "replied": True, **fields})


def sentence(supported: bool) -> SentenceSupport:
    return SentenceSupport("s", (1,), "own", supported, 1.0 if supported else 0.0, (), "supported")


def result(id_: str, relevant: tuple[str, ...], model: ModelOutcome) -> QueryResult:
    return QueryResult(id_, None, relevant, (), (), False, (), 0.0, model)


def test_model_metrics_from_outcomes() -> None:
    results = [
        result(
            "a",
            ("x.md",),
            outcome(sentences=(sentence(True), sentence(False)), prompt_tokens=10, latency_ms=10),
        ),
        result("b", ("x.md",), outcome(sentences=(sentence(True),), must_include=("k", "l"), missing=("l",))),
        result(
            "c",
            ("x.md",),
            outcome(answered_by_model=False, fallback_reason="timeout", replied=False, latency_ms=30),
        ),
        result(
            "d",
            (),
            outcome(
                answered_by_model=False,
                fallback_reason="invalid_output",
                invalid_citation=True,
                rejected=("citation", "format"),
                cost=0.5,
            ),
        ),
        result("e", (), outcome(answered_by_model=False, abstained=True, asked=False, replied=False)),
    ]
    llm = model_metrics(results)
    assert llm["fallback_by_reason"] == {"invalid_output": 0.2, "timeout": 0.2}
    assert (llm["fallback_rate"], llm["not_asked"], llm["model_answers"]) == (0.4, 1, 2)
    assert llm["invalid_citation_rate"] == 0.3333  # of the 3 answers the model replied to
    assert llm["invalid_citation_replies"] == 1
    assert (llm["support_rate"], llm["sentences"], llm["unsupported_answer_rate"]) == (0.6667, 3, 0.5)
    assert llm["abstention_agreement"] == 0.8  # "d" should have abstained
    assert llm["must_include_recall"] == 0.5
    assert (llm["prompt_tokens"], llm["completion_tokens"], llm["cost"]) == (10, None, 0.5)
    assert (llm["latency_ms_p50"], llm["latency_ms_total"]) == (0.0, 40.0)


def test_nothing_listed_means_no_recall() -> None:
    llm = model_metrics([result("a", ("x.md",), outcome())])
    assert (llm["must_include_recall"], llm["support_rate"], llm["cost"]) == (None, None, None)
    assert EvalQuery(id="a", query="q", relevant=[]).must_include == []
