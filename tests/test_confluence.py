from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from runbook_rag import Principal, RunbookIndex
from runbook_rag.access import AccessMap, AccessRule
from runbook_rag.chunking import chunk_document
from runbook_rag.errors import AccessLabelError, ConfigError, SidecarError, SourceError
from runbook_rag.sources import load_documents
from runbook_rag.sources.confluence import parse_confluence, render_storage, resolve_includes
from runbook_rag.sources.sidecar import parse_sidecar

from .conftest import CORPUS

STORAGE = CORPUS / "confluence-storage"
ALL = AccessMap((AccessRule("**", ("payments-oncall", "sre", "security")),))


def render(xml: str) -> str:
    return render_storage(xml, source="page.xml").markdown


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<h2>Diagnosis</h2><p>Check <strong>lag</strong>.</p>", "## Diagnosis\n\nCheck **lag**."),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<ol><li>first</li><li>second</li></ol>", "1. first\n2. second"),
        (
            "<table><tr><th>Code</th><th>Meaning</th></tr><tr><td>05</td><td>Do not honour</td></tr></table>",
            "| Code | Meaning |\n|---|---|\n| 05 | Do not honour |",
        ),
        (
            '<ac:structured-macro ac:name="code"><ac:parameter ac:name="language">sql</ac:parameter>'
            "<ac:plain-text-body><![CDATA[SELECT 1;\n-- # not a heading\nSELECT 2;]]></ac:plain-text-body>"
            "</ac:structured-macro>",
            "```sql\nSELECT 1;\n-- # not a heading\nSELECT 2;\n```",
        ),
        (
            '<ac:structured-macro ac:name="noformat"><ac:plain-text-body><![CDATA[raw <text>]]>'
            "</ac:plain-text-body></ac:structured-macro>",
            "```\nraw <text>\n```",
        ),
        (
            '<ac:structured-macro ac:name="warning"><ac:rich-text-body><p>Do not revoke.</p>'
            "</ac:rich-text-body></ac:structured-macro>",
            "> **Warning:** Do not revoke.",
        ),
        (
            '<ac:structured-macro ac:name="expand"><ac:parameter ac:name="title">Details</ac:parameter>'
            "<ac:rich-text-body><p>Hidden steps.</p></ac:rich-text-body></ac:structured-macro>",
            "**Details**\n\nHidden steps.",
        ),
        (
            '<p>State: <ac:structured-macro ac:name="status"><ac:parameter ac:name="title">in progress'
            "</ac:parameter></ac:structured-macro></p>",
            "State: [IN PROGRESS]",
        ),
        (
            "<ac:task-list><ac:task><ac:task-status>complete</ac:task-status><ac:task-body>Rotate</ac:task-body>"
            "</ac:task></ac:task-list>",
            "- [x] Rotate",
        ),
        ('<p>See <ac:link><ri:page ri:content-title="HSM down" /></ac:link>.</p>', "See HSM down."),
        (
            '<p><ac:link><ri:attachment ri:filename="runbook.pdf" /></ac:link></p>',
            "runbook.pdf",
        ),
        ('<ac:image ac:alt="topology"><ri:attachment ri:filename="t.png" /></ac:image>', "[image: topology]"),
        ('<ac:image><ri:attachment ri:filename="t.png" /></ac:image>', "[image: t.png]"),
        ("<p>a&nbsp;b &amp; c</p>", "a\u00a0b & c"),
    ],
)
def test_storage_elements_render_to_markdown(xml: str, expected: str) -> None:
    assert render(xml).strip() == expected


def test_nested_macros_keep_their_code_whole() -> None:
    xml = (
        '<ac:structured-macro ac:name="panel"><ac:rich-text-body>'
        '<ac:structured-macro ac:name="expand"><ac:rich-text-body>'
        '<ac:structured-macro ac:name="code"><ac:parameter ac:name="language">bash</ac:parameter>'
        "<ac:plain-text-body><![CDATA[kubectl -n payments get pods\n# then\nkubectl logs x]]>"
        "</ac:plain-text-body>"
        "</ac:structured-macro></ac:rich-text-body></ac:structured-macro></ac:rich-text-body></ac:structured-macro>"
    )
    assert "kubectl -n payments get pods\n> # then\n> kubectl logs x" in render(xml)


