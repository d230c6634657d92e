"""A bounded load run against `runbook-rag serve` on loopback.

    python benchmarks/service_load.py [--index PATH] [--requests 2000] [--concurrency 16]

Builds the sample index when PATH has none, starts the service as a separate process
(`runbook-rag serve`, real uvicorn) with a fresh audit log, sends search requests from
several callers at the given concurrency over HTTP keep-alive connections, and prints
throughput, latency p50/p95/p99, the errors (which must be 0), and whether the audit log
verifies afterwards with one record per request.
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "load")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    if not (args.index / "CURRENT").exists():
        samples = ROOT / "sample_runbooks"
        RunbookIndex.build([samples], path=args.index, access_map=samples / "access-map.yaml")
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
    command = [str(Path(sys.executable).with_name("runbook-rag")), "serve", "--index", str(args.index)]
    command += ["--tokens", str(tokens), "--port", str(port), "--audit-log", str(log), "--rate", "100000"]
    proc = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("the service did not start") from None
                time.sleep(0.2)
        asyncio.run(run_load(url, 50, 4))  # warm-up: filters and lexical masks per caller
        warm = len(log.read_text().splitlines())
        latencies, statuses, elapsed = asyncio.run(run_load(url, args.requests, args.concurrency))
    finally:
        proc.terminate()
        proc.wait(30)

    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    errors = sum(n for status, n in statuses.items() if status != 200)
    verdict = verify(log, key=load_key(key=key))
    print(f"{args.requests} searches, concurrency {args.concurrency}, {len(CALLERS)} callers, loopback")
    print(f"throughput   {args.requests / elapsed:8.1f} requests/s  ({elapsed:.1f} s)")
    print(f"latency      p50 {q[49]:6.1f} ms   p95 {q[94]:6.1f} ms   p99 {q[98]:6.1f} ms", end="")
    print(f"   max {ms[-1]:6.1f} ms")
    print(f"statuses     {dict(sorted(statuses.items()))}   errors {errors}")
    state = "verifies" if verdict.ok else f"BROKEN at line {verdict.bad_line}"
    print(f"audit log    {state}: {verdict.records} records ({verdict.records - warm} for this run)")
    print(f"{'PASS' if errors == 0 and verdict.ok and verdict.records - warm == args.requests else 'FAIL'}")


if __name__ == "__main__":
    main()
