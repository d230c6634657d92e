"""Start-up time of ``import runbook_rag``, of every ``runbook-rag ... --help``, and of the
commands an on-call engineer runs on the sample index.

    python benchmarks/startup.py [-n RUNS] [--limit RATIO] [--baseline REV] [--skip-help]

Commands (needs ``pip install -e '.[bench]'`` for the peer): the sample index and the plain
LlamaIndex pipeline's store of the same runbooks are built once; then ``search``,
extractive ``ask``, a no-op rebuild and a dry run are timed as whole processes, round-robin
with ``python -c "import click"`` and the peer's query script (``peer_query.py``), and with
the same commands of git revision REV (``--baseline``, on its own copy of the index). Each
row prints best and median wall time, the median's ratio to ``import click`` and to the
peer's query, the ``seconds`` a build reports next to its wall time, and PASS or FAIL
against the targets: search and ask at most 1.0 s, a no-op rebuild at most 3.0 s (medians).

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
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


SAMPLES = ROOT / "sample_runbooks"
ACCESS_MAP = SAMPLES / "access-map.yaml"
# Command: (arguments, target median seconds or None).
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "search": (["search", "card declines are spiking", "--user", "ana", "--group", "payments-oncall"], 1.0),
    "ask": (["ask", "postgres primary is down, how do I fail over?", "--user", "dee", "--group", "dba"], 1.0),
    "build (no-op)": (["build", str(SAMPLES), "--access-map", str(ACCESS_MAP), "--json"], 3.0),
    "build --dry-run": (["build", str(SAMPLES), "--access-map", str(ACCESS_MAP), "--dry-run", "--json"], 3.0),
}


def unpack(rev: str, into: Path) -> Path:
    """The ``runbook_rag`` package of git revision ``rev``, under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "runbook_rag"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    """Run ``argv`` as a whole process; ``cwd`` is not the repository, whose package would
    shadow the one ``PYTHONPATH`` names for the baseline."""
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed:\n{done.stderr}")
    return elapsed, done.stdout


def commands(runs: int, baseline: str | None) -> list[str]:
    """Time the on-call commands; returns the labels that missed their target."""
    from benchmarks.peer import LlamaIndexPeer
    from runbook_rag import RunbookIndex
    from runbook_rag.access import AccessMap
    from runbook_rag.sources import load_documents

    work = Path(tempfile.mkdtemp(prefix="rr-startup-"))
    try:
        index = work / "index"
        access_map = AccessMap.load(ACCESS_MAP)
        RunbookIndex.build([SAMPLES], path=index, access_map=access_map)
        peer_store = work / "peer"
        LlamaIndexPeer(load_documents([SAMPLES], access_map=access_map).documents, peer_store)
        python = sys.executable
        base_env = {**os.environ, "RUNBOOK_RAG_INDEX": str(index)}
        variants = {"current": base_env}
        if baseline:
            package = unpack(baseline, work / "baseline")
            env = {**os.environ, "RUNBOOK_RAG_INDEX": str(work / "baseline-index")}
            env["PYTHONPATH"] = str(package)
            # The baseline searches an index it built itself, in the format it writes.
            build = ["build", str(SAMPLES), "--access-map", str(ACCESS_MAP)]
            timed([sys.executable, "-m", "runbook_rag", *build], env, work)
            variants[f"baseline {baseline}"] = env
        peer_query = [str(ROOT / "benchmarks" / "peer_query.py"), str(peer_store)]
        cases: list[tuple[str, list[str], dict[str, str]]] = [
            ("import click", [python, "-c", "import click"], base_env),
            (
                "peer query (LlamaIndex)",
                [python, *peer_query, "card declines are spiking", "--group", "payments-oncall"],
                base_env,
            ),
        ]
        for name, (argv, _) in COMMANDS.items():
            for variant, env in variants.items():
                label = name if variant == "current" else f"{name} [{variant}]"
                cases.append((label, [python, "-m", "runbook_rag", *argv], env))
        for _, argv, env in cases:
            timed(argv, env, work)  # warm the bytecode and page caches
        samples: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        reported: dict[str, list[float]] = {}
        for _ in range(runs):
            for label, argv, env in cases:
                elapsed, out = timed(argv, env, work)
                samples[label].append(elapsed)
                if "--json" in argv and argv[3] == "build":
                    reported.setdefault(label, []).append(float(json.loads(out)["seconds"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    click_median = statistics.median(samples["import click"])
    peer_median = statistics.median(samples["peer query (LlamaIndex)"])
    width = max(len(label) for label, _, _ in cases)
    print(f"\ncommands on the sample index, {runs} runs each (wall time of the whole process)")
    print(
        f"{'':{width}s}  {'best':>7s}  {'median':>7s}  {'x click':>7s}  {'x peer':>6s}  "
        f"{'reported':>8s}  verdict"
    )
    failed = []
    for label, _, _ in cases:
        best, median = min(samples[label]), statistics.median(samples[label])
        target = COMMANDS.get(label, (None, None))[1]
        verdict = ""
        if target is not None:
            verdict = f"PASS (<= {target:g} s)" if median <= target else f"FAIL (> {target:g} s)"
            if median > target:
                failed.append(label)
        said = f"{statistics.median(reported[label]):7.2f}s" if label in reported else ""
        print(
            f"{label:{width}s}  {best:6.2f}s  {median:6.2f}s  {median / click_median:6.1f}x  "
            f"{median / peer_median:5.2f}x  {said:>8s}  {verdict}"
        )
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--runs", type=int, default=10, help="Timed runs of each command.")
    parser.add_argument("--limit", type=float, default=2.0, help="Allowed ratio to import click.")
    parser.add_argument("--baseline", help="A git revision whose commands run alongside, in this run.")
    parser.add_argument("--skip-help", action="store_true", help="Time only the on-call commands.")
    args = parser.parse_args()

    python = Path(sys.executable)
    exe = python.with_name("runbook-rag")
    if not exe.exists():
        sys.exit(f"{exe} not found: install the project into this environment (pip install -e .)")
    if args.skip_help:
        sys.exit(1 if commands(args.runs, args.baseline) else 0)

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

    failed += commands(args.runs, args.baseline)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