def test_unknown_macro_keeps_text_and_is_reported_once_and_include_is_dropped() -> None:
    xml = (
        '<ac:structured-macro ac:name="fancy"><ac:rich-text-body><p>kept one</p></ac:rich-text-body>'
        '</ac:structured-macro><ac:structured-macro ac:name="fancy"><ac:rich-text-body><p>kept two</p>'
        '</ac:rich-text-body></ac:structured-macro><ac:structured-macro ac:name="include"><ac:parameter '
        'ac:name=""><ac:link><ri:page ri:content-title="Shared steps" /></ac:link></ac:parameter>'
        "</ac:structured-macro>"
    )
    out = render_storage(xml, source="p.xml")
    assert "kept one" in out.markdown and "kept two" in out.markdown
    assert out.notes == ["unknown macro 'fancy': its text is kept"]
    # the include waits for the rest of the ingestion; alone it is dropped and reported
    doc = parse_confluence(xml, source="p.xml", access_map=ALL)
    docs, warnings, skipped = resolve_includes([doc], {})
    assert "Shared steps" not in docs[0].text and not skipped
    assert [w.message for w in warnings] == ["include of page 'Shared steps' dropped (not in this ingestion)"]


@pytest.mark.parametrize(
    "xml",
    [
        '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><p>&lol2;</p>',
        '<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><p>&xxe;</p>',
        '<!DOCTYPE x [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/x">]><p>&xxe;</p>',
        '<p><!ENTITY e "x"></p>',
        "<p>unclosed",
        "<p>bad &undefinedentity; here</p>",
    ],
)
def test_malicious_or_broken_xml_is_a_clear_error(xml: str) -> None:
    with pytest.raises(SourceError) as err:
        render_storage(xml, source="evil.xml")
    assert err.value.source == "evil.xml"


def test_restrictions_of_the_page_and_every_ancestor_narrow_the_labels() -> None:
    sidecar = {
        "title": "T",
        "url": "https://wiki/x",
        "restrictions": {"groups": ["sre", "security", "payments-oncall"]},
        "ancestors": [
            {"title": "Parent", "restrictions": {"groups": ["security", "dba"]}},
            {"title": "Root"},
        ],
    }
    doc = parse_confluence("<p>x</p>", source="p.xml", access_map=ALL, sidecar=sidecar)
    assert doc.labels == ("security",) and doc.title == "T" and doc.metadata["url"] == "https://wiki/x"


@pytest.mark.parametrize(
    ("sidecar", "reason"),
    [
        ({"ancestors": [{"title": "Parent", "readable": False}]}, "ancestor 1 cannot be read"),
        ({"ancestors": [{"restrictions": {"groups": ["dba"]}}]}, "no group may read it"),
        ({"restrictions": {"users": ["u42"]}}, "no group may read it"),
        ({"restrictions": "sre"}, "must be an object"),
        ({"restrictions": {"groups": ["a,b"]}}, "invalid group name"),
        ({"space_readers": {"groups": [], "users": []}}, "no group may read it"),
        ({"space_readers": {"groups": ["dba"]}}, "no group may read it"),
    ],
)
def test_unreadable_or_empty_restrictions_fail_closed(sidecar: dict, reason: str) -> None:
    with pytest.raises(AccessLabelError, match=reason):
        parse_confluence("<p>x</p>", source="p.xml", access_map=ALL, sidecar=sidecar)


def test_without_sidecar_or_rule_the_page_is_not_indexed(tmp_path: Path) -> None:
    (tmp_path / "page.xml").write_text("<h1>Page</h1><p>text</p>")
    (tmp_path / "bad.xml").write_text("<p>x</p>")
    (tmp_path / "bad.json").write_text("[1, 2]")
    loaded = load_documents([tmp_path])
    assert not loaded.documents
    reasons = {s.source: s.reason for s in loaded.skipped}
    assert "no access map given" in reasons["page.xml"] and "must be a JSON object" in reasons["bad.xml"]
    loaded = load_documents([tmp_path], access_map=ALL)
    assert [(d.source, d.title) for d in loaded.documents] == [("page.xml", "Page")]


@pytest.mark.slow
@pytest.mark.skipif(not STORAGE.is_dir(), reason="the shared corpus is not here")
def test_real_storage_files_parse_and_every_code_macro_stays_whole_in_one_chunk(model) -> None:
    files = sorted(p for p in STORAGE.rglob("*") if p.suffix in (".xml", ".html"))
    assert len(files) >= 20
    seen = 0
    for path in files:
        text = path.read_text()
        doc = parse_confluence(text, source=path.name, access_map=ALL)
        chunks = chunk_document(doc, count_tokens=model.count_tokens, max_tokens=model.max_tokens)
        bodies = re.findall(
            r'ac:name="code".*?<ac:plain-text-body><!\[CDATA\[(.*?)\]\]></ac:plain-text-body>', text, re.S
        )
        position = 0
        joined = "\n".join(c.text for c in chunks)
        for body in bodies:
            body = body.strip("\n")
            holders = [c for c in chunks if body in c.text or body.replace("\n", "\n> ") in c.text]
            assert holders, f"{path.name}: a code macro is not whole in any chunk"
            found = joined.find(body.split("\n")[0], position)
            assert found >= position, f"{path.name}: code macros out of order"
            position = found
            seen += 1
    assert seen >= 20


