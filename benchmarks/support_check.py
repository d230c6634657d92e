"""Precision and recall of the support check on hand-labelled answer sentences.

    python benchmarks/support_check.py [--labels evals/support_sentences.jsonl] [--errors]

Each line of the labels file is one answer sentence with the passages it cites (a runbook
of ``sample_runbooks/`` and a line range) and a label, ``supported`` or ``unsupported``,
given by reading the sentence against those lines only. The check
(:mod:`runbook_rag.support`) is scored as a detector of unsupported sentences: precision
is the share of sentences it flags that are unsupported, recall the share of unsupported
sentences it flags. Printed: the sweep of the content coverage threshold, the interval
where F1 is best (the threshold in use is its middle), the figures at the threshold in
use, and with ``--errors`` every sentence the check gets wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag.support import COVERAGE_THRESHOLD, check_sentence  # noqa: E402

SWEEP = [round(0.4 + 0.05 * i, 2) for i in range(12)]


def load(labels: Path, sources: Path) -> list[dict[str, Any]]:
    """The labelled sentences, each with the text of the lines it cites."""
    rows = []
    for line in labels.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        passages = []
        for cite in row["cites"]:
            lines = (sources / cite["source"]).read_text(encoding="utf-8").split("\n")
            first, last = cite["lines"]
            passages.append("\n".join(lines[first - 1 : last]))
        rows.append({**row, "passages": passages})
    return rows


def score(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """Precision, recall and F1 of flagging unsupported sentences, and the mistakes."""
    tp = fp = fn = tn = 0
    wrong = []
    for row in rows:
        verdict = check_sentence(row["sentence"], row["passages"], threshold=threshold)
        flagged, unsupported = not verdict.supported, row["label"] == "unsupported"
        tp += flagged and unsupported
        fp += flagged and not unsupported
        fn += unsupported and not flagged
        tn += not flagged and not unsupported
        if flagged != unsupported:
            wrong.append((row["id"], row["label"], verdict))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    accuracy = (tp + tn) / len(rows)
    return {
        "threshold": threshold,
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "accuracy": round(accuracy, 3),
        "counts": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
        "wrong": wrong,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=Path, default=ROOT / "evals" / "support_sentences.jsonl")
    parser.add_argument("--sources", type=Path, default=ROOT / "sample_runbooks")
    parser.add_argument("--errors", action="store_true", help="List every sentence the check gets wrong.")
    args = parser.parse_args()
    rows = load(args.labels, args.sources)
    unsupported = sum(1 for r in rows if r["label"] == "unsupported")
    print(f"{len(rows)} sentences: {len(rows) - unsupported} supported, {unsupported} unsupported")
    print(f"\n{'threshold':>9}  {'precision':>9}  {'recall':>6}  {'f1':>5}  {'accuracy':>8}")
    for threshold in SWEEP:
        s = score(rows, threshold)
        mark = "  <- in use" if threshold == COVERAGE_THRESHOLD else ""
        print(
            f"{threshold:>9.2f}  {s['precision']:>9.3f}  {s['recall']:>6.3f}  {s['f1']:>5.3f}"
            f"  {s['accuracy']:>8.3f}{mark}"
        )
    fine = [score(rows, t / 100) for t in range(30, 100)]
    best = max(s["f1"] for s in fine)
    top = [s["threshold"] for s in fine if s["f1"] == best]
    print(f"\nbest F1 {best} for thresholds {top[0]:.2f}-{top[-1]:.2f} (middle {(top[0] + top[-1]) / 2:.3f})")
    used = score(rows, COVERAGE_THRESHOLD)
    figures = {k: used[k] for k in ("precision", "recall", "f1", "counts")}
    print(f"\nin use ({COVERAGE_THRESHOLD}): {json.dumps(figures)}")
    if args.errors:
        for id_, label, verdict in used["wrong"]:
            print(f"\n{id_} labelled {label}, checked {verdict.reason} (coverage {verdict.coverage:.2f})")
            print(f"  {verdict.text}")
            if verdict.missing:
                print(f"  missing: {', '.join(verdict.missing)}")


if __name__ == "__main__":
    main()
