"""The HMAC-chained audit trail: tamper evidence, the sealed head against a cut tail, concurrent
appends, redaction, and every query audited."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
from pathlib import Path

import pytest

from runbook_rag import Principal, RunbookIndex, Settings
from runbook_rag.audit import (
    AuditError,
    AuditLog,
    AuditSetup,
    Verdict,
    default_head,
    load_key,
    resolve_audit,
    verify,
)
from runbook_rag.errors import ConfigError, QueryError
from runbook_rag.evaluation import load_queries
from runbook_rag.redaction import redact

from .conftest import HashEmbedder
from .test_cli import run
from .test_redaction_e2e import PLANTED
from .waiting import WAIT

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def head_of(log: Path) -> Path:
    """Tests keep each log's head in a folder of its own, apart from the log."""
    return log.parent / "heads" / f"{log.name}.head"


def write_log(path: Path, n: int = 5, *, key: bytes = KEY, head: Path | None = None) -> list[bytes]:
    log = AuditLog(path, key=key, head=head or head_of(path))
    for i in range(n):
        log.append(action="search", query=f"query {i}", outcome="ok")
    return path.read_bytes().splitlines(keepends=True)


def append(path: Path, *, key: bytes = KEY, head: Path | None = None) -> dict[str, object]:
    return AuditLog(path, key=key, head=head or head_of(path)).append(
        action="search", query="q", outcome="ok"
    )


def check(path: Path, *, key: bytes = KEY) -> Verdict:
    return verify(path, key=key, head=head_of(path))


def check_with(setup: AuditSetup) -> Verdict:
    verdict = verify(setup.log, key=setup.load_key(), head=setup.head)
    assert verdict.ok and verdict.head_checked
    return verdict


def test_an_intact_log_verifies_against_its_head(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    lines = write_log(path)
    verdict = check(path)
    assert verdict.ok and verdict.records == 5 and verdict.reason is None
    assert (verdict.head, verdict.head_checked, verdict.head_records) == (str(head_of(path)), True, 5)
    head = json.loads(head_of(path).read_text())
    assert set(head) == {"kind", "records", "last_mac", "mac"} and head["kind"] == "runbook-rag.audit-head"
    assert head["records"] == 5 and head["last_mac"] == json.loads(lines[-1])["mac"]
    assert stat.S_IMODE(head_of(path).stat().st_mode) == 0o600
    assert list(head_of(path).parent.iterdir()) == [head_of(path)]  # no temporary file left behind


@pytest.mark.parametrize(
    ("tamper", "bad_line", "reason"),
    [
        ("edit", 3, "altered"),
        ("delete", 3, "chain is broken"),
        ("insert", 3, "chain is broken"),
        ("reorder", 2, "chain is broken"),
        ("garbage", 4, "not an audit record"),
    ],
)
def test_every_kind_of_tampering_names_the_first_bad_line(
    tmp_path: Path, tamper: str, bad_line: int, reason: str
) -> None:
    path = tmp_path / "a.log"
    lines = write_log(path)
    if tamper == "edit":
        lines[2] = lines[2].replace(b"query 2", b"query X")
    elif tamper == "delete":
        del lines[2]
    elif tamper == "insert":
        lines.insert(2, lines[1])
    elif tamper == "reorder":
        lines[1], lines[2] = lines[2], lines[1]
    else:
        lines.insert(3, b"hello\n")
    path.write_bytes(b"".join(lines))
    verdict = check(path)
    assert (verdict.bad_line, verdict.ok) == (bad_line, False)
    assert reason in str(verdict.reason)


def test_a_duplicated_key_is_not_canonical_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    lines = write_log(path, 2)
    # Parses to the same record (the last duplicate wins) but shows a forged value first.
    lines[0] = lines[0].replace(b'{"action"', b'{"query":"benign","action"', 1)
    assert lines[0].startswith(b'{"query":"benign"') and b'"query":"query 0"' in lines[0]
    path.write_bytes(b"".join(lines))
    verdict = check(path)
    assert not verdict.ok and verdict.bad_line == 1 and "canonical" in str(verdict.reason)


def test_another_key_fails_at_the_first_line(tmp_path: Path) -> None:
    write_log(tmp_path / "a.log")
    verdict = check(tmp_path / "a.log", key=b"x" * 32)
    assert verdict.bad_line == 1 and "altered" in str(verdict.reason)


# --- the sealed head: a cut tail, an emptied, deleted or older log --------------------------------


def refused(path: Path, match: str) -> None:
    """An append to ``path`` fails, and neither the log nor its head changes."""
    before = (path.read_bytes() if path.exists() else None, head_of(path).read_bytes())
    with pytest.raises(AuditError, match=match):
        append(path)
    assert (path.read_bytes() if path.exists() else None, head_of(path).read_bytes()) == before


@pytest.mark.parametrize(
    ("cut", "says"), [(1, "its last record was cut"), (3, "its last 3 records were cut")]
)
def test_a_cut_tail_fails_and_appends_are_refused(tmp_path: Path, cut: int, says: str) -> None:
    path = tmp_path / "a.log"
    lines = write_log(path)
    path.write_bytes(b"".join(lines[:-cut]))
    assert verify(path, key=KEY).ok  # the chain alone cannot tell
    verdict = check(path)
    assert not verdict.ok and verdict.bad_line is None and verdict.head_checked
    assert (verdict.records, verdict.head_records) == (5 - cut, 5)
    assert says in str(verdict.reason) and f"ends after record {5 - cut}" in str(verdict.reason)
    refused(path, "does not hold the record its head .* seals")
    path.write_bytes(b"".join(lines))  # the whole log back: it verifies, and appends resume
    assert check(path).ok
    append(path)
    assert check(path).head_records == 6


def test_an_emptied_log_fails_and_appends_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path)
    path.write_bytes(b"")
    verdict = check(path)
    assert not verdict.ok and verdict.records == 0
    assert "the log is empty, but its head seals 5 records" in str(verdict.reason)
    refused(path, "the log is empty, but its head .* seals 5 records")


