"""ONNX exports of the embedding model, and the encoders that run them without torch.

An export is the model's transformer with mean pooling and normalisation as one ONNX graph
over one unpadded text per call, with no attention mask (``onnx``: fp32; ``int8``: weights
dynamically quantised per output channel), its fast tokenizer, and the model's own vectors of
a few probe texts. Opening an export checks it against those vectors (:data:`MIN_COSINE`), so
a later build verifies a cached export without loading torch, and a query encoder copied to
another machine is checked on the CPU that runs it.

Exporting needs the model in torch. A process that has not loaded it exports in a child
process (:func:`export_in_child`), so that torch never enters a build that embeds with
onnxruntime: its memory is the child's, and it is given back when the export is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import runtime
from .errors import EmbeddingError
from .settings import EncoderKind

# Before onnxruntime is imported: it writes its telemetry files on import.
runtime.quiet()

ENCODER_KINDS: tuple[EncoderKind, ...] = ("torch", "onnx", "int8")
# How each kind's export is made, versioned: a new recipe names new export folders and new
# content keys, so vectors of two recipes never mix.
RECIPES: dict[str, str] = {"torch": "torch", "onnx": "onnx.3", "int8": "int8.5"}


def export_kind(kind: object) -> EncoderKind:
    """The export that goes with an encoder kind: the int8 one for ``int8``, else the fp32
    one (queries of a torch-built generation included)."""
    return "int8" if kind == "int8" else "onnx"


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
# fp32 agrees to rounding. The smoothed int8 export measured 0.999 at worst over 893 of the shared
# corpus's chunks and 0.9994 on the probes; unsmoothed, 0.995 and below, which ranked a query's
# answer lower; with signed weights on a CPU without VNNI, whose products saturate, 0.994. 0.998
# passes a sound quantisation and rejects those, which then fall back to the fp32 export.
MIN_COSINE: dict[str, float] = {"onnx": 0.9999, "int8": 0.998}


def export(model: Any, model_id: str, folder: Path, kind: EncoderKind) -> None:
    """Export the loaded sentence-transformers ``model`` as ONNX (``onnx``: fp32; ``int8``:
    weights quantised per channel) to ``folder``, atomically, with the model's vectors of the
    probe texts; raise :class:`EmbeddingError` when the model's shape is not supported or the
    export disagrees with the model on the probes."""
    names = [type(m).__name__ for m in model]
    pooling = getattr(model[1], "pooling_mode", None) if len(names) > 1 else None
    if names != ["Transformer", "Pooling", "Normalize"] or pooling != "mean":
        raise EmbeddingError(f"only transformer, mean pooling, normalise can be exported, not {names}")
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
    except ImportError as exc:
        raise EmbeddingError(f"exporting needs {exc.name}") from exc
    auto_model = model[0].auto_model
    backend = getattr(model.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise EmbeddingError("the model has no fast tokenizer to export")
    # No attention mask: every call holds one text, unpadded, so every token is attended and
    # pooled. The mask's handling (Where, IsNaN, Add) was 5% of an fp32 call in onnxruntime's
    # profile of corpus texts.
    inputs = ["input_ids"]
    if getattr(auto_model.config, "type_vocab_size", 0):
        inputs.append("token_type_ids")
    sample = model.tokenizer(["a query"], return_tensors="pt")
    max_length = int(model.max_seq_length)
    meta = {
        "model_id": model_id,
        "dimension": int(model.get_embedding_dimension()),
        "max_tokens": max_length - len(model.tokenizer("", add_special_tokens=True)["input_ids"]),
        "inputs": inputs,
        "max_length": max_length,
        "kind": kind,
    }
    tmp = _staging(folder, f"write the {kind} export to")
    attention = getattr(auto_model.config, "_attn_implementation", None)
    try:
        with warnings.catch_warnings():
            # The tracer's warnings are about shapes we declare dynamic below.
            warnings.simplefilter("ignore")
            # Plain attention traces to plain MatMul and Softmax; SDPA's mask handling traced
            # to a graph that ran 10-15% slower on onnxruntime (benchmarks/encoders.py).
            _set_attention(auto_model, "eager")
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
            _set_attention(auto_model, attention)  # before the probes are encoded
        (tmp / "tokenizer.json").write_text(backend.to_str(), encoding="utf-8")
        vectors = model.encode(
            list(_PROBES), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        probes = {"texts": list(_PROBES), "vectors": vectors.tolist()}
        (tmp / _PROBES_FILE).write_text(json.dumps(probes), encoding="utf-8")
        if kind == "int8":
            smoothed = tmp / "model.smoothed.onnx"
            keep = _smooth(tmp / "model.onnx", smoothed, tmp / "tokenizer.json", inputs)
            _quantize(smoothed, tmp / "model.onnx", keep)
            smoothed.unlink()
        (tmp / _ENCODER_META).write_text(json.dumps(meta), encoding="utf-8")
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
        _set_attention(auto_model, attention)
        shutil.rmtree(tmp, ignore_errors=True)


def _set_attention(auto_model: Any, implementation: str | None) -> None:
    """Switch a transformers model's attention implementation (a no-op where it has none)."""
    if implementation is not None and hasattr(auto_model, "set_attn_implementation"):
        with contextlib.suppress(ValueError, ImportError):  # then it keeps the one it has
            auto_model.set_attn_implementation(implementation)


