"""Access labels, the access map, and the one filter every read path uses.

A document's labels are the groups allowed to read it. Labels come from the
document itself (front matter ``access:``), else from the first matching rule of
an access map, else the document is not indexed. Deny by default: no group is a
wildcard, and a principal with no groups, or with groups no document carries,
sees nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .errors import AccessViolation, ConfigError
from .records import Document, Hit, Principal

_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$")
LABEL_SEP = ","
_RULE_KEYS = frozenset(
    {"pattern", "groups", "allow_instructions", "allow_document_override", "approvers", "two_person"}
)


class LabelError(ValueError):
    """Access labels are malformed (raised with a reason fit for a build report)."""


def validate_labels(value: object, *, key: str = "access") -> tuple[str, ...]:
    """Return the canonical (sorted, unique) labels, or raise :class:`LabelError`.

    Accepts a non-empty list of group names. Anything else (a bare string, an empty
    list, non-strings, blank or oddly shaped names) is malformed. ``key`` names the field
    in the messages.
    """
    if isinstance(value, str):
        raise LabelError(f"{key} must be a list of group names, got a string")
    if not isinstance(value, (list, tuple)):
        raise LabelError(f"{key} must be a list of group names, got {_kind(value)}")
    if not value:
        nobody = "could read this document" if key == "access" else "could approve its commands"
        raise LabelError(f"{key} is an empty list: nobody {nobody}")
    labels: set[str] = set()
    for item in value:
        if not isinstance(item, str):
            raise LabelError(f"{key} entries must be group names (strings), got {_kind(item)}")
        if not _GROUP_RE.match(item):
            raise LabelError(f"invalid group name {item!r} in {key}")
        labels.add(item)
    return tuple(sorted(labels))


def label_key(labels: Iterable[str]) -> str:
    """The canonical key of a label set (how the store indexes it)."""
    return LABEL_SEP.join(sorted(set(labels)))


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


@dataclass(frozen=True, slots=True)
class AccessRule:
    """One rule of the access map.

    ``allow_instructions`` exempts the documents it matches from the instruction screen
    (a security-training runbook that quotes injections). Only an operator grants that:
    a document's own ``allow_instructions`` front matter counts only under a rule with
    ``allow_document_override``, never on its own. ``approvers`` names the groups that may
    approve the commands of the documents it matches, and ``two_person`` asks for two
    distinct approvers of their destructive and unknown commands (see :func:`approval_policy`).
    """

    pattern: str
    groups: tuple[str, ...]
    allow_instructions: bool = False
    allow_document_override: bool = False
    approvers: tuple[str, ...] = ()
    two_person: bool = False

    def matches(self, source: str) -> bool:
        return _glob_regex(self.pattern).fullmatch(source) is not None


@dataclass(frozen=True, slots=True)
class AccessMap:
    """An ordered list of ``{pattern, groups}`` rules; the first match wins."""

    rules: tuple[AccessRule, ...] = ()
    path: str | None = None
    group_map: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def map_group(self, name: str) -> tuple[str, ...]:
        """Our labels for a group named by a source's own permissions (Confluence): the
        mapped labels, or the name itself when the map does not mention it."""
        return next((labels for group, labels in self.group_map if group == name), (name,))

    def rule_for(self, source: str) -> AccessRule | None:
        """The first rule whose glob matches ``source``, or None."""
        return next((rule for rule in self.rules if rule.matches(source)), None)

    def labels_for(self, source: str) -> tuple[str, ...] | None:
        """Labels of the first rule whose glob matches ``source``, or None."""
        rule = self.rule_for(source)
        return rule.groups if rule else None

    @classmethod
    def load(cls, path: Path | str) -> AccessMap:
        """Load a YAML or JSON access map; any defect is a :class:`ConfigError`."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read access map: {exc}", path=path) from exc
        try:
            data: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"access map is not valid YAML/JSON: {exc}", path=path) from exc
        if isinstance(data, dict) and "rules" in data:
            data = data["rules"]
        if not isinstance(data, list):
            raise ConfigError("access map must be a list of {pattern, groups} rules", path=path)
        rules = []
        group_map = []
        for n, entry in enumerate(data, start=1):
            if isinstance(entry, dict) and set(entry) == {"confluence_group", "groups"}:
                if not isinstance(entry["confluence_group"], str) or not entry["confluence_group"]:
                    raise ConfigError(f"rule {n}: confluence_group must be a non-empty string", path=path)
                try:
                    group_map.append((entry["confluence_group"], validate_labels(entry["groups"])))
                except LabelError as exc:
                    raise ConfigError(f"rule {n}: {exc}", path=path) from exc
                continue
            if not isinstance(entry, dict) or not {"pattern", "groups"} <= set(entry) <= _RULE_KEYS:
                raise ConfigError(
                    f"rule {n}: expected the keys pattern and groups (and optionally allow_instructions, "
                    "allow_document_override, approvers, two_person)",
                    path=path,
                )
            allow = entry.get("allow_instructions", False)
            override = entry.get("allow_document_override", False)
            two_person = entry.get("two_person", False)
            flags = (
                ("allow_instructions", allow),
                ("allow_document_override", override),
                ("two_person", two_person),
            )
            for key, value in flags:
                if not isinstance(value, bool):
                    raise ConfigError(f"rule {n}: {key} must be true or false", path=path)
            if not isinstance(entry["pattern"], str) or not entry["pattern"]:
                raise ConfigError(f"rule {n}: pattern must be a non-empty string", path=path)
            try:
                groups = validate_labels(entry["groups"])
                approvers = (
                    validate_labels(entry["approvers"], key="approvers") if "approvers" in entry else ()
                )
            except LabelError as exc:
                raise ConfigError(f"rule {n}: {exc}", path=path) from exc
            rules.append(AccessRule(entry["pattern"], groups, allow, override, approvers, two_person))
        return cls(tuple(rules), str(path), tuple(group_map))


