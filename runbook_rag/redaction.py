"""Redaction of cardholder data and secrets, and removal of hidden text.

Every source document goes through :func:`redact_document` right after parsing, and
every query through :meth:`Redactor.redact` before it is embedded: nothing
downstream (chunking, hashing, embedding, the store, logs, reports) ever sees a raw
card number or secret.

Masks state the type and never more than the last four digits of a card number:
``[PAN ****1111]``, ``[SECRET aws_access_key]``. Track data and card verification
values are removed outright (``[TRACK DATA]``, ``[CVV]``). No value, hash or prefix
of a secret is kept.

Before detection, text is normalised: NFKC, every Unicode decimal digit folded to
ASCII (so a card number in full-width or Arabic-Indic digits is still found, and
the detectors match ``[0-9]`` only), and zero-width, bidi-control and tag
characters removed. HTML comments are removed from indexed documents. Newlines are
always preserved, so line numbers stay true.

Encoded values are found on a decoded view and masked in the original: HTML numeric
and named entities (``&#52;``, ``&nbsp;``, with or without the semicolon), URL escapes
(``%3D``, ``%20``), JSON unicode escapes, and base64 blobs (plain or URL-escaped) that
decode to card data, track data or a private key.

The detectors live in :mod:`runbook_rag.cardholder` (card numbers, track data, CVV)
and :mod:`runbook_rag.secret_rules` (secrets).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import html
import itertools
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .cardholder import CVV, PAN, TRACK, Finding, find_cardholder_data, is_pan, luhn_valid
from .records import Document
from .secret_rules import entropy, find_secrets, is_placeholder

__all__ = [
    "CARDHOLDER_KINDS",
    "CVV",
    "PAN",
    "TRACK",
    "Finding",
    "Redacted",
    "Redactor",
    "entropy",
    "is_pan",
    "is_placeholder",
    "luhn_valid",
    "normalise",
    "redact",
    "redact_document",
    "strip_html_comments",
]

# Card numbers, track data and card verification values: what `build --strict` reports.
CARDHOLDER_KINDS = frozenset({PAN, TRACK, CVV})

# Zero-width, bidi controls, BOM, soft hyphen, invisible operators, tag characters.
_HIDDEN = re.compile(
    "[\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\u3164\ufeff\uffa0\U000e0000-\U000e007f]"
)
_HTML_COMMENT = re.compile(r"<!--.*?(?:-->|\Z)", re.S)


@dataclass(frozen=True, slots=True)
class Redacted:
    """Redacted text and how many values of each kind were masked."""

    text: str
    counts: dict[str, int] = field(default_factory=dict)


def normalise(text: str) -> str:
    """NFKC, ASCII digits, no hidden characters, ``\n`` line breaks (as Markdown counts them)."""
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = _HIDDEN.sub("", text)
    if not text.isascii():
        text = _OTHER_DIGIT.sub(lambda m: str(unicodedata.decimal(m.group())), text)
    return text


# Python's \d matches every Unicode decimal digit; these are the ones that are not ASCII.
_OTHER_DIGIT = re.compile(r"(?![0-9])\d")


def strip_html_comments(text: str) -> str:
    """Remove ``<!-- ... -->`` (text a reader of the rendered page never sees), keeping newlines."""
    return _HTML_COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)


# ---------------------------------------------------------------- decoded views

_ENCODED = re.compile(
    r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?|%[0-9A-Fa-f]{2}|\\u[0-9a-fA-F]{4}"
)


@dataclass(frozen=True, slots=True)
class _View:
    """Text with its HTML entities and URL escapes decoded, and the way back to the source.

    ``segments`` holds ``(view_start, view_end, source_start, source_end)`` of every
    decoded escape; between them view and source run in step.
    """

    text: str
    segments: list[tuple[int, int, int, int]]
    view_starts: list[int]

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The source span of a view span, widened to whole escapes."""
        i = bisect.bisect_right(self.view_starts, start) - 1  # the escape at or before the start
        if i >= 0:
            _, v1, s0, s1 = self.segments[i]
            start = s0 if start < v1 else s1 + (start - v1)
        j = bisect.bisect_left(self.view_starts, end) - 1  # the escape that begins before the end
        if j >= 0:
            _, v1, _, s1 = self.segments[j]
            end = s1 if end <= v1 else s1 + (end - v1)
        return start, end


def _decoded_view(text: str) -> _View | None:
    """The decoded view of ``text``, or None when it holds no escapes."""
    parts: list[str] = []
    segments: list[tuple[int, int, int, int]] = []
    last = view_len = 0
    for m in _ENCODED.finditer(text):
        token = m.group()
        if token[0] in "%\\":
            code = int(token[2:] if token[0] == "\\" else token[1:], 16)
            decoded = chr(code) if code < 0x80 or token[0] == "\\" else token
        else:
            decoded = html.unescape(token)
        if decoded == token:
            continue
        decoded = normalise(decoded)
        parts.append(text[last : m.start()])
        view_len += m.start() - last
        segments.append((view_len, view_len + len(decoded), m.start(), m.end()))
        parts.append(decoded)
        view_len += len(decoded)
        last = m.end()
    if not segments:
        return None
    parts.append(text[last:])
    return _View("".join(parts), segments, [s[0] for s in segments])


