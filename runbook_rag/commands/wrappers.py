"""A command by its words: wrappers (sudo, env, timeout, xargs, ...), shells and interpreters, then the
tools."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from .args import _value
from .risks import Classification, _c, _Stdin
from .tools import CHANGE, DESTRUCTIVE, READ_ONLY, TOOLS


def _tool_name(word: str) -> str:
    return word.rsplit("/", 1)[-1]


def _argv(words: list[str], depth: int, stdin: _Stdin | None) -> Classification:
    """Classify one command given as its words after quote removal."""
    name = _tool_name(words[0])
    args = words[1:]
    if name in WRAPPERS:
        return WRAPPERS[name](args, depth, stdin)
    if name in SHELLS:
        return _shell_interpreter(name, args, depth, stdin)
    if name in INTERPRETERS:
        return _c("unknown", f"interpreter.{name}")
    if name in TOOLS:
        return TOOLS[name](args, stdin, depth)
    if name in READ_ONLY:
        return _c("read", f"read.{name}")
    if name in CHANGE:
        return _c("change", f"change.{name}")
    if name in DESTRUCTIVE:
        return _c("destructive", f"destructive.{name}")
    return _c("unknown", f"unknown-tool:{name}")


def _inner(args: list[str], depth: int, stdin: _Stdin | None, reason: str) -> Classification:
    if not args:
        return _c("unknown", f"{reason}.no-command")
    inner = _argv(args, depth + 1, stdin)
    return Classification(inner.risk, (reason, *inner.reasons))


def _skip_options(args: list[str], with_value: frozenset[str]) -> list[str]:
    """``args`` from the first word that is neither an option nor an option's value."""
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "--":
        flag = args[i].split("=", 1)[0]
        i += 2 if flag in with_value and "=" not in args[i] else 1
    if i < len(args) and args[i] == "--":
        i += 1
    return args[i:]


def _wrapper(with_value: Sequence[str], leading_values: int = 0) -> Callable[..., Classification]:
    values = frozenset(with_value)

    def wrap(args: list[str], depth: int, stdin: _Stdin | None, *, name: str = "") -> Classification:
        rest = _skip_options(args, values)[leading_values:]
        return _inner(rest, depth, stdin, f"wrapper.{name}")

    return wrap


def _named(
    name: str, fn: Callable[..., Classification]
) -> Callable[[list[str], int, _Stdin | None], Classification]:
    return lambda args, depth, stdin: fn(args, depth, stdin, name=name)


def _env(args: list[str], depth: int, stdin: _Stdin | None) -> Classification:
    from .shell import _classify_shell  # the shell walk classifies each command through this module

    split = _value(args, "-S", "--split-string")
    if split is not None:
        inner = _classify_shell(split, depth=depth + 1)
        return Classification(inner.risk, ("wrapper.env", *inner.reasons))
    rest = _skip_options(args, frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}))
    while rest and re.match(r"^\w+=", rest[0]):
        rest = rest[1:]
    if not rest:
        return _c("read", "read.env")
    return _inner(rest, depth, stdin, "wrapper.env")


def _sudo(args: list[str], depth: int, stdin: _Stdin | None) -> Classification:
    if any(a in ("-i", "-s", "--login", "--shell") for a in args) and not _skip_options(
        args, frozenset({"-u", "-g", "-U", "-C", "-h", "-p", "-r", "-t", "-D"})
    ):
        return _c("unknown", "shell.interactive")
    rest = _skip_options(args, frozenset({"-u", "-g", "-U", "-C", "-h", "-p", "-r", "-t", "-D", "--user"}))
    while rest and re.match(r"^\w+=", rest[0]):
        rest = rest[1:]
    return _inner(rest, depth, stdin, "wrapper.sudo")


def _watch(args: list[str], depth: int, stdin: _Stdin | None) -> Classification:
    from .shell import _classify_shell  # the shell walk classifies each command through this module

    rest = _skip_options(args, frozenset({"-n", "--interval", "-q", "--equexit"}))
    if not rest:
        return _c("unknown", "wrapper.watch.no-command")
    # watch hands its arguments, joined by spaces, to ``sh -c``
    inner = _classify_shell(" ".join(rest), depth=depth + 1)
    return Classification(inner.risk, ("wrapper.watch", *inner.reasons))


def _xargs(args: list[str], depth: int, stdin: _Stdin | None) -> Classification:
    rest = _skip_options(
        args, frozenset({"-I", "-n", "-P", "-L", "-d", "-s", "-E", "-a", "--max-args", "--delimiter"})
    )
    if not rest:
        return _c("read", "read.xargs")
    return _inner(rest, depth, None, "wrapper.xargs")


def _dynamic_wrapper(reason: str) -> Callable[[list[str], int, _Stdin | None], Classification]:
    return lambda args, depth, stdin: _c("unknown", reason)


def _command_builtin(args: list[str], depth: int, stdin: _Stdin | None) -> Classification:
    if args and args[0] in ("-v", "-V"):
        return _c("read", "read.command-v")
    return _inner(_skip_options(args, frozenset()), depth, stdin, "wrapper.command")


WRAPPERS: dict[str, Callable[[list[str], int, _Stdin | None], Classification]] = {
    "sudo": _sudo,
    "doas": _sudo,
    "env": _env,
    "timeout": _named("timeout", _wrapper(["-s", "--signal", "-k", "--kill-after"], leading_values=1)),
    "nice": _named("nice", _wrapper(["-n", "--adjustment"])),
    "ionice": _named("ionice", _wrapper(["-c", "-n", "-p", "--class", "--classdata"])),
    "nohup": _named("nohup", _wrapper([])),
    "time": _named("time", _wrapper(["-f", "-o", "--format", "--output"])),
    "stdbuf": _named("stdbuf", _wrapper(["-i", "-o", "-e"])),
    "exec": _named("exec", _wrapper(["-a"])),
    "builtin": _named("builtin", _wrapper([])),
    "busybox": _named("busybox", _wrapper([])),
    "command": _command_builtin,
    "watch": _watch,
    "xargs": _xargs,
    "eval": _dynamic_wrapper("shell.eval"),
    "source": _dynamic_wrapper("shell.source"),
    ".": _dynamic_wrapper("shell.source"),
}

SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "fish"})
INTERPRETERS = frozenset({"python", "python3", "python2", "perl", "ruby", "node", "php", "lua", "awk-f"})


def _shell_interpreter(name: str, args: list[str], depth: int, stdin: _Stdin | None) -> Classification:
    from .shell import _classify_shell  # the shell walk classifies each command through this module

    for i, arg in enumerate(args):
        if re.fullmatch(r"-[a-z]*c[a-z]*", arg):
            if i + 1 >= len(args):
                return _c("unknown", "wrapper.bash-c.no-script")
            inner = _classify_shell(args[i + 1], depth=depth + 1)
            return Classification(inner.risk, ("wrapper.bash-c", *inner.reasons))
        if not arg.startswith("-"):
            return _c("unknown", "interpreter.script")
    if stdin is not None:
        if stdin.text is not None:
            inner = _classify_shell(stdin.text, depth=depth + 1)
            return Classification(inner.risk, ("wrapper.shell-stdin", *inner.reasons))
        return _c("unknown", "shell.pipe-to-interpreter")
    return _c("unknown", "shell.interactive")


KNOWN_TOOLS = frozenset(TOOLS) | READ_ONLY | CHANGE | DESTRUCTIVE | frozenset(WRAPPERS) | SHELLS
