from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook_rag.chunking import chunk_document
from runbook_rag.errors import SourceError
from runbook_rag.records import Document

from .conftest import HashEmbedder

EMB = HashEmbedder()


def doc(text: str, title: str = "Runbook") -> Document:
    return Document(doc_id="a.md", source="a.md", title=title, text=text, labels=("sre",))


def chunks_of(text: str, max_tokens: int = 200, title: str = "Runbook"):
    return chunk_document(doc(text, title), count_tokens=EMB.count_tokens, max_tokens=max_tokens)


def test_hash_inside_code_fence_is_not_a_heading() -> None:
    text = "# Title\n\n## Diagnosis\n\n```bash\n# check consumer lag\nkafka-consumer-groups --describe\n```\n"
    chunks = chunks_of(text)
    assert len(chunks) == 1
    assert chunks[0].heading_path == ("Title", "Diagnosis")
    assert "# check consumer lag" in chunks[0].text
    assert chunks[0].text.startswith("```bash") and chunks[0].text.endswith("```")


def test_front_matter_is_not_chunked_and_lines_count_from_file_start() -> None:
    text = "---\ntitle: X\naccess: [sre]\n---\n# X\n\nFirst paragraph.\n\n## Steps\n\n1. one\n2. two\n"
    chunks = chunks_of(text)
    assert all("access:" not in c.text for c in chunks)
    lines = text.split("\n")
    for c in chunks:
        assert "\n".join(lines[c.start_line - 1 : c.end_line]) == c.text
    assert [(c.heading_path, c.start_line, c.end_line) for c in chunks] == [
        (("X",), 7, 7),
        (("X", "Steps"), 11, 12),
    ]


def test_heading_path_follows_levels() -> None:
    text = "# A\n\na\n\n## B\n\nb\n\n### C\n\nc\n\n## D\n\nd\n"
    assert [c.heading_path for c in chunks_of(text)] == [
        ("A",),
        ("A", "B"),
        ("A", "B", "C"),
        ("A", "D"),
    ]


def test_long_section_is_split_at_block_boundaries_within_window() -> None:
    paras = [" ".join(f"w{p}x{i}" for i in range(30)) for p in range(10)]
    text = "# T\n\n## Long\n\n" + "\n\n".join(paras) + "\n"
    chunks = chunks_of(text, max_tokens=80)
    assert len(chunks) > 3
    assert all(EMB.count_tokens([c.embed_text])[0] <= 80 for c in chunks)
    # every paragraph survives whole, in order
    joined = "\n\n".join(c.text for c in chunks)
    assert joined == "\n\n".join(paras)


def test_oversized_code_block_is_split_at_lines_and_fence_reopened() -> None:
    body = "\n".join(f"echo step {i} of the long script" for i in range(60))
    text = f"# T\n\n## Script\n\n```bash\n{body}\n```\n"
    chunks = chunks_of(text, max_tokens=60)
    assert len(chunks) > 1
    for c in chunks:
        assert c.text.startswith("```bash\n") and c.text.endswith("\n```")
        assert EMB.count_tokens([c.embed_text])[0] <= 60
    inner = [line for c in chunks for line in c.text.split("\n")[1:-1]]
    assert inner == body.split("\n")
    assert chunks[0].start_line == 5 and chunks[-1].end_line == 66


def test_code_block_that_fits_is_never_split() -> None:
    code = "```sql\n" + "\n".join(f"select {i};" for i in range(20)) + "\n```"
    text = "# T\n\n## Q\n\nintro " * 1 + "\n\n" + code + "\n"
    chunks = chunks_of(text, max_tokens=60)
    assert sum(code in c.text for c in chunks) == 1


def test_single_huge_line_is_split_between_words_not_truncated() -> None:
    words = [f"t{i}" for i in range(150)]
    text = "# T\n\n" + " ".join(words) + "\n"
    chunks = chunks_of(text, max_tokens=50)
    assert " ".join(c.text for c in chunks).split() == words
    assert {(c.start_line, c.end_line) for c in chunks} == {(3, 3)}


def test_ids_are_stable_and_unique() -> None:
    text = "# T\n\n## A\n\nsame\n\n## A\n\nsame\n"
    first, second = chunks_of(text), chunks_of(text)
    assert [c.chunk_id for c in first] == [c.chunk_id for c in second]
    assert len({c.chunk_id for c in first}) == 2


