"""Groups at the command line: required for search and ask, a hint when none labels anything
(the operator has the index at hand), silence in the service; eval as the README runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_rag import RunbookIndex, Settings
from runbook_rag.evaluation import load_queries
from runbook_rag.service import create_app, token_digest

from .conftest import ROOT
from .test_cli import run

pytestmark = pytest.mark.slow

HINT = "no runbook in this index is labelled for group(s)"


@pytest.mark.parametrize("command", ["search", "ask"])
def test_search_and_ask_require_a_group_and_say_so(capsys, command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0 and "--group" in out and "required" in " ".join(out.split())
    code, _, err = run(capsys, command, "pods", "--user", "u")
    assert code == 2 and "Missing option '--group'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("command", ["search", "ask"])
@pytest.mark.parametrize("groups", [["SRE"], ["no-such-team"], ["Dba", "sre-oncall"]])
def test_groups_that_label_nothing_get_a_hint(capsys, sample_index_path: Path, command: str, groups) -> None:
    args = [command, "postgres primary is down", "--user", "u", "--index", str(sample_index_path)]
    for group in groups:
        args += ["--group", group]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0
    assert err.count("\n") == 1 and HINT in err and "case-sensitive" in err
    assert all(group in err for group in groups)
    # The hint names only what was given, never the index's own labels.
    assert not {"sre", "dba", "payments-oncall", "security"} & set(
        err.replace(",", " ").replace(";", " ").split()
    )
    body = json.loads(out)
    assert body.get("hits", []) == [] and body.get("citations", []) == []


def test_no_hint_when_one_group_labels_something(capsys, sample_index_path: Path) -> None:
    args = ["search", "postgres primary is down", "--user", "u", "--index", str(sample_index_path)]
    code, out, err = run(capsys, *args, "--group", "SRE", "--group", "dba")
    assert code == 0 and err == "" and "platform/postgres-primary-failover.md" in out


def test_the_service_says_nothing_about_labels(tmp_path: Path, sample_index_path: Path, model) -> None:
    from fastapi.testclient import TestClient

    from runbook_rag.service import load_tokens

    callers = {"unknown": ["no-such-team"], "wrong-case": ["SRE"], "known-elsewhere": ["finance-ops"]}
    entries = [
        {"token_sha256": token_digest(f"tok-{name}"), "user": name, "groups": groups}
        for name, groups in callers.items()
    ]
    (tmp_path / "tokens.json").write_text(json.dumps(entries))
    settings = Settings(audit_log=tmp_path / "audit.log", audit_key="k" * 32)
    index = RunbookIndex(sample_index_path, settings=settings, embedder=model, interface="http")
    with TestClient(create_app(index, load_tokens(tmp_path / "tokens.json"))) as client:

        def call(name: str, path: str, body: dict[str, str]) -> tuple[int, dict[str, str], dict]:
            got = client.post(path, json=body, headers={"Authorization": f"Bearer tok-{name}"})
            headers = {k: v for k, v in got.headers.items() if k not in ("content-length", "date")}
            payload = got.json()
            payload.get("usage", {}).pop("stages_ms", None)  # timings differ from call to call
            return got.status_code, headers, payload

        # Unknown and wrong-case groups get the same reply, shaped as a known group's.
        question = "how do I descale the espresso machine"
        for path, body in (("/v1/search", {"query": question}), ("/v1/ask", {"question": question})):
            replies = {name: call(name, path, body) for name in callers}
            assert replies["unknown"] == replies["wrong-case"], path
            status, headers, payload = replies["unknown"]
            known_status, known_headers, known_payload = replies["known-elsewhere"]
            assert (status, headers.keys(), payload.keys()) == (
                known_status,
                known_headers.keys(),
                known_payload.keys(),
            )
            assert "labelled" not in json.dumps(payload) and "case-sensitive" not in json.dumps(payload)
        # Nothing visible answers it for the known group either: then the answers are the same.
        ask = {name: call(name, "/v1/ask", {"question": question}) for name in callers}
        assert ask["unknown"] == ask["known-elsewhere"]


EVAL_SET = ROOT / "evals" / "sample_runbooks.jsonl"


def test_eval_runs_the_sample_set_as_the_readme_writes_it(capsys, sample_index_path: Path) -> None:
    lines = [json.loads(line) for line in EVAL_SET.read_text().splitlines()]
    assert all(line.get("groups") for line in lines), "every line names who asks it"
    code, out, err = run(capsys, "eval", str(EVAL_SET), "--index", str(sample_index_path), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["queries"] == len(lines) and report["leaks"] == 0


def test_eval_says_what_to_pass_when_lines_have_no_groups(
    capsys, tmp_path: Path, sample_index_path: Path
) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"id": "pods", "query": "pod keeps restarting", "relevant": ["platform/pod-crashloop.md"]})
        + "\n"
        + json.dumps(
            {
                "id": "failover",
                "query": "promote a replica after the primary died",
                "relevant": ["platform/postgres-primary-failover.md"],
                "groups": ["dba"],
                "user": "dee",
            }
        )
        + "\n"
    )
    index = ["--index", str(sample_index_path)]
    code, _, err = run(capsys, "eval", str(queries), *index)
    assert code == 2 and len(err.splitlines()) == 1
    assert "'pods'" in err and "--group" in err and "--all-groups" in err and '"groups"' in err
    code, _, err = run(capsys, "eval", str(queries), *index, "--group", "sre", "--all-groups")
    assert code == 2 and "not both" in err

    code, out, err = run(capsys, "eval", str(queries), *index, "--all-groups", "--json", "--per-query")
    assert code == 0, err
    results = {r["id"]: r for r in json.loads(out)["results"]}
    assert results["pods"]["first_relevant"] == 1 and results["failover"]["first_relevant"] == 1
    # A line's own groups still win over --all-groups, and --group covers only lines without groups.
    code, out, _ = run(
        capsys, "eval", str(queries), *index, "--group", "finance-ops", "--json", "--per-query"
    )
    results = {r["id"]: r for r in json.loads(out)["results"]}
    assert results["pods"]["first_relevant"] is None and results["failover"]["first_relevant"] == 1


def test_eval_runs_each_line_as_its_own_user(capsys, tmp_path: Path, sample_index_path: Path) -> None:
    queries = tmp_path / "q.jsonl"
    queries.write_text(
        json.dumps({"id": "a", "query": "pods", "relevant": [], "groups": ["sre"], "user": "sam"}) + "\n"
    )
    log = tmp_path / "audit.log"
    index = RunbookIndex(sample_index_path, settings=Settings(audit_log=log, audit_key="k" * 32))
    index.evaluate(load_queries(queries))
    principals = [json.loads(line)["principal"] for line in log.read_text().splitlines()]
    assert principals == [{"id": "sam", "groups": ["sre"]}] * 2  # the ranking and the quoted passages
