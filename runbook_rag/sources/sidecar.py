"""The sidecar of a Confluence page (``<same name>.json``): its metadata and read restrictions.

A sidecar decides who may read a page, so it is parsed by a strict schema and any
doubt keeps the page out of the index: an unknown or misspelt key, a value of the
wrong type (``"readable": "false"``, ``"groups": "security"``), a key given twice,
or the raw REST API restriction shape all raise
:class:`~runbook_rag.errors.SidecarError` naming the sidecar and the field. A page
never becomes more visible because its metadata was malformed.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import SidecarError


class _Strict(BaseModel):
    # strict: no coercion ("false" is not False, "7" is not 7); forbid: no unknown key.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Restriction(_Strict):
    """Who may read: Confluence group names and user ids. Both empty means no restriction."""

    groups: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)


class Ancestor(_Strict):
    """A parent page, whose read restrictions also apply to the page."""

    id: str | None = None
    title: str | None = None
    restrictions: Restriction | None = None
    readable: bool = True


class Sidecar(_Strict):
    """A page's sidecar. ``readable: false`` (here or on an ancestor) means its restrictions
    could not be read; ``space_readers``, when given, are the only ones who may read the space."""

    id: str | None = None
    title: str | None = None
    space: str | None = None
    version: int | None = Field(None, ge=0)
    url: str | None = None
    readable: bool = True
    restrictions: Restriction | None = None
    ancestors: list[Ancestor] = Field(default_factory=list)
    space_readers: Restriction | None = None

    @field_validator("url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        # Citations link to it: nothing but a web address (no javascript:, no file:).
        if value is not None and not value.lower().startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def parse_sidecar(text: str, *, source: str, sidecar: str) -> Sidecar:
    """Parse a sidecar's JSON text; ``source`` is the page, ``sidecar`` the file named in errors."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SidecarError(
            f"sidecar {sidecar} is not valid JSON: {exc.msg}", source=source, sidecar=sidecar, line=exc.lineno
        ) from None
    except _DuplicateKey as exc:
        # JSON keeps the last of two equal keys: a second "groups": [] would lift a restriction.
        raise SidecarError(
            f"sidecar {sidecar}: key {exc.key!r} is given twice in one object",
            source=source,
            sidecar=sidecar,
            field=exc.key,
            line=_line_of(text, exc.key),
        ) from None
    except ValueError as exc:  # NaN or Infinity
        raise SidecarError(
            f"sidecar {sidecar} is not valid JSON: {exc}", source=source, sidecar=sidecar
        ) from None
    return validate_sidecar(data, source=source, sidecar=sidecar, text=text)


def validate_sidecar(data: object, *, source: str, sidecar: str, text: str = "") -> Sidecar:
    """Check already-decoded sidecar data against the schema (``text``, when given, for line numbers)."""
    if isinstance(data, Sidecar):
        return data
    if not isinstance(data, Mapping):
        raise SidecarError(f"sidecar {sidecar} must be a JSON object", source=source, sidecar=sidecar)
    try:
        return Sidecar.model_validate(dict(data))
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        field, message = _describe(problems[0])
        more = (
            f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        )
        key = next((str(part) for part in reversed(problems[0]["loc"]) if isinstance(part, str)), "")
        raise SidecarError(
            f"sidecar {sidecar}: field {field!r} {message}{more}",
            source=source,
            sidecar=sidecar,
            field=field,
            line=_line_of(text, key),
        ) from None


_MESSAGES = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "greater_than_equal": "must not be negative",
}
_FIELDS = {
    "": set(Sidecar.model_fields),
    "ancestor": set(Ancestor.model_fields),
    "restriction": set(Restriction.model_fields),
}


def _describe(error: Mapping[str, Any]) -> tuple[str, str]:
    """A problem's field (``ancestors[0].restrictions.groups``) and what is wrong with it."""
    loc = tuple(error["loc"])
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    if error["type"] != "extra_forbidden":
        return field, _MESSAGES.get(str(error["type"]), str(error["msg"]))
    key = str(loc[-1])
    parent = next((str(p) for p in reversed(loc[:-1]) if isinstance(p, str)), "")
    known = _FIELDS.get("restriction" if parent in ("restrictions", "space_readers") else parent[:-1], set())
    if parent == "restrictions" and key in ("read", "update", "group", "user", "results"):
        hint = (
            ": this looks like the REST API's restriction shape, which a sidecar does not take;"
            ' give {"groups": [...], "users": [...]}'
        )
    else:
        close = [name for name in known if name.casefold() == key.casefold()] or difflib.get_close_matches(
            key, sorted(known), n=1
        )
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    return field, f"is not a known key{hint}"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _line_of(text: str, key: str) -> int | None:
    """The line of ``"key"`` in the text, when it occurs exactly once (else it is ambiguous)."""
    quoted = json.dumps(key)
    if not key or text.count(quoted) != 1:
        return None
    return text.count("\n", 0, text.index(quoted)) + 1
