"""End to end: the sample runbooks, real Chroma, the real bundled model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_rag import Principal, RunbookIndex
from runbook_rag.answer import ABSTAIN_TEXT
from runbook_rag.errors import ModelMismatchError, QueryError
from runbook_rag.store import ChromaStore

from .conftest import SAMPLES, HashEmbedder

pytestmark = pytest.mark.slow

RESTRICTED_QUESTIONS = {
    "security/hsm-outage.md": "the HSM is down and PIN translation is failing, what do I do",
    "security/encryption-key-rotation.md": "how do I rotate the KEK and DEK encryption keys",
    "platform/postgres-primary-failover.md": "postgres primary is down, how do I fail over with patroni",
    "risk/fraud-rule-rollback.md": "a new fraud rule is blocking good payments, how do I roll it back",
    "security/tokenisation-vault-outage.md": "tokenization is failing, the card vault is down",
}
ENTITLED = {
    "security/hsm-outage.md": "card-vault",
    "security/encryption-key-rotation.md": "security",
    "platform/postgres-primary-failover.md": "dba",
    "risk/fraud-rule-rollback.md": "fraud-risk",
    "security/tokenisation-vault-outage.md": "card-vault",
}
SRE = Principal("sam", frozenset({"sre", "payments-oncall", "platform"}))


def title_of(source: str) -> str:
    if source.endswith(".xml"):
        return json.loads((SAMPLES / source).with_suffix(".json").read_text())["title"]
    for line in (SAMPLES / source).read_text().splitlines():
        if line.startswith("title:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(source)


def test_build_report_counts_and_skips_the_unlabelled_draft(sample_index: RunbookIndex) -> None:
    manifest = sample_index.manifest
    assert manifest.documents == 35
    assert manifest.model_id == "all-MiniLM-L6-v2" and manifest.dimension == 384
    skipped = {s.source: s.reason for s in manifest.build_report().skipped}
    assert list(skipped) == ["drafts/payout-retry-tool.md"]
    assert "no access labels" in str(skipped["drafts/payout-retry-tool.md"])


@pytest.mark.parametrize(
    ("groups", "source", "visible"),
    [
        ({"card-vault"}, "security/hsm-outage.md", True),
        ({"security"}, "security/hsm-outage.md", True),
        ({"sre"}, "security/hsm-outage.md", False),
        ({"payments-oncall", "sre", "platform"}, "security/tokenisation-vault-outage.md", False),
        ({"card-vault"}, "security/tokenisation-vault-outage.md", True),
        ({"security"}, "security/tokenisation-vault-outage.md", False),
        ({"dba"}, "platform/postgres-primary-failover.md", True),
        ({"sre"}, "platform/postgres-primary-failover.md", False),
        ({"sre"}, "platform/postgres-replication-lag.md", True),
        ({"fraud-risk"}, "risk/fraud-rule-rollback.md", True),
        ({"security", "sre"}, "risk/fraud-rule-rollback.md", False),
        ({"security"}, "security/encryption-key-rotation.md", True),
        ({"card-vault"}, "security/encryption-key-rotation.md", False),
        ({"support"}, "payments/refund-processing-stuck.md", True),
        ({"support"}, "payments/failed-capture-spike.md", False),
        ({"finance-ops"}, "finance/payout-reconciliation-mismatch.md", True),
        ({"payments-oncall"}, "finance/payout-reconciliation-mismatch.md", False),
        ({"all-staff"}, "process/incident-communications.md", True),
        ({"all-staff"}, "payments/card-authorisation-decline-spike.md", False),
        ({"sre"}, "process/incident-communications.md", False),
        ({"payments-oncall", "sre"}, "drafts/payout-retry-tool.md", False),
        (set(), "process/incident-communications.md", False),
        ({"contractors"}, "payments/card-authorisation-decline-spike.md", False),
        ({"SRE"}, "payments/card-authorisation-decline-spike.md", False),
        # a Confluence page narrowed by its parent page's restriction (payments-oncall, security)
        ({"payments-oncall"}, "confluence/acquirer-certificate-rotation.xml", True),
        ({"sre"}, "confluence/acquirer-certificate-rotation.xml", False),
    ],
)
def test_visibility_table(sample_index: RunbookIndex, groups: set[str], source: str, visible: bool) -> None:
    principal = Principal("u", frozenset(groups))
    query = title_of(source)
    hits = sample_index.search(query, principal=principal, k=10)
    sources = {h.source for h in hits}
    assert (source in sources) is visible
    if visible:
        assert hits[0].source == source
    for hit in hits:
        assert set(hit.labels) & principal.groups


@pytest.mark.parametrize("source", sorted(RESTRICTED_QUESTIONS))
def test_restricted_runbook_is_the_best_answer_only_for_the_entitled(
    sample_index: RunbookIndex, source: str
) -> None:
    question = RESTRICTED_QUESTIONS[source]
    entitled = Principal("e", frozenset({ENTITLED[source]}))
    assert sample_index.search(question, principal=entitled, k=5)[0].source == source
    answer = sample_index.answer(question, principal=entitled)
    assert not answer.abstained and answer.citations[0].source == source

    hits = sample_index.search(question, principal=SRE, k=50)
    assert source not in {h.source for h in hits}
    answer = sample_index.answer(question, principal=SRE)
    assert source not in {c.source for c in answer.citations}
    restricted_text = (SAMPLES / source).read_text()
    for line in answer.text.splitlines():
        if len(line) > 30:
            assert line not in restricted_text or any(line in h.text for h in hits)


def test_answer_citations_point_at_real_lines(sample_index: RunbookIndex) -> None:
    principal = Principal("u", frozenset({"payments-oncall"}))
    answer = sample_index.answer("kafka consumer lag on the ledger writer is growing", principal=principal)
    assert not answer.abstained
    assert "[1]" in answer.text
    for c in answer.citations:
        lines = (SAMPLES / c.source).read_text().split("\n")
        cited = "\n".join(lines[c.start_line - 1 : c.end_line])
        assert cited.strip()
        assert f"[{c.n}]" in answer.text
    assert answer.citations[0].source == "finance/ledger-kafka-consumer-lag.md"


@pytest.mark.parametrize(
    "question",
    [
        "how do I book annual leave in the HR portal",
        "what is on the canteen lunch menu this week",
        "install nvidia drivers on the ML workstation",
    ],
)
def test_unanswerable_questions_abstain(sample_index: RunbookIndex, question: str) -> None:
    everyone = Principal(
        "all", frozenset({"sre", "dba", "security", "card-vault", "payments-oncall", "all-staff"})
    )
    answer = sample_index.answer(question, principal=everyone)
    assert answer.abstained and answer.text == ABSTAIN_TEXT and answer.citations == ()


def test_principal_without_groups_or_with_unknown_groups_sees_nothing(
    sample_index: RunbookIndex,
) -> None:
    for principal in (Principal("nobody"), Principal("x", frozenset({"contractors", "*", "all"}))):
        assert sample_index.search("card declines", principal=principal) == []
        answer = sample_index.answer("card declines", principal=principal)
        assert answer.abstained and answer.text == ABSTAIN_TEXT


def test_abstention_for_unentitled_reads_the_same_as_for_nothing(
    sample_index: RunbookIndex,
) -> None:
    # The message never hints that a restricted runbook exists.
    nothing = sample_index.answer("HSM down", principal=Principal("n", frozenset({"contractors"})))
    assert nothing.text == ABSTAIN_TEXT


def test_queries_are_validated(sample_index: RunbookIndex) -> None:
    with pytest.raises(QueryError):
        sample_index.search("   ", principal=SRE)
    with pytest.raises(QueryError):
        sample_index.search("x", principal=SRE, k=500)
    with pytest.raises(QueryError):
        sample_index.search("x" * 5000, principal=SRE)


def test_opening_with_another_model_is_a_clear_error(sample_index_path: Path) -> None:
    with pytest.raises(ModelMismatchError, match="all-MiniLM-L6-v2"):
        RunbookIndex(sample_index_path, embedder=HashEmbedder())


def test_chunk_ids_are_stable_across_rebuilds(sample_index_path: Path, model, tmp_path: Path) -> None:
    from runbook_rag.access import AccessMap
    from runbook_rag.generations import load_manifest

    from .conftest import SAMPLE_MAP

    first_dir, _ = load_manifest(sample_index_path)
    first = ChromaStore(first_dir, read_only=True).all_metadata()
    RunbookIndex.build(
        [SAMPLES], path=tmp_path / "again", access_map=AccessMap.load(SAMPLE_MAP), embedder=model
    )
    again_dir, _ = load_manifest(tmp_path / "again")
    again = ChromaStore(again_dir, read_only=True).all_metadata()
    assert first.keys() == again.keys()
    assert len(first) > 300
    for cid, meta in first.items():
        assert again[cid] == meta
        assert meta["acl"] and meta["acl_key"] == ",".join(sorted(meta["acl"]))


def test_every_stored_chunk_has_valid_labels_and_no_front_matter(sample_index_path: Path) -> None:
    from runbook_rag.generations import load_manifest

    gen_dir, manifest = load_manifest(sample_index_path)
    metas = ChromaStore(gen_dir, read_only=True).all_metadata()
    assert len(metas) == manifest.chunks
    assert {m["acl_key"] for m in metas.values()} == set(manifest.label_sets)
    assert "drafts/payout-retry-tool.md" not in {m["source"] for m in metas.values()}
    assert json.loads(metas[next(iter(metas))]["heading_path"]) is not None


def test_queries_use_the_exported_encoder_and_match_the_model(sample_index_path: Path, model) -> None:
    from runbook_rag.encoders import OnnxQueryEncoder

    fast = RunbookIndex(sample_index_path)  # no embedder given: the index's own query encoder
    exact = RunbookIndex(sample_index_path, embedder=model)
    principal = Principal("u", frozenset({"sre", "payments-oncall", "dba"}))
    lines = (SAMPLES.parent / "evals" / "sample_runbooks.jsonl").read_text().splitlines()
    queries = [json.loads(line)["query"] for line in lines]
    for query in queries[::6]:
        got = fast.search(query, principal=principal, k=5)
        want = exact.search(query, principal=principal, k=5)
        assert [h.chunk_id for h in got] == [h.chunk_id for h in want]
        assert all(abs(a.score - b.score) < 1e-4 for a, b in zip(got, want, strict=True))
    assert isinstance(fast._served.encoder(fast.manifest), OnnxQueryEncoder)


def test_a_broken_query_encoder_falls_back_to_the_model(sample_index_path: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(sample_index_path, copy)
    for onnx_file in copy.glob("encoders/*/model.onnx"):
        onnx_file.write_bytes(b"not a model")
    index = RunbookIndex(copy)
    hits = index.search("ledger consumer lag", principal=SRE, k=3)
    assert hits[0].source == "finance/ledger-kafka-consumer-lag.md"


def test_cli_search_needs_no_torch(sample_index_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys\nfrom runbook_rag.cli import main\n"
        "args = ['search', 'ledger lag', '--user', 'u', '--group', 'sre', '--index', "
        f"{str(sample_index_path)!r}]\n"
        "for a in (args, ['ask', *args[1:]]):\n"
        "    try:\n        main(a)\n"
        "    except SystemExit:\n        pass\n"
        "print([m in sys.modules for m in ('torch', 'sentence_transformers', 'llama_index')])"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert "finance/ledger-kafka-consumer-lag.md" in out
    assert out.strip().endswith("[False, False, False]")  # extractive ask needs no llama-index either


def test_another_local_model_folder_can_be_configured(tmp_path: Path) -> None:
    import shutil

    from runbook_rag.embedding import SentenceTransformerEmbedder, resolve_model
    from runbook_rag.errors import EmbeddingError

    bundled, _ = resolve_model(None)
    local = tmp_path / "my-minilm"
    shutil.copytree(bundled, local)
    embedder = SentenceTransformerEmbedder(local)
    assert embedder.model_id == "my-minilm" and embedder.dimension == 384
    with pytest.raises(EmbeddingError, match="not a local sentence-transformers model"):
        SentenceTransformerEmbedder(tmp_path / "nothing-here")
