"""Fetching Confluence pages over the REST API (Cloud and Data Center) into a local mirror.

The mirror is a folder of storage-format pages with their sidecars (see
:mod:`runbook_rag.sources.confluence`), which the build then reads like any other
source folder: ``<mirror>/<SPACE>/<page id>.xml`` and ``.json``. Fetching is
incremental by page version (an unchanged page is not fetched again), paginated,
bounded by timeouts, and retried with backoff on 429 and 5xx, honouring
``Retry-After``. The token comes from the environment and never appears in a log,
an error or the mirror.

Whatever the API says that becomes a file name is checked first: a page id must be
ASCII digits (``../../etc/x``, ``12/../x``, ``123abc`` or Arabic-Indic digits are
refused), a space key letters and digits, and every file is written only after its
resolved path is found inside the mirror. A page the mirror cannot take safely is
skipped with a reason (and any older copy of it removed); the rest go on.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_write
from ..errors import ConfigError, ConfluenceError, SourceError
from ..records import Skipped
from ..redaction import redact
from .files import read_text

if TYPE_CHECKING:
    from ..settings import ConfluenceSettings

log = logging.getLogger("runbook_rag")
TOKEN_ENV = "RUNBOOK_RAG_CONFLUENCE_TOKEN"
USER_ENV = "RUNBOOK_RAG_CONFLUENCE_USER"
PAGE_EXPAND = "body.storage,version,ancestors"
# [0-9], not \d or str.isdigit(): those take any Unicode digit.
_PAGE_ID = re.compile(r"[0-9]{1,20}")
# Space keys are letters and digits; personal spaces are "~" and a user name or account id.
_SPACE_KEY = re.compile(r"~?[A-Za-z0-9][A-Za-z0-9_:-]{0,254}")


@dataclass
class SyncReport:
    """What a sync did, per space."""

    fetched: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class ConfluenceClient:
    """A small, polite client: timeouts, bounded retries with backoff, Retry-After."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        user: str | None = None,
        timeout: float = 20.0,
        retries: int = 4,
        backoff: float = 0.5,
    ) -> None:
        import httpx

        if not token:
            raise ConfigError(f"set {TOKEN_ENV} to a Confluence API token")
        # Cloud: e-mail + API token (basic); Data Center: a personal access token (bearer).
        auth = httpx.BasicAuth(user, token) if user else None
        headers = {"Accept": "application/json"}
        if not user:
            headers["Authorization"] = f"Bearer {token}"
        self._base = base_url.rstrip("/")
        self._http = httpx.Client(auth=auth, headers=headers, timeout=timeout, follow_redirects=False)
        self._retries = retries
        self._backoff = backoff

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET a JSON document; None when the API answers 403 or 404 (not readable)."""
        import httpx

        url = path if path.startswith("http") else f"{self._base}{path}"
        for attempt in range(self._retries + 1):
            try:
                response = self._http.get(url, params=params)
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise ConfluenceError(
                        f"{self._base}: {type(exc).__name__} after {attempt + 1} attempts"
                    ) from None
                time.sleep(self._backoff * 2**attempt)
                continue
            if response.status_code in (403, 404):
                return None
            if response.status_code == 429 or response.status_code >= 500:
                if attempt == self._retries:
                    raise ConfluenceError(
                        f"{self._base}: HTTP {response.status_code} after {attempt + 1} attempts"
                    )
                time.sleep(_retry_after(response.headers.get("Retry-After"), self._backoff * 2**attempt))
                continue
            if response.status_code == 401:
                raise ConfluenceError(f"{self._base}: the token was refused (HTTP 401)")
            if response.status_code >= 400:
                raise ConfluenceError(f"{self._base}{path}: HTTP {response.status_code}")
            try:
                return response.json()
            except ValueError:
                raise ConfluenceError(f"{self._base}{path}: the answer is not JSON") from None
        raise AssertionError("unreachable")

    def pages(self, space: str, *, limit: int = 50) -> Iterator[dict[str, Any]]:
        """Every page of a space, with its version (no bodies), following pagination."""
        params: dict[str, Any] | None = {
            "spaceKey": space,
            "type": "page",
            "limit": limit,
            "expand": "version",
        }
        path = "/rest/api/content"
        while True:
            data = self.get(path, params)
            if data is None:
                raise ConfluenceError(f"space {space}: not readable with this token")
            yield from data.get("results", [])
            nxt = (data.get("_links") or {}).get("next")
            if nxt:
                path, params = self._next_url(nxt, space), None
            elif len(data.get("results", [])) == limit and "start" in data:
                params = {**(params or {}), "start": int(data["start"]) + limit}
            else:
                return

    def _next_url(self, nxt: object, space: str) -> str:
        # The token goes with every request: follow a next link only on this server.
        if isinstance(nxt, str) and nxt.startswith("/") and not nxt.startswith("//"):
            return f"{self._base}{nxt}"
        if isinstance(nxt, str) and nxt.startswith(self._base + "/"):
            return nxt
        raise ConfluenceError(f"space {space}: the API's next-page link leaves {self._base}")

    def space_readers(self, space: str) -> dict[str, list[str]] | None:
        """Groups and users with read permission on the space, or None when the API will not say."""
        data = self.get(f"/rest/api/space/{space}", {"expand": "permissions"})
        if data is None or "permissions" not in data:
            return None
        permissions = data["permissions"] or []
        if not isinstance(permissions, list):
            raise ConfluenceError(f"space {space}: the API's permissions are not a list")
        groups: list[str] = []
        users: list[str] = []
        # An entry that cannot be understood is left out: fewer readers, never more.
        for permission in permissions:
            if _dig(permission, "operation", "operation") != "read":
                continue
            if _dig(permission, "operation", "targetType") != "space":
                continue
            for key, names, out in (("group", ("name",), groups), ("user", ("accountId", "username"), users)):
                for subject in _dig(permission, "subjects", key, "results") or []:
                    name = next((_dig(subject, k) for k in names if _dig(subject, k)), None)
                    if isinstance(name, str):
                        out.append(name)
        return {"groups": groups, "users": users}

    def read_restrictions(self, page_id: str) -> dict[str, list[str]] | None:
        """The read restrictions of a page (groups and users), or None when they cannot be read.

        An entry that cannot be understood makes the whole answer unreadable: dropping it
        could leave an empty list, which means no restriction at all."""
        if not valid_page_id(page_id):
            return None
        data = self.get(f"/rest/api/content/{page_id}/restriction/byOperation/read")
        restrictions = data.get("restrictions") if isinstance(data, dict) else None
        if not isinstance(restrictions, dict):
            return None
        groups = _subjects(restrictions.get("group"), ("name",))
        users = _subjects(restrictions.get("user"), ("accountId", "username"))
        if groups is None or users is None:
            return None
        return {"groups": groups, "users": users}


def _dig(data: object, *keys: str) -> Any:
    """``data[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _subjects(block: object, keys: tuple[str, ...]) -> list[str] | None:
    """The names in ``{"results": [{key: name}, ...]}``; None when any entry has none."""
    if block is None:
        return []
    results = block.get("results", []) if isinstance(block, dict) else None
    if not isinstance(results, list):
        return None
    names = []
    for entry in results:
        name = next((entry[k] for k in keys if isinstance(entry, dict) and entry.get(k)), None)
        if not isinstance(name, str):
            return None
        names.append(name)
    return names


def valid_page_id(value: object) -> str | None:
    """``value`` as a page id, when it is one: 1 to 20 ASCII digits (it becomes a file name)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        value = str(value)
    return value if isinstance(value, str) and _PAGE_ID.fullmatch(value) else None


def sync_space(client: ConfluenceClient, space: str, mirror: Path, *, base_url: str) -> SyncReport:
    """Bring ``mirror/<space>/`` up to date with the space; unchanged versions are not re-fetched.

    A page that cannot be mirrored safely (a malformed id, version, title or body, or one
    that cannot be read) is listed in the report's ``skipped`` and left out of the mirror.
    """
    if not isinstance(space, str) or not _SPACE_KEY.fullmatch(space):
        raise ConfigError(f"{str(space)[:40]!r} is not a Confluence space key (letters and digits)")
    mirror.mkdir(parents=True, exist_ok=True)
    folder = mirror / space
    if not folder.is_symlink():
        folder.mkdir(exist_ok=True)
    if folder.is_symlink() or folder.resolve().parent != mirror.resolve():
        raise ConfluenceError(f"{folder}: the space's mirror folder must be a plain folder inside {mirror}")
    folder = folder.resolve()
    report = SyncReport()
    live: set[str] = set()
    readers = client.space_readers(space)
    for summary in client.pages(space):
        raw_id = summary.get("id") if isinstance(summary, dict) else None
        page_id = valid_page_id(raw_id)
        if page_id is None:
            report.skipped.append(
                _skip(
                    f"{space}/(page id {_shown(raw_id)})", "the API gave a page id that is not ASCII digits"
                )
            )
            continue
        try:
            version = _version(_dig(summary, "version", "number") or 0)
            sidecar = _mirror_path(folder, f"{page_id}.json")
            if (
                sidecar.is_file()
                and _cached_version(sidecar) == version
                and _cached(sidecar, "space_readers") == readers
            ):
                report.unchanged.append(page_id)
                live.add(page_id)
                continue
            page = client.get(f"/rest/api/content/{page_id}", {"expand": PAGE_EXPAND})
            if page is None:
                raise SourceError("the page cannot be read with this token", source=page_id)
            meta, body = _page_meta(
                client, page, page_id=page_id, space=space, version=version, base_url=base_url
            )
            meta["space_readers"] = readers
            atomic_write(_mirror_path(folder, f"{page_id}.xml"), body)
            atomic_write(sidecar, json.dumps(meta, indent=2))
        except SourceError as exc:
            report.skipped.append(_skip(f"{space}/{page_id}.xml", exc.reason))
            continue
        live.add(page_id)
        report.fetched.append(page_id)
    # A page gone upstream, or skipped now, leaves the mirror: an old copy could carry old restrictions.
    for stale in folder.glob("*.json"):
        if stale.stem not in live:
            stale.unlink()
            (folder / f"{stale.stem}.xml").unlink(missing_ok=True)
            report.removed.append(stale.stem)
    for entry in report.skipped:
        log.warning("confluence %s: %s skipped: %s", space, entry.source, entry.reason)
    return report


def _page_meta(
    client: ConfluenceClient, page: object, *, page_id: str, space: str, version: int, base_url: str
) -> tuple[dict[str, Any], str]:
    """A fetched page's sidecar and storage-format body, or a SourceError saying what is wrong."""
    if not isinstance(page, dict):
        raise SourceError("the API's page is not a JSON object", source=page_id)
    title = page.get("title")
    body = _dig(page, "body", "storage", "value") or ""
    if title is not None and not isinstance(title, str):
        raise SourceError("the API gave a title that is not a string", source=page_id)
    if not isinstance(body, str):
        raise SourceError("the API gave a body that is not a string", source=page_id)
    webui = _dig(page, "_links", "webui")
    # A path on this wiki only: "//host/x" or "https://elsewhere" would send readers off-site.
    if not (isinstance(webui, str) and webui.startswith("/") and not webui.startswith("//")):
        webui = f"/pages/{page_id}"
    meta: dict[str, Any] = {
        "id": page_id,
        "title": title,
        "space": space,
        "version": _version(_dig(page, "version", "number") or version),
        "url": base_url.rstrip("/") + webui,
        "restrictions": client.read_restrictions(page_id),
        "ancestors": [],
    }
    if meta["restrictions"] is None:
        meta["restrictions"] = {"groups": [], "users": []}
        meta["readable"] = False
    ancestors = page.get("ancestors") or []
    if not isinstance(ancestors, list):
        raise SourceError("the API gave ancestors that are not a list", source=page_id)
    for ancestor in ancestors:
        raw_id = ancestor.get("id") if isinstance(ancestor, dict) else None
        ancestor_id = valid_page_id(raw_id)
        if ancestor_id is None or not isinstance(ancestor, dict):
            raise SourceError(
                f"the API gave an ancestor id that is not ASCII digits ({_shown(raw_id)})", source=page_id
            )
        ancestor_title = ancestor.get("title")
        restrictions = client.read_restrictions(ancestor_id)
        meta["ancestors"].append(
            {
                "id": ancestor_id,
                "title": ancestor_title if isinstance(ancestor_title, str) else None,
                "restrictions": restrictions,
                "readable": restrictions is not None,
            }
        )
    return meta, body


def _version(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SourceError(f"the API gave a version that is not a whole number ({_shown(value)})", source="")
    return value


def _mirror_path(folder: Path, name: str) -> Path:
    """``folder/name``, refused unless it really is in ``folder`` (a resolved, real folder)."""
    path = folder / name
    if path.parent != folder or not Path(os.path.realpath(path)).is_relative_to(folder):
        raise SourceError(f"{name} would be written outside the mirror folder", source=name)
    return path


def _shown(value: object) -> str:
    """A value from the API, quoted and cut short for a report."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _skip(source: str, reason: str) -> Skipped:
    # Report entries pass through the redactor: an id from the API may quote anything.
    return Skipped(redact(source).text, redact(f"not mirrored: {reason}").text)


def _cached(sidecar: Path, key: str) -> Any:
    # A sidecar that cannot be read (or is a link) is as good as absent: the page is fetched again.
    try:
        data = json.loads(read_text(sidecar, source=sidecar.name))
    except (SourceError, ValueError):
        return None
    return data.get(key) if isinstance(data, dict) else None


def _cached_version(sidecar: Path) -> int | None:
    version = _cached(sidecar, "version")
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _retry_after(value: str | None, default: float) -> float:
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else default
    except ValueError:
        return default


def sync_confluence(
    base_url: str,
    spaces: Sequence[str],
    mirror: Path,
    *,
    credentials: ConfluenceSettings,
    skipped: list[Skipped] | None = None,
) -> Path:
    """Mirror the pages of ``spaces`` (incrementally, by version) and return the mirror folder;
    pages that could not be mirrored safely are appended to ``skipped``."""
    token = credentials.token.get_secret_value() if credentials.token else None
    client = ConfluenceClient(base_url, token=token, user=credentials.user)
    try:
        for space in spaces:
            report = sync_space(client, space, mirror, base_url=base_url)
            if skipped is not None:
                skipped.extend(report.skipped)
            log.info(
                "confluence %s: %d fetched, %d unchanged, %d removed",
                space,
                len(report.fetched),
                len(report.unchanged),
                len(report.removed),
            )
    finally:
        client.close()
    return mirror
