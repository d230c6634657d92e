"""The markdown-it configurations runbook-rag parses Markdown with.

Building a parser compiles its rules (and a linkify matcher, which keeps state between
calls), so each configuration is built once per thread and reused.
"""

from __future__ import annotations

import threading

from markdown_it import MarkdownIt
from mdit_py_plugins.front_matter import front_matter_plugin

_local = threading.local()


def structure_parser() -> MarkdownIt:
    """CommonMark with tables and YAML front matter, blocks only: the structure of a whole
    runbook (front matter, headings and blocks, with their line spans and raw inline text),
    which is all that loading and chunking read. Inline markup is parsed where it is read:
    a passage's commands (see :func:`passage_parser`)."""
    parser: MarkdownIt | None = getattr(_local, "structure", None)
    if parser is None:
        parser = _local.structure = (
            MarkdownIt("commonmark").enable("table").use(front_matter_plugin).disable("inline")
        )
    return parser


def passage_parser() -> MarkdownIt:
    """CommonMark with tables: the text of a passage or an answer."""
    parser: MarkdownIt | None = getattr(_local, "passage", None)
    if parser is None:
        parser = _local.passage = MarkdownIt("commonmark").enable("table")
    return parser
