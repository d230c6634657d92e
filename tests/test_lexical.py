"""The lexical index: tokens, identifiers, BM25 against bm25s, and entitlement-scoped statistics."""

from __future__ import annotations

from pathlib import Path

import bm25s
import numpy as np
import pytest

from runbook_rag.errors import IndexStateError
from runbook_rag.lexical import LexicalIndex, identifiers, is_identifier, terms

ENTRIES = [
    ("c1", "ops/pods.md", "Pod crash looping\n\nKubePodCrashLooping fires when a pod restarts.", "sre"),
    ("c2", "ops/pods.md", "Pod crash looping > Memory\n\nMemory climbs until the pod is OOM killed.", "sre"),
    ("c3", "ops/disk.md", "Node disk pressure\n\nPods are evicted when the disk fills up.", "platform"),
    (
        "c4",
        "sec/vault.md",
        "Card vault down\n\nThe token-vault pods crash and tokenisation fails.",
        "card-vault",
    ),
    ("c5", "sec/keys.md", "Key rotation\n\nRotate the KEK, then re-wrap every DEK.", "card-vault,security"),
    ("c6", "ops/etcd.md", "Etcd leader changes\n\nFrequent leader elections slow the API.", "platform,sre"),
]


@pytest.fixture(scope="module")
def index() -> LexicalIndex:
    return LexicalIndex.build(ENTRIES)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("KubePodCrashLooping", True),
        ("kube_pod_info", True),
        ("ERR_CARD_DECLINED", True),
        ("E4012", True),
        ("payout-retry-tool", True),
        ("v1.2.3", True),
        ("restarting", False),
        ("on-call", False),
        ("30s", False),
        ("800ms", False),
        ("5xx", False),
        ("p99", False),
        ("sev1", False),
        ("3ds", False),
        ("k8s", False),
    ],
)
def test_identifiers_are_names_not_quantities(word: str, expected: bool) -> None:
    assert is_identifier(word) is expected


def test_terms_keep_identifiers_whole_and_split_into_stemmed_parts() -> None:
    got = terms("KubePodCrashLooping fired: pods keep restarting")
    assert got[0] == "=kubepodcrashlooping"
    assert {"kube", "pod", "crash", "loop", "fire", "restart"} <= set(got)
    assert "keep" in got and "the" not in terms("the pods")  # stop words dropped
    assert identifiers(terms("why is KubePodCrashLooping firing")) == ["=kubepodcrashlooping"]
    # Queries and documents share the tokenizer: a misspelt case still meets the same terms.
    assert set(terms("kubepodcrashlooping")) & set(terms("KubePodCrashLooping"))


def test_scores_equal_bm25s_when_everything_is_visible(index: LexicalIndex) -> None:
    vocab: dict[str, int] = {"": 0}
    ids = [[vocab.setdefault(t, len(vocab)) for t in terms(text)] for _, _, text, _ in ENTRIES]
    reference = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    reference.index((ids, vocab), create_empty_token=False, show_progress=False)
    query = terms("pod crash memory")
    want = reference.get_scores([vocab[t] for t in dict.fromkeys(query) if t in vocab])
    got = dict(index.top(query, visible=frozenset(e[3] for e in ENTRIES), n=10))
    for (chunk_id, *_), score in zip(ENTRIES, want, strict=True):
        assert got.get(chunk_id, 0.0) == pytest.approx(float(score), abs=1e-5)


def test_a_saved_index_loads_read_only_and_in_bm25s_own_format(index: LexicalIndex, tmp_path: Path) -> None:
    """Saved as bm25s saves it (so earlier versions and bm25s itself can read it), loaded
    memory-mapped and read-only, with the same scores."""
    index.save(tmp_path / "lexical")
    again = LexicalIndex.load(tmp_path / "lexical")
    query, visible = terms("pod crash memory"), frozenset(e[3] for e in ENTRIES)
    assert again.top(query, visible=visible, n=10) == index.top(query, visible=visible, n=10)
    assert not again._data.flags.writeable
    theirs = bm25s.BM25.load(str(tmp_path / "lexical"), mmap=False)
    vocab = theirs.vocab_dict
    want = theirs.get_scores([vocab[t] for t in dict.fromkeys(query) if t in vocab])
    got = dict(again.top(query, visible=visible, n=10))
    for (chunk_id, *_), score in zip(ENTRIES, want, strict=True):
        assert got.get(chunk_id, 0.0) == pytest.approx(float(score), abs=1e-5)


