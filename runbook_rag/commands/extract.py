"""The commands of a Markdown document: shell and SQL blocks, prompt lines and inline code."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from ..parsing import passage_parser
from .risks import Command, _words
from .syntax import _parses
from .wrappers import KNOWN_TOOLS, _tool_name

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh", "shell-session", "terminal"})
SQL_LANGUAGES = frozenset({"sql", "psql", "postgresql", "pgsql", "plpgsql"})
# A shell prompt: ``$ ``, ``$> ``, ``user@host:~$ ``, ``[root@host dir]# ``, ``sh-5.1# ``. A bare
# ``# `` is a comment in a shell block, so it is not taken for root's prompt.
_PROMPT = re.compile(
    r"^\s*(?:\$>?|[\w.-]+@[\w.-]+(?::\S*)?\s?[$#]|\[[\w.-]+(?:@[\w.-]+)?(?:\s[^\]\n]*)?\][$#]"
    r"|(?:ba|z)?sh-\d+(?:\.\d+)*[$#])\s+(?=\S)"
)
_SQL_END = re.compile(r";\s*(--.*)?$")
# Commands come only from code: a fence (``` or ~~~), a code span (`) or an indented block
# (four columns in, after any list or quote markers: four spaces or a tab). Text with none of
# these holds no command, and is not parsed.
_MAY_HOLD_CODE = re.compile(r"`|~~~|\t| {4}")


def extract_commands(markdown_text: str, start_line: int = 1) -> list[Command]:
    """The commands of ``markdown_text`` in document order; ``start_line`` is its first line's number."""
    found: list[Command] = []
    if not _MAY_HOLD_CODE.search(markdown_text):
        return found
    for token in passage_parser().parse(markdown_text):
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
    elif language in SHELL_LANGUAGES or language == "":
        prompted = [i for i, line in enumerate(lines) if _PROMPT.match(line)]
        opening = next((line for line in lines if line.strip() and not line.lstrip().startswith("#")), "")
        head = opening.split()
        if _PROMPT.match(opening) or (language == "console" and prompted):
            # a session: the prompt lines are the commands, everything else is their output
            yield from _prompt_block(lines, first, prompted)
        elif language == "console":
            return
        elif language or (
            head
            and _tool_name(head[0]) in KNOWN_TOOLS
            and len(_COLUMNS.findall(opening)) < 2  # a table (a config file's, or output)
            and _parses(" ".join(head))
        ):
            # a script (an unlabelled block only when it opens with a known tool), where a prompt
            # further down marks a command run elsewhere, e.g. in the shell that a line before opened
            yield from _shell_block([_PROMPT.sub("", line, count=1) for line in lines], first)


def _prompt_block(lines: list[str], first: int, prompted: list[int]) -> Iterator[Command]:
    """Only prompt lines (and what continues them) are commands; the rest is output."""
    for i in prompted:
        body = [_PROMPT.sub("", lines[i], count=1)]
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
    columns = 0  # the fields of the output line before: the rows of a table have as many
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            columns = columns if line.strip() else 0
            i += 1
            continue
        if _printed(line) or (columns == len(line.split()) and not _command_start(line)):
            columns = len(line.split())
            i += 1
            continue
        columns = 0
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
        if end == j and not _command_start(line, brackets=False) and not _parses(text):
            i += 1  # text that is not shell at all (a query, a fragment of prose or output)
            continue
        yield Command(text, "shell", first + i, first + end)
        i = end + 1


# What a command prints, or text around it, by the shape of a line that no tool name opens.
_PRINTED = re.compile(
    r"""^\s*(?:
    [dlcbps][-rwxsStT]{9}[.+@]?(?:\s|$)      # a line of ls -l (``-rw-r--r--`` is caught below)
    | total\s\d+(?:\.\d+)?[KMGT]?\s*$        # ls -l's first line
    | -                                        # an option on its own line, a YAML list item, a diff
    | \d+(?:[.:/-]\d+)*[.)]?(?:\s|$)          # counters, timings, numbered lines, redis-cli replies
    | \d{4}-\d\d-\d\d[T\s]                    # ISO timestamps
    | [A-Za-z_][\w.-]*:                        # key: value, LEVEL: message, key:value
    | [A-Za-z_][\w.-]*\s+=\s                    # key = value (TOML, INI)
    | //\s | /(?:\s|$)                          # another language's comment or operator
    | [A-Za-z_][\w.]*\((?!\s*\))                 # a call, not a shell function's ``name()``
    | [A-Za-z]+,\s                             # the first word of a sentence
    | [A-Z][a-z]{2}\s[\s\d]\d\s\d\d:\d\d:\d\d     # syslog time
    | [IWEF]\d{4}\s\d\d:\d\d:\d\d               # klog
    | [IWEF],\s\[                              # Ruby's logger
    | \[[A-Z]+\]                               # [ERR], [INFO]
    | [{\[]\s*["{\[]| "[^"]*"\s*[:=] | [\]}],?\s*$  # JSON, quoted key=value logs
    | (?:\.\.\.|…)\s*$                           # elided output
    | [└├│─●•]| \*\s                           # trees, status bullets, lists
    )""",
    re.VERBOSE,
)
_COLUMNS = re.compile(r"\S {2,}(?=\S)")
_RESERVED = _words("if then else elif fi for while until do done case esac function select time [[ !")


def _printed(line: str) -> bool:
    """Whether ``line`` is output or data rather than a command: its shape, when no tool opens it."""
    if _command_start(line):
        return False
    before_comment = line.split(" #", 1)[0].strip()
    # columns aligned by runs of spaces: a table's header or rows
    return bool(_PRINTED.match(line)) or len(_COLUMNS.findall(before_comment)) >= 2


def _command_start(line: str, *, brackets: bool = True) -> bool:
    """Whether ``line`` opens like a command: a known tool, a path to a program, an assignment or
    a word of shell syntax (a subshell's or a group's bracket only with ``brackets``)."""
    words = line.split()
    if not words:
        return False
    word = words[0]
    if word.startswith(("(", "{", ")", "}")):
        return brackets
    return (
        _tool_name(word) in KNOWN_TOOLS
        or word in _RESERVED
        or bool(re.match(r"^(?:\.{0,2}|~)/\w", word))
        or bool(re.match(r"^[A-Za-z_]\w*\+?=", word))
    )


_SQL_PROMPT = re.compile(r"^\s*[\w.-]*[=-][#>]\s?")


# psql's output: a table's rule (``----+----``), its rows (`` 1 | a``) and the row count
_PSQL_OUTPUT = re.compile(r"^\s*(?:-+(?:\+-+)+\s*|\(\d+ rows?\)|[^|]*[^|\s] \| [^|]*(?: \| .*)?)$")


def _sql_block(lines: list[str], first: int) -> Iterator[Command]:
    lines = [_SQL_PROMPT.sub("", line, count=1) for line in lines]
    start: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if start is None:
            if not stripped or stripped.startswith("--") or _PSQL_OUTPUT.match(line):
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
