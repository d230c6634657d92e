"""Query files and metric arithmetic of the evaluation (the end-to-end runs are in test_retrieval)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from runbook_rag.errors import ConfigError
from runbook_rag.evaluation import (
    EvalQuery,
    EvalReport,
    QueryResult,
    evaluate,
    load_queries,
    metrics,
    report_table,
)
from runbook_rag.records import Hit, Principal


def result(qid: str, relevant: list[str], ranked: list[str], **kw: object) -> QueryResult:
    fields: dict[str, object] = {"kind": None, "cited": (), "abstained": False, "leaked": (), "seconds": 0.01}
    fields.update(kw)
    return QueryResult(qid, relevant=tuple(relevant), ranked=tuple(ranked), **fields)  # type: ignore[arg-type]


def test_load_queries_reads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(
        '{"id": "a", "query": "pods restarting", "relevant": ["x.md"]}\n\n'
        '{"id": "b", "query": "coffee", "relevant": [], "forbidden": ["y.md"], '
        '"groups": ["sre"], "kind": "u"}\n'
    )
    a, b = load_queries(path)
    assert (a.id, a.relevant, a.groups, a.forbidden) == ("a", ["x.md"], None, [])
    assert (b.relevant, b.forbidden, b.groups, b.kind) == ([], ["y.md"], ["sre"], "u")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            '{"id": "a", "query": "q", "relevant": []}\n{"id": "a", "query": "q", "relevant": []}',
            ":2: duplicate",
        ),
        ('{"id": "a", "query": "q"}', ":1: relevant: Field required"),
        ('{"id": "a", "query": "q", "relevant": [], "forbiden": ["x"]}', ":1: forbiden: Extra inputs"),
        ('{"id": "a", "query": "q", "relevant": []}\nnot json', ":2: "),
        ("", "has no queries"),
    ],
)
def test_a_bad_query_file_names_the_file_and_line(tmp_path: Path, lines: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(lines)
    with pytest.raises(ConfigError, match=message) as err:
        load_queries(path)
    assert str(path) in str(err.value)


def test_document_level_metrics() -> None:
    results = [
        result("hit-first", ["a.md"], ["a.md", "b.md"]),
        result("hit-third", ["a.md"], ["c.md", "d.md", "a.md"]),
        result("two-relevant", ["a.md", "b.md"], ["a.md", "c.md", "b.md"]),
        result("miss", ["a.md"], ["c.md"] * 1),
    ]
    m = metrics(results)
    assert m["recall@1"] == pytest.approx((1 + 0 + 1 + 0) / 4, abs=1e-4)
    assert m["recall@5"] == pytest.approx((1 + 1 + 1 + 0) / 4, abs=1e-4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3 + 1 + 0) / 4, abs=1e-4)
    ndcg_two = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4) + ndcg_two + 0) / 4, abs=1e-4)
    assert m["leaks"] == 0 and m["answerable"] == 4


def test_abstention_and_leak_metrics() -> None:
    results = [
        result("ok", ["a.md"], ["a.md"]),
        result("false-abstain", ["a.md"], ["a.md"], abstained=True),
        result("right-abstain", [], ["z.md"], abstained=True),
        result("missed-abstain", [], ["z.md"]),
        result("leaky", [], ["secret.md"], leaked=("secret.md",)),
    ]
    m = metrics(results)
    assert m["abstention_precision"] == 0.5  # 2 abstained, 1 of them rightly
    assert m["abstention_recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["answered"] == 0.5
    assert m["leaks"] == 1 and m["leaked_queries"] == ["leaky"]
    report = EvalReport(m, results)
    assert report.failures() == ["1 forbidden document(s) returned, in: leaky"]
    assert report.failures({"recall@1": 0.9})[1:] == []
    assert report.failures({"answered": 0.9})[1] == "answered 0.5 is below 0.9"
    with pytest.raises(ConfigError, match="unknown metric"):
        report.failures({"recall@3": 0.5})


def test_per_query_results_keep_the_query_count() -> None:
    results = [result("a", ["a.md"], ["b.md", "a.md"]), result("b", [], ["z.md"], abstained=True)]
    out = EvalReport(metrics(results), results).to_dict(per_query=True)
    assert out["queries"] == 2
    assert [(r["id"], r["first_relevant"], r["abstained"]) for r in out["results"]] == [
        ("a", 2, False),
        ("b", None, True),
    ]


def test_a_gate_on_an_unmeasurable_metric_fails() -> None:
    results = [result("a", ["a.md"], ["a.md"])]
    report = EvalReport(metrics(results), results)
    assert report.failures({"abstention_recall": 0.5}) == [
        "abstention_recall cannot be measured on this query file"
    ]


def test_repeated_relevant_sources_count_once(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "query": "q", "relevant": ["a.md", "a.md"]}\n')
    (query,) = load_queries(path)
    assert query.relevant == ["a.md"]


def test_first_citation_relevant_counts_answerable_queries_and_abstentions_as_misses() -> None:
    results = [
        result("cites-right", ["a.md"], ["a.md"], cited=("a.md", "b.md")),
        result("cites-wrong-first", ["a.md"], ["a.md"], cited=("b.md", "a.md")),
        result("abstained", ["a.md"], ["a.md"], abstained=True),
        result("unanswerable", [], ["z.md"], cited=("z.md",)),
    ]
    m = metrics(results)
    assert m["first_citation_relevant"] == pytest.approx(1 / 3, abs=1e-4)
    report = EvalReport(m, results)
    assert "first_citation_relevant" in report_table(report)
    assert report.failures({"first_citation_relevant": 0.5}) == [
        "first_citation_relevant 0.3333 is below 0.5"
    ]
    assert report.to_dict(per_query=True)["results"][1]["cited"] == ["b.md", "a.md"]


def _hit(source: str, heading: str, text: str, evidence: float) -> Hit:
    return Hit(
        f"{source}#{heading}", source, "T", ("T", heading), 1, 1, evidence, text, ("sre",), evidence=evidence
    )


def test_the_answer_is_made_from_the_passages_ask_would_use() -> None:
    queries = [EvalQuery(id="q", query="fail over", relevant=["a.md"], groups=["sre"])]
    documents = [
        _hit("b.md", "Steps", "Fail over to Meridian.", 0.6),
        _hit("a.md", "Steps", "Fail over.", 0.5),
    ]
    seen: list[Principal] = []

    def search(query: str, *, principal: Principal, k: int) -> list[Hit]:
        seen.append(principal)
        return documents

    def passages(query: str, *, principal: Principal) -> list[Hit]:
        seen.append(principal)
        return [_hit("a.md", "Steps", "Fail over to Northbank.", 0.7)]

    plain = evaluate(search, queries, abstain_below=0.33)
    assert plain.results[0].cited == ("b.md",) and plain.metrics["first_citation_relevant"] == 0.0
    real = evaluate(search, queries, abstain_below=0.33, passages=passages)
    assert real.results[0].cited == ("a.md",) and real.metrics["first_citation_relevant"] == 1.0
    assert real.results[0].ranked == ("b.md", "a.md")
    assert {p.groups for p in seen} == {frozenset({"sre"})}


def test_a_forbidden_source_among_the_passages_is_a_leak() -> None:
    queries = [EvalQuery(id="q", query="fail over", relevant=[], forbidden=["x.md"], groups=["sre"])]

    def search(query: str, *, principal: Principal, k: int) -> list[Hit]:
        return []

    def passages(query: str, *, principal: Principal) -> list[Hit]:
        return [_hit("x.md", "Steps", "Fail over.", 0.1)]

    assert evaluate(search, queries, abstain_below=0.33, passages=passages).metrics["leaks"] == 1
