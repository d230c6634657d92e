"""The commands of a runbook step, and how risky each one is.

``extract_commands`` finds the commands in Markdown: fenced blocks in a shell or SQL language
(and unlabelled blocks that start with a known tool), ``$ `` prompt lines, and inline code that is
a whole command. ``classify`` gives each command a risk, with the rule ids that decided it:

    read < change < destructive < unknown

A command is ``read`` only when every part of it is known to be read-only. Shell is parsed with
tree-sitter-bash and every simple command of a pipeline, list, subshell, loop, function, heredoc
and ``-c`` argument is classified; SQL is parsed with sqlglot, every statement of a script. The risk of a
compound is the highest of its parts. ``unknown`` ranks highest and is gated like
``destructive``: anything dynamic (command substitution, ``eval``, ``source``, piping into an
interpreter), an interactive shell, a wrapper whose inner command cannot be classified, a tool or
verb not in the tables below, and any parse error. tree-sitter reads past syntax errors, so any
ERROR or MISSING node in the tree is a parse error. Words are classified after quote removal
(``r''m``, ``"r"m``, ``\\rm`` and ``$'\\x72m'`` are all ``rm``); a substitution anywhere, in a
word, a loop's list, a test or an unquoted heredoc, is ``unknown``.

Choices that are policy rather than syntax:
- ``kubectl exec``/``oc rsh``/``docker exec`` are at least ``change`` (a process runs inside a
  production container); the inner command is classified too and the higher risk wins.
- Stopping, disabling, masking or killing a service or process is ``destructive``: on a
  production host it takes something down. Restarting, starting and reloading are ``change``.
- A write redirection (``>``, ``>>``) to anything but ``/dev/null``/``/dev/std*`` is ``change``.
- Placeholders such as ``<pod-name>`` are read as a word, not as redirections.
- ``[[ ]]``, ``[ ]`` and arithmetic (``$(( ))``, ``(( ))``) only compute, so they are ``read``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from tree_sitter import Node, Parser

Risk = Literal["read", "change", "destructive", "unknown"]
Language = Literal["shell", "sql"]

RISKS: tuple[Risk, ...] = ("read", "change", "destructive", "unknown")
_RANK = {risk: rank for rank, risk in enumerate(RISKS)}

__all__ = ["RISKS", "Classification", "Command", "classify", "extract_commands"]


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a document: its text, language and the lines it spans (1-based, inclusive)."""

    text: str
    language: Language
    start_line: int
    end_line: int


@dataclass(frozen=True, slots=True)
class Classification:
    """A command's risk and the rule ids that decided it."""

    risk: Risk
    reasons: tuple[str, ...]


def _combine(parts: Sequence[Classification]) -> Classification:
    """The highest risk of ``parts``, with the reasons of the parts at that risk."""
    if not parts:
        return Classification("read", ("shell.empty",))
    top = max(parts, key=lambda part: _RANK[part.risk]).risk
    reasons: list[str] = []
    for part in parts:
        if part.risk == top:
            reasons.extend(r for r in part.reasons if r not in reasons)
    return Classification(top, tuple(reasons))


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _c(risk: Risk, reason: str) -> Classification:
    return Classification(risk, (reason,))


# --------------------------------------------------------------------------------------------
# Extraction

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh", "shell-session", "terminal"})
SQL_LANGUAGES = frozenset({"sql", "psql", "postgresql", "pgsql", "plpgsql"})
_PROMPT = re.compile(r"^\s*(?:[\w.@~:/-]*\s*)?[$#]\s+(?=\S)")
_DOLLAR = re.compile(r"^\s*\$\s+(?=\S)")
_SQL_END = re.compile(r";\s*(--.*)?$")


def extract_commands(markdown_text: str, start_line: int = 1) -> list[Command]:
    """The commands of ``markdown_text`` in document order; ``start_line`` is its first line's number."""
    from markdown_it import MarkdownIt

    found: list[Command] = []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown_text):
        if token.map is None:
            continue
        first = start_line + token.map[0]
        if token.type == "fence":
            language = (token.info.split() or [""])[0].lower().strip("{}.")
            found.extend(_block_commands(token.content, language, first + 1))
        elif token.type == "code_block":
            found.extend(_block_commands(token.content, "", first))
        elif token.type == "inline":
            found.extend(_inline_commands(token.children or [], token.content, first))
    return found


def _inline_commands(children: Sequence[Any], content: str, first: int) -> Iterator[Command]:
    lines = content.split("\n")
    for child in children:
        if child.type != "code_inline":
            continue
        text = child.content.strip()
        words = text.split()
        if len(words) < 2 or _tool_name(words[0]) not in KNOWN_TOOLS:
            continue
        offset = next((i for i, line in enumerate(lines) if words[0] in line), 0)
        yield Command(text, "shell", first + offset, first + offset)


def _block_commands(content: str, language: str, first: int) -> Iterator[Command]:
    lines = content.rstrip("\n").split("\n")
    if language in SQL_LANGUAGES:
        yield from _sql_block(lines, first)
    elif language in SHELL_LANGUAGES:
        prompted = [i for i, line in enumerate(lines) if _DOLLAR.match(line)]
        if prompted or language == "console":
            yield from _prompt_block(lines, first, prompted)
        else:
            yield from _shell_block(lines, first)
    elif language == "":
        head = next((line.split() for line in lines if line.strip()), [])
        if _DOLLAR.match(lines[0] if lines else ""):
            yield from _prompt_block(lines, first, [i for i, ln in enumerate(lines) if _DOLLAR.match(ln)])
        elif head and _tool_name(head[0]) in KNOWN_TOOLS and _parses(" ".join(head)):
            yield from _shell_block(lines, first)


def _prompt_block(lines: list[str], first: int, prompted: list[int]) -> Iterator[Command]:
    """Only prompt lines (and what continues them) are commands; the rest is output."""
    for i in prompted:
        body = [_DOLLAR.sub("", lines[i], count=1)]
        j = i
        while body[-1].rstrip().endswith("\\") and j + 1 < len(lines):
            j += 1
            body.append(re.sub(r"^\s*>\s?", "", lines[j]))
        j = _extend_heredoc(body, lines, j)
        yield Command("\n".join(body).strip(), "shell", first + i, first + j)


def _extend_heredoc(body: list[str], lines: list[str], j: int) -> int:
    match = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", "\n".join(body))
    if not match:
        return j
    while j + 1 < len(lines):
        j += 1
        body.append(lines[j])
        if lines[j].strip() == match.group(1):
            break
    return j


def _shell_block(lines: list[str], first: int) -> Iterator[Command]:
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        j = i
        while lines[j].rstrip().endswith("\\") and j + 1 < len(lines):
            j += 1
        end = j
        # A command that does not parse on its own lines may continue (a loop, a heredoc, a
        # quoted string, a trailing pipe): take the shortest run of lines that parses.
        if not _parses("\n".join(lines[i : j + 1])):
            for k in range(j + 1, min(len(lines), j + 60)):
                if _parses("\n".join(lines[i : k + 1])):
                    end = k
                    break
        text = "\n".join(lines[i : end + 1]).strip()
        yield Command(text, "shell", first + i, first + end)
        i = end + 1


_SQL_PROMPT = re.compile(r"^\s*[\w.-]*[=-][#>]\s?")