def test_a_deleted_log_fails_when_its_head_remains(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path)
    path.unlink()
    verdict = check(path)
    assert not verdict.ok and verdict.head_checked and verdict.head_records == 5
    assert "the log is missing, but its head seals 5 records" in str(verdict.reason)
    with pytest.raises(AuditError, match="the log is empty, but its head"):
        append(path)
    head_of(path).unlink()
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read the audit log"):
        check(path)  # no log and no head: nothing to check


def test_a_rolled_back_or_replaced_log_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path, 3)
    older = path.read_bytes()
    write_log(path, 2)
    path.write_bytes(older)  # an older copy restored while the head is current
    verdict = check(path)
    assert not verdict.ok and (verdict.records, verdict.head_records) == (3, 5)
    assert "an older copy of the log was restored" in str(verdict.reason)
    refused(path, "restored from an older copy")
    # Another log of the same length and key, put in its place.
    other = tmp_path / "other.log"
    write_log(other, 5)
    shutil.copyfile(other, path)
    verdict = check(path)
    assert not verdict.ok and "record 5 is not the one its head seals" in str(verdict.reason)
    refused(path, "does not hold the record its head")


def test_an_older_head_alone_hides_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path, 3)
    older = head_of(path).read_bytes()
    write_log(path, 2)
    head_of(path).write_bytes(older)
    verdict = check(path)
    assert verdict.ok and (verdict.records, verdict.head_records) == (5, 3)
    append(path)
    assert check(path).head_records == 6


