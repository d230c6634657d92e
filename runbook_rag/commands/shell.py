"""Classifying shell: every simple command of the parse tree, with what it reads and writes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .risks import Classification, _c, _combine, _Stdin
from .sql import classify_sql
from .syntax import (
    _EXPANSIONS,
    _GROUPS,
    _REDIRECTS,
    _STATEMENTS,
    _SUBSTITUTIONS,
    _heredoc_text,
    _parse,
    _scan,
    _src,
    _text,
)
from .wrappers import _argv

if TYPE_CHECKING:
    from tree_sitter import Node


def classify(command_text: str, language: str = "shell") -> Classification:
    """The risk of ``command_text`` (``shell`` or ``sql``) and the rule ids that decided it."""
    try:
        if language == "sql":
            return classify_sql(command_text)
        return _classify_shell(command_text, depth=0)
    except (RecursionError, AttributeError, TypeError, ValueError, IndexError, KeyError):
        # a parse tree of a shape the rules do not expect is unknown, never read
        return _c("unknown", "classifier-error")


def _classify_shell(text: str, *, depth: int) -> Classification:
    if depth > 4:
        return _c("unknown", "shell.too-deep")
    if not text.strip():
        return _c("read", "shell.empty")
    root = _parse(text)
    scan = _scan(root)
    if scan.error:  # tree-sitter reads past errors; any error is unknown, never read
        return _c("unknown", "parse-error")
    walk = _Walk(depth)
    parts = [_c("unknown", "shell.substitution")] if scan.substituted else []
    parts.append(_node(root, walk, None))
    if not scan.commands <= walk.seen:
        # a command in a shape the walk does not know is never passed over
        parts.append(_c("unknown", "shell.unhandled-syntax"))
    return _combine(parts)


@dataclass(slots=True)
class _Walk:
    """The ``-c`` nesting depth, and the simple commands classified so far."""

    depth: int
    seen: set[int] = field(default_factory=set)


def _node(node: Node, walk: _Walk, stdin: _Stdin | None) -> Classification:
    kind = node.type
    if kind == "command":
        return _simple(node, walk, stdin)
    if kind == "pipeline":
        return _pipeline(node, walk, stdin)
    if kind == "redirected_statement":
        return _redirected(node, walk, stdin)
    if kind in ("declaration_command", "unset_command"):
        walk.seen.add(node.id)
        keyword = _src(node.children[0])
        return _argv([keyword, *(_text(c) for c in node.named_children)], walk.depth, stdin)
    if kind == "test_command":
        return _c("read", "shell.test")  # [[ ]] and [ ]: substitutions inside are found by _scan
    if kind == "variable_assignment":
        return _c("read", "shell.assignment")
    if kind in _GROUPS:
        inner = [_node(child, walk, stdin) for child in node.named_children if child.type in _STATEMENTS]
        if not inner and node.children and node.children[0].type == "((":
            return _c("read", "shell.arithmetic")
        return _combine(inner)
    return _c("unknown", f"shell.{kind}")


def _pipeline(node: Node, walk: _Walk, stdin: _Stdin | None, last: _Stdin | None = None) -> Classification:
    """Each stage reads what the one before writes; ``last`` is a redirection of the last stage."""
    stages = [child for child in node.named_children if child.type != "comment"]
    results = []
    feed = stdin
    for i, stage in enumerate(stages):
        if last is not None and i == len(stages) - 1:
            feed = last
        results.append(_node(stage, walk, feed))
        feed = _Stdin(_literal_output(stage))
    return _combine(results)


def _first_reads(node: Node, walk: _Walk, stdin: _Stdin | None) -> Classification:
    """Classify ``node`` with ``stdin`` going to its first command only."""
    if node.type == "list":
        statements = [child for child in node.named_children if child.type in _STATEMENTS]
        return _combine(
            [
                _first_reads(s, walk, stdin) if i == 0 else _node(s, walk, None)
                for i, s in enumerate(statements)
            ]
        )
    return _node(node, walk, stdin)


def _last_reads(node: Node, walk: _Walk, stdin: _Stdin | None, last: _Stdin) -> Classification:
    """Classify ``node`` with ``last`` going to its last command (where bash sends a redirection)."""
    if node.type == "pipeline":
        return _pipeline(node, walk, stdin, last)
    if node.type == "list":
        statements = [child for child in node.named_children if child.type in _STATEMENTS]
        return _combine(
            [
                _last_reads(s, walk, stdin, last) if i == len(statements) - 1 else _node(s, walk, stdin)
                for i, s in enumerate(statements)
            ]
        )
    return _node(node, walk, last)


def _redirected(node: Node, walk: _Walk, stdin: _Stdin | None) -> Classification:
    """A statement with redirections; tree-sitter hangs what follows a heredoc's start on it."""
    body = node.child_by_field_name("body")
    results: list[Classification] = []
    body_stdin: _Stdin | None = None
    heredocs: list[Node] = []
    for child in node.named_children:
        if body is not None and child.id == body.id:
            continue
        if child.type in _REDIRECTS:
            result, redirected = _redirect(child)
            results.append(result)
            body_stdin = redirected or body_stdin
            if child.type == "heredoc_redirect":
                heredocs.append(child)
        elif child.type != "comment":
            results.append(_node(child, walk, None))
    if body is not None:
        if body_stdin is None:
            results.append(_node(body, walk, stdin))
        else:
            results.append(_last_reads(body, walk, stdin, body_stdin))
    for heredoc in heredocs:
        results.extend(_after_heredoc(heredoc, walk, _Stdin(_literal_output(node))))
    return _combine(results)


