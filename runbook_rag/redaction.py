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
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from .records import Document

PAN = "pan"
TRACK = "track_data"
CVV = "cvv"
CARDHOLDER_KINDS = frozenset({PAN, TRACK})

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


# ---------------------------------------------------------------- card numbers

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

# 12-19 digits, optionally grouped by single spaces or dashes, not glued to other
# digits, letters, decimals, versions, IP addresses, paths or UUID segments.
_PAN_CANDIDATE = re.compile(
    r"(?<![0-9A-Za-z_@#])(?<![0-9][.:/,-])"
    r"([0-9](?:[ -]?[0-9]){11,18})"
    r"(?![0-9A-Za-z_])(?![.:/,-][0-9])"
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
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _consistent_grouping(candidate: str) -> bool:
    # "NNNN NNNN NNNN NNNN" or "NNNN-NNNN-NNNN-NNNN", not a mix, and no group longer than 8
    separators = {ch for ch in candidate if ch in " -"}
    if len(separators) > 1:
        return False
    groups = re.split(r"[ -]", candidate)
    return len(groups) == 1 or (all(1 <= len(g) <= 8 for g in groups) and len(groups[0]) >= 3)


# ---------------------------------------------------------------- secrets

_PLACEHOLDER = re.compile(
    r"^(?:\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\{\{.*\}\}|<[^<>]*>|%[A-Za-z_]+%|(.)\1*|\.\.\.|…)$"
    r"|example|changeme|change_me|placeholder|dummy|redacted|your[_-]?|sample|xxxx|\*\*\*\*|<|>|\$\{|\{\{",
    re.I,
)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


def is_placeholder(value: str) -> bool:
    """Template variables, angle-bracket placeholders, masks and example values are not secrets."""
    value = value.strip("\"'`")
    return not value or bool(_PLACEHOLDER.search(value)) or bool(_UUID.match(value))


def entropy(value: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(value)
    return -sum(c / len(value) * math.log2(c / len(value)) for c in counts.values())


def _jwt_header_is_json(token: str) -> bool:
    head = token.split(".", 1)[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    return isinstance(decoded, dict)


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: str
    pattern: re.Pattern[str]
    group: int = 0  # the part of the match that is the secret
    check: Callable[[str], bool] | None = None
    skip_placeholders: bool = True


# Lower-case words joined by dashes or underscores ("super-secret-key", "wrong-password",
# "prometheus-k8s-dockercfg-6wl6b"): resource names and made-up examples, not credentials.
_WORDY = re.compile(r"^(?:[a-z]+|[a-z0-9]{1,5})(?:[-_.](?:[a-z]+|[a-z0-9]{1,5}))+$")
_NOT_SECRET_STARTS = ("/", "./", "~/", "http://", "https://", "$")

_SECRET_WORDS = (
    r"password|passwd|passphrase|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|client[_-]?secret|auth[_-]?key|signing[_-]?key|webhook[_-]?secret"
)

_RULES: tuple[_Rule, ...] = (
    _Rule(
        "private_key",
        re.compile(
            r"-----BEGIN[A-Z ]*PRIVATE KEY( BLOCK)?-----"
            r"(?:.*?-----END[A-Z ]*PRIVATE KEY( BLOCK)?-----|(?:\n[A-Za-z0-9+/=:\- ]*)*)",
            re.S,
        ),
        skip_placeholders=False,
    ),
    _Rule(
        "slack_webhook", re.compile(r"https://hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_-]{20,}")
    ),
    _Rule(
        "url_password",
        re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://[^\s:/@\"'<>]{1,64}:([^\s@/\"'<>]{1,128})@[^\s/@]"),
        group=1,
    ),
    _Rule(
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{0,}"),
        check=_jwt_header_is_json,
    ),
    _Rule(
        "aws_access_key",
        re.compile(
            r"(?<![A-Z0-9])(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"
        ),
    ),
    _Rule(
        "aws_secret_key",
        re.compile(
            r"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key|SecretAccessKey)"
            r"[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9/+=]{40})(?![A-Za-z0-9/+=])"
        ),
        group=1,
    ),
    _Rule(
        "github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b")
    ),
    _Rule("slack_token", re.compile(r"\bxox[abeoprs]-[A-Za-z0-9-]{10,}")),
    _Rule(
        "stripe_key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b|\bwhsec_[A-Za-z0-9]{24,}\b")
    ),
    _Rule(
        "braintree_token", re.compile(r"\baccess_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}\b")
    ),
    _Rule("square_token", re.compile(r"\bsq0(?:atp|csp)-[A-Za-z0-9_-]{22,60}\b")),
    _Rule(
        "auth_header",
        re.compile(
            r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token)\s+([A-Za-z0-9._~+/=-]{8,})"
        ),
        group=1,
    ),
    _Rule(
        "curl_user",
        re.compile(r"\bcurl\b[^\n]*?\s(?:-u|--user)\s*[\"']?[^\s:\"']{1,64}:([^\s\"']{1,128})"),
        group=1,
    ),
    _Rule(
        "generic_secret",
        re.compile(
            # Start at the keyword itself (not at an optional prefix such as DB_): a pattern
            # that may start anywhere is tried at every position and dominates the cost.
            rf"(?i:(?:{_SECRET_WORDS})[A-Za-z0-9_.-]{{0,32}})[\"']?\s*(?::|=|:=|=>)\s*"
            r"[\"']?([^\s\"'`,;()\]}]{8,200}+)(?!\()"  # possessive: a call's name is not a secret
        ),
        group=1,
        check=lambda v: entropy(v) >= 3.0 and not _WORDY.match(v) and not v.startswith(_NOT_SECRET_STARTS),
    ),
)

