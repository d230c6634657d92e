"""The README's sample output, made by the real commands and checked against them.

A *sample block* is a top-level fenced code block of README.md whose first line starts with
``$ runbook-rag ``. Each such line is a command (a line ending in `` \\`` goes on on the next line); the
lines under it, up to the next command, are what the command prints, stdout and stderr together as a
terminal shows them. Blank lines at the end of one command's output do not count (one blank line
separates two commands).

How the commands run: in README order, from the repository root, each as
``python -m runbook_rag ARGS`` (the first word must be ``runbook-rag``), not on a terminal, with no
``RUNBOOK_RAG_*`` setting from the caller's environment but ``RUNBOOK_RAG_INDEX``, which names a copy of
the sample index (``sample_runbooks/`` built with ``sample_runbooks/access-map.yaml``, as in the
quickstart). Commands of later blocks see what earlier ones did (a build, audit records).

How output is compared:

- The index folder's path is written ``indexes/default``, where the quickstart builds it.
- A line that is exactly ``...`` stands for one or more lines of output. Every other line must equal
  its output line, but for the volatile values below.
- Volatile values match any value of their kind: generation ids (``gen-20261130T044155754450-72a7cf``),
  ISO 8601 times (``2026-11-30T04:42:02+00:00``), durations with a fraction (``2.6 s``, ``12.40 ms``) and
  JSON numbers under a key naming seconds or milliseconds (``"seconds": 2.61``, ``"latency_ms_p50": 12``).
  The README keeps the values of the run that last rewrote the block.
- A command that exits with another code than 0 ends its output with the line ``[exit N]``.

``python -m tests.readme_samples`` checks every sample (exit 1 and a diff when one differs);
``python -m tests.readme_samples --update`` rewrites the samples that differ from what the commands print
now. An update keeps each elision's shape: as many lines before the first ``...`` as before, each later
part from the first output line that reads as that part's first line did (``Sources:``), and the last part
to the end of the output. A block whose first line no longer occurs is reported, to be edited by hand.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PROMPT = "$ runbook-rag "
ELLIPSIS = "..."
INDEX_SHOWN_AS = "indexes/default"
TIMEOUT = 600

# Commands of bash blocks that no test runs as written, and why (a part of the block that names it).
NOT_RUN = {
    "--llm-base-url": "needs a model server; tests/test_llm.py asks a local OpenAI-compatible one",
    "RUNBOOK_RAG_CHROMA_HOST": "needs a Chroma server; tests/test_chroma_server.py builds on a local one",
    "--confluence-url": "needs Confluence; tests/test_confluence_api.py mirrors spaces from a local fake",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "needs a collector; tests/test_tracing.py exports to memory and to stdout",
}

_VOLATILE = [
    re.compile(r"\bgen-\d{8}T\d+-[0-9a-f]+\b"),
    re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?"),
    re.compile(r"\b\d+\.\d+ ?m?s\b"),
    re.compile(r'(?<="seconds": )\d+(?:\.\d+)?|(?<=_ms": )\d+(?:\.\d+)?|(?<=_ms_p\d\d": )\d+(?:\.\d+)?'),
]


class SampleError(Exception):
    """A sample block that cannot be read or brought up to date."""


@dataclass(frozen=True)
class Command:
    """One ``$`` command of a sample block and the output the README shows for it."""

    lines: tuple[str, ...]  # as written, with their ``$ `` and continuation lines
    expected: tuple[str, ...]

    @property
    def argv(self) -> list[str]:
        text = " ".join(line.removesuffix("\\").strip() for line in self.lines).removeprefix("$").strip()
        words = shlex.split(text, comments=True)
        if not words or words[0] != "runbook-rag":
            raise SampleError(f"a sample runs runbook-rag, not {text!r}")
        return words[1:]


@dataclass(frozen=True)
class Block:
    """A sample block; ``start`` is the line of its opening fence, ``end`` the line after its closing one."""

    start: int
    end: int
    info: str
    commands: tuple[Command, ...]


def fenced_blocks(text: str) -> Iterator[tuple[int, int, str, str]]:
    """(first line, line after, info, content) of every top-level fenced block, as CommonMark reads it."""
    from markdown_it import MarkdownIt

    for token in MarkdownIt("commonmark").parse(text):
        if token.type == "fence" and token.level == 0 and token.map:
            yield token.map[0], token.map[1], token.info.strip(), token.content


def sample_blocks(text: str) -> list[Block]:
    """Every sample block of a README text, in order."""
    blocks = []
    for start, end, info, content in fenced_blocks(text):
        lines = content.split("\n")[:-1] if content.endswith("\n") else content.split("\n")
        if any(map(_is_command, lines)) and not _is_command(lines[0]):
            raise SampleError(f"README.md:{start + 1}: a block with {PROMPT!r} lines must start with one")
        if lines and _is_command(lines[0]):
            blocks.append(Block(start, end, info, tuple(_commands(lines))))
    return blocks


def _is_command(line: str) -> bool:
    return line.startswith(PROMPT)


def _commands(lines: list[str]) -> Iterator[Command]:
    n = 0
    while n < len(lines):
        command = [lines[n]]
        while command[-1].endswith("\\") and n + 1 < len(lines):
            n += 1
            command.append(lines[n])
        n += 1
        output = []
        while n < len(lines) and not _is_command(lines[n]):
            output.append(lines[n])
            n += 1
        while output and not output[-1].strip():
            output.pop()
        yield Command(tuple(command), tuple(output))


def sample_env(index: Path) -> dict[str, str]:
    """The environment the samples run in: no caller's ``RUNBOOK_RAG_*`` setting, the given index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_RAG_")}
    return {**env, "RUNBOOK_RAG_INDEX": str(index), "NO_COLOR": "1"}


