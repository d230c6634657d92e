"""The plain LlamaIndex pipeline's query script: one question against the peer's Chroma store
(see ``peer.py``), as a team would run it from a shell.

    python benchmarks/peer_query.py STORE_DIR QUESTION [--group G ...] [-k N]

Loads the bundled model through HuggingFaceEmbedding, opens the persisted collection with
ChromaVectorStore (``LlamaIndexPeer.open``), and prints the top ``k`` nodes among those the
groups may read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store", type=Path)
    parser.add_argument("question")
    parser.add_argument("--group", action="append", default=[])
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args()

    from peer import LlamaIndexPeer

    retriever = LlamaIndexPeer.open(args.store).retriever(args.k, args.group or None)
    for n, hit in enumerate(retriever.retrieve(args.question), start=1):
        print(f"{n}. [{hit.score or 0.0:.2f}] {hit.node.metadata.get('source')}")


if __name__ == "__main__":
    main()