def _staging(folder: Path, doing: str) -> Path:
    """A new private folder beside ``folder``, where it is written before being published
    whole. Staging folders a killed process left there over an hour ago are removed."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        stale = time.time() - 3600
        for left in folder.parent.glob(".encoder-*"):
            if left.stat().st_mtime < stale:
                shutil.rmtree(left, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=".encoder-", dir=folder.parent))
    except OSError as exc:
        raise EmbeddingError(f"cannot {doing} {folder}: {exc}") from exc


def export_in_child(model: str, folder: Path, kind: EncoderKind, *, timeout: float = 900.0) -> None:
    """:func:`export` the model ``model`` (a model setting: the bundled model's name or a
    folder) in a child process of the same interpreter, which loads torch and exits."""
    package_root = str(Path(__file__).resolve().parent.parent)
    paths = [package_root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    code = "import sys; from runbook_rag.encoders import _export_main; sys.exit(_export_main(sys.argv[1:]))"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, model, str(folder), kind],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EmbeddingError(f"the {kind} export could not run: {exc}") from exc
    if done.returncode or not folder.is_dir():
        lines = done.stderr.strip().splitlines()
        raise EmbeddingError(f"the {kind} export failed: {lines[-1] if lines else f'exit {done.returncode}'}")


def _export_main(argv: list[str]) -> int:
    """The child process of :func:`export_in_child`: ``MODEL FOLDER KIND``."""
    from .embedding import SentenceTransformerEmbedder

    model, folder, kind = argv
    if kind not in ("onnx", "int8"):
        print(f"cannot export as {kind!r}", file=sys.stderr)
        return 2
    try:
        embedder = SentenceTransformerEmbedder(model, encoder="torch")
        export(embedder.torch_model, embedder.model_id, Path(folder), kind)  # type: ignore[arg-type]
    except EmbeddingError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


# The MatMuls of a BERT layer's output projections, in a torch export: the attention output
# (``.../attention/output/dense/MatMul``) and the second feed-forward projection.
_FP32_SUFFIX = "/output/dense/MatMul"
# How much of an activation's range its smoothing moves onto the weights (SmoothQuant's alpha):
# of 0.5 and 0.7, tried on corpus chunks, 0.7 kept the int8 vectors closer to the model's.
_SMOOTHING = 0.7


def _smooth(model: Path, target: Path, tokenizer: Path, inputs: list[str]) -> list[str]:
    """Write to ``target`` the fp32 ``model`` with each product that will be quantised
    smoothed (SmoothQuant), and return the names of the products kept in fp32: those of two
    activations, and each layer's attention and feed-forward output projections.

    A transformer's activations carry a few channels far wider than the rest, which one
    activation scale serves badly. Channel ``j`` is divided by
    ``s_j = max|x_j|^a / max|w_j|^(1-a)`` (``x_j`` over the probe texts, ``a`` =
    :data:`_SMOOTHING`) and the weights' row ``j`` multiplied by it: the same product in fp32,
    with the activation's range spread onto the weights, which are quantised per channel. Over
    the shared corpus's chunks this raised the least cosine to the model's vectors from 0.995
    to 0.999 (benchmarks/encoders.py)."""
    try:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper

        proto = onnx.load(str(model))
        graph = proto.graph
        weights = {w.name: w for w in graph.initializer}
        # Kept in fp32: products of two activations, and each layer's output projections (the
        # second feed-forward one's input, after GELU, has the widest range): quantising them
        # lost the most (benchmarks/encoders.py).
        matmuls = [n for n in graph.node if n.op_type == "MatMul"]
        quantised = [n for n in matmuls if n.input[1] in weights and not n.name.endswith(_FP32_SUFFIX)]
        by_input: dict[str, list[Any]] = {}
        for node in quantised:
            by_input.setdefault(node.input[0], []).append(node)
        widest = _activation_ranges(proto, list(by_input), tokenizer, inputs)
        for name, nodes in by_input.items():
            rows = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
            weight_range = np.max([np.abs(w).max(axis=1) for w in rows], axis=0)
            scale = np.clip(widest[name], 1e-5, None) ** _SMOOTHING
            scale /= np.clip(weight_range, 1e-5, None) ** (1 - _SMOOTHING)
            for node, w in zip(nodes, rows, strict=True):
                weights[node.input[1]].CopyFrom(
                    numpy_helper.from_array((w * scale[:, None]).astype(np.float32), node.input[1])
                )
                node.input[0] = f"{name}/smoothed"
            inverse = numpy_helper.from_array((1 / scale).astype(np.float32), f"{name}/smoothing")
            graph.initializer.append(inverse)

        def divide(name: str) -> Any:
            return helper.make_node(
                "Mul", [name, f"{name}/smoothing"], [f"{name}/smoothed"], name=f"{name}/smooth"
            )

        # Each division right after the node that makes its input, so the graph stays in order.
        made = {output for node in graph.node for output in node.output}
        ordered = [divide(name) for name in by_input if name not in made]  # a graph input
        for node in graph.node:
            ordered.append(node)
            ordered.extend(divide(name) for name in node.output if name in by_input)
        del graph.node[:]
        graph.node.extend(ordered)
        onnx.save(proto, str(target))
    except ImportError as exc:
        raise EmbeddingError(f"int8 quantisation needs {exc.name}") from exc
    except Exception as exc:  # onnx and onnxruntime errors share no base class but Exception
        raise EmbeddingError(f"int8 quantisation failed: {exc}") from exc
    return sorted({n.name for n in matmuls} - {n.name for n in quantised})


def _quantize(smoothed: Path, target: Path, keep: list[str]) -> None:
    """Write to ``target`` the dynamic int8 quantisation of the smoothed fp32 model: weights
    uint8 per output channel (per-tensor weights lost too much: cosine 0.90 at worst),
    activations uint8 with one scale per call, the products named in ``keep`` left in fp32.

    The weights are unsigned so that every CPU computes the same products. Signed weights
    (``int8.4``) are multiplied exactly only where the CPU has VNNI (or AMX); other x86 CPUs
    add pairs of u8 x s8 products in 16 bits, which saturate: there the probes' least cosine to
    the model fell to 0.994, and 0.990 over 447 of the shared corpus's chunks. Unsigned weights
    are widened before they are multiplied, on every CPU: 0.9992 at worst over the same chunks.
    So an index's vectors are the same whichever machine built it."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise EmbeddingError(f"int8 quantisation needs {exc.name}") from exc
    quantize_logger = logging.getLogger()
    level = quantize_logger.level
    quantize_logger.setLevel(logging.ERROR)  # it advises pre-processing on the root logger
    try:
        quantize_dynamic(
            str(smoothed),
            str(target),
            weight_type=QuantType.QUInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=keep,
        )
    except Exception as exc:  # onnx and onnxruntime errors share no base class but Exception
        raise EmbeddingError(f"int8 quantisation failed: {exc}") from exc
    finally:
        quantize_logger.setLevel(level)


