"""The plain LlamaIndex pipeline's query script: one question against the peer's Chroma store
(see ``peer.py``), as a team would run it from a shell.

    python benchmarks/peer_query.py STORE_DIR QUESTION [--group G ...] [-k N]

Loads the bundled model through HuggingFaceEmbedding, opens the persisted collection with
ChromaVectorStore, and prints the top ``k`` nodes among those the groups may read.
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

    import chromadb
    from llama_index.core import VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from runbook_rag.embedding import resolve_model

    folder, _ = resolve_model(None)
    embed = HuggingFaceEmbedding(model_name=str(folder), device="cpu")
    client = chromadb.PersistentClient(path=str(args.store))
    store = ChromaVectorStore(chroma_collection=client.get_collection("peer"))
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    flags = [{f"g_{g}": {"$eq": True}} for g in sorted(args.group)]
    kwargs = {"where": {"$or": flags} if len(flags) > 1 else flags[0]} if flags else {}
    retriever = index.as_retriever(similarity_top_k=args.k, vector_store_kwargs=kwargs)
    for n, hit in enumerate(retriever.retrieve(args.question), start=1):
        print(f"{n}. [{hit.score or 0.0:.2f}] {hit.node.metadata.get('source')}")


if __name__ == "__main__":
    main()
