"""Record assembly: each query run through an :class:`Auditor` leaves one record, ok or
failed, and its subscribers get the written record as a typed :class:`AuditEvent`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .. import tracing
from ..records import Answer, Hit, Principal, QueryTrace
from ..redaction import redact
from ..settings import AuditSettings
from .keys import resolve_audit
from .trail import AuditLog

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited query: what its record in the trail says, given to subscribers once written.

    ``query`` is masked (or None when the trail keeps only its HMAC). ``answered`` marks an
    ``ask``, whose record also carries the model, its tokens and any fallback reason.
    """

    ts: str
    request_id: str
    action: str
    interface: str
    principal_id: str
    groups: tuple[str, ...]
    query: str | None
    generation: str | None
    outcome: str
    latency_ms: float
    mode: str | None = None
    withheld: int | None = None
    chunk_ids: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    answered: bool = False
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    fallback_reason: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AuditEvent:
        tokens = record.get("tokens") or {}
        principal = record.get("principal") or {}
        return cls(
            ts=str(record["ts"]),
            request_id=str(record["request_id"]),
            action=str(record.get("action")),
            interface=str(record.get("interface")),
            principal_id=str(principal.get("id") or ""),
            groups=tuple(principal.get("groups") or ()),
            query=record.get("query"),
            generation=record.get("generation"),
            outcome=str(record.get("outcome")),
            latency_ms=float(record.get("latency_ms") or 0.0),
            mode=record.get("mode"),
            withheld=record.get("withheld"),
            chunk_ids=tuple(record.get("chunk_ids") or ()),
            sources=tuple(record.get("sources") or ()),
            answered="fallback_reason" in record,
            model=record.get("model"),
            prompt_tokens=tokens.get("prompt"),
            completion_tokens=tokens.get("completion"),
            fallback_reason=record.get("fallback_reason"),
        )


class Auditor:
    """Runs queries and writes one record for each, ok or failed; subscribers get the event."""

    def __init__(self, log: AuditLog, *, interface: str, generation: Callable[[], str | None]) -> None:
        """``generation`` names the served generation for records of queries that failed before
        their search noted one."""
        self.log = log
        self.interface = interface
        self._generation = generation
        self.subscribers: list[Callable[[AuditEvent], None]] = []

    def run(
        self,
        action: str,
        principal: Principal,
        query: str,
        run: Callable[[QueryTrace], T],
    ) -> T:
        """``run`` the query, then append its record; a record that cannot be written fails it.
        The query is one span of a trace when tracing is on (see :mod:`runbook_rag.tracing`)."""
        started = time.perf_counter()
        trace = QueryTrace()
        attributes = {
            "runbook_rag.action": action,
            "runbook_rag.interface": self.interface,
            "enduser.id": principal.user_id,
            # Masked, and only where the audit trail keeps query text (and only when traced:
            # masking is not free, and the record masks the query again for itself).
            "runbook_rag.query": redact(query).text
            if self.log.keeps_query_text and isinstance(query, str) and tracing.is_on()
            else None,
        }
        with tracing.span(f"runbook_rag {action}", attributes) as span:
            try:
                result = run(trace)
            except Exception as exc:  # every failure is audited too, then raised as it was
                self._append(action, principal, query, trace, started, None, f"error:{type(exc).__name__}")
                raise
            self._append(action, principal, query, trace, started, result, None)
            span.set_attributes(
                {
                    "runbook_rag.generation": trace.generation,
                    "runbook_rag.mode": trace.mode,
                    "runbook_rag.results": len(result) if isinstance(result, list) else None,
                }
            )
            if isinstance(result, Answer):
                span.set_attributes(
                    {
                        "runbook_rag.answer_mode": result.mode,
                        "runbook_rag.abstained": result.abstained,
                        "runbook_rag.citations": len(result.citations),
                        "runbook_rag.fallback_reason": result.fallback_reason,
                        "runbook_rag.ungrounded_commands": len(result.ungrounded),
                    }
                )
        return result

    def action(self, action: str, principal: Principal | None, *, outcome: str, **fields: Any) -> None:
        """Write the record of one step of a guarded action (``action.propose``, ``.approve``,
        ``.deny``, ``.redeem``), refusals included; ``fields`` name the request, command and risk."""
        record: dict[str, Any] = {
            "action": f"action.{action}",
            "interface": self.interface,
            "principal": (
                {"id": principal.user_id, "groups": sorted(principal.groups)}
                if principal is not None
                else None
            ),
            "generation": self._generation(),
            "outcome": outcome,
            **fields,
        }
        event = AuditEvent.from_record(self.log.append(**record))
        for subscriber in self.subscribers:
            subscriber(event)

    def _append(
        self,
        action: str,
        principal: Principal,
        query: str,
        trace: QueryTrace,
        started: float,
        result: object,
        outcome: str | None,
    ) -> None:
        fields: dict[str, Any] = {
            "action": action,
            "interface": self.interface,
            "principal": {"id": principal.user_id, "groups": sorted(principal.groups)},
            "query": query if isinstance(query, str) else "",
            "generation": trace.generation or self._generation(),
            "withheld": trace.withheld,
            "mode": trace.mode,
        }
        if isinstance(result, Answer):
            usage = result.usage
            fields.update(
                mode=result.mode,
                chunk_ids=[c.chunk_id for c in result.citations],
                sources=sorted({c.source for c in result.citations}),
                model=usage.model if usage else None,
                tokens=(
                    {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens} if usage else None
                ),
                fallback_reason=result.fallback_reason,
            )
            outcome = "abstained" if result.abstained else "answered"
        elif isinstance(result, list):
            hits: list[Hit] = result
            fields.update(chunk_ids=[h.chunk_id for h in hits], sources=sorted({h.source for h in hits}))
            outcome = "ok" if hits else "no_results"
        fields["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        fields["outcome"] = outcome
        event = AuditEvent.from_record(self.log.append(**fields))
        for subscriber in self.subscribers:
            subscriber(event)


def open_auditor(
    settings: AuditSettings,
    *,
    index: Path | str,
    interface: str,
    generation: Callable[[], str | None],
) -> Auditor:
    """The auditor of the index at ``index``: its log, key (made on first use) and head."""
    setup = resolve_audit(settings, index=index)
    log = AuditLog(
        setup.log, key=setup.load_key(create=True), head=setup.head, keep_query_text=settings.keep_query_text
    )
    return Auditor(log, interface=interface, generation=generation)
