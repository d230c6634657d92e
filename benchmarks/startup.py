"""Start-up time of ``import runbook_rag`` and of every ``runbook-rag ... --help``.

    python benchmarks/startup.py [-n RUNS] [--limit RATIO]

Times, in one run and with the current virtual environment's executables,
``python -c "import click"`` (the floor: the CLI cannot start faster than its
framework), ``python -c "import runbook_rag"``, ``runbook-rag --help`` and
``runbook-rag CMD --help`` for every command and subcommand of the click group.
Each is run once to warm the bytecode cache, then RUNS times round-robin, so a
change in machine load touches every row alike. Prints the best and median wall
time, their ratios to ``import click``, and PASS when the median ratio is at most
RATIO (default 2). Then prints the ten modules with the largest cumulative import
time under ``runbook-rag --help`` (from ``python -X importtime``) and any heavy
package that got loaded, so a slow import is easy to trace. Exits 1 on any FAIL.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag.cli import cli  # noqa: E402

# Packages no ``--help`` and no bare ``import runbook_rag`` should load.
HEAVY = (
    "numpy",
    "pydantic",
    "pydantic_settings",
    "chromadb",
    "markdown_it",
    "torch",
    "sentence_transformers",
    "yaml",
    "fastapi",
    "httpx",
    "bm25s",
    "llama_index",
)


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and subcommand of ``group``, as the words that name it on the command line."""
    paths: list[tuple[str, ...]] = []
    for name in sorted(group.commands):
        path = (*prefix, name)
        paths.append(path)
        sub = group.commands[name]
        if isinstance(sub, click.Group):
            paths.extend(command_paths(sub, path))
    return paths


def time_once(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return time.perf_counter() - start


def import_times(argv: list[str]) -> list[tuple[int, int, str]]:
    """``(self_us, cumulative_us, module)`` for every import ``argv`` makes, from ``-X importtime``."""
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        if self_us.strip().isdigit():  # skips the header line
            rows.append((int(self_us), int(cumulative_us), name.strip()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--runs", type=int, default=10, help="Timed runs of each command.")
    parser.add_argument("--limit", type=float, default=2.0, help="Allowed ratio to import click.")
    args = parser.parse_args()

    python = Path(sys.executable)
    exe = python.with_name("runbook-rag")
    if not exe.exists():
        sys.exit(f"{exe} not found: install the project into this environment (pip install -e .)")

    cases: list[tuple[str, list[str]]] = [
        ("import click", [str(python), "-c", "import click"]),
        ("import runbook_rag", [str(python), "-c", "import runbook_rag"]),
        ("runbook-rag --help", [str(exe), "--help"]),
    ]
    for path in command_paths(cli):
        words = " ".join(path)
        cases.append((f"runbook-rag {words} --help", [str(exe), *path, "--help"]))

    for _, argv in cases:
        time_once(argv)
    samples: dict[str, list[float]] = {label: [] for label, _ in cases}
    for _ in range(args.runs):
        for label, argv in cases:
            samples[label].append(time_once(argv))

    floor_best = min(samples["import click"])
    floor_median = statistics.median(samples["import click"])
    width = max(len(label) for label, _ in cases)
    print(f"{args.runs} runs each, {python}")
    print(f"{'':{width}s}  {'best':>8s}  {'median':>8s}  {'x best':>6s}  {'x median':>8s}")
    failed = []
    for label, _ in cases:
        best, median = min(samples[label]), statistics.median(samples[label])
        ratio_best, ratio_median = best / floor_best, median / floor_median
        if label == "import click":
            verdict = ""
        elif ratio_median <= args.limit:
            verdict = "PASS"
        else:
            verdict = "FAIL"
            failed.append(label)
        print(
            f"{label:{width}s}  {best * 1000:6.1f}ms  {median * 1000:6.1f}ms  "
            f"{ratio_best:5.2f}x  {ratio_median:7.2f}x  {verdict}"
        )
    print(f"target: median at most {args.limit:g}x import click; {len(failed)} failed")

    rows = import_times([str(python), "-X", "importtime", str(exe), "--help"])
    print("\nslowest imports under runbook-rag --help (cumulative, self, module):")
    for self_us, cumulative_us, name in sorted(rows, key=lambda r: r[1], reverse=True)[:10]:
        print(f"  {cumulative_us / 1000:7.1f}ms  {self_us / 1000:6.1f}ms  {name}")
    loaded = sorted({name.split(".")[0] for _, _, name in rows} & set(HEAVY))
    print(f"heavy packages loaded: {', '.join(loaded) or 'none'}")

    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
