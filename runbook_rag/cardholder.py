"""Finding cardholder data in normalised text: card numbers, track data and card verification values.

Card numbers are found in *digit runs*: digits joined by spaces, tabs, dashes, dots,
``+`` or a line break (a number wrapped onto the next line). A run is searched for a
valid number inside it, not judged once as a whole, so a card number that is followed
in the same run by its CVV or expiry (``NNNN NNNN NNNN NNNN 737``), or preceded by an
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

_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_BLANK = r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]"
# The next line's indentation, quote or comment marker, when a number wraps.
_WRAP = r"\n[ \t>#*/]{0,12}"
# Digits joined by a short gap: blanks, one dash, dot, plus, slash, underscore or comma,
# and line breaks (a number wrapped onto the next line).
_GAP = (
    rf"(?:{_BLANK}{{0,8}}[-{_DASHES}.+/_,]{_BLANK}{{0,3}}(?:{_WRAP})?"
    rf"|{_BLANK}{{0,8}}{_WRAP}"
    rf"|{_BLANK}{{1,8}})"
)
_RUN = re.compile(rf"[0-9]+(?:{_GAP}[0-9]+)*")
_GROUP = re.compile(r"[0-9]+")
_MMYY = re.compile(r"(?:0[1-9]|1[0-2])[0-9]{2}$")
_WORD = re.compile(r"[A-Za-z0-9_]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEX_TOKEN = re.compile(r"[0-9a-fA-F]+")
# Where a number may start or end inside a run: after or before a field separator.
_FIELD_GAPS = frozenset(" ,/")


def _gap_kind(gap: str) -> str:
    """' ' blanks or a line break; '-' any dash; else the punctuation mark itself. What
    follows a line break is the next line's continuation marker (``//``, ``#``), not a separator."""
    for ch in gap.split("\n", 1)[0]:
        if ch == "-" or ch in _DASHES:
            return "-"
        if ch in ".+/_,":
            return ch
    return " "


def _card_grouping(sizes: list[int], kinds: set[str]) -> bool:
    """Groups printed the way card numbers are: 4-4-4-4(-3), 4-6-5 or 4-6-4; blanks and
    dashes also allow the groupings seen in logs (groups of 3 to 6 digits), and a line
    break may fall anywhere (a wrapped number)."""
    if len(sizes) == 1:
        return True
    fours = all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4
    if fours or sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    if kinds == {" "}:
        return all(s >= 3 for s in sizes[:-1])
    return kinds <= {" ", "-"} and all(3 <= s <= 6 for s in sizes[:-1]) and 1 <= sizes[-1] <= 6


def _glued(text: str, start: int, end: int) -> tuple[bool, bool]:
    """Whether a run is part of a larger token that is not a card number on its left and
    on its right: a hex string or hash (``a3f41...``), a UUID, a version (``v4.1``), a
    negative number (``-4000...``), or ``<digit>@`` (``0@4648...``: a compound id).

    A label glued to the number (``txn_<pan>``, ``ORD-<pan>``, ``pan<pan>``) does
    not make it part of another token: a Luhn-valid card number there is still masked.
    """
    left = right = False
    if start > 0:
        before = text[start - 1]
        if before == "@" and start > 1 and text[start - 2].isdigit():
            left = True
        elif before == "-" or before in _DASHES:
            # A minus sign (after a blank, an operator or the start), not a label's dash.
            left = start == 1 or not _WORD.match(text[start - 2])
        elif _WORD.match(before):
            left = _hex_or_version(text, start, -1)
    if end < len(text) and _WORD.match(text[end]):
        right = _hex_or_version(text, end, 1)
    return left, right


def _hex_or_version(text: str, at: int, step: int) -> bool:
    """The word characters next to a run are hexadecimal (a hash) or a version's ``v``."""
    i = at if step > 0 else at - 1
    letters: list[str] = []
    while 0 <= i < len(text) and _WORD.match(text[i]) and len(letters) < 64:
        letters.append(text[i])
        i += step
    word = "".join(letters).replace("_", "")
    if word.lower() in ("v", "ver", "version", "rev", "build"):
        return True
    return bool(_HEX_TOKEN.fullmatch(word))


def _in_uuids(text: str) -> list[tuple[int, int]]:
    if "-" not in text:
        return []
    return [(m.start(), m.end()) for m in _UUID.finditer(text)]


def find_pans(text: str) -> Iterator[Finding]:
    """Card numbers in digit runs, and the CVV groups that follow them in the same run."""
    uuids = _in_uuids(text)
    for run in _RUN.finditer(text):
        if sum(ch.isdigit() for ch in run.group()) < 12:
            continue
        if any(a <= run.start() < b for a, b in uuids):
            continue
        yield from _pans_in_run(text, run.start(), run.end())


