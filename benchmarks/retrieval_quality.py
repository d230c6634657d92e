"""Retrieval quality of dense, lexical and hybrid search, against the plain LlamaIndex pipeline.

    python benchmarks/retrieval_quality.py [CORPUS] [--index PATH]
        [--queries evals/corpus_runbooks.jsonl] [--access-map benchmarks/corpus-access-map.yaml] [--no-peer]

CORPUS defaults to ../shared/corpus (skipped, exit 0, when absent). Our index is built at
``--index`` unless one is already published there. Every query of the query file runs as
its principal (a line's ``groups``, else a principal in every group of the access map) in
each of our three modes over the same chunks, and through the plain LlamaIndex pipeline
(MarkdownNodeParser + HuggingFaceEmbedding on the same bundled model + Chroma, built in a
temp dir over the same loaded, access-labelled documents, filtered per principal with a
``where`` on one boolean flag per group, top 10 nodes deduplicated to their sources). All
four are measured by the same metric code (:func:`runbook_rag.evaluation.metrics`).

Prints: a table of recall@1/5/10, MRR@10, nDCG@10, leaks and p50 latency per method;
hybrid abstention at the configured threshold; recall@1 and MRR@10 per query kind for
hybrid and LlamaIndex; the misses at 5 of each; and PASS/FAIL for the targets:
  (a) hybrid MRR@10 strictly above the best single retriever's;
  (b) hybrid removes at least half of LlamaIndex's misses at 5: 1 - r@5 <= 0.5 * (1 - r@5 of LlamaIndex);
  (c) hybrid recall@1 at least LlamaIndex's + 0.10;
  (d) filtered search p50 (k=5, a principal in 3 groups, over the query texts, query embedding
      included) at most half of LlamaIndex's filtered retrieval p50, measured in the same run.
The peer needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag import Principal, RunbookIndex  # noqa: E402
from runbook_rag.access import LABEL_SEP, AccessMap  # noqa: E402
from runbook_rag.evaluation import EvalQuery, QueryResult, load_queries, metrics  # noqa: E402
from runbook_rag.sources import load_documents  # noqa: E402

K = 5
DEPTH = 10
MODES = ("dense", "lexical", "hybrid")
COLUMNS = ("recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@10", "leaks", "latency_ms_p50")


def timed(fn, *args, **kwargs) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def fmt(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def misses_at(results: list[QueryResult], n: int) -> list[str]:
    """Answerable queries with no relevant document in the first ``n``."""
    return [r.id for r in results if r.answerable and not set(r.ranked[:n]) & set(r.relevant)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("corpus", nargs="?", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--index", type=Path, default=ROOT / "indexes" / "corpus")
    parser.add_argument("--queries", type=Path, default=ROOT / "evals" / "corpus_runbooks.jsonl")
    parser.add_argument("--access-map", type=Path, default=ROOT / "benchmarks" / "corpus-access-map.yaml")
    parser.add_argument("--no-peer", action="store_true", help="skip the LlamaIndex pipeline")
    args = parser.parse_args()
    corpus = args.corpus.resolve()
    if not corpus.is_dir():
        print(f"skipped: {corpus} does not exist")
        return
    access_map = AccessMap.load(args.access_map)
    queries = load_queries(args.queries)

    if (args.index / "CURRENT").exists():
        print(f"reusing the index at {args.index}")
    else:
        report = RunbookIndex.build([corpus], path=args.index, access_map=access_map)
        print(
            f"built {args.index}: {report.documents} documents, {report.chunks} chunks, "
            f"{report.seconds:.0f} s"
        )
    index = RunbookIndex(args.index)
    manifest = index.manifest
    groups = sorted({g for key in manifest.label_sets for g in key.split(LABEL_SEP)})
    everyone = Principal("eval", frozenset(groups))
    three = Principal("three", frozenset(groups[:3]))
    print(
        f"{manifest.documents} documents, {manifest.chunks} chunks; {len(queries)} queries "
        f"({sum(bool(q.relevant) for q in queries)} answerable)"
    )

    reports = {mode: index.evaluate(queries, principal=everyone, k=DEPTH, mode=mode) for mode in MODES}
    rows: dict[str, dict[str, Any]] = {mode: reports[mode].metrics for mode in MODES}
    results: dict[str, list[QueryResult]] = {mode: reports[mode].results for mode in MODES}

    texts = [q.query for q in queries]
    for q in texts[:5]:  # warm up
        index.search(q, principal=three, k=K)
    ours_filtered = [timed(index.search, q, principal=three, k=K) for q in texts]

    peer: dict[str, Any] | None = None
    if not args.no_peer:
        try:
            with tempfile.TemporaryDirectory(prefix="rr-quality-peer-") as work:
                peer = run_llamaindex(corpus, access_map, queries, everyone, three, Path(work))
        except ImportError as exc:
            print(f"peer skipped: {exc} (pip install -e '.[bench]')")
    if peer is not None:
        rows["llamaindex"] = metrics(peer["results"])
        results["llamaindex"] = peer["results"]
        print(f"LlamaIndex pipeline: {peer['nodes']} nodes, built in {peer['seconds']:.1f} s")

    print(f"\n== document-level retrieval, k={DEPTH}")
    names = ("method", *(c.replace("latency_ms_p50", "p50 ms") for c in COLUMNS))
    print("  ".join(f"{n:>10}" for n in names))
    for method, row in rows.items():
        cells = (f"{row[c]:.1f}" if c == "latency_ms_p50" else fmt(row[c]) for c in COLUMNS)
        print("  ".join(f"{v:>10}" for v in (method, *cells)))

    hybrid = rows["hybrid"]
    print(
        f"\nhybrid abstention at {index.settings.abstain_below}: "
        f"precision {fmt(hybrid['abstention_precision'])}  recall {fmt(hybrid['abstention_recall'])}  "
        f"answered {fmt(hybrid['answered'])}"
    )

    kinds = list(dict.fromkeys(q.kind or "-" for q in queries))
    per_kind = [m for m in ("hybrid", "llamaindex") if m in results]
    print("\n== per kind: recall@1 / MRR@10")
    print(f"{'kind':>14} {'n':>3}  " + "  ".join(f"{m:>17}" for m in per_kind))
    for kind in kinds:
        cells = []
        for method in per_kind:
            subset = metrics([r for r in results[method] if (r.kind or "-") == kind])
            cells.append(f"{fmt(subset['recall@1']):>8} / {fmt(subset['mrr@10']):<6}")
        count = sum((q.kind or "-") == kind for q in queries)
        print(f"{kind:>14} {count:>3}  " + "  ".join(f"{c:>17}" for c in cells))

    print("\n== misses at 5 (answerable queries with no relevant document in the first 5)")
    for method, method_results in results.items():
        print(f"{method:>10}: {', '.join(misses_at(method_results, 5)) or 'none'}")

    print("\n== targets")
    best_single = max(("dense", "lexical"), key=lambda m: rows[m]["mrr@10"])
    check(
        "(a) hybrid MRR@10 above the best single retriever's",
        hybrid["mrr@10"] > rows[best_single]["mrr@10"],
        f"{hybrid['mrr@10']:.3f} vs {best_single} {rows[best_single]['mrr@10']:.3f}",
    )
    ours_p50 = statistics.median(ours_filtered) * 1000
    if peer is None:
        print(f"filtered search p50, k={K}, 3 groups: {ours_p50:.1f} ms (no peer: (b)-(d) not checked)")
        return
    li = rows["llamaindex"]
    check(
        "(b) hybrid removes half of LlamaIndex's misses at 5",
        1 - hybrid["recall@5"] <= 0.5 * (1 - li["recall@5"]),
        f"1 - {hybrid['recall@5']:.3f} = {1 - hybrid['recall@5']:.3f} vs "
        f"0.5 * (1 - {li['recall@5']:.3f}) = {0.5 * (1 - li['recall@5']):.3f}",
    )
    check(
        "(c) hybrid recall@1 >= LlamaIndex's + 0.10",
        hybrid["recall@1"] >= li["recall@1"] + 0.10,
        f"{hybrid['recall@1']:.3f} vs {li['recall@1']:.3f} + 0.10 = {li['recall@1'] + 0.10:.3f}",
    )
    peer_p50 = statistics.median(peer["filtered"]) * 1000
    check(
        f"(d) filtered search p50 (k={K}, 3 groups) at most half of LlamaIndex's",
        ours_p50 <= 0.5 * peer_p50,
        f"ours {ours_p50:.1f} ms, LlamaIndex {peer_p50:.1f} ms, ratio {ours_p50 / peer_p50:.2f}",
    )


def check(name: str, ok: bool, detail: str) -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")


def run_llamaindex(  # type: ignore[no-untyped-def]
    corpus: Path,
    access_map: AccessMap,
    queries: list[EvalQuery],
    everyone: Principal,
    three: Principal,
    path: Path,
):
    from peer import LlamaIndexPeer

    peer = LlamaIndexPeer(load_documents([corpus], access_map=access_map).documents, path)
    seconds, nodes, index = peer.seconds, peer.nodes, peer.index

    def retriever(groups: frozenset[str], k: int):  # type: ignore[no-untyped-def]
        return peer.retriever(k, groups)

    index.as_retriever(similarity_top_k=1).retrieve("warm-up")  # first-call set-up is not latency
    retrievers: dict[frozenset[str], Any] = {}
    results = []
    for q in queries:
        groups = frozenset(q.groups) if q.groups is not None else everyone.groups
        gated = retrievers.setdefault(groups, retriever(groups, DEPTH))
        started = time.perf_counter()
        found = gated.retrieve(q.query)
        took = time.perf_counter() - started
        ranked = tuple(dict.fromkeys(n.node.metadata["source"] for n in found))[:DEPTH]
        leaked = tuple(sorted(set(q.forbidden).intersection(ranked)))
        results.append(QueryResult(q.id, q.kind, tuple(q.relevant), ranked, (), False, leaked, took))

    gated = retriever(three.groups, K)
    for q in queries[:5]:  # warm up
        gated.retrieve(q.query)
    return {
        "nodes": nodes,
        "seconds": seconds,
        "results": results,
        "filtered": [timed(gated.retrieve, q.query) for q in queries],
    }


if __name__ == "__main__":
    main()