def _edit_head(head: Path, **changes: object) -> None:
    data = json.loads(head.read_text())
    head.write_text(json.dumps({**data, **changes}))


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        ("fewer records", "HMAC that does not match"),
        ("more records", "HMAC that does not match"),
        ("an earlier record's mac", "HMAC that does not match"),
        ("its own mac", "HMAC that does not match"),
        ("another key", "HMAC that does not match: it was altered, or sealed with another key"),
        ("a record", "is not an audit head"),
        ("garbage", "is not an audit head"),
        ("empty", "is not an audit head"),
    ],
)
def test_a_tampered_head_fails_and_appends_are_refused(tmp_path: Path, tamper: str, says: str) -> None:
    path = tmp_path / "a.log"
    lines = write_log(path)
    head = head_of(path)
    if tamper == "fewer records":
        _edit_head(head, records=4)
    elif tamper == "more records":
        _edit_head(head, records=6)
    elif tamper == "an earlier record's mac":
        _edit_head(head, last_mac=json.loads(lines[3])["mac"], records=4)
    elif tamper == "its own mac":
        mac = json.loads(head.read_text())["mac"]
        _edit_head(head, mac=("0" if mac[0] != "0" else "1") + mac[1:])
    elif tamper == "another key":
        # The same log, sealed again with another key (what a forger without the key could do).
        write_log(tmp_path / "b.log", 5, key=OTHER_KEY)
        shutil.copyfile(head_of(tmp_path / "b.log"), head)
    elif tamper == "a record":
        head.write_bytes(lines[-1])
    elif tamper == "garbage":
        head.write_text("hello")
    else:
        head.write_bytes(b"")
    verdict = check(path)
    assert not verdict.ok and verdict.head_checked and verdict.bad_line is None
    assert verdict.head_records is None and says in str(verdict.reason)
    assert f"the head {head} " in str(verdict.reason)
    refused(path, "its head .* (is not an audit head|HMAC)")


def test_a_head_is_never_taken_for_a_record(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path, 2)
    path.write_bytes(path.read_bytes() + head_of(path).read_bytes())
    verdict = verify(path, key=KEY)
    assert verdict.bad_line == 3 and "HMAC does not match" in str(verdict.reason)


def test_without_a_head_a_log_still_verifies_but_truncation_is_unchecked(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path)
    head_of(path).unlink()
    verdict = check(path)
    assert verdict.ok and verdict.records == 5
    assert (verdict.head, verdict.head_checked, verdict.head_records) == (str(head_of(path)), False, None)
    plain = verify(path, key=KEY)
    assert plain.ok and (plain.head, plain.head_checked) == (None, False)
    assert plain.to_dict() == {
        "ok": True,
        "records": 5,
        "bad_line": None,
        "reason": None,
        "head": {"path": None, "checked": False, "records": None},
    }


def test_a_log_from_before_heads_is_counted_once_and_sealed(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    unsealed = AuditLog(path, key=KEY, head=None)
    for i in range(7):
        unsealed.append(action="search", query=f"q{i}")
    assert not head_of(path).exists()
    append(path)
    assert json.loads(head_of(path).read_text())["records"] == 8
    verdict = check(path)
    assert verdict.ok and verdict.records == verdict.head_records == 8


def test_records_written_after_the_head_are_accepted_and_sealed_next(tmp_path: Path) -> None:
    # What an append interrupted between the log and its head leaves, or a writer without a head.
    path = tmp_path / "a.log"
    write_log(path)
    unsealed = AuditLog(path, key=KEY, head=None)
    unsealed.append(action="search", query="late 1")
    unsealed.append(action="search", query="late 2")
    verdict = check(path)
    assert verdict.ok and (verdict.records, verdict.head_records) == (7, 5)
    append(path)
    verdict = check(path)
    assert verdict.ok and verdict.records == verdict.head_records == 8


def test_an_append_whose_head_was_not_replaced_fails_and_the_next_one_seals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.log"
    write_log(path, 2)

    def no_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", no_replace)
        with pytest.raises(AuditError, match=r"the record was written but its head .* was not"):
            append(path)
    assert (check(path).records, check(path).head_records) == (3, 2)
    assert list(head_of(path).parent.iterdir()) == [head_of(path)]
    append(path)
    verdict = check(path)
    assert verdict.ok and verdict.records == verdict.head_records == 4


def test_a_record_added_without_the_key_after_the_head_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path)
    AuditLog(path, key=OTHER_KEY, head=None).append(action="search", query="forged")
    verdict = check(path)
    assert verdict.bad_line == 6 and "altered" in str(verdict.reason)
    refused(path, "a record after the one its head .* seals does not verify")


