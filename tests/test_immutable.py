"""A published generation is never written again: every reading command leaves each of
its files byte for byte and time for time as the build left them, and works when the
generation folder is read-only."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from runbook_rag.generations import read_pointer
from runbook_rag.store import COPY_PREFIX

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_runbooks"
pytestmark = pytest.mark.slow


def snapshot(folder: Path) -> dict[str, tuple[str, int, int]]:
    """Every file and folder under ``folder``: content hash, modification time, mode."""
    out = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        out[str(path.relative_to(folder))] = (digest, info.st_mtime_ns, stat.S_IMODE(info.st_mode))
    return out


@pytest.fixture
def index(tmp_path: Path, sample_index_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(sample_index_path, copy)
    return copy


def run(index: Path, temp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RUNBOOK_RAG_INDEX": str(index), "TMPDIR": str(temp)}
    done = subprocess.run(
        [sys.executable, "-m", "runbook_rag", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done


READERS = [
    ("search", "card declines are spiking", "--user", "ana", "--group", "payments-oncall"),
    ("ask", "postgres primary is down, how do I fail over?", "--user", "dee", "--group", "dba"),
    ("eval", str(ROOT / "evals" / "sample_runbooks.jsonl"), "--user", "ops", "--group", "sre"),
    ("index", "info"),
    ("index", "verify"),
    ("search", "ledger consumer lag", "--user", "ana", "--group", "payments-oncall", "--mode", "dense"),
]
BUILDS = [
    ("build", str(SAMPLES), "--access-map", str(SAMPLES / "access-map.yaml"), "--dry-run"),
    ("build", str(SAMPLES), "--access-map", str(SAMPLES / "access-map.yaml")),
]


def copies(temp: Path) -> list[str]:
    return sorted(p.name for p in temp.iterdir() if p.name.startswith(COPY_PREFIX))


@contextmanager
def read_only(folder: Path) -> Iterator[None]:
    modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
    for path in sorted(modes, key=lambda p: len(p.parts), reverse=True):
        path.chmod(modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield
    finally:
        for path in sorted(modes, key=lambda p: len(p.parts)):
            path.chmod(modes[path])


def test_reading_commands_and_a_no_op_build_leave_the_generation_untouched(
    index: Path, tmp_path: Path
) -> None:
    name = read_pointer(index)
    assert name
    generation = index / name
    before = snapshot(generation)
    temp = tmp_path / "tmp"
    temp.mkdir()
    for args in (*READERS, *BUILDS):
        run(index, temp, *args)
        assert snapshot(generation) == before, f"{args[0]} changed the published generation"
        assert read_pointer(index) == name, f"{args[0]} published a new generation"
        assert not copies(temp), f"{args[0]} left its copy of the store: {copies(temp)}"


def test_everything_works_when_the_generation_folder_is_read_only(index: Path, tmp_path: Path) -> None:
    name = read_pointer(index)
    assert name
    generation = index / name
    temp = tmp_path / "tmp"
    temp.mkdir()
    with read_only(generation):
        before = snapshot(generation)
        outputs = {args[0] + args[1]: run(index, temp, *args).stdout for args in (*READERS, *BUILDS)}
        assert snapshot(generation) == before
    assert "Sources:" in outputs["askpostgres primary is down, how do I fail over?"]
    assert "postgres-primary-failover.md" in outputs["askpostgres primary is down, how do I fail over?"]
    assert "0 embedded" in outputs["build" + str(SAMPLES)]


def test_a_long_lived_reader_leaves_no_copy_behind(sample_index_path: Path, tmp_path: Path) -> None:
    """The store a reader opens is its own private copy, removed when the reader closes."""
    script = (
        "import sys, tempfile\n"
        "from runbook_rag import Principal, RunbookIndex\n"
        "from runbook_rag.store import COPY_PREFIX\n"
        "index = RunbookIndex(sys.argv[1])\n"
        "hits = index.search('ledger lag', principal=Principal('ana', frozenset({'payments-oncall'})))\n"
        "assert hits\n"
        "import os\n"
        "print(len([n for n in os.listdir(tempfile.gettempdir()) if n.startswith(COPY_PREFIX)]))\n"
        "index.close()\n"
        "print(len([n for n in os.listdir(tempfile.gettempdir()) if n.startswith(COPY_PREFIX)]))\n"
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, str(sample_index_path)],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(temp)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    while_open, after_close = map(int, done.stdout.split())
    assert while_open == 1 and after_close == 0
    assert not copies(temp)
