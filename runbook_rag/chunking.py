"""Heading-aware chunking of Markdown with markdown-it-py.

Each chunk belongs to one section (the text under one heading), keeps its heading
path and 1-based line range, and fits the embedding model's window as measured by
the model's own tokenizer: nothing is ever silently truncated. Code fences are kept
whole; a fence that alone exceeds the window is split at line boundaries and each
piece re-opens the fence with its language.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import SourceError, SourceLimitError
from .parsing import structure_parser
from .records import Chunk, Document

TokenCounter = Callable[[Sequence[str]], list[int]]
"""Counts the model's word pieces of each text, without special tokens."""

DEFAULT_MAX_CHUNKS = 2000
"""A document yielding more chunks than this is refused (the biggest real runbooks yield < 150)."""


@dataclass(frozen=True, slots=True)
class _Block:
    start: int  # 0-based first line
    end: int  # 0-based line after the last
    parts: tuple[tuple[int, int], ...] = ()  # child blocks (list items...) to split at first


@dataclass(frozen=True, slots=True)
class _Piece:
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class _Section:
    path: tuple[str, ...]
    blocks: tuple[_Block, ...]


def chunk_document(
    doc: Document,
    *,
    count_tokens: TokenCounter,
    max_tokens: int,
    max_chunks: int | None = DEFAULT_MAX_CHUNKS,
    counts_add_up: bool = False,
) -> list[Chunk]:
    """Split ``doc`` into chunks whose embedded text fits ``max_tokens`` word pieces.

    Chunks are packed by their lines' token counts; unless ``counts_add_up`` (a text's count
    is the sum of its lines', see
    :attr:`runbook_rag.embedding.SentenceTransformerEmbedder.counts_add_up`), each
    chunk's embedded text is counted again and checked against the window.

    A document yielding more than ``max_chunks`` chunks (None: no cap) raises
    :class:`~runbook_rag.errors.SourceLimitError` as soon as the cap is passed, so a
    hostile document costs little before it is refused."""
    lines = doc.text.split("\n")
    sections = _sections(doc.text)
    if max_chunks is not None:
        # Every section with text yields at least one chunk: refuse before counting any token.
        filled = [
            s for s in sections if any(lines[n].strip() for b in s.blocks for n in range(b.start, b.end))
        ]
        if len(filled) > max_chunks:
            raise SourceLimitError(
                f"yields more than {max_chunks:,} chunks, the per-document limit "
                "(RUNBOOK_RAG_MAX_CHUNKS_PER_DOCUMENT)",
                source=doc.source,
                line=filled[max_chunks].blocks[0].start + 1,
            )
    line_tokens = count_tokens(lines)
    chunks: list[Chunk] = []
    seen: Counter[tuple[str, tuple[str, ...], str]] = Counter()
    # What each section's heading path costs every chunk of it, counted in one call.
    probes = [Chunk("", doc.doc_id, doc.source, doc.title, s.path, 0, 0, "", doc.labels) for s in sections]
    prefixes = count_tokens([probe.embed_text for probe in probes])
    for section, prefix in zip(sections, prefixes, strict=True):
        budget = max_tokens - prefix
        if budget < 16:
            line = section.blocks[0].start + 1
            raise SourceError("heading path too long for the embedding window", source=doc.source, line=line)
        for piece in _pack(section.blocks, lines, line_tokens, budget, count_tokens):
            key = (doc.doc_id, section.path, piece.text)
            seen[key] += 1
            chunk = Chunk(
                chunk_id=_chunk_id(*key, seen[key]),
                doc_id=doc.doc_id,
                source=doc.source,
                title=doc.title,
                heading_path=section.path,
                start_line=piece.start + 1,
                end_line=piece.end,
                text=piece.text,
                labels=doc.labels,
                url=doc.metadata.get("url"),
            )
            chunks.append(chunk)
        if max_chunks is not None and len(chunks) > max_chunks:
            raise SourceLimitError(
                f"yields more than {max_chunks:,} chunks, the per-document limit "
                "(RUNBOOK_RAG_MAX_CHUNKS_PER_DOCUMENT)",
                source=doc.source,
                line=chunks[max_chunks].start_line,
            )
    if not counts_add_up:
        _verify_window(chunks, count_tokens, max_tokens, doc.source)
    return chunks


def _sections(text: str) -> list[_Section]:
    tokens = structure_parser().parse(text)
    stack: list[tuple[int, str]] = []
    sections: list[_Section] = []
    blocks: list[_Block] = []

    def close() -> None:
        if blocks:
            sections.append(_Section(tuple(h for _, h in stack), tuple(blocks)))
        blocks.clear()

    for i, tok in enumerate(tokens):
        if tok.level != 0 or tok.map is None or tok.nesting == -1 or tok.type in ("front_matter", "hr"):
            continue
        if tok.type == "heading_open":
            close()
            level = int(tok.tag[1:])
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, tokens[i + 1].content.strip()))
            continue
        blocks.append(_Block(tok.map[0], tok.map[1], _children(tokens, i)))
    close()
    return sections


def _children(tokens: list[Any], i: int) -> tuple[tuple[int, int], ...]:
    """Line spans of the direct children of the container opened at ``tokens[i]``."""
    if tokens[i].nesting != 1:
        return ()
    level, spans = tokens[i].level + 1, []
    # By index: a slice (or islice) of the rest per block made many-block documents quadratic.
    for j in range(i + 1, len(tokens)):
        tok = tokens[j]
        if tok.level < level:
            break
        if tok.level == level and tok.nesting == 1 and tok.map is not None:
            spans.append((tok.map[0], tok.map[1]))
    return tuple(spans)