def test_a_head_that_cannot_be_written_fails_before_the_record_is(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    write_log(path, 2)
    (tmp_path / "blocked").write_text("a file where the head's folder should be")
    before = path.read_bytes()
    with pytest.raises(AuditError, match=r"cannot write its head .*RUNBOOK_RAG_AUDIT_HEAD"):
        append(path, head=tmp_path / "blocked" / "a.head")
    assert path.read_bytes() == before


# --- where the head is: one resolution for the library and the CLI ---------------------------------


def test_the_head_sits_beside_the_key_one_per_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    idx, secrets_dir, logs = tmp_path / "idx", tmp_path / "secrets", tmp_path / "logs"
    # The index's own key: the head beside .audit.key in the index folder.
    local = resolve_audit(Settings().audit, index=idx)
    assert (local.log, local.key_file, local.local_key) == (idx / "audit.log", idx / ".audit.key", True)
    assert local.head.parent == idx and local.head.name.startswith(".audit.audit.log-")
    assert local.head.name.endswith(".head") and local.head == default_head(
        idx / "audit.log", beside=idx / ".audit.key"
    )
    key = local.load_key(create=True)
    assert stat.S_IMODE((idx / ".audit.key").stat().st_mode) == 0o600 and local.load_key() == key
    # A key file: the head beside it, not beside the log.
    key_file = secrets_dir / "audit.key"
    from_file = resolve_audit(Settings(audit_key_file=key_file).audit, index=idx, log=logs / "a.log")
    assert from_file.head.parent == secrets_dir and from_file.head.name.startswith("audit.a.log-")
    assert from_file.key_file == key_file and not from_file.local_key
    # A key from the environment: the head in the index folder, named as for the index's own key.
    from_env = resolve_audit(Settings(audit_key="e" * 32).audit, index=idx, log=logs / "a.log")
    assert from_env.key_file is None and from_env.load_key() == b"e" * 32
    assert from_env.head == default_head(logs / "a.log", beside=idx / ".audit.key")
    # One head per log: two logs sharing a key never share a head; one log by any path has one.
    other = resolve_audit(Settings(audit_key="e" * 32).audit, index=idx, log=tmp_path / "elsewhere" / "a.log")
    assert other.head != from_env.head
    monkeypatch.chdir(tmp_path)
    relative = resolve_audit(Settings(audit_key="e" * 32).audit, index=idx, log=Path("logs/../logs/a.log"))
    assert relative.head == from_env.head
    # A setting wins over the default, an argument over both; a key file wins over a key value.
    monkeypatch.setenv("RUNBOOK_RAG_AUDIT_HEAD", str(tmp_path / "env.head"))
    assert resolve_audit(Settings().audit, index=idx).head == tmp_path / "env.head"
    assert resolve_audit(Settings().audit, index=idx, head=tmp_path / "x.head").head == tmp_path / "x.head"
    both = resolve_audit(Settings(audit_key="e" * 32, audit_key_file=key_file).audit, index=idx)
    assert both.key_file == key_file
    assert (
        resolve_audit(Settings(audit_key="e" * 32).audit, key_file=key_file, index=idx).key_file == key_file
    )


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key in the environment and an index folder: where the CLI looks for heads by default."""
    for name in ("RUNBOOK_RAG_AUDIT_HEAD", "RUNBOOK_RAG_AUDIT_KEY_FILE", "RUNBOOK_RAG_AUDIT_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RUNBOOK_RAG_AUDIT_KEY", KEY.decode())
    return tmp_path / "idx"


def test_cli_verify_checks_the_head_the_library_wrote(capsys, tmp_path: Path, cli_env: Path) -> None:
    path = tmp_path / "logs" / "a.log"
    head = resolve_audit(Settings().audit, index=cli_env, log=path).head
    lines = write_log(path, head=head)
    assert head.parent == cli_env and not head_of(path).exists()
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env))
    assert code == 0 and out.strip() == f"ok: 5 records, chain intact, sealed by its head {head}"
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env), "--json")
    assert code == 0 and json.loads(out) == {
        "ok": True,
        "records": 5,
        "bad_line": None,
        "reason": None,
        "head": {"path": str(head), "checked": True, "records": 5},
    }
    path.write_bytes(b"".join(lines[:1] + lines[2:]))  # a line removed: the chain names it
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env))
    assert code == 1 and out.startswith(f"{path}:2: the chain is broken")


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("cut 1", "its last record was cut"),
        ("cut 3", "its last 3 records were cut"),
        ("emptied", "the log is empty, but its head seals 5 records"),
        ("deleted", "the log is missing, but its head seals 5 records"),
        ("rolled back", "an older copy of the log was restored"),
        ("head edited", "HMAC that does not match"),
        ("head of another key", "sealed with another key"),
    ],
)
def test_cli_verify_fails_on_a_log_that_does_not_match_its_head(
    capsys, tmp_path: Path, cli_env: Path, damage: str, says: str
) -> None:
    path = tmp_path / "a.log"
    head = resolve_audit(Settings().audit, index=cli_env, log=path).head
    write_log(path, 2, head=head)
    older = path.read_bytes()
    lines = write_log(path, 3, head=head)
    if damage.startswith("cut"):
        path.write_bytes(b"".join(lines[: -int(damage[-1])]))
    elif damage == "emptied":
        path.write_bytes(b"")
    elif damage == "deleted":
        path.unlink()
    elif damage == "rolled back":
        path.write_bytes(older)
    elif damage == "head edited":
        _edit_head(head, records=4)
    else:
        other = tmp_path / "b.log"
        write_log(other, 5, key=OTHER_KEY, head=tmp_path / "b.head")
        shutil.copyfile(tmp_path / "b.head", head)
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env), "--json")
    got = json.loads(out)
    assert code == 1 and got["ok"] is False and says in got["reason"] and got["bad_line"] is None
    assert got["head"]["path"] == str(head) and got["head"]["checked"] is True
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env))
    assert code == 1 and out.startswith(f"{path}: ") and says in out


def test_cli_verify_without_a_head_says_truncation_is_unchecked(
    capsys, tmp_path: Path, cli_env: Path
) -> None:
    path = tmp_path / "a.log"
    write_log(path)  # its head is in tests' own folder, not where the CLI looks by default
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env))
    expected = resolve_audit(Settings().audit, index=cli_env, log=path).head
    assert (
        code == 0
        and out.strip() == f"ok: 5 records, chain intact; truncation not checked: no head at {expected}"
    )
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env), "--json")
    assert code == 0 and json.loads(out)["head"] == {"path": str(expected), "checked": False, "records": None}
    # --head names it; then a cut tail is found.
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))
    code, out, _ = run(capsys, "audit", "verify", str(path), "--head", str(head_of(path)), "--json")
    assert code == 1 and "its last record was cut" in json.loads(out)["reason"]
    path.unlink()
    code, _, err = run(capsys, "audit", "verify", str(path), "--index", str(cli_env))
    assert code == 2 and "cannot read the audit log" in err


def test_cli_verify_finds_the_head_beside_a_key_file(
    capsys, tmp_path: Path, cli_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "secrets" / "audit.key"
    key_file.parent.mkdir()
    key_file.write_bytes(OTHER_KEY)
    path = tmp_path / "a.log"
    setup = resolve_audit(Settings(audit_key_file=key_file).audit, index=cli_env, log=path)
    lines = write_log(path, 3, key=OTHER_KEY, head=setup.head)
    assert setup.head.parent == key_file.parent
    code, out, _ = run(capsys, "audit", "verify", str(path), "--key-file", str(key_file))
    assert code == 0 and f"sealed by its head {setup.head}" in out
    # The same through the environment, as the index would read it.
    monkeypatch.delenv("RUNBOOK_RAG_AUDIT_KEY")
    monkeypatch.setenv("RUNBOOK_RAG_AUDIT_KEY_FILE", str(key_file))
    path.write_bytes(b"".join(lines[:-1]))
    code, out, _ = run(capsys, "audit", "verify", str(path))
    assert code == 1 and "its last record was cut" in out
    # RUNBOOK_RAG_AUDIT_HEAD names the head wherever it is kept.
    monkeypatch.setenv("RUNBOOK_RAG_AUDIT_HEAD", str(tmp_path / "nowhere.head"))
    code, out, _ = run(capsys, "audit", "verify", str(path))
    assert code == 0 and f"no head at {tmp_path / 'nowhere.head'}" in out


def test_cli_verify_reports_records_written_after_the_head(capsys, tmp_path: Path, cli_env: Path) -> None:
    path = tmp_path / "a.log"
    head = resolve_audit(Settings().audit, index=cli_env, log=path).head
    write_log(path, 4, head=head)
    AuditLog(path, key=KEY, head=None).append(action="search", query="late")
    code, out, _ = run(capsys, "audit", "verify", str(path), "--index", str(cli_env))
    assert code == 0 and f"its head {head} seals the first 4, the rest were written after it" in out


def test_records_are_redacted_and_queries_can_be_kept_as_hmac_only(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log", key=KEY, head=None, keep_query_text=False)
    query = "card 4111 1111 1111 1111 key AKIA2Q7RUNBOOKFAKE01"
    record = log.append(query=query, note="cvv 123")
    assert "query" not in record and record["query_hmac"] == log.query_digest(redact(query).text)
    text = (tmp_path / "a.log").read_text()
    for value in ("4111 1111 1111 1111", "AKIA2Q7RUNBOOKFAKE01", "cvv 123"):
        assert value not in text
    kept = AuditLog(tmp_path / "b.log", key=KEY, head=None).append(query="card 4111 1111 1111 1111")
    assert kept["query"] == "card [PAN ****1111]"


def _append_many(path: str, head: str, n: int) -> None:
    log = AuditLog(path, key=KEY, head=head)
    for i in range(n):
        log.append(action="search", query=f"q{i}", outcome="ok")


@pytest.mark.slow
def test_appends_from_several_processes_keep_one_chain_and_its_head(tmp_path: Path) -> None:
    path = tmp_path / "shared.log"
    write_log(path, 3)  # the head exists, so every process reads and replaces it
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), str(head_of(path)), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        for i, p in enumerate(procs):
            p.join(WAIT)
            assert p.exitcode is not None, f"waited {WAIT:g} s for appending process {i} to finish, in vain"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    verdict = check(path)
    assert verdict.ok and verdict.records == 103 and verdict.head_records == 103
    assert list(head_of(path).parent.iterdir()) == [head_of(path)]


def test_a_head_cannot_be_the_log_itself(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="another file than the log"):
        AuditLog(tmp_path / "a.log", key=KEY, head=tmp_path / "." / "a.log")


def test_an_unwritable_log_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir.log").mkdir()
    with pytest.raises(AuditError, match="cannot write the audit record"):
        AuditLog(tmp_path / "dir.log", key=KEY, head=tmp_path / "h").append(query="q")


def test_keys_must_be_long_enough(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_key(key="short")
    with pytest.raises(ConfigError, match="no audit key"):
        load_key()


# --- every query of the library, the CLI and eval is audited -----------------------------------


@pytest.mark.slow
def test_search_ask_and_eval_are_audited(tmp_path: Path, sample_index_path: Path, model, capsys) -> None:
    log = tmp_path / "audit.log"
    settings = Settings(audit_log=log, audit_key=KEY.decode())
    index = RunbookIndex(sample_index_path, settings=settings, embedder=model)
    sre = Principal("sam", frozenset({"sre"}))
    hits = index.search("postgres primary failover with patroni", principal=sre, k=5)
    answer = index.answer("card 4111 1111 1111 1111 declined, cvv 123, what now?", principal=sre)
    with pytest.raises(QueryError):
        index.search("", principal=sre)
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        '{"id": "a", "query": "kafka broker down", "relevant": ["platform/kafka-broker-down.md"]}\n'
    )
    index.evaluate(load_queries(queries), principal=sre)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    # eval searches twice per query, both audited: the document ranking and the passages ask quotes.
    assert [r["action"] for r in records] == ["search", "ask", "search", "eval", "eval"]
    first = records[0]
    assert first["interface"] == "library" and first["principal"] == {"id": "sam", "groups": ["sre"]}
    assert first["chunk_ids"] == [h.chunk_id for h in hits] and first["outcome"] == "ok"
    assert first["withheld"] >= 1  # the dba-only failover runbook is nearest, and withheld
    assert records[1]["outcome"] in ("answered", "abstained") and records[1]["mode"] == answer.mode
    assert records[2]["outcome"] == "error:QueryError"
    text = log.read_text()
    for value in PLANTED:
        assert value not in text
    assert check_with(resolve_audit(settings.audit, index=sample_index_path)).head_records == 5
    # The CLI writes records too, marked as such.
    search = ["search", "kafka broker down", "--user", "u", "--group", "sre"]
    code, _, _ = run(capsys, *search, "--index", str(sample_index_path))
    assert code == 0
    default_log = sample_index_path / "audit.log"
    cli_records = [json.loads(line) for line in default_log.read_text().splitlines()]
    assert cli_records[-1]["interface"] == "cli" and cli_records[-1]["query"] == "kafka broker down"
    code, out, _ = run(capsys, "audit", "verify", str(default_log), "--index", str(sample_index_path))
    head = resolve_audit(Settings().audit, index=sample_index_path).head
    assert head.parent == sample_index_path and head.name.startswith(".audit.audit.log-")
    assert code == 0 and f"chain intact, sealed by its head {head}" in out


@pytest.mark.slow
def test_a_failure_outside_the_library_is_audited_too(
    tmp_path: Path, sample_index_path: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "audit.log"
    settings = Settings(audit_log=log, audit_key=KEY.decode())
    index = RunbookIndex(sample_index_path, settings=settings, embedder=model)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store went away")

    monkeypatch.setattr(index._served.current().store, "nearest", broken)
    with pytest.raises(RuntimeError):
        index.search("kafka broker down", principal=Principal("u", frozenset({"sre"})))
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["outcome"] == "error:RuntimeError" and verify(log, key=KEY).ok


@pytest.mark.slow
def test_no_unaudited_answers(tmp_path: Path, sample_index_path: Path, model) -> None:
    (tmp_path / "blocked").mkdir()
    settings = Settings(audit_log=tmp_path / "blocked", audit_key=KEY.decode())
    index = RunbookIndex(sample_index_path, settings=settings, embedder=model)
    with pytest.raises(AuditError):
        index.search("kafka broker down", principal=Principal("u", frozenset({"sre"})))
    with pytest.raises(AuditError):
        index.answer("kafka broker down", principal=Principal("u", frozenset({"sre"})))


@pytest.mark.slow
def test_queries_fail_once_the_log_was_cut(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text(
        "---\ntitle: Widget\naccess: [sre]\n---\n# Widget\n\nRestart the widget daemon.\n"
    )
    path = tmp_path / "idx"
    RunbookIndex.build([src], path=path, embedder=HashEmbedder())
    index = RunbookIndex(path, embedder=HashEmbedder())
    sre = Principal("u", frozenset({"sre"}))
    for _ in range(3):
        index.search("widget", principal=sre)
    setup = resolve_audit(Settings().audit, index=path)
    assert setup.head.parent == path and (path / ".audit.key").exists()
    lines = setup.log.read_bytes().splitlines(keepends=True)
    assert check_with(setup).records == 3
    setup.log.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(AuditError, match="does not hold the record its head"):
        index.search("widget", principal=sre)
    with pytest.raises(AuditError, match="does not hold the record its head"):
        index.answer("widget", principal=sre)
    assert setup.log.read_bytes() == b"".join(lines[:-1])


def test_a_log_swapped_for_a_link_is_refused_and_keeps_its_head(tmp_path: Path) -> None:
    key_file = tmp_path / "keys" / "audit.key"
    key_file.parent.mkdir()
    key_file.write_text("k" * 32)
    log = tmp_path / "audit.log"
    setup = resolve_audit(Settings(audit_key_file=key_file).audit, index=tmp_path, log=log)
    audit_log = AuditLog(log, key=setup.load_key(), head=setup.head)
    for n in range(4):
        audit_log.append(action="search", query=f"q{n}")
    lines = log.read_bytes().splitlines(keepends=True)
    copy = tmp_path / "audit.log.1"
    copy.write_bytes(b"".join(lines[:2]))
    log.unlink()
    log.symlink_to(copy.name)
    again = resolve_audit(Settings(audit_key_file=key_file).audit, index=tmp_path, log=log)
    assert again.head == setup.head  # the head's name follows the configured path, not the link
    with pytest.raises(AuditError, match="symbolic link"):
        AuditLog(log, key=again.load_key(), head=again.head).append(action="search", query="q")
    verdict = verify(log, key=again.load_key(), head=again.head)
    assert not verdict.ok and "symbolic link" in (verdict.reason or "")
