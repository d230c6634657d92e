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
    # Neither NFKD nor the confusables table reads small capitals ("ɪɢɴᴏʀᴇ") or negative
    # circled, negative squared and regional-indicator letters ("🅘🅖🅝🅞🅡🅔") as Latin.
    table.update({ord(char): latin for char, latin in _SMALL_CAPITALS.items()})
    for first in (0x1F130, 0x1F150, 0x1F170, 0x1F1E6):
        table.update({first + n: chr(ord("A") + n) for n in range(26)})
    return table


_SMALL_CAPITALS = dict(
    zip(
        "\u1d00\u1d01\u1d03\u1d04\u1d05\u1d06\u1d07\u1d08\u1d09\u1d0a\u1d0b\u1d0c\u1d0d\u1d0e\u1d0f"
        "\u1d10\u1d11\u1d18\u1d19\u1d1a\u1d1b\u1d1c\u1d1d\u1d20\u1d21\u1d22\u1d29"
        "\u0262\u0274\u0280\u0281\u029f\u026a\u028f\u029c\u0299\u0274\ua730\ua731\ua7af\u01eb",
        "aabcddeeijklmnoooprrtuuvwzpgnrrliyhbnfsqq",
        strict=True,
    )
)


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
_TAGS_IN_WORD = re.compile(
    r"(?<=[a-z0-9])(?:</?(?:a|abbr|b|big|cite|code|del|em|font|i|ins|kbd|mark|q|s|samp|small|span|strike"
    r"|strong|sub|sup|tt|u|var|wbr)\b[^<>]{0,200}>)++(?=[a-z0-9])"
)
_LINK_TARGET = re.compile(r"\]\(\s*+<?[^\s)>\]]*+>?")
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
        # "ig<b>no</b>re" is one word: inline tags inside a word are cut out, and their
        # attributes (which may carry text of their own) read after the passage.
        cut = _TAGS_IN_WORD.findall(text)
        if cut:
            text = _TAGS_IN_WORD.sub("", text) + "\n" + " ".join(cut)
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

# Lines that open a fake chat turn. "System:", "Assistant:", "<system>" and "[system]"
# are also field labels, XML and INI a runbook may show ("SYSTEM: PROD-EU-1",
# "Assistant: Jane Doe", "[system]\nlog_level = info"), so a marker counts only when what
# follows it (on its line, or on the next non-empty line when it stands alone) addresses a
# model. Every quantifier is atomic, possessive or bounded: a run of "*" or "#" must not
# make a line cost more than one pass.
_MARKER = re.compile(
    r"^(?>[ \t>*+-]*)"
    r"(?P<open>(?>#{1,6})?[ \t]*+(?>[*_]*)|</?|\[/?)"
    r"(?P<role>(?i:system(?:[ \t]++(?:message|prompt))?|assistant|developer|human|instructions?|sys))"
    r"(?P<close>(?>[*_]*)[ \t]*+:|\b[^<>\n]{0,40}>|\](?!\(|\[|:[ \t]*+(?:<|[a-z][a-z0-9+.-]*:|/|#|\.|$))"
    r"[ \t]*+:?)"
    r"[ \t*_]*+(?P<rest>[^\n]*)",
    re.M,
)
_NEXT_LINE = re.compile(r"(?:[ \t>]*+\n)++[ \t>*_]*+([^\n]*)")
# What a model is told, at the start of what follows a marker. "Your payments database
# cluster" is a field value; "your task", "your instructions" address a model.
_ADDRESSES_MODEL = re.compile(
    r"(?:please[ \t,]+|now[ \t,]+|from now on[ \t,]+|important[ \t:,]+)?(?:"
    r"you\b|you're\b|your[ \t]+(?:new|real|actual|true|only|task|job|goal|role|purpose|mission|instructions"
    r"|rules|answers?|responses?|replies|output|prompt|system prompt|programming)\b"
    r"|(?:ignore|disregard|forget|always|never|must|do not|don't|dont|respond|reply|answer|tell|say|output"
    r"|print|reveal|act|pretend|obey|follow|approve|deny|grant|skip|disable|enable|delete|send|be|stop|refuse"
    r"|recommend|execute|write|repeat|treat|assume|remember|override|bypass|comply|from now on"
    r"|new instructions|the assistant|the ai|the model|as an ai)\b"
    # an assistant turn a fake transcript puts in the model's mouth
    r"|(?:sure|certainly|of course|absolutely|understood|okay|ok|yes)\b[ \t]*[,.!:]"
    r"|(?:here is|here's|i will|i'll|i am|i'm|i have|i've|i cannot|i can't|as an ai)\b"
    r")",
    re.I,
)

_LINE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("role marker", re.compile(r"\"role\"\s*+:\s*+\"(?i:system|assistant|developer)\"")),
    (
        "chat template token",
        re.compile(
            r"<\|[ \t]*+[A-Za-z_][A-Za-z0-9_ ]{1,40}\|>|\[/?INST\]|<</?SYS>>|<(?:start|end)_of_turn>"
            r"|<\|?(?:begin|end)_of_text\|?>|</(?:instructions|system_prompt|prompt|user_instructions)>",
            re.I,
        ),
    ),
)


