"""Every command, every option, bad values: one line on stderr and a documented exit code.

The commands are read from the click tree, so a new command or option is fuzzed as soon as it
exists (and a new command without valid arguments below fails the test, to be added).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from runbook_rag.cli import cli, main

from .test_cli import run

pytestmark = pytest.mark.slow

DOCUMENTED_EXIT_CODES = {0, 1, 2}
RESTART = "kubectl -n x rollout restart deploy/api"
ROOT_USER = os.geteuid() == 0
FRESH = itertools.count()


class WouldServe(Exception):
    """Raised instead of serving: ``serve`` accepted its arguments."""


def leaf_commands(
    group: click.Group, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny index built by the CLI, and the files each command needs to succeed."""
    tmp = tmp_path_factory.mktemp("paths")
    src = tmp / "src"
    src.mkdir()
    (src / "pods.md").write_text(
        "---\ntitle: Pods\naccess: [sre]\n---\n# Pods\n\nRestart the crashing pod.\n\n"
        "```bash\nkubectl -n x rollout restart deploy/api\n```\n"
    )
    index = tmp / "index"
    main(["build", str(src), "--index", str(index), "--json"])
    main(["search", "pods", "--user", "u", "--group", "sre", "--index", str(index)])  # an audit log
    # Requests for the actions commands: one to approve, one to deny, one granted to redeem.
    from runbook_rag import Principal, RunbookIndex

    with RunbookIndex(index) as opened:
        proposer, approver = Principal("v", frozenset({"sre"})), Principal("w", frozenset({"sre"}))
        ids = [opened.propose("pods.md", RESTART, principal=proposer).id for _ in range(3)]
        grant = opened.approve(ids[2], principal=approver).grant
    (tmp / "request-ids").write_text(f"{ids[0]}\n{ids[1]}\n{grant}\n")
    queries = tmp / "queries.jsonl"
    queries.write_text(
        json.dumps({"id": "q", "query": "pod", "relevant": ["pods.md"], "groups": ["sre"]}) + "\n"
    )
    access_map = tmp / "map.yaml"
    access_map.write_text('- pattern: "**"\n  groups: [sre]\n')
    mcp_tokens = tmp / "mcp-tokens.json"
    mcp_tokens.write_text(
        json.dumps([{"token_sha256": "b" * 64, "user": "agent", "groups": ["sre"], "endpoints": ["mcp"]}])
    )
    tokens = tmp / "tokens.json"
    tokens.write_text(json.dumps([{"token_sha256": "a" * 64, "user": "bot", "groups": ["sre"]}]))
    # Bad values.
    regular = tmp / "regular-file"
    regular.write_text("not a folder, not an index, not a query file\n")
    foreign = tmp / "another-tools-folder"
    foreign.mkdir()
    (foreign / "chroma.sqlite3").write_bytes(b"SQLite format 3\x00")
    (foreign / "notes.txt").write_text("mine\n")
    unreadable = tmp / "unreadable"
    unreadable.mkdir()
    (unreadable / "x").write_text("x")
    unreadable.chmod(0)
    return {
        "tmp": tmp,
        "src": src,
        "index": index,
        "queries": queries,
        "map": access_map,
        "tokens": tokens,
        "mcp_tokens": mcp_tokens,
        "regular": regular,
        "foreign": foreign,
        "unreadable": unreadable,
    }


def valid_arguments(place: dict[str, Path]) -> dict[tuple[str, ...], dict[str, str | None]]:
    """Arguments with which each command succeeds (``None``: a flag that is set)."""
    index = str(place["index"])
    principal = {"user": "u", "groups": "sre", "index_path": index}
    approve_id, deny_id, grant = (place["tmp"] / "request-ids").read_text().split()
    return {
        ("mcp",): {"index_path": index, "over_http": None, "tokens_file": str(place["mcp_tokens"])},
        ("classify",): {"commands": "kubectl get pods", "language": "shell", "as_json": None},
        ("actions", "propose"): {
            "source": "pods.md",
            "command": RESTART,
            "reason": "crash loop",
            **principal,
        },
        ("actions", "approve"): {"request_id": approve_id, **principal},
        ("actions", "deny"): {"request_id": deny_id, "reason": "not now", **principal},
        ("actions", "redeem"): {"grant": grant, "command": RESTART, "user": "runner", "index_path": index},
        ("actions", "list"): {"status": "pending", **principal},
        ("build",): {
            "sources": str(place["src"]),
            "index_path": str(place["tmp"] / "new-index"),
            "access_map": str(place["map"]),
            "dry_run": None,
            "as_json": None,
        },
        ("search",): {"query": "crashing pod", **principal, "k": "3", "mode": "lexical", "per_document": "1"},
        ("ask",): {"question": "crashing pod", **principal},
        ("eval",): {"queries": str(place["queries"]), "index_path": index, "k": "5"},
        ("index", "info"): {"index_path": index},
        ("index", "verify"): {"index_path": index},
        ("serve",): {
            "index_path": index,
            "tokens_file": str(place["tokens"]),
            "audit_log": str(place["tmp"] / "serve-audit.log"),
        },
        ("audit", "verify"): {
            "log_file": str(place["index"] / "audit.log"),
            "index_path": str(place["index"]),
        },
    }


