"""Confluence storage-format pages (XHTML with ``ac:`` and ``ri:`` elements).

A page is parsed with a hardened XML parser (no DTD, no entity expansion, nothing
fetched) and rendered to Markdown, so it is chunked exactly like a Markdown runbook:
headings become heading paths, the ``code`` and ``noformat`` macros become fenced
blocks kept whole (with their language), tables stay rows a reader can follow,
panels keep their text under a label, links to pages keep the page title and
attachments or images their alt text or file name. Unknown macros keep their
rich-text body and are reported once per page.
"""

from __future__ import annotations

import html.entities
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import SourceError
from .sidecar import Restriction, Sidecar, validate_sidecar

SUFFIXES = (".xml", ".html")
AC = "http://atlassian.com/content"
RI = "http://atlassian.com/resource/identifier"
_PANELS = {"info": "Info", "note": "Note", "warning": "Warning", "tip": "Tip", "panel": "Panel"}
_IGNORED_MACROS = frozenset({"toc", "anchor", "children", "style", "colour", "outline"})
_XML_ENTITIES = frozenset({"amp", "lt", "gt", "quot", "apos"})
_ENTITY = re.compile(r"&([A-Za-z][A-Za-z0-9]*);")


@dataclass
class Rendered:
    """A page rendered to Markdown, with what the renderer could not keep."""

    markdown: str
    title: str | None
    notes: list[str] = field(default_factory=list)
    excerpt: str | None = None


def render_storage(text: str, *, source: str) -> Rendered:
    """Parse storage format safely and render it to Markdown."""
    root = _parse(text, source=source)
    renderer = _Renderer()
    body = renderer.blocks(root).strip("\n")
    title = next((h for h in renderer.headings), None)
    markdown = re.sub(r"\n{3,}", "\n\n", body) + "\n"
    return Rendered(markdown=markdown, title=title, notes=renderer.notes, excerpt=renderer.excerpt)


def _parse(text: str, *, source: str) -> Any:
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import fromstring

    if "<!DOCTYPE" in text[:2048].upper() or "<!ENTITY" in text.upper():
        raise SourceError("storage format must not carry a DTD or entity declarations", source=source)
    # Storage format uses HTML entities (&nbsp;) that XML does not define: make them numeric.
    text = _ENTITY.sub(_numeric_entity, text)
    wrapped = f'<root xmlns:ac="{AC}" xmlns:ri="{RI}">{text}</root>'
    try:
        return fromstring(wrapped, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise SourceError(f"refused unsafe XML: {type(exc).__name__}", source=source) from None
    except SyntaxError as exc:  # xml.etree's ParseError
        line = getattr(exc, "position", (None,))[0]
        raise SourceError(f"not valid storage-format XML: {exc.msg}", source=source, line=line) from None


def _numeric_entity(match: re.Match[str]) -> str:
    name = match.group(1)
    if name in _XML_ENTITIES:
        return match.group(0)
    code = html.entities.name2codepoint.get(name)
    return f"&#{code};" if code is not None else match.group(0)


def _local(tag: Any) -> str:
    if not isinstance(tag, str):
        return ""
    if tag.startswith(f"{{{AC}}}"):
        return "ac:" + tag.split("}", 1)[1]
    if tag.startswith(f"{{{RI}}}"):
        return "ri:" + tag.split("}", 1)[1]
    return tag.split("}", 1)[-1].lower()


def _attr(el: Any, name: str) -> str:
    if el is None:
        return ""
    namespace, _, local = name.partition(":")
    uri = {"ac": AC, "ri": RI}.get(namespace)
    value = el.get(f"{{{uri}}}{local}") if uri else el.get(name)
    return str(value) if value is not None else ""


class _Renderer:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.headings: list[str] = []
        self.excerpt: str | None = None
        self._unknown: set[str] = set()

    # -- blocks -------------------------------------------------------------
    def blocks(self, el: Any) -> str:
        out: list[str] = []
        if el.text and el.text.strip():
            out.append(el.text.strip())
        for child in el:
            out.append(self.block(child))
            if child.tail and child.tail.strip():
                out.append(child.tail.strip())
        return "\n\n".join(part for part in out if part.strip())

    def block(self, el: Any) -> str:
        tag = _local(el.tag)
        handler: Callable[[Any], str] | None = getattr(
            self, "_b_" + tag.replace(":", "_").replace("-", "_"), None
        )
        if handler is not None:
            return handler(el)
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            text = self.inline(el).strip()
            self.headings.append(text)
            return f"{'#' * int(tag[1])} {text}"
        if tag in ("div", "section", "body", "span", "ac:layout", "ac:layout-section", "ac:layout-cell"):
            return self.blocks(el)
        return self.inline(el).strip()

    def _b_p(self, el: Any) -> str:
        return self.inline(el).strip()

    def _b_pre(self, el: Any) -> str:
        return _fence("".join(el.itertext()), "")

    def _b_blockquote(self, el: Any) -> str:
        return _quote(self.blocks(el))

    def _b_hr(self, el: Any) -> str:
        return "---"

    def _b_ul(self, el: Any) -> str:
        return self._list(el, ordered=False)

    def _b_ol(self, el: Any) -> str:
        return self._list(el, ordered=True)

    def _list(self, el: Any, *, ordered: bool) -> str:
        items = []
        for n, li in enumerate((c for c in el if _local(c.tag) == "li"), start=1):
            marker = f"{n}. " if ordered else "- "
            body = self.blocks(li) or ""
            items.append(marker + body.replace("\n", "\n" + " " * len(marker)))
        return "\n".join(items)

    def _b_table(self, el: Any) -> str:
        rows = []
        for tr in el.iter():
            if _local(tr.tag) != "tr":
                continue
            cells = [
                self.inline(c).strip().replace("|", "\\|").replace("\n", " ")
                for c in tr
                if _local(c.tag) in ("td", "th")
            ]
            rows.append("| " + " | ".join(cells) + " |")
        if not rows:
            return ""
        width = rows[0].count(" | ") + 1
        return "\n".join([rows[0], "|" + "---|" * width, *rows[1:]])

    def _b_ac_image(self, el: Any) -> str:
        return self._image(el)

    def _b_ac_link(self, el: Any) -> str:
        return self._link(el)

    def _b_ac_task_list(self, el: Any) -> str:
        lines = []
        for task in el:
            if _local(task.tag) != "ac:task":
                continue
            status = next((c.text or "" for c in task if _local(c.tag) == "ac:task-status"), "")
            body = next((self.inline(c).strip() for c in task if _local(c.tag) == "ac:task-body"), "")
            lines.append(f"- [{'x' if status.strip() == 'complete' else ' '}] {body}")
        return "\n".join(lines)

    def _b_ac_structured_macro(self, el: Any) -> str:
        name = _attr(el, "ac:name")
        params = {_attr(p, "ac:name"): (p.text or "").strip() for p in el if _local(p.tag) == "ac:parameter"}
        body = next((c for c in el if _local(c.tag) in ("ac:rich-text-body", "ac:plain-text-body")), None)
        if name in ("code", "noformat"):
            text = body.text or "" if body is not None else ""
            return _fence(text, params.get("language", "") if name == "code" else "")
        if name in _PANELS:
            label = params.get("title") or _PANELS[name]
            return _quote(f"**{label}:** " + (self.blocks(body) if body is not None else ""))
        if name == "expand":
            title = params.get("title", "")
            inner = self.blocks(body) if body is not None else ""
            return f"**{title}**\n\n{inner}" if title else inner
        if name == "status":
            return f"[{params.get('title', '').upper() or 'STATUS'}]"
        if name in ("include", "excerpt-include"):
            # Resolved once every page of the ingestion is known (see resolve_includes).
            target = next((p for p in el.iter() if _local(p.tag) == "ri:page"), None)
            return include_marker(name, _attr(target, "ri:content-title"), _attr(target, "ri:space-key"))
        if name == "excerpt":
            inner = self.blocks(body) if body is not None else ""
            self.excerpt = inner
            return inner
        if name in _IGNORED_MACROS:
            return ""
        if name not in self._unknown:
            self._unknown.add(name)
            self.notes.append(f"unknown macro {name!r}: its text is kept")
        return self.blocks(body) if body is not None else ""

    # -- inline -------------------------------------------------------------
    def inline(self, el: Any) -> str:
        parts = [el.text or ""]
        for child in el:
            parts.append(self._inline_child(child))
            parts.append(child.tail or "")
        return re.sub(r"[ \t\r\n]+", " ", "".join(parts))

    def _inline_child(self, el: Any) -> str:
        tag = _local(el.tag)
        if tag in ("strong", "b"):
            return f"**{self.inline(el).strip()}**"
        if tag in ("em", "i"):
            return f"*{self.inline(el).strip()}*"
        if tag == "code":
            return f"`{''.join(el.itertext())}`"
        if tag == "br":
            return " "
        if tag == "a":
            text = self.inline(el).strip()
            href = el.get("href", "")
            return f"[{text}]({href})" if href and text else text or href
        if tag == "ac:link":
            return self._link(el)
        if tag == "ac:image":
            return self._image(el)
        if tag == "ac:structured-macro":
            return " " + self._b_ac_structured_macro(el) + " "
        if tag in ("ac:emoticon", "ac:placeholder", "ac:task-id", "ac:task-uuid"):
            return ""
        if tag in ("p", "ul", "ol", "table", "h1", "h2", "h3", "h4", "h5", "h6", "div", "ac:task-list"):
            return "\n\n" + self.block(el) + "\n\n"
        return self.inline(el)

    def _link(self, el: Any) -> str:
        body = next((c for c in el if _local(c.tag) in ("ac:link-body", "ac:plain-text-link-body")), None)
        text = "".join(body.itertext()).strip() if body is not None else ""
        for target in el:
            kind = _local(target.tag)
            if kind == "ri:page":
                return text or _attr(target, "ri:content-title")
            if kind == "ri:attachment":
                return text or _attr(target, "ri:filename")
            if kind == "ri:url":
                return text or _attr(target, "ri:value")
        return text or _attr(el, "ac:anchor")

    def _image(self, el: Any) -> str:
        alt = _attr(el, "ac:alt") or _attr(el, "ac:title")
        if not alt:
            for target in el:
                alt = _attr(target, "ri:filename") or _attr(target, "ri:value").rsplit("/", 1)[-1]
                if alt:
                    break
        return f"[image: {alt}]" if alt else ""


_INCLUDE = re.compile(r"^<!--runbook-rag:(include|excerpt-include):(.*?)-->$", re.M)


def include_marker(kind: str, title: str, space: str = "") -> str:
    """A line standing for an included page until the includes are resolved."""
    return f"<!--runbook-rag:{kind}:{json.dumps([space, title])}-->"


def resolve_includes(
    documents: list[Any], excerpts: dict[str, str]
) -> tuple[list[Any], list[Any], list[Any]]:
    """Inline pages included from pages of the same ingestion; the host's labels become the
    intersection of both (a page never shows more than its reader could see in the
    included page). An include of a page outside the ingestion is dropped and reported.

    Returns the documents, build warnings and skipped pages. Includes are inlined one
    level deep."""
    from dataclasses import replace

    from ..records import BuildWarning, Skipped

    # Titles are unique within a space; an include names the space or means its own.
    by_title = {(d.metadata.get("space", ""), d.title): d for d in documents if d.source.endswith(SUFFIXES)}
    out, warnings, skipped = [], [], []
    for doc in documents:
        if not doc.source.endswith(SUFFIXES) or "<!--runbook-rag:" not in doc.text:
            out.append(doc)
            continue
        labels = set(doc.labels)
        # The host's exemption from the instruction screen covers its own text only: text it
        # includes from a page without the exemption is screened with it.
        exempt = [doc.allow_instructions]

        def inline(
            match: re.Match[str], doc: Any = doc, labels: set[str] = labels, exempt: list[bool] = exempt
        ) -> str:
            kind, (space, title) = match.group(1), json.loads(match.group(2))
            included = by_title.get((space or doc.metadata.get("space", ""), title))
            text = None
            if included is not None and included is not doc:
                text = excerpts.get(included.source) if kind == "excerpt-include" else included.text
            if text is None or included is None:
                warnings.append(
                    BuildWarning(doc.source, f"{kind} of page {title!r} dropped (not in this ingestion)")
                )
                return ""
            labels &= set(included.labels)
            exempt[0] = exempt[0] and included.allow_instructions
            return _INCLUDE.sub("", text).strip("\n")

        text = _INCLUDE.sub(inline, doc.text)
        if not labels:
            skipped.append(Skipped(doc.source, "no group may read both this page and the pages it includes"))
            continue
        out.append(replace(doc, text=text, labels=tuple(sorted(labels)), allow_instructions=exempt[0]))
    return out, warnings, skipped


def _fence(text: str, language: str) -> str:
    text = text.strip("\n")
    longest = max((len(m) for m in re.findall(r"`{3,}", text)), default=0)
    marker = "`" * max(3, longest + 1)
    language = "" if language in ("none", "text", "plain") else language
    return f"{marker}{language}\n{text}\n{marker}"


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in text.split("\n"))


def parse_confluence(
    text: str,
    *,
    source: str,
    access_map: Any,
    sidecar: Sidecar | Mapping[str, Any] | None = None,
    warnings: list[Any] | None = None,
) -> Any:
    """Parse a storage-format page into a :class:`~runbook_rag.records.Document`.

    Labels start from the access map (the space's readers) and are intersected with the
    read restrictions of the page and of every ancestor given in the sidecar: fail
    closed, a page is never more visible than its most restricted ancestor. A sidecar
    given as a mapping is checked against the strict schema first
    (:class:`~runbook_rag.errors.SidecarError` when it breaks it).
    """
    from ..access import allows_instructions
    from ..errors import AccessLabelError
    from ..records import BuildWarning, Document

    meta = (
        validate_sidecar(sidecar, source=source, sidecar=source.rsplit(".", 1)[0] + ".json")
        if sidecar is not None
        else Sidecar()
    )
    rendered = render_storage(text, source=source)
    base = access_map.labels_for(source)
    if base is None:
        raise AccessLabelError(
            "no access labels: no rule of the access map matches this page"
            if access_map.rules
            else "no access labels: no access map given",
            source=source,
        )
    labels = set(base)
    if not meta.readable:
        raise AccessLabelError("the page's own restrictions cannot be read", source=source)
    # The space's readers, when the API told us: nobody listed, nobody reads.
    if meta.space_readers is not None:
        labels &= _restriction_labels(meta.space_readers, source=source, access_map=access_map) or set()
    restrictions = [meta.restrictions]
    for n, ancestor in enumerate(meta.ancestors, start=1):
        if not ancestor.readable:
            raise AccessLabelError(f"the restrictions of ancestor {n} cannot be read", source=source)
        restrictions.append(ancestor.restrictions)
    for restriction in restrictions:
        allowed = _restriction_labels(restriction, source=source, access_map=access_map)
        if allowed is not None:
            labels &= allowed
    if not labels:
        raise AccessLabelError(
            "no group may read it under every restriction of the page and its ancestors", source=source
        )
    if warnings is not None:
        warnings.extend(BuildWarning(source, note) for note in rendered.notes)
    title = meta.title or rendered.title or source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    metadata = {
        key: str(value)
        for key in ("id", "space", "version", "url")
        if (value := getattr(meta, key)) is not None
    }
    if rendered.excerpt:
        metadata["excerpt"] = rendered.excerpt
    return Document(
        doc_id=source,
        source=source,
        title=title,
        text=rendered.markdown,
        labels=tuple(sorted(labels)),
        metadata=metadata,
        # Only the access map exempts a page from the instruction screen: nothing in the page
        # or its sidecar can ask for it.
        allow_instructions=allows_instructions(access_map, source),
    )


def _restriction_labels(restriction: Restriction | None, *, source: str, access_map: Any) -> set[str] | None:
    """The labels a read restriction allows, or None when there is no restriction."""
    from ..access import LabelError, validate_labels
    from ..errors import AccessLabelError

    if restriction is None or not (restriction.groups or restriction.users):
        return None
    try:
        named = validate_labels(restriction.groups) if restriction.groups else ()
        mapped = [label for group in named for label in access_map.map_group(group)]
        return set(validate_labels([*mapped, *(f"user:{u}" for u in restriction.users)]))
    except LabelError as exc:
        raise AccessLabelError(f"page restrictions: {exc}", source=source) from None
