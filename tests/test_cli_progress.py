"""Build progress: the library reports it through a callback; the CLI draws it on a terminal
only, and the seconds a build reports are its whole wall time."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from runbook_rag import RunbookIndex
from runbook_rag.build import EMBED_SLICE, Progress

from .conftest import HashEmbedder
from .test_cli import run

pytestmark = pytest.mark.slow


def sources(folder: Path, documents: int, sections: int = 1) -> Path:
    folder.mkdir()
    for n in range(documents):
        body = "\n\n".join(
            f"## Step {s}\n\nRestart worker {n}-{s} and check queue {s}." for s in range(sections)
        )
        (folder / f"doc-{n}.md").write_text(f"---\ntitle: Doc {n}\naccess: [sre]\n---\n# Doc {n}\n\n{body}\n")
    return folder


def test_the_callback_counts_documents_and_chunks_up_to_their_totals(tmp_path: Path) -> None:
    src = sources(tmp_path / "src", documents=12, sections=50)
    (src / "unlabelled.md").write_text("# No labels\n\nNobody may read this.\n")
    seen: list[Progress] = []
    report = RunbookIndex.build([src], path=tmp_path / "idx", embedder=HashEmbedder(), progress=seen.append)
    assert report.chunks > EMBED_SLICE, "enough chunks for several embedding calls"
    # Documents: the runbook files found, the one that is not indexed included.
    for stage, total in (("documents", 13), ("embedding", report.embedded)):
        steps = [p for p in seen if p.stage == stage]
        assert steps and all(p.total == total for p in steps)
        done = [p.done for p in steps]
        assert done == sorted(done) and done[0] == 0 and done[-1] == total
    embedding = [p.done for p in seen if p.stage == "embedding"]
    assert len(embedding) > 2, "progress is reported per slice, not once at the end"
    stages = [p.stage for p in seen]
    assert stages.index("embedding") > max(i for i, s in enumerate(stages) if s == "documents")

    # A rebuild with nothing new embeds nothing: no embedding stage at all.
    seen.clear()
    RunbookIndex.build([src], path=tmp_path / "idx", embedder=HashEmbedder(), progress=seen.append)
    assert {p.stage for p in seen} == {"documents"}


def test_vectors_do_not_depend_on_progress_reporting(tmp_path: Path, model) -> None:
    src = sources(tmp_path / "src", documents=3, sections=4)
    quiet = RunbookIndex.build([src], path=tmp_path / "a", embedder=model)
    loud = RunbookIndex.build([src], path=tmp_path / "b", embedder=model, progress=lambda p: None)
    assert quiet.chunks == loud.chunks
    a = RunbookIndex(tmp_path / "a", embedder=model)._served.current().store
    b = RunbookIndex(tmp_path / "b", embedder=model)._served.current().store
    ids = set(a.all_metadata())
    va, vb = a.embeddings(ids), b.embeddings(ids)
    assert all(max(abs(x - y) for x, y in zip(va[i], vb[i], strict=True)) < 1e-5 for i in ids)


def test_reported_seconds_cover_the_whole_build(tmp_path: Path) -> None:
    src = sources(tmp_path / "src", documents=2)
    marks: list[float] = []
    before = time.perf_counter()
    # No embedder given: loading the model is part of the call, and of its seconds.
    report = RunbookIndex.build(
        [src], path=tmp_path / "idx", progress=lambda p: marks.append(time.perf_counter())
    )
    after = time.perf_counter()
    assert marks[-1] - before <= report.seconds <= after - before


def test_the_cli_reports_its_own_wall_time(capsys, tmp_path: Path) -> None:
    src = sources(tmp_path / "src", documents=2)
    before = time.time()
    code, out, _ = run(capsys, "build", str(src), "--index", str(tmp_path / "idx"), "--json")
    after = time.time()
    assert code == 0
    report = json.loads(out)
    published = (tmp_path / "idx" / report["generation"] / "manifest.json").stat().st_mtime
    rounding = 0.001  # the JSON report keeps milliseconds
    assert published - before - rounding <= report["seconds"] <= after - before + rounding


def test_no_progress_without_a_terminal_or_with_json(capsys, tmp_path: Path) -> None:
    src = sources(tmp_path / "src", documents=3)
    code, out, err = run(capsys, "build", str(src), "--index", str(tmp_path / "a"))
    assert code == 0 and err == "" and "indexed 3 documents" in out
    code, out, err = run(capsys, "build", str(src), "--index", str(tmp_path / "b"), "--json")
    assert code == 0 and err == "" and json.loads(out)["documents"] == 3


def _on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal; stdout on a pipe."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 24 rows, 120 columns
    with subprocess.Popen(
        [sys.executable, "-m", "runbook_rag", *args], stdout=subprocess.PIPE, stderr=terminal
    ) as proc:
        os.close(terminal)
        seen = b""
        while True:
            ready, _, _ = select.select([controller], [], [], 600)
            if not ready:
                proc.kill()
                raise AssertionError("the build printed nothing for 10 minutes")
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal's other end closed: the process ended
                break
            if not chunk:
                break
            seen += chunk
        out = proc.stdout.read().decode() if proc.stdout else ""
        code = proc.wait()
    os.close(controller)
    return code, out, seen.decode(errors="replace")


def test_progress_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    src = sources(tmp_path / "src", documents=4, sections=3)
    code, out, err = _on_a_terminal(["build", str(src), "--index", str(tmp_path / "a")])
    assert code == 0, err
    assert "parsing" in err and "4/4" in err and "documents" in err
    assert "embedding" in err and "12/12" in err and "chunks/s" in err
    assert "indexed 4 documents, 12 chunks" in out
    code, out, err = _on_a_terminal(["build", str(src), "--index", str(tmp_path / "b"), "--json"])
    assert code == 0 and err.strip() == "" and json.loads(out)["chunks"] == 12