def bad_values(param: click.Parameter, place: dict[str, Path]) -> list[str]:
    kind = param.type
    if isinstance(kind, click.Path):
        tmp = place["tmp"]
        fresh = f"{next(FRESH)}"  # an accepted output path must not make the next case's path exist
        values = [
            "",
            str(place["regular"]),
            str(place["regular"] / "below-a-file"),
            str(tmp / f"missing-{fresh}" / "parent" / "x"),
            str(tmp / f"does-not-exist-{fresh}"),
            str(tmp),  # a folder where a file may be expected
            str(place["foreign"]),
            str(tmp / ("long" * 1200)),
            os.fsdecode(str(tmp).encode() + f"/odd-{fresh}-".encode() + b"\xff\xfe"),
            str(tmp / f"line\nbreak-{fresh}"),
        ]
        if not ROOT_USER:  # root reads every folder: chmod 000 proves nothing then
            values.append(str(place["unreadable"]))
        return values
    if isinstance(kind, click.IntRange | click.FloatRange) or kind in (click.INT, click.FLOAT):
        return ["-1", "0", str(10**30), "nan", "many"]
    if isinstance(kind, click.Choice):
        return ["no-such-choice", ""]
    if kind == click.BOOL or getattr(param, "is_flag", False):
        return []
    return ["", "x" * 100_000, "caf\udce9", "line\nbreak"]


def arguments(command: click.Command, values: dict[str, str | None]) -> list[str]:
    args: list[str] = []
    for param in command.params:
        if param.name not in values:
            continue
        value = values[param.name]
        if isinstance(param, click.Argument):
            args.append(str(value))
        elif value is None:
            args.append(param.opts[0])
        else:
            args += [param.opts[0], value]
    return args


def cases(place: dict[str, Path]) -> Iterator[tuple[list[str], click.Parameter, str]]:
    valid = valid_arguments(place)
    for path, command in leaf_commands(cli):
        assert path in valid, f"give valid arguments for the new command {' '.join(path)!r} above"
        for param in command.params:
            if param.name in ("help", "debug"):
                continue
            for bad in bad_values(param, place):
                values = {**valid[path], param.name: bad}
                yield [*path, *arguments(command, values)], param, bad


def test_every_command_gives_one_line_and_a_documented_code_for_bad_values(
    capsys, monkeypatch, place: dict[str, Path]
) -> None:
    import uvicorn

    def would_serve(self: object) -> None:
        raise WouldServe

    monkeypatch.setattr(uvicorn.Server, "run", would_serve)
    valid = valid_arguments(place)
    for path, command in leaf_commands(cli):
        # The valid arguments really are valid: the bad value is what the command refuses.
        args = [*path, *arguments(command, valid[path])]
        try:
            code, _, err = run(capsys, *args)
        except WouldServe:
            code, err = 0, ""
        assert code == 0, (args, err)
    problems = []
    never_valid = {"", str(place["tmp"] / ("long" * 1200))}
    for args, param, bad in cases(place):
        try:
            code, out, err = run(capsys, *args)
        except WouldServe:
            continue  # accepted: serve would have started
        lines = err.splitlines()
        one_error = len(lines) == 1 and lines[0].startswith("runbook-rag: error: ")
        # A verification that fails (audit verify given another file or key) says why on stdout.
        verdict = args[1] == "verify" and code == 1 and not err and out.strip()
        accepted_nonsense = code == 0 and bad in never_valid and isinstance(param.type, click.Path)
        if (
            "Traceback" in err
            or code not in DOCUMENTED_EXIT_CODES
            or (code and not (one_error or verdict))
            or accepted_nonsense
        ):
            problems.append((" ".join(args[:2]), param.name, bad[:60], code, err[-300:]))
    assert not problems, "\n".join(map(repr, problems))