@pytest.mark.slow
def test_page_restricted_only_through_its_parent_is_invisible_outside_it(tmp_path: Path, model) -> None:
    src = tmp_path / "space"
    src.mkdir()
    (src / "failover.xml").write_text("<h1>Vault failover</h1><p>Unseal the standby vault cluster first.</p>")
    (src / "failover.json").write_text(
        json.dumps(
            {
                "title": "Vault failover",
                "ancestors": [{"title": "Card vault", "restrictions": {"groups": ["card-vault"]}}],
            }
        )
    )
    amap = AccessMap((AccessRule("**", ("sre", "card-vault")),))
    RunbookIndex.build([src], path=tmp_path / "idx", access_map=amap, embedder=model)
    index = RunbookIndex(tmp_path / "idx", embedder=model)
    assert index.search("unseal the standby vault", principal=Principal("s", frozenset({"sre"}))) == []
    hits = index.search("unseal the standby vault", principal=Principal("v", frozenset({"card-vault"})))
    assert hits[0].source == "failover.xml" and hits[0].labels == ("card-vault",)


@pytest.mark.slow
def test_citations_of_a_page_name_its_title_url_and_heading(sample_index: RunbookIndex) -> None:
    oncall = Principal("o", frozenset({"payments-oncall"}))
    answer = sample_index.answer("rotate the acquirer client certificate before it expires", principal=oncall)
    cited = [c for c in answer.citations if c.source == "confluence/acquirer-certificate-rotation.xml"]
    assert cited, answer.citations
    assert cited[0].title == "Acquirer mTLS certificate rotation"
    assert cited[0].url == "https://paylane.atlassian.net/wiki/spaces/PAYOPS/pages/884211"
    assert cited[0].heading.startswith("Acquirer mTLS certificate rotation")
    assert cited[0].to_dict()["url"] == cited[0].url


def test_includes_inline_pages_of_the_same_ingestion_and_intersect_labels(tmp_path: Path) -> None:
    (tmp_path / "shared.xml").write_text(
        '<h1>Shared steps</h1><p>Drain traffic first.</p><ac:structured-macro ac:name="excerpt">'
        "<ac:rich-text-body><p>Excerpt: page the DBA.</p></ac:rich-text-body></ac:structured-macro>"
    )
    (tmp_path / "shared.json").write_text(
        json.dumps({"title": "Shared steps", "restrictions": {"groups": ["sre"]}})
    )
    (tmp_path / "host.xml").write_text(
        '<h1>Host</h1><ac:structured-macro ac:name="include"><ac:parameter ac:name="">'
        '<ac:link><ri:page ri:content-title="Shared steps" /></ac:link></ac:parameter></ac:structured-macro>'
        '<ac:structured-macro ac:name="excerpt-include"><ac:parameter ac:name="">'
        '<ac:link><ri:page ri:content-title="Shared steps" /></ac:link></ac:parameter></ac:structured-macro>'
        '<ac:structured-macro ac:name="include"><ac:parameter ac:name="">'
        '<ac:link><ri:page ri:content-title="Elsewhere" /></ac:link></ac:parameter></ac:structured-macro>'
    )
    loaded = load_documents([tmp_path], access_map=ALL)
    host = next(d for d in loaded.documents if d.source == "host.xml")
    assert "Drain traffic first." in host.text and host.text.count("Excerpt: page the DBA.") == 2
    assert host.labels == ("sre",)  # the host is narrowed to what may read the included page
    assert "runbook-rag:" not in host.text
    assert [w.message for w in loaded.warnings] == [
        "include of page 'Elsewhere' dropped (not in this ingestion)"
    ]


