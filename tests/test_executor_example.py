"""examples/executor.py: run as its own process against a real small index (and a real service)."""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from runbook_rag import Principal, RunbookIndex, Settings
from runbook_rag.service import create_app, load_tokens, token_digest

from .test_service import KEY, Server
from .waiting import WAIT

ROOT = Path(__file__).resolve().parent.parent
EXECUTOR = ROOT / "examples" / "executor.py"
SAM = Principal("sam", frozenset({"sre"}))
LEE = Principal("lee", frozenset({"sre", "sre-leads"}))


def load_executor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("executor_example", EXECUTOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Drill:
    index: RunbookIndex
    env: dict[str, str]
    log: Path
    marker: Path
    served_marker: Path
    shell_command: str

    def grant(self, command: str) -> str:
        request = self.index.propose("drill.md", command, principal=SAM)
        grant = self.index.approve(request.id, principal=LEE).grant
        assert grant is not None
        return grant

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(EXECUTOR), *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory, model) -> Iterator[Drill]:
    tmp = tmp_path_factory.mktemp("executor")
    marker, served_marker = tmp / "made-by-executor", tmp / "made-over-http"
    shell_command = f"mkdir {shlex.quote(str(tmp / 'never-made'))} && echo made"
    runbook = "\n".join(
        [
            "---",
            "title: Executor drill",
            "access: [sre]",
            "approvers: [sre-leads]",
            "---",
            "# Executor drill",
            "",
            "## Look",
            "",
            "```bash",
            "echo drill-ok",
            "```",
            "",
            "## Make the markers",
            "",
            "```bash",
            f"mkdir {shlex.quote(str(marker))}",
            f"mkdir {shlex.quote(str(served_marker))}",
            "```",
            "",
            "## Make one and say so",
            "",
            "```bash",
            shell_command,
            "```",
            "",
        ]
    )
    src = tmp / "src"
    src.mkdir()
    (src / "drill.md").write_text(runbook)
    path, log, db = tmp / "index", tmp / "audit.log", tmp / "actions.sqlite3"
    RunbookIndex.build([src], path=path, embedder=model)
    settings = Settings(audit_log=log, audit_key=KEY, actions_db=db)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "RUNBOOK_RAG_INDEX": str(path),
        "RUNBOOK_RAG_AUDIT_KEY": KEY,
        "RUNBOOK_RAG_AUDIT_LOG": str(log),
        "RUNBOOK_RAG_ACTIONS_DB": str(db),
    }
    env.pop("RUNBOOK_RAG_TOKEN", None)
    with RunbookIndex(path, settings=settings, embedder=model) as index:
        yield Drill(index, env, log, marker, served_marker, shell_command)


@pytest.mark.parametrize(
    "command",
    [
        "echo a | grep a",
        "echo a > out.txt",
        "echo a >> out.txt",
        "cat < /etc/hostname",
        "echo a && echo b",
        "echo a || echo b",
        "echo a; echo b",
        "echo a &",
        "echo $(id)",
        "echo `id`",
        'echo "$(id)"',
        'echo "user $USER"',
        "echo $HOME",
        "ls *",
        "ls ~",
        "ls {a,b}",
        "(echo a)",
        "FOO=1 env",
        "echo a # note",
        "echo 'unclosed",
        "echo a\necho b",
        "   ",
    ],
)
def test_commands_that_need_a_shell_are_refused(command: str) -> None:
    executor = load_executor()
    with pytest.raises(executor.Refused):
        executor.argv_of(command)


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        ("printf '%s|%s\\n' a b", ["printf", "%s|%s\\n", "a", "b"]),
        (
            "kubectl get pods -o jsonpath='{.items[*].metadata.name}'",
            ["kubectl", "get", "pods", "-o", "jsonpath={.items[*].metadata.name}"],
        ),
        (
            "kubectl -n payments get pods \\\n  -o wide",
            ["kubectl", "-n", "payments", "get", "pods", "-o", "wide"],
        ),
        ('echo "a  b" \\$HOME c#d', ["echo", "a  b", "$HOME", "c#d"]),
        ("grep -E 'ERROR|FATAL' app.log", ["grep", "-E", "ERROR|FATAL", "app.log"]),
    ],
)
def test_commands_without_shell_syntax_become_argv(command: str, argv: list[str]) -> None:
    assert load_executor().argv_of(command) == argv


@pytest.mark.slow
def test_a_read_command_runs_without_a_grant(drill: Drill) -> None:
    done = drill.run("echo drill-ok")
    assert (done.returncode, done.stdout) == (0, "drill-ok\n"), done.stderr