def _after_heredoc(heredoc: Node, walk: _Walk, output: _Stdin) -> list[Classification]:
    """What follows ``<<EOF`` on its line: more redirections, a pipe on, ``&&`` or ``||``."""
    results: list[Classification] = []
    for child in heredoc.named_children:
        kind = child.type
        if kind in ("heredoc_start", "heredoc_body", "heredoc_end", "comment"):
            continue
        if kind in _REDIRECTS:
            results.append(_redirect(child)[0])
        elif kind == "pipeline" and child.children and child.children[0].type in ("|", "|&"):
            feed: _Stdin | None = output
            for stage in child.named_children:
                results.append(_first_reads(stage, walk, feed))
                feed = _Stdin(_literal_output(stage))
        else:
            results.append(_node(child, walk, None))
    return results


def _literal_output(node: Node) -> str | None:
    """What ``echo "..."`` or ``cat <<EOF`` writes, when it is literal text."""
    if node.type == "redirected_statement":
        body = node.child_by_field_name("body")
        if body is not None and body.type == "command" and _command_words(body) == ["cat"]:
            for child in node.named_children:
                if child.type == "heredoc_redirect":
                    return _heredoc_text(child)
        return None
    if node.type != "command" or _dynamic(node):
        return None
    texts = _command_words(node)
    if texts[:1] in (["echo"], ["printf"]):
        return " ".join(w for w in texts[1:] if not w.startswith("-"))
    return None


def _command_words(node: Node) -> list[str]:
    return [
        _text(c) for c in node.named_children if c.type not in _REDIRECTS and c.type != "variable_assignment"
    ]


def _dynamic(node: Node) -> bool:
    return node.type in _SUBSTITUTIONS or any(_dynamic(child) for child in node.children)


def _expanded(node: Node) -> bool:
    return node.type in _EXPANSIONS or any(_expanded(child) for child in node.children)


_WRITES = frozenset({">", ">>", ">|", "&>", "&>>", ">&", "<>"})


def _redirect(node: Node) -> tuple[Classification, _Stdin | None]:
    """A redirection's risk, and what it gives the command on standard input if anything."""
    if node.type == "heredoc_redirect":
        return Classification("read", ()), _Stdin(_heredoc_text(node))
    if node.type == "herestring_redirect":
        words = [c for c in node.named_children if c.type not in _REDIRECTS]
        return Classification("read", ()), _Stdin(" ".join(_text(w) for w in words))
    operator = next((_src(c) for c in node.children if not c.is_named), "")
    targets = [_text(c) for c in node.children_by_field_name("destination")]
    target = " ".join(targets)
    if operator in ("<", "<&", "<&-", ">&-"):
        return Classification("read", ()), (_Stdin(None) if operator == "<" else None)
    if operator == ">&" and re.fullmatch(r"\d+-?|-", target):
        return Classification("read", ()), None  # 2>&1, >&2-, >&-: a descriptor, not a file
    if target in ("/dev/null", "/dev/stdout", "/dev/stderr"):
        return Classification("read", ()), None
    if operator in _WRITES:
        return _c("change", "shell.redirect-write"), None
    return Classification("read", ()), None


def _simple(node: Node, walk: _Walk, stdin: _Stdin | None) -> Classification:
    walk.seen.add(node.id)
    results: list[Classification] = []
    words: list[str] = []
    for child in node.named_children:
        kind = child.type
        if kind in _REDIRECTS:
            result, redirected = _redirect(child)
            results.append(result)
            stdin = redirected or stdin
        elif kind == "command_name":
            if _expanded(child):
                results.append(_c("unknown", "shell.dynamic-command"))
            words.append(_text(child))
        elif kind not in ("variable_assignment", "comment"):
            words.append(_text(child))
    if words:
        results.append(_argv(words, walk.depth, stdin))
    elif not results:
        results.append(_c("read", "shell.assignment"))
    return _combine(results)
