"""The peer the benchmarks compare against: the plain LlamaIndex pipeline a team would build
instead (MarkdownNodeParser + HuggingFaceEmbedding on the same bundled model + ChromaVectorStore
+ VectorStoreIndex), filtered per principal with a Chroma ``where`` on per-group flags.

Needs ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from runbook_rag.embedding import resolve_model
from runbook_rag.records import Document


class LlamaIndexPeer:
    """A VectorStoreIndex over ``documents`` in a Chroma store at ``path``."""

    def __init__(self, documents: Sequence[Document], path: Path) -> None:
        import chromadb
        from llama_index.core import Document as LIDocument
        from llama_index.core import StorageContext, VectorStoreIndex
        from llama_index.core.node_parser import MarkdownNodeParser
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.chroma import ChromaVectorStore

        folder, _ = resolve_model(None)
        started = time.perf_counter()
        embed = HuggingFaceEmbedding(model_name=str(folder), device="cpu")
        docs = []
        for d in documents:
            flags = [f"g_{g}" for g in d.labels]
            docs.append(
                LIDocument(
                    text=d.text,
                    metadata={"source": d.source, **dict.fromkeys(flags, True)},
                    # Access flags are for filtering, not for the embedded or prompted text.
                    excluded_embed_metadata_keys=flags,
                    excluded_llm_metadata_keys=flags,
                )
            )
        nodes = MarkdownNodeParser().get_nodes_from_documents(docs)
        client = chromadb.PersistentClient(path=str(path))
        store = ChromaVectorStore(chroma_collection=client.create_collection("peer"))
        self.index = VectorStoreIndex(
            nodes, storage_context=StorageContext.from_defaults(vector_store=store), embed_model=embed
        )
        self.seconds = time.perf_counter() - started
        self.nodes = len(nodes)

    @classmethod
    def open(cls, path: Path) -> LlamaIndexPeer:
        """The peer's index persisted at ``path``, opened as a team's query script opens it
        (``peer_query.py``)."""
        import chromadb
        from llama_index.core import VectorStoreIndex
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        from llama_index.vector_stores.chroma import ChromaVectorStore

        folder, _ = resolve_model(None)
        embed = HuggingFaceEmbedding(model_name=str(folder), device="cpu")
        collection = chromadb.PersistentClient(path=str(path)).get_collection("peer")
        store = ChromaVectorStore(chroma_collection=collection)
        peer = cls.__new__(cls)
        peer.index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
        peer.seconds = 0.0
        peer.nodes = collection.count()
        return peer

    def retriever(self, k: int, groups: Iterable[str] | None = None) -> Any:
        """A retriever of ``k`` nodes, filtered to ``groups`` when given."""
        if groups is None:
            return self.index.as_retriever(similarity_top_k=k)
        flags = [{f"g_{g}": {"$eq": True}} for g in sorted(groups)]
        where = {"$or": flags} if len(flags) > 1 else flags[0]
        return self.index.as_retriever(similarity_top_k=k, vector_store_kwargs={"where": where})
