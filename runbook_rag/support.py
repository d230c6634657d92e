"""Whether each sentence of an answer is supported by the passages it cites.

Runbook answers fail dangerously on specifics, so the rule has two steps:

1. **Specifics must be quoted.** A sentence is *unsupported* when it holds a specific that
   none of its cited passages contains: a command or any word of a code span or code
   block, a flag (``--force``, ``-n``), a number (``30``, ``0.05``, ``1,200``, or a
   number word such as ``five``), a host or dotted name (``api.example:443``,
   ``min.insync.replicas``), a path or URL, a channel (``#inc-payments``), or an
   identifier (``snake_case``, ``camelCase``, ``ALLCAPS``, hyphenated or
   letter-and-digit names such as ``payments-db`` or ``RF57``). A command the
   grounding check removed (``[command removed]``) makes its sentence unsupported too.
2. **Content words must be covered.** Otherwise the sentence is *supported* when at
   least :data:`COVERAGE_THRESHOLD` of its distinct content words (index terms: stemmed,
   stop words and function words left out) occur in its cited passages.

A sentence's cited passages are those of its own ``[n]`` markers; a sentence without a
marker takes those of its paragraph, else every passage the answer cites. Code blocks
belong to the sentence that introduces them. Numbers match whole numbers only, and the
number of a list item in a passage is an ordinal, not a fact a sentence can borrow. Not
checked: the note saying that commands were removed, and a line without a marker or a
specific that introduces what follows (it ends with a colon).

The threshold is calibrated on the hand-labelled sentences of
``evals/support_sentences.jsonl`` (``benchmarks/support_check.py``). What the rule cannot
see: a specific that the passage holds in another role (a ``10`` of another step), and a
claim in plain words that turns the passage around ("rejected" for "still approved").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .grounding import REMOVED_NOTE
from .lexical import is_identifier, terms

# Calibrated on evals/support_sentences.jsonl (benchmarks/support_check.py): the middle of
# the interval (0.63-0.66) where flagging unsupported sentences has its best F1.
COVERAGE_THRESHOLD = 0.65

REMOVED = "[command removed]"
_MARKER = re.compile(r"\[(\d{1,3})\]")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_SPAN = re.compile(r"`([^`\n]+)`")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`#*_(\"'])")
_ORDINAL = re.compile(r"^\s*\d{1,3}[.)](?=\s)", re.MULTILINE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,3}[.)])\s+")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_EMPHASIS = re.compile(r"\*\*|__")
_SPACE_BEFORE_STOP = re.compile(r"\s+([.,;:!?])(?=\s|$)")
_EDGE = "()[]{}<>,;:!?\"'`*"
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")
_QUANTITY = re.compile(r"(\d+(?:[.,:]\d+)*)(?:%|[a-zA-Z]{1,3}|/[a-z]{1,3})?")
_RANGE = re.compile(r"(\d+(?:[.,]\d+)?)[-\u2013](\d+(?:[.,]\d+)?)")
_CAMEL = re.compile(r"[a-z][A-Z]")
_CAPS = re.compile(r"[A-Z][A-Z0-9]+")
_NUMBER_WORDS = {
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "twenty": "20",
    "thirty": "30",
    "hundred": "100",
}
# Words that carry no claim of their own: pronouns, modals, connectives, generic verbs,
# units of time (their numbers are checked as specifics), and the words an answer uses to
# talk about the runbook it quotes.
_FUNCTION_WORDS = """
    i me my we us our you your he she him her his its itself they them themselves who whom
    whose which what when where why how than so too very just only also even still yet can
    could may might must shall should would do does did done doing have has had having been
    being am were get gets got make makes made need needs one ones some any all each every
    both either neither other another such same own more most less least much many few
    several about above below over under up down out off again once here after before during
    while until till since because though although whether via per like unlike first next
    finally later now already usually normally typically often always never otherwise
    instead else rather runbook runbooks excerpt excerpts passage passages section sections
    step steps according says say said describes described note noted following follow
    follows use using used within go goes going bring keep stay stays remain remains
    probably likely perhaps problem issue thing things way second seconds minute minutes
    hour hours
