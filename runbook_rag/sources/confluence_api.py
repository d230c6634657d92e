"""Fetching Confluence pages over the REST API (Cloud and Data Center) into a local mirror.

The mirror is a folder of storage-format pages with their sidecars (see
:mod:`runbook_rag.sources.confluence`), which the build then reads like any other
source folder: ``<mirror>/<SPACE>/<page id>.xml`` and ``.json``. Fetching is
incremental by page version (an unchanged page is not fetched again), paginated,
bounded by timeouts, and retried with backoff on 429 and 5xx, honouring
``Retry-After``. The token comes from the environment and never appears in a log,
an error or the mirror.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ConfluenceError
from ..generations import atomic_write

log = logging.getLogger("runbook_rag")
TOKEN_ENV = "RUNBOOK_RAG_CONFLUENCE_TOKEN"
USER_ENV = "RUNBOOK_RAG_CONFLUENCE_USER"
PAGE_EXPAND = "body.storage,version,ancestors"


@dataclass
class SyncReport:
    """What a sync did, per space."""

    fetched: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


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

        token = token if token is not None else os.environ.get(TOKEN_ENV)
        user = user if user is not None else os.environ.get(USER_ENV)
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
                path, params = nxt if nxt.startswith("http") else f"{self._base}{nxt}", None
            elif len(data.get("results", [])) == limit and "start" in data:
                params = {**(params or {}), "start": int(data["start"]) + limit}
            else:
                return

    def space_readers(self, space: str) -> dict[str, list[str]] | None:
        """Groups and users with read permission on the space, or None when the API will not say."""
        data = self.get(f"/rest/api/space/{space}", {"expand": "permissions"})
        if data is None or "permissions" not in data:
            return None
        groups: list[str] = []
        users: list[str] = []
        for permission in data["permissions"] or []:
            operation = permission.get("operation") or {}
            if operation.get("operation") != "read" or operation.get("targetType") != "space":
                continue
            subjects = permission.get("subjects") or {}
            groups += [
                g.get("name") for g in (subjects.get("group") or {}).get("results", []) if g.get("name")
            ]
            users += [
                u.get("accountId") or u.get("username")
                for u in (subjects.get("user") or {}).get("results", [])
                if u.get("accountId") or u.get("username")
            ]
        return {"groups": groups, "users": users}

    def read_restrictions(self, page_id: str) -> dict[str, list[str]] | None:
        """The read restrictions of a page (groups and users), or None when they cannot be read."""
        data = self.get(f"/rest/api/content/{page_id}/restriction/byOperation/read")
        if data is None:
            return None
        restrictions = data.get("restrictions") or {}
        groups = [g.get("name") for g in (restrictions.get("group") or {}).get("results", [])]
        users = [
            u.get("accountId") or u.get("username")
            for u in (restrictions.get("user") or {}).get("results", [])
        ]
        return {"groups": [g for g in groups if g], "users": [u for u in users if u]}


def sync_space(client: ConfluenceClient, space: str, mirror: Path, *, base_url: str) -> SyncReport:
    """Bring ``mirror/<space>/`` up to date with the space; unchanged versions are not re-fetched."""
    folder = mirror / space
    folder.mkdir(parents=True, exist_ok=True)
    report = SyncReport()
    live: set[str] = set()
    readers = client.space_readers(space)
    for summary in client.pages(space):
        page_id = str(summary["id"])
        live.add(page_id)
        version = int((summary.get("version") or {}).get("number", 0))
        sidecar = folder / f"{page_id}.json"
        if (
            sidecar.is_file()
            and _cached_version(sidecar) == version
            and _cached(sidecar, "space_readers") == readers
        ):
            report.unchanged.append(page_id)
            continue
        page = client.get(f"/rest/api/content/{page_id}", {"expand": PAGE_EXPAND})
        if page is None:
            continue
        meta: dict[str, Any] = {
            "id": page_id,
            "title": page.get("title"),
            "space": space,
            "version": int((page.get("version") or {}).get("number", version)),
            "url": base_url.rstrip("/") + ((page.get("_links") or {}).get("webui") or f"/pages/{page_id}"),
            "restrictions": client.read_restrictions(page_id),
            "ancestors": [],
            "space_readers": readers,
        }
        if meta["restrictions"] is None:
            meta["restrictions"] = {"groups": [], "users": []}
            meta["readable"] = False
        for ancestor in page.get("ancestors") or []:
            restrictions = client.read_restrictions(str(ancestor["id"]))
            meta["ancestors"].append(
                {
                    "id": str(ancestor["id"]),
                    "title": ancestor.get("title"),
                    "restrictions": restrictions,
                    "readable": restrictions is not None,
                }
            )
        body = ((page.get("body") or {}).get("storage") or {}).get("value", "")
        atomic_write(folder / f"{page_id}.xml", body)
        atomic_write(sidecar, json.dumps(meta, indent=2))
        report.fetched.append(page_id)
    for stale in folder.glob("*.json"):
        if stale.stem not in live:
            stale.unlink()
            (folder / f"{stale.stem}.xml").unlink(missing_ok=True)
            report.removed.append(stale.stem)
    return report


def _cached(sidecar: Path, key: str) -> Any:
    try:
        return json.loads(sidecar.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None


def _cached_version(sidecar: Path) -> int | None:
    try:
        return int(json.loads(sidecar.read_text(encoding="utf-8")).get("version"))
    except (OSError, ValueError, TypeError):
        return None


def _retry_after(value: str | None, default: float) -> float:
    try:
        return min(max(float(value), 0.0), 60.0) if value is not None else default
    except ValueError:
        return default
