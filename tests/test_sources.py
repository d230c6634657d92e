from __future__ import annotations

from pathlib import Path

import pytest

from runbook_rag.access import AccessMap, AccessRule
from runbook_rag.errors import ConfigError
from runbook_rag.sources import load_documents

GOOD = "---\ntitle: Good\naccess: [sre]\n---\n# Good\n\nRestart the pod.\n"


def write(root: Path, name: str, content: str | bytes) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "reason", "line"),
    [
        (b"\x00\x01binary\x00", "binary file", None),
        (
            "---\ntitle: x\naccess: [sre]\n---\n\nok\n\ncaf\xe9\n".encode("latin-1"),
            "not valid UTF-8",
            8,
        ),
        ("---\ntitle: [unclosed\naccess: [sre]\n---\nbody\n", "not valid YAML", 3),
        ("---\ntitle: x\nacess: [all-staff]\n---\nbody\n", "'acess' looks like a misspelt 'access'", 3),
        ("---\ntitle: x\naccess: [sre]\nACL: [all-staff]\n---\nbody\n", "'ACL' looks like a misspelt", 4),
        ("---\ntitle: x\nAccess: [sre]\n---\nbody\n", "'Access' looks like a misspelt", 3),
        ("---\ntitle: x\ngroups: [sre]\n---\nbody\n", "'groups' looks like a misspelt", 3),
        ("---\n- a\n- b\n---\nbody\n", "must be a mapping", 2),
        ("---\ntitle: x\naccess: []\n---\nbody\n", "empty list", 3),
        ("---\ntitle: x\naccess: sre\n---\nbody\n", "got a string", 3),
        ("---\ntitle: x\naccess: [sre, 7]\n---\nbody\n", "got int", 3),
        ("---\ntitle: x\naccess:\n---\nbody\n", "got nothing", 3),
        ("---\ntitle: x\nowner: [a, b]\naccess: [sre]\n---\nbody\n", "front-matter key 'owner'", 3),
        ("---\ntitle: x\naccess: [sre]\nbody never closes\n", "never closed", 1),
        ("# No front matter\n\nbody\n", "no access labels", None),
        ("---\ntitle: x\n---\nbody\n", "no access labels", None),
    ],
)
def test_bad_file_is_skipped_with_reason_and_line_and_the_rest_is_kept(
    tmp_path: Path, content: str | bytes, reason: str, line: int | None
) -> None:
    write(tmp_path, "a-good.md", GOOD)
    write(tmp_path, "bad/b.md", content)
    write(tmp_path, "c-good.md", GOOD.replace("Good", "Also good"))
    loaded = load_documents([tmp_path])
    docs, skipped = loaded.documents, loaded.skipped
    assert [d.source for d in docs] == ["a-good.md", "c-good.md"]
    assert len(skipped) == 1
    assert skipped[0].source == "bad/b.md"
    assert reason in skipped[0].reason
    assert skipped[0].line == line


def test_unknown_keys_are_reported_and_the_document_indexed(tmp_path: Path) -> None:
    write(tmp_path, "hugo.md", "---\ntitle: H\nweight: 20\naccess: [sre]\naliases: [/x]\n---\nbody\n")
    loaded = load_documents([tmp_path])
    assert [d.source for d in loaded.documents] == ["hugo.md"]
    assert not loaded.skipped
    assert [(w.source, w.line) for w in loaded.warnings] == [("hugo.md", 3), ("hugo.md", 5)]
    assert "unknown front-matter key 'weight' ignored" in loaded.warnings[0].message


def test_front_matter_labels_win_over_the_access_map(tmp_path: Path) -> None:
    write(tmp_path, "a.md", GOOD)
    write(tmp_path, "b.md", "---\ntitle: B\n---\nbody\n")
    amap = AccessMap((AccessRule("*.md", ("all-staff",)),))
    loaded = load_documents([tmp_path], access_map=amap)
    docs, skipped = loaded.documents, loaded.skipped
    assert {d.source: d.labels for d in docs} == {"a.md": ("sre",), "b.md": ("all-staff",)}
    assert not skipped


