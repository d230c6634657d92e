"""The build pipeline: stages overlap, the store is written in batches as vectors arrive, memory
stays flat, and neither a failure nor a build that changes nothing touches what is published."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runbook_rag import RunbookIndex
from runbook_rag import build as building
from runbook_rag.build import Progress, build_index, content_key, prepare, write_generation
from runbook_rag.errors import EmbeddingError
from runbook_rag.generations import POINTER, FileLayout, load_manifest
from runbook_rag.lexical import LexicalIndex
from runbook_rag.store import ChromaStore

from .conftest import SAMPLES, HashEmbedder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def sources(folder: Path, documents: int, sections: int, *, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(start, start + documents):
        body = "\n\n".join(
            f"## Step {s}\n\nRestart worker {n}-{s}, drain queue q{s} and check lag on shard {n % 7}."
            for s in range(sections)
        )
        (folder / f"doc-{n:04d}.md").write_text(
            f"---\ntitle: Runbook {n}\naccess: [{'sre' if n % 2 else 'dba'}]\n---\n# Runbook {n}\n\n{body}\n"
        )
    return folder


def contents(index: Path) -> dict[str, tuple[str, dict[str, Any], list[float]]]:
    """Every chunk of the published generation: its text, metadata and vector."""
    gen_dir, _ = load_manifest(index)
    store = ChromaStore(gen_dir, read_only=True)
    metas = store.all_metadata()
    got = store._collection.get(ids=sorted(metas), include=["documents", "embeddings"])
    vectors = dict(zip(got["ids"], (list(map(float, e)) for e in got["embeddings"]), strict=True))
    texts = dict(zip(got["ids"], got["documents"], strict=True))
    store.close()
    return {cid: (texts[cid], metas[cid], vectors[cid]) for cid in metas}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same chunks, texts and metadata, and vectors equal up to float32 rounding (a vector
    read back from Chroma's cosine index comes back renormalised)."""
    return (
        sorted(a) == sorted(b)
        and all(a[cid][:2] == b[cid][:2] for cid in a)
        and all(np.allclose(a[cid][2], b[cid][2], rtol=0, atol=1e-6) for cid in a)
    )


def lexical_of(index: Path) -> LexicalIndex:
    gen_dir, _ = load_manifest(index)
    return LexicalIndex.load(gen_dir / "lexical")


