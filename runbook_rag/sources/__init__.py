"""Source discovery: find runbook files under source folders and parse them into documents.

One module per source kind; :mod:`.files` walks the folders and reads bytes without
ever leaving them, and this module turns every failure into a
:class:`~runbook_rag.records.Skipped` entry naming the file (and line) so the rest
of the build goes on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict, Unpack

from ..access import AccessMap
from ..errors import ConfigError, SidecarError, SourceError, UnsafeSourceError
from ..records import BuildWarning, Document, Skipped
from ..redaction import redact
from . import confluence, files, markdown
from .files import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_LINE_CHARS,
    check_lines,
    check_words,
    read_text,
    resolve_within,
)
from .sidecar import Sidecar, parse_sidecar

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_LINE_CHARS",
    "Loaded",
    "Streamed",
    "discover",
    "load_documents",
    "read_text",
    "stream_documents",
]

SUFFIXES = markdown.SUFFIXES + confluence.SUFFIXES


def discover(source_dir: Path, *, skipped: list[Skipped] | None = None) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, source)`` for every runbook file, ``source`` relative with forward slashes.

    Symbolic links to folders are not descended into; they are appended to ``skipped``."""
    return files.discover(source_dir, suffixes=SUFFIXES, skipped=skipped)


@dataclass(frozen=True, slots=True)
class Loaded:
    """The documents found under the source folders, and what was wrong with the others."""

    documents: list[Document]
    skipped: list[Skipped]
    warnings: list[BuildWarning]


@dataclass(frozen=True, slots=True)
class Streamed:
    """The documents under the source folders, parsed as they are taken: ``files`` is the
    number of runbook files found (an upper bound on the documents); ``skipped`` and
    ``warnings`` are complete once ``documents`` is exhausted."""

    files: int
    documents: Iterator[Document]
    skipped: list[Skipped]
    warnings: list[BuildWarning]


class LoadOptions(TypedDict, total=False):
    """What :func:`stream_documents` takes besides the folders."""

    access_map: AccessMap | None
    max_bytes: int
    max_line_chars: int
    max_words: int | None


def load_documents(source_dirs: Sequence[Path | str], **options: Unpack[LoadOptions]) -> Loaded:
    """Parse every runbook under ``source_dirs`` (see :func:`stream_documents`)."""
    streamed = stream_documents(source_dirs, **options)
    documents = list(streamed.documents)
    return Loaded(documents, streamed.skipped, streamed.warnings)


def stream_documents(
    source_dirs: Sequence[Path | str],
    *,
    access_map: AccessMap | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_line_chars: int = DEFAULT_MAX_LINE_CHARS,
    max_words: int | None = None,
) -> Streamed:
    """Find every runbook under ``source_dirs`` now, and parse each as it is taken: Markdown
    documents in the order found, then the Confluence pages (a page may include another, so
    pages are taken once all of them are parsed).

    ``max_words`` (when given) refuses, before parsing, a document with more words than the
    per-document chunk cap could hold.

    Report entries pass through the redactor: a reason or a path may quote a value.
    """
    access_map = access_map or AccessMap()
    skipped: list[Skipped] = []
    warnings: list[BuildWarning] = []
    found: list[tuple[Path, Path, str]] = []
    seen: set[str] = set()
    for source_dir in map(Path, source_dirs):
        if not source_dir.is_dir():
            raise ConfigError("source folder does not exist or is not a folder", path=source_dir)
        for path, source in discover(source_dir, skipped=skipped):
            if source in seen:
                skipped.append(Skipped(source, f"duplicate source path (also under another folder): {path}"))
                continue
            seen.add(source)
            found.append((source_dir, path, source))

    def documents() -> Iterator[Document]:
        pages: list[Document] = []
        listings: dict[Path, list[str]] = {}
        for source_dir, path, source in found:
            try:
                is_page = path.suffix.lower() in confluence.SUFFIXES
                _check_link(path, source=source, root=source_dir, access_map=access_map, is_page=is_page)
                text = read_text(path, source=source, max_bytes=max_bytes, root=source_dir)
                if is_page:
                    sidecar = _sidecar(
                        path, source=source, max_bytes=max_bytes, root=source_dir, listings=listings
                    )
                    page = confluence.parse_confluence(
                        text, source=source, access_map=access_map, sidecar=sidecar, warnings=warnings
                    )
                    # Storage format often sits on one line: the limit is on the Markdown
                    # rendering, which is what chunking parses and tokenises.
                    check_lines(page.text, source=source, max_line_chars=max_line_chars)
                    check_words(page.text, source=source, max_words=max_words)
                    pages.append(page)
                    continue
                check_lines(text, source=source, max_line_chars=max_line_chars)
                check_words(text, source=source, max_words=max_words)
                doc = markdown.parse_markdown(text, source=source, access_map=access_map, warnings=warnings)
            except SourceError as exc:
                skipped.append(Skipped(exc.source, exc.reason, exc.line))
                continue
            except RecursionError:
                # Markup or JSON nested deeper than the parsers can follow: this document only.
                skipped.append(Skipped(source, "nested too deeply to parse safely"))
                continue
            yield doc
        excerpts = {d.source: d.metadata["excerpt"] for d in pages if "excerpt" in d.metadata}
        pages, include_warnings, include_skipped = confluence.resolve_includes(pages, excerpts)
        warnings.extend(include_warnings)
        skipped.extend(include_skipped)
        skipped[:] = [Skipped(redact(s.source).text, redact(s.reason).text, s.line) for s in skipped]
        warnings[:] = [BuildWarning(redact(w.source).text, redact(w.message).text, w.line) for w in warnings]
        yield from pages

    return Streamed(len(found), documents(), skipped, warnings)


