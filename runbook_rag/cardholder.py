"""Finding cardholder data in normalised text: card numbers, track data and card verification values.

Card numbers are found in *digit runs*: digits joined by spaces, tabs, dashes, dots,
``+`` or a line break (a number wrapped onto the next line). A run is searched for a
valid number inside it, not judged once as a whole, so a card number that is followed
in the same run by its CVV or expiry (``4111 1111 1111 1111 737``), or preceded by an
order number, is still found; the 3-4 digit groups that follow a card number in its
run are removed as its CVV. A number is a card number when it has a known brand
prefix, a length valid for that brand and a valid Luhn check digit; grouped forms must
be grouped the way cards are printed.

Every finder yields :class:`Finding` spans over the text it was given; the redactor
maps them back when the text was a decoded view of the source.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

PAN = "pan"
TRACK = "track_data"
CVV = "cvv"
TRACK_MASK = "[TRACK DATA]"
CVV_MASK = "[CVV]"


@dataclass(frozen=True, slots=True)
class Finding:
    """A span of text to mask, the kind of value it held, and its mask."""

    start: int
    end: int
    kind: str
    mask: str


def pan_mask(digits: str) -> str:
    """The mask of a card number: its brand-neutral last four digits, never more."""
    return f"[PAN ****{digits[-4:]}]"


_BRANDS: tuple[tuple[tuple[int, int], int, frozenset[int]], ...] = (
    # (prefix range, prefix length, valid lengths)
    ((4, 4), 1, frozenset({13, 16, 19})),  # Visa
    ((51, 55), 2, frozenset({16})),  # Mastercard
    ((2221, 2720), 4, frozenset({16})),  # Mastercard 2-series
    ((34, 34), 2, frozenset({15})),  # Amex
    ((37, 37), 2, frozenset({15})),  # Amex
    ((6011, 6011), 4, frozenset(range(16, 20))),  # Discover
    ((644, 649), 3, frozenset(range(16, 20))),  # Discover
    ((65, 65), 2, frozenset(range(16, 20))),  # Discover / RuPay
    ((3528, 3589), 4, frozenset(range(16, 20))),  # JCB
    ((300, 305), 3, frozenset(range(14, 20))),  # Diners Club
    ((36, 36), 2, frozenset(range(14, 20))),  # Diners Club International
    ((38, 39), 2, frozenset(range(14, 20))),  # Diners Club
    ((62, 62), 2, frozenset(range(16, 20))),  # UnionPay
    ((81, 81), 2, frozenset(range(16, 20))),  # UnionPay / RuPay
    ((50, 50), 2, frozenset(range(12, 20))),  # Maestro
    ((56, 58), 2, frozenset(range(12, 20))),  # Maestro
    ((67, 67), 2, frozenset(range(12, 20))),  # Maestro
    ((6304, 6304), 4, frozenset(range(12, 20))),  # Maestro UK
    ((2200, 2204), 4, frozenset(range(16, 20))),  # Mir
    ((60, 60), 2, frozenset({16})),  # RuPay
    ((9792, 9792), 4, frozenset({16})),  # Troy
)


def is_pan(digits: str) -> bool:
    """A known brand prefix, a length valid for that brand, and a valid Luhn check digit."""
    if not 12 <= len(digits) <= 19 or not digits.isascii() or not digits.isdigit():
        return False
    brand = any(
        low <= int(digits[:size]) <= high and len(digits) in lengths for (low, high), size, lengths in _BRANDS
    )
    return brand and luhn_valid(digits)


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a digit string."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# ---------------------------------------------------------------- digit runs

# Digits joined by a short gap: blanks, one dash, dot or plus, a line break (and the
# next line's indentation or quote marker). Commas, colons and slashes end a run: they
# separate fields (CSV rows, JSON arrays, PAN/MMYY), not the groups of one number.
_GAP = (
    r"(?:[ \t\u00a0]{0,3}[-.+][ \t\u00a0]{0,3}(?:\n[ \t>]{0,8})?"
    r"|[ \t\u00a0]{0,3}\n[ \t>]{0,8}"
    r"|[ \t\u00a0]{1,3})"
)
_RUN = re.compile(rf"[0-9]+(?:{_GAP}[0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
_MMYY = re.compile(r"(?:0[1-9]|1[0-2])[0-9]{2}$")
_WORD = re.compile(r"[A-Za-z0-9_]")


def _gap_kind(gap: str) -> str:
    for mark in "-.+":
        if mark in gap:
            return mark
    return " "  # blanks and line breaks


def _card_grouping(sizes: list[int], kind: str) -> bool:
    """Groups printed the way card numbers are: 4-4-4-4(-3), 4-6-5 or 4-6-4; blanks and
    dashes also allow the looser groupings seen in logs (first group of 3+, none over 8)."""
    if len(sizes) == 1:
        return True
    fours = all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4
    if fours or sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return kind in " -" and sizes[0] >= 3 and all(1 <= s <= 8 for s in sizes)


def _glued(text: str, start: int, end: int) -> tuple[bool, bool]:
    """Whether a run is part of a larger token on its left and on its right: a letter,
    digit or underscore next to it (hex strings, versions like ``v4``, ``x4111``),
    ``<digit>@`` before it (``0@4648...``: a compound id such as a block-group hash), or a
    minus sign."""
    left = start > 0 and bool(_WORD.match(text[start - 1]))
    if start > 1 and text[start - 1] == "@" and text[start - 2].isdigit():
        left = True
    if start > 0 and text[start - 1] == "-":
        left = True  # a minus sign: a negative number (query ids, offsets), not a card
    right = end < len(text) and bool(_WORD.match(text[end]))
    return left, right


def find_pans(text: str) -> Iterator[Finding]:
    """Card numbers in digit runs, and the CVV groups that follow them in the same run."""
    for run in _RUN.finditer(text):
        if sum(ch.isdigit() for ch in run.group()) < 12:
            continue
        yield from _pans_in_run(text, run.start(), run.end())


def _pans_in_run(text: str, start: int, end: int) -> Iterator[Finding]:
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(text, start, end)]
    gaps = [_gap_kind(text[a[1] : b[0]]) for a, b in itertools.pairwise(groups)]
    glued_left, glued_right = _glued(text, start, end)
    i = 0
    while i < len(groups):
        # A number starts at the run's start, or after a blank gap (never after a dot:
        # ``1.4111...`` is a decimal).
        if (i == 0 and glued_left) or (i > 0 and gaps[i - 1] != " "):
            i += 1
            continue
        found = _pan_from(text, groups, gaps, i, glued_right)
        if found is None:
            i += 1
            continue
        pan_end, digits, next_group, cvv_end = found
        yield Finding(groups[i][0], pan_end, PAN, pan_mask(digits))
        if cvv_end > pan_end:
            yield Finding(pan_end, cvv_end, CVV, CVV_MASK)
        # The 3-4 digit group right after it is its CVV (after its expiry, when one comes first).
        short = []
        for k in range(next_group, min(next_group + 2, len(groups))):
            a, b = groups[k]
            if gaps[k - 1] != " " or not 3 <= b - a <= 4 or (k == len(groups) - 1 and glued_right):
                break
            short.append(k)
        if len(short) == 2 and _MMYY.match(text, *groups[short[0]]):
            short = short[1:]
        if short:
            a, b = groups[short[0]]
            yield Finding(a, b, CVV, CVV_MASK)
            next_group = short[0] + 1
        i = next_group


def _pan_from(
    text: str, groups: list[tuple[int, int]], gaps: list[str], i: int, glued_right: bool
) -> tuple[int, str, int, int] | None:
    """The longest card number starting at group ``i``, as ``(end, digits, next group,
    end of the CVV glued to it)``."""

    def ends_well(j: int) -> bool:
        # At the run's end (not glued to a word), or before a blank or dash gap; never
        # before a dot (``4111111111111111.50`` is an amount).
        return (j == len(groups) - 1 and not glued_right) or (j < len(groups) - 1 and gaps[j] in " -")

    kind = gaps[i] if i < len(gaps) else " "
    digits = ""
    candidates: list[tuple[int, str]] = []
    for j in range(i, len(groups)):
        if j > i and gaps[j - 1] != kind:
            break
        digits += text[groups[j][0] : groups[j][1]]
        if len(digits) > 19:
            break
        candidates.append((j, digits))
    for j, digits in reversed(candidates):
        sizes = [b - a for a, b in groups[i : j + 1]]
        if ends_well(j) and _card_grouping(sizes, kind) and is_pan(digits):
            return groups[j][1], digits, j + 1, groups[j][1]
    # One long group: a card number at its start, glued to its CVV (and expiry).
    a, b = groups[i]
    if b - a > 12 and ends_well(i):
        whole = text[a:b]
        for tail in (3, 4, 7, 8):
            head = whole[:-tail]
            if 12 <= len(head) <= 19 and is_pan(head):
                return a + len(head), head, i + 1, b
    return None


# ---------------------------------------------------------------- track data

_TRACK1 = re.compile(r"%?B[0-9]{12,19}\^[^^\n]{2,26}\^[0-9]{4}[^?\n]{0,80}\??")
_TRACK2 = re.compile(r"[0-9]{12,19}=[0-9]{4}[0-9]{0,40}\??")
# EMV tag 57 (track 2 equivalent data): [57 <len>] <pan> D <yymm> <service code> ... [F]
_TRACK2_EMV = re.compile(r"([0-9]{12,23})[Dd]([0-9]{4})[0-9]{3}[0-9A-Fa-f]{0,60}")


def find_track_data(text: str) -> Iterator[Finding]:
    """Magnetic-stripe track 1 and 2 data and EMV track-2-equivalent data: removed outright."""
    for m in _TRACK1.finditer(text):
        yield Finding(m.start(), m.end(), TRACK, TRACK_MASK)
    for m in _TRACK2.finditer(text):
        start = m.start()
        if start > 0 and text[start - 1].isdigit():
            continue  # the digits go on to the left: not the start of the card number
        yield Finding(start - (start > 0 and text[start - 1] == ";"), m.end(), TRACK, TRACK_MASK)
    for m in _TRACK2_EMV.finditer(text):
        if m.start() > 0 and _WORD.match(text[m.start() - 1]):
            continue
        run = m.group(1)
        # The tag and length may be glued in front of the card number.
        if any(is_pan(run[k:]) for k in range(0, len(run) - 11)):
            yield Finding(m.start(), m.end(), TRACK, TRACK_MASK)


# ---------------------------------------------------------------- CVV

_CVV_NAME = (
    r"(?:card[_ -]?)?(?:cvv2?|cvc2?|cid|csc|cvn|cav2|"
    r"card[_ -]?verification[_ -]?(?:value|code|number)|security[_ -]?code)"
    r"(?:[_ -]?(?:code|number|value|no))?"
)
_CVV = re.compile(
    rf"(?i)(?<![A-Za-z]){_CVV_NAME}(?![A-Za-z])"
    r"[\"'>\]]*\s*(?:[:=]+>?|\bis\b|\bwas\b)?\s*[\"'(]?\s*([0-9]{3,4})(?![0-9])"
)
_CVV_TRIGGERS = ("cvv", "cvc", "cid", "csc", "cvn", "cav2", "verification", "security")
_CVV_HEADER = re.compile(rf"(?i)^\s*\W?\s*{_CVV_NAME}\s*\W?\s*$")
# A card number already masked in the source (``411111******1111``, ``****1111``, ``[PAN ****1111]``).
_MASKED_PAN = re.compile(r"(?:[0-9]{4,6})?(?:[*Xx#]{4,}|\*{2,}[ -]?)[0-9]{4}\]?")
_EXPIRY = re.compile(r"^\s*(?:0[1-9]|1[0-2])[/-]?(?:[0-9]{2}|20[0-9]{2})\s*$|^\s*20[0-9]{2}-[01][0-9]\s*$")
_DELIMS = (",", ";", "|", "\t")
# On a card number's line: its expiry, then 3-4 digits (its CVV).
_EXPIRY_THEN_CVV = re.compile(
    r"[ \t]*[,;|/]?[ \t]*(?:(?i:exp\w*)[\"']?[ \t]*[:=]?[ \t]*)?"
    r"(?:0[1-9]|1[0-2])[ \t]*[/-][ \t]*(?:20)?[0-9]{2}"
    r"[ \t]*[,;| \t][ \t]*(?:(?i:cv\w*|cid|csc)[\"']?[ \t]*[:=]?[ \t]*)?([0-9]{3,4})(?![0-9])"
)


def find_cvvs(text: str, pans: list[Finding]) -> Iterator[Finding]:
    """CVVs under a field name, and CVV columns of delimited rows that hold a card number."""
    lowered = text.lower()
    if any(word in lowered for word in _CVV_TRIGGERS):
        for m in _CVV.finditer(text):
            yield Finding(m.start(1), m.end(1), CVV, CVV_MASK)
    for pan in pans:
        after = _EXPIRY_THEN_CVV.match(text, pan.end) if pan.kind == PAN else None
        if after is not None:
            yield Finding(after.start(1), after.end(1), CVV, CVV_MASK)
    yield from _cvv_columns(text, pans)


def _cvv_columns(text: str, pans: list[Finding]) -> Iterator[Finding]:
    if not any(d in text for d in _DELIMS):
        return
    pan_at = sorted(p.start for p in pans if p.kind == PAN)
    header_columns: dict[str, int] = {}
    offset = 0
    for line in text.split("\n"):
        delim = max(_DELIMS, key=line.count)
        if line.count(delim) >= 1:
            fields, starts, pos = line.split(delim), [], offset
            for field in fields:
                starts.append(pos)
                pos += len(field) + 1
            columns = [i for i, f in enumerate(fields) if _CVV_HEADER.match(f)]
            if columns:
                header_columns[delim] = columns[0]
            else:
                yield from _cvv_fields(fields, starts, delim, header_columns, pan_at, offset, len(line))
        else:
            header_columns.clear()
        offset += len(line) + 1


def _cvv_fields(
    fields: list[str],
    starts: list[int],
    delim: str,
    header_columns: dict[str, int],
    pan_at: list[int],
    offset: int,
    length: int,
) -> Iterator[Finding]:
    def is_cvv(field: str) -> bool:
        value = field.strip().strip("\"'")
        return value.isdigit() and 3 <= len(value) <= 4

    def finding(i: int) -> Finding:
        value = fields[i].strip().strip("\"'")
        at = starts[i] + fields[i].index(value)
        return Finding(at, at + len(value), CVV, CVV_MASK)

    column = header_columns.get(delim)
    if column is not None and column < len(fields) and is_cvv(fields[column]):
        yield finding(column)
        return
    # No header: a 3-4 digit field right after the card number (or after its expiry).
    row_pans = [p for p in pan_at if offset <= p < offset + length]
    for i, field in enumerate(fields):
        holds_pan = any(starts[i] <= p < starts[i] + len(field) for p in row_pans)
        if not holds_pan and not _MASKED_PAN.search(field):
            continue
        nxt = i + 1
        if nxt < len(fields) and _EXPIRY.match(fields[nxt]):
            nxt += 1
        if nxt < len(fields) and is_cvv(fields[nxt]):
            yield finding(nxt)
        return


def find_cardholder_data(text: str) -> list[Finding]:
    """Every card number, track and CVV finding in ``text`` (already normalised)."""
    found = list(find_track_data(text))
    pans = list(find_pans(text))
    found.extend(pans)
    found.extend(find_cvvs(text, pans))
    return found