def test_title_falls_back_to_first_h1_then_file_name(tmp_path: Path) -> None:
    write(tmp_path, "x/with-h1.md", "---\naccess: [sre]\n---\n# The H1\n\nbody\n")
    write(tmp_path, "x/no-h1.md", "---\naccess: [sre]\n---\nbody only\n")
    docs = load_documents([tmp_path]).documents
    assert {d.source: d.title for d in docs} == {"x/no-h1.md": "no-h1", "x/with-h1.md": "The H1"}


def test_sources_are_relative_posix_paths_and_duplicates_across_folders_are_reported(
    tmp_path: Path,
) -> None:
    write(tmp_path / "one", "deep/er/a.md", GOOD)
    write(tmp_path / "two", "deep/er/a.md", GOOD)
    write(tmp_path / "one", ".hidden/h.md", GOOD)
    write(tmp_path / "one", "notes.txt", "not markdown")
    loaded = load_documents([tmp_path / "one", tmp_path / "two"])
    docs, skipped = loaded.documents, loaded.skipped
    assert [d.source for d in docs] == ["deep/er/a.md"]
    assert [s.source for s in skipped] == ["deep/er/a.md"]
    assert "duplicate" in skipped[0].reason


def test_missing_source_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_documents([tmp_path / "nope"])


def test_unreadable_file_is_skipped(tmp_path: Path) -> None:
    write(tmp_path, "a.md", GOOD)
    (tmp_path / "broken.md").symlink_to(tmp_path / "missing-target.md")
    loaded = load_documents([tmp_path])
    docs, skipped = loaded.documents, loaded.skipped
    assert [d.source for d in docs] == ["a.md"]
    assert [s.source for s in skipped] == ["broken.md"]
    assert "cannot read file" in skipped[0].reason


@pytest.mark.parametrize(
    ("content", "reason", "line"),
    [
        (
            "---\ntitle: x\naccess: [sre]\na: &a [x, x, x, x]\n"
            "b: &b [*a, *a, *a, *a]\nc: [*b, *b, *b]\n---\nbody\n",
            "anchors and aliases are not allowed",
            4,
        ),
        ("---\ntitle: x\naccess: [sre]\ndeep: " + "[" * 40 + "]" * 40 + "\n---\nbody\n", "nests deeper", 4),
        ("---\ntitle: x\naccess: [sre]\nnote: '" + "y" * 70000 + "'\n---\nbody\n", "larger than 64 KiB", 2),
        ("", "empty file", None),
        ("   \n\n  \n", "empty file", None),
        ("---\n42\n---\nbody\n", "must be a mapping", 2),
    ],
)
def test_hostile_files_are_skipped_with_a_reason(
    tmp_path: Path, content: str, reason: str, line: int | None
) -> None:
    write(tmp_path, "a-good.md", GOOD)
    write(tmp_path, "hostile.md", content)
    loaded = load_documents([tmp_path])
    assert [d.source for d in loaded.documents] == ["a-good.md"]
    assert [(s.source, s.line) for s in loaded.skipped] == [("hostile.md", line)]
    assert reason in loaded.skipped[0].reason


def test_size_cap_is_configurable_and_checked_before_reading(tmp_path: Path) -> None:
    write(tmp_path, "small.md", GOOD)
    write(tmp_path, "big.md", GOOD + "x" * 5000)
    loaded = load_documents([tmp_path], max_bytes=2048)
    assert [d.source for d in loaded.documents] == ["small.md"]
    assert "larger than the 2,048-byte limit" in loaded.skipped[0].reason


def test_report_text_never_carries_a_card_number(tmp_path: Path) -> None:
    write(tmp_path, "4111111111111111.md", "---\ntitle: x\n---\nno labels\n")
    loaded = load_documents([tmp_path])
    assert loaded.skipped[0].source == "[PAN ****1111].md"


def test_allow_instructions_from_front_matter_or_access_map(tmp_path: Path) -> None:
    write(tmp_path, "training/a.md", "---\ntitle: A\naccess: [sre]\nallow_instructions: true\n---\nx\n")
    write(tmp_path, "training/b.md", "---\ntitle: B\naccess: [sre]\n---\nx\n")
    write(tmp_path, "other/c.md", "---\ntitle: C\naccess: [sre]\n---\nx\n")
    amap = AccessMap((AccessRule("training/b.md", ("sre",), allow_instructions=True),))
    docs = {d.source: d.allow_instructions for d in load_documents([tmp_path], access_map=amap).documents}
    assert docs == {"other/c.md": False, "training/a.md": True, "training/b.md": True}
