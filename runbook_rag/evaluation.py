"""Retrieval and abstention quality of an index, measured on a set of queries.

A query file has one JSON object per line::

    {"id": "q1", "query": "...", "relevant": ["payments/x.md"], "forbidden": ["y.md"], "groups": ["sre"]}

``relevant: []`` means the right behaviour is to abstain. ``forbidden`` sources must never
appear in results or citations (a leak). ``groups`` (and optionally ``user``) runs that line
as its own principal; lines without ``groups`` run as the evaluating principal. Metrics are
at document level: a query's ranking is the distinct sources of its hits, in order.
``first_citation_relevant`` is the share of answerable
queries whose extractive answer cites a relevant runbook first (an abstention counts as
a miss): the answer is made from the passages ``ask`` would use when a passage search is
given, else from the document ranking's hits.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from .answer import extractive_answer
from .errors import ConfigError
from .records import Answer, Hit, Principal

CUTOFFS = (1, 5, 10)


class EvalQuery(BaseModel):
    """One line of a query file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    query: str
    relevant: list[str]
    forbidden: list[str] = []
    groups: list[str] | None = None
    user: str | None = None
    kind: str | None = None


def load_queries(path: Path | str) -> list[EvalQuery]:
    """Parse a query file; a bad line raises :class:`ConfigError` naming the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the query file: {exc}", path=path) from exc
    queries: list[EvalQuery] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            query = EvalQuery.model_validate_json(line)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(map(str, problem["loc"])) or "line"
            raise ConfigError(f"{where}: {problem['msg']}", path=path, line=number) from None
        query = query.model_copy(update={"relevant": list(dict.fromkeys(query.relevant))})
        if query.id in seen:
            raise ConfigError(f"duplicate query id {query.id!r}", path=path, line=number)
        seen.add(query.id)
        queries.append(query)
    if not queries:
        raise ConfigError("the query file has no queries", path=path)
    return queries


@dataclass(frozen=True, slots=True)
class ModelOutcome:
    """What the model's answer to one query did: written by the model or fallen back (and
    why), and how many commands it wrote that no cited passage holds."""

    answered_by_model: bool
    fallback_reason: str | None
    ungrounded_commands: int


@dataclass(frozen=True, slots=True)
class QueryResult:
    """What one query returned, at document level."""

    id: str
    kind: str | None
    relevant: tuple[str, ...]
    ranked: tuple[str, ...]
    cited: tuple[str, ...]
    abstained: bool
    leaked: tuple[str, ...]
    seconds: float
    model: ModelOutcome | None = None

    @property
    def answerable(self) -> bool:
        return bool(self.relevant)

    def first_relevant(self) -> int | None:
        """1-based rank of the first relevant document, or None."""
        return next((i for i, s in enumerate(self.ranked, start=1) if s in self.relevant), None)


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Aggregate metrics and the per-query results behind them."""

    metrics: dict[str, Any]
    results: list[QueryResult] = field(repr=False)

    def failures(self, gates: dict[str, float] | None = None) -> list[str]:
        """Leaks, then every gate (``{"recall@5": 0.9}``) the metrics fall below."""
        out = []
        if self.metrics["leaks"]:
            out.append(
                f"{self.metrics['leaks']} forbidden document(s) returned, in: "
                + ", ".join(self.metrics["leaked_queries"])
            )
        for name, floor in (gates or {}).items():
            if name not in gate_metrics():
                raise ConfigError(f"unknown metric {name!r} (one of: {', '.join(gate_metrics())})")
            value = self.metrics.get(name)
            if value is None:
                out.append(f"{name} cannot be measured on this query file")
            elif value < floor:
                out.append(f"{name} {value} is below {floor}")
        return out

    def to_dict(self, *, per_query: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.metrics)
        if per_query:
            out["results"] = [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "first_relevant": r.first_relevant(),
                    "abstained": r.abstained,
                    "ranked": list(r.ranked),
                    "cited": list(r.cited),
                    "leaked": list(r.leaked),
                }
                for r in self.results
            ]
        return out


class Search(Protocol):
    """An audited search returning one hit per runbook, best first (``RunbookIndex.search_documents``)."""

    def __call__(self, query: str, *, principal: Principal, k: int) -> list[Hit]: ...


class Answering(Protocol):
    """An audited answer through the configured model (``RunbookIndex.answer``)."""

    def __call__(self, query: str, *, principal: Principal) -> Answer: ...


class PassageSearch(Protocol):
    """An audited search returning the passages ``ask`` answers from, best first."""

    def __call__(self, query: str, *, principal: Principal) -> list[Hit]: ...


