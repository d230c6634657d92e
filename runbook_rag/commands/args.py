"""Reading a tool's arguments: flags, option values, positional words and verb tables."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .risks import Classification, Risk, _c, _Stdin

Tool = Callable[[list[str], "_Stdin | None", int], Classification]


def _flag(args: Sequence[str], *names: str) -> bool:
    """Whether any of ``names`` is given (``--name=value`` and bundled short flags included)."""
    for arg in args:
        if arg == "--":
            return False
        head = arg.split("=", 1)[0]
        if head in names:
            return True
        if re.fullmatch(r"-[A-Za-z]{2,}", arg) and any(
            len(n) == 2 and n[0] == "-" and n[1] in arg[1:] for n in names
        ):
            return True
    return False


def _value(args: Sequence[str], *names: str) -> str | None:
    """The value of the first of ``names`` given, as ``-x V``, ``--x=V`` or ``-xV``."""
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
            if len(name) == 2 and arg.startswith(name) and not arg.startswith("--") and len(arg) > 2:
                return arg[2:]
    return None


def _positionals(args: Sequence[str], with_value: frozenset[str] = frozenset()) -> list[str]:
    found: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        if arg.startswith("-") and len(arg) > 1:
            i += 2 if arg in with_value else 1
            continue
        found.append(arg)
        i += 1
    return found


def _verbs(tool: str, verb: str, table: dict[str, Risk]) -> Classification:
    risk = table.get(verb)
    if risk is None:
        return _c("unknown", f"{tool}.unknown-verb")
    return _c(risk, f"{tool}.{verb}")


def _table(read: str = "", change: str = "", destructive: str = "") -> dict[str, Risk]:
    table: dict[str, Risk] = {}
    for risk, words in (("read", read), ("change", change), ("destructive", destructive)):
        for word in words.split():
            table[word] = risk  # type: ignore[assignment]
    return table


def _simple_verb(tool: str, table: dict[str, Risk], values: frozenset[str] = frozenset()) -> Tool:
    def classify_tool(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
        words = _positionals(args, values)
        return _verbs(tool, words[0] if words else "", table)

    return classify_tool


def _uniform(risk: Risk, reason: str) -> Tool:
    return lambda args, stdin, depth: _c(risk, reason)
