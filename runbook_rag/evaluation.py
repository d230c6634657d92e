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

With a model (``answer_with_model``), every query is also answered through it, and the
``llm`` metrics say how those answers fare (:func:`model_metrics`):

- ``invalid_citation_rate``: the share of answers the model replied to in which it cited a
  number that was no block of its prompt. The reply checks refuse such a reply, so the
  answer falls back (``invalid_output``) after the retry: an answer that fell back after a
  reply was refused for its citations counts, and so does a model-written answer whose
  citation does not name the passage of that block. A reply refused for its citations and
  then corrected on the retry is counted in ``invalid_citation_replies`` only.
- ``support_rate``: the share of the sentences of model-written answers that the passages
  they cite support (:mod:`runbook_rag.support`); ``unsupported_answer_rate`` is the share
  of those answers with at least one unsupported sentence.
- ``ungrounded_command_rate``: the share of model-written answers with a command no cited
  passage holds (removed from the answer).
- ``fallback_rate`` and ``fallback_by_reason``: the share of answers that fell back to the
  extractive answer, in all and per reason. An answer that abstained because no passage
  cleared the threshold never asked the model (``not_asked``) and is no fallback.
- ``abstention_agreement``: the share of answers that abstain exactly when the query line
  says to (``relevant: []``), whoever wrote them: it is the answer the caller gets.
- ``must_include_recall``: of the strings query lines list in ``must_include``, the share
  found in their answers (case and spacing ignored).
- tokens and cost in total and per answer, and the latency of answering through the model
  (p50, p95, total), with the p50 of each stage.