def test_heading_longer_than_window_is_an_error_naming_the_line() -> None:
    text = "# T\n\n## " + " ".join(["long"] * 100) + "\n\nbody\n"
    with pytest.raises(SourceError) as err:
        chunks_of(text, max_tokens=60)
    assert err.value.line == 5


@pytest.mark.slow
def test_real_tokenizer_windows_on_sample_runbooks(model) -> None:
    from runbook_rag.access import AccessMap
    from runbook_rag.sources import load_documents

    from .conftest import SAMPLE_MAP, SAMPLES

    docs = load_documents([SAMPLES], access_map=AccessMap.load(SAMPLE_MAP)).documents
    for d in docs:
        chunks = chunk_document(d, count_tokens=model.count_tokens, max_tokens=model.max_tokens)
        sizes = model.count_tokens([c.embed_text for c in chunks])
        assert max(sizes) <= model.max_tokens
        fences = [c for c in chunks if c.text.count("```") % 2]
        assert not fences, f"unbalanced fence in {d.source}"


def test_a_chunk_over_the_window_by_its_whole_count_is_an_error_naming_its_line() -> None:
    # A counter by characters: a text's count is more than its lines' (the line breaks count).
    def by_characters(texts: list[str]) -> list[int]:
        return [len(t) for t in texts]

    lines = ["# T", "", *[f"w{n:02d}" for n in range(20)]]
    doc = Document("d", "d.md", "T", "\n".join(lines) + "\n", ("sre",))
    with pytest.raises(SourceError, match="exceeds the model window") as err:
        chunk_document(doc, count_tokens=by_characters, max_tokens=80)
    assert err.value.source == "d.md" and err.value.line == 3
    # Told that counts add up, the chunker trusts its lines' counts.
    assert chunk_document(doc, count_tokens=by_characters, max_tokens=80, counts_add_up=True)


_LINE = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(lines=st.lists(_LINE, max_size=8), joint=st.sampled_from(["\n", "\r\n", " ", "\t", "\n\n"]))
def test_the_bundled_tokenizer_counts_a_text_as_the_sum_of_its_lines(
    model, lines: list[str], joint: str
) -> None:
    assert model.counts_add_up
    assert model.count_tokens([joint.join(lines)]) == [sum(model.count_tokens(lines))]


@pytest.mark.slow
def test_chunks_packed_by_their_lines_fit_the_window_whole(model) -> None:
    from runbook_rag.access import AccessMap
    from runbook_rag.sources import load_documents

    from .conftest import CORPUS, ROOT, SAMPLE_MAP, SAMPLES

    docs = load_documents([SAMPLES], access_map=AccessMap.load(SAMPLE_MAP)).documents
    if CORPUS.is_dir():  # the real runbooks too, when they are here
        corpus_map = AccessMap.load(ROOT / "benchmarks" / "corpus-access-map.yaml")
        docs += load_documents([CORPUS], access_map=corpus_map).documents
    for d in docs:
        kwargs = {"count_tokens": model.count_tokens, "max_tokens": model.max_tokens}
        trusted = chunk_document(d, counts_add_up=True, **kwargs)
        assert trusted == chunk_document(d, **kwargs)
        if trusted:
            assert max(model.count_tokens([c.embed_text for c in trusted])) <= model.max_tokens, d.source


@pytest.mark.slow
def test_no_content_line_is_lost_on_sample_runbooks(model) -> None:
    from runbook_rag.access import AccessMap
    from runbook_rag.sources import load_documents

    from .conftest import SAMPLE_MAP, SAMPLES

    docs = load_documents([SAMPLES], access_map=AccessMap.load(SAMPLE_MAP)).documents
    for d in docs:
        chunks = chunk_document(d, count_tokens=model.count_tokens, max_tokens=model.max_tokens)
        covered = {n for c in chunks for n in range(c.start_line, c.end_line + 1)}
        lines = d.text.split("\n")
        fm_end = lines.index("---", 1) + 1 if lines[0] == "---" else 0
        for n, line in enumerate(lines, start=1):
            if n <= fm_end or not line.strip() or line.startswith("#") or line.strip() == "---":
                continue
            assert n in covered, f"{d.source}:{n} is in no chunk: {line!r}"
