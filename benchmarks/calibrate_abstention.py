"""Calibrate the answer abstention threshold on an eval set and print retrieval figures.

    python benchmarks/calibrate_abstention.py [--index PATH] [--queries evals/sample_runbooks.jsonl]

Builds the sample index first when ``--index`` has none. Each query line is
``{"id", "query", "relevant": [sources]}``; ``relevant: []`` means the right
answer is to abstain. The principal holds every group of the index, so the
figures measure retrieval, not access control. The threshold printed is the one
that best separates the top-1 scores of answerable from unanswerable queries
(maximum balanced accuracy, midpoint of the best interval).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag import Principal, RunbookIndex  # noqa: E402
from runbook_rag.access import LABEL_SEP  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "calibration")
    parser.add_argument("--queries", type=Path, default=ROOT / "evals" / "sample_runbooks.jsonl")
    parser.add_argument("--sources", type=Path, default=ROOT / "sample_runbooks")
    parser.add_argument("--access-map", type=Path, default=ROOT / "sample_runbooks" / "access-map.yaml")
    args = parser.parse_args()

    if not (args.index / "CURRENT").exists():
        RunbookIndex.build([args.sources], path=args.index, access_map=args.access_map)
    index = RunbookIndex(args.index)
    groups = {g for key in index.manifest.label_sets for g in key.split(LABEL_SEP)}
    everyone = Principal("calibration", frozenset(groups))

    queries = [json.loads(line) for line in args.queries.read_text().splitlines() if line.strip()]
    answerable, unanswerable, ranks = [], [], []
    for q in queries:
        hits = index.search(q["query"], principal=everyone, k=10)
        top = hits[0].score if hits else 0.0
        if q["relevant"]:
            answerable.append(top)
            docs = list(dict.fromkeys(h.source for h in hits))
            rank = next((i + 1 for i, s in enumerate(docs) if s in q["relevant"]), None)
            ranks.append(rank)
        else:
            unanswerable.append(top)

    n = len(ranks)
    print(f"queries: {len(queries)} ({n} answerable, {len(unanswerable)} unanswerable)")
    print(f"recall@1  {sum(1 for r in ranks if r == 1) / n:.3f}")
    print(f"recall@5  {sum(1 for r in ranks if r and r <= 5) / n:.3f}")
    print(f"recall@10 {sum(1 for r in ranks if r) / n:.3f}")
    print(f"MRR@10    {sum(1 / r for r in ranks if r) / n:.3f}")
    for name, scores in (("answerable", answerable), ("unanswerable", unanswerable)):
        print(
            f"top-1 score, {name}: min {min(scores):.3f} "
            f"median {statistics.median(scores):.3f} max {max(scores):.3f}"
        )

    def balanced_accuracy(t: float) -> float:
        hit = sum(s >= t for s in answerable) / len(answerable)
        rejected = sum(s < t for s in unanswerable) / len(unanswerable)
        return (hit + rejected) / 2

    scores = sorted(set(answerable + unanswerable))
    midpoints = [(a + b) / 2 for a, b in itertools.pairwise(scores)]
    threshold = max(midpoints, key=lambda t: (balanced_accuracy(t), -abs(t - 0.5)))
    answered = sum(s >= threshold for s in answerable) / len(answerable)
    abstained = sum(s < threshold for s in unanswerable) / len(unanswerable)
    print(
        f"threshold {threshold:.3f}: answers {answered:.1%} of answerable, "
        f"abstains on {abstained:.1%} of unanswerable"
    )
    print(f"current setting abstain_below = {index.settings.abstain_below}")


if __name__ == "__main__":
    main()
