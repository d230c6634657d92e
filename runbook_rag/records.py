"""Immutable records passed between pipeline stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: a user id and the groups they belong to.

    Groups are plain strings; none is a wildcard. A principal with no groups sees nothing.
    """

    user_id: str
    groups: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        raw: object = self.groups
        if isinstance(raw, str) or not isinstance(raw, (set, frozenset, list, tuple)):
            raise TypeError("Principal.groups must be a collection of group names")
        clean: set[str] = set()
        for group in raw:
            if not isinstance(group, str):
                raise TypeError(f"group names must be strings, got {type(group).__name__}")
            if group.strip():
                clean.add(group.strip())
        object.__setattr__(self, "groups", frozenset(clean))

    @property
    def labels(self) -> frozenset[str]:
        """What the principal may match: its groups and ``user:<its id>`` (for per-user
        restrictions), the latter only for a non-empty id."""
        return self.groups | {f"user:{self.user_id}"} if self.user_id.strip() else self.groups


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed source document with its access labels (the groups allowed to read it)."""

    doc_id: str
    source: str
    title: str
    text: str
    labels: tuple[str, ...]
    metadata: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    allow_instructions: bool = False
    approvers: tuple[str, ...] | None = None
    two_person: bool = False


@dataclass(frozen=True, slots=True)
class StepCommand:
    """A command of a runbook passage: its text, language, lines (1-based, inclusive, in the
    runbook), and its risk with the rule ids that decided it."""

    command: str
    language: str
    start_line: int
    end_line: int
    risk: str
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "command": self.command,
            "lines": [self.start_line, self.end_line],
            "risk": self.risk,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Chunk:
    """A heading-scoped slice of a document, sized to the embedding model's window."""

    chunk_id: str
    doc_id: str
    source: str
    title: str
    heading_path: tuple[str, ...]
    start_line: int
    end_line: int
    text: str
    labels: tuple[str, ...]
    url: str | None = None
    commands: tuple[StepCommand, ...] = ()
    approvers: tuple[str, ...] = ()
    two_person: bool = False

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)

    @property
    def embed_text(self) -> str:
        """What the model and the lexical index see: title, heading path, then the body."""
        return embed_text(self.title, self.heading_path, self.text)


def embed_text(title: str, heading_path: Sequence[str], text: str) -> str:
    """A chunk's indexed text: its title and heading path, then its body."""
    path = tuple(heading_path)
    if path and path[0] == title:
        path = path[1:]
    head = "\n".join((title, " > ".join(path))) if path else title
    return f"{head}\n\n{text}"


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk returned to a principal who passed the access check.

    ``score`` follows the ranking: it never rises down a result list, and the first hit's
    score is its evidence. ``evidence`` (0-1) is the hit's own evidence that it answers
    the query (the mean of cosine similarity and IDF-weighted query-term coverage); None
    when whoever made the hit did not measure it, and then ``score`` stands in for it.
    """

    chunk_id: str
    source: str
    title: str
    heading_path: tuple[str, ...]
    start_line: int
    end_line: int
    score: float
    text: str
    labels: tuple[str, ...] = field(repr=False)
    url: str | None = None
    evidence: float | None = None
    commands: tuple[StepCommand, ...] = ()

    @property
    def heading(self) -> str:
        return " > ".join(self.heading_path)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "chunk_id": self.chunk_id,
            "source": self.source,
            "title": self.title,
            "heading": self.heading,
            "lines": [self.start_line, self.end_line],
            "score": round(self.score, 4),
            "text": self.text,
            "commands": [c.to_dict() for c in self.commands],
        }
        if self.url:
            out["url"] = self.url
        return out


@dataclass(frozen=True, slots=True)
class Citation:
    """A numbered reference from an answer to the passage it came from."""

    n: int
    chunk_id: str
    source: str
    title: str
    heading: str
    start_line: int
    end_line: int
    url: str | None = None
    commands: tuple[StepCommand, ...] = ()

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "n": self.n,
            "chunk_id": self.chunk_id,
            "source": self.source,
            "title": self.title,
            "heading": self.heading,
            "lines": [self.start_line, self.end_line],
            "commands": [c.to_dict() for c in self.commands],
        }
        if self.url:
            out["url"] = self.url
        return out


@dataclass(frozen=True, slots=True)
class AnswerCommand:
    """A command an answer shows: its risk, and whether a cited passage holds it
    (``grounded``); ``citation`` is the number of the first citation that does."""

    command: str
    risk: str
    reasons: tuple[str, ...]
    grounded: bool
    citation: int | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "command": self.command,
            "risk": self.risk,
            "reasons": list(self.reasons),
            "grounded": self.grounded,
            "citation": self.citation,
        }


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer with numbered citations, or an abstention.

    ``mode`` is ``"llm"`` when a model wrote the text, else ``"extractive"``;
    ``fallback_reason`` says why a configured model's answer was not used. ``commands`` are
    the commands the answer shows, with their risk; a model's command that no cited passage
    holds is marked ungrounded and removed from ``text``.
    """

    text: str
    abstained: bool
    citations: tuple[Citation, ...] = ()
    mode: str = "extractive"
    fallback_reason: str | None = None
    usage: Usage | None = None
    commands: tuple[AnswerCommand, ...] = ()

    @property
    def ungrounded(self) -> tuple[AnswerCommand, ...]:
        """Commands the model wrote that no cited passage holds (removed from ``text``)."""
        return tuple(c for c in self.commands if not c.grounded)

    def to_dict(self) -> dict[str, object]:
        return {
            "answer": self.text,
            "abstained": self.abstained,
            "citations": [c.to_dict() for c in self.citations],
            "commands": [c.to_dict() for c in self.commands],
            "mode": self.mode,
            "fallback_reason": self.fallback_reason,
            "usage": self.usage.to_dict() if self.usage else None,
        }