def run(command: Command, index: Path) -> list[str]:
    """What ``command`` prints, as the README shows it."""
    done = subprocess.run(
        [sys.executable, "-m", "runbook_rag", *command.argv],
        cwd=ROOT,
        env=sample_env(index),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )
    out = done.stdout.replace(str(index), INDEX_SHOWN_AS).rstrip("\n")
    lines = [line.rstrip() for line in out.split("\n")] if out else []
    if done.returncode:
        lines.append(f"[exit {done.returncode}]")
    return lines


def mask(line: str) -> str:
    """``line`` with its volatile values replaced by a placeholder."""
    for pattern in _VOLATILE:
        line = pattern.sub("<volatile>", line)
    return line


def matches(expected: Sequence[str], actual: Sequence[str]) -> bool:
    """Whether the output ``actual`` is what ``expected`` shows (``...`` lines and volatile values apart)."""
    pattern = "".join(
        r"(?:[^\n]*\n)+" if line == ELLIPSIS else re.escape(mask(line)) + "\n" for line in expected
    )
    return re.fullmatch(pattern, "".join(mask(line) + "\n" for line in actual)) is not None


def rewrite(expected: Sequence[str], actual: Sequence[str]) -> list[str]:
    """``actual`` shown in the shape of ``expected`` (its elisions kept), for ``--update``."""
    if matches(expected, actual):
        return list(expected)
    parts: list[list[str]] = [[]]
    for line in expected:
        if line == ELLIPSIS:
            parts.append([])
        else:
            parts[-1].append(line)
    if len(parts) == 1:
        return list(actual)
    head, *rest = parts
    out = list(actual[: len(head)])
    pos = len(head)
    for n, part in enumerate(rest):
        last = n == len(rest) - 1
        if not part:  # the output's end is left out
            if pos < len(actual):
                out.append(ELLIPSIS)
            return out
        anchor = next((j for j in range(pos + 1, len(actual)) if mask(actual[j]) == mask(part[0])), None)
        if anchor is None:
            raise SampleError(f"no output line after line {pos} reads {part[0]!r}: edit the sample by hand")
        taken = actual[anchor:] if last else actual[anchor : anchor + len(part)]
        out += [ELLIPSIS, *taken]
        pos = anchor + len(taken)
    return out


