"""Offline extractive answers with numbered citations.

The answer quotes the most relevant lines of the best passages the principal may
read, each followed by its citation number. When the best passage scores below
the calibrated threshold the answer abstains with a fixed sentence that says
nothing about documents the principal cannot see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .records import Answer, Citation, Hit

ABSTAIN_TEXT = "No runbook you can access covers this."
MAX_CITATIONS = 3
# Passages scoring this far below the best one add noise rather than evidence.
RELATIVE_MARGIN = 0.08
EXCERPT_LINES = 12

_WORD = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_STOP_WORDS = (
    "a an and are as at be by can do does for from how i if in is it me my of on or our "
    "should the this to we what when where which who why with you your"
)
_STOP = frozenset(_STOP_WORDS.split())


def extractive_answer(question: str, hits: Sequence[Hit], *, abstain_below: float) -> Answer:
    """Build a cited answer from ``hits`` (already access-checked, best first)."""
    if not hits or hits[0].score < abstain_below:
        return Answer(text=ABSTAIN_TEXT, abstained=True)
    best = hits[0].score
    chosen: list[Hit] = []
    for hit in hits:
        if hit.score < max(abstain_below, best - RELATIVE_MARGIN):
            continue
        if any(h.source == hit.source and h.heading_path == hit.heading_path for h in chosen):
            continue
        chosen.append(hit)
        if len(chosen) == MAX_CITATIONS:
            break
    terms = _terms(question)
    parts, citations = [], []
    for n, hit in enumerate(chosen, start=1):
        where = hit.heading or hit.title
        parts.append(f"{where} [{n}]:\n{excerpt(hit.text, terms)}")
        citations.append(
            Citation(
                n, hit.chunk_id, hit.source, hit.title, hit.heading, hit.start_line, hit.end_line, hit.url
            )
        )
    return Answer(text="\n\n".join(parts), abstained=False, citations=tuple(citations))


def excerpt(text: str, terms: frozenset[str], *, max_lines: int = EXCERPT_LINES) -> str:
    """The window of at most ``max_lines`` lines that mentions the query terms most.

    Windows never start inside a code fence; a fence cut by the window is closed.
    """
    lines = text.split("\n")
    if len(lines) <= max_lines:
        return text
    fence_at = _fence_state(lines)
    scores = [len(terms.intersection(_WORD.findall(line.lower()))) for line in lines]
    starts = [i for i in range(len(lines) - max_lines + 1) if fence_at[i] is None] or [0]
    start = max(starts, key=lambda i: (sum(scores[i : i + max_lines]), -i))
    window = lines[start : start + max_lines]
    open_fence = fence_at[start + max_lines] if start + max_lines < len(lines) else None
    if open_fence is not None:
        window.append(open_fence)
    return "\n".join(window)


def _fence_state(lines: list[str]) -> list[str | None]:
    """For each line, the fence marker it sits inside (None when outside a fence)."""
    state: list[str | None] = []
    marker: str | None = None
    for line in lines:
        stripped = line.lstrip()
        state.append(marker)
        if marker is None and stripped.startswith(("```", "~~~")):
            marker = stripped[:3]
        elif marker is not None and stripped.startswith(marker):
            marker = None
    return state


def _terms(question: str) -> frozenset[str]:
    return frozenset(w for w in _WORD.findall(question.lower()) if w not in _STOP)
