"""The support check: specifics must be quoted, content words covered; and its precision
and recall on the hand-labelled sentences of evals/support_sentences.jsonl."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runbook_rag.support import COVERAGE_THRESHOLD, answer_support, check_sentence, specifics

from .conftest import ROOT, SAMPLES

PASSAGE = """## Manual failover

1. Look at the cluster state from any member:

```bash
kubectl -n payments-db exec -it payments-db-1 -- patronictl -c /etc/patroni/patroni.yml list
```

2. Announce in `#payments-ops` 15 minutes before; expect ~5s of write errors.
3. Meridian's contracted limit is 1,200 TPS; reversals are retried for 24 hours.
4. Shoppers see 5\u201310 business days before the money arrives at auth.northbank-acq.example:8443.
"""


@pytest.mark.parametrize(
    ("sentence", "supported", "missing"),
    [
        ("Look at the cluster state from any member with `patronictl list` [1].", True, ()),
        ("Announce it in #payments-ops 15 minutes before [1].", True, ()),
        ("Announce it in #payments-ops 45 minutes before [1].", False, ("45",)),
        ("Announce it in #inc-payments 15 minutes before [1].", False, ("#inc-payments",)),
        ("The limit is 1200 TPS [1].", True, ()),
        ("The limit is 1,500 TPS [1].", False, ("1,500",)),
        ("Expect about 5 s of write errors [1].", True, ()),
        ("Reversals are retried for 4 hours [1].", False, ("4",)),  # "24" is not "4"
        ("Money arrives after 5-10 business days [1].", True, ()),
        ("Money arrives after 5-12 business days [1].", False, ("5-12",)),
        ("Test it against auth.northbank-acq.example:8443 [1].", True, ()),
        ("Test it against auth.northbank.example:443 [1].", False, ("auth.northbank.example:443",)),
        ("List the cluster with /etc/patroni/patroni.yml [1].", True, ()),
        ("List the cluster with /etc/patroni/config.yml [1].", False, ("/etc/patroni/config.yml",)),
        ("Run `patronictl -c /etc/patroni/patroni.yml list --force` [1].", False, ("--force",)),
        ("Pass --dry-run first [1].", False, ("--dry-run",)),
        ("Exec into payments-db-7 [1].", False, ("payments-db-7",)),
        ("Check the WAL_LEVEL setting [1].", False, ("WAL_LEVEL",)),
        ("Run FLUSHALL on the member [1].", False, ("FLUSHALL",)),
        ("The cluster has four members [1].", False, ("four",)),
        ("The cluster has 4 members [1].", False, ("4",)),  # "4." is a list ordinal, not a fact
        ("Shoppers wait for the money to arrive [1].", True, ()),
        ("Rebuild the marketing website and notify the travel desk [1].", False, ()),
    ],
)
def test_specifics_must_be_quoted_and_words_covered(
    sentence: str, supported: bool, missing: tuple[str, ...]
) -> None:
    verdict = check_sentence(sentence, [PASSAGE])
    assert (verdict.supported, verdict.missing) == (supported, missing), verdict
    if not supported:
        assert verdict.reason == ("specific" if missing else "coverage")


def test_specifics_are_found_in_prose_spans_and_blocks() -> None:
    found = specifics(
        "Use `redis-cli UNLINK key` on session-cache-2 at 10.0.0.7 [1]:\n```\nsv stop patroni\n```"
    )
    assert found == ["sv", "stop", "patroni", "redis-cli", "UNLINK", "key", "session-cache-2", "10.0.0.7"]
    assert specifics("See [1] and [2].") == []  # markers are no numbers


def test_sentences_take_their_own_markers_else_their_paragraphs_else_the_answers() -> None:
    passages = {1: "Fence the old primary with sv stop patroni.", 2: "Page the DBA lead on call."}
    text = (
        "To fence the old primary:\n\n"
        "```bash\nsv stop patroni\n```\n\n"
        "Fence the old primary first. Then page the DBA lead [2].\n\n"
        "Fence the old primary [1]. Page the DBA lead [2].\n\n"
        "Run [command removed] now [1].\n\n"
        "(Removed 1 command that no cited runbook holds.)"
    )
    got = [(s.text, s.citations, s.cited_by, s.reason) for s in answer_support(text, passages)]
    assert got == [
        ("To fence the old primary: ```bash sv stop patroni ```", (1, 2), "answer", "supported"),
        ("Fence the old primary first.", (2,), "paragraph", "coverage"),
        ("Then page the DBA lead.", (2,), "own", "supported"),
        ("Fence the old primary.", (1,), "own", "supported"),
        ("Page the DBA lead.", (2,), "own", "supported"),
        ("Run [command removed] now.", (1,), "own", "removed_command"),
    ]


def test_a_code_block_belongs_to_the_sentence_that_introduces_it() -> None:
    passages = {1: "Stop it:\n```\nsv stop patroni\n```"}
    (only,) = answer_support("Stop Patroni on the old primary [1]:\n\n```\nsv stop etcd\n```", passages)
    assert only.citations == (1,) and only.missing == ("etcd",) and not only.supported


def test_a_citation_without_a_passage_supports_nothing() -> None:
    (only,) = answer_support("Fail over to the standby [3].", {1: "Fail over to the standby."})
    assert (only.supported, only.reason) == (False, "uncited")
    (abstention,) = answer_support("No runbook you can access covers this.", {})
    assert abstention.reason == "uncited"  # measured answers are never abstentions


# --- calibration on the labelled sentences ---------------------------------------------------

LABELS = ROOT / "evals" / "support_sentences.jsonl"


def labelled() -> list[tuple[dict[str, object], list[str]]]:
    rows = []
    for line in LABELS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        passages = []
        for cite in row["cites"]:
            lines = (SAMPLES / cite["source"]).read_text(encoding="utf-8").split("\n")
            first, last = cite["lines"]
            assert 1 <= first <= last <= len(lines), row["id"]
            passages.append("\n".join(lines[first - 1 : last]))
        rows.append((row, passages))
    return rows


def test_the_labelled_set_is_large_enough_and_well_formed() -> None:
    rows = labelled()
    labels = [row["label"] for row, _ in rows]
    assert len(rows) >= 100 and set(labels) == {"supported", "unsupported"}
    assert len({row["id"] for row, _ in rows}) == len(rows)
    for row, _ in rows:  # the [n] markers of a sentence are its cites, in order
        markers = sorted({int(n) for n in re.findall(r"\[(\d)\]", str(row["sentence"]))})
        assert markers == list(range(1, len(list(row["cites"])) + 1)), row["id"]  # type: ignore[call-overload]


def test_precision_and_recall_on_the_labelled_set() -> None:
    flagged = {True: 0, False: 0}  # unsupported flagged: correctly, wrongly
    missed = 0
    for row, passages in labelled():
        verdict = check_sentence(str(row["sentence"]), passages, threshold=COVERAGE_THRESHOLD)
        unsupported = row["label"] == "unsupported"
        if not verdict.supported:
            flagged[unsupported] += 1
        elif unsupported:
            missed += 1
    precision = flagged[True] / (flagged[True] + flagged[False])
    recall = flagged[True] / (flagged[True] + missed)
    # Measured 0.93 and 0.83 (benchmarks/support_check.py); a drop means the rule regressed.
    assert precision >= 0.9 and recall >= 0.8, (precision, recall)


def test_the_benchmark_prints_the_sweep(capsys: pytest.CaptureFixture[str]) -> None:
    import runpy
    import sys

    argv = sys.argv
    sys.argv = ["support_check.py"]
    try:
        runpy.run_path(str(Path(ROOT / "benchmarks" / "support_check.py")), run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr().out
    assert "<- in use" in out and f"in use ({COVERAGE_THRESHOLD})" in out
