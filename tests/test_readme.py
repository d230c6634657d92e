"""The README's commands, sample output and library example are run, so they cannot drift.

The sample output conventions are in ``tests/readme_samples.py``; ``python -m tests.readme_samples --update``
rewrites the samples from what the commands print.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from . import readme_samples as samples
from .readme_samples import Command, SampleError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README, re.S)


def test_first_screen_has_the_two_commands() -> None:
    setup, tests = bash_blocks()[:2]
    assert "pip install -e '.[dev]'" in setup and "runbook-rag build sample_runbooks" in setup
    assert tests.strip() == ". .venv/bin/activate && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci and "pip install --quiet -e '.[dev]'" in ci


@pytest.mark.slow
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


@pytest.mark.slow
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


# -- sample output ---------------------------------------------------------------------------


@pytest.mark.slow
def test_every_sample_is_what_its_command_prints(readme_index: Path) -> None:
    results = samples.run_samples(README, readme_index)
    stale = [result.diff(README) for result in results if not result.ok]
    assert not stale, "\n".join(
        ["README samples differ from the output (python -m tests.readme_samples --update):", *stale]
    )


def test_the_readme_shows_samples_of_ask_search_build_and_index_info() -> None:
    shown = [c.argv[0] for block in samples.sample_blocks(README) for c in block.commands]
    assert {"ask", "search", "build", "index"} <= set(shown)


def test_every_runbook_rag_command_of_a_bash_block_is_run_or_excused() -> None:
    quickstart = bash_blocks()[0]  # test_quickstart_runbook_rag_commands_run
    for _, _, info, content in samples.fenced_blocks(README):
        if info == "bash" and content != quickstart and re.search(r"^\s*runbook-rag ", content, re.M):
            assert any(mark in content for mark in samples.NOT_RUN), content


def test_no_block_shows_a_command_below_other_text() -> None:
    with pytest.raises(SampleError, match="must start with one"):
        samples.sample_blocks("```text\nnote\n$ runbook-rag search x\nout\n```\n")
    assert samples.sample_blocks(README)


SAMPLE = """intro

````text
$ runbook-rag ask "q?" --user u \\
    --group g
Heading [1]:
```bash
run it
```

$ runbook-rag index info
index  indexes/default
...
````
"""


def test_sample_blocks_are_read_as_commands_and_their_output() -> None:
    (block,) = samples.sample_blocks(SAMPLE)
    assert (block.start, block.end, block.info) == (2, 14, "text")
    ask, info = block.commands
    assert ask.argv == ["ask", "q?", "--user", "u", "--group", "g"]
    assert ask.expected == ("Heading [1]:", "```bash", "run it", "```")
    assert info.argv == ["index", "info"] and info.expected == ("index  indexes/default", "...")


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        (["a", "b"], ["a", "b"], True),
        (["a", "b"], ["a", "b", "c"], False),  # no implicit elision at the end
        (["a", "...", "d"], ["a", "b", "c", "d"], True),
        (["a", "...", "d"], ["a", "d"], False),  # ... stands for at least one line
        (["a", "..."], ["a"], False),
        (["...", "c"], ["a", "b", "c"], True),
        (["a", "...", "c", "...", "e"], ["a", "b", "c", "d", "e"], True),
        (["a", "...", "c", "...", "e"], ["a", "b", "x", "d", "e"], False),
        (["a ..."], ["a b"], False),  # only a whole line of ... elides
        (["in 2.6 s"], ["in 17.04 s"], True),
        (["in 2 s"], ["in 3 s"], False),  # whole numbers are compared: runbooks say "wait 30 s"
        (["took 12.5 ms"], ["took 9.0 ms"], True),
        (["gen-20261130T044155754450-72a7cf"], ["gen-20261201T000000000001-0a1b2c"], True),
        (["built_at    2026-11-30T04:42:02+00:00"], ["built_at    2027-01-01T00:00:00+00:00"], True),
        (['{"seconds": 2.61, "documents": 35}'], ['{"seconds": 3, "documents": 35}'], True),
        (['{"seconds": 2.61, "documents": 35}'], ['{"seconds": 2.61, "documents": 36}'], False),
        (['"latency_ms_p50": 12.1'], ['"latency_ms_p50": 40'], True),
    ],
)
def test_output_matches_a_sample_line_for_line(expected: list[str], actual: list[str], ok: bool) -> None:
    assert samples.matches(expected, actual) is ok


@pytest.mark.parametrize(
    ("expected", "actual", "shown"),
    [
        (["a", "b"], ["a", "c", "d"], ["a", "c", "d"]),
        (
            ["h1", "h2", "...", "Sources:", "[1] x"],
            ["n1", "n2", "n3", "Sources:", "[1] y", "[2] z"],
            ["n1", "n2", "...", "Sources:", "[1] y", "[2] z"],
        ),
        (["h1", "..."], ["n1", "n2"], ["n1", "..."]),
        (["h1", "..."], ["n1"], ["n1"]),
        (
            ["a", "...", "mid", "x", "...", "end"],
            ["b", "1", "mid", "y", "2", "3", "end"],
            ["b", "...", "mid", "y", "...", "end"],
        ),
        (["in 2.6 s", "ok"], ["in 9.1 s", "ok"], ["in 2.6 s", "ok"]),  # a match keeps its values
    ],
)
def test_an_update_keeps_the_shape_of_each_elision(
    expected: list[str], actual: list[str], shown: list[str]
) -> None:
    assert samples.rewrite(expected, actual) == shown
    assert samples.matches(shown, actual)


def test_an_update_that_cannot_place_an_elided_part_says_so() -> None:
    with pytest.raises(SampleError, match=r"'Sources:'.*by hand"):
        samples.rewrite(["h", "...", "Sources:"], ["n1", "n2"])


def test_a_block_is_fenced_longer_than_any_fence_in_its_output() -> None:
    (block,) = samples.sample_blocks(SAMPLE)
    lines = samples.render(block, [["````py", "x", "````"], ["plain"]])
    assert lines[0] == "`````text" and lines[-1] == "`````"
    (again,) = samples.sample_blocks("\n".join(lines) + "\n")
    assert [c.expected for c in again.commands] == [("````py", "x", "````"), ("plain",)]


def test_a_sample_runs_runbook_rag_only() -> None:
    with pytest.raises(SampleError, match="runs runbook-rag"):
        _ = Command(("$ ls -l",), ()).argv
