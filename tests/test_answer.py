"""Extractive answers: whole blocks, exact citations, useful passages first.

Properties over many chunk shapes (documents made of paragraphs, code blocks, lists and
tables, chunked by the real chunker at many window sizes): what an answer quotes is
exactly the source lines its citation names, every fence it opens is closed with the
content untouched, and no paragraph is cut.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_rag.answer import ABSTAIN_TEXT, choose_passages, excerpt, extractive_answer
from runbook_rag.chunking import chunk_document
from runbook_rag.lexical import terms
from runbook_rag.records import Chunk, Document, Hit

THRESHOLD = 0.33
FENCE = re.compile(r"^\s*(`{3,}|~{3,})(.*)$")


def count_words(texts: list[str] | tuple[str, ...]) -> list[int]:
    return [len(t.split()) for t in texts]


def as_hit(chunk: Chunk, evidence: float = 0.6) -> Hit:
    return Hit(
        chunk.chunk_id,
        chunk.source,
        chunk.title,
        chunk.heading_path,
        chunk.start_line,
        chunk.end_line,
        evidence,
        chunk.text,
        chunk.labels,
        evidence=evidence,
    )


def hit(
    text: str,
    *,
    source: str = "ops/a.md",
    heading: str = "Steps",
    evidence: float = 0.6,
    start: int = 10,
) -> Hit:
    end = start + len(text.split("\n")) - 1
    return Hit(
        f"{source}#{heading}#{start}",
        source,
        "Runbook",
        ("Runbook", heading),
        start,
        end,
        evidence,
        text,
        ("sre",),
        evidence=evidence,
    )


def open_fence(text: str) -> str | None:
    """The fence marker left open at the end of ``text`` (None when all are closed)."""
    opened: str | None = None
    for line in text.split("\n"):
        m = FENCE.match(line)
        if not m:
            continue
        if opened is None:
            if not m.group(2).strip().startswith(m.group(1)[0]):  # not an inline span
                opened = m.group(1)
        elif m.group(1)[0] == opened[0] and len(m.group(1)) >= len(opened) and not m.group(2).strip():
            opened = None
    return opened


# -- documents of many shapes ---------------------------------------------------------

SENTENCES = [
    "Restart the consumer with v2.3.1 of the client, e.g. after a broker upgrade.",
    "See https://wiki.example.com/runbooks/kafka?section=lag#consumer for the dashboards.",
    "Dr. Smith's team owns the ledger, i.e. the finance-ops group.",
    "Lag above 50k messages for 10 min. pages the on-call engineer.",
    "Check `kubectl -n ledger get pods -l app=ledger-writer` first.",
    "The p99 latency (vs. the 800 ms SLO) is on the Grafana board No. 3.",
    "Do not re-send the file: a duplicate would double-refund.",
    "Ask in #payments-oncall if unsure; escalate after 15 min.",
]
CODE_LINES = [
    "kubectl -n ledger rollout restart deploy/ledger-writer",
    "max by (partition) (",
    '  kafka_consumergroup_lag{consumergroup="ledger-writer-prod"}',
    ")",
    "SELECT count(*) FROM postings WHERE created_at > now() - interval '1 hour';",
    "# the blank line below is part of the block",
    "",
    "patronictl -c /etc/patroni/patroni.yml list",
]


@st.composite
def paragraph(draw: st.DrawFn) -> str:
    words = " ".join(draw(st.lists(st.sampled_from(SENTENCES), min_size=1, max_size=4))).split()
    width = draw(st.integers(6, 14))
    return "\n".join(" ".join(words[i : i + width]) for i in range(0, len(words), width))


@st.composite
def fence(draw: st.DrawFn, indent: str = "") -> str:
    marker = draw(st.sampled_from(["```", "~~~", "````"]))
    lang = draw(st.sampled_from(["", "bash", "promql", "sql"]))
    body = draw(st.lists(st.sampled_from(CODE_LINES), min_size=1, max_size=30))
    return "\n".join(indent + line if line else "" for line in [marker + lang, *body, marker])


@st.composite
def listing(draw: st.DrawFn) -> str:
    numbered = draw(st.booleans())
    items = []
    for n in range(1, draw(st.integers(1, 6)) + 1):
        mark = f"{n}. " if numbered else "- "
        pad = " " * len(mark)
        first, *rest = draw(paragraph()).split("\n")
        item = [mark + first, *(pad + line for line in rest)]
        if draw(st.integers(0, 2)) == 0:
            item += ["", draw(fence(indent=pad))]
            if draw(st.booleans()):
                item += ["", *(pad + line for line in draw(paragraph()).split("\n"))]
        items.append("\n".join(item))
    return ("\n\n" if draw(st.booleans()) else "\n").join(items)


@st.composite
def table(draw: st.DrawFn) -> str:
    rows = draw(st.integers(1, 6))
    return "\n".join(
        ["| Code | Meaning |", "|------|---------|", *(f"| `{n:02}` | row {n} |" for n in range(rows))]
    )


@st.composite
def document(draw: st.DrawFn) -> Document:
    lines = ["# Runbook", ""]
    for n in range(draw(st.integers(1, 3))):
        lines += [f"## Section {n}", ""]
        blocks = draw(st.lists(st.one_of(paragraph(), fence(), listing(), table()), min_size=1, max_size=6))
        for block in blocks:
            lines += [*block.split("\n"), ""]
    return Document("d", "ops/d.md", "Runbook", "\n".join(lines), ("sre",))


def starts_block(lines: list[str], i: int) -> bool:
    return i == 0 or not lines[i - 1].strip() or lines[i - 1].startswith("#")


def ends_block(lines: list[str], i: int) -> bool:
    return i + 1 >= len(lines) or not lines[i + 1].strip()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document(),
    st.integers(24, 220),
    st.lists(st.sampled_from(["lag", "kubectl", "patronictl", "refund", "p99"])),
)
def test_an_excerpt_is_whole_blocks_and_exactly_the_cited_lines(
    doc: Document, window: int, words: list[str]
) -> None:
    source = doc.text.split("\n")
    query_terms = frozenset(terms(" ".join(words)))
    for chunk in chunk_document(doc, count_tokens=count_words, max_tokens=window):
        passage = excerpt(as_hit(chunk), query_terms)
        if passage is None:
            continue
        assert passage.text == "\n".join(source[passage.start_line - 1 : passage.end_line])
        assert chunk.start_line <= passage.start_line <= passage.end_line <= chunk.end_line
        assert open_fence(passage.text) is None, passage.text
        # Whole paragraphs: a quote starts and ends at blank lines (or where the chunk
        # itself does), never between two lines of one paragraph.
        first, last = passage.start_line - 1, passage.end_line - 1
        assert (
            starts_block(source, first) or first == chunk.start_line - 1 or _in_list_or_table(source, first)
        )
        assert ends_block(source, last) or last == chunk.end_line - 1 or _in_list_or_table(source, last + 1)


def _in_list_or_table(lines: list[str], i: int) -> bool:
    """Line ``i`` starts a list item or is a table row (blocks that need no blank line)."""
    line = lines[i].lstrip() if i < len(lines) else ""
    return bool(re.match(r"(- |\d+\. |\|)", line)) or i >= len(lines)


def test_a_long_code_block_is_shown_whole_or_not_at_all() -> None:
    promql = ["```promql", "# LedgerConsumerStalled", "max by (partition) ("]
    promql += [f'  delta(kafka_consumergroup_current_offset{{partition="{n}"}}[5m])' for n in range(14)]
    promql += [") == 0", "```"]
    text = "\n".join(
        [
            "- `LedgerConsumerLagHigh` (P2): total lag above 50k messages for 10 minutes.",
            "- `LedgerConsumerStalled` (P1): a partition's committed offset has not",
            "  moved for 5 minutes while the log end offset has.",
            "",
            *promql,
            "",
            "Page the ledger team when it fires twice in an hour.",
        ]
    )
    shown = excerpt(hit(text, start=26), frozenset(terms("LedgerConsumerStalled partition")))
    assert shown is not None
    assert open_fence(shown.text) is None
    if "```promql" in shown.text:
        assert ") == 0\n```" in shown.text  # the whole block, closed where the source closes it
    lines = text.split("\n")
    assert shown.text == "\n".join(lines[shown.start_line - 26 : shown.end_line - 26 + 1])


def test_a_fence_split_by_chunking_is_left_out_and_the_rest_cited_exactly() -> None:
    body = [f"echo step {n}" for n in range(60)]
    doc_text = "\n".join(
        [
            "# R",
            "",
            "## Steps",
            "",
            "Run this:",
            "",
            "```bash",
            *body,
            "```",
            "",
            "Then check the graphs.",
            "",
        ]
    )
    doc = Document("d", "ops/r.md", "R", doc_text, ("sre",))
    source = doc_text.split("\n")
    chunks = chunk_document(doc, count_tokens=count_words, max_tokens=60)
    assert any(len(c.text.split("\n")) > c.end_line - c.start_line + 1 for c in chunks), "a split fence"
    for chunk in chunks:
        passage = excerpt(as_hit(chunk), frozenset(terms("check graphs")))
        if passage is None:
            continue
        assert "echo step" not in passage.text, "a piece of a split block is never quoted"
        assert passage.text == "\n".join(source[passage.start_line - 1 : passage.end_line])


def test_the_whole_chunk_is_shown_when_it_fits() -> None:
    text = "1. Drain the node:\n\n   ```bash\n   kubectl drain node-1\n   ```\n\n2. Watch the pods move."
    shown = excerpt(hit(text, start=40), frozenset(terms("drain")))
    assert shown is not None and shown.text == text
    assert (shown.start_line, shown.end_line) == (40, 46)


def test_a_citation_names_exactly_the_lines_quoted() -> None:
    filler = "\n\n".join(f"Background paragraph {n} about something else entirely." for n in range(12))
    steps = "1. Restart the writer:\n   `kubectl -n ledger rollout restart deploy/ledger-writer`"
    text = f"{filler}\n\n{steps}"
    answer = extractive_answer("restart the ledger writer", [hit(text, start=100)], abstain_below=THRESHOLD)
    (citation,) = answer.citations
    lines = text.split("\n")
    quoted = "\n".join(lines[citation.start_line - 100 : citation.end_line - 100 + 1])
    assert quoted in answer.text and "rollout restart" in quoted
    assert citation.end_line == 100 + len(lines) - 1 and citation.start_line > 100


# -- choosing and ordering passages ---------------------------------------------------

STEPS = (
    "1. Find the stuck partition:\n\n   ```bash\n   kafka-consumer-groups --describe --group ledger\n   ```"
)


def test_a_one_line_passage_does_not_lead_when_its_runbook_has_a_richer_one() -> None:
    hits = [
        hit("Pick the branch that matches what diagnosis found.", heading="Mitigation", evidence=0.52),
        hit(STEPS, heading="Diagnosis", evidence=0.47, start=40),
    ]
    chosen = choose_passages("card declines spiking", hits, abstain_below=THRESHOLD)
    assert chosen[0].hit.heading_path[-1] == "Diagnosis"
    assert all(not p.thin for p in chosen)


@pytest.mark.parametrize("aside", ["Verification", "Escalation", "Background", "See also", "Rollback"])
def test_supporting_sections_follow_the_procedure(aside: str) -> None:
    hits = [
        hit("- Lag trending down at a steady slope.\n- No partition flagged.", heading=aside, evidence=0.6),
        hit(STEPS, heading="Mitigation", evidence=0.55, start=60),
    ]
    chosen = choose_passages("LedgerConsumerStalled", hits, abstain_below=THRESHOLD)
    assert [p.hit.heading_path[-1] for p in chosen] == ["Mitigation", aside]


def test_a_supporting_section_the_question_asks_for_leads() -> None:
    hits = [
        hit("- Lag trending down.\n- No partition flagged.", heading="Verification", evidence=0.6),
        hit(STEPS, heading="Mitigation", evidence=0.55, start=60),
    ]
    chosen = choose_passages("how do I verify the lag recovered", hits, abstain_below=THRESHOLD)
    assert chosen[0].hit.heading_path[-1] == "Verification"


def test_the_best_ranked_runbook_leads() -> None:
    hits = [
        hit("The ledger consumer reads postings from Kafka.", source="finance/lag.md", evidence=0.5),
        hit(STEPS, source="platform/kafka.md", evidence=0.56, start=30),
    ]
    chosen = choose_passages("ledger consumer lag", hits, abstain_below=THRESHOLD)
    assert chosen[0].hit.source == "finance/lag.md"


def test_a_more_useful_passage_leads_only_when_it_matches_nearly_as_well() -> None:
    hits = [
        hit("The writer posts entries to the ledger in order.", heading="Summary", evidence=0.6),
        hit(STEPS, heading="Diagnosis", evidence=0.35, start=60),
    ]
    chosen = choose_passages("ledger writer", hits, abstain_below=THRESHOLD)
    assert [p.hit.heading_path[-1] for p in chosen] == ["Summary"]


def test_extra_passages_clear_a_relevance_floor() -> None:
    hits = [
        hit(STEPS, source="finance/lag.md", evidence=0.5),
        hit("Unrelated: rotate the TLS certificate.", source="platform/tls.md", evidence=0.37, start=5),
        hit("Unrelated too: drain the node.", source="platform/node.md", evidence=0.45, start=5),
    ]
    chosen = choose_passages("ledger consumer lag", hits, abstain_below=THRESHOLD)
    assert [p.hit.source for p in chosen] == ["finance/lag.md"]


def test_a_caller_with_little_access_gets_no_unrelated_passages() -> None:
    # A caller who may read two unrelated runbooks: one weak match leads, nothing else.
    hits = [
        hit("Announce the incident in #inc-payments.", source="process/comms.md", evidence=0.36),
        hit("Hand over the pager at 09:00.", source="process/handover.md", evidence=0.34, start=3),
    ]
    chosen = choose_passages("token vault is down", hits, abstain_below=THRESHOLD)
    assert [p.hit.source for p in chosen] == ["process/comms.md"]
    assert extractive_answer("token vault is down", hits, abstain_below=0.4).text == ABSTAIN_TEXT


def test_at_most_three_passages_and_one_per_section() -> None:
    hits = [hit(STEPS, heading=f"Step {n % 2}", evidence=0.6 - n / 100, start=10 * n) for n in range(6)]
    chosen = choose_passages("find the stuck partition", hits, abstain_below=THRESHOLD)
    assert len(chosen) == 2
    assert len({p.hit.heading_path for p in chosen}) == 2


def test_nothing_quotable_points_to_the_passage_instead_of_quoting_a_piece() -> None:
    # A chunk that is only the middle of a split code block (its fence re-opened and closed).
    piece = hit("```bash\necho 1\necho 2\n```", start=20)
    piece = Hit(
        piece.chunk_id,
        piece.source,
        piece.title,
        piece.heading_path,
        21,
        22,
        0.6,
        piece.text,
        (),
        evidence=0.6,
    )
    answer = extractive_answer("echo", [piece], abstain_below=THRESHOLD)
    assert not answer.abstained and "echo" not in answer.text
    assert (answer.citations[0].start_line, answer.citations[0].end_line) == (21, 22)


def test_a_fence_never_closed_is_not_quoted() -> None:
    text = "Run the check:\n\n```bash\nkubectl get pods\nkubectl describe pod x"
    shown = excerpt(hit(text), frozenset(terms("kubectl pods")))
    assert shown is not None and shown.text == "Run the check:"


def test_abstains_below_the_threshold() -> None:
    answer = extractive_answer("anything", [hit(STEPS, evidence=0.2)], abstain_below=THRESHOLD)
    assert answer.abstained and answer.text == ABSTAIN_TEXT and answer.citations == ()
    assert extractive_answer("anything", [], abstain_below=THRESHOLD).abstained


def test_hits_without_evidence_use_their_score() -> None:
    bare = Hit("c", "ops/a.md", "A", ("A", "Steps"), 1, 1, 0.7, "Fail over to Meridian.", ("sre",))
    answer = extractive_answer("fail over", [bare], abstain_below=THRESHOLD)
    assert answer.text == "A > Steps [1]:\nFail over to Meridian."


# -- end to end: the sample runbooks through the real index ----------------------------


@pytest.mark.slow
def test_every_sample_answer_quotes_exactly_the_lines_it_cites(sample_index) -> None:  # type: ignore[no-untyped-def]
    from runbook_rag import Principal
    from runbook_rag.access import AccessMap
    from runbook_rag.evaluation import load_queries
    from runbook_rag.redaction import redact_document
    from runbook_rag.sources import load_documents

    from .conftest import ROOT, SAMPLE_MAP, SAMPLES

    loaded = load_documents([SAMPLES], access_map=AccessMap.load(SAMPLE_MAP))
    texts = {d.source: redact_document(d)[0].text.split("\n") for d in loaded.documents}
    everyone = Principal("eval", frozenset(_groups(sample_index)))
    threshold = sample_index.settings.abstain_below
    quoted = 0
    for query in load_queries(ROOT / "evals" / "sample_runbooks.jsonl"):
        who = Principal("eval", frozenset(query.groups)) if query.groups is not None else everyone
        hits = sample_index.search(query.query, principal=who)
        answer = sample_index.answer(query.query, principal=who)
        assert open_fence(answer.text) is None, answer.text
        for passage, citation in zip(
            choose_passages(query.query, hits, abstain_below=threshold), answer.citations, strict=True
        ):
            assert (citation.source, citation.start_line, citation.end_line) == (
                passage.hit.source,
                passage.start_line,
                passage.end_line,
            )
            lines = texts[citation.source][citation.start_line - 1 : citation.end_line]
            assert passage.text == "\n".join(lines) and passage.text in answer.text
            quoted += 1
    assert quoted > 100


def _groups(index) -> set[str]:  # type: ignore[no-untyped-def]
    from runbook_rag.access import LABEL_SEP

    return {g for key in index.manifest.label_sets for g in key.split(LABEL_SEP)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("question", "groups", "source"),
    [
        (
            "card declines are spiking, what do I check first?",
            ["payments-oncall"],
            "payments/card-authorisation-decline-spike.md",
        ),
        (
            "ledger consumer lag is growing",
            ["ledger-team", "finance-ops"],
            "finance/ledger-kafka-consumer-lag.md",
        ),
        ("LedgerConsumerStalled", ["ledger-team"], "finance/ledger-kafka-consumer-lag.md"),
        ("token vault is down", ["card-vault"], "security/tokenisation-vault-outage.md"),
        ("TokenVaultErrorRateHigh", ["card-vault"], "security/tokenisation-vault-outage.md"),
    ],
)
def test_the_lead_passage_is_not_boilerplate(
    sample_index, question: str, groups: list[str], source: str
) -> None:  # type: ignore[no-untyped-def]
    from runbook_rag import Principal

    hits = sample_index.search(question, principal=Principal("u", frozenset(groups)))
    lead = choose_passages(question, hits, abstain_below=sample_index.settings.abstain_below)[0]
    assert lead.hit.source == source
    assert lead.hit.heading_path[-1] not in ("Verification", "Escalation", "Impact")
    assert not lead.thin
