"""The REST client against a real HTTP server on 127.0.0.1 serving Confluence-shaped JSON."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from runbook_rag import Principal, RunbookIndex
from runbook_rag.access import AccessMap, AccessRule
from runbook_rag.errors import ConfigError, ConfluenceError
from runbook_rag.sources import load_documents
from runbook_rag.sources.confluence_api import ConfluenceClient, sync_space, valid_page_id

TOKEN = "test-token-Zx81"
PAGES = {
    "101": {
        "title": "Restart the ledger writer",
        "version": 1,
        "ancestors": [],
        "body": "<h1>Restart the ledger writer</h1><p>Drain the consumer, then restart ledger-writer.</p>",
    },
    "102": {
        "title": "Unseal the card vault",
        "version": 3,
        "ancestors": [{"id": "900", "title": "Card vault"}],
        "body": "<h1>Unseal the card vault</h1><p>Unseal the standby vault with three key holders.</p>",
    },
    "103": {
        "title": "Secret escalation list",
        "version": 2,
        "ancestors": [{"id": "901", "title": "Hidden"}],
        "body": "<h1>Secret escalation list</h1><p>Page the vendor bridge.</p>",
    },
}
RESTRICTIONS: dict[str, Any] = {"900": {"group": {"results": [{"name": "card-vault"}]}}}


class Api(BaseHTTPRequestHandler):
    hits: ClassVar[Counter[str]] = Counter()
    flaky: ClassVar[set[str]] = set()

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        type(self).hits[url.path] += 1
        assert self.headers["Authorization"] == f"Bearer {TOKEN}"
        if url.path in type(self).flaky:
            type(self).flaky.discard(url.path)
            status = 429 if url.path == "/rest/api/content" else 500
            return self.reply(status, {"message": "slow down"}, {"Retry-After": "0"})
        if url.path == "/rest/api/space/PAY":
            read = {"operation": "read", "targetType": "space"}
            groups = {"results": [{"name": "sre"}, {"name": "card-vault"}, {"name": "contractors"}]}
            return self.reply(
                200, {"key": "PAY", "permissions": [{"operation": read, "subjects": {"group": groups}}]}
            )
        if url.path == "/rest/api/content":
            start = int(query.get("start", ["0"])[0])
            ids = sorted(PAGES)
            chunk = ids[start : start + 2]
            body: dict[str, Any] = {
                "results": [{"id": i, "version": {"number": PAGES[i]["version"]}} for i in chunk],
                "start": start,
                "limit": 2,
                "size": len(chunk),
                "_links": {},
            }
            if start + 2 < len(ids):
                body["_links"]["next"] = (
                    f"/rest/api/content?spaceKey=PAY&limit=2&start={start + 2}&expand=version"
                )
            return self.reply(200, body)
        parts = url.path.strip("/").split("/")
        if len(parts) == 4 and parts[:3] == ["rest", "api", "content"]:
            page = PAGES[parts[3]]
            return self.reply(
                200,
                {
                    "id": parts[3],
                    "title": page["title"],
                    "version": {"number": page["version"]},
                    "ancestors": page["ancestors"],
                    "body": {"storage": {"value": page["body"]}},
                    "_links": {"webui": f"/spaces/PAY/pages/{parts[3]}"},
                },
            )
        if url.path.endswith("/restriction/byOperation/read"):
            page_id = parts[3]
            if page_id == "901":
                return self.reply(403, {"message": "forbidden"})
            return self.reply(200, {"restrictions": RESTRICTIONS.get(page_id, {})})
        return self.reply(404, {})

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def api() -> Iterator[str]:
    Api.hits = Counter()
    Api.flaky = {"/rest/api/content", "/rest/api/content/101"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    # shutdown() returns once the loop next looks: every 10 ms rather than the default 0.5 s
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sync_paginates_retries_and_records_restrictions(api: str, tmp_path: Path) -> None:
    client = ConfluenceClient(api, token=TOKEN, backoff=0.01)
    report = sync_space(client, "PAY", tmp_path, base_url=api)
    assert sorted(report.fetched) == ["101", "102", "103"]
    assert Api.hits["/rest/api/content"] == 3  # a 429, then two pages of results
    assert Api.hits["/rest/api/content/101"] == 2  # a 500, then success
    side = json.loads((tmp_path / "PAY" / "102.json").read_text())
    assert side["ancestors"][0]["restrictions"] == {"groups": ["card-vault"], "users": []}
    assert json.loads((tmp_path / "PAY" / "103.json").read_text())["ancestors"][0]["readable"] is False
    assert side["space_readers"] == {"groups": ["sre", "card-vault", "contractors"], "users": []}
    assert TOKEN not in "".join(p.read_text() for p in (tmp_path / "PAY").iterdir())

    Api.hits.clear()
    PAGES["101"]["version"] = 2
    try:
        again = sync_space(client, "PAY", tmp_path, base_url=api)
    finally:
        PAGES["101"]["version"] = 1
    assert again.fetched == ["101"] and sorted(again.unchanged) == ["102", "103"]
    assert Api.hits["/rest/api/content/102"] == 0  # unchanged pages are not fetched in full


def test_mirrored_pages_get_fail_closed_labels(api: str, tmp_path: Path) -> None:
    sync_space(ConfluenceClient(api, token=TOKEN, backoff=0.01), "PAY", tmp_path, base_url=api)
    amap = AccessMap((AccessRule("PAY/**", ("sre", "card-vault")),))
    loaded = load_documents([tmp_path], access_map=amap)
    labels = {d.title: d.labels for d in loaded.documents}
    assert labels == {
        "Restart the ledger writer": ("card-vault", "sre"),
        "Unseal the card vault": ("card-vault",),
    }
    assert [(s.source, "cannot be read" in s.reason) for s in loaded.skipped] == [("PAY/103.xml", True)]


@pytest.mark.slow
def test_build_from_confluence_hides_a_page_restricted_through_its_parent(
    api: str, tmp_path: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_RAG_CONFLUENCE_TOKEN", TOKEN)
    amap = AccessMap((AccessRule("PAY/**", ("sre", "card-vault")),))
    report = RunbookIndex.build(
        [], path=tmp_path / "idx", access_map=amap, embedder=model, confluence_url=api, spaces=["PAY"]
    )
    assert report.documents == 2
    index = RunbookIndex(tmp_path / "idx", embedder=model)
    sre = Principal("s", frozenset({"sre"}))
    assert "PAY/102.xml" not in {
        h.source for h in index.search("unseal the standby vault", principal=sre, k=10)
    }
    vault = Principal("v", frozenset({"card-vault"}))
    assert index.search("unseal the standby vault", principal=vault)[0].source == "PAY/102.xml"
    Api.hits.clear()
    dry = RunbookIndex.build(
        [],
        path=tmp_path / "idx",
        access_map=amap,
        embedder=model,
        confluence_url=api,
        spaces=["PAY"],
        dry_run=True,
    )
    assert dry.dry_run and not sum(Api.hits.values())  # a dry run asks the API nothing and writes nothing


def test_errors_never_carry_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNBOOK_RAG_CONFLUENCE_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="RUNBOOK_RAG_CONFLUENCE_TOKEN"):
        ConfluenceClient("http://127.0.0.1:9")
    client = ConfluenceClient("http://127.0.0.1:9", token=TOKEN, retries=1, backoff=0.01, timeout=0.5)
    with pytest.raises(ConfluenceError) as err:
        list(client.pages("PAY"))
    assert TOKEN not in str(err.value) and "127.0.0.1:9" in str(err.value)


# -- what the API names never leaves the mirror ---------------------------------------------------

BAD_IDS = [
    "../../etc/x",
    "12/../../x",
    "123abc",
    "\u0661\u0662\u0663",
    "",
    "..",
    "/etc/passwd",
    "12\n",
    " 12",
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", "0"),
        ("884211", "884211"),
        ("9" * 20, "9" * 20),
        (884211, "884211"),
        ("9" * 21, None),
        ("\u0661\u0662\u0663", None),  # Arabic-Indic digits: str.isdigit() says yes
        ("\uff11\uff12", None),  # full-width digits
        ("\u00b2", None),  # superscript two
        ("12\n", None),
        ("12.0", None),
        ("-12", None),
        (-12, None),
        (True, None),
        (12.0, None),
        (None, None),
        (["12"], None),
    ],
)
def test_page_ids_are_ascii_digits_only(value: object, expected: str | None) -> None:
    assert valid_page_id(value) == expected


@pytest.fixture
def client(api: str) -> Iterator[ConfluenceClient]:
    Api.flaky = set()  # these tests are not about retries
    client = ConfluenceClient(api, token=TOKEN, backoff=0.01)
    try:
        yield client
    finally:
        client.close()


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def test_bad_page_ids_from_the_api_are_skipped_and_nothing_leaves_the_mirror(
    api: str, client: ConfluenceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in BAD_IDS:
        monkeypatch.setitem(PAGES, bad, {**PAGES["101"], "title": f"bad {bad!r}"})
    mirror = tmp_path / "deep" / "er" / "mirror"
    report = sync_space(client, "PAY", mirror, base_url=api)
    assert sorted(report.fetched) == ["101", "102", "103"]
    assert len(report.skipped) == len(BAD_IDS)
    assert all("the API gave a page id that is not ASCII digits" in s.reason for s in report.skipped)
    assert all(s.source.startswith("PAY/(page id ") for s in report.skipped)
    assert files_under(tmp_path) == {
        f"deep/er/mirror/PAY/{n}.{ext}" for n in (101, 102, 103) for ext in ("xml", "json")
    }
    # a bad id is never sent back to the API either (it would be a path on the server)
    pages_asked = {path for path in Api.hits if path.startswith("/rest/api/content/")}
    assert pages_asked == {
        *(f"/rest/api/content/{n}" for n in ("101", "102", "103")),
        *(f"/rest/api/content/{n}/restriction/byOperation/read" for n in ("101", "102", "103", "900", "901")),
    }
    loaded = load_documents([mirror], access_map=AccessMap((AccessRule("PAY/**", ("sre", "card-vault")),)))
    assert {d.source for d in loaded.documents} == {"PAY/101.xml", "PAY/102.xml"}


def test_a_page_that_cannot_be_mirrored_safely_is_skipped_and_its_old_copy_removed(
    api: str, client: ConfluenceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(PAGES, "104", {**PAGES["101"], "title": "Rotate keys", "version": 1})
    sync_space(client, "PAY", tmp_path, base_url=api)
    assert (tmp_path / "PAY" / "104.xml").is_file()
    # Upstream, the page moves under a parent whose id the mirror must not trust.
    monkeypatch.setitem(
        PAGES, "104", {**PAGES["104"], "version": 2, "ancestors": [{"id": "../900", "title": "X"}]}
    )
    Api.hits.clear()
    report = sync_space(client, "PAY", tmp_path, base_url=api)
    assert [(s.source, s.reason) for s in report.skipped] == [
        ("PAY/104.xml", "not mirrored: the API gave an ancestor id that is not ASCII digits ('../900')")
    ]
    assert report.removed == ["104"] and not (tmp_path / "PAY" / "104.xml").exists()
    assert not [path for path in Api.hits if "900" in path]  # the bad id never went into a URL


@pytest.mark.parametrize("space", ["../x", "PAY/../../x", "", ".", "P AY", "\u0661"])
def test_a_space_key_that_is_not_one_is_refused_before_anything_is_written(
    api: str, client: ConfluenceClient, tmp_path: Path, space: str
) -> None:
    with pytest.raises(ConfigError, match="is not a Confluence space key"):
        sync_space(client, space, tmp_path / "mirror", base_url=api)
    assert not any(tmp_path.iterdir())


def test_a_mirror_file_that_links_outside_is_not_written_through(
    api: str, client: ConfluenceClient, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    (tmp_path / "mirror" / "PAY").mkdir(parents=True)
    (tmp_path / "mirror" / "PAY" / "101.xml").symlink_to(outside)
    report = sync_space(client, "PAY", tmp_path / "mirror", base_url=api)
    assert [s.source for s in report.skipped] == ["PAY/101.xml"]
    assert "outside the mirror folder" in report.skipped[0].reason
    assert outside.read_text() == "untouched" and sorted(report.fetched) == ["102", "103"]


def test_a_restriction_entry_without_a_name_makes_the_restrictions_unreadable(
    api: str, client: ConfluenceClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dropping the nameless entry would leave an empty list: "no restriction" for everyone.
    monkeypatch.setitem(RESTRICTIONS, "900", {"group": {"results": [{"displayName": "card vault"}]}})
    sync_space(client, "PAY", tmp_path, base_url=api)
    side = json.loads((tmp_path / "PAY" / "102.json").read_text())
    assert side["ancestors"][0]["readable"] is False
    loaded = load_documents([tmp_path], access_map=AccessMap((AccessRule("PAY/**", ("sre", "card-vault")),)))
    assert "PAY/102.xml" not in {d.source for d in loaded.documents}


@pytest.mark.slow
def test_pages_skipped_by_the_mirror_are_in_the_build_report(
    api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .conftest import HashEmbedder

    Api.flaky = set()
    monkeypatch.setenv("RUNBOOK_RAG_CONFLUENCE_TOKEN", TOKEN)
    monkeypatch.setitem(PAGES, "12/../../x", {**PAGES["101"]})
    amap = AccessMap((AccessRule("PAY/**", ("sre", "card-vault")),))
    report = RunbookIndex.build(
        [],
        path=tmp_path / "idx",
        access_map=amap,
        embedder=HashEmbedder(),
        confluence_url=api,
        spaces=["PAY"],
    )
    assert report.documents == 2
    assert (
        "PAY/(page id '12/../../x')",
        "not mirrored: the API gave a page id that is not ASCII digits",
    ) in {(s.source, s.reason) for s in report.skipped}
