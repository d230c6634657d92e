"""The HMAC-chained audit trail: tamper evidence, concurrent appends, redaction, and every query audited."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from runbook_rag import Principal, RunbookIndex, Settings
from runbook_rag.audit import AuditError, AuditLog, load_key, verify
from runbook_rag.errors import ConfigError, QueryError
from runbook_rag.evaluation import load_queries
from runbook_rag.redaction import redact

from .test_cli import run
from .test_redaction_e2e import PLANTED

KEY = b"k" * 32


def write_log(path: Path, n: int = 5) -> list[bytes]:
    log = AuditLog(path, key=KEY)
    for i in range(n):
        log.append(action="search", query=f"query {i}", outcome="ok")
    return path.read_bytes().splitlines(keepends=True)


def test_an_intact_log_verifies(tmp_path: Path) -> None:
    write_log(tmp_path / "a.log")
    verdict = verify(tmp_path / "a.log", key=KEY)
    assert verdict.ok and verdict.records == 5


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
    verdict = verify(path, key=KEY)
    assert (verdict.bad_line, verdict.ok) == (bad_line, False)
    assert reason in str(verdict.reason)


def test_a_duplicated_key_is_not_canonical_and_fails(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    lines = write_log(path, 2)
    # Parses to the same record (the last duplicate wins) but shows a forged value first.
    lines[0] = lines[0].replace(b'{"action"', b'{"query":"benign","action"', 1)
    assert lines[0].startswith(b'{"query":"benign"') and b'"query":"query 0"' in lines[0]
    path.write_bytes(b"".join(lines))
    verdict = verify(path, key=KEY)
    assert not verdict.ok and verdict.bad_line == 1 and "canonical" in str(verdict.reason)


def test_another_key_fails_at_the_first_line(tmp_path: Path) -> None:
    write_log(tmp_path / "a.log")
    assert verify(tmp_path / "a.log", key=b"x" * 32).bad_line == 1


def test_records_are_redacted_and_queries_can_be_kept_as_hmac_only(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.log", key=KEY, keep_query_text=False)
    query = "card 4111 1111 1111 1111 key AKIA2Q7RUNBOOKFAKE01"
    record = log.append(query=query, note="cvv 123")
    assert "query" not in record and record["query_hmac"] == log.query_digest(redact(query).text)
    text = (tmp_path / "a.log").read_text()
    for value in ("4111 1111 1111 1111", "AKIA2Q7RUNBOOKFAKE01", "cvv 123"):
        assert value not in text
    kept = AuditLog(tmp_path / "b.log", key=KEY).append(query="card 4111 1111 1111 1111")
    assert kept["query"] == "card [PAN ****1111]"


def _append_many(path: str, n: int) -> None:
    log = AuditLog(path, key=KEY)
    for i in range(n):
        log.append(action="search", query=f"q{i}", outcome="ok")


def test_appends_from_several_processes_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "shared.log"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    verdict = verify(path, key=KEY)
    assert verdict.ok and verdict.records == 100


def test_an_unwritable_log_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "dir.log").mkdir()
    with pytest.raises(AuditError, match="cannot write the audit record"):
        AuditLog(tmp_path / "dir.log", key=KEY).append(query="q")


def test_keys_must_be_long_enough(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        load_key(key="short")
    with pytest.raises(ConfigError, match="no audit key"):
        load_key()


def test_cli_verify(capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.log"
    lines = write_log(path)
    monkeypatch.setenv("RUNBOOK_RAG_AUDIT_KEY", KEY.decode())
    code, out, _ = run(capsys, "audit", "verify", str(path))
    assert code == 0 and "5 records" in out
    path.write_bytes(b"".join(lines[:1] + lines[2:]))
    code, out, _ = run(capsys, "audit", "verify", str(path))
    assert code == 1 and f"{path}:2:" in out


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
    assert [r["action"] for r in records] == ["search", "ask", "search", "eval"]
    first = records[0]
    assert first["interface"] == "library" and first["principal"] == {"id": "sam", "groups": ["sre"]}
    assert first["chunk_ids"] == [h.chunk_id for h in hits] and first["outcome"] == "ok"
    assert first["withheld"] >= 1  # the dba-only failover runbook is nearest, and withheld
    assert records[1]["outcome"] in ("answered", "abstained") and records[1]["mode"] == answer.mode
    assert records[2]["outcome"] == "error:QueryError"
    text = log.read_text()
    for value in PLANTED:
        assert value not in text
    assert verify(log, key=KEY).ok
    # The CLI writes records too, marked as such.
    search = ["search", "kafka broker down", "--user", "u", "--group", "sre"]
    code, _, _ = run(capsys, *search, "--index", str(sample_index_path))
    assert code == 0
    default_log = sample_index_path / "audit.log"
    cli_records = [json.loads(line) for line in default_log.read_text().splitlines()]
    assert cli_records[-1]["interface"] == "cli" and cli_records[-1]["query"] == "kafka broker down"
    code, out, _ = run(capsys, "audit", "verify", str(default_log), "--index", str(sample_index_path))
    assert code == 0 and "chain intact" in out


@pytest.mark.slow
def test_a_failure_outside_the_library_is_audited_too(
    tmp_path: Path, sample_index_path: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "audit.log"
    settings = Settings(audit_log=log, audit_key=KEY.decode())
    index = RunbookIndex(sample_index_path, settings=settings, embedder=model)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("store went away")

    monkeypatch.setattr(index._served.store, "nearest", broken)
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
