"""Build throughput and search latency, against the plain LlamaIndex pipeline in the same run.

    python benchmarks/build_and_search.py [FOLDER] [--access-map FILE] [--no-peer]

FOLDER defaults to sample_runbooks/; ../shared/corpus is the realistic one (its access
map is benchmarks/corpus-access-map.yaml, picked automatically). Prints:
documents, chunks, build seconds and chunks/s; the raw model encode rate on the same
chunk texts (the ceiling for build throughput); search latency p50/p95 with and
without the access filter; ``runbook-rag --help`` time; and the same figures for the
plain LlamaIndex pipeline (MarkdownNodeParser + HuggingFaceEmbedding + Chroma) over
the same documents, as ratios. The peer needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag import Principal, RunbookIndex  # noqa: E402
from runbook_rag.access import LABEL_SEP, AccessMap  # noqa: E402
from runbook_rag.build import prepare  # noqa: E402
from runbook_rag.embedding import SentenceTransformerEmbedder  # noqa: E402
from runbook_rag.generations import load_manifest  # noqa: E402
from runbook_rag.sources import load_documents  # noqa: E402
from runbook_rag.store import ChromaStore  # noqa: E402

K = 5


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:6.1f} ms  p95 {pct(values, 95) * 1000:6.1f} ms"


def timed(fn, *args, **kwargs) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", type=Path, default=ROOT / "sample_runbooks")
    parser.add_argument("--access-map", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--no-peer", action="store_true", help="skip the LlamaIndex pipeline")
    args = parser.parse_args()
    folder = args.folder.resolve()
    if not folder.is_dir():
        print(f"skipped: {folder} does not exist")
        return
    amap_path = args.access_map or (
        ROOT / "benchmarks" / "corpus-access-map.yaml"
        if folder.name == "corpus"
        else folder / "access-map.yaml"
    )
    access_map = AccessMap.load(amap_path) if amap_path.exists() else AccessMap()

    t = time.perf_counter()
    model = SentenceTransformerEmbedder()
    print(f"model load {time.perf_counter() - t:.2f} s ({model.model_id}, {model.dimension}-d)")

    model.embed(["warm-up"] * 8)  # first-call set-up is not build throughput
    work = Path(tempfile.mkdtemp(prefix="rr-bench-"))
    report = RunbookIndex.build([folder], path=work / "ours", access_map=access_map, embedder=model)
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rate = report.chunks / report.seconds
    print(f"\n== runbook-rag on {folder}")
    print(f"documents {report.documents}  chunks {report.chunks}  skipped {len(report.skipped)}")
    print(f"build {report.seconds:.1f} s  ->  {rate:.1f} chunks/s  (peak RSS so far {rss_ours:.0f} MiB)")

    # The ceiling: the model alone on exactly the texts the build embedded.
    loaded = load_documents([folder], access_map=access_map)
    texts = [c.embed_text for c in prepare([folder], embedder=model, access_map=access_map).chunks]
    encode_s = timed(model.embed, texts)
    sizes = model.count_tokens(texts)
    print(
        f"raw encode of the same {len(texts)} texts: {encode_s:.1f} s "
        f"-> {len(texts) / encode_s:.1f} texts/s; "
        f"build reaches {rate / (len(texts) / encode_s):.0%} of it"
    )
    print(
        f"chunk tokens: median {statistics.median(sizes):.0f}, max {max(sizes)} "
        f"(window {model.max_tokens}); over the window: {sum(s > model.max_tokens for s in sizes)}"
    )
    naive = [
        " ".join(d.text.split()[i : i + 200])
        for d in loaded.documents
        for i in range(0, len(d.text.split()), 200)
    ]
    over = sum(s > model.max_tokens for s in model.count_tokens(naive))
    print(
        f"for contrast, a naive 200-word cap: {over / len(naive):.0%} of {len(naive)} pieces "
        "exceed the window"
    )

    index = RunbookIndex(work / "ours")  # as served: queries through the index's exported encoder
    query_embedder = index._served.encoder(index.manifest)
    print(f"query embedder: {type(query_embedder).__name__}")
    label_sets = index.manifest.label_sets
    groups = sorted({g for key in label_sets for g in key.split(LABEL_SEP)})
    queries = [d.title for d in loaded.documents][: args.queries]
    one = Principal("one", frozenset({groups[0]}))
    three = Principal("three", frozenset(groups[:3]))
    gen_dir, _ = load_manifest(work / "ours")
    store = ChromaStore(gen_dir)
    for q in queries[:5]:  # warm up
        index.search(q, principal=three, k=K)
    unfiltered = [
        timed(lambda q=q: store.query_unfiltered(query_embedder.embed([q])[0], k=K)) for q in queries
    ]
    filtered_one = [timed(index.search, q, principal=one, k=K) for q in queries]
    filtered_three = [timed(index.search, q, principal=three, k=K) for q in queries]
    print(f"search k={K} over {len(queries)} queries (query embedding included):")
    print(f"  unfiltered            {ms(unfiltered)}")
    print(f"  filtered, 1 group     {ms(filtered_one)}   ({groups[0]})")
    print(f"  filtered, 3 groups    {ms(filtered_three)}   ({', '.join(groups[:3])})")
    ratio = statistics.median(filtered_three) / statistics.median(unfiltered)
    print(f"  filtered/unfiltered p50: {ratio:.2f}x")

    # The HNSW graph against exact search, for the filtered principal.
    import numpy as np

    got = store._collection.get(include=["embeddings", "metadatas"])
    allowed = [i for i, m in enumerate(got["metadatas"]) if set(m["acl"]) & three.groups]
    matrix = np.asarray(got["embeddings"])[allowed]
    ids = [got["ids"][i] for i in allowed]
    found = 0
    for q in queries:
        vector = np.asarray(query_embedder.embed([q])[0])
        exact = {ids[i] for i in np.argsort(-(matrix @ vector))[:K]}
        found += len(exact & {h.chunk_id for h in index.search(q, principal=three, k=K)})
    print(f"filtered HNSW recall@{K} against exact search: {found / (K * len(queries)):.3f}")

    helps = []
    for _ in range(5):
        helps.append(
            timed(
                subprocess.run,
                [str(Path(sys.executable).with_name("runbook-rag")), "--help"],
                capture_output=True,
                check=True,
            )
        )
    print(f"runbook-rag --help: median {statistics.median(helps):.2f} s")

    if args.no_peer:
        return
    try:
        peer = run_llamaindex(loaded.documents, queries, three, work / "peer")
    except ImportError as exc:
        print(f"\npeer skipped: {exc} (pip install -e '.[bench]')")
        return
    print("\n== plain LlamaIndex pipeline, same documents, same model")
    print(f"nodes {peer['nodes']}  build {peer['seconds']:.1f} s  ->  {peer['rate']:.1f} nodes/s")
    print(f"  unfiltered            {ms(peer['unfiltered'])}")
    print(f"  filtered, 3 groups    {ms(peer['filtered'])}")
    print("\n== ratios (runbook-rag / LlamaIndex)")
    print(f"build throughput        {rate / peer['rate']:.2f}x")
    search_ratio = statistics.median(filtered_three) / statistics.median(peer["filtered"])
    print(f"filtered search p50     {search_ratio:.2f}x")
    print(json.dumps({"ours_chunks_per_s": round(rate, 1), "peer_nodes_per_s": round(peer["rate"], 1)}))


def run_llamaindex(documents, queries, principal, path):  # type: ignore[no-untyped-def]
    from peer import LlamaIndexPeer

    peer = LlamaIndexPeer(documents, path)
    plain = peer.retriever(K)
    gated = peer.retriever(K, principal.groups)
    for q in queries[:5]:
        gated.retrieve(q)
    return {
        "nodes": peer.nodes,
        "seconds": peer.seconds,
        "rate": peer.nodes / peer.seconds,
        "unfiltered": [timed(plain.retrieve, q) for q in queries],
        "filtered": [timed(gated.retrieve, q) for q in queries],
    }


if __name__ == "__main__":
    main()