def _activation_ranges(proto: Any, names: list[str], tokenizer: Path, inputs: list[str]) -> dict[str, Any]:
    """The widest value of each channel of the tensors ``names`` of the fp32 graph ``proto``,
    over every token of the probe texts."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from tokenizers import Tokenizer

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name) for name in names)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    counter = Tokenizer.from_file(str(tokenizer))
    counter.no_padding()
    widest: dict[str, Any] = {name: 0.0 for name in names}
    for encoding in encode_batch(counter, list(_PROBES)):
        for name, value in zip(names, session.run(names, _feed(inputs, encoding)), strict=True):
            widest[name] = np.maximum(widest[name], np.abs(value.reshape(-1, value.shape[-1])).max(axis=0))
    return widest


def publish_copy(source: Path, folder: Path) -> None:
    """Publish a copy of the export in ``source`` as ``folder`` (hard links where possible:
    exports are replaced whole, never written in place)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    tmp = _staging(folder, "copy the export to")
    try:
        shutil.copytree(source, tmp, copy_function=link, dirs_exist_ok=True)
        tmp.chmod(0o755)
        os.replace(tmp, folder)
    except OSError as exc:
        if not folder.is_dir():
            raise EmbeddingError(f"cannot copy the export to {folder}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _MeanPooled:
    """The transformer with mean pooling and L2 normalisation, as one traceable module, for
    one unpadded text per call: every token is attended and pooled."""

    def __new__(cls, auto_model: Any, inputs: list[str]) -> Any:
        import torch

        class Module(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = auto_model

            def forward(self, *args: Any) -> Any:
                named = dict(zip(inputs, args, strict=True))
                hidden = self.model(**named).last_hidden_state
                return torch.nn.functional.normalize(hidden.mean(1), dim=1)

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
        self.kind = export_kind(meta.get("kind"))
        # Checked on the CPU that runs it (an index may be served from another machine than the
        # one that built it), on the probes of a query's length: the longest one alone took as
        # long as the others, and each search process pays for the check before its first query.
        _verify(folder, self.kind, self.embed, shorter_than=_QUERY_PROBE_TOKENS, count=self._tokens)

    def _tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text).ids)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [_run_one(self._session, self._inputs, self._tokenizer.encode(text)) for text in texts]