def evaluate(
    search: Search,
    queries: Sequence[EvalQuery],
    *,
    principal: Principal | None = None,
    k: int = 10,
    abstain_below: float,
    passages: PassageSearch | None = None,
    answer_with_model: Answering | None = None,
) -> EvalReport:
    """Run every query as its principal through ``search`` and measure the results.

    Each query's extractive answer is made from ``passages`` (the hits ``ask`` would
    answer from) when given, else from the document ranking's hits. With
    ``answer_with_model``, each query is also answered by the model, and the report's
    ``llm`` metrics say how often it fell back and how often it wrote a command no cited
    passage holds."""
    results = []
    for query in queries:
        who = principal
        if query.groups is not None:
            who = Principal(
                query.user or (principal.user_id if principal else "eval"), frozenset(query.groups)
            )
        if who is None:
            raise ConfigError(
                f'query {query.id!r} has no groups: give the line its own "groups", '
                "or a principal to run it as"
            )
        started = time.perf_counter()
        # One chunk per runbook: the hits are then the document ranking itself.
        hits = search(query.query, principal=who, k=max(k, *CUTOFFS))
        quoted = passages(query.query, principal=who) if passages is not None else hits
        answer = extractive_answer(query.query, quoted, abstain_below=abstain_below)
        seconds = time.perf_counter() - started
        model = None
        if answer_with_model is not None:
            written = answer_with_model(query.query, principal=who)
            model = ModelOutcome(written.mode == "llm", written.fallback_reason, len(written.ungrounded))
        ranked = tuple(dict.fromkeys(h.source for h in hits))
        cited = tuple(c.source for c in answer.citations)
        shown = ranked + cited + tuple(h.source for h in quoted)
        leaked = tuple(sorted(set(query.forbidden).intersection(shown)))
        results.append(
            QueryResult(
                query.id,
                query.kind,
                tuple(query.relevant),
                ranked,
                cited,
                answer.abstained,
                leaked,
                seconds,
                model,
            )
        )
    return EvalReport(metrics(results), results)


def gate_metrics() -> list[str]:
    """Metrics a gate can name."""
    return [f"recall@{n}" for n in CUTOFFS] + [
        "mrr@10",
        "ndcg@10",
        "abstention_precision",
        "abstention_recall",
        "answered",
        "first_citation_relevant",
    ]


def metrics(results: Sequence[QueryResult]) -> dict[str, Any]:
    """Document-level retrieval metrics, abstention, leaks and latency."""
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    out: dict[str, Any] = {
        "queries": len(results),
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
    }
    for n in CUTOFFS:
        out[f"recall@{n}"] = _mean(
            len(set(r.ranked[:n]) & set(r.relevant)) / min(len(r.relevant), n) for r in answerable
        )
    out["mrr@10"] = _mean(
        1 / rank if (rank := r.first_relevant()) and rank <= 10 else 0.0 for r in answerable
    )
    out["ndcg@10"] = _mean(_ndcg(r, 10) for r in answerable)
    abstained = [r for r in results if r.abstained]
    correct = sum(1 for r in abstained if not r.answerable)
    out["abstention_precision"] = round(correct / len(abstained), 4) if abstained else None
    out["abstention_recall"] = round(correct / len(unanswerable), 4) if unanswerable else None
    out["answered"] = (
        round(1 - sum(r.abstained for r in answerable) / len(answerable), 4) if answerable else None
    )
    out["first_citation_relevant"] = _mean(
        1.0 if r.cited and r.cited[0] in r.relevant else 0.0 for r in answerable
    )
    out["leaks"] = sum(len(r.leaked) for r in results)
    out["leaked_queries"] = [r.id for r in results if r.leaked]
    times = sorted(r.seconds * 1000 for r in results)
    out["latency_ms_p50"] = round(_percentile(times, 50), 2)
    out["latency_ms_p95"] = round(_percentile(times, 95), 2)
    modelled = [r.model for r in results if r.model is not None]
    if modelled:
        written = [m for m in modelled if m.answered_by_model]
        out["llm"] = {
            "answers": len(modelled),
            "model_answers": len(written),
            "fallback_rate": round(1 - len(written) / len(modelled), 4),
            "ungrounded_command_rate": (
                round(sum(1 for m in written if m.ungrounded_commands) / len(written), 4) if written else None
            ),
            "ungrounded_commands": sum(m.ungrounded_commands for m in written),
        }
    return out


def _ndcg(result: QueryResult, n: int) -> float:
    gains = sum(
        1 / math.log2(i + 1) for i, s in enumerate(result.ranked[:n], start=1) if s in result.relevant
    )
    ideal = sum(1 / math.log2(i + 1) for i in range(1, min(len(result.relevant), n) + 1))
    return gains / ideal


def _mean(values: Any) -> float | None:
    values = list(values)
    return round(sum(values) / len(values), 4) if values else None


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = (len(sorted_values) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def report_table(report: EvalReport) -> str:
    """The metrics as an aligned two-column table."""
    rows = [
        (name, "-" if value is None else str(value))
        for name, value in report.metrics.items()
        if name != "leaked_queries"
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if report.metrics["leaked_queries"]:
        lines.append(f"{'leaked in':<{width}}  {', '.join(report.metrics['leaked_queries'])}")
    return "\n".join(lines)


def dumps(report: EvalReport, *, per_query: bool = False) -> str:
    return json.dumps(report.to_dict(per_query=per_query), indent=2)