A query line may list ``must_include``: strings the answer must contain.
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
from .support import SentenceSupport, answer_support

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
    must_include: list[str] = []


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
    why), how many commands it wrote that no cited passage holds, whether it cited a
    number that was no block of its prompt, each sentence's support, the ``must_include``
    strings it lacks, and what it cost."""

    answered_by_model: bool
    fallback_reason: str | None
    ungrounded_commands: int
    text: str = ""
    abstained: bool = False
    asked: bool = False
    replied: bool = False
    invalid_citation: bool = False
    rejected: tuple[str, ...] = ()
    sentences: tuple[SentenceSupport, ...] = ()
    must_include: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    latency_ms: float = 0.0
    stages_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": "llm" if self.answered_by_model else "extractive",
            "fallback_reason": self.fallback_reason,
            "abstained": self.abstained,
            "invalid_citation": self.invalid_citation,
            "rejected_replies": list(self.rejected),
            "support_rate": _share(sum(s.supported for s in self.sentences), len(self.sentences)),
            "sentences": [s.to_dict() for s in self.sentences],
            "ungrounded_commands": self.ungrounded_commands,
            "must_include_missing": list(self.missing),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": None if self.cost is None else round(self.cost, 6),
            "latency_ms": round(self.latency_ms, 2),
            "answer": self.text,
        }


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
                    **({"llm": r.model.to_dict()} if r.model is not None else {}),
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
            started = time.perf_counter()
            written = answer_with_model(query.query, principal=who)
            elapsed = (time.perf_counter() - started) * 1000
            model = model_outcome(written, quoted, query, abstain_below=abstain_below, latency_ms=elapsed)
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
    if any(r.model is not None for r in results):
        out["llm"] = model_metrics(results)
    return out


def model_outcome(
    answer: Answer, hits: Sequence[Hit], query: EvalQuery, *, abstain_below: float, latency_ms: float
) -> ModelOutcome:
    """What the model's ``answer`` to ``query`` did, against ``hits`` (the passages the model
    was shown come from them, best first, as :func:`runbook_rag.llm.llm_answer` picks them)."""
    from .llm import MAX_PASSAGES

    usage = answer.usage
    rejected = usage.rejected if usage else ()
    by_model = answer.mode == "llm"
    blocks = [h for h in hits if _evidence(h) >= abstain_below][:MAX_PASSAGES]
    shown: dict[int, str] = {}
    mismatched = False
    for c in answer.citations if by_model else ():
        if 1 <= c.n <= len(blocks) and blocks[c.n - 1].chunk_id == c.chunk_id:
            hit = blocks[c.n - 1]
            shown[c.n] = f"[{hit.source}] {hit.title}\n{hit.heading}\n{hit.text}"
        else:
            mismatched = True
    fell_back_on_citation = answer.fallback_reason is not None and "citation" in rejected
    sentences = answer_support(answer.text, shown) if by_model and not answer.abstained else ()
    found = _plain(answer.text)
    return ModelOutcome(
        answered_by_model=by_model,
        fallback_reason=answer.fallback_reason,
        ungrounded_commands=len(answer.ungrounded),
        text=answer.text,
        abstained=answer.abstained,
        asked=answer.fallback_reason is not None or bool(usage and "llm" in usage.stages_ms),
        replied=bool(usage and usage.llm_calls),
        invalid_citation=mismatched or fell_back_on_citation,
        rejected=rejected,
        sentences=sentences,
        must_include=tuple(query.must_include),
        missing=tuple(s for s in query.must_include if _plain(s) not in found),
        prompt_tokens=usage.prompt_tokens if usage else None,
        completion_tokens=usage.completion_tokens if usage else None,
        cost=usage.cost if usage else None,
        latency_ms=latency_ms,
        stages_ms=dict(usage.stages_ms) if usage else {},
    )


def model_metrics(results: Sequence[QueryResult]) -> dict[str, Any]:
    """The ``llm`` metrics of the results answered through a model (see the module docstring)."""
    pairs = [(r, r.model) for r in results if r.model is not None]
    modelled = [m for _, m in pairs]
    written = [m for m in modelled if m.answered_by_model]
    replied = [m for m in modelled if m.replied]
    checked = [m for m in written if not m.abstained]
    sentences = [s for m in checked for s in m.sentences]
    reasons: dict[str, int] = {}
    for m in modelled:
        if m.fallback_reason is not None:
            reasons[m.fallback_reason] = reasons.get(m.fallback_reason, 0) + 1
    listed = sum(len(m.must_include) for m in modelled)
    latencies = sorted(m.latency_ms for m in modelled)
    prompt_tokens = _total(m.prompt_tokens for m in modelled)
    completion_tokens = _total(m.completion_tokens for m in modelled)
    cost = _total(m.cost for m in modelled)
    stages = sorted({name for m in modelled for name in m.stages_ms})
    return {
        "answers": len(modelled),
        "model_answers": len(written),
        "not_asked": sum(1 for m in modelled if not m.asked),
        "fallback_rate": round(sum(reasons.values()) / len(modelled), 4),
        "fallback_by_reason": {k: round(v / len(modelled), 4) for k, v in sorted(reasons.items())},
        "ungrounded_command_rate": _share(sum(1 for m in written if m.ungrounded_commands), len(written)),
        "ungrounded_commands": sum(m.ungrounded_commands for m in written),
        "invalid_citation_rate": _share(sum(m.invalid_citation for m in replied), len(replied)),
        "invalid_citation_replies": sum(m.rejected.count("citation") for m in modelled),
        "support_rate": _share(sum(s.supported for s in sentences), len(sentences)),
        "sentences": len(sentences),
        "unsupported_sentences": sum(not s.supported for s in sentences),
        "unsupported_answer_rate": _share(
            sum(1 for m in checked if any(not s.supported for s in m.sentences)), len(checked)
        ),
        "abstention_agreement": _share(sum(m.abstained == (not r.relevant) for r, m in pairs), len(pairs)),
        "must_include_recall": _share(listed - sum(len(m.missing) for m in modelled), listed),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "cost": None if cost is None else round(cost, 6),
        "prompt_tokens_per_answer": None
        if prompt_tokens is None
        else round(prompt_tokens / len(modelled), 1),
        "completion_tokens_per_answer": (
            None if completion_tokens is None else round(completion_tokens / len(modelled), 1)
        ),
        "cost_per_answer": None if cost is None else round(cost / len(modelled), 6),
        "latency_ms_p50": round(_percentile(latencies, 50), 2),
        "latency_ms_p95": round(_percentile(latencies, 95), 2),
        "latency_ms_total": round(sum(latencies), 2),
        "stage_ms_p50": {
            name: round(
                _percentile(sorted(m.stages_ms[name] for m in modelled if name in m.stages_ms), 50), 2
            )
            for name in stages
        },
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _total(values: Any) -> Any:
    """The sum of the reported values, or None when none was reported."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _plain(text: str) -> str:
    return " ".join(text.casefold().split())


def _evidence(hit: Hit) -> float:
    return hit.evidence if hit.evidence is not None else hit.score


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
    """The metrics as an aligned two-column table; the model's, when measured, in a second
    table under a ``model answers`` heading."""
    rows = [
        (name, _cell(value))
        for name, value in report.metrics.items()
        if name not in ("leaked_queries", "llm")
    ]
    if report.metrics["leaked_queries"]:
        rows.append(("leaked in", ", ".join(report.metrics["leaked_queries"])))
    llm = report.metrics.get("llm")
    model_rows = [(name, _cell(value)) for name, value in llm.items()] if llm else []
    width = max(len(name) for name, _ in rows + model_rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    if model_rows:
        lines += ["", "model answers"] + [f"{name:<{width}}  {value}" for name, value in model_rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items()) or "-"
    return str(value)


def dumps(report: EvalReport, *, per_query: bool = False) -> str:
    return json.dumps(report.to_dict(per_query=per_query), indent=2)
