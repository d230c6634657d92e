"""The same index on a real Chroma server (`chroma run`), started on 127.0.0.1 for these tests."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_rag import Principal, RunbookIndex, Settings
from runbook_rag.access import AccessMap

from .conftest import SAMPLE_MAP, SAMPLES
from .waiting import wait_until

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ended_or_answering(proc: subprocess.Popen[bytes], port: int) -> bool:
    if proc.poll() is not None:
        return True
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=5):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A port with ``chroma run`` answering on it.

    The port is free when chosen, but another process may bind it first: a server that
    exits before it answers is started again on another port.
    """
    data = tmp_path_factory.mktemp("chroma-server")
    log = data.parent / "chroma-server.log"
    chroma = Path(sys.executable).with_name("chroma")
    for _ in range(3):
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(chroma), "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
            )
        try:
            wait_until(functools.partial(ended_or_answering, proc, port), "chroma run to answer")
        except BaseException:
            stop(proc)
            raise
        if proc.poll() is None:
            break
        proc.wait()
    else:
        raise AssertionError(f"chroma run exited before it answered: {log.read_text()[-2000:]}")
    try:
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def server_index(
    chroma_server: int, tmp_path_factory: pytest.TempPathFactory, model
) -> tuple[Path, Settings]:
    settings = Settings(chroma_host="127.0.0.1", chroma_port=chroma_server)
    path = tmp_path_factory.mktemp("srv") / "sample"
    report = RunbookIndex.build(
        [SAMPLES], path=path, access_map=AccessMap.load(SAMPLE_MAP), settings=settings, embedder=model
    )
    assert report.documents == 35 and report.embedded == report.chunks
    return path, settings


def test_generations_live_on_the_server_not_on_disk(server_index) -> None:
    path, settings = server_index
    with RunbookIndex(path, settings=settings) as index:
        assert not list(path.glob("gen-*"))  # only the lock and the query encoder are local
        assert index.manifest.documents == 35
        assert index.verify() == []


def test_search_and_leaks_behave_as_embedded(server_index, request: pytest.FixtureRequest) -> None:
    path, settings = server_index
    index = RunbookIndex(path, settings=settings)
    request.addfinalizer(index.close)
    sre = Principal("sam", frozenset({"sre", "payments-oncall"}))
    dba = Principal("dee", frozenset({"dba"}))
    question = "postgres primary is down, how do I fail over with patroni"
    assert index.search(question, principal=dba, k=3)[0].source == "platform/postgres-primary-failover.md"
    hits = index.search(question, principal=sre, k=50)
    assert "platform/postgres-primary-failover.md" not in {h.source for h in hits}
    assert all(set(h.labels) & sre.groups for h in hits)
    assert index.search(question, principal=Principal("nobody")) == []


def test_a_reader_on_another_machine_derives_the_lexical_index(
    server_index, tmp_path: Path, model, request: pytest.FixtureRequest
) -> None:
    path, settings = server_index
    here = RunbookIndex(path, settings=settings, embedder=model)
    elsewhere_path = tmp_path / "elsewhere" / path.name  # same index name, no local copy
    elsewhere = RunbookIndex(elsewhere_path, settings=settings, embedder=model)
    request.addfinalizer(here.close)
    request.addfinalizer(elsewhere.close)
    assert (elsewhere_path / "lexical" / here.manifest.generation / "chunks.json").exists()
    sre = Principal("sam", frozenset({"sre"}))
    for query in ("LedgerKafkaUnderReplicatedPartitions", "pods keep restarting"):
        assert [h.chunk_id for h in elsewhere.search(query, principal=sre)] == [
            h.chunk_id for h in here.search(query, principal=sre)
        ]


def test_noop_rebuild_and_a_second_index_on_the_same_server(server_index, tmp_path: Path, model) -> None:
    path, settings = server_index
    again = RunbookIndex.build(
        [SAMPLES], path=path, access_map=AccessMap.load(SAMPLE_MAP), settings=settings, embedder=model
    )
    assert again.embedded == 0 and again.reused == again.chunks
    other = tmp_path / "other"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.md").write_text("---\ntitle: A\naccess: [sre]\n---\n# A\n\nRestart the ledger writer.\n")
    RunbookIndex.build([src], path=other, settings=settings, embedder=model)
    sre = Principal("s", frozenset({"sre"}))
    with RunbookIndex(other, settings=settings) as index:
        assert index.search("ledger writer", principal=sre)[0].source == "a.md"
    with RunbookIndex(path, settings=settings) as index:
        assert index.manifest.documents == 35
