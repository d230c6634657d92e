"""A large build's store is written by a process of its own: the same index as written in
process, a child that dies fails the build cleanly, a child outlives no parent, and a build
that cannot start one writes its store itself."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from runbook_rag import build as building
from runbook_rag import store_process
from runbook_rag.build import build_index
from runbook_rag.errors import IndexStateError
from runbook_rag.generations import POINTER, load_manifest
from runbook_rag.records import Chunk
from runbook_rag.store import ChromaStore
from runbook_rag.store_process import StoreProcess

from .conftest import HashEmbedder
from .test_build_pipeline import contents, generations, same, sources

pytestmark = pytest.mark.slow


class Recorded(StoreProcess):
    """A StoreProcess that keeps each child it started."""

    children: ClassVar[list[subprocess.Popen[bytes]]] = []

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        assert self._child is not None
        Recorded.children.append(self._child)


@pytest.fixture
def in_a_child(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every first build writes its store from a child, in small batches; the children are kept."""
    monkeypatch.setattr(building, "STORE_PROCESS_DOCUMENTS", 1)
    monkeypatch.setattr(building, "FIRST_WINDOW", 4)
    monkeypatch.setattr(building, "WRITE_BATCH", 8)
    monkeypatch.setattr(building, "EMBED_SLICE", 8)
    monkeypatch.setattr(store_process, "StoreProcess", Recorded)
    Recorded.children = []
    return Recorded.children


def test_a_large_first_build_writes_its_store_from_a_child_and_the_index_is_the_same(
    tmp_path: Path, in_a_child: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources(tmp_path / "src", documents=6, sections=5)
    monkeypatch.setattr(building, "STORE_PROCESS_DOCUMENTS", 10**9)
    build_index([src], index_path=tmp_path / "here", embedder=HashEmbedder())
    assert in_a_child == []

    monkeypatch.setattr(building, "STORE_PROCESS_DOCUMENTS", 1)

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the build wrote its store from its own process")

    monkeypatch.setattr(ChromaStore, "add", refuse)
    report = build_index([src], index_path=tmp_path / "child", embedder=HashEmbedder())
    monkeypatch.undo()
    assert report.chunks == 30 and len(in_a_child) == 1
    assert in_a_child[0].returncode == 0, "the child closed the store and exited"
    assert same(contents(tmp_path / "child"), contents(tmp_path / "here"))


def test_a_rebuild_with_something_to_reuse_writes_in_process(
    tmp_path: Path, in_a_child: list[subprocess.Popen[bytes]]
) -> None:
    src = sources(tmp_path / "src", documents=4, sections=3)
    index = tmp_path / "idx"
    build_index([src], index_path=index, embedder=HashEmbedder())
    sources(src, documents=1, sections=3, start=4)
    build_index([src], index_path=index, embedder=HashEmbedder())
    assert len(in_a_child) == 1, "only the first build, with nothing to reuse, started a child"


def test_a_writer_killed_mid_build_fails_the_build_and_leaves_what_is_published(
    tmp_path: Path, in_a_child: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources(tmp_path / "src", documents=5, sections=4)
    index = tmp_path / "idx"
    fresh = tmp_path / "fresh"
    real_add = StoreProcess.add

    def killed_first(self: StoreProcess, *args: Any) -> None:
        assert self._child is not None
        os.kill(self._child.pid, signal.SIGKILL)
        self._child.wait()
        real_add(self, *args)

    monkeypatch.setattr(StoreProcess, "add", killed_first)
    with pytest.raises(IndexStateError, match=r"store's writer stopped \(exit status -9\)"):
        build_index([src], index_path=fresh, embedder=HashEmbedder())
    assert not (fresh / POINTER).exists() and generations(fresh) == []

    # Nothing to reuse from an index of another model: its rebuild writes from a child too.
    monkeypatch.setattr(StoreProcess, "add", real_add)
    build_index([src], index_path=index, embedder=HashEmbedder())
    before = contents(index)
    published = generations(index)

    class Other(HashEmbedder):
        model_id = "test-hash-other"

    monkeypatch.setattr(StoreProcess, "add", killed_first)
    with pytest.raises(IndexStateError, match="store's writer stopped"):
        build_index([src], index_path=index, embedder=Other())
    assert generations(index) == published
    assert same(contents(index), before)
    assert load_manifest(index)[1].model_id == "test-hash"


def test_a_build_that_cannot_start_a_writer_writes_its_store_itself(
    tmp_path: Path, in_a_child: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    src = sources(tmp_path / "src", documents=4, sections=3)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    with caplog.at_level(logging.WARNING, logger="runbook_rag"):
        report = build_index([src], index_path=tmp_path / "idx", embedder=HashEmbedder())
    assert report.chunks == 12 and in_a_child == []
    assert "writing the vector store from this process" in caplog.text
    assert "cannot start the store's writer" in caplog.text
    monkeypatch.undo()
    build_index([src], index_path=tmp_path / "here", embedder=HashEmbedder())
    assert same(contents(tmp_path / "idx"), contents(tmp_path / "here"))


def chunk(n: int) -> Chunk:
    return Chunk(f"c{n}", "d", "d.md", "D", ("Step",), 1, 2, f"text {n}", ("sre",))


def test_an_error_in_the_writer_is_raised_with_its_reason_and_ends_it(tmp_path: Path) -> None:
    store = StoreProcess(tmp_path / "gen")
    child = store._child
    assert child is not None
    # An interrupt at the terminal reaches the child too: it carries on for its parent.
    os.kill(child.pid, signal.SIGINT)
    store.add([chunk(1), chunk(2)], np.ones((2, 8), dtype=np.float32), ["k1", "k2"])
    assert np.asarray(store.vectors(["c2"])).shape == (1, 8)
    with pytest.raises(IndexStateError, match="chunks, vectors and keys differ in number"):
        store.add([chunk(3)], np.ones((2, 8), dtype=np.float32), ["k3"])
    assert child.poll() is not None, "a failed writer is ended"
    with pytest.raises(IndexStateError, match="closed"):
        store.vectors(["c1"])
    store.close()


PARENT = """
import sys
from pathlib import Path
from runbook_rag import store_process
from runbook_rag.store_process import StoreProcess
store = StoreProcess(Path(sys.argv[1]))
print(store._child.pid, flush=True)
sys.stdin.read()
"""


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_the_writer_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "gen")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not gone(pid)
        parent.kill()
    deadline = time.monotonic() + 60
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the event: the child's exit
    assert gone(pid), "the writer outlived its parent"
