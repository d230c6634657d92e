"""A bounded load run against `runbook-rag serve` on loopback.

    python benchmarks/service_load.py [--index PATH] [--requests 2000] [--concurrency 16]
    python benchmarks/service_load.py --baseline REV   # also the service of git revision REV

Builds the sample index when PATH has none, starts the service as a separate process
(`runbook-rag serve`, real uvicorn) with a fresh audit log, sends search requests from
several callers at the given concurrency over HTTP keep-alive connections, and prints
throughput, latency p50/p95/p99, the errors (which must be 0), and whether the audit log
verifies afterwards with one record per request. With ``--baseline``, the service of
revision REV (its ``runbook_rag`` package, with this environment's dependencies) runs the
same load in the same run, rounds alternating between the two, and the ratios are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag import RunbookIndex  # noqa: E402
from runbook_rag.audit import load_key, verify  # noqa: E402

CALLERS = {"tok-sre": ["sre"], "tok-oncall": ["payments-oncall"], "tok-dba": ["dba"], "tok-sec": ["security"]}
QUERIES = [
    "card declines are spiking, what do I check first?",
    "ledger consumer lag keeps growing",
    "postgres primary is down, how do I fail over?",
    "webhook deliveries to merchants failing with 5xx",
    "pods keep restarting and memory climbs",
    "TLS certificate expires tomorrow",
    "kafka broker down, under-replicated partitions",
    "HSM down and PIN translation fails",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_load(url: str, total: int, concurrency: int) -> tuple[list[float], dict[int, int], float]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    tokens = list(CALLERS)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.perf_counter()
            try:
                response = await client.post(
                    "/v1/search",
                    json={"query": QUERIES[i % len(QUERIES)], "k": 5},
                    headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                )
                status = response.status_code
            except httpx.HTTPError:
                status = 0
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, statuses, elapsed


@dataclass
class Result:
    latencies: list[float]
    statuses: dict[int, int]
    elapsed: float
    records: int
    verifies: bool


def run_service(index: Path, requests: int, concurrency: int, package: Path | None) -> Result:
    """One server process (this package, or the one unpacked at ``package``) under load."""
    work = Path(tempfile.mkdtemp(prefix="rr-load-"))
    tokens = work / "tokens.json"
    tokens.write_text(
        json.dumps(
            [
                {"token_sha256": hashlib.sha256(t.encode()).hexdigest(), "user": t, "groups": g}
                for t, g in CALLERS.items()
            ]
        )
    )
    log = work / "audit.log"
    key = "load-benchmark-audit-key-0123456789"
    port = free_port()
    env = {**os.environ, "RUNBOOK_RAG_AUDIT_KEY": key}
    if package is not None:
        env["PYTHONPATH"] = str(package)
    command = [sys.executable, "-m", "runbook_rag", "serve", "--index", str(index)]
    command += ["--tokens", str(tokens), "--port", str(port), "--audit-log", str(log), "--rate", "100000"]
    proc = subprocess.Popen(command, env=env, cwd=work)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the service did not start") from None
                time.sleep(0.2)
        asyncio.run(run_load(url, 50, 4))  # warm-up: filters and lexical masks per caller
        warm = len(log.read_text().splitlines())
        latencies, statuses, elapsed = asyncio.run(run_load(url, requests, concurrency))
    finally:
        proc.terminate()
        proc.wait(30)
    verdict = verify(log, key=load_key(key=key))
    return Result(latencies, statuses, elapsed, verdict.records - warm, verdict.ok)


def unpack(rev: str) -> Path:
    """The ``runbook_rag`` package of git revision ``rev``, in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="rr-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "runbook_rag"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def figures(result: Result) -> tuple[float, float, float, float]:
    ms = sorted(x * 1000 for x in result.latencies)
    q = statistics.quantiles(ms, n=100)
    return len(result.latencies) / result.elapsed, q[49], q[94], q[98]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "load")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--baseline", help="a git revision whose service runs the same load in this run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds with --baseline")
    args = parser.parse_args()

    if not (args.index / "CURRENT").exists():
        samples = ROOT / "sample_runbooks"
        RunbookIndex.build([samples], path=args.index, access_map=samples / "access-map.yaml")
    runs: dict[str, list[Result]] = {"current": []}
    rounds = 1
    if args.baseline:
        package = unpack(args.baseline)
        runs = {"baseline": [], "current": []}
        rounds = args.rounds
    for _ in range(rounds):
        for name in runs:
            where = package if name == "baseline" else None
            runs[name].append(run_service(args.index, args.requests, args.concurrency, where))

    print(f"{args.requests} searches, concurrency {args.concurrency}, {len(CALLERS)} callers, loopback")
    ok = True
    best: dict[str, tuple[float, float, float, float]] = {}
    for name, results in runs.items():
        label = name if name == "current" else f"baseline {args.baseline}"
        for result in results:
            rps, p50, p95, p99 = figures(result)
            errors = sum(n for status, n in result.statuses.items() if status != 200)
            state = "verifies" if result.verifies else "BROKEN"
            print(
                f"{label:<20} {rps:8.1f} requests/s   p50 {p50:6.1f} ms   p95 {p95:6.1f} ms   "
                f"p99 {p99:6.1f} ms   errors {errors}   audit log {state} ({result.records} records)"
            )
            ok = ok and errors == 0 and result.verifies and result.records == args.requests
        merged = Result(
            [x for r in results for x in r.latencies], {}, sum(r.elapsed for r in results), 0, True
        )
        best[name] = figures(merged)
    if "baseline" in best:
        (rps, p50, p95, p99), (brps, b50, b95, b99) = best["current"], best["baseline"]
        print(
            f"current / baseline, all rounds: throughput {rps / brps:.2f}x, p50 {p50 / b50:.2f}x, "
            f"p95 {p95 / b95:.2f}x, p99 {p99 / b99:.2f}x"
        )
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
