"""Document encoders: ONNX fp32 and int8 exports match the model, and a generation's vectors and
queries all come from the one encoder its manifest names (real Chroma, real model)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from runbook_rag import Principal, RunbookIndex, embedding
from runbook_rag.build import content_key
from runbook_rag.embedding import SentenceTransformerEmbedder
from runbook_rag.encoders import MIN_COSINE, RECIPES, OnnxDocumentEncoder, OnnxQueryEncoder, export
from runbook_rag.errors import EmbeddingError
from runbook_rag.generations import FileLayout
from runbook_rag.records import embed_text
from runbook_rag.settings import DEFAULT_ENCODER, Settings

from .conftest import SAMPLES, copy_samples

FILES = [
    "finance/ledger-kafka-consumer-lag.md",
    "platform/pod-crashloop.md",
    "security/hsm-outage.md",
]
SRE = Principal("sam", frozenset({"sre", "payments-oncall", "security"}))


def test_the_encoder_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_RAG_ENCODER", "int8")
    assert Settings().encoder == "int8"
    assert Settings(encoder="onnx").encoder == "onnx"  # an explicit argument wins
    with pytest.raises(ValueError):
        Settings(encoder="fp16")  # type: ignore[arg-type]
    with pytest.raises(EmbeddingError):
        SentenceTransformerEmbedder(encoder="fp16")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder holding both exports, made once for the module's builds."""
    folder = tmp_path_factory.mktemp("cache")
    for kind in ("onnx", "int8"):
        assert SentenceTransformerEmbedder(encoder=kind, cache=folder).encoder == kind
    return folder


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return copy_samples(tmp_path / "src", FILES)


def texts() -> list[str]:
    parts = [p.read_text(encoding="utf-8") for p in sorted(SAMPLES.rglob("*.md"))]
    paragraphs = [para for text in parts for para in text.split("\n\n") if para.strip()]
    return paragraphs[::7] + [p[:3000] for p in parts[:6]] + ["db down", "Ünïcödé straße", "x"]


@dataclass(frozen=True)
class _Text:
    embed_text: str


def stored(index: Path) -> tuple[str, dict[str, list[float]], dict[str, str], dict[str, str]]:
    """The published generation's encoder, and its vectors, embedded texts and content keys
    by chunk id."""
    store, manifest = FileLayout(index).load()
    try:
        text_of, keys = {}, {}
        for cid, text, meta in store.documents():
            text_of[cid] = embed_text(str(meta["title"]), json.loads(meta["heading_path"]), text)
            keys[cid] = str(meta["content_key"])
        return manifest.encoder, store.embeddings(set(text_of)), text_of, keys
    finally:
        store.close()


def one_by_one(kind: str, texts: list[str], cache: Path) -> np.ndarray:
    """The export's vectors of ``texts``, one text per call, as queries are embedded."""
    encoder = SentenceTransformerEmbedder(encoder=kind, cache=cache).document_encoder  # type: ignore[arg-type]
    assert encoder is not None
    return np.asarray([encoder.embed([text])[0] for text in texts])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "int8"])
def test_the_onnx_document_encoder_matches_the_model(
    kind: str, cache: Path, torch_model: SentenceTransformerEmbedder
) -> None:
    embedder = SentenceTransformerEmbedder(encoder=kind, cache=cache)  # type: ignore[arg-type]
    encoder = embedder.document_encoder
    assert embedder.encoder == kind and isinstance(encoder, OnnxDocumentEncoder) and encoder.kind == kind
    sample = texts()
    assert (encoder.model_id, encoder.dimension, encoder.max_tokens) == (
        torch_model.model_id,
        torch_model.dimension,
        torch_model.max_tokens,
    )
    assert encoder.count_tokens(sample) == torch_model.count_tokens(sample)
    got, want = np.asarray(embedder.embed(sample)), np.asarray(torch_model.embed(sample))
    cosine = (got * want).sum(axis=1)
    assert cosine.min() >= MIN_COSINE[kind] and cosine.mean() >= 0.999
    if kind == "onnx":
        assert np.abs(got - want).max() <= 1e-4
    # A text's vector depends on that text alone, int8's too (its activations' scale is the
    # text's): the same alone, among other texts, in another order, and as a query.
    picked = [sample[i] for i in (3, 0, len(sample) - 1, 5)]
    alone = np.asarray([encoder.embed([text])[0] for text in picked])
    among = np.asarray(encoder.embed([*reversed(sample), *picked])[-len(picked) :])
    query = np.asarray(OnnxQueryEncoder(encoder.folder).embed(picked))
    assert np.array_equal(alone, among) and np.array_equal(alone, query)