def _pack(
    blocks: Sequence[_Block],
    lines: list[str],
    line_tokens: list[int],
    budget: int,
    count_tokens: TokenCounter,
) -> list[_Piece]:
    """Greedily group whole blocks up to ``budget``; split only blocks that alone exceed it.

    An oversized container (a list, a quote) is split between its children first
    (whole list items), and only a child that alone exceeds the window is split
    between lines.
    """
    pieces: list[_Piece] = []
    group: list[_Block] = []

    def flush() -> None:
        if group:
            pieces.append(_span(lines, group[0].start, group[-1].end))
        group.clear()

    for block in blocks:
        size = sum(line_tokens[block.start : block.end])
        if size > budget:
            flush()
            if len(block.parts) > 1:
                # Children may leave lines uncovered (a table's delimiter row): make them
                # tile the block, each running to where the next one starts.
                starts = [block.start] + [a for a, _ in block.parts[1:]]
                parts = [_Block(a, b) for a, b in zip(starts, [*starts[1:], block.end], strict=True)]
                pieces.extend(_pack(parts, lines, line_tokens, budget, count_tokens))
            else:
                pieces.extend(_split_lines(block, lines, line_tokens, budget, count_tokens))
            continue
        # Measure the span that would be emitted, blank and uncovered lines included.
        if group and sum(line_tokens[group[0].start : block.end]) > budget:
            flush()
        group.append(block)
    flush()
    return [p for p in pieces if p.text.strip()]


def _span(lines: list[str], start: int, end: int, *, head: str = "", tail: str = "") -> _Piece:
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    body = "\n".join(lines[start:end])
    return _Piece(start, end, "\n".join(x for x in (head, body, tail) if x))


def _split_lines(
    block: _Block, lines: list[str], line_tokens: list[int], budget: int, count_tokens: TokenCounter
) -> list[_Piece]:
    """Split between lines; a cut inside a code fence closes it and re-opens it, with its
    language, at the top of the next piece."""
    fences = _fence_openers(lines, block.start, block.end)
    reserve = max(
        (line_tokens[n] + count_tokens([lines[n].strip()[:3]])[0] for n in set(fences.values())),
        default=0,
    )
    room = budget - reserve
    pieces: list[_Piece] = []
    start, used = block.start, 0

    def cut(end: int) -> None:
        opened = fences.get(start)
        head = lines[opened] if opened is not None else ""
        still_open = fences.get(end) if end < block.end else None
        tail = ""
        if still_open is not None:
            opener = lines[still_open]
            tail = opener[: len(opener) - len(opener.lstrip())] + opener.lstrip()[:3]
        pieces.append(_span(lines, start, end, head=head, tail=tail))

    for n in range(block.start, block.end):
        size = line_tokens[n]
        if size > room:
            if n > start:
                cut(n)
            pieces.extend(_split_words(n, lines[n], room, count_tokens))
            start, used = n + 1, 0
        elif used + size > room and n > start:
            cut(n)
            start, used = n, size
        else:
            used += size
    if start < block.end:
        cut(block.end)
    return pieces


def _fence_openers(lines: list[str], start: int, end: int) -> dict[int, int]:
    """For each line inside a fenced code block (after its opener, before its closer),
    the line number of the opener."""
    inside: dict[int, int] = {}
    opener: int | None = None
    marker = ""
    for n in range(start, end):
        stripped = lines[n].lstrip()
        if opener is None:
            if stripped.startswith(("```", "~~~")):
                opener, marker = n, stripped[:3]
        elif stripped.startswith(marker) and not stripped[3:].strip(marker[0]).strip():
            opener = None
        else:
            inside[n] = opener
    return inside


def _split_words(n: int, line: str, budget: int, count_tokens: TokenCounter) -> list[_Piece]:
    """A single line longer than the window: split between words, all pieces on line ``n``."""
    words = [part for word in line.split(" ") for part in _slices(word, budget)]
    sizes = count_tokens(words)
    pieces: list[_Piece] = []
    current: list[str] = []
    used = 0
    for word, size in zip(words, sizes, strict=True):
        if used + size > budget and current:
            pieces.append(_Piece(n, n + 1, " ".join(current)))
            current, used = [], 0
        current.append(word)
        used += size
    if current:
        pieces.append(_Piece(n, n + 1, " ".join(current)))
    return pieces


def _slices(word: str, budget: int) -> list[str]:
    # A "word" longer than the window (a base64 blob, a minified line): cut by characters;
    # a character is at most one word piece for the tokenizers we use, and the final
    # window check catches any tokenizer where that is not so.
    return [word[i : i + budget] for i in range(0, len(word), budget)] if len(word) > budget else [word]


def _chunk_id(doc_id: str, path: tuple[str, ...], text: str, occurrence: int) -> str:
    key = "\x1f".join((doc_id, "\x1e".join(path), text, str(occurrence)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _verify_window(chunks: list[Chunk], count_tokens: TokenCounter, max_tokens: int, source: str) -> None:
    """Count each chunk's embedded text whole: for other tokenizers, the sum of its lines'
    counts may differ from it."""
    if not chunks:
        return
    for chunk, size in zip(chunks, count_tokens([c.embed_text for c in chunks]), strict=True):
        if size > max_tokens:
            raise SourceError(
                f"chunk of {size} tokens exceeds the model window of {max_tokens}",
                source=source,
                line=chunk.start_line,
            )
