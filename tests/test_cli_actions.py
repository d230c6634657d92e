"""``runbook-rag classify`` and ``runbook-rag actions``: the approval flow from the command line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from .test_cli import run

SOURCE = "platform/postgres-primary-failover.md"
REINIT = "patronictl reinit payments-db payments-db-0"


def test_classify_arguments_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "classify", "kubectl get pods -A", "kubectl delete ns payments", "--json")
    assert code == 0
    commands = json.loads(out)["commands"]
    assert [(c["command"], c["risk"]) for c in commands] == [
        ("kubectl get pods -A", "read"),
        ("kubectl delete ns payments", "destructive"),
    ]
    assert all(c["reasons"] for c in commands)
    code, out, _ = run(capsys, "classify", "redis-cli FLUSHALL", "systemctl status nginx")
    assert code == 0
    assert out.splitlines()[0].split()[0] == "destructive" and out.splitlines()[1].split()[0] == "read"


def test_classify_sql(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "classify",
        "--language",
        "sql",
        "--json",
        "WITH x AS (SELECT 1) DELETE FROM payments",
        "SELECT 1",
    )
    assert code == 0
    assert [c["risk"] for c in json.loads(out)["commands"]] == ["destructive", "read"]


def test_classify_a_script_on_standard_input(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    script = "kubectl -n x get pods\n# a comment\nhelm -n x uninstall api \\\n  --wait\necho ```\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    code, out, _ = run(capsys, "classify", "-", "--json")
    assert code == 0
    commands = json.loads(out)["commands"]
    assert [c["risk"] for c in commands][:2] == ["read", "destructive"]
    assert commands[1]["command"].startswith("helm -n x uninstall api")


def test_classify_without_commands_is_a_usage_error(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    code, _, err = run(capsys, "classify")
    assert code == 2 and "at least one COMMAND" in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "classify", "-")
    assert code == 2


@pytest.fixture()
def book(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Requests kept apart from the shared sample index."""
    path = tmp_path / "actions.sqlite3"
    monkeypatch.setenv("RUNBOOK_RAG_ACTIONS_DB", str(path))
    monkeypatch.setenv("RUNBOOK_RAG_AUDIT_LOG", str(tmp_path / "audit.log"))
    return path


@pytest.mark.slow
def test_the_approval_flow_from_the_command_line(
    capsys: pytest.CaptureFixture[str], sample_index_path: Path, book: Path
) -> None:
    index = ("--index", str(sample_index_path))
    code, out, _ = run(
        capsys, "actions", "propose", "--source", SOURCE, "--command", f"  {REINIT} ",
        "--user", "alice", "--group", "dba", "--reason", "replica broken", "--json", *index,
    )  # fmt: skip
    proposed = json.loads(out)
    assert code == 0 and set(proposed) >= {"id", "risk", "status", "approvals_needed"}
    assert (proposed["risk"], proposed["status"], proposed["approvals_needed"]) == (
        "destructive",
        "pending",
        2,
    )
    rid = proposed["id"]

    def approve(user: str, *groups: str) -> tuple[int, str, str]:
        flags = [f for g in groups for f in ("--group", g)]
        return run(capsys, "actions", "approve", rid, "--user", user, *flags, "--json", *index)

    code, _, err = approve("Alice", "dba", "dba-leads")
    assert code == 2 and "requester cannot approve" in err
    code, _, err = approve("carol", "dba-leads")  # an approver group, but may not read the runbook
    assert code == 2 and "no such request you may act on" in err
    code, _, err = approve("erin", "dba")  # may read it, not an approver
    assert code == 2 and "dba-leads" in err
    code, out, _ = approve("bob", "dba", "dba-leads")
    assert code == 0 and json.loads(out)["status"] == "pending" and "grant" not in json.loads(out)
    code, out, _ = approve("dan", "dba", "dba-leads")
    decided = json.loads(out)
    assert code == 0 and decided["status"] == "approved" and decided["approved_by"] == ["bob", "dan"]
    grant = decided["grant"]

    code, out, _ = run(capsys, "actions", "redeem", grant, "--command", f"{REINIT} --force", "--json", *index)
    assert code == 1 and json.loads(out) == {"valid": False, "reason": "the grant is for another command"}
    code, _, err = run(capsys, "actions", "redeem", grant[:-4], "--command", REINIT, *index)
    assert code == 1 and "signature does not verify" in err
    code, out, _ = run(
        capsys, "actions", "redeem", grant, "--command", REINIT, "--json", "--user", "runner", *index
    )
    assert code == 0 and json.loads(out)["command"] == REINIT and json.loads(out)["valid"] is True
    code, _, err = run(capsys, "actions", "redeem", grant, "--command", REINIT, *index)
    assert code == 1 and "one use" in err

    code, out, _ = run(capsys, "actions", "list", "--json", *index)
    listed = json.loads(out)["requests"]
    assert [(r["id"], r["status"]) for r in listed] == [(rid, "redeemed")]
    code, out, _ = run(capsys, "actions", "list", "--user", "eve", "--group", "sre", "--json", *index)
    assert json.loads(out)["requests"] == []
    code, out, _ = run(capsys, "actions", "list", "--status", "pending", *index)
    assert out.strip() == "no requests"


@pytest.mark.slow
def test_a_read_command_needs_no_approval_and_unknown_text_is_refused(
    capsys: pytest.CaptureFixture[str], sample_index_path: Path, book: Path
) -> None:
    index = ("--index", str(sample_index_path))
    code, out, _ = run(
        capsys, "actions", "propose", "--source", SOURCE, "--command", "patronictl list",
        "--user", "alice", "--group", "dba", *index,
    )  # fmt: skip
    assert code == 0 and "not_required" in out and "risk read" in out
    for command, user, group in [
        ("patronictl remove payments-db", "alice", "dba"),  # not in the runbook
        ("patronictl list", "eve", "sre"),  # a runbook eve may not read
        ("patronictl list", "alice", "no-such-group"),
    ]:
        code, _, err = run(
            capsys, "actions", "propose", "--source", SOURCE, "--command", command,
            "--user", user, "--group", group, *index,
        )  # fmt: skip
        assert (
            code == 2
            and err.strip() == f"runbook-rag: error: no runbook {SOURCE!r} you may read holds this command"
        )


@pytest.mark.slow
def test_deny_then_redeem_fails(
    capsys: pytest.CaptureFixture[str], sample_index_path: Path, book: Path
) -> None:
    index = ("--index", str(sample_index_path))
    code, out, _ = run(
        capsys, "actions", "propose", "--source", SOURCE, "--command", REINIT,
        "--user", "alice", "--group", "dba", "--json", *index,
    )  # fmt: skip
    rid = json.loads(out)["id"]
    code, out, _ = run(capsys, "actions", "deny", rid, "--user", "alice", "--group", "dba", "--json", *index)
    assert code == 0 and json.loads(out)["status"] == "denied"
    code, _, err = run(
        capsys, "actions", "approve", rid, "--user", "bob", "--group", "dba", "--group", "dba-leads", *index
    )
    assert code == 2 and "denied" in err