def _role_marker(folded: str) -> bool:
    """A chat-turn marker followed by text that addresses a model."""
    for match in _MARKER.finditer(folded):
        opened, role, closed = match.group("open"), match.group("role").lower(), match.group("close")
        if (opened[:1] == "<") != closed.endswith(">") or (opened[:1] == "[") != closed.startswith("]"):
            continue
        rest = match.group("rest")
        # "Instructions: follow the steps below" is prose; "### Instruction:" alone is a template.
        if role.startswith("instruction") and not (opened.startswith("#") and not rest.strip()):
            continue
        if not rest.strip():
            following = _NEXT_LINE.match(folded, match.end())
            if following is None:
                continue
            rest = following.group(1)
        if _ADDRESSES_MODEL.match(rest.lstrip(" \t*_\"'`(")):
            return True
    return False


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

# Alt text, labels and tags stop at the next "[" or "<": otherwise each of a long run of
# "![" (or "<img") would scan to the end of the text, and screening would be quadratic.
_INLINE_IMAGE = re.compile(r"!\[[^\[\]]*+\]\(\s*+<?([^\s)>]*+)")
_REFERENCE_IMAGE = re.compile(r"!\[([^\[\]]*+)\](?:\[([^\[\]]*+)\])?(?![(:])")
_DEFINITION = re.compile(r"^[ \t]{0,3}(?:>[ \t]*+)*+\[([^\[\]\n]++)\]:[ \t]*+<?([^\s>]++)", re.M)
_HTML_MEDIA = re.compile(
    r"<(?:img|image|source|picture|video|audio|iframe|frame|embed|object|script|input|track|link)\b[^<>]*+>",
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
    url, _, query = url.partition("?")
    if query.strip() and (url.startswith(("//", "\\\\")) or _data_in_query(query)):
        return True  # protocol-relative images are not how runbooks embed dashboards
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


# Dashboard and badge parameters (Grafana, shields.io...): a query of these alone,
# with short plain values, is how runbooks embed a panel, not how they leak data.
_PLAIN_KEYS = frozenset(
    re.findall(
        r"\S+",
        """orgid from to refresh viewpanel panelid kiosk theme style logo logocolor label color colorb
        labelcolor branch width height w h size v ver version format fmt tz timezone title job service
        env cluster namespace instance datasource interval period range scale dpi zoom lang locale sort""",
    )
)
_DATA_KEYS = re.compile(
    r"^(?:d|q|c|u|m|p|x|data|query|secret|token|key|apikey|api_key|password|passwd|pwd|pass|leak|exfil"
    r"|msg|message|content|text|prompt|chat|conversation|history|session|cookie|auth|payload|info|user"
    r"|email|body|input|context|s)$",
    re.I,
)
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:,+-]{0,24}")
_HEXISH = re.compile(r"[0-9a-fA-F]{16,}")


def _data_in_query(query: str) -> bool:
    """True for a query string that looks like it carries data: a data-like key, a
    template or encoded text, a token-like value, or a long query of unknown keys."""
    if any(mark in query for mark in "{}$<>") or len(re.findall("%[0-9A-Fa-f]{2}", query)) >= 2:
        return True
    unknown = False
    for pair in query.split("&"):
        key, eq, value = pair.strip().partition("=")
        if not key and not eq:
            continue
        name = key.lower()
        plain = name in _PLAIN_KEYS or name.startswith("var-")
        if not eq:  # "?kiosk" is a switch; "?SECRET" a bare value
            if not plain:
                return True
            continue
        if _DATA_KEYS.match(key):
            return True
        if not _PLAIN_VALUE.fullmatch(value) or _HEXISH.search(value) or _mixed_token(value):
            return True
        unknown = unknown or not plain
    return unknown and len(query) > 60


def _mixed_token(value: str) -> bool:
    return (
        len(value) >= 12
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


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
    if _role_marker(folded):
        return Flag("role marker")
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
        """A flag on the title, a document-level field (front matter, Confluence sidecar) or
        the source path (shown with every excerpt and citation, so its folder and file names
        too): the whole document is quarantined."""
        flag = screen(self._doc.title)
        if flag is not None:
            return Flag(flag.rule, "title")
        for key, value in sorted(self._doc.metadata.items()):
            if key in _BODY_FIELDS:
                continue
            flag = screen(value)
            if flag is not None:
                return Flag(flag.rule, key)
        flag = screen(self._doc.source.replace("/", "\n"))  # one line per path component
        return Flag(flag.rule, "path") if flag is not None else None

    def chunk(self, chunk: Chunk) -> Flag | None:
        """A flag on the chunk's heading path (its whole section) or its body."""
        for heading in chunk.heading_path:
            if heading not in self._headings:
                # As a heading line, so "### System:" reads as the role marker it is; a
                # marker standing alone is judged by the text under it (the first chunk seen).
                flag = screen(f"# {heading}")
                if flag is None and _role_marker(fold(f"# {heading}\n{chunk.text}")):
                    flag = Flag("role marker")
                self._headings[heading] = flag
            flag = self._headings[heading]
            if flag is not None:
                return Flag(flag.rule, "heading")
        return screen(chunk.text, references=self._refs)