def generations(index: Path) -> list[str]:
    return sorted(p.name for p in index.glob("gen-*"))


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows, writes and the hold-back far smaller than a test folder, so that every path
    of the pipeline runs many times over."""
    monkeypatch.setattr(building, "FIRST_WINDOW", 4)
    monkeypatch.setattr(building, "WINDOW", 16)
    monkeypatch.setattr(building, "WRITE_BATCH", 8)
    monkeypatch.setattr(building, "HOLD", 24)
    monkeypatch.setattr(building, "EMBED_SLICE", 8)
    monkeypatch.setattr(building, "TAIL_SLICE", 4)
    monkeypatch.setattr(building, "QUEUE_DEPTH", 2)


def write_at_once(folder: Path, index: Path, embedder: HashEmbedder) -> None:
    """The reference: every chunk prepared first, embedded in one call, written in one go."""
    prepared = prepare([folder], embedder=embedder)
    keys = [content_key(c, embedder) for c in prepared.chunks]
    vectors = embedder.embed([c.embed_text for c in prepared.chunks])
    index.mkdir()
    write_generation(
        FileLayout(index), prepared.chunks, keys, vectors, embedder, documents=prepared.documents, report={}
    )


def test_batched_writes_hold_what_one_write_holds(tmp_path: Path, small_batches: None) -> None:
    src = sources(tmp_path / "src", documents=12, sections=6)
    # The same texts twice, embedded once: more copies than a write batch holds, so that the
    # copies whose vectors are read back from the new store are written in several batches.
    for n in (1, 3, 8):
        shutil.copy(src / f"doc-{n:04d}.md", src / f"copy-of-{n}.md")
    embedder = HashEmbedder()
    report = build_index([src], index_path=tmp_path / "piped", embedder=embedder)
    write_at_once(src, tmp_path / "whole", embedder)
    piped, whole = contents(tmp_path / "piped"), contents(tmp_path / "whole")
    assert report.chunks == len(piped) == 15 * 6
    assert report.embedded == 12 * 6
    assert same(piped, whole)
    assert lexical_of(tmp_path / "piped").chunk_ids == lexical_of(tmp_path / "whole").chunk_ids


def test_an_incremental_build_in_batches_holds_what_a_fresh_build_holds(
    tmp_path: Path, small_batches: None
) -> None:
    src = sources(tmp_path / "src", documents=12, sections=5)
    embedder = HashEmbedder()
    build_index([src], index_path=tmp_path / "idx", embedder=embedder)
    # Late in the folder, so many unchanged chunks are held back before the first change.
    changed = src / "doc-0010.md"
    changed.write_text(changed.read_text().replace("drain queue q2", "pause queue q2"))
    (src / "doc-0005.md").unlink()
    sources(src, documents=2, sections=5, start=40)
    seen: list[Progress] = []
    report = build_index([src], index_path=tmp_path / "idx", embedder=embedder, progress=seen.append)
    assert report.diff == {
        "added": ["doc-0040.md", "doc-0041.md"],
        "changed": ["doc-0010.md"],
        "relabelled": [],
        "removed": ["doc-0005.md"],
    }
    # removed: the deleted document's five chunks, and the changed chunk as it was
    assert (report.embedded, report.removed, report.reused) == (11, 6, report.chunks - 11)
    embedding = [p.done for p in seen if p.stage == "embedding"]
    assert embedding[0] == 0 and embedding[-1] == 11 and embedding == sorted(embedding)
    build_index([src], index_path=tmp_path / "fresh", embedder=embedder)
    assert same(contents(tmp_path / "idx"), contents(tmp_path / "fresh"))
    assert RunbookIndex(tmp_path / "idx", embedder=embedder).verify() == []


def test_the_encoder_starts_before_the_last_document_is_chunked(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources(tmp_path / "src", documents=30, sections=4)
    chunked: list[str] = []
    at_first_embed: list[int] = []
    real_chunk_document = building.chunk_document

    def chunk_document(doc: Any, **kwargs: Any) -> Any:
        chunked.append(doc.source)
        return real_chunk_document(doc, **kwargs)

    class Recording(HashEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            if not at_first_embed:
                at_first_embed.append(len(chunked))
            return super().embed(texts)

    monkeypatch.setattr(building, "chunk_document", chunk_document)
    report = build_index([src], index_path=tmp_path / "idx", embedder=Recording())
    assert report.embedded == report.chunks == 120
    assert len(chunked) == 30
    # The queue holds two items: the first window of texts is embedded while most documents wait.
    assert at_first_embed[0] < 30


def test_documents_are_parsed_as_they_are_taken_and_every_file_is_counted(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook_rag.sources import markdown

    src = sources(tmp_path / "src", documents=12, sections=2)
    (src / "doc-0003.md").write_text("---\ntitle: No labels\n---\n# No labels\n\nbody\n")
    (src / "doc-0007.md").write_bytes(b"\xff\xfe not text")
    events: list[str] = []
    real_parse, real_chunk_document = markdown.parse_markdown, building.chunk_document

    def parse_markdown(text: str, **kwargs: Any) -> Any:
        events.append("parse " + kwargs["source"])
        return real_parse(text, **kwargs)

    def chunk_document(doc: Any, **kwargs: Any) -> Any:
        events.append("chunk " + doc.source)
        return real_chunk_document(doc, **kwargs)

    monkeypatch.setattr(markdown, "parse_markdown", parse_markdown)
    monkeypatch.setattr(building, "chunk_document", chunk_document)
    seen: list[Progress] = []
    report = build_index([src], index_path=tmp_path / "idx", embedder=HashEmbedder(), progress=seen.append)
    assert report.documents == 10 and {s.source for s in report.skipped} == {"doc-0003.md", "doc-0007.md"}
    # The first document is chunked before the last is parsed: no build waits for every file.
    assert events.index("chunk doc-0000.md") < events.index("parse doc-0011.md")
    documents = [(p.done, p.total) for p in seen if p.stage == "documents"]
    assert documents[0] == (0, 12) and documents[-1] == (12, 12)
    assert [d for d, _ in documents] == sorted({d for d, _ in documents}), "done only grows"


def test_a_failure_mid_write_leaves_the_published_generation_as_it_was(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources(tmp_path / "src", documents=10, sections=5)
    embedder = HashEmbedder()
    index = tmp_path / "idx"
    build_index([src], index_path=index, embedder=embedder)
    published, before = (index / POINTER).read_text(), contents(index)
    sources(src, documents=10, sections=5, start=20)

    writes = []
    real_add = ChromaStore.add

    def add(self: ChromaStore, chunks: Any, embeddings: Any, keys: Any) -> None:
        writes.append(len(chunks))
        if len(writes) == 3:
            raise OSError(28, "No space left on device")
        real_add(self, chunks, embeddings, keys)

    monkeypatch.setattr(ChromaStore, "add", add)
    with pytest.raises(OSError, match="No space left"):
        build_index([src], index_path=index, embedder=embedder)
    assert len(writes) == 3, "the store was being written in batches when it failed"
    assert (index / POINTER).read_text() == published
    assert generations(index) == [published.strip()], "what the failed build wrote is gone"
    assert same(contents(index), before)
    monkeypatch.setattr(ChromaStore, "add", real_add)

    class FailingEncoder(HashEmbedder):
        calls = 0

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            FailingEncoder.calls += 1
            if FailingEncoder.calls == 3:
                raise EmbeddingError("the encoder ran out of memory")
            return super().embed(texts)

    with pytest.raises(EmbeddingError):
        build_index([src], index_path=index, embedder=FailingEncoder())
    assert (index / POINTER).read_text() == published
    assert generations(index) == [published.strip()]
    report = build_index([src], index_path=index, embedder=embedder)
    assert report.embedded == 50 and RunbookIndex(index, embedder=embedder).verify() == []


def test_a_build_that_changes_nothing_writes_nothing_even_when_it_wrote_ahead(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources(tmp_path / "src", documents=10, sections=5)  # 50 chunks: more than HOLD
    embedder = HashEmbedder()
    index = tmp_path / "idx"
    build_index([src], index_path=index, embedder=embedder)
    published = (index / POINTER).read_text()
    writes: list[int] = []
    real_add = ChromaStore.add

    def add(self: ChromaStore, chunks: Any, embeddings: Any, keys: Any) -> None:
        writes.append(len(chunks))
        real_add(self, chunks, embeddings, keys)

    monkeypatch.setattr(ChromaStore, "add", add)
    seen: list[Progress] = []
    report = build_index([src], index_path=index, embedder=embedder, progress=seen.append)
    assert (report.embedded, report.reused) == (0, 50)
    assert {p.stage for p in seen} == {"documents"}
    assert (index / POINTER).read_text() == published
    assert writes, "more unchanged chunks than it holds back: it wrote ahead"
    assert generations(index) == [published.strip()], "what it wrote ahead is gone"
    before = sorted(p.name for p in index.iterdir())
    dry = build_index([src], index_path=index, embedder=embedder, dry_run=True)
    assert dry.dry_run and sorted(p.name for p in index.iterdir()) == before


def test_a_document_that_fails_is_skipped_and_the_rest_is_built(tmp_path: Path, small_batches: None) -> None:
    src = sources(tmp_path / "src", documents=6, sections=5)
    (src / "broken.md").write_text("---\ntitle: [unclosed\naccess: [sre]\n---\n# Broken\n\nText.\n")
    report = build_index([src], index_path=tmp_path / "idx", embedder=HashEmbedder())
    assert report.documents == 6 and report.chunks == 30
    assert [s.source for s in report.skipped] == ["broken.md"] and report.skipped[0].line


MEASURE = """
import hashlib, resource, sys, tracemalloc
import numpy as np
from runbook_rag.build import build_index