"""


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    """One sentence of an answer and whether its cited passages support it.

    ``citations`` are the numbers it was checked against (its own, else its paragraph's,
    else the answer's: ``cited_by``); ``missing`` are the specifics no cited passage
    holds; ``coverage`` is the share of its content words the passages hold (1.0 when it
    has none); ``reason`` is ``supported``, ``specific``, ``coverage``, ``removed_command``
    or ``uncited`` (the answer cites no passage it can be checked against).
    """

    text: str
    citations: tuple[int, ...]
    cited_by: str
    supported: bool
    coverage: float
    missing: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "citations": list(self.citations),
            "cited_by": self.cited_by,
            "supported": self.supported,
            "coverage": round(self.coverage, 4),
            "missing": list(self.missing),
            "reason": self.reason,
        }


def answer_support(
    text: str, passages: Mapping[int, str], *, threshold: float = COVERAGE_THRESHOLD
) -> tuple[SentenceSupport, ...]:
    """Every sentence of the answer ``text``, checked against ``passages`` (the text of
    each cited passage, by citation number). A citation with no passage supports nothing."""
    everything = tuple(sorted({n for n in map(int, _MARKER.findall(text))}))
    out = []
    for paragraph in _paragraphs(text):
        own_markers = tuple(sorted({int(n) for n in _MARKER.findall(paragraph)}))
        for sentence in _sentences(paragraph):
            numbers = tuple(sorted({int(n) for n in _MARKER.findall(sentence)}))
            cited_by = "own"
            if not numbers:
                numbers, cited_by = (own_markers, "paragraph") if own_markers else (everything, "answer")
            if cited_by != "own" and (
                not _claims(sentence) or (sentence.rstrip().endswith(":") and not specifics(sentence))
            ):
                continue  # "To fail over the primary:" introduces what follows; it claims nothing
            held = [passages[n] for n in numbers if n in passages]
            out.append(
                check_sentence(sentence, held, threshold=threshold, citations=numbers, cited_by=cited_by)
            )
    return tuple(out)


def check_sentence(
    sentence: str,
    passages: Sequence[str],
    *,
    threshold: float = COVERAGE_THRESHOLD,
    citations: tuple[int, ...] = (),
    cited_by: str = "own",
) -> SentenceSupport:
    """Whether ``passages`` (the sentence's cited passages' text) support ``sentence``."""
    shown = _SPACE_BEFORE_STOP.sub(r"\1", " ".join(_MARKER.sub("", sentence).split()))
    if not passages:
        return SentenceSupport(shown, citations, cited_by, False, 0.0, (), "uncited")
    # A list item's number is an ordinal, not a fact a sentence can borrow.
    hay = " ".join(_ORDINAL.sub(" ", "\n".join(passages)).split())
    missing = tuple(dict.fromkeys(s for s in specifics(sentence) if not _holds(hay, s)))
    words = content_terms(sentence)
    known = set(content_terms(hay))
    coverage = sum(1 for w in words if w in known) / len(words) if words else 1.0
    if REMOVED in sentence:
        reason = "removed_command"
    elif missing:
        reason = "specific"
    elif coverage < threshold:
        reason = "coverage"
    else:
        reason = "supported"
    return SentenceSupport(shown, citations, cited_by, reason == "supported", coverage, missing, reason)


def specifics(sentence: str) -> list[str]:
    """The specifics of ``sentence`` that a cited passage must hold, as written."""
    text = _MARKER.sub(" ", sentence).replace(REMOVED, " ")
    out: list[str] = []
    code: list[str] = []
    in_fence = False
    prose_lines = []
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            code.append(line)
        else:
            prose_lines.append(line)
    prose = "\n".join(prose_lines)
    code.extend(_SPAN.findall(prose))
    prose = _SPAN.sub(" ", prose)
    for snippet in code:
        out.extend(tok for raw in snippet.split() if (tok := raw.strip("'\"")) and tok != "\\")
    start = True
    for raw in prose.split():
        token = raw.strip(_EDGE).rstrip(".")
        if token and _is_specific(token, sentence_start=start):
            out.append(token)
        start = raw.endswith((".", "!", "?", ":"))
    return out


def content_terms(text: str) -> list[str]:
    """The distinct content words of ``text``: index terms without identifiers, numbers
    and function words (the specifics are checked on their own)."""
    plain = _MARKER.sub(" ", text)
    found = [
        t
        for t in terms(plain)
        if not t.startswith("=") and not t.isdigit() and t not in _stemmed_function_words()
    ]
    return list(dict.fromkeys(found))


def _is_specific(token: str, *, sentence_start: bool) -> bool:
    if len(token) < 2 and not token.isdigit():
        return False
    if token.startswith("#") or "/" in token or token.startswith("-") or "_" in token:
        return True
    if any(c.isdigit() for c in token):
        return True
    if token.lower() in _NUMBER_WORDS:
        return True
    if _CAMEL.search(token) or _CAPS.fullmatch(token):
        return True
    if "-" in token.strip("-") or token.count(".") >= 1:
        return True
    return is_identifier(token)


def _holds(hay: str, specific: str) -> bool:
    """Whether the passages' text ``hay`` contains ``specific`` (numbers as whole numbers,
    capitals as whole words, anything else as text in any case)."""
    word = specific.lower()
    if word in _NUMBER_WORDS:
        return bool(re.search(rf"\b{word}\b", hay, re.IGNORECASE)) or _has_number(hay, _NUMBER_WORDS[word])
    span = _RANGE.fullmatch(specific)
    if span:
        return all(_holds(hay, part) for part in span.groups())
    quantity = _QUANTITY.fullmatch(specific)
    if quantity and not specific.isalpha():
        return _has_number(hay, quantity.group(1))
    if _CAPS.fullmatch(specific):
        return bool(re.search(rf"(?<![\w]){re.escape(specific)}(?![\w])", hay, re.IGNORECASE))
    low = hay.lower()
    return word in low or word.replace("-", " ") in low


def _has_number(hay: str, number: str) -> bool:
    plain = number.replace(",", "")
    flat = re.sub(r"(?<=\d),(?=\d{3})", "", hay)
    return bool(re.search(rf"(?<![\d.]){re.escape(plain)}(?!\d|[.,]\d)", flat))


def _claims(sentence: str) -> bool:
    return bool(content_terms(sentence) or specifics(sentence))


def _paragraphs(text: str) -> list[str]:
    """Paragraphs and list items of ``text``; a code block joins the paragraph before it
    when that ends with ``:`` or the block follows it directly."""
    note = re.escape(REMOVED_NOTE).replace(r"\{n\}", r"\d+").replace(r"\{s\}", "s?")
    text = re.sub(note, "", text)
    out: list[list[str]] = []
    current: list[str] = []
    in_fence = False
    broken = False  # a blank line since the last line of ``current``
    for line in text.split("\n"):
        fence = bool(_FENCE.match(line))
        if in_fence or fence:
            opening = fence and not in_fence
            if opening and current and broken and not current[-1].rstrip().endswith(":"):
                out.append(current)
                current = []
            in_fence = not in_fence if fence else in_fence
            current.append(line)
            broken = False
            continue
        if not line.strip():
            broken = True
            continue
        item = bool(_LIST_ITEM.match(line) or _HEADING.match(line))
        if current and (broken or item):
            out.append(current)
            current = []
        current.append(_HEADING.sub("", _LIST_ITEM.sub("", line)))
        broken = False
    if current:
        out.append(current)
    return [_EMPHASIS.sub("", "\n".join(p)).strip() for p in out if "".join(p).strip()]


def _sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph: a code block stays with the sentence before it (or
    stands alone), and a run of bare markers joins the sentence it follows."""
    out: list[str] = []
    prose: list[str] = []
    code: list[str] = []
    in_fence = False

    def flush_prose() -> None:
        for part in _SENTENCE_END.split(" ".join(" ".join(prose).split())):
            if not part.strip():
                continue
            if out and not _MARKER.sub("", part).strip(" ."):
                out[-1] += " " + part
            else:
                out.append(part)
        prose.clear()

    for line in paragraph.split("\n"):
        if _FENCE.match(line) or in_fence:
            if not in_fence and prose:
                flush_prose()
            code.append(line)
            if _FENCE.match(line):
                in_fence = not in_fence
                if not in_fence:
                    block = "\n".join(code)
                    out[-1:] = [out[-1] + "\n" + block] if out else [block]
                    code.clear()
            continue
        prose.append(line)
    if code:  # a block never closed
        block = "\n".join(code)
        out[-1:] = [out[-1] + "\n" + block] if out else [block]
    flush_prose()
    return out


@functools.cache
def _stemmed_function_words() -> frozenset[str]:
    return frozenset(t for w in _FUNCTION_WORDS.split() for t in terms(w))
