from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_rag.access import (
    AccessMap,
    LabelError,
    check_entitled,
    label_key,
    validate_labels,
    visible_label_keys,
    where_filter,
)
from runbook_rag.errors import AccessViolation, ConfigError
from runbook_rag.records import Principal


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["sre"], ("sre",)),
        (["sre", "dba", "sre"], ("dba", "sre")),
        (
            ["card-vault", "team.payments", "ldap:ops", "x@corp"],
            ("card-vault", "ldap:ops", "team.payments", "x@corp"),
        ),
    ],
)
def test_valid_labels_are_canonical(value: object, expected: tuple[str, ...]) -> None:
    assert validate_labels(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([], "empty"),
        ("sre", "got a string"),
        (None, "got nothing"),
        ({"sre": True}, "got dict"),
        (["sre", 3], "got int"),
        (["sre", None], "got nothing"),
        ([""], "invalid group name"),
        (["  "], "invalid group name"),
        (["a,b"], "invalid group name"),
        (["*"], "invalid group name"),
        ([["sre"]], "got list"),
        (True, "got bool"),
    ],
)
def test_malformed_labels_are_rejected_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(LabelError, match=reason):
        validate_labels(value)


def test_access_map_first_match_wins_and_globs_respect_folders(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(
        "- pattern: 'security/**'\n  groups: [security]\n"
        "- pattern: '*.md'\n  groups: [all-staff]\n"
        "- pattern: 'payments/*.md'\n  groups: [payments]\n"
    )
    amap = AccessMap.load(path)
    assert amap.labels_for("security/a/b.md") == ("security",)
    assert amap.labels_for("top.md") == ("all-staff",)
    assert amap.labels_for("payments/x.md") == ("payments",)  # '*' does not cross '/'
    assert amap.labels_for("payments/deep/x.md") is None
    assert amap.labels_for("security") is None


def test_access_map_json_and_rules_key(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"rules": [{"pattern": "**", "groups": ["sre"]}]}))
    assert AccessMap.load(path).labels_for("any/where.md") == ("sre",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- pattern: x\n", "expected the keys pattern and groups"),
        ("- pattern: x\n  groups: []\n", "rule 1: access is an empty list"),
        ("- pattern: x\n  groups: [ok]\n- {pattern: y, groups: ok}\n", "rule 2"),
        ("- pattern: x\n  groups: [ok]\n  extra: 1\n", "expected the keys pattern and groups"),
        ("pattern: x\n", "must be a list"),
        (": : :\n  - [", "not valid YAML"),
    ],
)
def test_bad_access_maps_are_config_errors_naming_the_file(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as err:
        AccessMap.load(path)
    assert str(path) in str(err.value)


KEYS = [label_key(x) for x in (["sre"], ["dba"], ["card-vault", "security"], ["payments-oncall", "sre"])]


@pytest.mark.parametrize(
    ("groups", "visible"),
    [
        ((), []),
        (("unknown",), []),
        (("sre",), ["payments-oncall,sre", "sre"]),
        (("security",), ["card-vault,security"]),
        (("dba", "security"), ["card-vault,security", "dba"]),
        (("all-staff",), []),
    ],
)
def test_where_filter_lists_exactly_the_visible_label_sets(
    groups: tuple[str, ...], visible: list[str]
) -> None:
    principal = Principal("u", frozenset(groups))
    assert visible_label_keys(principal, KEYS) == visible
    expected = {"acl_key": {"$in": visible}} if visible else None
    assert where_filter(principal, KEYS) == expected


def test_check_entitled_raises_on_mismatch() -> None:
    check_entitled(Principal("u", frozenset({"sre"})), chunk_id="c1", labels=("dba", "sre"))
    with pytest.raises(AccessViolation) as err:
        check_entitled(Principal("u", frozenset({"sre"})), chunk_id="c1", labels=("dba",))
    assert "c1" in str(err.value)
    with pytest.raises(AccessViolation):
        check_entitled(Principal("u"), chunk_id="c1", labels=("dba",))


def test_principal_normalises_and_rejects_bad_groups() -> None:
    assert Principal("u", frozenset({" sre ", ""})).groups == frozenset({"sre"})
    assert Principal("u", ["sre", "dba"]).groups == frozenset({"sre", "dba"})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Principal("u", "sre")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Principal("u", frozenset({1}))  # type: ignore[arg-type]
