"""Source discovery: find runbook files under source folders and parse them into documents.

One module per source kind; this module walks the folders, reads bytes safely, and
turns every failure into a :class:`~runbook_rag.records.Skipped` entry naming the
file (and line) so the rest of the build goes on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..access import AccessMap
from ..errors import ConfigError, SourceError
from ..records import BuildWarning, Document, Skipped
from ..redaction import redact
from . import confluence, markdown

DEFAULT_MAX_BYTES = 5 * 1024 * 1024


def discover(source_dir: Path) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, source)`` for every runbook file, ``source`` relative with forward slashes."""
    for root, dirs, files in os.walk(source_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(markdown.SUFFIXES + confluence.SUFFIXES):
                continue
            path = Path(root) / name
            yield path, path.relative_to(source_dir).as_posix()


@dataclass(frozen=True, slots=True)
class Loaded:
    """The documents found under the source folders, and what was wrong with the others."""

    documents: list[Document]
    skipped: list[Skipped]
    warnings: list[BuildWarning]


def load_documents(
    source_dirs: Sequence[Path | str],
    *,
    access_map: AccessMap | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Loaded:
    """Parse every runbook under ``source_dirs``.

    Report entries pass through the redactor: a reason or a path may quote a value.
    """
    access_map = access_map or AccessMap()
    documents: list[Document] = []
    skipped: list[Skipped] = []
    warnings: list[BuildWarning] = []
    seen: set[str] = set()
    for source_dir in map(Path, source_dirs):
        if not source_dir.is_dir():
            raise ConfigError("source folder does not exist or is not a folder", path=source_dir)
        for path, source in discover(source_dir):
            if source in seen:
                skipped.append(
                    Skipped(
                        redact(source).text,
                        redact(f"duplicate source path (also under another folder): {path}").text,
                    )
                )
                continue
            seen.add(source)
            try:
                text = read_text(path, source=source, max_bytes=max_bytes)
                if path.suffix.lower() in confluence.SUFFIXES:
                    sidecar = _sidecar(path, source=source, max_bytes=max_bytes)
                    doc = confluence.parse_confluence(
                        text, source=source, access_map=access_map, sidecar=sidecar, warnings=warnings
                    )
                else:
                    doc = markdown.parse_markdown(
                        text, source=source, access_map=access_map, warnings=warnings
                    )
                documents.append(doc)
            except SourceError as exc:
                skipped.append(Skipped(redact(exc.source).text, redact(exc.reason).text, exc.line))
    excerpts = {d.source: d.metadata["excerpt"] for d in documents if "excerpt" in d.metadata}
    documents, include_warnings, include_skipped = confluence.resolve_includes(documents, excerpts)
    warnings.extend(include_warnings)
    skipped.extend(include_skipped)
    warnings = [BuildWarning(redact(w.source).text, redact(w.message).text, w.line) for w in warnings]
    return Loaded(documents, skipped, warnings)


def _sidecar(path: Path, *, source: str, max_bytes: int) -> dict[str, object] | None:
    """A page's metadata from ``<same name>.json`` next to it, when there is one."""
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    try:
        data = json.loads(read_text(side, source=source + " (sidecar)", max_bytes=max_bytes))
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"sidecar {side.name} is not valid JSON: {exc.msg}", source=source, line=exc.lineno
        ) from None
    if not isinstance(data, dict):
        raise SourceError(f"sidecar {side.name} must be a JSON object", source=source)
    return data


def read_text(path: Path, *, source: str, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Read a file as UTF-8 text, refusing empty, binary, oversized and undecodable files.

    The size is checked before reading and the read is capped, so a file that grows
    meanwhile (or lies about its size) never costs more than ``max_bytes`` of memory.
    """
    try:
        if path.stat().st_size > max_bytes:
            raise SourceError(f"file is larger than the {max_bytes:,}-byte limit", source=source)
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise SourceError(f"file is larger than the {max_bytes:,}-byte limit", source=source)
    except OSError as exc:
        raise SourceError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    if not data.strip():
        raise SourceError("empty file", source=source)
    if b"\x00" in data[:8192]:
        raise SourceError("binary file (contains NUL bytes)", source=source)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SourceError(f"not valid UTF-8 (byte {exc.start})", source=source, line=line) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")