def _pans_in_run(text: str, start: int, end: int) -> Iterator[Finding]:
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(text, start, end)]
    gaps = [_gap_kind(text[a[1] : b[0]]) for a, b in itertools.pairwise(groups)]
    glued_left, glued_right = _glued(text, start, end)
    i = 0
    while i < len(groups):
        # A number starts at the run's start or after a field separator (never after a
        # dot: ``1.4000...`` is a decimal).
        after_dash = i > 0 and gaps[i - 1] == "-"
        if (i == 0 and glued_left) or (i > 0 and gaps[i - 1] not in _FIELD_GAPS and not after_dash):
            i += 1
            continue
        found = _pan_from(text, groups, gaps, i, glued_right)
        if found is not None and after_dash and found[2] != i + 1:
            found = None  # after a dash (``order-123-<pan>``), only a whole number of its own
        if found is None:
            i += 1
            continue
        pan_end, digits, next_group, cvv_end = found
        yield Finding(groups[i][0], pan_end, PAN, pan_mask(digits))
        if cvv_end > pan_end:
            yield Finding(pan_end, cvv_end, CVV, CVV_MASK)
        i = next_group


def _pan_from(
    text: str, groups: list[tuple[int, int]], gaps: list[str], i: int, glued_right: bool
) -> tuple[int, str, int, int] | None:
    """The longest card number starting at group ``i``, as ``(end, digits, next group,
    end of the CVV glued to it)``."""

    def ends_well(j: int) -> bool:
        # At the run's end (not glued to another token), or before a field separator or a
        # dash; never before a dot or a plus (``<16 digits>.50`` is an amount).
        return (j == len(groups) - 1 and not glued_right) or (j < len(groups) - 1 and gaps[j] in " ,/-")

    digits = ""
    kinds: set[str] = set()
    candidates: list[tuple[int, str, set[str]]] = []
    for j in range(i, len(groups)):
        if j > i:
            kinds = kinds | {gaps[j - 1]}
            # One separator throughout (blanks and dashes may mix).
            if len(kinds) > 1 and not kinds <= {" ", "-"}:
                break
        digits += text[groups[j][0] : groups[j][1]]
        if len(digits) > 19:
            break
        candidates.append((j, digits, kinds))
    for j, digits, kinds in reversed(candidates):
        sizes = [b - a for a, b in groups[i : j + 1]]
        # A short grouped number inside a longer grouped run (``1234 5678 9012 3456``) is not a card.
        inner_ok = i == 0 or j == i or len(digits) >= 14
        if inner_ok and ends_well(j) and _card_grouping(sizes, kinds or {" "}) and is_pan(digits):
            return groups[j][1], digits, j + 1, groups[j][1]
    # One long group: a card number at its start, glued to its CVV (and expiry).
    a, b = groups[i]
    if b - a >= 17 and ends_well(i):
        whole = text[a:b]
        for tail in (3, 4, 7, 8):
            head = whole[:-tail]
            if 14 <= len(head) <= 19 and is_pan(head):
                return a + len(head), head, i + 1, b
    return None


# ---------------------------------------------------------------- track data

