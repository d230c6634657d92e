"""The README's commands and library example are run, so they cannot drift."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
pytestmark = pytest.mark.slow


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_first_screen_has_the_two_commands() -> None:
    setup, tests = bash_blocks()[:2]
    assert "pip install -e '.[dev]'" in setup and "runbook-rag build sample_runbooks" in setup
    assert tests.strip() == ". .venv/bin/activate && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci and "pip install --quiet -e '.[dev]'" in ci


def test_quickstart_runbook_rag_commands_run(tmp_path: Path) -> None:
    setup = bash_blocks()[0]
    commands = [c.strip() for c in setup.split("&&") if c.strip().startswith("runbook-rag ")]
    assert len(commands) == 2
    exe = Path(sys.executable).with_name("runbook-rag")
    env = {**os.environ, "RUNBOOK_RAG_INDEX": str(tmp_path / "idx")}
    outputs = []
    for command in commands:
        argv = [str(exe), *shlex.split(command)[1:]]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "skipped 1:" in outputs[0] and "drafts/payout-retry-tool.md" in outputs[0]
    assert "Sources:" in outputs[1] and "payments/card-authorisation-decline-spike.md" in outputs[1]


def test_library_example_runs(tmp_path: Path) -> None:
    example = re.search(r"```python\n(.*?)```", README, re.S)
    assert example
    env = {**os.environ, "RUNBOOK_RAG_INDEX": str(tmp_path / "idx")}
    done = subprocess.run(
        [sys.executable, "-c", example.group(1)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert "finance/ledger-kafka-consumer-lag.md" in done.stdout
