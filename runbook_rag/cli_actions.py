"""``runbook-rag classify`` and ``runbook-rag actions``: the CLI of guarded actions.

A thin shell over :mod:`runbook_rag.commands` and :class:`~runbook_rag.index.RunbookIndex`'s
propose, approve, deny and redeem. Refusals exit 2 (as the library's ``ActionRefused``); a
grant that cannot be redeemed exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli import TEXT, _emit, _index_option, _json_option, _principal_options

if TYPE_CHECKING:
    from .index import RunbookIndex
    from .records import Principal

MAX_SCRIPT_CHARS = 1_000_000


def _principal(user: str, groups: Sequence[str]) -> Principal:
    from .records import Principal

    return Principal(user, frozenset(groups))


def _open(index_path: Path | None) -> RunbookIndex:
    from .index import RunbookIndex

    return RunbookIndex(index_path, interface="cli")


@click.command("classify")
@click.argument("commands", nargs=-1, type=TEXT)
@click.option(
    "--language",
    type=click.Choice(["shell", "sql"]),
    default="shell",
    show_default=True,
    help="How to read the commands.",
)
@_json_option
def classify_command(commands: Sequence[str], language: str, as_json: bool) -> None:
    """Classify COMMANDs as read, change, destructive or unknown, with the rules that decided it.

    With `-`, the commands of a script on standard input are classified one by one.
    """
    from .commands import classify, extract_commands

    texts: list[str] = []
    for command in commands:
        if command == "-":
            script = sys.stdin.read(MAX_SCRIPT_CHARS + 1)
            if len(script) > MAX_SCRIPT_CHARS:
                raise click.BadParameter(f"the script is longer than {MAX_SCRIPT_CHARS:,} characters")
            fence = "```"
            while fence in script:
                fence += "`"
            block = f"{fence}{'bash' if language == 'shell' else 'sql'}\n{script}\n{fence}\n"
            texts.extend(c.text for c in extract_commands(block))
        else:
            texts.append(command)
    if not texts:
        raise click.UsageError("give at least one COMMAND, or - to read a script from standard input")
    results = []
    for text in texts:
        verdict = classify(text, language)
        results.append({"command": text, "risk": verdict.risk, "reasons": list(verdict.reasons)})
    if as_json:
        _emit({"commands": results})
        return
    for item in results:
        command = " ".join(str(item["command"]).split())
        click.echo(f"{item['risk']:<12} {command}  ({', '.join(item['reasons'])})")


@click.group("actions")
def actions() -> None:
    """Propose a runbook's command, approve or deny it, and redeem its grant (human in the loop)."""


@actions.command("propose")
@click.option("--source", type=TEXT, required=True, help="The runbook (its source path, as hits name it).")
@click.option("--command", "command", type=TEXT, required=True, help="The command, as the runbook has it.")
@_principal_options
@click.option("--reason", type=TEXT, help="Why it should run (kept with the request).")
@_index_option
@_json_option
def propose(
    source: str,
    command: str,
    user: str,
    groups: Sequence[str],
    reason: str | None,
    index_path: Path | None,
    as_json: bool,
) -> None:
    """Ask for a command of a runbook you may read to be run."""
    request = _open(index_path).propose(source, command, principal=_principal(user, groups), reason=reason)
    if as_json:
        keys = ("id", "risk", "reasons", "status", "approvals_needed", "expires_at")
        _emit({k: v for k, v in request.to_dict().items() if k in keys})
        return
    click.echo(f"{request.id}  {request.status}  risk {request.risk} ({', '.join(request.reasons)})")
    if request.approvals_needed:
        click.echo(f"needs {request.approvals_needed} approval(s) by another person")


@actions.command("approve")
@click.argument("request_id", type=TEXT)
@_principal_options
@_index_option
@_json_option
def approve(
    request_id: str, user: str, groups: Sequence[str], index_path: Path | None, as_json: bool
) -> None:
    """Approve a pending request; the last approval needed prints the grant."""
    decision = _open(index_path).approve(request_id, principal=_principal(user, groups))
    if as_json:
        _emit(decision.to_dict())
        return
    request = decision.request
    click.echo(
        f"{request.id}  {request.status}  ({len(request.approved_by)}/{request.approvals_needed} approvals)"
    )
    if decision.grant:
        click.echo(f"grant (one use, until {decision.to_dict()['expires_at']}):")
        click.echo(decision.grant)


@actions.command("deny")
@click.argument("request_id", type=TEXT)
@_principal_options
@click.option("--reason", type=TEXT, help="Why (kept in the audit trail).")
@_index_option
@_json_option
def deny(
    request_id: str,
    user: str,
    groups: Sequence[str],
    reason: str | None,
    index_path: Path | None,
    as_json: bool,
) -> None:
    """Deny a pending request, or revoke its grant before it is redeemed."""
    decision = _open(index_path).deny(request_id, principal=_principal(user, groups), reason=reason)
    if as_json:
        _emit(decision.to_dict())
        return
    click.echo(f"{decision.request.id}  {decision.request.status}")


@actions.command("redeem")
@click.argument("grant", type=TEXT)
@click.option("--command", "command", type=TEXT, required=True, help="The exact command about to run.")
@click.option("--user", type=TEXT, help="The executor's id, for the audit trail.")
@_index_option
@_json_option
def redeem(grant: str, command: str, user: str | None, index_path: Path | None, as_json: bool) -> None:
    """Use a grant up for COMMAND: exit 0 when it is valid (once), 1 saying why not.

    GRANT `-` reads the grant from standard input (so it is not seen in the process list).
    """
    from .errors import GrantInvalid

    if grant == "-":
        grant = sys.stdin.readline(4096).strip()
    executor = _principal(user, ()) if user else None
    try:
        redemption = _open(index_path).redeem(grant, command, principal=executor)
    except GrantInvalid as exc:
        if not as_json:
            raise
        _emit({"valid": False, "reason": exc.reason})
        sys.exit(exc.exit_code)
    if as_json:
        _emit(redemption.to_dict())
        return
    click.echo(f"valid: run {redemption.command!r} (request {redemption.request_id}, risk {redemption.risk})")


@actions.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "not_required", "approved", "denied", "redeemed", "expired"])
)
@click.option("--user", type=TEXT, help="List only what this caller may read (with --group).")
@click.option("--group", "groups", type=TEXT, multiple=True, help="A group of that caller (repeatable).")
@_index_option
@_json_option
def list_requests(
    status: str | None, user: str | None, groups: Sequence[str], index_path: Path | None, as_json: bool
) -> None:
    """The requests, newest first; with --user/--group only those of runbooks that caller may
    read, else every one (the operator's view)."""
    if groups and not user:
        raise click.UsageError("--group needs --user")
    principal = _principal(user, groups) if user else None
    requests = _open(index_path).action_requests(principal=principal, status=status)
    if as_json:
        _emit({"requests": [r.to_dict() for r in requests]})
        return
    if not requests:
        click.echo("no requests")
    for r in requests:
        command = " ".join(r.command.split())
        click.echo(f"{r.id}  {r.status:<12} {r.risk:<11} {r.requester:<16} {r.source}: {command[:80]}")
