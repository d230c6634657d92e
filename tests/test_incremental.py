"""Incremental, atomic, crash-safe rebuilds (real Chroma, real model)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from runbook_rag import Principal, RunbookIndex
from runbook_rag.errors import ConfigError, IndexStateError
from runbook_rag.generations import POINTER, build_lock, load_manifest

from .conftest import copy_samples
from .waiting import join, wait_until

pytestmark = pytest.mark.slow

FILES = [
    "payments/card-authorisation-decline-spike.md",
    "finance/ledger-kafka-consumer-lag.md",
    "platform/pod-crashloop.md",
    "security/hsm-outage.md",
    "platform/postgres-replication-lag.md",
]
SRE = Principal("sam", frozenset({"sre", "payments-oncall"}))
BUILD = (
    "import sys\nfrom runbook_rag import RunbookIndex\nRunbookIndex.build([sys.argv[1]], path=sys.argv[2])\n"
)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return copy_samples(tmp_path / "src", FILES)


@pytest.fixture
def built(src: Path, tmp_path: Path, model) -> Path:
    path = tmp_path / "idx"
    report = RunbookIndex.build([src], path=path, embedder=model)
    assert report.embedded == report.chunks > 0
    return path


def test_noop_rebuild_embeds_and_writes_nothing(src: Path, built: Path, model) -> None:
    before = (built / POINTER).read_text()
    report = RunbookIndex.build([src], path=built, embedder=model)
    assert (report.embedded, report.removed, report.relabelled) == (0, 0, 0)
    assert report.reused == report.chunks
    assert report.diff == {"added": [], "changed": [], "relabelled": [], "removed": []}
    assert (built / POINTER).read_text() == before


def test_changed_document_reembeds_only_its_changed_chunks(src: Path, built: Path, model) -> None:
    path = src / "platform/pod-crashloop.md"
    path.write_text(path.read_text() + "\n## Postscript\n\nCheck the sidecar's OOM score too.\n")
    report = RunbookIndex.build([src], path=built, embedder=model)
    assert report.diff["changed"] == ["platform/pod-crashloop.md"]
    assert report.embedded == 1
    assert report.reused == report.chunks - 1
    hits = RunbookIndex(built, embedder=model).search("sidecar OOM score postscript", principal=SRE, k=1)
    assert hits[0].heading.endswith("Postscript")


def test_removed_document_is_gone(src: Path, built: Path, model) -> None:
    (src / "finance/ledger-kafka-consumer-lag.md").unlink()
    report = RunbookIndex.build([src], path=built, embedder=model)
    assert report.diff["removed"] == ["finance/ledger-kafka-consumer-lag.md"]
    assert report.embedded == 0 and report.removed > 0
    hits = RunbookIndex(built, embedder=model).search("ledger consumer lag", principal=SRE, k=10)
    assert "finance/ledger-kafka-consumer-lag.md" not in {h.source for h in hits}


def test_relabel_only_updates_labels_without_embedding(src: Path, built: Path, model) -> None:
    path = src / "platform/pod-crashloop.md"
    path.write_text(
        path.read_text().replace("access: [sre, platform, payments-oncall]", "access: [platform]")
    )
    report = RunbookIndex.build([src], path=built, embedder=model)
    assert report.diff["relabelled"] == ["platform/pod-crashloop.md"]
    assert report.embedded == 0 and report.relabelled > 0
    index = RunbookIndex(built, embedder=model)
    assert "platform/pod-crashloop.md" not in {
        h.source for h in index.search("pod crash loop", principal=SRE)
    }
    platform = Principal("p", frozenset({"platform"}))
    assert index.search("pod crash loop", principal=platform)[0].source == "platform/pod-crashloop.md"


def test_moved_file_is_not_reembedded(src: Path, built: Path, model) -> None:
    (src / "archive").mkdir()
    shutil.move(src / "platform/pod-crashloop.md", src / "archive/pod-crashloop.md")
    report = RunbookIndex.build([src], path=built, embedder=model)
    assert report.diff["added"] == ["archive/pod-crashloop.md"]
    assert report.diff["removed"] == ["platform/pod-crashloop.md"]
    assert report.embedded == 0


def test_dry_run_reports_the_diff_and_writes_nothing(src: Path, built: Path, model) -> None:
    before = sorted(p.name for p in built.iterdir())
    (src / "security/hsm-outage.md").unlink()
    report = RunbookIndex.build([src], path=built, embedder=model, dry_run=True)
    assert report.dry_run and report.diff["removed"] == ["security/hsm-outage.md"]
    assert sorted(p.name for p in built.iterdir()) == before
    assert load_manifest(built)[1].documents == 5


def test_empty_source_never_empties_the_index(tmp_path: Path, built: Path, model) -> None:
    (tmp_path / "empty").mkdir()
    before = (built / POINTER).read_text()
    with pytest.raises(ConfigError, match="refusing"):
        RunbookIndex.build([tmp_path / "empty"], path=built, embedder=model)
    with pytest.raises(ConfigError, match="does not exist"):
        RunbookIndex.build([tmp_path / "missing"], path=built, embedder=model)
    assert (built / POINTER).read_text() == before


def test_second_builder_fails_fast_with_a_lock_error(
    src: Path, built: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook_rag import build as building

    def prepare(*args: object, **kwargs: object) -> None:
        raise AssertionError("the second build read the sources")

    monkeypatch.setattr(building, "prepare", prepare)
    outcome: list[BaseException | None] = []

    def second_build() -> None:
        try:
            RunbookIndex.build([src], path=built, embedder=model)
            outcome.append(None)
        except BaseException as exc:  # asserted below
            outcome.append(exc)

    # The lock stays held until the second build has ended: one that waited for it never would.
    with build_lock(built):
        worker = threading.Thread(target=second_build, daemon=True)
        worker.start()
        join(worker, "the second build, while the lock is held,")
    assert isinstance(outcome[0], IndexStateError), outcome
    assert "another build is running" in str(outcome[0])  # at once, before reading a source


def cli(*args: str) -> int:
    from runbook_rag.cli import main

    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_index_info_and_verify(built: Path, capsys) -> None:
    assert cli("index", "info", "--index", str(built), "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == 5 and sum(info["label_set_counts"].values()) == info["chunks"]
    assert info["model_id"] == "all-MiniLM-L6-v2" and info["report"]["embedded"] == info["chunks"]
    assert cli("index", "info", "--index", str(built)) == 0
    assert "chunks per label set:" in capsys.readouterr().out
    assert cli("index", "verify", "--index", str(built)) == 0
    assert capsys.readouterr().out.strip() == "ok"
    (built / "gen-00000000T000000000000-dead00").mkdir()
    assert cli("index", "verify", "--index", str(built)) == 1
    assert "orphan" in capsys.readouterr().out


def test_reader_in_a_loop_during_rebuilds_sees_no_error_and_old_or_new(src: Path, built: Path, model) -> None:
    reader = RunbookIndex(built, embedder=model)  # long-lived, like a bot
    old = {h.chunk_id for h in reader.search("ledger consumer lag", principal=SRE, k=3)}
    ledger = src / "finance/ledger-kafka-consumer-lag.md"
    ledger.write_text(ledger.read_text().replace("consumer lag", "consumer backlog"))
    errors: list[BaseException] = []
    seen: list[frozenset[str]] = []
    done = threading.Event()

    def loop() -> None:
        while not done.is_set():
            try:
                seen.append(
                    frozenset(h.chunk_id for h in reader.search("ledger consumer lag", principal=SRE, k=3))
                )
            except BaseException as exc:  # recorded, then asserted below
                errors.append(exc)

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", BUILD, str(src), str(built)], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        new = frozenset(
            h.chunk_id
            for h in RunbookIndex(built, embedder=model).search("ledger consumer lag", principal=SRE, k=3)
        )
        assert new != old
        # the long-lived reader picks up the new generation: its loop goes on until it has
        wait_until(lambda: errors or (seen and seen[-1] == new), "the reader to serve the new generation")
    finally:
        done.set()
        join(thread, "the reader's loop")
    assert not errors, errors[:1]
    assert seen and set(seen) <= {frozenset(old), new}
    assert seen[-1] == new


def test_kill_9_at_any_moment_leaves_a_servable_index(src: Path, built: Path, model) -> None:
    rng = random.Random(11)
    target = src / "payments/card-authorisation-decline-spike.md"

    def change(round_: int) -> None:
        target.write_text(
            target.read_text() + f"\n## Round {round_}\n\nNote {round_}: check the BIN table.\n"
        )

    # How long a build of one changed passage takes here, once the folder's export is made:
    # every round is killed at a random moment within that.
    for warm_up in (-2, -1):
        change(warm_up)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", BUILD, str(src), str(built)], check=True, capture_output=True)
        duration = time.perf_counter() - started
    killed = 0
    for round_ in range(10):
        change(round_)
        proc = subprocess.Popen(
            [sys.executable, "-c", BUILD, str(src), str(built)], stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.05, 0.95) * duration)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        index = RunbookIndex(built, embedder=model)
        assert index.search("card authorisation declines", principal=SRE, k=3)
        report = RunbookIndex.build([src], path=built, embedder=model)
        assert report.embedded <= 1
        assert RunbookIndex(built, embedder=model).verify() == []
    assert len(list(built.glob("gen-*"))) <= 2
    assert killed >= 6  # most rounds really were killed mid-way


def test_cli_dry_run_prints_the_diff(src: Path, built: Path, capsys) -> None:
    (src / "platform/pod-crashloop.md").unlink()
    assert cli("build", str(src), "--index", str(built), "--dry-run") == 0
    out = capsys.readouterr().out
    assert "dry run: nothing written" in out and "removed    platform/pod-crashloop.md" in out
    assert cli("build", str(src), "--index", str(built), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["diff"]["removed"] == ["platform/pod-crashloop.md"] and report["embedded"] == 0
    assert {"embedded", "reused", "removed", "relabelled", "seconds"} <= set(report)
