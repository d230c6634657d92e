"""The embedder learns the model's shape from its files and loads the model only to embed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_rag.embedding import SentenceTransformerEmbedder, _plain_shape, resolve_model

ROOT = Path(__file__).resolve().parent.parent


def test_a_model_with_another_shape_is_not_read_from_its_files(tmp_path: Path) -> None:
    folder, _ = resolve_model(None)
    copy = tmp_path / "model"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    assert _plain_shape(copy) is not None
    modules = json.loads((copy / "modules.json").read_text())
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (copy / "modules.json").write_text(json.dumps([*modules, dense]))
    assert _plain_shape(copy) is None  # a projection changes the dimension: load the model to know it
    (copy / "modules.json").write_text(json.dumps(modules))
    (copy / "sentence_bert_config.json").unlink()
    assert _plain_shape(copy) is None


@pytest.mark.slow
def test_the_shape_and_token_counts_read_from_files_are_the_models() -> None:
    lazy = SentenceTransformerEmbedder()
    assert lazy._loaded is None
    texts = [
        p.read_text(encoding="utf-8")[:4000] for p in sorted((ROOT / "sample_runbooks").rglob("*.md"))
    ] + ["", "Ünïcödé straße", "kubectl -n payments rollout undo deploy/auth-gateway", "\t\u200b x"]
    counts = lazy.count_tokens(texts)
    shape = (lazy.dimension, lazy.max_tokens)
    lazy._tokenizer = None
    model = lazy._model  # loads it, and checks the shape read from the files
    assert model is not None and (lazy.dimension, lazy.max_tokens) == shape
    assert lazy.count_tokens(texts) == counts


@pytest.mark.slow
def test_a_build_that_embeds_nothing_never_loads_torch(tmp_path: Path) -> None:
    # With the torch encoder, the first build loads the model; one that embeds nothing does not.
    samples = ROOT / "sample_runbooks"
    script = (
        "import sys\n"
        "from runbook_rag import RunbookIndex\n"
        "from runbook_rag.settings import Settings\n"
        f"args = dict(path={str(tmp_path / 'index')!r}, access_map={str(samples / 'access-map.yaml')!r})\n"
        "args['settings'] = Settings(encoder='torch')\n"
        f"RunbookIndex.build([{str(samples)!r}], **args)\n"
        "assert 'torch' in sys.modules\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    again = script.replace("assert 'torch' in", "assert 'torch' not in") + (
        f"r = RunbookIndex.build([{str(samples)!r}], **args)\n"
        "assert r.embedded == 0 and 'torch' not in sys.modules\n"
    )
    second = subprocess.run([sys.executable, "-c", again], capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr
