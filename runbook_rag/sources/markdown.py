"""Markdown runbooks with YAML front matter."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from ..access import AccessMap, LabelError, allows_instructions, validate_labels
from ..errors import AccessLabelError, FrontMatterError
from ..parsing import structure_parser
from ..records import BuildWarning, Document

SUFFIXES = (".md", ".markdown")


class FrontMatter(BaseModel):
    """The front matter keys runbook-rag reads. Other keys (a static-site generator's
    ``weight``, ``aliases``...) are reported and ignored, except a key that looks like a
    misspelt ``access``, which rejects the document: it must never fall back to the
    access map's broader labels by accident."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    title: str | None = None
    access: Any = None
    owner: str | None = None
    service: str | None = None
    tags: list[str] | None = None
    updated: dt.date | None = None
    description: str | None = None
    # A request only: honoured where the access map lets documents decide (see allows_instructions).
    allow_instructions: bool = False
    # Who may approve this runbook's commands (see runbook_rag.actions).
    approvers: Any = None
    two_person: bool = False

    @field_validator("title", "owner", "service", "description", mode="before")
    @classmethod
    def _scalar_text(cls, value: object) -> object:
        # YAML turns `service: 2024` into an int; a number is still a fine name.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


_ACCESS_LOOKALIKES = frozenset(
    {"acl", "acls", "groups", "group", "readers", "audience", "visibility", "permissions", "allowed_groups"}
)


def parse_markdown(
    text: str, *, source: str, access_map: AccessMap, warnings: list[BuildWarning] | None = None
) -> Document:
    """Parse one Markdown file into a :class:`Document` with validated access labels.

    Unknown front-matter keys are appended to ``warnings``; a key that looks like a
    misspelt ``access`` raises :class:`AccessLabelError`.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # line numbers as Markdown counts them
    tokens = structure_parser().parse(text)
    meta: dict[str, Any] = {}
    fm_tokens = [t for t in tokens if t.type == "front_matter"]
    if fm_tokens:
        meta = _load_front_matter(fm_tokens[0].content, source=source)
    elif text.startswith("---\n") or text.startswith("---\r\n"):
        raise FrontMatterError(
            "front matter opened with '---' on line 1 is never closed", source=source, line=1
        )

    for key in meta:
        if key in FrontMatter.model_fields:
            continue
        if _looks_like_access(key):
            raise AccessLabelError(
                f"front-matter key {key!r} looks like a misspelt 'access'; fix it so the labels apply",
                source=source,
                line=_key_line(text, key),
            )
        if warnings is not None:
            allowed = ", ".join(FrontMatter.model_fields)
            warnings.append(
                BuildWarning(
                    source,
                    f"unknown front-matter key {key!r} ignored (known: {allowed})",
                    _key_line(text, key),
                )
            )
    try:
        fm = FrontMatter.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else ""
        line = _key_line(text, key)
        raise FrontMatterError(f"front-matter key {key!r}: {err['msg']}", source=source, line=line) from None

    if "access" in meta:
        try:
            labels = validate_labels(fm.access)
        except LabelError as exc:
            raise AccessLabelError(str(exc), source=source, line=_key_line(text, "access")) from None
    else:
        mapped = access_map.labels_for(source)
        if mapped is None:
            where = "no rule of the access map matches it" if access_map.rules else "no access map given"
            raise AccessLabelError(
                f"no access labels: front matter has no 'access' and {where}", source=source
            )
        labels = mapped

    approvers = None
    if "approvers" in meta:
        try:
            approvers = validate_labels(fm.approvers, key="approvers")
        except LabelError as exc:
            raise FrontMatterError(str(exc), source=source, line=_key_line(text, "approvers")) from None
    title = fm.title or _first_heading(tokens) or source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    metadata = {k: str(v) for k, v in (("owner", fm.owner), ("service", fm.service)) if v}
    if fm.updated:
        metadata["updated"] = fm.updated.isoformat()
    if fm.tags:
        metadata["tags"] = ",".join(fm.tags)
    allow = allows_instructions(access_map, source, requested=fm.allow_instructions)
    if fm.allow_instructions and not allow and warnings is not None:
        warnings.append(
            BuildWarning(
                source,
                "front-matter allow_instructions ignored: only the access map can exempt a document from the "
                "instruction screen (a rule's allow_instructions, or allow_document_override to let its "
                "documents decide)",
                _key_line(text, "allow_instructions"),
            )
        )
    return Document(
        allow_instructions=allow,
        doc_id=source,
        source=source,
        title=title.strip(),
        text=text,
        labels=labels,
        metadata=metadata,
        approvers=approvers,
        two_person=fm.two_person,
    )


def _looks_like_access(key: str) -> bool:
    folded = key.strip().lower().replace("-", "_")
    return folded in _ACCESS_LOOKALIKES or folded == "access" or _within_two_edits(folded, "access")


def _within_two_edits(a: str, b: str) -> bool:
    if abs(len(a) - len(b)) > 2:
        return False
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1] <= 2


MAX_FRONT_MATTER_BYTES = 64 * 1024
MAX_YAML_DEPTH = 16


def _load_front_matter(content: str, *, source: str) -> dict[str, Any]:
    if len(content.encode("utf-8")) > MAX_FRONT_MATTER_BYTES:
        raise FrontMatterError(
            f"front matter is larger than {MAX_FRONT_MATTER_BYTES // 1024} KiB", source=source, line=2
        )
    try:
        _check_yaml_shape(content, source=source)
        data = yaml.safe_load(content) if content.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # +2: the mark is 0-based within the block, which starts after the opening '---' line.
        line = mark.line + 2 if mark is not None else 1
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise FrontMatterError(
            f"front matter is not valid YAML: {problem}", source=source, line=line
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FrontMatterError("front matter must be a mapping of keys to values", source=source, line=2)
    return {str(k): v for k, v in data.items()}


def _check_yaml_shape(content: str, *, source: str) -> None:
    """Refuse anchors and aliases (the "billion laughs" expansion) and deep nesting,
    before anything is built from the YAML."""
    depth = 0
    for event in yaml.parse(content, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 2 if event.start_mark else None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise FrontMatterError(
                "YAML anchors and aliases are not allowed in front matter", source=source, line=line
            )
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise FrontMatterError(
                    f"front matter nests deeper than {MAX_YAML_DEPTH} levels", source=source, line=line
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _key_line(text: str, key: str) -> int | None:
    if not key:
        return None
    pattern = re.compile(rf"^{re.escape(key)}\s*:", re.MULTILINE)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def _first_heading(tokens: list[Any]) -> str | None:
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open" and tok.tag == "h1" and tok.level == 0:
            return str(tokens[i + 1].content) or None
    return None