def test_confluence_groups_map_to_labels_through_the_access_map(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(
        "- confluence_group: payments-ops-team\n  groups: [payments-oncall, sre]\n"
        "- pattern: 'PAY/**'\n  groups: [payments-oncall, sre, security]\n"
    )
    amap = AccessMap.load(path)
    assert amap.map_group("payments-ops-team") == ("payments-oncall", "sre")
    assert amap.map_group("unmapped") == ("unmapped",)
    sidecar = {"ancestors": [{"restrictions": {"groups": ["payments-ops-team"]}}]}
    doc = parse_confluence("<p>x</p>", source="PAY/1.xml", access_map=amap, sidecar=sidecar)
    assert doc.labels == ("payments-oncall", "sre")
    path.write_text("- confluence_group: x\n  groups: []\n")
    with pytest.raises(ConfigError, match="rule 1"):
        AccessMap.load(path)


def test_includes_resolve_within_the_named_or_own_space(tmp_path: Path) -> None:
    for name, space, body in (
        ("a", "PAY", "<h1>Steps</h1><p>pay steps</p>"),
        ("b", "OPS", "<h1>Steps</h1><p>ops steps</p>"),
        (
            "host",
            "PAY",
            '<h1>Host</h1><ac:structured-macro ac:name="include"><ac:parameter ac:name="">'
            '<ac:link><ri:page ri:content-title="Steps" /></ac:link></ac:parameter></ac:structured-macro>'
            '<ac:structured-macro ac:name="include"><ac:parameter ac:name="">'
            '<ac:link><ri:page ri:space-key="OPS" ri:content-title="Steps" /></ac:link></ac:parameter>'
            "</ac:structured-macro>",
        ),
    ):
        (tmp_path / f"{name}.xml").write_text(body)
        (tmp_path / f"{name}.json").write_text(json.dumps({"space": space}))
    host = next(d for d in load_documents([tmp_path], access_map=ALL).documents if d.source == "host.xml")
    assert host.text.index("pay steps") < host.text.index("ops steps")


# -- sidecars are parsed by a strict schema ------------------------------------------------------

GOOD_SIDECAR = '{"title": "Good", "restrictions": {"groups": ["sre"], "users": []}}'
REST_SHAPE = '{"restrictions": {"read": {"restrictions": {"group": {"results": [{"name": "security"}]}}}}}'


@pytest.mark.parametrize(
    ("sidecar", "field", "reason", "line"),
    [
        ('{"readable": "false"}', "readable", "must be true or false", 1),
        ('{"readable": null}', "readable", "must be true or false", 1),
        ('{"restrictions": {"groups": "security"}}', "restrictions.groups", "must be a list", 1),
        ('{"restrictions": {"groups": ["security", 7]}}', "restrictions.groups[1]", "must be a string", 1),
        ('{"restrictions": "security"}', "restrictions", "must be an object", 1),
        ('{"restrictions": {"Groups": ["security"]}}', "restrictions.Groups", "(did you mean 'groups'?)", 1),
        (
            '{"restrictions": {"group": ["security"]}}',
            "restrictions.group",
            "REST API's restriction shape",
            1,
        ),
        ('{"Restrictions": {"groups": ["security"]}}', "Restrictions", "(did you mean 'restrictions'?)", 1),
        ('{"Groups": ["security"]}', "Groups", "is not a known key", 1),
        ('{"access": ["security"]}', "access", "is not a known key", 1),
        (REST_SHAPE, "restrictions.read", "REST API's restriction shape", 1),
        ('{"ancestors": {"title": "Parent"}}', "ancestors", "must be a list", 1),
        (
            '{"ancestors": [{"title": "P", "readable": 0}]}',
            "ancestors[0].readable",
            "must be true or false",
            1,
        ),
        (
            '{"ancestors": [{"title": "P", "restriction": {"groups": ["security"]}}]}',
            "ancestors[0].restriction",
            "(did you mean 'restrictions'?)",
            1,
        ),
        ('{"ancestors": ["Parent"]}', "ancestors[0]", "must be an object", 1),
        ('{"space_readers": {"groups": ["sre"], "user": []}}', "space_readers.user", "(did you mean", 1),
        ('{"version": "12"}', "version", "must be an integer", 1),
        ('{"version": true}', "version", "must be an integer", 1),
        ('{"title": ["T"]}', "title", "must be a string", 1),
        ('{"url": "javascript:alert(1)"}', "url", "must be an http(s) URL", 1),
        (
            '{\n  "restrictions": {"groups": ["security"]},\n  "restrictions": {"groups": []}\n}',
            "restrictions",
            "is given twice",
            None,
        ),
        ('{"restrictions": {"groups": ["security"], "groups": []}}', "groups", "is given twice", None),
        ('{"title": "T"}\n{"restrictions": null}', None, "not valid JSON: Extra data", 2),
        ('{"version": NaN}', None, "not valid JSON", None),
        ("[1, 2]", None, "must be a JSON object", None),
        ('"readable"', None, "must be a JSON object", None),
    ],
)
def test_a_malformed_sidecar_keeps_its_page_out_with_the_field_named(
    tmp_path: Path, sidecar: str, field: str | None, reason: str, line: int | None
) -> None:
    (tmp_path / "good.xml").write_text("<h1>Good</h1><p>restart the pod</p>")
    (tmp_path / "good.json").write_text(GOOD_SIDECAR)
    (tmp_path / "space").mkdir()
    (tmp_path / "space" / "page.xml").write_text("<h1>Page</h1><p>unseal the vault</p>")
    (tmp_path / "space" / "page.json").write_text(sidecar)
    loaded = load_documents([tmp_path], access_map=ALL)
    assert [(d.source, d.labels) for d in loaded.documents] == [("good.xml", ("sre",))]
    [skipped] = loaded.skipped
    assert skipped.source == "space/page.xml" and skipped.line == line
    assert skipped.reason.startswith("sidecar space/page.json")
    assert reason in skipped.reason
    if field is not None:
        assert f"{field!r}" in skipped.reason
    if field is not None and "twice" not in reason:  # decoded, a key given twice is gone
        with pytest.raises(SidecarError) as err:
            parse_confluence("<p>x</p>", source="p.xml", access_map=ALL, sidecar=json.loads(sidecar))
        assert err.value.field == field and isinstance(err.value, AccessLabelError)


@pytest.mark.parametrize(
    ("sidecar", "labels"),
    [
        ("{}", ("payments-oncall", "security", "sre")),
        ('{"restrictions": null, "ancestors": []}', ("payments-oncall", "security", "sre")),
        ('{"restrictions": {"groups": [], "users": []}}', ("payments-oncall", "security", "sre")),
        ('{"restrictions": {"groups": ["security", "sre"]}}', ("security", "sre")),
        ('{"restrictions": {"users": ["u1"], "groups": ["sre"]}}', ("sre",)),
        (
            '{"ancestors": [{"id": "1", "title": "P", "readable": true, '
            '"restrictions": {"groups": ["sre"]}}]}',
            ("sre",),
        ),
        ('{"id": "884211", "space": "PAY", "version": 12, "url": "https://wiki/x", "readable": true}', None),
        ('{"space_readers": {"groups": ["security"], "users": []}}', ("security",)),
    ],
)
def test_a_valid_sidecar_is_still_indexed(
    tmp_path: Path, sidecar: str, labels: tuple[str, ...] | None
) -> None:
    (tmp_path / "page.xml").write_text("<h1>Page</h1><p>unseal the vault</p>")
    (tmp_path / "page.json").write_text(sidecar)
    loaded = load_documents([tmp_path], access_map=ALL)
    assert not loaded.skipped
    [doc] = loaded.documents
    assert doc.labels == (labels or ("payments-oncall", "security", "sre"))


def test_the_sample_sidecar_passes_the_schema() -> None:
    from .conftest import SAMPLES

    side = SAMPLES / "confluence" / "acquirer-certificate-rotation.json"
    parse_sidecar(side.read_text(), source="page.xml", sidecar=side.name)


def test_a_sidecar_that_is_not_a_plain_file_keeps_its_page_out(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "open.json").write_text("{}")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("linked", "fifo", "folder", "cased", "good"):
        (src / f"{name}.xml").write_text(f"<h1>{name}</h1><p>text</p>")
    (src / "linked.json").symlink_to(outside / "open.json")
    os.mkfifo(src / "fifo.json")
    (src / "folder.json").mkdir()
    (src / "cased.JSON").write_text('{"restrictions": {"groups": ["security"]}}')
    (src / "good.json").write_text("{}")
    (src / "page-link.xml").symlink_to("good.xml")
    loaded = load_documents([src], access_map=ALL)
    assert [d.source for d in loaded.documents] == ["good.xml"]
    assert {s.source: s.reason for s in loaded.skipped} == {
        "linked.xml": "sidecar linked.json is a symbolic link: not followed",
        "fifo.xml": "sidecar fifo.json: not a regular file (a FIFO): skipped unread",
        "folder.xml": "sidecar folder.json: not a regular file (a folder): skipped unread",
        "cased.xml": (
            "sidecar must be named cased.json, found cased.JSON: the page's restrictions are unknown"
        ),
        "page-link.xml": "a Confluence page must not be a symbolic link (to good.xml): not followed",
    }
