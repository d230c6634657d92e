"""The records of the command classifier: a command, its risk, and how parts combine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Risk = Literal["read", "change", "destructive", "unknown"]
Language = Literal["shell", "sql"]

RISKS: tuple[Risk, ...] = ("read", "change", "destructive", "unknown")
_RANK = {risk: rank for rank, risk in enumerate(RISKS)}


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a document: its text, language and the lines it spans (1-based, inclusive)."""

    text: str
    language: Language
    start_line: int
    end_line: int


@dataclass(frozen=True, slots=True)
class Classification:
    """A command's risk and the rule ids that decided it."""

    risk: Risk
    reasons: tuple[str, ...]


def _combine(parts: Sequence[Classification]) -> Classification:
    """The highest risk of ``parts``, with the reasons of the parts at that risk."""
    if not parts:
        return Classification("read", ("shell.empty",))
    top = max(parts, key=lambda part: _RANK[part.risk]).risk
    reasons: list[str] = []
    for part in parts:
        if part.risk == top:
            reasons.extend(r for r in part.reasons if r not in reasons)
    return Classification(top, tuple(reasons))


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _c(risk: Risk, reason: str) -> Classification:
    return Classification(risk, (reason,))


@dataclass(frozen=True, slots=True)
class _Stdin:
    """What a command reads on standard input: known text, or the output of another command."""

    text: str | None
