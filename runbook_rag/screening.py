"""Screening text for instructions aimed at a language model rather than at an engineer.

A runbook is reference data. Text inside it that tries to instruct a model ("ignore
previous instructions", "you are now ...", "reveal the system prompt", a fake chat
turn, an aside "note to AI assistants: ...") or that would exfiltrate data through a
rendered image (an image on an outside host with data in its URL) has no place in an
index whose passages, titles and headings may later reach a prompt. Such passages are
quarantined (not indexed) unless an operator allow-listed their document, and the build
report lists them; a title or document-level field that reads that way quarantines the
whole document.

Matching runs on a folded copy of the text, never on what is indexed: Unicode
compatibility forms and accents are folded (NFKD), look-alike letters from other
scripts are mapped to Latin with Unicode's confusables table, invisible characters are
dropped, and for the phrase rules markup, punctuation and line breaks between words are
collapsed: "ignore" spelt with Cyrillic or full-width letters, in bold, in a link or an
image's alt text, or broken across quoted lines still reads "ignore". The phrase rules
cover English, French, German, Spanish, Portuguese, Italian and Dutch, and need a
qualifier ("previous", "above", "your", "system"...), so "ignore the previous alert" or
"follow the instructions in the previous section" pass.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from urllib.parse import unquote

from . import _phrases
from .records import Chunk, Document

__all__ = ["DocumentScreen", "Flag", "exfiltrating", "fold", "references", "screen"]


@dataclass(frozen=True, slots=True)
class Flag:
    """Why text was quarantined: the rule's name and, for a field other than the passage
    itself, which one (``title``, ``heading``, a front-matter or sidecar key). Never the text."""

    rule: str
    where: str | None = None

    @property
    def label(self) -> str:
        """The rule as a build report shows it."""
        return f"{self.rule} ({self.where})" if self.where else self.rule


# -- folding ------------------------------------------------------------------------


@cache
def _fold_table() -> dict[int, str | None]:
    """Non-ASCII look-alikes -> their Latin prototype; combining marks and invisible
    characters -> nothing. Built once, on first use, from the maintained confusables table."""
    from confusable_homoglyphs import confusables  # type: ignore[import-untyped]

    table: dict[int, str | None] = {}
    for char, glyphs in confusables.confusables_data.items():
        char = char.strip("\u200e")
        if len(char) != 1 or char.isascii():
            continue  # ASCII is never remapped: "l" -> "I" or "0" -> "O" would break real words
        for glyph in glyphs:
            target = str(glyph["c"]).strip("\u200e")
            if target.isascii() and target.isalnum():
                # The table's prototype for I-like glyphs is "l"; a capital one stands for "I".
                if target == "l" and unicodedata.category(char) == "Lu":
                    target = "I"
                table[ord(char)] = target
                break
    for code in (*range(0x80, 0x10000), *range(0xE0000, 0xE0080), *range(0xE0100, 0xE01F0)):
        if unicodedata.category(chr(code)) in ("Mn", "Me", "Cf"):
            table[code] = None  # accents after NFKD, zero-width, bidi and tag characters
    return table


def fold(text: str) -> str:
    """``text`` as the screen reads it: entities decoded, compatibility forms and accents
    folded, look-alike letters mapped to Latin, invisible characters removed."""
    if "&" in text:
        text = html.unescape(text)
    if text.isascii():
        return text
    return unicodedata.normalize("NFKD", text).translate(_fold_table())


_HTML_TAG_NAME = re.compile(
    r"</?(?:a|abbr|b|big|blockquote|br|center|cite|code|dd|del|details|div|dl|dt|em|figcaption|figure"
    r"|font|h[1-6]|hr|i|img|ins|kbd|label|li|mark|ol|p|picture|pre|q|s|samp|small|source|span|strike"
    r"|strong|sub|summary|sup|table|tbody|td|th|thead|tr|tt|u|ul|var|wbr)(?=[\s/>])",
    re.I,
)
_LINK_TARGET = re.compile(r"\]\(\s*<?[^\s)>]*>?")
_PERCENT = re.compile(r"(?:%[0-9A-Fa-f]{2})+")
_INNER_MARKUP = re.compile(r"(?<=[a-z])[*~`]+(?=[a-z])")
_SEPARATORS = re.compile(r"[^0-9a-z.,!?;:\n]+")
_KEPT = frozenset("0123456789abcdefghijklmnopqrstuvwxyz.,!?;:\n")
_ASCII_SEPARATORS = {c: " " for c in range(128) if chr(c) not in _KEPT}  # str.translate's fast path
_SPACES = re.compile(r"  +")
_LINE_BREAKS = re.compile(r" ?\n[\n ]*")


def _words(folded: str) -> str:
    """Lower-case words separated by single spaces: markup, quotes, brackets, link targets
    and HTML tag names removed (their text and attribute values stay), so a phrase reads
    the same however it is wrapped. Sentence punctuation and line breaks are kept."""
    text = folded
    if "%" in text:
        text = _PERCENT.sub(lambda m: unquote(m.group()), text)
    text = text.lower()
    if "<" in text:
        text = _HTML_TAG_NAME.sub(" ", text)
    if "](" in text:
        text = _LINK_TARGET.sub("] ", text)
    if "*" in text or "~" in text or "`" in text:
        text = _INNER_MARKUP.sub("", text)
    if text.isascii():
        text = _SPACES.sub(" ", text.translate(_ASCII_SEPARATORS))
    else:
        text = _SEPARATORS.sub(" ", text)
    return _LINE_BREAKS.sub("\n", text)


# -- rules --------------------------------------------------------------------------

# Lines that open a fake chat turn. "System:" is also a field label a runbook may use
# ("System: payments-db"), so a title-case or lower-case one counts only when what
# follows addresses a model; the all-caps, heading, tag and bracket forms always count.
_LINE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "role marker",
        re.compile(
            r"^[ \t>*+-]*(?:"
            r"#{1,6}[ \t]*[*_]*(?i:system|assistant|developer)[*_]*[ \t]*:"
            r"|[*_]*(?:SYSTEM|ASSISTANT|DEVELOPER)[*_]*[ \t]*:"
            r"|#{1,6}[ \t]*[*_]*(?i:instruction|human)[*_]*[ \t]*:[ \t]*$"
            r"|[*_]*(?i:assistant|human)[*_]*[ \t]*:[ \t]*\S"
            r"|[*_]*(?i:system|developer)[*_]*[ \t]*:[ \t]*(?:\n[ \t>]*)?"
            r"(?i:you\b|ignore\b|disregard\b|forget\b|from now on\b|always\b|never\b|do not\b"
            r"|don't\b|new instructions\b|the assistant\b|the ai\b|act as\b|pretend\b|override\b|reveal\b"
            r"|respond\b|reply\b|answer\b)"
            r"|</?(?i:system|assistant|developer|sys)\b[^>\n]{0,40}>"
            r"|\[/?(?i:system|assistant|developer|sys)\](?![(\[])(?!:[ \t]*(?:<|[a-z][a-z0-9+.-]*:|/|#|\.|$))"
            r")"
            r"|\"role\"\s*:\s*\"(?i:system|assistant|developer)\"",
            re.M,
        ),
    ),
    (
        "chat template token",
        re.compile(
            r"<\|\s*[A-Za-z_][A-Za-z0-9_ ]{1,40}\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>"
            r"|<\|?(?:begin|end)_of_text\|?>",
            re.I,
        ),
    ),
)

_PHRASE_RULES = tuple(
    (name, re.compile(pattern, re.M), anchors, reach) for name, pattern, anchors, reach in _phrases.RULES
)
_TOKEN_BREAKS = str.maketrans(".,!?;:", "      ")


def _phrase_rule(words: str) -> str | None:
    """The first phrase rule matching the word view: each runs only in windows around
    its anchors, so text without them is never scanned by the (slow) phrase patterns."""
    tokens = set(words.translate(_TOKEN_BREAKS).split())
    for name, pattern, anchors, reach in _PHRASE_RULES:
        present = anchors.intersection(tokens)
        if present and any(pattern.search(words, a, b) for a, b in _windows(words, present, reach)):
            return name
    return None


def _windows(words: str, tokens: frozenset[str], reach: tuple[int, int]) -> list[tuple[int, int]]:
    """Spans of ``words`` around every whole-word occurrence of ``tokens``, merged."""
    before, after = reach
    spans = []
    size = len(words)
    for token in tokens:
        at = words.find(token)
        while at != -1:
            end = at + len(token)
            if (at == 0 or not words[at - 1].isalnum()) and (end == size or not words[end].isalnum()):
                spans.append((max(0, at - before), min(size, end + after)))
            at = words.find(token, end)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


# -- images -------------------------------------------------------------------------

_INLINE_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^\s)>]*)")
_REFERENCE_IMAGE = re.compile(r"!\[([^\]]*)\](?:\[([^\]]*)\])?(?![(:])")
_DEFINITION = re.compile(r"^[ \t]{0,3}(?:>[ \t]*)*\[([^\]]+)\]:[ \t]*<?([^\s>]+)", re.M)
_HTML_MEDIA = re.compile(
    r"<(?:img|image|source|picture|video|audio|iframe|frame|embed|object|script|input|track|link)\b[^>]*>",
    re.I,
)
_MEDIA_URL = re.compile(
    r"\b(?:src|srcset|poster|data|background|href|xlink:href|data-src)\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+)",
    re.I,
)
_ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?[/\\]{2}|^(?:https?|ftp):", re.I)
_BASE64ISH = re.compile(r"[A-Za-z0-9+_=-]{20,}")


def _label(name: str) -> str:
    return " ".join(name.split()).casefold()


def references(text: str) -> dict[str, str]:
    """Markdown reference definitions (``[label]: url``) in ``text``: label -> url."""
    if "]:" not in text:
        return {}
    out: dict[str, str] = {}
    for match in _DEFINITION.finditer(text):
        out.setdefault(_label(match.group(1)), match.group(2))
    return out


def exfiltrating(url: str) -> bool:
    """True for an image URL that would carry data off-site when rendered: an absolute or
    protocol-relative URL with a query string or a path that looks like data (encoded
    text, a template, a long mixed-case token). Relative paths stay on the docs host."""
    url = url.strip().strip("\"'<>")
    if not _ABSOLUTE.match(url):
        return False
    url = url.split("#", 1)[0]  # a fragment never leaves the browser
    if "?" in url and url.split("?", 1)[1].strip():
        return True
    rest = re.sub(r"^(?:[a-z][a-z0-9+.-]*:)?[/\\]*", "", url, flags=re.I)
    path = rest.partition("/")[2]
    if (
        any(mark in path for mark in ("=", "{", "}", "$", "[", "<", ";"))
        or len(re.findall(r"%[0-9A-Fa-f]{2}", path)) >= 2
    ):
        return True
    for segment in path.split("/"):
        if len(segment) > 64:
            return True
        for token in _BASE64ISH.findall(segment):
            if (
                any(c.isupper() for c in token)
                and any(c.islower() for c in token)
                and any(c.isdigit() for c in token)
            ):
                return True
    return False


def _image_urls(folded: str, refs: Mapping[str, str]) -> list[str]:
    urls: list[str] = []
    if "![" in folded:
        urls.extend(m.group(1) for m in _INLINE_IMAGE.finditer(folded))
        for m in _REFERENCE_IMAGE.finditer(folded):
            url = refs.get(_label(m.group(2) or m.group(1)))
            if url:
                urls.append(url)
    if "<" in folded:
        for tag in _HTML_MEDIA.finditer(folded):
            for attr in _MEDIA_URL.finditer(tag.group()):
                value = attr.group(1).strip("\"'")
                urls.extend(part.split()[0] for part in value.split(",") if part.split())
    return urls


# -- entry points -------------------------------------------------------------------


def screen(text: str, *, references: Mapping[str, str] | None = None) -> Flag | None:
    """The first rule ``text`` breaks, or None.

    ``references`` resolves reference-style images (``![x][ref]``) whose definition is
    elsewhere in the document; definitions inside ``text`` are always used.
    """
    folded = fold(text)
    rule = _phrase_rule(_words(folded))
    if rule is not None:
        return Flag(rule)
    for name, pattern in _LINE_RULES:
        if pattern.search(folded):
            return Flag(name)
    refs = {**(references or {}), **_own_references(folded)}
    if any(exfiltrating(url) for url in _image_urls(folded, refs)):
        return Flag("exfiltration image")
    return None


def _own_references(folded: str) -> dict[str, str]:
    return references(folded) if "![" in folded else {}


# Document fields that are body text screened as passages (a Confluence excerpt is
# part of the page it comes from), so a hit there must not quarantine the whole page.
_BODY_FIELDS = frozenset({"excerpt"})


class DocumentScreen:
    """Screens one document: its title and metadata once, then each chunk's body and
    heading path (every heading once), resolving reference-style images against the
    definitions anywhere in the document."""

    def __init__(self, doc: Document) -> None:
        self._doc = doc
        self._refs = references(fold(doc.text))
        self._headings: dict[str, Flag | None] = {}

    def document(self) -> Flag | None:
        """A flag on the title or a document-level field (front matter, Confluence
        sidecar): the whole document is quarantined."""
        flag = screen(self._doc.title)
        if flag is not None:
            return Flag(flag.rule, "title")
        for key, value in sorted(self._doc.metadata.items()):
            if key in _BODY_FIELDS:
                continue
            flag = screen(value)
            if flag is not None:
                return Flag(flag.rule, key)
        return None

    def chunk(self, chunk: Chunk) -> Flag | None:
        """A flag on the chunk's heading path (its whole section) or its body."""
        for heading in chunk.heading_path:
            if heading not in self._headings:
                # As a heading line, so "### System:" reads as the role marker it is.
                self._headings[heading] = screen(f"# {heading}")
            flag = self._headings[heading]
            if flag is not None:
                return Flag(flag.rule, "heading")
        return screen(chunk.text, references=self._refs)
