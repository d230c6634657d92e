"""Which label representation filters fastest inside Chroma's vector query?

    python benchmarks/filter_representation.py [--vectors 20000] [--label-sets 30]

Synthetic unit vectors with label sets drawn from 20 groups. Compares, for principals
holding 1 and 3 groups:
  contains   a list field ``acl`` and ``{"$or": [{"acl": {"$contains": g}}, ...]}``
  flags      one boolean key per group and ``{"$or": [{"g_x": True}, ...]}``
  in-keys    a canonical label-set key ``acl_key`` and ``{"acl_key": {"$in": [visible keys]}}``
  ids        that filter resolved once to the matching ids, passed as ``ids=`` (what runbook-rag
             does: a generation never changes, so the resolution is cached per generation)
against the unfiltered query, and checks every representation returns the same ids.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import chromadb
import numpy as np

HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 128, "max_neighbors": 32}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vectors", type=int, default=20000)
    parser.add_argument("--label-sets", type=int, default=30)
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    groups = [f"g{i}" for i in range(20)]
    label_sets = [
        tuple(sorted(str(g) for g in rng.choice(groups, size=int(rng.integers(1, 4)), replace=False)))
        for _ in range(args.label_sets)
    ]
    vectors = rng.normal(size=(args.vectors, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    client = chromadb.PersistentClient(path=tempfile.mkdtemp(prefix="rr-filter-"))
    col = client.create_collection("runbooks", configuration={"hnsw": HNSW}, embedding_function=None)
    t = time.perf_counter()
    for start in range(0, args.vectors, 5000):
        end = min(start + 5000, args.vectors)
        metas = []
        for i in range(start, end):
            labels = label_sets[i % len(label_sets)]
            metas.append(
                {"acl": list(labels), "acl_key": ",".join(labels), **{f"f_{g}": True for g in labels}}
            )
        col.add(ids=[str(i) for i in range(start, end)], embeddings=vectors[start:end], metadatas=metas)
    print(
        f"{args.vectors} vectors, {len(set(label_sets))} label sets: added in {time.perf_counter() - t:.1f} s"
    )

    queries = rng.normal(size=(args.queries, 384)).astype(np.float32)

    def run(where: dict | None, ids: list[str] | None = None) -> tuple[float, list[list[str]]]:  # type: ignore[type-arg]
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            got = col.query(
                query_embeddings=[q], n_results=5, where=where, ids=ids, include=["metadatas", "distances"]
            )
            times.append(time.perf_counter() - t)
            found.append(got["ids"][0])
        return statistics.median(times) * 1000, found

    base, _ = run(None)
    print(f"unfiltered: p50 {base:.2f} ms")
    for held in (groups[:1], groups[1:4]):
        share = sum(1 for i in range(args.vectors) if set(label_sets[i % len(label_sets)]) & set(held))
        keys = sorted({",".join(ls) for ls in label_sets if set(ls) & set(held)})

        def either(clauses: list[dict]) -> dict:  # type: ignore[type-arg]
            return {"$or": clauses} if len(clauses) > 1 else clauses[0]

        allowed = col.get(where={"acl_key": {"$in": keys}}, include=[])["ids"]
        results = {
            "contains": run(either([{"acl": {"$contains": g}} for g in held])),
            "flags": run(either([{f"f_{g}": True} for g in held])),
            "in-keys": run({"acl_key": {"$in": keys}}),
            "ids": run(None, ids=allowed),
        }
        agree = len({tuple(map(tuple, ids)) for _, ids in results.values()}) == 1
        print(f"principal with {len(held)} group(s), {share / args.vectors:.0%} of vectors visible:")
        for name, (p50, _) in results.items():
            print(f"  {name:9s} p50 {p50:6.2f} ms  ({p50 / base:.1f}x unfiltered)")
        print(f"  same results from all four: {agree}")


if __name__ == "__main__":
    main()