def render(block: Block, outputs: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a sample block showing ``outputs``, fenced so no output line can close it."""
    body: list[str] = []
    for n, (command, output) in enumerate(zip(block.commands, outputs, strict=True)):
        if n:
            body.append("")
        body += [*command.lines, *output]
    ticks = max((len(m.group()) for line in body if (m := re.match(r" *(`{3,}|~{3,})", line))), default=2)
    fence = "`" * max(3, ticks + 1)
    return [fence + block.info, *body, fence]


@dataclass(frozen=True)
class Result:
    block: Block
    outputs: tuple[tuple[str, ...], ...]

    @property
    def ok(self) -> bool:
        return all(matches(c.expected, o) for c, o in zip(self.block.commands, self.outputs, strict=True))

    def updated(self) -> list[str]:
        try:
            shown = [rewrite(c.expected, o) for c, o in zip(self.block.commands, self.outputs, strict=True)]
        except SampleError as exc:
            raise SampleError(f"README.md:{self.block.start + 1}: {exc}") from None
        return render(self.block, shown)

    def diff(self, text: str) -> str:
        old = text.split("\n")[self.block.start : self.block.end]
        shown = render(self.block, self.outputs)
        where = f"README.md:{self.block.start + 1}"
        diff = difflib.unified_diff(old, shown, f"{where} (README)", f"{where} (output)", lineterm="")
        return "\n".join(diff)


def run_samples(text: str, index: Path) -> list[Result]:
    """Every sample block of ``text`` run in order against ``index`` (which the commands may change)."""
    return [
        Result(block, tuple(tuple(run(command, index)) for command in block.commands))
        for block in sample_blocks(text)
    ]


def updated_readme(text: str, results: Sequence[Result]) -> tuple[str, list[str]]:
    """``text`` with every block that differs from its output rewritten, and the blocks that could not be."""
    lines = text.split("\n")
    problems: list[str] = []
    for result in reversed(results):
        if not result.ok:
            try:
                lines[result.block.start : result.block.end] = result.updated()
            except SampleError as exc:
                problems.insert(0, str(exc))
    return "\n".join(lines), problems


def build_sample_index(path: Path) -> None:
    """Build the sample index into ``path`` as the quickstart does."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "runbook_rag",
            "build",
            "sample_runbooks",
            "--access-map",
            "sample_runbooks/access-map.yaml",
            "--index",
            str(path),
        ],
        cwd=ROOT,
        env=sample_env(path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if done.returncode:
        raise SampleError(f"building the sample index failed: {done.stderr.strip()}")


def copy_index(source: Path, target: Path) -> Path:
    """A copy of the index ``source`` at ``target``, for samples that may change it."""
    shutil.copytree(source, target, symlinks=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.readme_samples", description=(__doc__ or "").strip()
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--update", action="store_true", help="rewrite the samples that differ")
    parser.add_argument("--index", type=Path, help="a built sample index to copy (default: build one)")
    args = parser.parse_args(argv)
    text = README.read_text()
    with tempfile.TemporaryDirectory(prefix="readme-samples-") as tmp:
        index = Path(tmp) / "default"
        if args.index:
            copy_index(args.index, index)
        else:
            print("building the sample index ...", file=sys.stderr)
            build_sample_index(index)
        results = run_samples(text, index)
    stale = [r for r in results if not r.ok]
    if args.update:
        new, problems = updated_readme(text, results)
        if new != text:
            README.write_text(new)
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{len(results)} sample blocks, {len(stale) - len(problems)} rewritten", file=sys.stderr)
        return 1 if problems else 0
    for result in stale:
        print(result.diff(text))
    print(f"{len(results)} sample blocks, {len(stale)} differ from their output", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
