"""Commands in answers: which cited passage holds each one, and the risk each carries.

A command a model writes is *grounded* when, once whitespace is normalised, it is exactly a
command of a passage it cites: not a prefix of one (dropping ``--dry-run`` changes what a
command does), not a blend of two. Ungrounded commands are removed from the answer (a fenced
line, a prompt line or an inline code span) and a note says how many were; they are kept in
:attr:`~runbook_rag.records.Answer.commands` with ``grounded: false``, and can never be
proposed, since a proposal must name a command of the runbook.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .actions import normalize, step_commands
from .commands import classify, extract_commands
from .records import AnswerCommand, Hit, StepCommand

REMOVED_NOTE = "(Removed {n} command{s} that no cited runbook holds.)"
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def passage_commands(hit: Hit, start_line: int, end_line: int) -> tuple[StepCommand, ...]:
    """The commands of ``hit`` within source lines ``start_line``-``end_line``: those the
    build stored, or, for a hit of an index built without them, extracted afresh."""
    commands = hit.commands or step_commands(hit.text, hit.start_line)
    return tuple(c for c in commands if start_line <= c.start_line and c.end_line <= end_line)


def risk_marks(commands: Sequence[StepCommand]) -> str:
    """Lines that mark each command's risk, for an answer that quotes them."""
    lines = []
    for c in commands:
        # Whole, never shortened: the flag that makes a command destructive may come last.
        shown = normalize(c.command).replace("`", "'")
        gate = "" if c.risk == "read" else ", needs approval"
        lines.append(f"- {c.risk}{gate}: `{shown}`")
    return "\n".join(lines)


def ground(text: str, cited: Sequence[tuple[int, Hit]]) -> tuple[str, tuple[AnswerCommand, ...]]:
    """``text`` with its ungrounded commands removed, and every command it showed.

    ``cited`` pairs each citation number with its passage (what the model was shown).
    """
    held: dict[str, tuple[int, StepCommand]] = {}
    for n, hit in cited:
        for c in (*hit.commands, *step_commands(hit.text, hit.start_line)):
            held.setdefault(normalize(c.command), (n, c))
    found = extract_commands(text, 1)
    if not found:
        return text, ()
    lines = text.split("\n")
    drop: set[int] = set()
    out: list[AnswerCommand] = []
    removed = 0
    for command in found:
        key = normalize(command.text)
        if key in held:
            n, step = held[key]
            out.append(AnswerCommand(step.command, step.risk, step.reasons, True, n))
            continue
        verdict = classify(command.text, command.language)
        out.append(AnswerCommand(command.text, verdict.risk, verdict.reasons, False))
        removed += 1
        first = command.start_line - 1
        span = f"`{command.text}`"
        if command.start_line == command.end_line and span in lines[first]:
            lines[first] = lines[first].replace(span, "[command removed]")
        else:
            drop.update(range(first, command.end_line))
    if not removed:
        return text, tuple(out)
    kept = [line for i, line in enumerate(lines) if i not in drop]
    cleaned = "\n".join(_without_empty_fences(kept)).strip()
    note = REMOVED_NOTE.format(n=removed, s="" if removed == 1 else "s")
    return f"{cleaned}\n\n{note}" if cleaned else note, tuple(out)


def _without_empty_fences(lines: list[str]) -> list[str]:
    """Drop a fenced block left with nothing but blank lines."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        opener = _FENCE.match(lines[i])
        if opener:
            marker = opener.group(1)
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(marker):
                j += 1
            if j < len(lines) and all(not line.strip() for line in lines[i + 1 : j]):
                i = j + 1
                continue
            out.extend(lines[i : j + 1])
            i = j + 1
            continue
        out.append(lines[i])
        i += 1
    return out
