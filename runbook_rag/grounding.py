"""Commands in answers: which cited passage holds each one, and the risk each carries.

A command a model writes is *grounded* when, once whitespace is normalised, it is exactly a
command of a passage it cites: not a prefix of one (dropping ``--dry-run`` changes what a
command does), not a blend of two; and every other line of code in the answer (a block of any
language, a code span with a blank in it) must be a line of a cited passage, so a command of a
tool no table knows, in an unlabelled block, cannot slip through either. Ungrounded commands are
removed from the answer (a fenced line, a prompt line or a code span) and a note says how many
were; they are kept in
:attr:`~runbook_rag.records.Answer.commands` with ``grounded: false``, and can never be
proposed, since a proposal must name a command of the runbook.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .actions import step_commands
from .commands import classify, extract_commands, normalize
from .parsing import passage_parser
from .records import AnswerCommand, Hit, StepCommand

REMOVED_NOTE = "(Removed {n} command{s} that no cited runbook holds.)"
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def passage_commands(hit: Hit, start_line: int, end_line: int) -> tuple[StepCommand, ...]:
    """The commands the build stored for ``hit`` within source lines ``start_line``-``end_line``."""
    return tuple(c for c in hit.commands if start_line <= c.start_line and c.end_line <= end_line)


def risk_marks(commands: Sequence[StepCommand]) -> str:
    """Lines that mark each command's risk, for an answer that quotes them."""
    lines = []
    for c in commands:
        # Whole, never shortened: the flag that makes a command destructive may come last.
        shown = " ".join(c.command.split()).replace("`", "'")
        gate = "" if c.risk == "read" else ", needs approval"
        lines.append(f"- {c.risk}{gate}: `{shown}`")
    return "\n".join(lines)


def ground(text: str, cited: Sequence[tuple[int, Hit]]) -> tuple[str, tuple[AnswerCommand, ...]]:
    """``text`` with its ungrounded commands removed, and every command it showed.

    ``cited`` pairs each citation number with its passage (what the model was shown). Beyond
    the commands :func:`~runbook_rag.commands.extract_commands` finds, every line of a code
    block and every code span with a blank in it must come from a cited passage: a model's
    command in an unlabelled block, or of a tool no table knows, is removed just the same.
    """
    held: dict[str, tuple[int, StepCommand]] = {}
    quoted: set[str] = set()
    for n, hit in cited:
        # The build stored each passage's commands; a passage without any is read afresh.
        for c in hit.commands or step_commands(hit.text, hit.start_line):
            held.setdefault(normalize(c.command, c.language), (n, c))
        quoted.update(normalize(line) for line in hit.text.split("\n"))
        quoted.update(normalize(span) for span in _spans(hit.text))
    lines = text.split("\n")
    drop: set[int] = set()
    out: list[AnswerCommand] = []
    covered: set[int] = set()
    for command in extract_commands(text, 1):
        first, last = command.start_line - 1, command.end_line
        covered.update(range(first, last))
        key = normalize(command.text, command.language)
        if key in held:
            n, step = held[key]
            out.append(AnswerCommand(step.command, step.risk, step.reasons, True, n))
            continue
        verdict = classify(command.text, command.language)
        out.append(AnswerCommand(command.text, verdict.risk, verdict.reasons, False))
        span = f"`{command.text}`"
        if command.start_line == command.end_line and span in lines[first]:
            lines[first] = lines[first].replace(span, "[command removed]")
        else:
            drop.update(range(first, last))
    # Code the extractor did not take for a command: each line must be a line of a cited passage.
    for first, last in _code_lines(text):
        for i in range(first, last):
            line = normalize(lines[i])
            if i in covered or not line or line in quoted:
                continue
            verdict = classify(line)
            out.append(AnswerCommand(line, verdict.risk, verdict.reasons, False))
            drop.add(i)
    for span in _spans(text):
        key = normalize(span)
        if " " not in key or key in quoted or key in held or f"`{span}`" not in "\n".join(lines):
            continue
        verdict = classify(span)
        out.append(AnswerCommand(span, verdict.risk, verdict.reasons, False))
        lines = [line.replace(f"`{span}`", "[command removed]") for line in lines]
    removed = sum(1 for c in out if not c.grounded)
    if not removed:
        return text, tuple(out)
    kept = [line for i, line in enumerate(lines) if i not in drop]
    cleaned = "\n".join(_without_empty_fences(kept)).strip()
    note = REMOVED_NOTE.format(n=removed, s="" if removed == 1 else "s")
    return f"{cleaned}\n\n{note}" if cleaned else note, tuple(out)


def _code_lines(text: str) -> list[tuple[int, int]]:
    """The 0-based line ranges (end exclusive) of the contents of ``text``'s code blocks."""
    out = []
    for tok in passage_parser().parse(text):
        if tok.map is None:
            continue
        if tok.type == "fence":
            start, end = tok.map
            closed = end - start >= 2 and text.split("\n")[end - 1].strip().startswith(tok.markup)
            out.append((start + 1, end - 1 if closed else end))
        elif tok.type == "code_block":
            start, end = tok.map
            out.append((start, end))
    return out


def _spans(text: str) -> list[str]:
    """The contents of ``text``'s code spans."""
    return [
        child.content
        for tok in passage_parser().parse(text)
        if tok.type == "inline"
        for child in tok.children or ()
        if child.type == "code_inline"
    ]


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