def _check_link(path: Path, *, source: str, root: Path, access_map: AccessMap, is_page: bool) -> None:
    """A symbolic link to a file is followed only inside the source folder, and only when
    following it cannot change who may read the file."""
    if not os.path.islink(path):
        return
    target = resolve_within(path, root, source=source).as_posix()
    if is_page:
        # A page's restrictions live in the sidecar next to the file, not next to the link.
        raise UnsafeSourceError(
            f"a Confluence page must not be a symbolic link (to {target}): not followed", source=source
        )
    # Read as Markdown, a page or a sidecar would shed the restrictions its sidecar gives it.
    if not target.lower().endswith(markdown.SUFFIXES):
        raise UnsafeSourceError(
            f"symbolic link to {target}, which is not a Markdown runbook: not followed", source=source
        )
    # The access map labels by path: a link must not give a file another rule's groups.
    if access_map.rule_for(source) != access_map.rule_for(target):
        raise UnsafeSourceError(
            f"symbolic link to {target}, which the access map labels differently: not followed",
            source=source,
        )


def _sidecar(
    path: Path, *, source: str, max_bytes: int, root: Path, listings: dict[Path, list[str]]
) -> Sidecar | None:
    """A page's metadata from ``<same name>.json`` next to it, when there is one.

    Anything there that cannot be read as a sidecar (a link, a FIFO, a folder, a file
    named with other letter case) keeps the page out: its restrictions are unknown."""
    side = path.with_suffix(".json")
    name = Path(source).with_suffix(".json").as_posix()
    try:
        os.lstat(side)
    except FileNotFoundError:
        other = _case_variant(side, listings)
        if other is None:
            return None
        raise SidecarError(
            f"sidecar must be named {side.name}, found {other}: the page's restrictions are unknown",
            source=source,
            sidecar=name,
        ) from None
    except OSError as exc:
        raise SidecarError(
            f"cannot check for sidecar {name}: {exc.strerror or exc}", source=source, sidecar=name
        ) from None
    if os.path.islink(side):
        raise SidecarError(f"sidecar {name} is a symbolic link: not followed", source=source, sidecar=name)
    try:
        text = read_text(side, source=name, max_bytes=max_bytes, root=root)
    except SourceError as exc:
        raise SidecarError(
            f"sidecar {name}: {exc.reason}", source=source, sidecar=name, line=exc.line
        ) from None
    return parse_sidecar(text, source=source, sidecar=name)


def _case_variant(side: Path, listings: dict[Path, list[str]]) -> str | None:
    """A file next to ``side`` whose name differs from it only in letter case (``Page.JSON``);
    ``listings`` caches each folder's names, so a folder is listed once per build."""
    if side.parent not in listings:
        try:
            listings[side.parent] = sorted(n for n in os.listdir(side.parent) if n.lower().endswith(".json"))
        except OSError:
            listings[side.parent] = []
    wanted = side.name.casefold()
    return next((n for n in listings[side.parent] if n.casefold() == wanted and n != side.name), None)
