"""How well the command classifier gates risky commands, against a first-word allow-list.

    python benchmarks/command_risk.py

Runs both on the hand-labelled commands in ``evals/commands.jsonl`` (taken from the shared corpus
and the sample runbooks) and ``evals/commands_adversarial.jsonl`` (one set of cases per known
trap), and prints for each:

- destructive recall: the share of truly destructive commands labelled ``destructive`` or
  ``unknown`` (both are gated; must be 1.0);
- change as read: truly ``change`` commands labelled ``read`` (must be 0);
- read kept: the share of truly ``read`` commands labelled ``read`` (usefulness; at least 0.8);
- commands per second.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag.commands import classify  # noqa: E402

SETS = ("commands.jsonl", "commands_adversarial.jsonl")

# What a first-word allow-list guard does: read when the first word is a known read-only tool
# (or a read verb of kubectl), otherwise gated as unknown.
ALLOWED_TEXT = """cat less head tail grep jq wc sort uniq ls ps df du free top uptime date echo printf
dig nslookup ping ss netstat whoami hostname id stat which test true find sed awk curl git journalctl
env timeout watch select show explain with"""
ALLOWED = set(ALLOWED_TEXT.split())
KUBECTL_READ = {"get", "describe", "logs", "top", "explain", "version", "cluster-info"}


def allow_list(command: str, language: str) -> str:
    words = command.split()
    if not words:
        return "read"
    first = words[0].lower()
    if first in ("kubectl", "oc") and len(words) > 1 and words[1] in KUBECTL_READ:
        return "read"
    return "read" if first in ALLOWED else "unknown"


def ours(command: str, language: str) -> str:
    return classify(command, language).risk


def load(name: str) -> list[dict[str, str]]:
    lines = (ROOT / "evals" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def measure(rows: list[dict[str, str]], classifier: Callable[[str, str], str]) -> dict[str, float]:
    start = time.perf_counter()
    predicted = [classifier(row["command"], row["language"]) for row in rows]
    elapsed = time.perf_counter() - start
    destructive = [
        p for row, p in zip(rows, predicted, strict=True) if row["risk"] in ("destructive", "unknown")
    ]
    change = [p for row, p in zip(rows, predicted, strict=True) if row["risk"] == "change"]
    read = [p for row, p in zip(rows, predicted, strict=True) if row["risk"] == "read"]
    return {
        "commands": len(rows),
        "destructive_recall": sum(p in ("destructive", "unknown") for p in destructive)
        / max(1, len(destructive)),
        "change_as_read": sum(p == "read" for p in change),
        "read_kept": sum(p == "read" for p in read) / max(1, len(read)),
        "per_second": len(rows) / elapsed if elapsed else float("inf"),
    }


def main() -> None:
    classify("kubectl get pods")  # load the parsers before timing
    classify("SELECT 1", "sql")
    header = (
        f"{'set':<28} {'classifier':<11} {'n':>4} {'destr. recall':>13} {'change->read':>12} "
        f"{'read kept':>9} {'cmd/s':>8}"
    )
    print(header)
    print("-" * len(header))
    for name in SETS:
        rows = load(name)
        for label, classifier in (("ours", ours), ("allow-list", allow_list)):
            m = measure(rows, classifier)
            print(
                f"{name:<28} {label:<11} {m['commands']:>4} {m['destructive_recall']:>13.3f} "
                f"{m['change_as_read']:>12.0f} {m['read_kept']:>9.3f} {m['per_second']:>8.0f}"
            )


if __name__ == "__main__":
    main()
