"""Links and images in a model's answer: only what the allow-list names survives.

A model's reply is Markdown that someone will render (GitHub, a chat tool, a browser), so
every link and image in it is a way to send a reader, or their browser, somewhere. The
rule is simple and strict:

- URLs are parsed as browsers parse them (WHATWG, with ``ada-url``) and hosts compared
  exactly, after IDNA and case folding: no subdomains, no look-alikes, no trailing dots.
- Only ``http``/``https`` URLs without a user name or password are ever allowed: a link
  to a host of ``link_hosts`` or to the exact URL of a cited source; an image only from a
  host of ``link_hosts``. A kept link is written again with the URL as it was checked.
- Everything else goes: raw HTML (tags, comments, declarations, processing instructions,
  CDATA), reference definitions (their links are resolved first), links (their text
  stays), images (``[image removed]``), autolinks and Slack's ``<url|text>``, bare URLs
  (``[link removed]``); bare host names and e-mail addresses are defanged
  (``evil[.]example``) so they stay readable but cannot be clicked.
- Code (fenced and indented blocks, inline code spans) is left byte for byte as it was.

The result is then rendered the way GitHub shows it (CommonMark, tables, strikethrough,
linkify) and read the way Slack does; if any link, image or HTML is left that the rule
does not allow, :func:`safe_markdown` raises :class:`UnsafeMarkdown` instead of
returning it. :func:`unsafe_links` is that check on its own.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

__all__ = ["IMAGE_REMOVED", "LINK_REMOVED", "UnsafeMarkdown", "safe_markdown", "unsafe_links"]

LINK_REMOVED = "[link removed]"
IMAGE_REMOVED = "[image removed]"

# Private-use characters stand in for inline code while the text around it is rewritten
# (code, then literal bracketed text); a reply's own copies are dropped from its prose.
_CODE_OPEN, _CODE_CLOSE, _LIT_OPEN, _LIT_CLOSE = "\ue000", "\ue001", "\ue002", "\ue003"
_SENTINELS = re.compile("[\ue000-\ue003]")
_CODE = re.compile("\ue000(\\d+)\ue001")
_LITERAL = re.compile("\ue002([^\ue002\ue003]*)\ue003(?=(.?))", re.S)

_DOTS = ".\u3002\uff0e\uff61"  # what IDNA reads as a label separator
_DOT = f"[{_DOTS}]"
_BLANK_LINES = re.compile(r"(\n[ \t]*\n(?:[ \t]*\n)*)")
# An escape, an entity reference, or inline code: the pieces a renderer turns into one
# character of text (or none) and at which its linkifier stops.
_TOKEN = re.compile(
    r"\\[!-/:-@\[-`{-~]|&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{1,31});|\ue000\d+\ue001"
)
_AUTOLINK = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]{1,31}:[^<>\x00-\x20]*")
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)
_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*:")
# Renderers that do not know a top-level domain still link these: a host name with a
# path or query (``evil.example/collect?d=``), ``www.`` names (GitHub) and e-mail addresses.
_NAME = rf"(?:[\w-]+{_DOT})+(?:[^\W\d_]{{2,63}}|xn--[\w-]+)"
_HOST = rf"{_NAME}{_DOT}?"
_IPV4 = r"\d{1,3}(?:\.\d{1,3}){3}"
_OWN_RULES = (
    # a scheme and a slash, or two slashes: what browsers and chat tools read as a URL
    (
        "link",
        re.compile(
            rf"(?<![\w/\\])((?:[A-Za-z][\w+.\-]*:[/\\]+|[/\\]{{2,}})"
            rf"(?:[^\s<>/\\?#@]*@)?(?:{_HOST}|\[[0-9A-Fa-f:.]+\]|{_IPV4})[^\s<>]*)"
        ),
    ),
    (
        "link",
        re.compile(
            rf"(?<![\w@.\-/\\])((?:{_HOST}(?::\d{{1,5}})?[/?#\\\uff0f\uff1f\uff03]"
            rf"|{_IPV4}(?::\d{{1,5}})?(?:[?#\\]|/(?!\d{{1,2}}(?![\w/.]))))[^\s<>]*)"  # not 10.0.0.0/16
        ),
    ),
    ("fuzzy", re.compile(rf"(?<![\w@.\-/\\])(www{_DOT}(?:[\w-]+{_DOT})*[\w-]+)", re.I)),
    ("email", re.compile(rf"(?<![\w.+\-])([\w.+\-]+@{_NAME})")),
)
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_TRAILING = ".,;:!?'\"*_~"
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_OPENING = re.compile(r"<(?=[^\W_]|[/!?@#\ue000-\ue003])")
_SLACK_ANGLE = re.compile(r"<([^<>\s][^<>]*)>")
_SLACK_SPECIAL = re.compile(r"[@#!]")
_MAX_DEPTH = 8
_ENCODE = str.maketrans({"(": "%28", ")": "%29", "<": "%3C", ">": "%3E", " ": "%20"})


class UnsafeMarkdown(ValueError):
    """Sanitised text still renders a link, image or HTML the rule does not allow."""

    def __init__(self, problems: Sequence[str]) -> None:
        kinds = sorted({p.split(":", 1)[0] for p in problems})
        super().__init__("; ".join(kinds))
        self.problems = tuple(problems)


def safe_markdown(text: str, *, link_hosts: Iterable[str], source_urls: Iterable[str] = ()) -> str:
    """``text`` (Markdown) with only the links and images the rule allows (module docstring).

    Raises :class:`UnsafeMarkdown` if the result, rendered, still shows anything else.
    Line endings come back as ``\\n``; code is otherwise unchanged.
    """
    policy = _Policy.build(link_hosts, source_urls)
    cleaned = _Sanitiser(policy).run(text)
    problems = _problems(cleaned, policy)
    if problems:
        raise UnsafeMarkdown(problems)
    return cleaned


def unsafe_links(text: str, *, link_hosts: Iterable[str], source_urls: Iterable[str] = ()) -> list[str]:
    """What in ``text`` would render as a link, image or HTML the rule does not allow.

    ``text`` is read as GitHub renders it (CommonMark, tables, strikethrough, linkify) and
    as Slack does (``<url|text>``, bare URLs, domains and e-mail addresses); each finding is
    ``"kind: detail"``. Empty means safe.
    """
    return _problems(text, _Policy.build(link_hosts, source_urls))


# -- parsers, built once ------------------------------------------------------------


@dataclass(frozen=True)
class _Tools:
    scan: MarkdownIt  # CommonMark as written: block code, definitions, link labels
    view: MarkdownIt  # as GitHub renders it, linkify included
    linkifiers: tuple[Any, ...]  # markdown-it's own, and one that knows every top-level domain


@functools.cache
def _tools() -> _Tools:
    from linkify_it import LinkifyIt  # type: ignore[import-untyped]
    from linkify_it.tlds import TLDS  # type: ignore[import-untyped]
    from markdown_it import MarkdownIt

    def raw(md: MarkdownIt) -> MarkdownIt:
        # hrefs exactly as written (decoded), every scheme kept: each is checked by the policy
        md.normalizeLink = lambda url: url  # type: ignore[method-assign]
        md.validateLink = lambda url: True  # type: ignore[method-assign]
        return md

    scan = raw(MarkdownIt("commonmark").enable(["table", "strikethrough"]))
    view = raw(MarkdownIt("commonmark", {"linkify": True}).enable(["table", "strikethrough", "linkify"]))
    every_tld = LinkifyIt().tlds([t.lower() for t in TLDS], True)
    return _Tools(scan, view, (view.linkify, every_tld))


# -- the policy ---------------------------------------------------------------------


def _href(url: str) -> str | None:
    """The URL as a browser reads it, or None."""
    import ada_url

    try:
        return str(ada_url.URL(url).href)
    except ValueError:
        return None


def _emitted(href: str) -> str:
    """A checked URL as written back: what Markdown would end a destination at, encoded."""
    return href.translate(_ENCODE)


def _normalized(url: str) -> str | None:
    """The href markdown-it (like cmark) writes into HTML for ``url``."""
    from markdown_it.common.normalize_url import normalizeLink

    try:
        return normalizeLink(url)
    except Exception:  # a malformed URL: the caller treats it as not allowed
        return None


@dataclass(frozen=True)
class _Policy:
    hosts: frozenset[str]
    sources: frozenset[str]

    @classmethod
    def build(cls, link_hosts: Iterable[str], source_urls: Iterable[str]) -> _Policy:
        import ada_url

        hosts = set()
        for entry in link_hosts:
            try:
                url = ada_url.URL(f"https://{entry.strip()}/")
            except ValueError:
                continue
            extra = url.username or url.password or url.search or url.hash or url.pathname != "/"
            if entry.strip() and not extra:
                hosts.add(str(url.host))
        sources: set[str] = set()
        for raw in source_urls:
            href = _href(raw)
            if href and _origin(href) is not None:
                sources.add(_emitted(href))
                normal = _normalized(_emitted(href))
                if normal and (again := _href(normal)):
                    sources.add(_emitted(again))
        return cls(frozenset(hosts), frozenset(sources))

    def link(self, url: str) -> str | None:
        """The URL to write for a link to ``url``, or None if it is not allowed."""
        return self._checked(url, image=False)

    def image(self, url: str) -> str | None:
        """The URL to write for an image from ``url``, or None if it is not allowed."""
        return self._checked(url, image=True)

    def renders(self, url: str, *, image: bool = False) -> bool:
        """Whether ``url``, written as it is, is allowed however a renderer writes it out."""
        normal = _normalized(url)
        return normal is not None and self._one(url, image=image) and self._one(normal, image=image)

    def _checked(self, url: str, *, image: bool) -> str | None:
        href = _href(url)
        if href is None or not self._one(href, image=image):
            return None
        out = _emitted(href)  # what is written is what was checked, as renderers write it
        return out if self.renders(out, image=image) else None

    def _one(self, url: str, *, image: bool) -> bool:
        origin = _origin(url)
        if origin is None:
            return False
        if origin[1] in self.hosts:
            return True
        href = _href(url)
        return not image and href is not None and _emitted(href) in self.sources


def _origin(url: str) -> tuple[str, str] | None:
    """(scheme, host[:port]) of an http(s) URL without credentials, else None."""
    import ada_url

    try:
        parsed = ada_url.URL(url)
    except ValueError:
        return None
    if parsed.protocol not in ("http:", "https:") or parsed.username or parsed.password:
        return None
    host = str(parsed.host)
    return (str(parsed.protocol), host) if host else None


def _origins(url: str) -> tuple[tuple[str, str], tuple[str, str]] | None:
    """The origin of ``url`` as written and as a renderer encodes it (None if either fails)."""
    normal = _normalized(url)
    written, encoded = _origin(url), _origin(normal) if normal is not None else None
    return (written, encoded) if written and encoded else None


# -- finding bare URLs, domains and e-mail addresses in text ------------------------


@dataclass(frozen=True)
class _Match:
    start: int
    end: int
    kind: str  # "link" (has a scheme or a path), "fuzzy" (a host name), "email"
    url: str


@dataclass(frozen=True)
class _Group:
    start: int
    end: int
    action: str  # "keep", "remove" (becomes [link removed]), "defang"


def _matches(view: str, offset: int = 0) -> list[_Match]:
    """Every URL, host name or e-mail address a linkifier would make a link of."""
    found: list[_Match] = []
    if not view.strip():
        return found
    for linkifier in _tools().linkifiers:
        for m in linkifier.match(view) or ():
            if m.schema == "mailto:" and not m.raw.lower().startswith("mailto:"):
                kind = "email"
            elif m.schema or re.search(r"[/?#:@\\]", m.raw):
                kind = "link"
            else:
                kind = "fuzzy"
            found.append(_Match(offset + m.index, offset + m.last_index, kind, m.url))
    for kind, rule in _OWN_RULES:
        for m in rule.finditer(view):
            end = _trimmed(view, m.start(1), m.end(1))
            text = view[m.start(1) : end]
            url = text if _SCHEME.match(text) else "http://" + text
            found.append(_Match(offset + m.start(1), offset + end, kind, url))
    return found


def _groups(matches: list[_Match], view: str, policy: _Policy) -> list[_Group]:
    """Overlapping matches as one span each, widened to what any renderer could link, with
    what to do about it."""
    groups: list[_Group] = []
    ordered = sorted(matches, key=lambda m: (m.start, -m.end))
    i = 0
    while i < len(ordered):
        members = [ordered[i]]
        start, end = ordered[i].start, ordered[i].end
        i += 1
        while True:
            while i < len(ordered) and ordered[i].start < end:
                members.append(ordered[i])
                end = max(end, ordered[i].end)
                i += 1
            if all(m.kind == "email" for m in members):
                break
            start, end = _unit(view, start, end)
            if not (i < len(ordered) and ordered[i].start < end):
                break
        groups.append(_Group(start, end, _action(members, view[start:end], policy)))
    return groups


def _unit(view: str, start: int, end: int) -> tuple[int, int]:
    """The widest link a renderer could see around ``view[start:end]``: back over scheme
    characters, on to the next space or ``<``, less trailing punctuation."""
    while start > 0 and view[start - 1] in _SCHEME_CHARS:
        start -= 1
    while end < len(view) and not view[end].isspace() and view[end] not in "<>":
        end += 1
    return start, _trimmed(view, start, end)


def _trimmed(view: str, start: int, end: int) -> int:
    """``end`` less the punctuation that ends a sentence rather than a URL."""
    while end > start + 1:
        last = view[end - 1]
        opener = _CLOSERS.get(last)
        if last in _TRAILING or (opener and view.count(opener, start, end) < view.count(last, start, end)):
            end -= 1
        else:
            break
    return end


def _action(members: list[_Match], unit: str, policy: _Policy) -> str:
    links = [m for m in members if m.kind != "email"]
    if links and all(policy.link(m.url) for m in links) and not any(m.kind == "email" for m in members):
        url = unit if _SCHEME.match(unit) or unit.startswith("//") else "http://" + unit
        origins = _origins(url)
        if origins is not None and origins == _origins(links[0].url):
            return "keep"
    if any(m.kind == "link" for m in members) or re.search(r"[/?#:\\]", unit.split("@")[-1]):
        return "remove"
    return "defang"


# -- the sanitiser ------------------------------------------------------------------


class _Sanitiser:
    def __init__(self, policy: _Policy) -> None:
        self.policy = policy
        self.code: list[str] = []
        self.env: dict[str, Any] = {}

    def run(self, text: str) -> str:
        """``text`` sanitised."""
        return self._by_lines(text, self._prose, sanitise=True)

    def prose_only(self, text: str) -> str:
        """``text`` with its code (blocks and inline spans) blanked out."""

        def blank(prose: str) -> str:
            masked = _chunks(prose, self._mask_code)
            return _CODE.sub(lambda m: " " * len(self.code[int(m.group(1))]), masked)

        return self._by_lines(text, blank, sanitise=False)

    def _by_lines(self, text: str, prose: Callable[[str], str], *, sanitise: bool) -> str:
        """``prose`` applied to each run of lines outside block code. Sanitising, block code
        is kept and reference definitions dropped; otherwise code lines are blanked."""
        text = re.sub(r"\r\n?", "\n", text)
        tokens = _tools().scan.parse(text, self.env)
        lines = text.split("\n")
        kind = ["prose"] * len(lines)
        for token in tokens:
            if token.type in ("fence", "code_block") and token.map:
                for n in range(*token.map):
                    kind[n] = "code"
        if sanitise:
            for ref in [*self.env.get("references", {}).values(), *self.env.get("duplicate_refs", [])]:
                for n in range(*ref["map"]):
                    kind[n] = "definition"
        out: list[str] = []
        run: list[str] = []
        for line, what in zip(lines, kind, strict=True):
            if what == "prose":
                run.append(line)
                continue
            if run:
                out.append(prose("\n".join(run)))
                run = []
            if what == "code":
                out.append(line if sanitise else "")
        if run:
            out.append(prose("\n".join(run)))
        return "\n".join(out)

    # a run of lines outside block code

    def _prose(self, text: str) -> str:
        masked = _strip_html(_chunks(text, self._mask_code))
        done = _chunks(masked, lambda chunk: self._inline(chunk, in_link=False, depth=0))
        while _LIT_OPEN in done:  # innermost first
            done = _LITERAL.sub(_literal, done)
        return self._unmasked(done)

    def _mask_code(self, chunk: str) -> str:
        """Inline code spans (CommonMark's backtick runs) as placeholders."""
        out: list[str] = []
        i = last = 0
        n = len(chunk)
        while i < n:
            c = chunk[i]
            if c == "\\":
                i += 2
            elif c == "<":  # an autolink or HTML tag that starts first wins over code
                end = _angle_end(chunk, i)
                i = end if end else i + 1
            elif c == "`":
                run = i
                while i < n and chunk[i] == "`":
                    i += 1
                size = i - run
                k = i
                while (k := chunk.find("`", k)) != -1:
                    m = k
                    while m < n and chunk[m] == "`":
                        m += 1
                    if m - k == size:
                        out.append(_SENTINELS.sub("", chunk[last:run]))
                        out.append(f"{_CODE_OPEN}{len(self.code)}{_CODE_CLOSE}")
                        self.code.append(chunk[run:m])
                        i = last = m
                        break
                    k = m
            else:
                i += 1
        out.append(_SENTINELS.sub("", chunk[last:]))
        return "".join(out)

    # inline Markdown: links, images, autolinks, Slack's <...>, and text between them

    def _inline(self, src: str, *, in_link: bool, depth: int) -> str:
        from markdown_it.rules_inline import StateInline

        if depth > _MAX_DEPTH:
            return self._text(src)
        state = StateInline(src, _tools().scan, self.env, [])
        out: list[str] = []
        i = last = 0
        while i < len(src):
            c = src[i]
            done: tuple[int, str] | None = None
            if c == "\\":
                i += 2
                continue
            if c == "!" and src.startswith("[", i + 1):
                done = self._link(state, i + 1, image=True, in_link=in_link, depth=depth)
            elif c == "[":
                done = self._link(state, i, image=False, in_link=in_link, depth=depth)
            elif c == "<":
                done = self._angle(src, i, in_link=in_link, depth=depth)
            if done is None:
                i += 1
                continue
            out.append(self._text(src[last:i]))
            i = last = done[0]
            out.append(done[1])
        out.append(self._text(src[last:]))
        return "".join(out)

    def _link(
        self, state: Any, start: int, *, image: bool, in_link: bool, depth: int
    ) -> tuple[int, str] | None:
        """A link or image whose label opens at ``start`` (markdown-it's link rule, returning
        the end and what to write instead), or None if there is none."""
        from markdown_it.common.utils import isStrSpace, normalizeReference
        from markdown_it.helpers import parseLinkDestination, parseLinkLabel, parseLinkTitle

        src: str = state.src
        n = len(src)
        label_end = parseLinkLabel(state, start, not image)
        if label_end < 0:
            return None
        href: str | None = None
        pos = label_end + 1
        reference = True
        bracketed = False
        if pos < n and src[pos] == "(":
            reference = False
            pos += 1
            while pos < n and (isStrSpace(src[pos]) or src[pos] == "\n"):
                pos += 1
            if pos >= n:
                return None
            href = ""
            res = parseLinkDestination(src, pos, n)
            if res.ok:
                href, pos = res.str, res.pos
                gap = pos
                while pos < n and (isStrSpace(src[pos]) or src[pos] == "\n"):
                    pos += 1
                title = parseLinkTitle(src, pos, n)
                if pos < n and gap != pos and title.ok:
                    pos = title.pos
                    while pos < n and (isStrSpace(src[pos]) or src[pos] == "\n"):
                        pos += 1
            if pos >= n or src[pos] != ")":
                reference = True
            pos += 1
        if reference:
            label = None
            if pos < n and src[pos] == "[":
                end = parseLinkLabel(state, pos)
                if end >= 0:
                    label, pos = src[pos + 1 : end], end + 1
                else:
                    pos = label_end + 1
            else:
                pos = label_end + 1
            bracketed = not label
            name = normalizeReference(self._unmasked(label or src[start + 1 : label_end]))
            ref = self.env.get("references", {}).get(name)
            if not ref:
                return None
            href = str(ref["href"])
        assert href is not None
        url = self._unmasked(href)
        text = self._inline(src[start + 1 : label_end], in_link=True, depth=depth + 1)
        if image:
            if in_link:  # no image inside a link: its alt text stands in
                return pos, text
            shown = self._written(self.policy.image(url))
            return pos, (f"![{text}]({_destination(shown)})" if shown else _marker(IMAGE_REMOVED))
        allowed = self._written(self.policy.link(url))
        if allowed and not in_link:
            return pos, f"[{text if text.strip() else allowed}]({_destination(allowed)})"
        if bracketed or re.fullmatch(r"\d{1,3}", text):
            return pos, _marker(f"[{text}]")  # [ref] and [n] stay as written, unlinked
        return pos, text

    def _angle(self, src: str, i: int, *, in_link: bool, depth: int) -> tuple[int, str] | None:
        """An autolink, an e-mail autolink or Slack's ``<url|text>``/``<@U123>`` at ``src[i]``:
        its end and what to write instead, or None."""
        end = src.find(">", i)
        if end < 0 or "<" in src[i + 1 : end] or "\n" in src[i + 1 : end]:
            return None
        body = src[i + 1 : end]
        target, bar, label = body.partition("|")
        if _SLACK_SPECIAL.match(body):  # a mention, a channel or a special word
            return end + 1, self._text(body[0] + (label or target[1:]))
        if _EMAIL.fullmatch(body):
            return end + 1, self._text(body)
        autolink = _AUTOLINK.fullmatch(body) is not None
        slack = bool(bar) and (_SCHEME.match(target) is not None or any(d in target for d in _DOTS))
        if not (autolink or slack):
            return None
        urls = [self._unmasked(body)] if autolink else []
        if slack:
            urls.append(target if _SCHEME.match(target) else "http://" + target)
        checked = [self._written(self.policy.link(url)) for url in urls]
        allowed = checked[-1] if all(checked) else None
        shown = self._inline(label, in_link=True, depth=depth + 1) if slack and label.strip() else ""
        if allowed is None:
            return end + 1, shown or _marker(LINK_REMOVED)
        if in_link:
            return end + 1, shown or self._text(allowed)
        return end + 1, (f"[{shown}]({_destination(allowed)})" if shown else f"<{allowed}>")

    def _text(self, src: str) -> str:
        """Plain text: bare URLs, host names and e-mail addresses, found as renderers find
        them (as written, decoded, and between escapes and emphasis marks), removed or
        defanged."""
        if not src:
            return src
        raw = _CODE.sub(lambda m: " " * len(m.group()), src)
        view, spans, cuts = _decoded(src)
        matches = _matches(view)
        start = None
        for k, cut in enumerate([*cuts, True]):
            if not cut and start is None:
                start = k
            elif cut and start is not None:
                if k - start > 3:
                    matches.extend(_matches(view[start:k], start))
                start = None
        removed: list[tuple[int, int]] = []
        dots: set[int] = set()
        for group in _groups(_matches(raw), raw, self.policy):
            if group.action == "remove":
                removed.append(_whole_tokens(src, group.start, group.end))
            elif group.action == "defang":
                dots.update(k for k in range(group.start, group.end) if raw[k] in _DOTS)
        for group in _groups(matches, view, self.policy):
            if group.action == "remove":
                removed.append((spans[group.start][0], spans[group.end - 1][1]))
            elif group.action == "defang":
                dots.update(spans[k][0] for k in range(group.start, group.end) if view[k] in _DOTS)
        edits = [(begin, end, _marker(LINK_REMOVED)) for begin, end in _union(removed)]
        edits += [(k, k + _token_length(src, k), "[.]") for k in dots if not _inside(k, edits)]
        out: list[str] = []
        last = 0
        for begin, end, replacement in sorted(edits):
            out += [src[last:begin], replacement]
            last = end
        out.append(src[last:])
        return _escape_angles("".join(out))

    def _written(self, url: str | None) -> str | None:
        """``url`` if, written out, it also reads as allowed where it shows as text."""
        if url is None:
            return None
        groups = _groups(_matches(url), url, self.policy)
        return url if all(g.action == "keep" for g in groups) else None

    def _unmasked(self, text: str) -> str:
        return _CODE.sub(lambda m: self.code[int(m.group(1))], text)


def _chunks(text: str, transform: Callable[[str], str]) -> str:
    """``text`` with ``transform`` applied to each run of lines between blank lines (no
    inline construct crosses a blank line)."""
    pieces = _BLANK_LINES.split(text)
    return "".join(transform(p) if k % 2 == 0 else p for k, p in enumerate(pieces))


def _whole_tokens(src: str, start: int, end: int) -> tuple[int, int]:
    """``src[start:end]`` without a partial escape or entity reference at either end: the
    start moves back over one, the end back before one."""
    for m in _TOKEN.finditer(src, max(0, start - 40), min(len(src), end + 40)):
        if m.start() < start < m.end():
            start = m.start()
        if m.start() < end < m.end():
            end = m.start()
    return start, max(start, end)


def _union(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for begin, end in sorted(spans):
        if merged and begin < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((begin, end))
    return merged


def _inside(k: int, edits: list[tuple[int, int, str]]) -> bool:
    return any(begin <= k < end for begin, end, _ in edits)


def _token_length(src: str, k: int) -> int:
    """Length of the character, escape or entity reference at ``src[k]``."""
    m = _TOKEN.match(src, k)
    return len(m.group()) if m else 1


def _angle_end(text: str, i: int) -> int:
    """End of an autolink or HTML construct starting at ``text[i]``, or 0."""
    from markdown_it.common.html_re import HTML_TAG_RE

    m = HTML_TAG_RE.match(text, i)
    if m:
        return m.end()
    end = text.find(">", i)
    if end > 0 and (_AUTOLINK.fullmatch(text, i + 1, end) or _EMAIL.fullmatch(text, i + 1, end)):
        return end + 1
    return 0


def _strip_html(text: str) -> str:
    """``text`` without raw HTML (a tag, comment, declaration, processing instruction or
    CDATA section not escaped by a backslash), repeated until none is left."""
    from markdown_it.common.html_re import HTML_TAG_RE

    while True:
        out: list[str] = []
        i = last = 0
        while (i := text.find("<", i)) != -1:
            m = None if _escaped(text, i) else HTML_TAG_RE.match(text, i)
            if m:
                out.append(text[last:i])
                i = last = m.end()
            else:
                i += 1
        if last == 0:
            return text
        out.append(text[last:])
        text = "".join(out)


def _escaped(text: str, i: int) -> bool:
    k = i
    while k > 0 and text[k - 1] == "\\":
        k -= 1
    return (i - k) % 2 == 1


def _escape_angles(text: str) -> str:
    """A ``<`` that could open HTML, an autolink or a Slack link, written as an entity."""
    if "<" not in text:
        return text
    return _OPENING.sub(lambda m: m.group() if _escaped(text, m.start()) else "&lt;", text)


def _decoded(src: str) -> tuple[str, list[tuple[int, int]], list[bool]]:
    """What a renderer shows for ``src`` (escapes and entity references decoded, inline
    code as a space), each character's span in ``src``, and whether a renderer's
    linkifier would stop at it (escapes, entities, code and emphasis marks)."""
    from markdown_it.common.utils import replaceEntityPattern

    chars: list[str] = []
    spans: list[tuple[int, int]] = []
    cuts: list[bool] = []
    last = 0

    def plain(begin: int, end: int) -> None:
        for k in range(begin, end):
            chars.append(src[k])
            spans.append((k, k + 1))
            cuts.append(src[k] in "*_~")

    for m in _TOKEN.finditer(src):
        plain(last, m.start())
        token = m.group()
        if token[0] == _CODE_OPEN:
            shown = " "
        elif token[0] == "\\":
            shown = token[1]
        else:
            shown = replaceEntityPattern(token, token[1:-1])
        for ch in shown:
            chars.append(ch)
            spans.append((m.start(), m.end()))
            cuts.append(True)
        last = m.end()
    plain(last, len(src))
    return "".join(chars), spans, cuts


def _destination(url: str) -> str:
    """A checked URL as a Markdown link destination that decodes back to exactly it."""
    url = url.replace("\\", "\\\\")
    return re.sub(r"&(?=#?[A-Za-z0-9]+;)", r"\\&", url)


def _marker(text: str) -> str:
    return f"{_LIT_OPEN}{text}{_LIT_CLOSE}"


def _literal(m: re.Match[str]) -> str:
    """Bracketed text written by the sanitiser, kept from reading as link syntax."""
    text, after = m.group(1), m.group(2)
    if text.endswith("]") and after in ("(", "[", ":"):
        text = text[:-1] + "\\]"
    return text


# -- the check ----------------------------------------------------------------------


def _problems(text: str, policy: _Policy) -> list[str]:
    problems: list[str] = []
    _walk(_tools().view.parse(text), policy, problems)
    problems.extend(_slack_problems(_Sanitiser(policy).prose_only(text), policy))
    return problems


def _walk(tokens: list[Token], policy: _Policy, problems: list[str]) -> None:
    in_link = False
    for token in tokens:
        if token.type in ("html_block", "html_inline"):
            problems.append(f"raw HTML: {token.content.strip()[:80]!r}")
        elif token.type == "link_open":
            href = str(token.attrGet("href") or "")
            if not policy.renders(href):
                problems.append(f"link not allowed: {href[:120]!r}")
            in_link = True
        elif token.type == "link_close":
            in_link = False
        elif token.type == "image":
            src = str(token.attrGet("src") or "")
            if not policy.renders(src, image=True):
                problems.append(f"image not allowed: {src[:120]!r}")
            elif in_link:
                problems.append(f"image inside a link: {src[:120]!r}")
            continue  # alt text renders as plain text
        elif token.type == "text" and not in_link:
            problems.extend(_bare_problems(token.content, policy))
        if token.children:
            _walk(token.children, policy, problems)


def _bare_problems(text: str, policy: _Policy) -> list[str]:
    found = []
    for group in _groups(_matches(text), text, policy):
        if group.action != "keep":
            found.append(f"bare link not allowed: {text[group.start : group.end][:120]!r}")
    return found


def _slack_problems(prose: str, policy: _Policy) -> list[str]:
    """Links Slack would show in the prose (code blanked out): ``<url|text>``, ``<url>``,
    mentions, and bare URLs, host names and e-mail addresses."""
    problems: list[str] = []
    for m in _SLACK_ANGLE.finditer(prose):
        body = m.group(1)
        target = body.split("|", 1)[0]
        if _SLACK_SPECIAL.match(body):
            problems.append(f"Slack mention: {body[:80]!r}")
        elif _SCHEME.match(target) or "|" in body or _matches(target):
            url = target if _SCHEME.match(target) else "http://" + target
            if not policy.renders(url):
                problems.append(f"Slack link not allowed: {body[:120]!r}")
    shown = prose.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    problems.extend(f"Slack {p}" for p in _bare_problems(shown, policy))
    return problems
