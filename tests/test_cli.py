from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from runbook_rag.cli import EXIT_STRICT, main

from .conftest import SAMPLE_MAP, SAMPLES


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([*args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.slow
def test_search_json_contract(capsys, sample_index_path: Path) -> None:
    code, out, _ = run(
        capsys,
        "search",
        "consumer lag on ledger-writer",
        "--user",
        "u",
        "--group",
        "sre",
        "--index",
        str(sample_index_path),
        "-k",
        "3",
        "--json",
    )
    assert code == 0
    hits = json.loads(out)["hits"]
    assert len(hits) == 3
    assert set(hits[0]) == {"chunk_id", "source", "title", "heading", "lines", "score", "text", "commands"}
    assert hits[0]["source"] == "finance/ledger-kafka-consumer-lag.md"
    start, end = hits[0]["lines"]
    assert 1 <= start <= end


@pytest.mark.slow
def test_ask_json_contract_and_no_leak(capsys, sample_index_path: Path) -> None:
    code, out, _ = run(
        capsys,
        "ask",
        "HSM is down and PIN translation fails",
        "--user",
        "u",
        "--group",
        "sre",
        "--index",
        str(sample_index_path),
        "--json",
    )
    assert code == 0
    body = json.loads(out)
    assert set(body) == {"answer", "abstained", "citations", "commands", "mode", "fallback_reason", "usage"}
    assert body["mode"] == "extractive" and body["fallback_reason"] is None
    assert set(body["usage"]) >= {"stages_ms", "model", "prompt_tokens", "completion_tokens", "cost"}
    assert "hsm-outage" not in out and "HP-E030" not in out
    code, out, _ = run(
        capsys,
        "ask",
        "HSM is down and PIN translation fails",
        "--user",
        "u",
        "--group",
        "card-vault",
        "--index",
        str(sample_index_path),
        "--json",
    )
    body = json.loads(out)
    assert not body["abstained"]
    assert body["citations"][0]["source"] == "security/hsm-outage.md"
    assert set(body["citations"][0]) >= {"n", "chunk_id", "source", "heading", "lines"}


@pytest.mark.slow
def test_human_output_of_search_and_ask(capsys, sample_index_path: Path) -> None:
    code, out, _ = run(
        capsys,
        "search",
        "webhook retries",
        "--user",
        "u",
        "--group",
        "support",
        "--index",
        str(sample_index_path),
    )
    assert code == 0 and "payments/merchant-webhook-delivery-failures.md:" in out
    code, out, _ = run(
        capsys,
        "ask",
        "webhook deliveries to merchants failing",
        "--user",
        "u",
        "--group",
        "support",
        "--index",
        str(sample_index_path),
    )
    assert code == 0 and "Sources:" in out and "[1]" in out
    code, out, _ = run(
        capsys,
        "search",
        "webhook retries",
        "--user",
        "u",
        "--group",
        "nobody",
        "--index",
        str(sample_index_path),
    )
    assert code == 0 and out.strip() == "no results"


@pytest.mark.slow
def test_build_json_and_strict_exit_code(capsys, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.md").write_text("---\ntitle: Good\naccess: [sre]\n---\n# Good\n\nRestart the pod.\n")
    (src / "bad.md").write_text("---\ntitle: Bad\naccess: []\n---\nbody\n")
    index = tmp_path / "idx"
    code, out, _ = run(capsys, "build", str(src), "--index", str(index), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["documents"] == 1 and report["chunks"] == 1 and report["embedded"] == 1
    assert report["skipped"] == [
        {
            "source": "bad.md",
            "reason": "access is an empty list: nobody could read this document",
            "line": 3,
        }
    ]
    code, out, _ = run(capsys, "build", str(src), "--index", str(index), "--strict")
    assert code == EXIT_STRICT
    assert "bad.md:3: access is an empty list" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (
            ["search", "q", "--user", "u", "--group", "sre", "--index", "/nonexistent/idx"],
            1,
            "no index has been built",
        ),
        (["build", "/nonexistent/src", "--index", "/tmp/x-idx"], 2, "source folder does not exist"),
        (
            ["build", str(SAMPLES), "--access-map", "/nonexistent/map.yaml"],
            2,
            "cannot read access map",
        ),
        (["search", "q", "--group", "sre"], 2, "Missing option '--user'"),
        (["search", "q", "--user", "u"], 2, "Missing option '--group'"),
        (["ask", "q", "--user", "u"], 2, "Missing option '--group'"),
        (["search", "q", "--user", "u", "-k", "0"], 2, "Invalid value for '-k'"),
    ],
)
def test_errors_are_one_line_on_stderr_with_exit_codes(
    capsys, args: list[str], code: int, message: str
) -> None:
    got, _, err = run(capsys, *args)
    assert got == code
    assert message in err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1 and err.startswith("runbook-rag: error: ")


def test_help_does_not_import_heavy_modules() -> None:
    probe = (
        "import sys; from runbook_rag.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "names = ('chromadb', 'sentence_transformers', 'torch', 'llama_index')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("[]")
    assert "build" in out and "search" in out and "ask" in out


@pytest.mark.slow
def test_build_refuses_to_publish_an_empty_index(capsys, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "build", str(tmp_path / "empty"), "--index", str(tmp_path / "idx"))
    assert code == 2 and "refusing to replace the index with an empty one" in err
    assert not (tmp_path / "idx" / "CURRENT").exists()


def test_sample_access_map_is_valid() -> None:
    from runbook_rag.access import AccessMap

    assert AccessMap.load(SAMPLE_MAP).labels_for("process/incident-communications.md") == ("all-staff",)
