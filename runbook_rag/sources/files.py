"""Finding and reading source files without ever leaving the source folder.

A source folder is untrusted input: a file in it may be a symbolic link to
``/etc/shadow``, a FIFO that blocks its reader forever, a device or a socket. So a
file's path is resolved and must stay under the resolved source folder; it is then
opened one path component at a time from the folder with ``O_NOFOLLOW`` (a link
swapped in after the check is refused, not followed) and ``O_NONBLOCK`` (a FIFO
cannot block the open), and the open file must be a regular file (``fstat``) before
a byte is read. Every refusal is a :class:`~runbook_rag.errors.SourceError` naming
the file, so the build reports it and goes on.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from ..errors import SourceError, SourceLimitError, UnsafeSourceError
from ..records import Skipped

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_LINE_CHARS = 20_000

# getattr: these flags are POSIX-only, and 0 leaves the open as it would be without them.
_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS: int = (
    os.O_RDONLY
    | _NOFOLLOW
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_DIR_FLAGS: int = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)


def discover(
    source_dir: Path, *, suffixes: tuple[str, ...], skipped: list[Skipped] | None = None
) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, source)`` for every file ending in one of ``suffixes``, ``source``
    relative with forward slashes. Hidden files and folders are left out; a symbolic link
    to a folder is never descended into (no loops, no way out) and, like a folder that
    cannot be listed, is appended to ``skipped``."""
    source_dir = Path(source_dir)
    real_root = Path(os.path.realpath(source_dir))

    def unlistable(exc: OSError) -> None:
        if skipped is not None and exc.filename is not None:
            where = _relative(Path(exc.filename), source_dir)
            skipped.append(Skipped(where, f"cannot read folder: {exc.strerror or exc}"))

    for root, dirs, files in os.walk(source_dir, onerror=unlistable):
        kept = []
        for name in sorted(d for d in dirs if not d.startswith(".")):
            path = Path(root) / name
            if not os.path.islink(path):
                kept.append(name)
            elif skipped is not None:
                inside = Path(os.path.realpath(path)).is_relative_to(real_root)
                where = "inside" if inside else "outside"
                skipped.append(
                    Skipped(
                        _relative(path, source_dir),
                        f"symbolic link to a folder {where} the source folder: not followed",
                    )
                )
        dirs[:] = kept
        for name in sorted(files):
            if name.startswith(".") or not name.lower().endswith(suffixes):
                continue
            path = Path(root) / name
            yield path, _relative(path, source_dir)


def _relative(path: Path, source_dir: Path) -> str:
    try:
        return path.relative_to(source_dir).as_posix()
    except ValueError:
        return path.as_posix()


def resolve_within(path: Path, root: Path, *, source: str) -> PurePosixPath:
    """Where ``path`` really is, relative to the real ``root``; refused when that is outside it."""
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    if not real.is_relative_to(real_root):
        # The target is not named: the report should not map the host's file system.
        raise UnsafeSourceError(
            "symbolic link leading outside the source folder: not followed", source=source
        )
    return PurePosixPath(real.relative_to(real_root).as_posix())


def read_text(
    path: Path,
    *,
    source: str,
    max_bytes: int = DEFAULT_MAX_BYTES,
    root: Path | None = None,
) -> str:
    """Read a file under ``root`` (default: its own folder) as UTF-8 text, refusing links that
    leave ``root``, anything but a regular file, and empty, binary, oversized and undecodable files.

    The size is checked before reading and the read is capped, so a file that grows
    meanwhile (or lies about its size) never costs more than ``max_bytes`` of memory.
    """
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    relative = resolve_within(path, root, source=source)
    try:
        fd = _open_beneath(Path(os.path.realpath(root)), relative.parts, source=source)
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            _require_regular(info.st_mode, source=source)  # the file opened, not the one checked
            if info.st_size > max_bytes:
                raise SourceError(f"file is larger than the {max_bytes:,}-byte limit", source=source)
            data = fh.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise SourceError(f"file is larger than the {max_bytes:,}-byte limit", source=source)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeSourceError(
                "symbolic link swapped in while reading: not followed", source=source
            ) from None
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


def _open_beneath(root: Path, parts: tuple[str, ...], *, source: str) -> int:
    """Open ``root/<parts>`` read-only without following a symbolic link on the way."""
    if not parts:
        raise UnsafeSourceError(
            "not a regular file (the source folder itself): skipped unread", source=source
        )
    if os.open not in os.supports_dir_fd:  # no openat (not POSIX): check, then open the whole path
        target = root.joinpath(*parts)
        _require_regular(os.lstat(target).st_mode, source=source)
        return os.open(target, _FILE_FLAGS)
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            parent, fd = fd, os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(parent)
        # Checked before opening: opening a device or a socket can itself do something.
        _require_regular(os.stat(parts[-1], dir_fd=fd, follow_symlinks=False).st_mode, source=source)
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISLNK, "a symbolic link that does not resolve to a file"),
)


def _require_regular(mode: int, *, source: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = next((name for test, name in _KINDS if test(mode)), "not a file")
    raise UnsafeSourceError(f"not a regular file ({kind}): skipped unread", source=source)


def check_words(text: str, *, source: str, max_words: int | None) -> None:
    """Refuse a text with more words than its chunks could hold before any parser sees it:
    every word is at least one token, so more than ``max_chunks * max_tokens`` words can only
    yield more chunks than the per-document cap (a 5 MiB list would otherwise be parsed in full,
    twice, before the cap applies)."""
    if max_words is not None and len(text) > max_words and len(text.split()) > max_words:
        raise SourceLimitError(
            f"has more than {max_words:,} words, more than the per-document chunk limit could hold "
            "(RUNBOOK_RAG_MAX_CHUNKS_PER_DOCUMENT)",
            source=source,
        )


def check_lines(text: str, *, source: str, max_line_chars: int = DEFAULT_MAX_LINE_CHARS) -> None:
    """Refuse a text with a line longer than ``max_line_chars`` before any parser sees it:
    parsing and tokenising one huge line can cost minutes."""
    if len(text) <= max_line_chars:
        return
    for n, line in enumerate(text.split("\n"), start=1):
        if len(line) > max_line_chars:
            raise SourceLimitError(
                f"line {n} is {len(line):,} characters long, over the {max_line_chars:,}-character limit",
                source=source,
                line=n,
            )