class Wide:
    '''A cheap deterministic embedder as wide as the bundled model.'''
    model_id = "test-wide"
    dimension = 384
    max_tokens = 200

    def count_tokens(self, texts):
        return [len(t.split()) for t in texts]

    def embed(self, texts):
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            row = np.random.default_rng(seed).standard_normal(self.dimension)
            rows.append((row / np.linalg.norm(row)).tolist())
        return rows

tracemalloc.start()
report = build_index([sys.argv[1]], index_path=sys.argv[2], embedder=Wide())
assert report.embedded == report.chunks
# This process's own high-water mark (KiB): ru_maxrss would start from the parent's peak, which
# Linux carries over an exec.
status = open("/proc/self/status").read().split("VmHWM:")
fallback = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak_rss = int(status[1].split()[0]) if len(status) > 1 else fallback
print(report.chunks, peak_rss, tracemalloc.get_traced_memory()[1] // 1024)
"""


def measure(src: Path, index: Path) -> tuple[int, int, int]:
    """Chunks built, peak RSS and peak memory allocated by Python and numpy (KiB) of a build of
    ``src`` in a process of its own (Chroma's native memory is in the RSS only)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(src), str(index)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr
    chunks, rss, traced = map(int, done.stdout.split())
    return chunks, rss, traced


def test_memory_stays_flat_as_the_folder_grows(tmp_path: Path) -> None:
    """Eight times the chunks costs a build little more memory: texts and vectors pass through
    in windows and batches, never all at once (every 384-d vector held as Python floats would
    alone cost 12 KiB a chunk)."""
    small_chunks, _, small = measure(sources(tmp_path / "small", 20, 25), tmp_path / "a")
    large_chunks, rss, large = measure(sources(tmp_path / "large", 160, 25), tmp_path / "b")
    assert (small_chunks, large_chunks) == (500, 4000)
    per_chunk = (large - small) / (large_chunks - small_chunks)
    assert per_chunk < 5, (
        f"Python's peak: {small} KiB for {small_chunks} chunks, {large} KiB for {large_chunks}"
    )
    assert rss < 512 * 1024, f"peak RSS {rss // 1024} MiB"


def test_the_sample_folder_builds_the_same_in_batches_with_the_model(
    tmp_path: Path, model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real model, small windows and batches give the vectors one large call gives."""
    src = tmp_path / "src"
    shutil.copytree(SAMPLES, src)
    amap = src / "access-map.yaml"
    from runbook_rag.access import AccessMap

    access_map = AccessMap.load(amap)
    build_index([src], index_path=tmp_path / "whole", embedder=model, access_map=access_map)
    monkeypatch.setattr(building, "WINDOW", 8)
    monkeypatch.setattr(building, "WRITE_BATCH", 4)
    monkeypatch.setattr(building, "QUEUE_DEPTH", 1)
    build_index([src], index_path=tmp_path / "piped", embedder=model, access_map=access_map)
    whole, piped = contents(tmp_path / "whole"), contents(tmp_path / "piped")
    assert sorted(whole) == sorted(piped)
    for cid, (text, meta, vector) in whole.items():
        assert (text, meta) == piped[cid][:2]
        assert np.allclose(vector, piped[cid][2], atol=1e-5)
    manifests = [json.loads((p / "manifest.json").read_text()) for p in (tmp_path / "piped").glob("gen-*")]
    assert manifests[0]["chunks"] == len(piped)


def test_each_slice_is_written_while_the_next_is_embedded(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(building, "EMBED_SLICE", 4)
    src = sources(tmp_path / "src", documents=30, sections=4)
    events: list[tuple[str, int]] = []
    real_add = ChromaStore.add

    def add(self: ChromaStore, chunks: Any, embeddings: Any, keys: Any) -> None:
        events.append(("write", len(chunks)))
        real_add(self, chunks, embeddings, keys)

    class Recording(HashEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            events.append(("embed", len(texts)))
            return super().embed(texts)

    monkeypatch.setattr(ChromaStore, "add", add)
    report = build_index([src], index_path=tmp_path / "idx", embedder=Recording())
    assert report.embedded == sum(n for what, n in events if what == "write") == 120
    last_embed = max(i for i, (what, _) in enumerate(events) if what == "embed")
    # Writes follow the encoder a slice behind: what is left when it stops is the last slice
    # and, at most, the one being written as it started (a window is 16 texts here).
    assert sum(n for what, n in events[last_embed:] if what == "write") <= 2 * building.EMBED_SLICE
    assert max(n for what, n in events if what == "embed") <= building.EMBED_SLICE


def test_the_last_slice_is_small_and_holds_the_longest_texts(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(building, "WINDOW", 10**6)  # every text after the first windows in the last one
    src = sources(tmp_path / "src", documents=20, sections=4)
    for n in range(0, 20, 5):  # a few sections much longer than the rest
        doc = src / f"doc-{n:04d}.md"
        doc.write_text(doc.read_text() + f"\n## Long {n}\n\n" + "lag " * 30 + "\n")
    calls: list[list[str]] = []

    class Recording(HashEmbedder):
        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            calls.append(list(texts))
            return super().embed(texts)

    build_index([src], index_path=tmp_path / "idx", embedder=Recording())
    last, before = calls[-1], calls[-2]
    assert len(last) == building.TAIL_SLICE
    assert min(map(len, last)) >= max(map(len, before)), "the last slice holds the window's longest texts"


def test_the_lexical_index_is_written_while_the_last_texts_are_embedded(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources(tmp_path / "src", documents=12, sections=4)
    saved = threading.Event()
    waited: list[bool] = []
    real_save = LexicalIndex.save

    def save(self: LexicalIndex, folder: Path) -> None:
        real_save(self, folder)
        saved.set()

    class Recording(HashEmbedder):
        embedded = 0

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            Recording.embedded += len(texts)
            if Recording.embedded == 48:
                # The last slice waits for the lexical index: a build that wrote it only
                # after the encoder stopped would never get there.
                waited.append(saved.wait(timeout=60))
            return super().embed(texts)

    monkeypatch.setattr(LexicalIndex, "save", save)
    report = build_index([src], index_path=tmp_path / "idx", embedder=Recording())
    assert waited == [True]
    index = tmp_path / "idx"
    assert report.chunks == len(lexical_of(index).chunk_ids) == len(contents(index)) == 48


def test_the_encoder_does_not_wait_for_the_new_store_to_be_created(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(building, "HOLD", 10**6)  # past HOLD chunks held, a build does wait
    src = sources(tmp_path / "src", documents=12, sections=4)
    embedded = threading.Event()
    waited: list[bool] = []
    real_create = FileLayout.create_store

    def slow_create(self: FileLayout, name: str, **kwargs: Any) -> Any:
        # A store that takes as long to create as the encoder takes for three windows: a
        # build that waited for it before embedding more would never get there.
        waited.append(embedded.wait(timeout=60))
        return real_create(self, name, **kwargs)

    class Counting(HashEmbedder):
        calls = 0

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            Counting.calls += 1
            if Counting.calls == 3:
                embedded.set()
            return super().embed(texts)

    monkeypatch.setattr(FileLayout, "create_store", slow_create)
    report = build_index([src], index_path=tmp_path / "idx", embedder=Counting())
    assert waited == [True], "the encoder went on while the store was being created"
    assert report.chunks == len(contents(tmp_path / "idx")) == 48


def test_a_first_build_creates_its_store_on_the_write_thread_and_a_failure_there_is_clean(
    tmp_path: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = sources(tmp_path / "src", documents=6, sections=4)
    created_on: list[str] = []
    real_create = FileLayout.create_store

    def create_store(self: FileLayout, name: str, **kwargs: Any) -> Any:
        created_on.append(threading.current_thread().name)
        return real_create(self, name, **kwargs)

    monkeypatch.setattr(FileLayout, "create_store", create_store)
    build_index([src], index_path=tmp_path / "idx", embedder=HashEmbedder())
    assert len(created_on) == 1 and created_on[0].startswith("runbook-rag-write")

    def broken(self: FileLayout, name: str, **kwargs: Any) -> ChromaStore:
        (self.path / name).mkdir()
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(FileLayout, "create_store", broken)
    index = tmp_path / "broken"
    with pytest.raises(OSError, match="Permission denied"):
        build_index([src], index_path=index, embedder=HashEmbedder())
    assert not (index / POINTER).exists() and generations(index) == []