@pytest.mark.slow
def test_an_int8_exports_weights_are_unsigned_so_every_cpu_computes_the_same_products(cache: Path) -> None:
    """Signed weights' u8 x s8 products saturate on x86 CPUs without VNNI; unsigned ones are
    widened first everywhere. Every quantised product's weights are uint8, per output channel."""
    import onnx
    from onnx import TensorProto

    (folder,) = (cache / "encoders").glob(f"*-{RECIPES['int8']}")
    graph = onnx.load(str(folder / "model.onnx")).graph
    types = {w.name: w.data_type for w in graph.initializer}
    products = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert len(products) == 6 * 4  # per layer: query, key, value, first feed-forward projection
    for node in products:
        assert types[node.input[1]] == TensorProto.UINT8, node.name
    assert not any(t == TensorProto.INT8 for t in types.values())


@pytest.mark.slow
def test_a_query_encoder_that_disagrees_on_the_cpu_serving_it_gives_way_to_the_model(
    src: Path, tmp_path: Path, cache: Path, caplog
) -> None:
    """An index built on one machine and served on another: its int8 query encoder is checked
    against the probes on the CPU that runs it, and queries use the model when it disagrees."""
    index = tmp_path / "idx"
    RunbookIndex.build([src], path=index, settings=Settings(encoder="int8", cache_dir=cache))
    query_encoder = index / FileLayout(index).load()[1].query_encoder  # type: ignore[operator]
    probes = json.loads((query_encoder / "probes.json").read_text())
    probes["vectors"] = [[-x for x in v] for v in probes["vectors"]]
    (query_encoder / "probes.json").unlink()  # a hard link to the cached export's: replaced, not written
    (query_encoder / "probes.json").write_text(json.dumps(probes))
    with pytest.raises(EmbeddingError, match="disagrees with the model"):
        OnnxQueryEncoder(query_encoder)
    with RunbookIndex(index) as opened, caplog.at_level(logging.WARNING, logger="runbook_rag"):
        assert isinstance(opened._served.encoder(opened.manifest), SentenceTransformerEmbedder)
        hits = opened.search("ledger consumer lag", principal=SRE, k=3)
    assert "disagrees with the model on the probe texts" in caplog.text
    assert "embedding queries with the full model instead" in caplog.text
    assert hits[0].source == "finance/ledger-kafka-consumer-lag.md"


@pytest.mark.slow
def test_an_export_in_this_process_leaves_the_model_as_it_was(
    tmp_path: Path, torch_model: SentenceTransformerEmbedder
) -> None:
    # The export traces plain attention; the model the process embeds with keeps its own.
    auto_model = torch_model.torch_model[0].auto_model
    attention = auto_model.config._attn_implementation
    sample = texts()[:6]
    before = np.asarray(torch_model.embed(sample))
    export(torch_model.torch_model, torch_model.model_id, tmp_path / "fp32", "onnx")
    assert auto_model.config._attn_implementation == attention
    assert np.array_equal(np.asarray(torch_model.embed(sample)), before)
    got = np.asarray(OnnxDocumentEncoder(tmp_path / "fp32").embed(sample))
    assert np.abs(got - before).max() <= 1e-4