def _sql_block(lines: list[str], first: int) -> Iterator[Command]:
    lines = [_SQL_PROMPT.sub("", line, count=1) for line in lines]
    start: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if start is None:
            if not stripped or stripped.startswith("--"):
                continue
            if stripped.startswith("\\"):
                yield Command(stripped, "sql", first + i, first + i)
                continue
            start = i
        if _SQL_END.search(stripped) or i == len(lines) - 1:
            text = "\n".join(lines[start : i + 1]).strip()
            if text:
                yield Command(text, "sql", first + start, first + i)
            start = None


def _parses(text: str) -> bool:
    return not _scan(_parse(text)).error


# --------------------------------------------------------------------------------------------
# Shell

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


def classify(command_text: str, language: str = "shell") -> Classification:
    """The risk of ``command_text`` (``shell`` or ``sql``) and the rule ids that decided it."""
    try:
        if language == "sql":
            return classify_sql(command_text)
        return _classify_shell(command_text, depth=0)
    except (RecursionError, AttributeError, TypeError, ValueError, IndexError, KeyError):
        # a parse tree of a shape the rules do not expect is unknown, never read
        return _c("unknown", "classifier-error")


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


@dataclass(frozen=True, slots=True)
class _Stdin:
    """What a command reads on standard input: known text, or the output of another command."""

    text: str | None


@dataclass(slots=True)
class _Walk:
    """The ``-c`` nesting depth, and the simple commands classified so far."""

    depth: int
    seen: set[int] = field(default_factory=set)


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


def _heredoc_text(heredoc: Node) -> str:
    body = next((c for c in heredoc.named_children if c.type == "heredoc_body"), None)
    return _src(body) if body is not None else ""


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


# --------------------------------------------------------------------------------------------
# Tools of the field: verbs and flags


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


# kubectl and oc ------------------------------------------------------------------------------

_KUBE_VALUES = _words(
    "-n --namespace --context --cluster --kubeconfig --user -s --server --as --as-group --token "
    "--request-timeout -l --selector -o --output -c --container -f --filename --field-selector "
    "--sort-by --since --tail --since-time -L --label-columns --template --type --timeout "
    "--grace-period --replicas --image -v --for --patch-file --subresource --namespace"
)
_KUBE = _table(
    read="get describe logs top explain api-resources api-versions version cluster-info diff events "
    "wait whoami status projects completion options help kustomize",
    change="apply patch annotate label edit set autoscale cordon uncordon cp port-forward create "
    "expose run attach proxy rsync new-app new-project start-build login logout tag import-image "
    "project replace",
    destructive="delete drain",
)
_KUBE_SUB = {
    "rollout": _table(read="status history", change="restart undo pause resume"),
    "auth": _table(read="can-i whoami", change="reconcile"),
    "config": _table(
        read="view get-contexts current-context get-clusters get-users",
        change="use-context set-context set-cluster set-credentials set use unset rename-context",
        destructive="delete-context delete-cluster delete-user",
    ),
    "certificate": _table(change="approve deny"),
    "plugin": _table(read="list"),
    "adm": _table(
        read="top node-logs inspect release who-can must-gather-status",
        change="cordon uncordon policy certificate must-gather upgrade new-project groups "
        "taint create-bootstrap-project-template",
        destructive="drain prune",
    ),
}


def _kubectl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _KUBE_VALUES)
    if not words:
        return _c("read", "kubectl.no-verb")
    verb = words[0]
    if verb in ("exec", "rsh", "debug"):
        return _kube_exec(verb, args, words, depth)
    if verb == "scale":
        replicas = _value(args, "--replicas")
        if replicas is None or not replicas.isdigit():
            return _c("unknown", "kubectl.scale.replicas")
        return (
            _c("destructive", "kubectl.scale-to-zero")
            if int(replicas) == 0
            else _c("change", "kubectl.scale")
        )
    if verb == "replace" and _flag(args, "--force"):
        return _c("destructive", "kubectl.replace-force")
    if verb == "taint" or (verb == "adm" and words[1:2] == ["taint"]):
        return (
            _c("destructive", "kubectl.taint-noexecute")
            if "NoExecute" in " ".join(args)
            else _c("change", "kubectl.taint")
        )
    if verb == "adm" and words[1:2] == ["upgrade"] and len(args) == 2:
        return _c("read", "kubectl.adm.upgrade")
    if verb == "project" and len(words) == 1:
        return _c("read", "kubectl.project")
    if verb in _KUBE_SUB:
        sub = words[1] if len(words) > 1 else ""
        return _verbs(f"kubectl.{verb}", sub, _KUBE_SUB[verb])
    return _verbs("kubectl", verb, _KUBE)


def _kube_exec(verb: str, args: list[str], words: list[str], depth: int) -> Classification:
    if "--" in args:
        inner = args[args.index("--") + 1 :]
    elif verb == "exec" and len(words) > 2:
        inner = words[2:]  # the older form: kubectl exec POD COMMAND
    else:
        return _c("unknown", f"kubectl.{verb}.interactive")
    if not inner:
        return _c("unknown", f"kubectl.{verb}.interactive")
    result = _argv(inner, depth + 1, None)
    return _combine([_c("change", f"kubectl.{verb}"), result])


# helm, patronictl, etcdctl, vault, terraform: a verb (and sometimes a subverb) decides ----------

_HELM = _table(
    read="list ls status get history hist template show inspect search version lint diff env verify",
    change="upgrade install rollback test pull fetch package push dependency repo plugin registry",
    destructive="uninstall delete del un",
)
_PATRONI = _table(
    read="list show-config history topology version dsn",
    change="switchover failover restart reload edit-config pause resume flush",
    destructive="reinit remove",
)
_ETCD = {
    "": _table(
        read="get endpoint version watch check",
        change="put move-leader",
        destructive="del defrag compact compaction",
    ),
    "member": _table(read="list", change="add update promote", destructive="remove"),
    "snapshot": _table(read="status", change="save", destructive="restore"),
    "alarm": _table(read="list", change="disarm"),
    "lease": _table(read="list timetolive", change="grant keep-alive", destructive="revoke"),
    "user": _table(read="list get", change="add grant-role passwd", destructive="delete revoke-role"),
    "role": _table(read="list get", change="add grant-permission", destructive="delete revoke-permission"),
}
_VAULT = {
    "": _table(
        read="read list status version print path-help",
        change="write login unwrap patch",
        destructive="delete",
    ),
    "kv": _table(
        read="get list metadata",
        change="put patch rollback undelete enable-versioning",
        destructive="delete destroy",
    ),
    "policy": _table(read="read list fmt", change="write", destructive="delete"),
    "token": _table(read="lookup capabilities", change="create renew", destructive="revoke"),
    "lease": _table(read="lookup", change="renew", destructive="revoke"),
    "auth": _table(read="list help", change="enable tune move", destructive="disable"),
    "secrets": _table(read="list", change="enable tune move", destructive="disable"),
    "audit": _table(read="list", change="enable", destructive="disable"),
    "operator": _table(
        read="members key-status usage diagnose",
        change="unseal step-down rotate init generate-root migrate",
        destructive="seal",
    ),
}
_VAULT_RAFT = _table(read="list-peers autopilot", change="snapshot join", destructive="remove-peer")
_TERRAFORM = _table(
    read="plan show validate output version providers graph fmt-check",
    change="apply import init refresh taint untaint force-unlock get login fmt",
    destructive="destroy",
)
_TF_SUB = {
    "state": _table(read="list show pull", change="mv push replace-provider", destructive="rm"),
    "workspace": _table(read="list show", change="select new", destructive="delete"),
}