class OnnxDocumentEncoder:
    """Embeds documents with an export of the model (fp32 or int8): onnxruntime with every
    graph optimisation, one text per call and one call per available core at a time.
    Implements :class:`Embedder`.

    One text per call feeds no padding (the graph has no attention mask), and a text's vector
    depends on that text alone: the int8 export quantises activations with one scale per call,
    so a batch would move each vector with the texts beside it. Single-threaded calls side by
    side need no barrier between cores at each step, so a core taken by other work slows one
    text, not all: on two cores this ran 1.2x faster than batches of similar length on two threads
    (benchmarks/encoders.py).

    Opening checks the export against the model's vectors of the probe texts kept beside it
    (:data:`MIN_COSINE` for its kind) and raises :class:`EmbeddingError` when they disagree.
    """

    def __init__(self, folder: Path, *, workers: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        ort.disable_telemetry_events()
        try:
            meta = json.loads((folder / _ENCODER_META).read_text(encoding="utf-8"))
            self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._counter = Tokenizer.from_file(str(folder / "tokenizer.json"))
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            self._session = ort.InferenceSession(
                str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
            self._inputs: list[str] = list(meta["inputs"])
            self.model_id: str = meta["model_id"]
            self.dimension = int(meta["dimension"])
            max_length = int(meta["max_length"])
            self.max_tokens = int(meta.get("max_tokens", max_length - 2))
            self.kind = export_kind(meta.get("kind"))
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            raise EmbeddingError(f"cannot load the document encoder in {folder}: {exc}") from exc
        self.folder = folder
        self.workers = max(1, workers or available_cores())
        self._pool: ThreadPoolExecutor | None = None
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self._counter.no_padding()
        self._counter.no_truncation()
        _verify(folder, self.kind, self.embed)

    @property
    def encoder(self) -> EncoderKind:
        return self.kind

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(e.ids) for e in encode_batch(self._counter, texts, add_special_tokens=False)]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        encoded = encode_batch(self._tokenizer, texts) if texts else []
        if len(encoded) < 2 or self.workers == 1:
            return [self._one(e) for e in encoded]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="runbook-rag-encoder")
        # Longest first, so that no worker is left with a long text at the end.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
        out: list[list[float]] = [[] for _ in encoded]
        for i, vector in zip(order, self._pool.map(self._one, [encoded[i] for i in order]), strict=True):
            out[i] = vector
        return out

    def _one(self, encoding: Any) -> list[float]:
        return _run_one(self._session, self._inputs, encoding)