@pytest.mark.slow
def test_a_tampered_export_is_exported_again(tmp_path: Path, cache: Path) -> None:
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    (folder,) = (copy / "encoders").glob("*-int8*")
    probes = json.loads((folder / "probes.json").read_text())
    probes["vectors"] = [[-x for x in v] for v in probes["vectors"]]
    (folder / "probes.json").write_text(json.dumps(probes))
    with pytest.raises(EmbeddingError, match="disagrees with the model"):
        OnnxDocumentEncoder(folder)
    embedder = SentenceTransformerEmbedder(encoder="int8", cache=copy)
    assert embedder.encoder == "int8"
    OnnxDocumentEncoder(folder)  # the export was made again, and agrees


@pytest.mark.slow
def test_an_encoder_change_re_embeds_everything_and_a_build_never_mixes_encoders(
    src: Path, tmp_path: Path, cache: Path, torch_model: SentenceTransformerEmbedder
) -> None:
    index = tmp_path / "idx"
    settings = {kind: Settings(encoder=kind, cache_dir=cache) for kind in ("torch", "onnx", "int8")}
    first = RunbookIndex.build([src], path=index, settings=settings["int8"])
    assert first.embedded == first.chunks > 0
    # More documents and another encoder: nothing of the last generation is reused.
    shutil.copy(SAMPLES / "platform/kafka-broker-down.md", src / "platform/kafka-broker-down.md")
    for kind in ("onnx", "torch", "int8"):
        report = RunbookIndex.build([src], path=index, settings=settings[kind])
        assert report.embedded == report.chunks and report.reused == 0, kind
        encoder, vectors, text_of, keys = stored(index)
        assert encoder == kind
        ids = sorted(text_of)
        embedder = SentenceTransformerEmbedder(encoder=kind, cache=cache)  # type: ignore[arg-type]
        assert [keys[cid] for cid in ids] == [content_key(_Text(text_of[cid]), embedder) for cid in ids]  # type: ignore[arg-type]
        got = np.asarray([vectors[cid] for cid in ids])
        want = np.asarray(torch_model.embed([text_of[cid] for cid in ids]))
        if kind == "int8":
            # Every vector is int8's: near the model's, but none of them the model's own.
            assert (got * want).sum(axis=1).min() >= MIN_COSINE["int8"]
            assert np.abs(got - want).max(axis=1).min() > 1e-3
        else:
            assert np.abs(got - want).max() <= 1e-4, kind
    again = RunbookIndex.build([src], path=index, settings=settings["int8"])
    assert again.embedded == 0 and again.generation == report.generation


@pytest.mark.slow
def test_a_failed_export_falls_back_to_torch(
    src: Path, tmp_path: Path, torch_model: SentenceTransformerEmbedder, monkeypatch, caplog
) -> None:
    def fail(self: SentenceTransformerEmbedder, folder: Path, kind: str) -> None:
        raise EmbeddingError("the exporter is broken")

    monkeypatch.setattr(SentenceTransformerEmbedder, "_export", fail)
    monkeypatch.setattr(embedding, "_MADE", {})  # no export this process made elsewhere either
    index = tmp_path / "idx"
    with caplog.at_level(logging.WARNING, logger="runbook_rag"):
        report = RunbookIndex.build([src], path=index, settings=Settings(encoder="int8"))
    assert "the int8 encoder cannot be used (the exporter is broken); embedding documents with onnx" in (
        caplog.text
    )
    assert "the onnx encoder cannot be used (the exporter is broken); embedding documents with torch" in (
        caplog.text
    )
    encoder, vectors, text_of, _ = stored(index)
    assert encoder == "torch" and report.embedded == report.chunks
    ids = sorted(text_of)
    want = np.asarray(torch_model.embed([text_of[cid] for cid in ids]))
    assert np.abs(np.asarray([vectors[cid] for cid in ids]) - want).max() <= 1e-5
    # Its keys are torch's: a torch build reuses every vector.
    assert RunbookIndex.build([src], path=index, settings=Settings(encoder="torch")).embedded == 0


