"""The generation an index serves: opened read-only, followed as new ones are published.

A :class:`ServedIndex` holds the published generation (its store, lexical index and
manifest, replaced whole) and the query encoder. Readers check the layout's pointer before
each query (a server's at most once per its ``refresh_interval``) and swap to a newly
published generation under a lock, so a query never mixes the store of one generation
with the lexical index or label sets of another.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .embedding import Embedder, SentenceTransformerEmbedder, resolve_model
from .encoders import OnnxQueryEncoder, export_kind
from .errors import EmbeddingError, ModelMismatchError
from .generations import Layout, Manifest
from .lexical import CHUNKS_FILE, LexicalIndex
from .ranking import Retrievers
from .records import embed_text

if TYPE_CHECKING:
    from .store import ChromaStore

log = logging.getLogger("runbook_rag")


@dataclass(frozen=True, slots=True)
class Generation:
    """One published generation, as a query reads it: read once, used whole."""

    store: ChromaStore
    lexical: LexicalIndex
    manifest: Manifest


class ServedIndex:
    """The published generation of the index at ``layout``, and the encoder for its queries."""

    def __init__(
        self, layout: Layout, *, model: str, batch_size: int, embedder: Embedder | None = None
    ) -> None:
        self.layout = layout
        self._model = model
        self._batch_size = batch_size
        self._given = embedder
        self._loaded: Embedder | None = None
        self._lock = threading.Lock()
        self._encoder: OnnxQueryEncoder | None = None
        self._encoder_name: str | None = None
        self._checked = 0.0
        self._generation = self._open()

    def current(self) -> Generation:
        """The generation to answer the next query from (a new one when it was published)."""
        interval = self.layout.refresh_interval
        if interval:
            now = time.monotonic()
            if now - self._checked < interval:
                return self._generation
            self._checked = now
        if self.layout.pointer() != self._generation.manifest.generation:
            with self._lock:
                if self.layout.pointer() != self._generation.manifest.generation:
                    self._generation = self._open()
        return self._generation

    @property
    def generation(self) -> str:
        """The name of the generation served last (no check for a newer one)."""
        return self._generation.manifest.generation

    def retrievers(self) -> tuple[Generation, Retrievers]:
        """The current generation and what searches it: its store, lexical index and encoder."""
        generation = self.current()
        generation.store.warm()
        encoder = self.encoder(generation.manifest)
        return generation, Retrievers(
            generation.store, generation.lexical, encoder, generation.manifest.label_sets
        )

    def encoder(self, manifest: Manifest) -> Embedder | OnnxQueryEncoder:
        """The exported query encoder when the generation has one (no torch needed), else the model.

        Queries are embedded like the generation's documents: with the int8 export for an int8
        generation, else with the fp32 export (equal to the model's vectors to rounding).
        """
        if self._given is not None:
            return self._given
        wanted, kind = manifest.query_encoder, export_kind(manifest.encoder)
        if wanted and self._encoder_name != wanted:
            with self._lock:
                if self._encoder_name != wanted:  # one load (or one failure) per encoder
                    try:
                        self._encoder = OnnxQueryEncoder(self.layout.path / wanted)
                        if self._encoder.kind != kind:
                            raise EmbeddingError(
                                f"the query encoder {wanted} is {self._encoder.kind}, "
                                f"the generation was embedded with {manifest.encoder}"
                            )
                    except EmbeddingError as exc:
                        log.warning("%s; embedding queries with the full model instead", exc)
                        self._encoder = None
                    self._encoder_name = wanted
        encoder = self._encoder
        if encoder is not None and encoder.model_id == manifest.model_id and encoder.kind == kind:
            return encoder
        return self.embedder()

    def close(self) -> None:
        """Close the served generation's store and the layout's connections."""
        self._generation.store.close()
        self.layout.close()

    def embedder(self) -> Embedder:
        """The sentence-transformers model (the one given, or loaded on first use)."""
        if self._given is not None:
            return self._given
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = SentenceTransformerEmbedder(self._model, batch_size=self._batch_size)
        return self._loaded

    def _open(self) -> Generation:
        store, manifest = self.layout.load()
        given = self._given
        model_id = given.model_id if given else resolve_model(self._model)[1]
        if manifest.model_id != model_id or (given and given.dimension != manifest.dimension):
            raise ModelMismatchError(
                f"index was built with model {manifest.model_id!r} ({manifest.dimension}-d) "
                f"but {model_id!r} is configured; rebuild the index or set the model it was built with",
                path=self.layout.path,
            )
        return Generation(store, self._lexical(store, manifest), manifest)

    def _lexical(self, store: ChromaStore, manifest: Manifest) -> LexicalIndex:
        """The generation's lexical index; derived from the store's chunks when this machine
        has no copy (a Chroma server index opened elsewhere), and kept for the next open
        where the layout keeps derived indexes (never inside a published generation)."""
        folder = self.layout.lexical_dir(manifest.generation)
        if (folder / CHUNKS_FILE).exists():
            return LexicalIndex.load(folder)

        log.info("deriving the lexical index of %s from the store", manifest.generation)
        lexical = LexicalIndex.build(
            (
                cid,
                str(meta["source"]),
                embed_text(str(meta["title"]), json.loads(meta["heading_path"]), text),
                str(meta["acl_key"]),
                str(meta.get("content_key", "")),
            )
            for cid, text, meta in store.documents()
        )
        if self.layout.keeps_derived:
            _keep(lexical, folder)
        return lexical


def _keep(lexical: LexicalIndex, folder: Path) -> None:
    tmp = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.tmp")
    try:
        lexical.save(tmp)
        os.replace(tmp, folder)
    except OSError as exc:
        log.warning("could not keep the derived lexical index (%s); it is derived again next time", exc)
        shutil.rmtree(tmp, ignore_errors=True)
