from __future__ import annotations

import hashlib
import math
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from runbook_rag import RunbookIndex
from runbook_rag.access import AccessMap
from runbook_rag.embedding import SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_runbooks"
SAMPLE_MAP = SAMPLES / "access-map.yaml"
CORPUS = ROOT.parent / "shared" / "corpus"


def copy_samples(root: Path, names: Sequence[str]) -> Path:
    """A source folder at ``root`` holding copies of the sample runbooks ``names``."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / name, root / name)
    return root


class HashEmbedder:
    """A tiny deterministic embedder for unit tests about something other than embeddings:
    bag of hashed words, one whitespace-separated word per token."""

    model_id = "test-hash"
    dimension = 64
    max_tokens = 40

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vec = [0.0] * self.dimension
            for word in re.findall(r"\w+", text.lower()):
                vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension] += 1.0
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            out.append([v / norm for v in vec])
        return out


@pytest.fixture(scope="session")
def model() -> SentenceTransformerEmbedder:
    """The bundled model with the library's default encoder, as a build without settings uses."""
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def torch_model() -> SentenceTransformerEmbedder:
    """The bundled model embedding in torch: the reference the exports are checked against."""
    return SentenceTransformerEmbedder(encoder="torch")


@pytest.fixture(scope="session")
def sample_index_path(tmp_path_factory: pytest.TempPathFactory, model: SentenceTransformerEmbedder) -> Path:
    path = tmp_path_factory.mktemp("idx") / "sample"
    RunbookIndex.build([SAMPLES], path=path, access_map=AccessMap.load(SAMPLE_MAP), embedder=model)
    return path


@pytest.fixture(scope="session")
def sample_index(sample_index_path: Path, model: SentenceTransformerEmbedder) -> RunbookIndex:
    return RunbookIndex(sample_index_path, embedder=model)


@pytest.fixture(scope="session")
def readme_index(tmp_path_factory: pytest.TempPathFactory, sample_index_path: Path) -> Path:
    """A copy of the sample index for the README's sample commands, which may change it (a rebuild)."""
    from .readme_samples import copy_index

    return copy_index(sample_index_path, tmp_path_factory.mktemp("readme") / "default")
