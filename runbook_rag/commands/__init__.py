"""The commands of a runbook step, and how risky each one is.

``extract_commands`` finds the commands in Markdown: fenced blocks in a shell or SQL language
(and unlabelled blocks that start with a known tool), ``$ `` prompt lines, and inline code that is
a whole command. In a session (a block that opens with a prompt) only the prompt lines are
commands; elsewhere a line that no known tool or program path opens and that is shaped like output
or data (``ls -l``, a table, ``key: value``, JSON, a log line, a numbered reply, another language's
expression) is skipped, with the rows that follow it. ``classify`` gives each command a risk,
with the rule ids that decided it:

    read < change < destructive < unknown

A command is ``read`` only when every part of it is known to be read-only. Shell is parsed with
tree-sitter-bash and every simple command of a pipeline, list, subshell, loop, function, heredoc
and ``-c`` argument is classified; SQL is parsed with sqlglot, every statement of a script. The risk of a
compound is the highest of its parts. ``unknown`` ranks highest and is gated like
``destructive``: anything dynamic (command substitution, ``eval``, ``source``, piping into an
interpreter), an interactive shell, a wrapper whose inner command cannot be classified, a tool or
verb not in the tool tables, and any parse error. tree-sitter reads past syntax errors, so any
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

Modules: ``extract`` (Markdown), ``shell`` and ``syntax`` (the tree-sitter walk and quote
removal), ``wrappers`` (a command by its words), ``tools`` with ``clusters``, ``datastores``,
``cloud`` and ``hosts`` (the verb tables), ``sql`` (sqlglot) and ``risks`` (the records).
"""

from __future__ import annotations

from .canonical import normalize
from .extract import extract_commands
from .risks import RISKS, Classification, Command, Language, Risk
from .shell import classify

__all__ = [
    "RISKS",
    "Classification",
    "Command",
    "Language",
    "Risk",
    "classify",
    "extract_commands",
    "normalize",
]