def test_statistics_count_only_visible_chunks(index: LexicalIndex) -> None:
    """A principal's scores are those of an index of only their chunks: a restricted
    chunk's words change no score, rank or count they can observe."""
    visible = frozenset({"sre", "platform,sre"})
    query = terms("pod crash tokenisation vault")
    alone = LexicalIndex.build([e for e in ENTRIES if e[3] in visible])
    assert dict(index.top(query, visible=visible, n=10)) == pytest.approx(
        dict(alone.top(query, visible=visible, n=10))
    )
    assert index.weights(query, visible=visible) == pytest.approx(alone.weights(query, visible=visible))


def test_search_never_returns_an_invisible_chunk(index: LexicalIndex) -> None:
    query = terms("token vault tokenisation KEK DEK pod")
    assert {c for c, _ in index.top(query, visible=frozenset({"sre"}), n=10)} <= {"c1", "c2"}
    assert index.top(query, visible=frozenset(), n=10) == []
    assert index.top(query, visible=frozenset({"no-such-label"}), n=10) == []
    assert index.naming("=kubepodcrashlooping", visible=frozenset({"platform"}), max_documents=3) == []


def test_naming_holds_rare_names_only(index: LexicalIndex) -> None:
    everyone = frozenset(e[3] for e in ENTRIES)
    assert index.naming("=kubepodcrashlooping", visible=everyone, max_documents=3) == ["c1"]
    assert index.naming("=token-vault", visible=everyone, max_documents=3) == []  # 1 hyphen: a word
    # "pod" is in three runbooks: not a name when at most two are allowed.
    assert index.naming("pod", visible=everyone, max_documents=2) == []


def test_save_and_load_round_trip(tmp_path: Path, index: LexicalIndex) -> None:
    index.save(tmp_path / "lex")
    loaded = LexicalIndex.load(tmp_path / "lex")
    query = terms("pod memory disk")
    everyone = frozenset(e[3] for e in ENTRIES)
    assert loaded.top(query, visible=everyone, n=5) == index.top(query, visible=everyone, n=5)
    assert len(loaded) == len(ENTRIES)


def test_a_damaged_lexical_index_is_a_clear_error(tmp_path: Path, index: LexicalIndex) -> None:
    index.save(tmp_path / "lex")
    np.save(tmp_path / "lex" / "acl.npy", np.zeros(2, dtype=np.int32))
    with pytest.raises(IndexStateError, match="inconsistent"):
        LexicalIndex.load(tmp_path / "lex")
    (tmp_path / "lex" / "chunks.json").unlink()
    with pytest.raises(IndexStateError, match="unreadable"):
        LexicalIndex.load(tmp_path / "lex")


def test_an_empty_index_finds_nothing() -> None:
    empty = LexicalIndex.build([])
    assert empty.top(terms("pod"), visible=frozenset({"sre"}), n=5) == []


def test_a_rebuild_reuses_the_terms_of_unchanged_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import runbook_rag.lexical as lexical

    first = LexicalIndex.build([(*e, f"key-{e[0]}") for e in ENTRIES])
    changed = [(*e, f"key-{e[0]}") for e in ENTRIES[:-1]]
    changed.append(
        ("c7", "ops/etcd.md", "Etcd leader changes\n\nDefragment the etcd members.", "platform,sre", "new")
    )
    tokenised: list[str] = []
    real_terms = lexical.terms
    monkeypatch.setattr(lexical, "terms", lambda text: tokenised.append(text) or real_terms(text))
    second = LexicalIndex.build(changed, previous=first)
    assert tokenised == [changed[-1][2]]  # only the new chunk was tokenised
    fresh = LexicalIndex.build(changed)
    everyone = frozenset(e[3] for e in ENTRIES)
    for query in ("pod crash memory", "etcd defragment leader", "KubePodCrashLooping"):
        q = real_terms(query)
        got, want = second.top(q, visible=everyone, n=10), fresh.top(q, visible=everyone, n=10)
        assert [c for c, _ in got] == [c for c, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want])