# The probes a query encoder is checked on: those of fewer tokens (all but the longest).
_QUERY_PROBE_TOKENS = 128


def _verify(
    folder: Path,
    kind: EncoderKind,
    embed: Callable[[list[str]], list[list[float]]],
    *,
    shorter_than: int | None = None,
    count: Callable[[str], int] = len,
) -> None:
    """Check the export in ``folder``, run by ``embed`` on this CPU, against the model's vectors
    of the probe texts kept beside it (:data:`MIN_COSINE` for its ``kind``), those of fewer than
    ``shorter_than`` tokens (by ``count``) where it is given; raise :class:`EmbeddingError`
    when they disagree."""
    import numpy as np

    try:
        probes = json.loads((folder / _PROBES_FILE).read_text(encoding="utf-8"))
        pairs = list(zip(probes["texts"], probes["vectors"], strict=True))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(f"the export in {folder} has no readable probe vectors: {exc}") from exc
    if shorter_than is not None:
        pairs = [(text, vector) for text, vector in pairs if count(text) < shorter_than]
    texts, want = [text for text, _ in pairs], [vector for _, vector in pairs]
    got = np.asarray(embed(texts), dtype=np.float64)
    ref = np.asarray(want, dtype=np.float64)
    if got.shape != ref.shape:
        raise EmbeddingError(f"the export in {folder} gives {got.shape} vectors, not {ref.shape}")
    cosine = float((got * ref).sum(axis=1).min())
    worst = float(np.abs(got - ref).max())
    # fp32 must agree to rounding, element by element too.
    if cosine < MIN_COSINE[kind] or (kind == "onnx" and worst > 1e-4):
        raise EmbeddingError(
            f"the {kind} export in {folder} disagrees with the model on the probe texts "
            f"(least cosine {cosine:.4f}, largest difference {worst:.1e})"
        )


def encode_batch(tokenizer: Any, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[Any]:
    """``texts`` tokenised by a ``tokenizers.Tokenizer``, without the character offsets nothing
    here reads (``encode_batch_fast``, about a third faster, where the library has it)."""
    encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
    encoded: list[Any] = encode(list(texts), add_special_tokens=add_special_tokens)
    return encoded


def _run_one(session: Any, inputs: list[str], encoding: Any) -> list[float]:
    """The export's vector of one tokenised text, alone in its call."""
    vector: list[float] = session.run(None, _feed(inputs, encoding))[0][0].tolist()
    return vector


def _feed(inputs: list[str], encoding: Any) -> dict[str, Any]:
    """An export's ``inputs`` for one tokenised text (exports before ``onnx.3`` and ``int8.4``
    also take its attention mask)."""
    import numpy as np

    columns = {
        "input_ids": encoding.ids,
        "attention_mask": encoding.attention_mask,
        "token_type_ids": encoding.type_ids,
    }
    return {name: np.array([columns[name]], dtype=np.int64) for name in inputs}


def available_cores() -> int:
    """The cores this process may run on (its affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1