@dataclass(frozen=True, slots=True)
class Usage:
    """What answering one question cost: latency by stage, tokens, model, estimated cost.

    ``rejected`` names, in order, the check that refused each of the model's replies that
    was not used (``format``, ``citation``, ``markers``, ``links``, ``instructions``).
    """

    stages_ms: dict[str, float]
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: float | None = None
    llm_calls: int = 0
    fallback: bool = False
    rejected: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "stages_ms": {k: round(v, 2) for k, v in self.stages_ms.items()},
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": None if self.cost is None else round(self.cost, 6),
            "llm_calls": self.llm_calls,
            "fallback": self.fallback,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    """A source that was not indexed, and why."""

    source: str
    reason: str
    line: int | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source, "reason": self.reason}
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class BuildWarning:
    """A source that was indexed, with something its author should fix."""

    source: str
    message: str
    line: int | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"source": self.source, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A passage left out of the index because it reads as instructions to a model."""

    source: str
    start_line: int
    end_line: int
    rule: str

    def to_dict(self) -> dict[str, object]:
        return {"source": self.source, "lines": [self.start_line, self.end_line], "rule": self.rule}


@dataclass(frozen=True, slots=True)
class BuildReport:
    """What a build did."""

    documents: int
    chunks: int
    embedded: int
    skipped: tuple[Skipped, ...]
    seconds: float
    generation: str
    warnings: tuple[BuildWarning, ...] = ()
    findings: dict[str, dict[str, int]] = field(default_factory=dict)
    quarantined: tuple[Quarantined, ...] = ()
    reused: int = 0
    removed: int = 0
    relabelled: int = 0
    diff: dict[str, list[str]] = field(default_factory=dict)
    dry_run: bool = False

    @property
    def cardholder_data_found(self) -> bool:
        """True when any source held a card number, track data or a card verification value
        (a PCI incident to raise), whatever its wrapping."""
        cardholder = ("pan", "track_data", "cvv")
        return any(kind in cardholder for counts in self.findings.values() for kind in counts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildReport:
        """The report from its ``to_dict`` form (a manifest's last build report)."""

        def line(item: dict[str, Any]) -> int | None:
            return int(item["line"]) if item.get("line") is not None else None

        return cls(
            documents=int(data.get("documents", 0)),
            chunks=int(data.get("chunks", 0)),
            embedded=int(data.get("embedded", 0)),
            skipped=tuple(Skipped(s["source"], s["reason"], line(s)) for s in data.get("skipped", [])),
            seconds=float(data.get("seconds", 0.0)),
            generation=str(data.get("generation", "")),
            warnings=tuple(
                BuildWarning(w["source"], w["message"], line(w)) for w in data.get("warnings", [])
            ),
            findings={k: dict(v) for k, v in data.get("findings", {}).items()},
            quarantined=tuple(
                Quarantined(q["source"], q["lines"][0], q["lines"][1], q["rule"])
                for q in data.get("quarantined", [])
            ),
            reused=int(data.get("reused", 0)),
            removed=int(data.get("removed", 0)),
            relabelled=int(data.get("relabelled", 0)),
            diff={k: list(v) for k, v in data.get("diff", {}).items()},
            dry_run=bool(data.get("dry_run", False)),
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "documents": self.documents,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "skipped": [s.to_dict() for s in self.skipped],
            "warnings": [w.to_dict() for w in self.warnings],
            "findings": self.findings,
            "quarantined": [q.to_dict() for q in self.quarantined],
            "reused": self.reused,
            "removed": self.removed,
            "relabelled": self.relabelled,
            "diff": self.diff,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
            "generation": self.generation,
        }


@dataclass(frozen=True, slots=True)
class IndexInfo:
    """What an index serves (``index info``): its published generation and last build report."""

    index: str
    generation: str
    built_at: str
    model_id: str
    dimension: int
    max_tokens: int
    documents: int
    chunks: int
    label_set_counts: dict[str, int]
    query_encoder: str | None
    versions: dict[str, str]
    report: BuildReport
    encoder: str = "torch"

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "generation": self.generation,
            "built_at": self.built_at,
            "model_id": self.model_id,
            "dimension": self.dimension,
            "max_tokens": self.max_tokens,
            "encoder": self.encoder,
            "documents": self.documents,
            "chunks": self.chunks,
            "label_sets": sorted(self.label_set_counts),
            "label_set_counts": self.label_set_counts,
            "query_encoder": self.query_encoder,
            "versions": self.versions,
            "report": self.report.to_dict(),
        }


@dataclass(slots=True)
class QueryTrace:
    """What one query's stages note for its audit record while it runs."""

    generation: str | None = None
    mode: str | None = None
    withheld: int | None = None