def _subverb(
    tool: str, args: list[str], tables: dict[str, dict[str, Risk]], values: frozenset[str]
) -> Classification:
    words = _positionals(args, values)
    if not words:
        return _c("unknown", f"{tool}.no-verb")
    if words[0] in tables and words[0] != "":
        return _verbs(f"{tool}.{words[0]}", words[1] if len(words) > 1 else "", tables[words[0]])
    return _verbs(tool, words[0], tables[""])


def _helm(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-n --namespace --kube-context -f --values --set --version -o"))
    if words[:2] in (["repo", "list"], ["plugin", "list"], ["dependency", "list"]):
        return _c("read", f"helm.{words[0]}.list")
    return _verbs("helm", words[0] if words else "", _HELM)


def _patronictl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(
        args,
        _words(
            "-c --config-file -d --dcs-url -k --insecure --member --candidate --leader --master "
            "--role --scheduled --group"
        ),
    )
    return _verbs("patronictl", words[0] if words else "", _PATRONI)


def _etcdctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    values = _words(
        "--endpoints --cacert --cert --key --user --password -w --write-out --dial-timeout --command-timeout"
    )
    return _subverb("etcdctl", args, _ETCD, values)


def _vault(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-address -namespace -format -field -mount -method -path"))
    if words[:2] == ["operator", "raft"]:
        sub = words[2] if len(words) > 2 else ""
        if sub == "snapshot" and words[3:4] == ["restore"]:
            return _c("destructive", "vault.operator.raft.snapshot-restore")
        return _verbs("vault.operator.raft", sub, _VAULT_RAFT)
    if words[:3] == ["kv", "metadata", "delete"]:
        return _c("destructive", "vault.kv.metadata-delete")
    return _subverb("vault", args, _VAULT, _words("-address -namespace -format -field -mount -method -path"))


def _terraform(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-chdir -var -var-file -target -out -state -lock-timeout"))
    verb = words[0] if words else ""
    if verb == "apply" and _flag(args, "-destroy"):
        return _c("destructive", "terraform.apply-destroy")
    if verb == "fmt" and _flag(args, "-check"):
        return _c("read", "terraform.fmt-check")
    if verb in _TF_SUB:
        return _verbs(f"terraform.{verb}", words[1] if len(words) > 1 else "", _TF_SUB[verb])
    if verb == "console":
        return _c("unknown", "shell.interactive")
    return _verbs("terraform", verb, _TERRAFORM)


# redis-cli and kafka ---------------------------------------------------------------------------

_REDIS = _table(
    read="get mget info scan ttl pttl keys type exists strlen llen lrange lindex hget hgetall hkeys hlen "
    "hmget hscan smembers scard sismember sscan zrange zrangebyscore zcard zscore zscan dbsize ping "
    "memory slowlog client config cluster role monitor latency xinfo xlen xrange object sentinel "
    "echo time lastsave command getrange pubsub bitcount pfcount",
    change="set setex psetex setnx mset expire pexpire expireat persist hset hmset lpush rpush "
    "lpop rpop incr decr incrby sadd srem zadd zrem bgsave bgrewriteaof save replicaof slaveof "
    "failover publish rename append xadd xack",
    destructive="flushall flushdb del unlink shutdown hdel",
)
_REDIS_SUB = {
    "config": _table(read="get", change="set rewrite resetstat"),
    "client": _table(read="list info getname id", change="kill pause unpause setname no-evict"),
    "slowlog": _table(read="get len", change="reset"),
    "cluster": _table(
        read="info nodes slots shards myid keyslot countkeysinslot getkeysinslot",
        change="failover meet addslots replicate setslot",
        destructive="reset forget delslots flushslots",
    ),
    "memory": _table(read="usage stats doctor malloc-stats", change="purge"),
    "script": _table(read="exists", change="load kill", destructive="flush"),
    "sentinel": _table(
        read="masters master replicas slaves sentinels get-master-addr-by-name ckquorum info-cache",
        change="failover set monitor reset",
        destructive="remove",
    ),
}
_REDIS_VALUES = _words(
    "-h -p -a -n -u --user --pass -s --tls-cert --tls-key --cacert -i -r --pattern --count"
)


def _redis(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(
        args, "--scan", "--bigkeys", "--memkeys", "--latency", "--latency-history", "--stat", "--hotkeys"
    ):
        return _c("read", "redis.scan-mode")
    if _flag(args, "--cluster"):
        sub = _value(args, "--cluster") or ""
        table = _table(
            read="check info",
            change="fix rebalance reshard create add-node import call",
            destructive="del-node",
        )
        return _verbs("redis.cluster", sub, table)
    words = _positionals(args, _REDIS_VALUES)
    if not words:
        return _c("unknown", "redis.interactive" if stdin is None else "redis.stdin")
    verb = words[0].lower()
    if verb in _REDIS_SUB:
        return _verbs(f"redis.{verb}", words[1].lower() if len(words) > 1 else "", _REDIS_SUB[verb])
    return _verbs("redis", verb, _REDIS)


def _kafka(name: str, args: list[str]) -> Classification:
    tool = name.removesuffix(".sh")
    if tool == "kafka-consumer-groups":
        if _flag(args, "--delete", "--delete-offsets"):
            return _c("destructive", "kafka.consumer-groups.delete")
        if _flag(args, "--reset-offsets"):
            if _flag(args, "--execute"):
                return _c("destructive", "kafka.consumer-groups.reset-offsets")
            return _c("read", "kafka.consumer-groups.reset-offsets-dry-run")
        return _c("read", "kafka.consumer-groups.describe")
    modes: dict[str, tuple[tuple[str, Risk], ...]] = {
        "kafka-topics": (
            ("--delete", "destructive"),
            ("--create", "change"),
            ("--alter", "change"),
            ("--list", "read"),
            ("--describe", "read"),
        ),
        "kafka-configs": (("--alter", "change"), ("--describe", "read")),
        "kafka-acls": (("--remove", "destructive"), ("--add", "change"), ("--list", "read")),
        "kafka-reassign-partitions": (
            ("--execute", "change"),
            ("--cancel", "change"),
            ("--verify", "read"),
            ("--generate", "read"),
        ),
        "kafka-log-dirs": (("--describe", "read"),),
        "kafka-leader-election": (("--election-type", "change"),),
        "kafka-preferred-replica-election": (("--bootstrap-server", "change"), ("--zookeeper", "change")),
        "kafka-delete-records": (("--offset-json-file", "destructive"),),
    }
    simple: dict[str, Risk] = {
        "kafka-console-consumer": "read",
        "kafka-broker-api-versions": "read",
        "kafka-get-offsets": "read",
        "kafka-console-producer": "change",
        "kafka-verifiable-producer": "change",
        "kafka-server-stop": "destructive",
        "kafka-server-start": "change",
    }
    if tool in simple:
        return _c(simple[tool], f"kafka.{tool.removeprefix('kafka-')}")
    for flag, risk in modes.get(tool, ()):
        if _flag(args, flag):
            return _c(risk, f"kafka.{tool.removeprefix('kafka-')}.{flag.lstrip('-')}")
    return _c("unknown", f"kafka.{tool.removeprefix('kafka-')}.unknown-mode")


# cloud CLIs ----------------------------------------------------------------------------------

_AWS_READ = re.compile(
    r"^(describe|list|get|head|lookup|search|batch-get|filter|scan|query|select|test|validate|"
    r"estimate|simulate|wait|preview|check|detect|generate-presigned)(-|$)"
)
_AWS_DESTRUCTIVE = re.compile(
    r"^(delete|terminate|remove|purge|deregister|revoke|destroy|release|stop|disable|"
    r"deactivate|batch-delete|empty|abort)(-|$)"
)
_AWS_CHANGE = re.compile(
    r"^(create|update|put|modify|start|attach|associate|disassociate|detach|tag|untag|register|enable|set|"
    r"run|send|invoke|copy|import|restore|authorize|reset|reboot|promote|failover|apply|change|"
    r"publish|add|upload|execute|rotate|cancel|accept|reject|replace|import|export|sync|"
    r"switchover|resume|increase|decrease|allocate|assume|login)(-|$)"
)
_AWS_VALUES = _words("--region --profile --output --query --endpoint-url --cli-read-timeout --color")


def _aws(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _AWS_VALUES)
    if len(words) < 2:
        return _c("read" if words in ([], ["help"]) else "unknown", "aws.no-operation")
    service, operation = words[0], words[1]
    if service == "s3":
        if operation == "sync" and _flag(args, "--delete"):
            return _c("destructive", "aws.s3.sync-delete")
        table = _table(read="ls presign", change="cp mv sync mb website", destructive="rm rb")
        return _verbs("aws.s3", operation, table)
    if service == "sts" and operation.startswith("get-"):
        return _c("read", "aws.sts.get")
    for risk, pattern in (("destructive", _AWS_DESTRUCTIVE), ("change", _AWS_CHANGE), ("read", _AWS_READ)):
        if pattern.match(operation):
            verb = operation.split("-", 1)[0]
            return _c(risk, f"aws.{verb}")  # type: ignore[arg-type]
    return _c("unknown", "aws.unknown-operation")


_GCLOUD = _table(
    read="list describe info version get-iam-policy get-value read tail list-grants ssh-keys-list",
    change="create update deploy patch import enable restart reset start set-iam-policy "
    "add-iam-policy-binding get-credentials rolling-action resize set set-value activate "
    "failover promote-replica export connect login add-tags add-labels remove-labels",
    destructive="delete remove-iam-policy-binding stop disable purge cancel unset abandon-instances",
)


def _gcloud(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("--project --zone --region --format --filter --limit --account"))
    if "ssh" in words or "interactive" in words:
        return _c("unknown", "gcloud.ssh" if "ssh" in words else "shell.interactive")
    if "resize" in words and (_value(args, "--size", "--num-nodes") == "0"):
        return _c("destructive", "gcloud.resize-to-zero")
    risks = [(word, _GCLOUD[word]) for word in words if word in _GCLOUD]
    risks += [(word, "read") for word in words if word.startswith("get-") and word not in _GCLOUD]
    if not risks:
        return _c("unknown", "gcloud.unknown-verb")
    word, risk = risks[0]
    return _c(risk, f"gcloud.{word}")


# services, processes, version control -----------------------------------------------------------

_SYSTEMCTL = _table(
    read="status show list-units list-unit-files list-timers list-sockets list-jobs list-dependencies "
    "is-active is-enabled is-failed cat get-default help",
    change="start restart reload try-restart reload-or-restart try-reload-or-restart enable daemon-reload "
    "reset-failed unmask edit set-property preset revert daemon-reexec",
    destructive="stop disable mask kill isolate poweroff reboot halt rescue emergency suspend hibernate",
)


def _systemctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-p --property -t --type --state -n --lines -o --output -H --host -M"))
    if not words:
        return _c("read", "systemctl.list")
    return _verbs("systemctl", words[0], _SYSTEMCTL)


def _service(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args)
    if words[:1] == ["--status-all"] or _flag(args, "--status-all"):
        return _c("read", "service.status")
    return _verbs("service", words[1] if len(words) > 1 else "", _SYSTEMCTL)


def _journalctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "--vacuum-size", "--vacuum-time", "--vacuum-files"):
        return _c("destructive", "journalctl.vacuum")
    if _flag(args, "--rotate", "--flush", "--sync", "--relinquish-var", "--setup-keys"):
        return _c("change", "journalctl.maintenance")
    return _c("read", "journalctl.read")


def _signal_tool(name: str) -> Tool:
    def classify_signal(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
        signal = (
            _value(args, "-s", "--signal") or next((a[1:] for a in args if re.fullmatch(r"-\w+", a)), "")
        ).upper()
        signal = signal.removeprefix("SIG")
        if name == "kill" and args[:1] == ["-l"]:
            return _c("read", "kill.list")
        if signal == "0":
            return _c("read", f"{name}.probe")
        if signal in ("HUP", "1", "USR1", "USR2", "10", "12", "WINCH", "CONT", "18", "TTIN", "TTOU"):
            return _c("change", f"{name}.signal")
        return _c("destructive", f"{name}.terminate")

    return classify_signal


_GIT = _table(
    read="status log diff show fetch blame grep ls-files ls-tree rev-parse describe shortlog reflog "
    "ls-remote cat-file rev-list whatchanged show-ref version help bisect-log count-objects fsck",
    change="commit pull merge checkout switch push add rm mv rebase cherry-pick revert stash tag config "
    "clone init restore apply am branch remote submodule worktree notes bisect gc repack",
    destructive="filter-branch filter-repo prune",
)


def _git(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-C -c --git-dir --work-tree"))
    verb = words[0] if words else ""
    if "-c" in args[: args.index(verb)] if verb in args else "-c" in args:
        # configuration given on the command line can name a program (core.sshCommand, aliases)
        return _c("unknown", "git.config-override")
    rest = args[args.index(verb) + 1 :] if verb in args else []
    if verb == "push" and (
        _flag(rest, "--force", "-f", "--force-with-lease", "--mirror", "--delete", "-d", "--prune")
        or any(w.startswith("+") or w.startswith(":") for w in words[1:])
    ):
        return _c("destructive", "git.push-force")
    if verb == "reset":
        return (
            _c("destructive", "git.reset-hard")
            if _flag(rest, "--hard", "--merge", "--keep")
            else _c("change", "git.reset")
        )
    if verb == "clean":
        return (
            _c("destructive", "git.clean")
            if _flag(rest, "-f", "--force")
            else _c("read", "git.clean-dry-run")
        )
    if verb == "branch":
        if _flag(rest, "-D") or (_flag(rest, "-d", "--delete") and _flag(rest, "-f", "--force")):
            return _c("destructive", "git.branch-delete-force")
        if len(words) == 1 or _flag(rest, "-a", "-r", "--list", "-v", "-vv", "--show-current", "--contains"):
            return _c("read", "git.branch-list")
    if verb == "stash" and words[1:2] in (["drop"], ["clear"]):
        return _c("destructive", "git.stash-drop")
    if verb in ("stash", "remote", "tag", "config", "worktree", "submodule") and (
        words[1:2] in (["list"], ["show"], ["-v"])
        or len(words) == 1
        or _flag(rest, "-l", "--list", "--get", "-v")
    ):
        return _c("read", f"git.{verb}-list")
    if verb == "checkout" and _flag(rest, "-f", "--force"):
        return _c("destructive", "git.checkout-force")
    return _verbs("git", verb, _GIT)


# HTTP clients ----------------------------------------------------------------------------------


def _curl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-K", "--config"):
        return _c("unknown", "curl.config-file")
    method = (_value(args, "-X", "--request") or "").upper()
    if method == "DELETE":
        return _c("destructive", "curl.delete")
    if method in ("POST", "PUT", "PATCH") or _flag(
        args,
        "-d",
        "--data",
        "--data-raw",
        "--data-binary",
        "--data-urlencode",
        "--data-ascii",
        "-F",
        "--form",
        "--form-string",
        "-T",
        "--upload-file",
        "--json",
    ):
        return _c("change", "curl.write-method")
    if method not in ("", "GET", "HEAD", "OPTIONS"):
        return _c("unknown", "curl.method")
    output = _value(args, "-o", "--output")
    if (output is not None and output not in ("/dev/null", "-")) or _flag(
        args, "-O", "--remote-name", "--remote-name-all"
    ):
        return _c("change", "curl.output-file")
    return _c("read", "curl.get")


def _wget(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    method = (_value(args, "--method") or "").upper()
    if method == "DELETE":
        return _c("destructive", "wget.delete")
    if method in ("POST", "PUT", "PATCH") or _flag(args, "--post-data", "--post-file", "--body-data"):
        return _c("change", "wget.write-method")
    output = _value(args, "-O", "--output-document")
    if _flag(args, "--spider") or output in ("-", "/dev/null"):
        return _c("read", "wget.stdout")
    return _c("change", "wget.download")


# files and text ----------------------------------------------------------------------------------


def _find(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    parts = [_c("read", "find.read")]
    for i, arg in enumerate(args):
        if arg == "-delete":
            parts.append(_c("destructive", "find.delete"))
        elif arg in ("-fprint", "-fprint0", "-fprintf", "-fls"):
            parts.append(_c("change", "find.write"))
        elif arg in ("-exec", "-execdir", "-ok", "-okdir"):
            inner: list[str] = []
            for word in args[i + 1 :]:
                if word in (";", "+", "\\;"):
                    break
                inner.append("PLACEHOLDER" if word == "{}" else word)
            result = _argv(inner, depth + 1, None) if inner else _c("unknown", "find.exec")
            parts.append(Classification(result.risk, ("find.exec", *result.reasons)))
    return _combine(parts)


def _sed(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-f", "--file"):
        return _c("unknown", "sed.script-file")
    script = " ".join(a for a in args if not a.startswith("-"))
    # the w and e commands (and the s///w, s///e flags) write files or run commands
    if re.search(r"(?:^|[;{}\n])\s*[0-9,$]*\s*[wWe](?:\s|$)|/[gpiImM0-9]*[we](?:\s|$|;)", script):
        return _c("unknown", "sed.write-or-exec")
    if any(re.fullmatch(r"-[a-zA-Z]*i.*", a) and not a.startswith("--") for a in args) or _flag(
        args, "--in-place"
    ):
        return _c("change", "sed.in-place")
    return _c("read", "sed.read")


def _awk(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-f", "--file"):
        return _c("unknown", "awk.script-file")
    program = " ".join(a for a in args if not a.startswith("-"))
    if re.search(r"system\s*\(|\|\s*(\"|getline|&)|\|&", program):
        return _c("unknown", "awk.system")
    if re.search(r"(print|printf)[^;}]*>>?\s*\"", program):
        return _c("change", "awk.write")
    return _c("read", "awk.read")


def _tee(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    files = [a for a in _positionals(args) if a not in ("/dev/null", "/dev/stdout", "/dev/stderr")]
    return _c("change", "tee.write") if files else _c("read", "tee.stdout")


def _tar(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    mode = args[0] if args else ""
    if _flag(args, "-t", "--list") or (mode and not mode.startswith("-") and "t" in mode):
        return _c("read", "tar.list")
    return _c("change", "tar.write")


def _rsync(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if any(a.startswith("--delete") or a == "--remove-source-files" for a in args):
        return _c("destructive", "rsync.delete")
    if _flag(args, "-n", "--dry-run", "--list-only"):
        return _c("read", "rsync.dry-run")
    return _c("change", "rsync.copy")


def _crontab(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-r"):
        return _c("destructive", "crontab.remove")
    if _flag(args, "-l"):
        return _c("read", "crontab.list")
    return _c("change", "crontab.edit")


def _iptables(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-F", "--flush", "-X", "--delete-chain", "-D", "--delete", "-P", "--policy"):
        return _c("destructive", "iptables.delete")
    if _flag(args, "-A", "--append", "-I", "--insert", "-R", "--replace", "-N", "-Z", "--zero"):
        return _c("change", "iptables.change")
    if _flag(args, "-L", "--list", "-S", "--list-rules", "-C", "--check"):
        return _c("read", "iptables.list")
    return _c("unknown", "iptables.unknown-mode")


def _ip(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-n", "-netns", "-f", "-family"}))
    if any(w in ("flush", "del", "delete") for w in words):
        return _c("destructive", "ip.delete")
    if any(w in ("add", "set", "change", "replace", "append", "up", "down") for w in words):
        return _c("change", "ip.change")
    return _c("read", "ip.show")


def _openssl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    verb = args[0] if args else ""
    if _flag(args, "-out", "-keyout"):
        return _c("change", "openssl.write")
    table = _table(
        read="x509 s_client verify crl asn1parse version ciphers dgst rsa ec pkey sess_time s_time "
        "storeutl list req crl2pkcs7 pkcs7 ocsp base64 sha256 sha1 md5 speed errstr x509v3 rand",
        change="genrsa genpkey ecparam pkcs12 ca enc",
    )
    return _verbs("openssl", verb, table)


def _nc(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    return _c("read", "nc.probe") if _flag(args, "-z") else _c("unknown", "nc.send")


def _ps_style(tool: str, table: dict[str, Risk], values: frozenset[str] = frozenset()) -> Tool:
    def classify_tool(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
        words = _positionals(args, values)
        verb = words[0] if words else ""
        if verb in ("container", "image", "volume", "network", "system", "node", "service", "pod"):
            verb = words[1] if len(words) > 1 else "ls"
        if verb == "exec":
            inner = words[2:] if len(words) > 2 else []
            if not inner:
                return _c("unknown", f"{tool}.exec.interactive")
            return _combine([_c("change", f"{tool}.exec"), _argv(inner, depth + 1, None)])
        return _verbs(tool, verb, table)

    return classify_tool


_CONTAINERS = _table(
    read="ps images logs inspect stats version info top events port history ls pods inspectp "
    "statsp imagefsinfo df",
    change="run start restart pull build tag push cp create update login logout pause unpause "
    "runp startp commit load save import export attach",
    destructive="rm rmi kill stop prune rmp stopp",
)
_CONTAINER_VALUES = _words(
    "-f --filter --format -n --tail --since -H --host -u --user -e --env -w -r --runtime-endpoint"
)


# databases ---------------------------------------------------------------------------------------


def _psql(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    scripts = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--command")]
    scripts += [a.split("=", 1)[1] for a in args if a.startswith("--command=")]
    scripts += [a[2:] for a in args if a.startswith("-c") and len(a) > 2 and not a.startswith("--")]
    if _flag(args, "-f", "--file"):
        return _c("unknown", "psql.script-file")
    if scripts:
        return _combine([classify_sql(s) for s in scripts])
    if _flag(args, "-l", "--list", "-V", "--version", "--help"):
        return _c("read", "psql.list")
    if stdin is not None:
        return classify_sql(stdin.text) if stdin.text is not None else _c("unknown", "psql.stdin")
    return _c("unknown", "psql.interactive")


def _mysql(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    script = _value(args, "-e", "--execute")
    if script is not None:
        return classify_sql(script, dialect="mysql")
    if stdin is not None and stdin.text is not None:
        return classify_sql(stdin.text, dialect="mysql")
    return _c("unknown", "mysql.interactive")


def _pg_ctl(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-D", "--pgdata", "-m", "--mode", "-o", "-l", "--log", "-w", "-t"}))
    table = _table(
        read="status", change="start restart reload promote logrotate init initdb", destructive="stop kill"
    )
    return _verbs("pg_ctl", words[0] if words else "", table)


def _pg_dump(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    return _c("change", "pg_dump.file") if _flag(args, "-f", "--file") else _c("read", "pg_dump.stdout")


def _pg_restore(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    if _flag(args, "-l", "--list"):
        return _c("read", "pg_restore.list")
    return (
        _c("destructive", "pg_restore.clean") if _flag(args, "-c", "--clean") else _c("change", "pg_restore")
    )


def _ceph(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-f", "--format", "-c", "--conf", "--cluster"}))
    text = " ".join(words)
    if re.search(r"\b(purge|destroy|rm|delete|remove|lost|out|down|zap|flatten|reweight)\b", text):
        return _c("destructive", "ceph.remove")
    if re.search(
        r"\b(set|unset|create|enable|disable|repair|scrub|deep-scrub|in|up|restart|config-key|config|tell|pause|unpause)\b",
        text,
    ):
        if words[-1:] in (["get"], ["ls"], ["dump"]) or " get " in f" {text} ":
            return _c("read", "ceph.get")
        return _c("change", "ceph.set")
    return _c("read", "ceph.status")


def _yq(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    return _c("change", "yq.in-place") if _flag(args, "-i", "--inplace") else _c("read", "yq.read")


def _simple_verb(tool: str, table: dict[str, Risk], values: frozenset[str] = frozenset()) -> Tool:
    def classify_tool(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
        words = _positionals(args, values)
        return _verbs(tool, words[0] if words else "", table)

    return classify_tool


def _kafka_tool(name: str) -> Tool:
    return lambda args, stdin, depth: _kafka(name, args)


def _uniform(risk: Risk, reason: str) -> Tool:
    return lambda args, stdin, depth: _c(risk, reason)


def _argocd(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, frozenset({"-o", "--output", "--server", "--grpc-web"}))
    text = " ".join(words[:2])
    if re.search(r"\b(delete|terminate-op)\b", text):
        return _c("destructive", "argocd.delete")
    if re.search(r"\b(sync|set|create|rollback|patch|edit|restart|add|login|actions)\b", text):
        return _c("change", "argocd.change")
    if re.search(r"\b(get|list|diff|history|manifests|logs|version|resources|wait)\b", text):
        return _c("read", "argocd.read")
    return _c("unknown", "argocd.unknown-verb")


def _consul(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args)
    verb = words[0] if words else ""
    if verb == "maint":
        return (
            _c("change", "consul.maint") if _flag(args, "-enable", "-disable") else _c("read", "consul.maint")
        )
    tables = {
        "kv": _table(read="get export", change="put import", destructive="delete"),
        "snapshot": _table(read="inspect", change="save", destructive="restore"),
        "operator": _table(read="raft", change="autopilot"),
        "services": _table(change="register", destructive="deregister"),
        "acl": _table(read="token policy role"),
    }
    if verb in tables:
        sub = words[1] if len(words) > 1 else ""
        if verb == "operator" and words[1:3] == ["raft", "remove-peer"]:
            return _c("destructive", "consul.operator.raft.remove-peer")
        if verb == "acl" and len(words) > 2 and words[2] not in ("list", "read"):
            return _c("change", "consul.acl")
        if not sub or sub.startswith("-") or _flag(args, "-help", "--help"):
            return _c("read", f"consul.{verb}.help")
        return _verbs(f"consul.{verb}", sub, tables[verb])
    table = _table(
        read="members catalog info monitor version watch help members rtt validate",
        change="reload join event exec",
        destructive="leave force-leave",
    )
    return _verbs("consul", verb, table)


def _gh(args: list[str], stdin: _Stdin | None, depth: int) -> Classification:
    words = _positionals(args, _words("-R --repo -q --jq -t --template -H --header -X --method"))
    if words[:1] == ["api"]:
        method = (_value(args, "-X", "--method") or "GET").upper()
        if method == "DELETE":
            return _c("destructive", "gh.api.delete")
        if method != "GET" or _flag(args, "-f", "-F", "--field", "--raw-field", "--input"):
            return _c("change", "gh.api.write")
        return _c("read", "gh.api.get")
    if len(words) > 1 and words[1] in ("list", "view", "status", "diff", "checks", "watch"):
        return _c("read", f"gh.{words[1]}")
    return _c("unknown", "gh.unknown-verb")


TOOLS: dict[str, Tool] = {
    "kubectl": _kubectl,
    "oc": _kubectl,
    "k": _kubectl,
    "helm": _helm,
    "patronictl": _patronictl,
    "etcdctl": _etcdctl,
    "vault": _vault,
    "terraform": _terraform,
    "tofu": _terraform,
    "redis-cli": _redis,
    "aws": _aws,
    "gcloud": _gcloud,
    "systemctl": _systemctl,
    "service": _service,
    "journalctl": _journalctl,
    "kill": _signal_tool("kill"),
    "pkill": _signal_tool("pkill"),
    "killall": _signal_tool("killall"),
    "git": _git,
    "curl": _curl,
    "wget": _wget,
    "find": _find,
    "sed": _sed,
    "awk": _awk,
    "gawk": _awk,
    "tee": _tee,
    "tar": _tar,
    "rsync": _rsync,
    "crontab": _crontab,
    "iptables": _iptables,
    "ip6tables": _iptables,
    "ip": _ip,
    "openssl": _openssl,
    "nc": _nc,
    "ncat": _nc,
    "docker": _ps_style("docker", _CONTAINERS, _CONTAINER_VALUES),
    "podman": _ps_style("podman", _CONTAINERS, _CONTAINER_VALUES),
    "crictl": _ps_style("crictl", _CONTAINERS, _CONTAINER_VALUES),
    "psql": _psql,
    "mysql": _mysql,
    "pg_ctl": _pg_ctl,
    "pg_ctlcluster": _uniform("unknown", "pg_ctlcluster.unknown-verb"),
    "pg_dump": _pg_dump,
    "pg_dumpall": _pg_dump,
    "pg_restore": _pg_restore,
    "ceph": _ceph,
    "yq": _yq,
    "argocd": _argocd,
    "istioctl": _simple_verb(
        "istioctl",
        _table(
            read="analyze proxy-status proxy-config version verify-install x",
            change="install upgrade kube-inject",
            destructive="uninstall",
        ),
    ),
    "velero": _simple_verb(
        "velero",
        _table(read="get describe version", change="backup restore schedule create", destructive="delete"),
    ),
    "cilium": _simple_verb(
        "cilium",
        _table(
            read="status connectivity version hubble config",
            change="install upgrade",
            destructive="uninstall",
        ),
    ),
    "etcd": _uniform("unknown", "etcd.server"),
    "consul": _consul,
    "gh": _gh,
    "pip": _simple_verb(
        "pip",
        _table(
            read="list show freeze check help config",
            change="install download wheel",
            destructive="uninstall",
        ),
    ),
    "pip3": _simple_verb(
        "pip3",
        _table(
            read="list show freeze check help config",
            change="install download wheel",
            destructive="uninstall",
        ),
    ),
    "perf": _simple_verb(
        "perf", _table(read="report top stat list annotate script diff", change="record trace probe")
    ),
    "logcli": _simple_verb(
        "logcli",
        _table(read="query instant-query labels series stats volume volume_range", destructive="delete"),
    ),
    **{
        name: _kafka_tool(name)
        for base in (
            "kafka-topics",
            "kafka-consumer-groups",
            "kafka-configs",
            "kafka-acls",
            "kafka-reassign-partitions",
            "kafka-log-dirs",
            "kafka-leader-election",
            "kafka-preferred-replica-election",
            "kafka-delete-records",
            "kafka-console-consumer",
            "kafka-console-producer",
            "kafka-broker-api-versions",
            "kafka-get-offsets",
            "kafka-verifiable-producer",
            "kafka-server-stop",
            "kafka-server-start",
        )
        for name in (base, f"{base}.sh")
    },
}

READ_ONLY = _words(
    """: cat less more head tail grep egrep fgrep zgrep rg ag jq wc sort uniq cut tr column ls ll ps pgrep df
    du free top htop uptime date echo printf dig nslookup host ping ping6 traceroute tracepath mtr ss
    netstat whoami hostname id stat which whereis type test [ true false file diff cmp md5sum sha256sum
    sha1sum base64 hexdump xxd od strings lsof lsblk blkid findmnt vmstat iostat mpstat sar pidstat
    dmesg lscpu lsmod lspci lsusb nproc uname arch getent groups last w who iotop nload iftop
    sleep cd pwd export set unset alias read wait exit return shift local declare pushd popd history
    basename dirname realpath readlink seq printenv locale timedatectl hostnamectl loginctl
    resolvectl pg_isready pg_controldata pg_lsclusters pg_config promtool amtool ethtool arp
    route nstat numastat slabtop pmap smem zcat zless bzcat xzcat nl fold fmt paste join comm tac rev
    expand unexpand factor expr bc getconf umask jps jstack jstat ldd nm objdump readelf lvs pvs vgs
    lvdisplay pvdisplay vgdisplay xfs_info dumpe2fs tree"""
)
CHANGE = _words(
    """mv cp chmod chown chgrp mkdir touch ln install scp sftp gzip gunzip bzip2 xz unxz zip unzip
    useradd usermod groupadd passwd chpasswd apt apt-get yum dnf rpm dpkg npm update-ca-certificates
    restorecon setenforce chcon logrotate certbot ssh-keygen ssh-copy-id htpasswd exportfs swapon
    modprobe sysctl-w mount umount"""
)
DESTRUCTIVE = _words(
    """rm rmdir dd shred wipefs mkfs mkfs.ext4 mkfs.xfs fdisk parted sfdisk truncate shutdown reboot halt
    poweroff swapoff userdel groupdel lvremove vgremove pvremove dropdb dropuser pg_resetwal pg_rewind
    fstrim blkdiscard"""
)

KNOWN_TOOLS = frozenset(TOOLS) | READ_ONLY | CHANGE | DESTRUCTIVE | frozenset(WRAPPERS) | SHELLS


# SQL ---------------------------------------------------------------------------------------------

# Functions that act on the server from inside a SELECT.
_SQL_FUNCTIONS: dict[str, Risk] = {
    "pg_terminate_backend": "destructive",
    "lo_unlink": "destructive",
    "pg_drop_replication_slot": "destructive",
    "pg_replication_origin_drop": "destructive",
    "pg_truncate_visibility_map": "destructive",
    "pg_cancel_backend": "change",
    "pg_reload_conf": "change",
    "set_config": "change",
    "nextval": "change",
    "setval": "change",
    "pg_switch_wal": "change",
    "pg_switch_xlog": "change",
    "pg_create_restore_point": "change",
    "pg_promote": "change",
    "pg_wal_replay_pause": "change",
    "pg_wal_replay_resume": "change",
    "pg_xlog_replay_pause": "change",
    "pg_xlog_replay_resume": "change",
    "pg_rotate_logfile": "change",
    "pg_log_backend_memory_contexts": "change",
    "pg_backup_start": "change",
    "pg_backup_stop": "change",
    "pg_start_backup": "change",
    "pg_stop_backup": "change",
    "pg_create_physical_replication_slot": "change",
    "pg_create_logical_replication_slot": "change",
    "pg_replication_slot_advance": "change",
    "pg_advisory_lock": "change",
    "pg_try_advisory_lock": "change",
    "pg_advisory_unlock": "change",
    "pg_advisory_unlock_all": "change",
    "lo_import": "change",
    "lo_export": "change",
    "lo_create": "change",
    "pg_file_write": "change",
    "pg_file_unlink": "destructive",
    "pg_file_rename": "change",
    "pg_import_system_collations": "change",
    "dblink_exec": "unknown",
    "dblink": "unknown",
    "query_to_xml": "unknown",
    "pg_catalog.set_config": "change",
}
# Functions that only look: sizes, positions, status, formatting. Anything else is unknown,
# since a user-defined function may write.
_SQL_READ_FUNCTIONS = re.compile(
    r"^(pg_catalog\.)?(pg_size_pretty|pg_\w*_size|pg_size_bytes|pg_is_\w+|pg_last_\w+|pg_current_\w+|"
    r"pg_stat_get_\w+|pg_get_\w+|pg_wal_lsn_diff|pg_xlog_location_diff|pg_postmaster_start_time|"
    r"pg_backend_pid|pg_blocking_pids|pg_conf_load_time|pg_has_role|has_\w+_privilege|pg_table_is_visible|"
    r"pg_encoding_to_char|pg_walfile_name|pg_xlogfile_name|pg_control_\w+|pg_ls_\w+|pg_read_file|"
    r"pg_stat_file|pg_tablespace_location|pg_relation_filenode|pg_relation_filepath|pg_typeof|"
    r"pg_column_size|pg_jit_available|pg_notification_queue_usage|pg_safe_snapshot_blocking_pids|"
    r"pg_replication_origin_progress|pg_visible_in_snapshot|pg_snapshot_xmin|pg_current_snapshot|"
    r"current_setting|current_database|current_schema|current_user|session_user|version|age|mxid_age|"
    r"txid_current_if_assigned|txid_snapshot_xmin|txid_status|to_char|to_timestamp|to_date|date_trunc|"
    r"date_part|extract|format|quote_ident|quote_literal|regexp_replace|regexp_match|split_part|"
    r"string_agg|array_agg|array_length|unnest|generate_series|json_agg|jsonb_agg|jsonb_pretty|"
    r"row_to_json|to_json|to_jsonb|json_build_object|jsonb_build_object|inet_server_addr|"
    r"inet_server_port|inet_client_addr|pg_postmaster_start_time|clock_timestamp|statement_timestamp|"
    r"justify_interval|pg_sleep|obj_description|col_description|format_type|pg_describe_object|"
    r"pg_identify_object|pg_filenode_relation|pg_index_column_has_property|left|right|lpad|rpad|"
    r"substring|replace|trim|btrim|length|char_length|percentile_cont|percentile_disc|round|"
    r"greatest|least|nullif|abs|ceil|floor|now|coalesce)$",
    re.IGNORECASE,
)
_SQL_COMMANDS: dict[str, Risk] = {
    "SHOW": "read",
    "VACUUM": "change",
    "ANALYZE": "change",
    "CHECKPOINT": "change",
    "REINDEX": "change",
    "CLUSTER": "change",
    "REFRESH": "change",
    "COMMENT": "change",
    "NOTIFY": "change",
    "LISTEN": "read",
    "DISCARD": "read",
    "RESET": "read",
    "LOCK": "change",
    "SECURITY": "change",
    "CREATE": "change",
    "ALTER": "change",
    "REASSIGN": "change",
    "IMPORT": "change",
    "PREPARE": "change",
    "DEALLOCATE": "read",
    "FETCH": "read",
    "DECLARE": "read",
    "CLOSE": "read",
}
_PSQL_META = re.compile(
    r"^\\(d\w*\+?|l\+?|list|x|timing|conninfo|c|connect|q|\?|h|pset|echo|set|unset|encoding|a|t|H|f|g|watch|du|dn|df|dx|dp|z|sf|sv|password|p|r)$"
)


def classify_sql(text: str, *, dialect: str = "postgres") -> Classification:
    """The risk of a SQL script: every statement, psql meta-commands included."""
    parts: list[Classification] = []
    sql_lines: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("\\"):
            parts.append(_psql_meta(stripped))
        else:
            sql_lines.append(line)
    script = "\n".join(sql_lines)
    # a psql variable such as :'name' or :name is a value, not syntax
    script = re.sub(r":'?\"?(\w+)'?\"?", r"'\1'", script)
    if script.strip():
        parts.extend(_sql_statements(script, dialect))
    return _combine(parts) if parts else _c("read", "sql.empty")


def _psql_meta(line: str) -> Classification:
    command = line.split()[0]
    if command in (
        "\\!",
        "\\i",
        "\\ir",
        "\\include",
        "\\gexec",
        "\\o",
        "\\out",
        "\\w",
        "\\write",
        "\\e",
        "\\edit",
    ):
        return _c("unknown", f"psql.meta{command.replace(chr(92), '.')}")
    if command in ("\\copy",):
        return _c("change", "psql.meta.copy")
    if _PSQL_META.match(command):
        return _c("read", "psql.meta")
    return _c("unknown", "psql.meta.unknown")


def _sql_statements(script: str, dialect: str) -> list[Classification]:
    import logging

    import sqlglot
    from sqlglot import exp

    logging.getLogger("sqlglot").setLevel(logging.ERROR)
    try:
        statements = [s for s in sqlglot.parse(script, read=dialect) if s is not None]
    except Exception:  # sqlglot raises ParseError, TokenError and others: all are unknown
        return [_c("unknown", "parse-error")]
    # a comment after the last semicolon parses as an empty statement of its own
    statements = [s for s in statements if not isinstance(s, exp.Semicolon)]
    return [_sql_statement(statement, exp, dialect) for statement in statements]


def _sql_statement(statement: Any, exp: Any, dialect: str) -> Classification:
    if isinstance(statement, exp.Command):
        keyword = str(statement.this).upper()
        expression = statement.expression
        rest = expression if isinstance(expression, str) else getattr(expression, "name", "")
        if keyword == "EXPLAIN":
            match = re.match(r"^\s*(\(([^)]*)\)|ANALYZE\b|VERBOSE\b|\s)*", rest, re.IGNORECASE)
            options = match.group(0) if match else ""
            if re.search(r"\banalyze\b(?!\s+(false|off))", options, re.IGNORECASE):
                inner = _combine(_sql_statements(rest[len(options) :], dialect))
                return Classification(inner.risk, ("sql.explain-analyze", *inner.reasons))
            return _c("read", "sql.explain")
        if keyword == "ALTER" and re.match(r"\s*SYSTEM\b", rest, re.IGNORECASE):
            return _c("change", "sql.alter-system")
        if keyword in ("DO", "CALL", "EXECUTE", "COPY"):
            return _c("unknown", f"sql.{keyword.lower()}")
        if keyword in ("DROP", "TRUNCATE", "DELETE"):
            return _c("destructive", f"sql.{keyword.lower()}")
        risk = _SQL_COMMANDS.get(keyword)
        return _c(risk, f"sql.{keyword.lower()}") if risk else _c("unknown", f"sql.{keyword.lower()}")
    if isinstance(statement, exp.Column) and statement.name.upper() in _SQL_COMMANDS:
        keyword = statement.name.upper()
        return _c(_SQL_COMMANDS[keyword], f"sql.{keyword.lower()}")
    parts: list[Classification] = []
    for node in statement.walk():
        parts.extend(_sql_node(node, exp))
    top = (
        exp.Select,
        exp.Union,
        exp.Intersect,
        exp.Except,
        exp.Subquery,
        exp.Set,
        exp.Transaction,
        exp.Commit,
        exp.Rollback,
        exp.Describe,
        exp.Use,
        exp.Values,
        exp.Pragma,
    )
    if not parts and not isinstance(statement, top) and not isinstance(statement, (exp.Analyze,)):
        parts.append(_c("unknown", f"sql.statement:{type(statement).__name__.lower()}"))
    if isinstance(statement, exp.Analyze):
        parts.append(_c("change", "sql.analyze"))
    return _combine(parts or [_c("read", "sql.select")])


def _sql_node(node: Any, exp: Any) -> list[Classification]:
    if isinstance(node, exp.Drop):
        return [_c("destructive", "sql.drop")]
    if isinstance(node, exp.TruncateTable):
        return [_c("destructive", "sql.truncate")]
    if isinstance(node, exp.Delete):
        return [_c("destructive", "sql.delete" if node.args.get("where") else "sql.delete-all")]
    if isinstance(node, exp.Update):
        return [_c("change", "sql.update") if node.args.get("where") else _c("destructive", "sql.update-all")]
    if isinstance(node, (exp.Insert, exp.Merge)):
        return [_c("change", f"sql.{type(node).__name__.lower()}")]
    if isinstance(node, (exp.Create, exp.Alter, exp.Grant, exp.Revoke, exp.Into)):
        return [_c("change", f"sql.{type(node).__name__.lower()}")]
    if isinstance(node, exp.Copy):
        kind = node.args.get("kind")  # True: COPY ... FROM
        files = [f.name for f in node.args.get("files") or []]
        if not kind and files and all(f.upper() == "STDOUT" for f in files):
            return [_c("read", "sql.copy-stdout")]
        return [_c("change", "sql.copy")]
    if isinstance(node, exp.Lock):
        return [_c("change", "sql.lock")]
    if isinstance(node, exp.Anonymous):
        name = str(node.name).lower()
        risk = _SQL_FUNCTIONS.get(name)
        if risk:
            return [_c(risk, f"sql.function.{name}")]
        if not _SQL_READ_FUNCTIONS.match(name):
            return [_c("unknown", f"sql.function:{name}")]
    return []
