"""Shell text as tree-sitter-bash parses it, and each word as bash passes it after quote removal."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tree_sitter import Node, Parser

_PLACEHOLDER = re.compile(r"(?<![<\w])<([A-Za-z][\w.:/|-]*(?: [a-z][\w-]*){0,3})>(?![>\w])")


def _neutralise(text: str) -> str:
    """Placeholders like ``<pod-name>`` become plain words, not redirections."""
    return _PLACEHOLDER.sub(lambda m: "PLACEHOLDER_" + re.sub(r"\W", "_", m.group(1)), text)


@functools.cache
def _parser() -> Parser:
    import tree_sitter_bash
    from tree_sitter import Language as Grammar
    from tree_sitter import Parser

    return Parser(Grammar(tree_sitter_bash.language()))


def _parse(text: str) -> Node:
    return _parser().parse(_neutralise(text).encode("utf-8")).root_node


@dataclass(frozen=True, slots=True)
class _Scan:
    """What a whole parse tree holds, found in one pass."""

    error: bool  # an ERROR or MISSING node: tree-sitter recovered from text it could not read
    substituted: bool  # a command or process substitution anywhere, in any word or heredoc
    commands: frozenset[int]  # every simple command outside substitutions, by node id


def _scan(root: Node) -> _Scan:
    error = root.has_error
    substituted = False
    commands: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, inside = stack.pop()
        if node.is_missing or node.is_error:
            error = True
        if node.type in _SUBSTITUTIONS or (node.type == "heredoc_redirect" and _substitutes(node)):
            substituted = inside = True
        elif node.type in _SIMPLE_COMMANDS and not inside:
            commands.add(node.id)
        stack.extend((child, inside) for child in node.children)
    return _Scan(error, substituted, frozenset(commands))


def _substitutes(heredoc: Node) -> bool:
    """Whether an unquoted heredoc runs a substitution; tree-sitter leaves backquotes in it as text."""
    start = next((c for c in heredoc.children if c.type == "heredoc_start"), None)
    if start is None or re.search(r"[\\'\"]", _src(start)):
        return False  # <<'EOF', <<"EOF" and <<\EOF: the body is literal text
    return bool(re.search(r"`|\$\(", _heredoc_text(heredoc)))


_SUBSTITUTIONS = frozenset({"command_substitution", "process_substitution"})
_EXPANSIONS = _SUBSTITUTIONS | {"simple_expansion", "expansion", "arithmetic_expansion"}
_SIMPLE_COMMANDS = frozenset({"command", "declaration_command", "unset_command"})
_REDIRECTS = frozenset({"file_redirect", "heredoc_redirect", "herestring_redirect"})
_GROUPS = frozenset(
    {
        "program",
        "list",
        "compound_statement",
        "subshell",
        "do_group",
        "if_statement",
        "elif_clause",
        "else_clause",
        "for_statement",
        "c_style_for_statement",
        "while_statement",
        "case_statement",
        "case_item",
        "function_definition",
        "negated_command",
        "variable_assignments",
    }
)
_STATEMENTS = (
    _GROUPS | _SIMPLE_COMMANDS | {"pipeline", "redirected_statement", "test_command", "variable_assignment"}
)


def _heredoc_text(heredoc: Node) -> str:
    body = next((c for c in heredoc.named_children if c.type == "heredoc_body"), None)
    return _src(body) if body is not None else ""


def _parses(text: str) -> bool:
    return not _scan(_parse(text)).error


# Words after quote removal ----------------------------------------------------------------------


def _src(node: Node) -> str:
    return (node.text or b"").decode("utf-8", "replace")


def _text(node: Node) -> str:
    """The word bash passes to the command: quotes removed, escapes resolved, parts joined.

    Parameter and substitution parts are kept as written; their values are not known here.
    """
    kind = node.type
    if kind == "word":
        return re.sub(r"\\(.)", lambda m: "" if m.group(1) == "\n" else m.group(1), _src(node), flags=re.S)
    if kind == "raw_string":
        return _src(node)[1:-1]
    if kind == "ansi_c_string":
        return _ANSI_ESCAPE.sub(_ansi_escape, _src(node)[2:-1])
    if kind in ("string", "concatenation"):
        return _joined(node)
    if kind in ("translated_string", "command_name"):
        return "".join(_text(child) for child in node.named_children)
    return _src(node)


def _joined(node: Node) -> str:
    """The parts of a double-quoted string or a concatenation, with the text between them."""
    raw = node.text or b""
    quoted = node.type == "string"
    start, end = node.start_byte + quoted, node.end_byte - quoted
    out: list[str] = []
    position = start
    for child in node.children:
        if child.start_byte < start or child.end_byte > end:
            continue  # the quotes themselves
        if child.start_byte > position:
            between = raw[position - node.start_byte : child.start_byte - node.start_byte]
            out.append(_unquote_double(between.decode("utf-8", "replace")))
        if child.type == "string_content" or not child.is_named:
            out.append(_unquote_double(_src(child)) if quoted else _src(child))
        else:
            out.append(_text(child))
        position = child.end_byte
    if position < end:
        out.append(
            _unquote_double(
                raw[position - node.start_byte : end - node.start_byte].decode("utf-8", "replace")
            )
        )
    return "".join(out)


def _unquote_double(text: str) -> str:
    """Inside double quotes a backslash escapes only ``$ ` " \\`` and a newline."""
    return re.sub(r'\\([$`"\\\n])', lambda m: "" if m.group(1) == "\n" else m.group(1), text)


_ANSI_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|U[0-9A-Fa-f]{1,8}|[0-7]{1,3}|c.|.)", re.S)
_ANSI_SIMPLE = {
    "a": "\a",
    "b": "\b",
    "e": "\x1b",
    "E": "\x1b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


def _ansi_escape(match: re.Match[str]) -> str:
    """One escape of ``$'...'``: ``\\x72`` is ``r``, ``\\162`` is ``r``, ``\\n`` a newline."""
    escape = match.group(1)
    if escape[0] in "xuU" and len(escape) > 1:
        return chr(int(escape[1:], 16))
    if escape[0] in "01234567":
        return chr(int(escape, 8))
    if escape[0] == "c" and len(escape) == 2:
        return chr(ord(escape[1]) & 0x1F)
    return _ANSI_SIMPLE.get(escape, escape)