@pytest.mark.slow
def test_a_failed_int8_export_falls_back_to_the_fp32_one(
    src: Path, tmp_path: Path, cache: Path, monkeypatch, caplog
) -> None:
    made = SentenceTransformerEmbedder._export

    def int8_fails(self: SentenceTransformerEmbedder, folder: Path, kind: str) -> None:
        if kind == "int8":
            raise EmbeddingError("the quantiser is broken")
        made(self, folder, kind)  # type: ignore[arg-type]

    monkeypatch.setattr(SentenceTransformerEmbedder, "_export", int8_fails)
    monkeypatch.setattr(embedding, "_MADE", {})
    own = tmp_path / "cache"
    (fp32,) = (cache / "encoders").glob(f"*-{RECIPES['onnx']}")
    shutil.copytree(fp32, own / "encoders" / fp32.name)
    index = tmp_path / "idx"
    with caplog.at_level(logging.WARNING, logger="runbook_rag"):
        report = RunbookIndex.build([src], path=index, settings=Settings(encoder="int8", cache_dir=own))
    assert "the int8 encoder cannot be used (the quantiser is broken); embedding documents with onnx" in (
        caplog.text
    )
    encoder, vectors, text_of, keys = stored(index)
    assert encoder == "onnx" and report.embedded == report.chunks
    ids = sorted(text_of)
    want = one_by_one("onnx", [text_of[cid] for cid in ids], cache)
    assert np.abs(np.asarray([vectors[cid] for cid in ids]) - want).max() <= 1e-5
    # Its keys are the fp32 export's: an onnx build reuses every vector.
    again = RunbookIndex.build([src], path=index, settings=Settings(encoder="onnx", cache_dir=own))
    assert again.embedded == 0 and stored(index)[3] == keys


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "int8"])
def test_queries_use_the_encoder_of_the_generation(
    kind: str, src: Path, tmp_path: Path, cache: Path, torch_model: SentenceTransformerEmbedder
) -> None:
    index = tmp_path / "idx"
    RunbookIndex.build([src], path=index, settings=Settings(encoder=kind, cache_dir=cache))  # type: ignore[arg-type]
    with RunbookIndex(index) as opened:
        assert opened.manifest.encoder == kind
        encoder = opened._served.encoder(opened.manifest)
        assert isinstance(encoder, OnnxQueryEncoder) and encoder.kind == kind
        queries = ["ledger consumer lag", "hsm is unreachable", "pods keep restarting in CrashLoopBackOff"]
        got = np.asarray(encoder.embed(queries))
        assert np.abs(got - one_by_one(kind, queries, cache)).max() <= 1e-5
        # The fp32 export's queries are the model's, to rounding.
        tolerance = 1e-4 if kind == "onnx" else 1 - MIN_COSINE["int8"]
        assert ((got * np.asarray(torch_model.embed(queries))).sum(axis=1) >= 1 - tolerance).all()
        hits = opened.search("ledger consumer lag", principal=SRE, k=3)
        assert hits[0].source == "finance/ledger-kafka-consumer-lag.md"


@pytest.mark.slow
def test_a_query_encoder_exported_with_an_attention_mask_still_embeds(tmp_path: Path, cache: Path) -> None:
    """Indexes published before ``onnx.3`` keep a query encoder whose graph takes each text's
    attention mask too: it is fed, and the vectors are those of a mask-free export."""
    import onnx
    from onnx import TensorProto, helper

    (made,) = (cache / "encoders").glob(f"*-{RECIPES['onnx']}")
    assert "attention_mask" not in json.loads((made / "encoder.json").read_text(encoding="utf-8"))["inputs"]
    old = tmp_path / "old"
    shutil.copytree(made, old)
    model = onnx.load(str(old / "model.onnx"))
    graph = model.graph
    # The output is multiplied by the mask's least value: 1 for an unpadded text, an error when
    # the mask is not fed.
    (producer,) = [n for n in graph.node if "embedding" in n.output]
    producer.output[list(producer.output).index("embedding")] = "unmasked"
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])
    graph.input.insert(1, mask)
    graph.node.extend(
        [
            helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMin", ["mask_f"], ["mask_min"], keepdims=0),
            helper.make_node("Mul", ["unmasked", "mask_min"], ["embedding"]),
        ]
    )
    onnx.save(model, str(old / "model.onnx"))
    meta = json.loads((old / "encoder.json").read_text(encoding="utf-8"))
    meta["inputs"] = ["input_ids", "attention_mask", *meta["inputs"][1:]]
    (old / "encoder.json").write_text(json.dumps(meta), encoding="utf-8")

    queries = ["ledger consumer lag", "x", "pods keep restarting in CrashLoopBackOff " * 60]
    got = np.asarray(OnnxQueryEncoder(old).embed(queries))
    want = np.asarray(OnnxQueryEncoder(made).embed(queries))
    assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6