def allows_instructions(access_map: AccessMap, source: str, *, requested: bool = False) -> bool:
    """Whether ``source`` is exempt from the instruction screen. The operator decides: the
    matching access-map rule allows it, or lets its documents ask (``requested``, from the
    document's own front matter). A document alone can never exempt itself, since a
    hostile one would simply ask."""
    rule = access_map.rule_for(source)
    if rule is None:
        return False
    return rule.allow_instructions or (requested and rule.allow_document_override)


def approval_policy(document: Document, access_map: AccessMap | None) -> tuple[tuple[str, ...], bool]:
    """Who may approve the commands of ``document``, and whether two must.

    The approver groups are the document's own (front matter ``approvers``), else those of
    the access-map rule that matches it; two distinct approvers are needed when either the
    document or the rule says ``two_person``: the stricter word wins.
    """
    rule = access_map.rule_for(document.source) if access_map else None
    approvers = document.approvers if document.approvers is not None else (rule.approvers if rule else ())
    return approvers, document.two_person or bool(rule and rule.two_person)


@lru_cache(maxsize=512)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Translate a path glob: ``**`` spans folders, ``*`` and ``?`` stay within one."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def visible_label_keys(principal: Principal, label_keys: Iterable[str]) -> list[str]:
    """The label-set keys of an index that ``principal`` may read, sorted."""
    if not principal.groups:
        return []  # deny by default: no groups, nothing (not even per-user pages)
    return sorted(k for k in label_keys if principal.labels.intersection(k.split(LABEL_SEP)))


def where_filter(principal: Principal, label_keys: Iterable[str]) -> dict[str, Any] | None:
    """THE store filter for ``principal``: every read path builds its query with this.

    Each chunk carries ``acl_key``, the canonical key of its label set; the index
    knows all its label sets, so "any of my groups" becomes one ``$in`` over the
    keys this principal may read. Returns None when nothing is visible: the caller
    must then not query at all (deny by default; an empty ``$in`` is an error in Chroma).
    """
    keys = visible_label_keys(principal, label_keys)
    if not keys:
        return None
    return {"acl_key": {"$in": keys}}


def is_entitled(principal: Principal, labels: Sequence[str]) -> bool:
    """True when the principal holds at least one of the labels."""
    return bool(principal.groups) and bool(principal.labels.intersection(labels))


def check_entitled(principal: Principal, *, chunk_id: str, labels: Sequence[str]) -> None:
    """Re-check a record against the principal; raise :class:`AccessViolation` on mismatch."""
    if not is_entitled(principal, labels):
        raise AccessViolation(chunk_id=chunk_id, user_id=principal.user_id)


_MINT = object()


@dataclass(frozen=True, slots=True)
class EntitledHit:
    """A hit that passed the access check for ``principal``.

    Only :func:`entitle` makes these (the constructor refuses any other caller), and
    the prompt builder accepts nothing else: restricted text cannot reach a prompt by
    a path that skipped the check.
    """

    hit: Hit
    principal: Principal
    _mint: object = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._mint is not _MINT:
            raise TypeError("EntitledHit is made by runbook_rag.access.entitle() only")


def entitle(principal: Principal, hits: Iterable[Hit]) -> tuple[EntitledHit, ...]:
    """Check every hit against ``principal`` (raising :class:`AccessViolation`) and mark it entitled."""
    out = []
    for hit in hits:
        check_entitled(principal, chunk_id=hit.chunk_id, labels=hit.labels)
        out.append(EntitledHit(hit, principal, _MINT))
    return tuple(out)