_TRACK1 = re.compile(r"%?[Bb][0-9]{12,19}\^[^^\n]{2,26}\^[0-9]{4}[^?\n]{0,80}\??")
_TRACK2 = re.compile(r"[0-9]{12,19}=[0-9]{4}[0-9]{0,40}\??")
# EMV tag 57 (track 2 equivalent data): [57 <len>] <pan> D <yymm> [<service code> ... F]
_TRACK2_EMV = re.compile(r"([0-9]{12,23})[Dd]([0-9]{4})[0-9A-Fa-f]{0,60}")


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
    r"(?:card[_ -]?|amex[_ -]?)?(?:cvv2?|cvc2?|ccv|cvd|cid|csc|cvn|cav2|"
    r"card[_ -]?verification[_ -]?(?:value|code|number)|security[_ -]?code|card[_ -]?code|sec[_ -]?code)"
    r"(?:[_ -]?(?:code|number|value|no))?"
)
# Names that mean other things outside card data (a content id, a Cisco CSC, a node count):
# a CVV only on a line that speaks of cards.
_AMBIGUOUS_NAMES = frozenset({"cid", "csc", "cvn"})
_CARD_CONTEXT = re.compile(r"(?i)card|\bpan\b|amex|cvv|cvc|\[PAN \*|payment|issuer|visa|mastercard")
_CVV = re.compile(
    # At a word start, or a camelCase one (``customerCvv``, ``paymentCardCVV``).
    r"(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))"
    rf"(?P<name>(?i:{_CVV_NAME}))(?![a-z])"
    # Then punctuation, quotes, Markdown emphasis, table bars, "no.", "is", "of"...
    r"(?:[^\w\n]|_){0,8}?(?:(?i:no|nr|number|is|was|of|code|value)\b(?:[^\w\n]|_){0,4})?"
    r"(?<![0-9])([0-9]{3,4})(?![0-9A-Za-z])"
)
_CVV_TRIGGERS = (
    "cvv", "cvc", "ccv", "cvd", "cid", "csc", "cvn", "cav2", "verification", "security",
    "cardcode", "card_code", "card code", "card-code", "seccode", "sec_code", "sec code", "sec-code",
)  # fmt: skip
_CVV_HEADER = re.compile(rf"(?i)^\s*\W?\s*(?P<name>{_CVV_NAME})\s*\W?\s*$")
_CARD_HEADER = re.compile(r"(?i)card|\bpan\b|number|masked|account")
# A card number already masked in the source (``411111******1111``, ``XXXX-XXXX-XXXX-1111``,
# ``•••• 1111``, ``[PAN ****1111]``).
_MASKED_PAN = re.compile(r"(?:[0-9]{4,6}[ -]?)?(?:[*Xx#•·]{2,}[ -]?){1,4}[0-9]{4}\]?")
_EXPIRY = re.compile(
    r"^\s*[\"']?\s*(?:(?:0[1-9]|1[0-2])[/.-]?(?:[0-9]{2}|20[0-9]{2})|20[0-9]{2}-[01][0-9])\s*[\"']?\s*$"
)
_MONTH = re.compile(r"^\s*[\"']?(?:0?[1-9]|1[0-2])[\"']?\s*$")
_YEAR = re.compile(r"^\s*[\"']?(?:20)?[0-9]{2}[\"']?\s*$")
_DELIMS = (",", ";", "|", "\t")
# What may stand between a card number and its CVV on its line.
_AFTER_PAN = re.compile(
    r"(?P<expiry>(?:0[1-9]|1[0-2])[ \t]*[/.\-][ \t]*(?:20)?[0-9]{2}(?![0-9])"
    r"|20[0-9]{2}[/.\-](?:0[1-9]|1[0-2])(?![0-9]))"
    r"|(?P<number>[0-9]+)(?P<unit>[A-Za-z%]?)"
    r"|(?P<word>[A-Za-z]+)\.?"
    r"|(?P<newline>\n)"
    r"|(?P<other>[^\sA-Za-z0-9])"
    r"|[ \t]+"
)
_CONNECTORS = frozenset(
    {
        "exp", "expiry", "expires", "expiration", "valid", "thru", "through", "until", "date",
        "cvv", "cvv2", "cvc", "cvc2", "cid", "csc", "sec", "code", "security", "and", "mm", "yy",
    }
)  # fmt: skip


def _cvv_after_pan(text: str, pan_end: int) -> Finding | None:
    """The CVV that follows a card number on its line: after separators, an expiry and
    words such as "exp" or "cvv", the first 3-4 digit number (``<pan> 12/29 123``,
    ``<amex>/9876``). A lone 4-digit MMYY after the number is its expiry, not a CVV."""
    pos, steps, numbers = pan_end, 0, []
    while steps < 12 and pos < len(text):
        m = _AFTER_PAN.match(text, pos)
        if m is None or m.group("newline"):
            break
        pos, steps = m.end(), steps + 1
        if m.group("expiry") or m.group("other"):
            continue
        if m.group("word"):
            if m.group("word").lower() not in _CONNECTORS:
                break
            continue
        if m.group("number") is not None:
            number = m.group("number")
            if m.group("unit") or not 3 <= len(number) <= 4:
                break
            numbers.append((m.start("number"), m.end("number"), number))
            if len(number) == 3 or not _MMYY.match(number) or len(numbers) == 2:
                break
    if not numbers:
        return None
    start, end, number = numbers[-1]
    if len(numbers) == 1 and len(number) == 4 and _MMYY.match(number):
        return None  # PAN/MMYY: an expiry
    return Finding(start, end, CVV, CVV_MASK)


def find_cvvs(text: str, pans: list[Finding]) -> Iterator[Finding]:
    """CVVs under a field name, and CVV columns of delimited rows that hold a card number."""
    lowered = text.lower()
    if any(word in lowered for word in _CVV_TRIGGERS):
        for m in _CVV.finditer(text):
            if m.group("name").lower() in _AMBIGUOUS_NAMES and not _CARD_CONTEXT.search(
                _line_at(text, m.start())
            ):
                continue
            yield Finding(m.start(2), m.end(2), CVV, CVV_MASK)
    for pan in pans:
        after = _cvv_after_pan(text, pan.end) if pan.kind == PAN else None
        if after is not None:
            yield after
    yield from _cvv_columns(text, pans)


def _line_at(text: str, pos: int) -> str:
    start = text.rfind("\n", 0, pos) + 1
    end = text.find("\n", pos)
    return text[start : len(text) if end < 0 else end]


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
            headers = [
                (i, h.group("name").lower()) for i, f in enumerate(fields) if (h := _CVV_HEADER.match(f))
            ]
            if headers and (
                any(name not in _AMBIGUOUS_NAMES for _, name in headers)
                or any(_CARD_HEADER.search(f) for f in fields)
            ):
                header_columns[delim] = headers[0][0]
            elif headers:
                header_columns.pop(delim, None)
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
        elif nxt + 1 < len(fields) and _MONTH.match(fields[nxt]) and _YEAR.match(fields[nxt + 1]):
            nxt += 2  # the expiry in two columns: month, year
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