_TRACK1 = re.compile(r"%?B[0-9]{12,19}\^[^^\n]{2,26}\^[0-9]{4}[^?\n]{0,80}\??")
_TRACK2 = re.compile(r";?(?<![0-9])[0-9]{12,19}=[0-9]{4}[0-9]{0,40}\??")
_CVV = re.compile(
    r"(?i)\b(?:cvv2?|cvc2?|cid|csc|card ?verification (?:value|code)|security code)\b"
    r"[\"']?\s*(?:[:=]|is|was)?\s*[\"']?([0-9]{3,4})(?![0-9])"
)


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    kind: str
    mask: str


class Redactor:
    """Finds and masks card data and secrets. Stateless and thread-safe."""

    def redact(self, text: str) -> Redacted:
        """Normalise ``text`` and mask every finding; counts per kind, never values."""
        text = normalise(text)
        spans = list(self._find(text))
        if not spans:
            return Redacted(text, {})
        out, last, counts = [], 0, Counter[str]()
        for span in sorted(spans, key=lambda s: (s.start, -s.end)):
            if span.start < last:
                continue  # inside a span already masked
            out.append(text[last : span.start])
            # Keep the newlines a multi-line value spanned, so line numbers stay true.
            out.append(span.mask + "\n" * text.count("\n", span.start, span.end))
            last = span.end
            counts[span.kind] += 1
        out.append(text[last:])
        return Redacted("".join(out), dict(counts))

    def _find(self, text: str) -> Iterator[_Span]:
        for pattern in (_TRACK1, _TRACK2):
            for m in pattern.finditer(text):
                yield _Span(m.start(), m.end(), TRACK, "[TRACK DATA]")
        for m in _CVV.finditer(text):
            yield _Span(m.start(1), m.end(1), CVV, "[CVV]")
        for m in _PAN_CANDIDATE.finditer(text):
            candidate = m.group(1)
            digits = re.sub(r"[ -]", "", candidate)
            if _consistent_grouping(candidate) and is_pan(digits):
                yield _Span(m.start(1), m.end(1), PAN, f"[PAN ****{digits[-4:]}]")
        for rule in _RULES:
            for m in rule.pattern.finditer(text):
                value = m.group(rule.group)
                if rule.skip_placeholders and is_placeholder(value):
                    continue
                if rule.check is not None and not rule.check(value):
                    continue
                yield _Span(m.start(rule.group), m.end(rule.group), rule.kind, f"[SECRET {rule.kind}]")


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
