"""Calibrate the answer abstention threshold on an eval set.

    python benchmarks/calibrate_abstention.py [--index PATH] [--queries evals/sample_runbooks.jsonl]

Builds the sample index first when ``--index`` has none. Query lines are those of
``runbook-rag eval`` (``relevant: []`` means the right answer is to abstain; a line's
``groups`` run as that principal, the others as a principal in every group of the
index). A hit's score is its evidence: the mean of its cosine similarity and the share
of the query's terms (IDF-weighted over the visible chunks) it contains. The threshold
printed is the one that best separates the top hit's evidence on answerable queries
from unanswerable ones (maximum balanced accuracy, midpoint of the best interval);
set it with ``RUNBOOK_RAG_ABSTAIN_BELOW``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag import Principal, RunbookIndex  # noqa: E402
from runbook_rag.access import LABEL_SEP  # noqa: E402
from runbook_rag.evaluation import load_queries  # noqa: E402


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

    answerable, unanswerable = [], []
    for q in load_queries(args.queries):
        who = Principal("calibration", frozenset(q.groups)) if q.groups is not None else everyone
        hits = index.search(q.query, principal=who, k=1)
        (answerable if q.relevant else unanswerable).append(hits[0].score if hits else 0.0)

    print(f"queries: {len(answerable)} answerable, {len(unanswerable)} unanswerable")
    for name, scores in (("answerable", answerable), ("unanswerable", unanswerable)):
        print(
            f"top-hit evidence, {name}: min {min(scores):.3f} "
            f"median {statistics.median(scores):.3f} max {max(scores):.3f}"
        )

    def balanced_accuracy(t: float) -> float:
        hit = sum(s >= t for s in answerable) / len(answerable)
        rejected = sum(s < t for s in unanswerable) / len(unanswerable)
        return (hit + rejected) / 2

    scores = sorted(set(answerable + unanswerable))
    midpoints = [(a + b) / 2 for a, b in itertools.pairwise(scores)]
    threshold = max(midpoints, key=lambda t: (balanced_accuracy(t), -abs(t - 0.5)))
    for label, t in (("calibrated", threshold), ("current", index.settings.abstain_below)):
        answered = sum(s >= t for s in answerable) / len(answerable)
        abstained = sum(s < t for s in unanswerable) / len(unanswerable)
        print(
            f"{label} threshold {t:.3f}: answers {answered:.1%} of answerable, "
            f"abstains on {abstained:.1%} of unanswerable"
        )


if __name__ == "__main__":
    main()
