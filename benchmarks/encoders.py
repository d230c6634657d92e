"""Document encoders compared on the same texts: torch, ONNX fp32 and ONNX int8.

    python benchmarks/encoders.py [FOLDER] [--access-map FILE] [--every N]

FOLDER defaults to ../shared/corpus (access map benchmarks/corpus-access-map.yaml), or
sample_runbooks/ when the corpus is absent. The texts are the chunks a build embeds
(:func:`runbook_rag.build.prepare`); ``--every N`` keeps every N-th of them. Each encoder
embeds all of them in the same run, after a warm-up:

- torch: ``SentenceTransformer.encode`` in one large call (it sorts by length inside);
- onnx / int8: :class:`runbook_rag.encoders.OnnxDocumentEncoder` over the fp32 export and
  its int8 quantisation (weights per channel, each quantised product's input smoothed first;
  the attention and feed-forward output projections and the token embeddings kept in fp32),
  graph optimisations on, one text per call on a single-threaded session, one call per
  available core at a time.

Prints texts/s, the ratio to torch, and the cosine similarity of each vector to torch's (least
and mean), with export times.

Measured on two shared cores (ratios are of one run; the same machine's rates vary by a
third between runs, and torch's the most):

    corpus, every 4th chunk (893 texts, 122k tokens), onnx.3 and int8.4:
     encoder  texts/s vs torch  min cos mean cos export s
       torch     55.6    1.00x  1.00000  1.00000      0.0
        onnx     47.4    0.85x  1.00000  1.00000      0.3
        int8     83.5    1.50x  0.99905  0.99955     12.0

The int8 export before smoothing (int8.3) measured 0.99479 at worst and 0.99772 on average on
the same texts. Retrieval quality (hybrid recall@1 / recall@5 / MRR@10, from
benchmarks/build_and_search.py):

    set      torch and onnx          int8.4                  int8.3 (unsmoothed)
    corpus   0.853 / 0.907 / 0.898   0.853 / 0.907 / 0.896   0.840 / 0.907 / 0.888
    sample   0.971 / 1.000 / 0.982   0.971 / 1.000 / 0.984   0.971 / 1.000 / 0.984

Smoothed, int8 keeps the model's retrieval quality (within the 0.005 a default may lose);
unsmoothed, it ranked one corpus query's answer lower. The figures above are of a CPU with VNNI and
signed weights (int8.4). Signed weights' products saturate on x86 CPUs without VNNI, so the export
now stores them unsigned (int8.5), the same on every CPU; onnxruntime's VNNI kernels take signed
weights only, and on a CPU without VNNI int8.5 encoded the corpus's chunks at fp32's rate (31.2
against 32.0 texts/s, benchmarks/build_and_search.py): fp32 is the default.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from runbook_rag.access import AccessMap  # noqa: E402
from runbook_rag.build import prepare  # noqa: E402
from runbook_rag.embedding import SentenceTransformerEmbedder  # noqa: E402
from runbook_rag.encoders import available_cores  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    corpus = ROOT.parent / "shared" / "corpus"
    parser.add_argument("folder", nargs="?", type=Path, default=corpus if corpus.is_dir() else None)
    parser.add_argument("--access-map", type=Path, default=None)
    parser.add_argument("--every", type=int, default=1, help="keep every N-th text")
    args = parser.parse_args()
    folder = args.folder or ROOT / "sample_runbooks"
    amap = args.access_map or (
        ROOT / "benchmarks" / "corpus-access-map.yaml"
        if folder.resolve() == corpus.resolve()
        else folder / "access-map.yaml"
    )
    access_map = AccessMap.load(amap) if amap.exists() else AccessMap()

    model = SentenceTransformerEmbedder()
    texts = [c.embed_text for c in prepare([folder], embedder=model, access_map=access_map).chunks]
    texts = texts[:: args.every]
    # What each encoder sees: the text truncated to the window, with the special tokens.
    lengths = [min(n, model.max_tokens) + 2 for n in model.count_tokens(texts)]
    tokens = sum(lengths)
    print(
        f"{folder}: {len(texts)} texts, {tokens} tokens (mean {tokens / len(texts):.0f}); "
        f"{available_cores()} cores"
    )

    rows = []
    with tempfile.TemporaryDirectory(prefix="rr-encoders-") as cache:
        model.embed(texts[:8])  # loads the model
        started = time.perf_counter()
        reference = np.asarray(model.embed(texts))
        seconds = time.perf_counter() - started
        rows.append(("torch", seconds, 1.0, 1.0, 0.0))
        for kind in ("onnx", "int8"):
            started = time.perf_counter()
            embedder = SentenceTransformerEmbedder(encoder=kind, cache=Path(cache))
            if embedder.encoder != kind:
                print(f"{kind}: the export failed (see the warning); not measured")
                continue
            export = time.perf_counter() - started
            encoder = embedder.document_encoder
            assert encoder is not None
            encoder.embed(texts[:8])
            started = time.perf_counter()
            vectors = np.asarray(encoder.embed(texts))
            seconds = time.perf_counter() - started
            cosine = (vectors * reference).sum(axis=1)
            rows.append((kind, seconds, float(cosine.min()), float(cosine.mean()), export))

    base = len(texts) / rows[0][1]
    names = ("encoder", "texts/s", "vs torch", "min cos", "mean cos", "export s")
    print("\n" + " ".join(f"{n:>8}" for n in names))
    for kind, seconds, least, mean, export in rows:
        rate = len(texts) / seconds
        print(f"{kind:>8} {rate:8.1f} {rate / base:7.2f}x {least:8.5f} {mean:8.5f} {export:8.1f}")


if __name__ == "__main__":
    main()