@pytest.mark.slow
def test_an_int8_build_with_its_export_cached_never_loads_torch(
    src: Path, tmp_path: Path, cache: Path
) -> None:
    script = (
        "import sys\n"
        "from runbook_rag import RunbookIndex\n"
        "from runbook_rag.settings import DEFAULT_ENCODER, Settings\n"
        f"settings = Settings(cache_dir={str(cache)!r})\n"
        f"report = RunbookIndex.build([{str(src)!r}], path={str(tmp_path / 'idx')!r}, settings=settings)\n"
        "assert report.embedded == report.chunks > 0\n"
        "assert 'torch' not in sys.modules, 'torch was loaded'\n"
    )
    env = {**os.environ, "RUNBOOK_RAG_ENCODER": "int8"}
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    with RunbookIndex(tmp_path / "idx") as opened:
        assert opened.manifest.encoder == "int8"
        assert opened.manifest.query_encoder and opened.manifest.query_encoder.endswith(f"-{RECIPES['int8']}")


@pytest.mark.slow
def test_a_first_build_exports_in_a_child_process_and_never_loads_torch(src: Path, tmp_path: Path) -> None:
    # The default encoder, no export cached anywhere: the build makes one without torch.
    script = (
        "import sys\n"
        "from runbook_rag import RunbookIndex\n"
        f"report = RunbookIndex.build([{str(src)!r}], path={str(tmp_path / 'idx')!r})\n"
        "assert report.embedded == report.chunks > 0\n"
        "assert 'torch' not in sys.modules, 'torch was loaded'\n"
        "assert 'sentence_transformers' not in sys.modules\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNBOOK_RAG_")}
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr
    (export,) = (tmp_path / "idx" / "cache" / "encoders").iterdir()
    assert export.name.endswith(f"-{RECIPES[DEFAULT_ENCODER]}")
    assert OnnxDocumentEncoder(export).kind == DEFAULT_ENCODER
    with RunbookIndex(tmp_path / "idx") as opened:
        assert opened.manifest.encoder == DEFAULT_ENCODER == opened.info().encoder
        assert opened.info().to_dict()["encoder"] == DEFAULT_ENCODER
        hits = opened.search("ledger consumer lag", principal=SRE, k=3)
        assert hits[0].source == "finance/ledger-kafka-consumer-lag.md"


@pytest.mark.slow
def test_an_export_made_once_in_a_process_is_copied_to_another_cache(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(self: SentenceTransformerEmbedder, folder: Path, kind: str) -> None:
        raise AssertionError("exported a second time")

    assert SentenceTransformerEmbedder(encoder="onnx", cache=cache).encoder == "onnx"  # known here
    monkeypatch.setattr(SentenceTransformerEmbedder, "_export", fail)
    other = tmp_path / "other"
    embedder = SentenceTransformerEmbedder(encoder="onnx", cache=other)
    assert embedder.encoder == "onnx"
    (copied,) = (other / "encoders").iterdir()
    (original,) = (cache / "encoders").glob(f"*-{RECIPES['onnx']}")
    assert copied.name == original.name
    assert (copied / "model.onnx").read_bytes() == (original / "model.onnx").read_bytes()


@pytest.mark.slow
def test_an_export_that_fails_in_its_child_process_says_why(tmp_path: Path) -> None:
    from runbook_rag.encoders import export_in_child

    folder = tmp_path / "encoders" / "x-onnx"
    with pytest.raises(EmbeddingError, match=r"the onnx export failed: .* is not a local sentence-"):
        export_in_child(str(tmp_path / "no-such-model"), folder, "onnx")
    assert not folder.exists()
