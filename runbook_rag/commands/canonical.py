"""The canonical form of a command: how two commands are compared, and what a grant hashes."""

from __future__ import annotations

import re

from .extract import SQL_LANGUAGES

# A run of characters without any meaning to the canonical form.
_PLAIN = re.compile(r"[^ \t\n\\'\"#$-]+")


def normalize(command: str, language: str = "shell") -> str:
    """A command's canonical form, in which commands are compared and hashed.

    Only whitespace that cannot change what runs is made canonical: outside quotes, runs of
    blanks become one space, the ends are stripped, and a shell's line continuations are
    joined as the shell joins them. What is quoted, an escaped character, a comment, and any
    other space character (a no-break space is part of a word to a shell) stay as they are. A
    line break separates two shell commands, so it stays one (``a b`` and ``a`` then ``b`` on
    the next line are different commands); in SQL a line break is a blank, except the one that
    ends a ``--`` comment. The lines after a shell heredoc operator (``<<``) are data, often
    indented YAML or a script, and are kept as they are but for blanks at the very end.
    """
    sql = language in SQL_LANGUAGES
    text = command.replace("\r\n", "\n").replace("\r", "\n")
    out: list[str] = []
    owed = ""  # the separator owed before the next word: "", " " or "\n"
    heredoc = False  # a heredoc operator was seen: the lines after this one are data
    i, n = 0, len(text)

    def word(part: str) -> None:
        nonlocal owed
        if owed and out:
            out.append(owed)
        owed = ""
        out.append(part)

    while i < n:
        ch = text[i]
        if ch in " \t" or (ch == "\n" and sql):
            owed = owed or " "
            i += 1
        elif ch == "\n":
            if heredoc:
                return "".join(out) + text[i:].rstrip()
            owed = "\n"
            i += 1
        elif not sql and ch == "\\":
            if text.startswith("\n", i + 1):
                i += 2  # a continuation: the shell removes both characters
            else:
                word(text[i : i + 2])
                i += 2
        elif ch in "'\"" or (not sql and text.startswith("$'", i)):
            end = _quote_end(text, i, sql=sql)
            word(text[i:end])
            i = end
        elif (not sql and ch == "#" and (owed or not out)) or (sql and text.startswith("--", i)):
            end = text.find("\n", i)
            end = n if end < 0 else end
            word(text[i:end])
            i = end
            if sql and i < n:
                owed = "\n"
                i += 1
        else:
            match = _PLAIN.match(text, i)
            end = match.end() if match and match.end() > i else i + 1
            word(text[i:end])
            heredoc = heredoc or (not sql and "<<" in text[i:end])
            i = end
    return "".join(out)


def _quote_end(text: str, start: int, *, sql: bool) -> int:
    """Where the quoted string that opens at ``start`` ends (past its closing quote); the
    text's end when it never closes, so all the rest is kept as it is."""
    if text[start] == "$":
        quote, i, escapes = "'", start + 2, True
    else:
        quote, i = text[start], start + 1
        escapes = not sql and quote == '"'
    while i < len(text):
        if escapes and text[i] == "\\":
            i += 2
        elif text[i] == quote:
            return i + 1
        else:
            i += 1
    return len(text)