@pytest.mark.slow
def test_a_change_command_without_a_grant_is_refused_and_not_run(drill: Drill) -> None:
    done = drill.run(f"mkdir {shlex.quote(str(drill.marker))}")
    assert done.returncode == 2 and "is change" in done.stderr and "needs a grant" in done.stderr
    assert not drill.marker.exists()
    unknown = drill.run(f"{shlex.quote(sys.executable)} -c 'print(1)'")
    assert unknown.returncode == 2 and "is unknown" in unknown.stderr and unknown.stdout == ""


@pytest.mark.slow
def test_a_granted_command_runs_once(drill: Drill) -> None:
    command = f"mkdir {shlex.quote(str(drill.marker))}"
    grant = drill.grant(command)
    forged = drill.run(command, "--grant", grant[:-4] + "AAAA")
    assert forged.returncode == 2 and "not redeemed" in forged.stderr and not drill.marker.exists()
    other = drill.run(f"mkdir {shlex.quote(str(drill.marker))}-2", "--grant", grant)
    assert other.returncode == 2 and "not redeemed" in other.stderr
    first = drill.run(command, "--grant", grant)
    assert first.returncode == 0, first.stderr
    assert drill.marker.is_dir()
    drill.marker.rmdir()
    second = drill.run(command, "--grant", grant)
    assert second.returncode == 2 and "redeemed already" in second.stderr
    assert not drill.marker.exists()
    records = [json.loads(line) for line in drill.log.read_text().splitlines()]
    redeemed = [r for r in records if r["action"] == "action.redeem" and r.get("command") == command]
    assert [(r["outcome"], r["principal"]["id"]) for r in redeemed] == [("redeemed", "executor")]


@pytest.mark.slow
def test_a_granted_command_that_needs_a_shell_is_refused_before_its_grant_is_used(drill: Drill) -> None:
    grant = drill.grant(drill.shell_command)
    done = drill.run(drill.shell_command, "--grant", grant)
    assert done.returncode == 2 and "needs a shell to interpret '&'" in done.stderr
    assert drill.index.redeem(grant, drill.shell_command).command == drill.shell_command  # still unused


@pytest.mark.slow
def test_output_is_redacted(drill: Drill) -> None:
    done = drill.run("printf '%s %s %s %s, db_password=%s\\n' 4111 1111 1111 1111 Winter2027x")
    assert done.returncode == 0
    assert "[PAN ****1111]" in done.stdout and "[SECRET" in done.stdout
    assert "4111 1111 1111 1111" not in done.stdout and "Winter2027x" not in done.stdout
    failed = drill.run("ls /nonexistent-4111111111111111")
    assert failed.returncode != 0 and "[PAN ****1111]" in failed.stderr
    assert "4111111111111111" not in failed.stderr


@pytest.mark.slow
def test_a_command_past_its_timeout_is_killed(drill: Drill) -> None:
    done = drill.run("sleep 300", "--timeout", "0.5")
    assert done.returncode == 124 and "killed after the 0.5 s timeout" in done.stderr
    # What the command started dies with it: a surviving sleep would hold the output pipe open
    # and the executor would not return before it ends.
    nested = drill.run("timeout 300 sleep 300", "--timeout", "0.5")
    assert nested.returncode == 124


def test_a_missing_program_is_127(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_executor().run(["/nonexistent/kubectl", "get", "pods"], 5.0) == 127
    assert "no such program" in capsys.readouterr().err


@pytest.mark.slow
def test_redeeming_over_http(drill: Drill, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    entries = [
        {
            "token_sha256": token_digest("tok-run"),
            "user": "runner",
            "groups": ["ops"],
            "endpoints": ["redeem"],
        }
    ]
    tokens.write_text(json.dumps(entries))
    server = Server(create_app(drill.index, load_tokens(tokens)))
    command = f"mkdir {shlex.quote(str(drill.served_marker))}"
    try:
        grant = drill.grant(command)
        no_token = drill.run(command, "--grant", grant, "--url", server.url)
        assert no_token.returncode == 2 and "RUNBOOK_RAG_TOKEN" in no_token.stderr
        wrong = drill.run(command, "--grant", grant, "--url", server.url, env={"RUNBOOK_RAG_TOKEN": "nope"})
        assert wrong.returncode == 2 and "not redeemed" in wrong.stderr and not drill.served_marker.exists()
        token = {"RUNBOOK_RAG_TOKEN": "tok-run"}
        first = drill.run(command, "--grant", grant, "--url", server.url, env=token)
        assert first.returncode == 0, first.stderr
        assert drill.served_marker.is_dir()
        drill.served_marker.rmdir()
        second = drill.run(command, "--grant", grant, "--url", server.url, env=token)
        assert second.returncode == 2 and "redeemed already" in second.stderr
        assert not drill.served_marker.exists()
    finally:
        server.stop()