_BASE64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{16,4096}={0,2}(?![A-Za-z0-9+/=_-])")
_PRIVATE_KEY = re.compile(r"-----BEGIN[A-Z ]*PRIVATE KEY")


def _base64_findings(text: str, depth: int = 0) -> Iterator[Finding]:
    """Base64 blobs that decode to card data, track data or a private key: masked whole.

    What a blob decodes to is searched like any text, with its own escapes and blobs (two
    levels deep), so base64 of URL-escaped, entity-escaped or base64 card data is found too.
    """
    for m in _BASE64.finditer(text):
        blob = m.group().rstrip("=")
        if blob.islower() or blob.isupper() or blob.isdigit() or len(blob) % 4 == 1:
            continue  # a word or a number, not an encoding
        try:
            raw = base64.b64decode(blob.replace("-", "+").replace("_", "/") + "=" * (-len(blob) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(raw) > 3 and raw[1::2].count(0) > 0.9 * (len(raw) // 2):
            raw = raw[::2]  # UTF-16-LE text: its ASCII bytes
        printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in raw)
        if printable < 0.9 * len(raw):
            continue
        decoded = normalise(raw.decode("latin-1"))
        if _PRIVATE_KEY.search(decoded):
            yield Finding(m.start(), m.end(), "private_key", "[SECRET private_key]")
            continue
        inner = [f for f in find_cardholder_data(decoded) if f.kind in (PAN, TRACK)]
        if not inner and depth < 2:
            view = _decoded_view(decoded)
            nested = view.text if view is not None else decoded
            inner = [f for f in find_cardholder_data(nested) if f.kind in (PAN, TRACK)]
            inner += list(_base64_findings(nested, depth + 1))
        if inner:
            kind = TRACK if any(f.kind == TRACK for f in inner) else PAN
            mask = "[TRACK DATA]" if kind == TRACK else next(f.mask for f in inner if f.kind == PAN)
            yield Finding(m.start(), m.end(), kind, mask)


# ---------------------------------------------------------------- the redactor


def _detect(text: str) -> Iterator[Finding]:
    yield from find_cardholder_data(text)
    yield from find_secrets(text)


class Redactor:
    """Finds and masks card data and secrets. Stateless and thread-safe."""

    def redact(self, text: str) -> Redacted:
        """Normalise ``text`` and mask every finding; counts per kind, never values."""
        text = normalise(text)
        groups = _merge(self.find(text))
        if not groups:
            return Redacted(text, {})
        out, last, counts = [], 0, Counter[str]()
        for start, end, mask, kinds in groups:
            out.append(text[last:start])
            # Keep the newlines a multi-line value spanned, so line numbers stay true.
            out.append(mask + "\n" * text.count("\n", start, end))
            last = end
            counts.update(kinds)
        out.append(text[last:])
        return Redacted("".join(out), dict(counts))

    def find(self, text: str) -> list[Finding]:
        """Every finding in ``text`` (already normalised), on the text and on its decoded view."""
        found = list(_detect(text))
        view = _decoded_view(text)
        if view is not None:
            for f in itertools.chain(_detect(view.text), _base64_findings(view.text)):
                start, end = view.source_span(f.start, f.end)
                found.append(Finding(start, end, f.kind, f.mask))
        found.extend(_base64_findings(text))
        return found


def _merge(findings: list[Finding]) -> list[tuple[int, int, str, frozenset[str]]]:
    """Overlapping findings become one masked span (so no tail of a longer value survives);
    the earliest, longest finding gives the mask."""
    merged: list[tuple[int, int, str, frozenset[str]]] = []
    for f in sorted(findings, key=lambda f: (f.start, -f.end)):
        if f.end <= f.start:
            continue
        if merged and f.start < merged[-1][1]:
            start, end, mask, kinds = merged[-1]
            # A value inside another (a card number inside its track data) is not counted
            # again, unless it is cardholder data inside a secret: that must still be reported.
            extends = f.end > end or (f.kind in CARDHOLDER_KINDS and not kinds & CARDHOLDER_KINDS)
            merged[-1] = (start, max(end, f.end), mask, kinds | {f.kind} if extends else kinds)
        else:
            merged.append((f.start, f.end, f.mask, frozenset({f.kind})))
    return merged


_DEFAULT = Redactor()


def redact(text: str) -> Redacted:
    """Redact with the default detectors."""
    return _DEFAULT.redact(text)


def redact_document(doc: Document) -> tuple[Document, dict[str, int]]:
    """The document with hidden text removed and every finding masked, and the counts."""
    body = redact(strip_html_comments(doc.text))
    title = redact(doc.title)
    counts = Counter(body.counts)
    counts.update(title.counts)
    metadata = {}
    for key, value in doc.metadata.items():
        masked = redact(value)
        metadata[key] = masked.text
        counts.update(masked.counts)
    source = redact(doc.source).text  # a file may be named after a card number
    clean = replace(
        doc,
        doc_id=redact(doc.doc_id).text,
        source=source,
        text=body.text,
        title=title.text,
        metadata=metadata,
    )
    return clean, dict(counts)
