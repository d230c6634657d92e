"""Filtered search latency at scale: a synthetic generation of 100k chunks, searched as served.

    python benchmarks/scale.py [--chunks 100000] [--queries 200] [--base 2000] [--source FOLDER]
        [--keep PATH]

Embedding 100k chunks with the model would take an hour on two cores, so the generation is
written directly with the library's own storage (Chroma store, lexical index, exported query
encoder, manifest, published pointer), the way a build writes one. Its chunks are real:
``--base`` chunks of SOURCE (../shared/corpus when present, else sample_runbooks/, chunked by
the library) are embedded once with the bundled model, then replicated, per source document,
into synthetic documents until there are ``--chunks``: each copy gets a unique service name
(in its title, path and text) and a dozen or so words drawn from the corpus vocabulary, its
vector is the original's plus gaussian noise (``--noise`` per dimension), renormalised, and
each synthetic document is labelled with 1-3 of 12 groups.

The index is then opened as a bot opens it (queries embedded by the exported ONNX encoder) and
searched with k=5 by ``--queries`` queries (a chunk's heading or title, every other one naming
a synthetic service) as principals in 1, 3 and all 12 groups, in hybrid, dense and lexical
mode. The synthetic chunks are made and written a batch at a time, through the same writer
a build uses (store batches and a lexical index fed one chunk at a time), so the benchmark
never holds every chunk or vector either. Prints: time to write the generation (and the
share of it spent tokenising for the lexical index), the peak RSS while writing, its size on
disk, search latency p50/p95 (and the first query, which resolves the principal's filter),
Chroma alone with no filter for reference, peak RSS of the whole run, and PASS/FAIL for
"hybrid filtered p50 <= 100 ms" (1 and 3 groups). Works in a temp dir, removed at the end,
unless ``--keep PATH``.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag import Principal, RunbookIndex  # noqa: E402
from runbook_rag.access import LABEL_SEP, AccessMap  # noqa: E402
from runbook_rag.build import (  # noqa: E402
    WRITE_BATCH,
    GenerationWriter,
    content_key,
    prepare,
    write_generation,
)
from runbook_rag.embedding import SentenceTransformerEmbedder  # noqa: E402
from runbook_rag.generations import (  # noqa: E402
    ENCODERS,
    FileLayout,
)
from runbook_rag.records import Chunk  # noqa: E402
from runbook_rag.store import ChromaStore  # noqa: E402

K = 5
BATCH = WRITE_BATCH  # chunks made and written at a time, as a build writes them
TARGET_MS = 100.0
GROUPS = (
    "sre",
    "platform",
    "dba",
    "network",
    "security",
    "payments",
    "identity",
    "storage",
    "observability",
    "data",
    "mobile",
    "support",
)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def timed(fn, *args, **kwargs) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--base", type=int, default=2000, help="real chunks to embed and replicate")
    parser.add_argument("--noise", type=float, default=0.02, help="gaussian noise per vector dimension")
    parser.add_argument("--source", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="write the index here and keep it")
    args = parser.parse_args()
    corpus = ROOT.parent / "shared" / "corpus"
    folder = (args.source or (corpus if corpus.is_dir() else ROOT / "sample_runbooks")).resolve()
    amap_path = (
        ROOT / "benchmarks" / "corpus-access-map.yaml"
        if folder.name == "corpus"
        else folder / "access-map.yaml"
    )
    access_map = AccessMap.load(amap_path) if amap_path.exists() else AccessMap()
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep {args.keep} is not empty")
    path = args.keep or Path(tempfile.mkdtemp(prefix="rr-scale-"))
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    model = SentenceTransformerEmbedder()
    real = prepare([folder], embedder=model, access_map=access_map).chunks
    picked = np.sort(rng.choice(len(real), size=min(args.base, len(real)), replace=False))
    base = [real[i] for i in picked]
    found = len(real)
    del real
    t = time.perf_counter()
    base_vectors = np.asarray(model.embed([c.embed_text for c in base]), dtype=np.float32)
    print(f"{folder}: {found} chunks; embedded {len(base)} of them in {time.perf_counter() - t:.1f} s")

    services: list[str] = []
    batches = synthesize(base, base_vectors, args.chunks, args.noise, rng, services)
    try:
        name, total_s, lexical_s, cosines = write(path, batches, model)
        written_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"synthetic: {args.chunks} chunks in {len(services)} documents; cosine to the original "
            f"vector: median {np.median(cosines):.3f}"
        )
        print(f"\n== writing the generation ({args.chunks} chunks, made and written in batches of {BATCH})")
        print(f"whole generation  {total_s:7.1f} s  ({args.chunks / total_s:.0f} chunks/s)")
        print(f"of which lexical  {lexical_s:7.1f} s  (tokenising, {args.chunks / lexical_s:.0f} chunks/s)")
        print(f"peak RSS so far   {written_rss:7.0f} MiB")
        gen = path / name
        lexical_mb = size_mb(gen / "lexical")
        print(
            f"on disk: {size_mb(path):.0f} MB (Chroma {size_mb(gen) - lexical_mb:.0f} MB, "
            f"lexical {lexical_mb:.0f} MB, query encoder {size_mb(path / ENCODERS):.0f} MB)"
        )
        measure(path, base, services, args.queries, rng)
    finally:
        if args.keep is None:
            shutil.rmtree(path, ignore_errors=True)
        else:
            print(f"kept: {path}")


def synthesize(
    base: list[Chunk],
    base_vectors: np.ndarray,
    total: int,
    noise: float,
    rng: np.random.Generator,
    services: list[str],
) -> Iterator[tuple[list[Chunk], np.ndarray, np.ndarray]]:
    """``total`` chunks, ``BATCH`` at a time with their vectors and their cosine to the
    original's: the base documents copied over and over, each copy a new service (appended
    to ``services``)."""
    vocabulary = np.array(sorted({w.lower() for c in base for w in re.findall(r"[A-Za-z]{4,12}", c.text)}))
    documents: dict[str, list[int]] = defaultdict(list)
    for i, chunk in enumerate(base):
        documents[chunk.source].append(i)
    made = 0
    chunks: list[Chunk] = []
    origin: list[int] = []

    def batch() -> tuple[list[Chunk], np.ndarray, np.ndarray]:
        rows = np.asarray(origin)
        vectors = base_vectors[rows] + noise * rng.standard_normal(
            (len(rows), base_vectors.shape[1]), np.float32
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        out = (chunks.copy(), vectors, np.einsum("ij,ij->i", vectors, base_vectors[rows]))
        chunks.clear()
        origin.clear()
        return out

    while made < total:
        for members in documents.values():
            serial = len(services)
            words = rng.choice(vocabulary, size=2)
            service = f"{words[0]}-{words[1]}-{serial:05d}"
            services.append(service)
            labels = tuple(sorted(rng.choice(GROUPS, size=int(rng.integers(1, 4)), replace=False).tolist()))
            for j in members[: total - made]:
                b = base[j]
                extra = " ".join(rng.choice(vocabulary, size=int(rng.integers(8, 20))).tolist())
                chunks.append(
                    Chunk(
                        chunk_id=f"syn-{made:07d}",
                        doc_id=f"syn-doc-{serial:06d}",
                        source=f"synthetic/{service}/{b.source}",
                        title=f"{b.title} ({service})",
                        heading_path=b.heading_path,
                        start_line=b.start_line,
                        end_line=b.end_line,
                        text=f"{b.text}\n\nService {service}: {extra}",
                        labels=labels,
                    )
                )
                origin.append(j)
                made += 1
                if len(chunks) == BATCH:
                    yield batch()
            if made >= total:
                break
    if chunks:
        yield batch()


def write(
    path: Path, batches: Iterator[tuple[list[Chunk], np.ndarray, np.ndarray]], model
) -> tuple[str, float, float, np.ndarray]:  # type: ignore[no-untyped-def]
    """Write and publish a generation through the library, as a build does, a batch at a
    time; returns its name, the seconds the whole write took (making the synthetic chunks
    excluded), those spent tokenising for the lexical index, and each vector's cosine to
    its original."""
    layout = FileLayout(path)
    writer = GenerationWriter(layout, model.dimension)
    total = lexical = 0.0
    sources: set[str] = set()
    cosines = []
    for chunks, vectors, cosine in batches:
        started = time.perf_counter()
        keys = [content_key(c, model) for c in chunks]
        for chunk, key in zip(chunks, keys, strict=True):
            writer.index(chunk, key)
        lexical += time.perf_counter() - started
        writer.store(chunks, keys, vectors)
        total += time.perf_counter() - started
        sources.update(c.source for c in chunks)
        cosines.append(cosine)
    started = time.perf_counter()
    name = write_generation(layout, [], [], [], model, documents=len(sources), report={}, into=writer)
    total += time.perf_counter() - started
    return name, total, lexical, np.concatenate(cosines)


def measure(path: Path, base: list[Chunk], services: list[str], count: int, rng: np.random.Generator) -> None:
    index = RunbookIndex(path)
    manifest = index.manifest
    query_embedder = index._served.encoder(index.manifest)
    print(f"\nquery embedder: {type(query_embedder).__name__}; {len(manifest.label_sets)} label sets")
    queries = []
    for n in range(count):
        chunk = base[int(rng.integers(len(base)))]
        text = chunk.heading_path[-1] if chunk.heading_path else chunk.title
        if n % 2:
            text = f"{text} on {services[int(rng.integers(len(services)))]}"
        queries.append(text)

    def visible(principal: Principal) -> float:
        seen = sum(
            n for key, n in manifest.label_set_counts.items() if principal.groups & set(key.split(LABEL_SEP))
        )
        return seen / manifest.chunks

    one = Principal("one", frozenset(GROUPS[:1]))
    three = Principal("three", frozenset(GROUPS[:3]))
    everyone = Principal("all", frozenset(GROUPS))
    runs = [
        ("hybrid, 1 group", one, "hybrid"),
        ("hybrid, 3 groups", three, "hybrid"),
        ("hybrid, all 12 groups", everyone, "hybrid"),
        ("dense, 3 groups", three, "dense"),
        ("lexical, 3 groups", three, "lexical"),
    ]
    print(f"\n== search k={K}, {len(queries)} queries (query embedding included)")
    print(f"{'':24}{'visible':>9}{'first':>10}{'p50':>10}{'p95':>10}")
    p50s: dict[str, float] = {}
    for label, principal, mode in runs:
        first = timed(index.search, queries[0], principal=principal, k=K, mode=mode)
        for q in queries[1:4]:  # warm up
            index.search(q, principal=principal, k=K, mode=mode)
        times = [timed(index.search, q, principal=principal, k=K, mode=mode) for q in queries]
        p50s[label] = statistics.median(times) * 1000
        print(
            f"{label:24}{visible(principal):>9.0%}{first * 1000:>8.1f}ms{p50s[label]:>8.1f}ms"
            f"{pct(times, 95) * 1000:>8.1f}ms"
        )
    store = ChromaStore(path / manifest.generation)
    raw = [timed(lambda q=q: store.query_unfiltered(query_embedder.embed([q])[0], k=K)) for q in queries]
    print(
        f"{'Chroma alone, no filter':24}{1:>9.0%}{'':>10}{statistics.median(raw) * 1000:>8.1f}ms"
        f"{pct(raw, 95) * 1000:>8.1f}ms"
    )
    print(f"\npeak RSS of the whole run {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    worst = max(p50s["hybrid, 1 group"], p50s["hybrid, 3 groups"])
    verdict = "PASS" if worst <= TARGET_MS else "FAIL"
    print(f"{verdict}  hybrid filtered p50 <= {TARGET_MS:.0f} ms at {manifest.chunks} chunks: {worst:.1f} ms")


if __name__ == "__main__":
    main()
