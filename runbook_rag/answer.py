"""Offline extractive answers with numbered citations.

The answer quotes whole Markdown blocks (paragraphs, list items, tables, code blocks) of
the most useful passages the principal may read, each followed by its citation number,
and each citation names exactly the source lines quoted. A block is never cut: a code
block or a paragraph is shown whole or left out, and a fragment of a block that chunking
had to split is left out.

Which passages, in which order: the best-ranked runbook leads, with its most useful
matching passage (commands, code and numbered steps before prose; sections such as
verification, escalation or background, and one-line passages, only when nothing richer
of the same runbook matches as well). Up to two more passages follow, each above a
relevance floor relative to the lead. When the best passage scores below the calibrated
threshold the answer abstains with a fixed sentence that says nothing about documents the
principal cannot see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .grounding import passage_commands, risk_marks
from .parsing import passage_parser
from .records import Answer, AnswerCommand, Citation, Hit

ABSTAIN_TEXT = "No runbook you can access covers this."
MAX_CITATIONS = 3
# Extra passages scoring this far below the best one add noise rather than evidence.
RELATIVE_MARGIN = 0.08
# A more useful passage of the best runbook may lead when its evidence is this close.
LEAD_MARGIN = 0.12
# Extra passages from another runbook must be this close to the best one, and clear the
# threshold by this much (measured on both query sets: farther ones were mostly unrelated).
OTHER_RUNBOOK_GAP = 0.05
OTHER_RUNBOOK_MARGIN = 0.05
EXCERPT_LINES = 14
# A passage of one non-blank line shorter than this says little on its own.
THIN_CHARS = 120
# In choosing an excerpt, code, numbered steps or a command count as half a query term.
ACTION_WEIGHT = 0.5

# Heading words of sections that support a procedure rather than carry it out: a weak
# signal, ignored when the question itself uses the word.
_ASIDES = (
    "verif",
    "escalat",
    "rollback",
    "roll back",
    "background",
    "see also",
    "reference",
    "related",
    "further reading",
    "history",
    "changelog",
    "owner",
    "contact",
    "glossary",
    "appendix",
    "impact",
)
_FENCE_OPENER = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_BARE_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*$")


@dataclass(frozen=True, slots=True)
class Passage:
    """What an answer quotes of one hit: whole blocks of its text, and the source lines
    (1-based, inclusive) those blocks are, in order and without a gap. ``text`` is empty
    when no block of the hit can be quoted whole."""

    hit: Hit
    text: str
    start_line: int
    end_line: int
    actionable: bool = False
    thin: bool = False


@dataclass(frozen=True, slots=True)
class _Block:
    first: int  # index of its first line in the chunk text
    last: int  # index of its last line
    whole: bool  # False for a fragment: cut by chunking, or a fence never closed
    actionable: bool  # code, a numbered list item, or a command in backticks
    intro: bool  # ends with ":" (it introduces the next block)
    terms: frozenset[str]


def extractive_answer(question: str, hits: Sequence[Hit], *, abstain_below: float) -> Answer:
    """Build a cited answer from ``hits`` (already access-checked, best first)."""
    chosen = choose_passages(question, hits, abstain_below=abstain_below)
    if not chosen:
        return Answer(text=ABSTAIN_TEXT, abstained=True)
    parts: list[str] = []
    citations: list[Citation] = []
    shown: list[AnswerCommand] = []
    for n, passage in enumerate(chosen, start=1):
        hit = passage.hit
        where = hit.heading or hit.title
        commands = passage_commands(hit, passage.start_line, passage.end_line)
        if passage.text:
            parts.append(f"{where} [{n}]:\n{passage.text}")
            if commands:
                # Each quoted command's risk, right after the quote (the quote itself stays pasteable).
                parts.append(f"Risk of the commands above [{n}]:\n{risk_marks(commands)}")
                shown.extend(AnswerCommand(c.command, c.risk, c.reasons, True, n) for c in commands)
        else:
            parts.append(f"{where} [{n}]: see {hit.source}, lines {passage.start_line}-{passage.end_line}.")
        citations.append(
            Citation(
                n,
                hit.chunk_id,
                hit.source,
                hit.title,
                hit.heading,
                passage.start_line,
                passage.end_line,
                hit.url,
                commands,
            )
        )
    return Answer(text="\n\n".join(parts), abstained=False, citations=tuple(citations), commands=tuple(shown))


def choose_passages(question: str, hits: Sequence[Hit], *, abstain_below: float) -> list[Passage]:
    """The passages an answer quotes, lead first (empty when the answer should abstain).

    The best-ranked runbook leads (the ranking chose it) with the most useful of its
    passages whose evidence is within :data:`LEAD_MARGIN` of the best: a command, code or
    numbered steps before prose, and prose before a one-line passage or a supporting
    section (verification, escalation, background...); ties go to the better rank. Up to
    two more passages follow, in the same order of usefulness, each within
    :data:`RELATIVE_MARGIN` of the best; those of another runbook within
    :data:`OTHER_RUNBOOK_GAP`, and clearing the threshold by :data:`OTHER_RUNBOOK_MARGIN`.
    """
    if not hits or hits[0].score < abstain_below:
        return []
    terms = _terms(question)
    best = _evidence(hits[0])
    lead_source = hits[0].source
    found: dict[int, Passage] = {}
    for i, hit in enumerate(hits):
        if hit.source == lead_source:
            floor = best - LEAD_MARGIN
        else:
            floor = max(best - OTHER_RUNBOOK_GAP, abstain_below + OTHER_RUNBOOK_MARGIN)
        if i and _evidence(hit) < max(abstain_below, floor):
            continue
        passage = excerpt(hit, terms)
        if passage is not None:
            found[i] = passage
    if not found:
        # Nothing can be quoted whole: point to the best passage instead of quoting a piece.
        top = hits[0]
        return [Passage(top, "", top.start_line, top.end_line)]
    rank = {i: (-_usefulness(found[i], question), i) for i in found}
    own = [i for i in found if hits[i].source == lead_source] or list(found)
    lead = min(own, key=rank.__getitem__)
    chosen = [found[lead]]
    for i in sorted(found, key=rank.__getitem__):
        passage = found[i]
        if i == lead or _evidence(passage.hit) < best - RELATIVE_MARGIN or passage.thin:
            continue
        if any(_same_section(passage.hit, c.hit) for c in chosen):
            continue
        chosen.append(passage)
        if len(chosen) == MAX_CITATIONS:
            break
    return chosen


def excerpt(hit: Hit, terms: frozenset[str], *, max_lines: int = EXCERPT_LINES) -> Passage | None:
    """The run of whole blocks of ``hit`` that mentions the query ``terms`` (index terms,
    see :func:`runbook_rag.lexical.terms`) most, with code, commands and numbered steps
    preferred, in at most ``max_lines`` lines (a single block, or a block and the line
    that introduces it, may be longer); None when no block can be quoted whole."""
    lines = hit.text.split("\n")
    mapping = _line_map(hit, lines)
    if mapping is None:
        return None
    first_line, added = mapping
    blocks = _blocks(lines, added)
    best: tuple[tuple[float, bool, int, int], int, int] | None = None
    for i, start in enumerate(blocks):
        if not start.whole:
            continue
        matched: set[str] = set()
        actionable = False
        for j in range(i, len(blocks)):
            end = blocks[j]
            if not end.whole:
                break
            size = end.last - start.first + 1
            if j > i and size > max_lines and not (j == i + 1 and start.intro):
                break
            matched |= end.terms
            actionable = actionable or end.actionable
            if j > i and end.intro:
                continue  # a run never ends on a line introducing what it leaves out
            key = (len(matched) + ACTION_WEIGHT * actionable, not end.intro, size, -i)
            if best is None or key > best[0]:
                best = (key, i, j)
    if best is None:
        return None
    _, i, j = best
    first, last = blocks[i].first, blocks[j].last
    body = hit.text.strip()
    return Passage(
        hit=hit,
        text="\n".join(lines[first : last + 1]),
        start_line=first_line + first,
        end_line=first_line + last,
        actionable=any(b.actionable for b in blocks[i : j + 1]),
        thin=sum(1 for line in body.split("\n") if line.strip()) <= 1 and len(body) < THIN_CHARS,
    )


def _line_map(hit: Hit, lines: list[str]) -> tuple[int, frozenset[int]] | None:
    """The source line of the text's first line, and the indexes of lines that chunking
    added (a fence re-opened at the top, or closed at the bottom, of a split code block).
    None when the text and its line range do not tell which lines are which."""
    extra = len(lines) - (hit.end_line - hit.start_line + 1)
    if extra <= 0:
        return hit.start_line, frozenset()
    head = bool(_FENCE_OPENER.match(lines[0]))
    tail = len(lines) > 1 and bool(_BARE_FENCE.match(lines[-1]))
    if extra == 2 and head and tail:
        return hit.start_line - 1, frozenset({0, len(lines) - 1})
    if extra == 1 and head and not tail:
        return hit.start_line - 1, frozenset({0})
    if extra == 1 and tail and not head:
        return hit.start_line, frozenset({len(lines) - 1})
    # Both ends look added (either may be): which lines the others are is unknown.
    return None


def _blocks(lines: list[str], added: frozenset[int]) -> list[_Block]:
    """Top-level Markdown blocks of a chunk's text; lists split into their items, and an
    item holding a fragment into its own blocks (so its whole sentences can be quoted)."""
    tokens = passage_parser().parse("\n".join(lines))
    blocks: list[_Block] = []
    for group in _children(tokens, 0):
        head = group[0]
        if head.type not in ("bullet_list_open", "ordered_list_open"):
            blocks.append(_block(lines, group, added, numbered=False))
            continue
        numbered = head.type == "ordered_list_open"
        for item in _children(group[1:-1], 1):
            block = _block(lines, item, added, numbered=numbered)
            if block.whole:
                blocks.append(block)
            else:
                parts = _children(item[1:-1], 2)
                blocks.extend(_block(lines, part, added, numbered=numbered) for part in parts)
    return blocks


def _children(tokens: Sequence[Any], level: int) -> list[Sequence[Any]]:
    """The token runs of the blocks opened at ``level`` (an opening token to its close)."""
    groups = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.level != level or tok.map is None or tok.nesting == -1:
            i += 1
            continue
        end = i + 1
        if tok.nesting == 1:
            while end < len(tokens) and tokens[end].level > level:
                end += 1
            end += 1  # the closing token
        groups.append(tokens[i:end])
        i = end
    return groups


def _block(lines: list[str], tokens: Sequence[Any], added: frozenset[int], *, numbered: bool) -> _Block:
    first, last = tokens[0].map[0], tokens[0].map[1] - 1
    while last > first and not lines[last].strip():
        last -= 1
    whole = not added.intersection(range(first, last + 1))
    code = False
    command = False
    for tok in tokens:
        if tok.type in ("fence", "code_block"):
            code = True
            if tok.type == "fence" and not _closed(lines, tok):
                whole = False
        for child in tok.children or ():
            if child.type == "code_inline" and " " in child.content.strip():
                command = True
    text = "\n".join(lines[first : last + 1])
    return _Block(
        first,
        last,
        whole,
        code or numbered or command,
        text.rstrip().endswith(":"),
        _terms(text),
    )


def _closed(lines: list[str], fence: Any) -> bool:
    start, end = fence.map
    closer = lines[end - 1].strip() if end - 1 < len(lines) else ""
    marker = fence.markup
    return end - start >= 2 and closer == marker[0] * len(closer) and len(closer) >= len(marker)


def _usefulness(passage: Passage, question: str) -> int:
    """2: commands, code or steps, or a supporting section the question asks for; 1: prose;
    0: one line, or a supporting section (verification, escalation...) it does not ask for."""
    section = (passage.hit.heading_path[-1] if passage.hit.heading_path else "").lower()
    asides = [word for word in _ASIDES if word in section]
    asked = question.lower()
    if passage.thin:
        return 0
    if asides:
        return 2 if any(word in asked for word in asides) else 0
    return 2 if passage.actionable else 1


def _evidence(hit: Hit) -> float:
    return hit.score if hit.evidence is None else hit.evidence


def _same_section(a: Hit, b: Hit) -> bool:
    return a.source == b.source and a.heading_path == b.heading_path


def _terms(text: str) -> frozenset[str]:
    from .lexical import terms

    return frozenset(terms(text))
