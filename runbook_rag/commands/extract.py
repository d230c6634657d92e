"""The commands of a Markdown document: shell and SQL blocks, prompt lines and inline code."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from .risks import Command
from .syntax import _parses
from .wrappers import KNOWN_TOOLS, _tool_name

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh", "shell-session", "terminal"})
SQL_LANGUAGES = frozenset({"sql", "psql", "postgresql", "pgsql", "plpgsql"})
_PROMPT = re.compile(r"^\s*(?:[\w.@~:/-]*\s*)?[$#]\s+(?=\S)")
_DOLLAR = re.compile(r"^\s*\$\s+(?=\S)")
_SQL_END = re.compile(r";\s*(--.*)?$")
# a backslash before a line break, unless the backslash is itself escaped (``\\`` then a break)
_CONTINUATION = re.compile(r"(?<!\\)((?:\\\\)*)\\\r?\n")


def normalize(command_text: str) -> str:
    """The form in which two commands are compared: line continuations joined, every run of
    whitespace one space, no leading or trailing space.

    Nothing else changes: quotes, case and a ``$ ``/``# `` prefix stay (extraction has already
    removed prompts). Whitespace inside quotes is collapsed too: the result is a key to compare
    by, not a command to run.
    """
    joined = _CONTINUATION.sub(r"\1", command_text)
    return re.sub(r"\s+", " ", joined).strip()


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
