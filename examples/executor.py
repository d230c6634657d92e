"""A minimal executor of runbook commands: read-only ones at once, others only with a grant.

    python examples/executor.py "kubectl -n payments get pods" [--timeout 60]
    python examples/executor.py "kubectl -n payments delete pod web-1" --grant rrg1... --index PATH
    RUNBOOK_RAG_TOKEN=... python examples/executor.py "..." --grant rrg1... --url https://runbooks

A command whose every part ``runbook_rag.commands.classify`` knows to be read-only runs
directly. Any other command needs a grant (an approval's result), redeemed for this exact
command immediately before it runs: through the library (``RunbookIndex.redeem``, with the
index's audit key in the environment) or, with ``--url``, through ``POST /v1/actions/redeem``
with the bearer token in ``RUNBOOK_RAG_TOKEN``. Any error is a no.

Nothing runs through a shell: the command is split with :func:`shlex.split` and started with
``shell=False``. A command that needs a shell to mean what it says (pipes, lists, redirections,
substitutions, variables, globs, ``~``, comments, environment assignments) is refused before its
grant is redeemed, so the grant is not used up. The command runs in a session of its own, is
killed with everything it started when the timeout passes, and its output is redacted with
``runbook_rag.redaction.redact`` before it is printed.

Exit status: the command's own; 2 when refused; 124 when the timeout killed it; 127 when its
program does not exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request

from runbook_rag.commands import classify
from runbook_rag.redaction import redact

REFUSED, TIMED_OUT, NOT_FOUND = 2, 124, 127
_CONTINUATION = re.compile(r"\\\r?\n")
# Characters a shell interprets outside quotes; inside double quotes it still expands $ and `.
_SHELL_CHARS = frozenset("|&;<>()$`*?[]{}~!\n\r")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


class Refused(Exception):
    """The executor will not run the command; the message says why."""


def argv_of(command: str) -> list[str]:
    """The program and arguments of ``command``, or :class:`Refused` if it needs a shell."""
    text = _CONTINUATION.sub(" ", command).strip()
    quote, word_start, i = "", True, 0
    while i < len(text):
        ch = text[i]
        if quote == "'":
            quote = "" if ch == "'" else quote
        elif quote == '"':
            if ch == "\\":
                i += 1  # an escaped character is literal
            elif ch in "$`":
                raise Refused(f"it needs a shell to expand {ch!r} inside double quotes")
            elif ch == '"':
                quote = ""
        elif ch == "\\":
            i += 1
        elif ch in "'\"":
            quote = ch
        elif ch in _SHELL_CHARS or (ch == "#" and word_start):
            raise Refused(f"it needs a shell to interpret {ch!r}")
        word_start = quote == "" and ch in " \t"
        i += 1
    try:
        argv = shlex.split(text)
    except ValueError as exc:  # an unclosed quote
        raise Refused(f"it cannot be split into arguments: {exc}") from None
    if not argv:
        raise Refused("it is empty")
    if _ASSIGNMENT.match(argv[0]):
        raise Refused("it needs a shell to set environment variables")
    return argv


def redeem_locally(index: str | None, grant: str, command: str, user: str) -> str:
    """The granted command, once ``grant`` is used up through the library."""
    from runbook_rag import Principal, RunbookIndex
    from runbook_rag.errors import RunbookRagError

    try:
        with RunbookIndex(index) as opened:
            return opened.redeem(grant, command, principal=Principal(user)).command
    except RunbookRagError as exc:
        raise Refused(f"the grant was not redeemed: {exc}") from None


def redeem_over_http(url: str, grant: str, command: str, timeout: float) -> str:
    """The granted command, once ``grant`` is used up through ``POST /v1/actions/redeem``."""
    token = os.environ.get("RUNBOOK_RAG_TOKEN", "")
    if not token:
        raise Refused("RUNBOOK_RAG_TOKEN must hold the executor's bearer token")
    request = urllib.request.Request(
        url.rstrip("/") + "/v1/actions/redeem",
        data=json.dumps({"grant": grant, "command": command}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            reason = f"HTTP {exc.code}"
        raise Refused(f"the grant was not redeemed: {reason}") from None
    except (OSError, ValueError) as exc:
        raise Refused(f"the grant was not redeemed: {exc}") from None
    if not isinstance(answer, dict) or answer.get("valid") is not True or not answer.get("command"):
        raise Refused("the grant was not redeemed: the service did not say it is valid")
    return str(answer["command"])


def run(argv: list[str], timeout: float) -> int:
    """Run ``argv`` without a shell, print its output redacted, return its exit status."""
    try:
        proc = subprocess.Popen(
            argv,
            shell=False,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: the timeout kills what it started too
        )
    except FileNotFoundError:
        print(f"executor: {argv[0]}: no such program", file=sys.stderr)
        return NOT_FOUND
    status: int | None = None
    try:
        out, err = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    sys.stdout.write(redact(out).text)
    sys.stderr.write(redact(err).text)
    if status is None:
        print(f"executor: killed after the {timeout:g} s timeout", file=sys.stderr)
        return TIMED_OUT
    return status if status >= 0 else 128 - status  # killed by a signal: 128 + its number


def execute(args: argparse.Namespace) -> int:
    """Classify, check, redeem when needed, run: the executor's whole decision."""
    verdict = classify(args.command)
    argv = argv_of(args.command)  # before redeeming: a refusal here leaves the grant unused
    if any(reason.startswith("shell.") for reason in verdict.reasons):
        raise Refused(f"it needs a shell ({', '.join(verdict.reasons)})")
    if verdict.risk != "read":
        if not args.grant:
            raise Refused(f"it is {verdict.risk} ({', '.join(verdict.reasons)}) and needs a grant")
        if args.url:
            granted = redeem_over_http(args.url, args.grant, args.command, args.timeout)
        else:
            granted = redeem_locally(args.index, args.grant, args.command, args.user)
        argv = argv_of(granted)  # run exactly the command the grant was for
    return run(argv, args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", help="one command, exactly as the runbook has it")
    parser.add_argument("--grant", help="the grant of an approved request for this command")
    parser.add_argument("--index", help="the index folder (library redemption; default as the CLI's)")
    parser.add_argument("--url", help="redeem through this runbook-rag service instead")
    parser.add_argument("--user", default="executor", help="who runs it, for the audit trail")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before it is killed")
    args = parser.parse_args(argv)
    try:
        return execute(args)
    except Refused as exc:
        print(f"executor: refused: {redact(args.command).text!r}: {exc}", file=sys.stderr)
        return REFUSED


if __name__ == "__main__":
    sys.exit(main())
