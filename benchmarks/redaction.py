"""Redaction throughput, findings per detector, and quarantine rate on a folder of runbooks.

    python benchmarks/redaction.py [FOLDER]                  # default ../shared/corpus
    python benchmarks/redaction.py [FOLDER] --baseline REV   # also the redactor of git revision REV

Reads every Markdown file as the build does, then times the redaction stage alone
(normalise + every detector) over the bodies, and prints MB/s, the hits of each
detector with the file and line of every card-number and secret hit (masked: the
benchmark prints context with the value replaced, never the value), and how many
chunks the instruction screen would quarantine.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag.chunking import chunk_document  # noqa: E402
from runbook_rag.errors import RunbookRagError  # noqa: E402
from runbook_rag.redaction import Redactor, normalise, strip_html_comments  # noqa: E402
from runbook_rag.screening import screen  # noqa: E402
from runbook_rag.sources import discover, read_text  # noqa: E402
from runbook_rag.sources.markdown import parse_markdown  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", type=Path, default=ROOT.parent / "shared" / "corpus")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline", help="a git revision whose redactor to measure in the same run")
    args = parser.parse_args()
    if not args.folder.is_dir():
        print(f"skipped: {args.folder} does not exist")
        return
    texts: dict[str, str] = {}
    for path, source in discover(args.folder):
        try:
            texts[source] = read_text(path, source=source)
        except RunbookRagError as exc:
            print(f"unreadable: {exc}")
    size = sum(len(t.encode("utf-8")) for t in texts.values())
    redactor = Redactor()
    redactor.redact("warm up: loads the detectors once")

    def throughput(redact: object) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            for text in texts.values():
                redact(strip_html_comments(text))  # type: ignore[operator]
            best = min(best, time.perf_counter() - t)
        return size / 1e6 / best

    redacted = throughput(redactor.redact)
    print(f"{len(texts)} files, {size / 1e6:.2f} MB: redaction {redacted:.1f} MB/s (best of {args.repeat})")
    screened = throughput(screen)
    print(
        f"instruction screen {screened:.1f} MB/s over the same texts; both stages together "
        f"{1 / (1 / redacted + 1 / screened):.1f} MB/s"
    )
    if args.baseline:
        old = _baseline_redaction(args.baseline)
        old_counts: Counter[str] = Counter()
        for text in texts.values():
            old_counts.update(old.redact(strip_html_comments(text)).counts)
        print(
            f"baseline {args.baseline}: redaction {throughput(old.redact):.1f} MB/s, "
            f"hits per detector: {dict(sorted(old_counts.items())) or 'none'}"
        )

    totals: Counter[str] = Counter()
    print("\nevery hit (value masked):")
    for source, text in texts.items():
        clean = normalise(strip_html_comments(text))
        for span in sorted(redactor.find(clean), key=lambda s: s.start):
            totals[span.kind] += 1
            line = clean.count("\n", 0, span.start) + 1
            row = clean.split("\n")[line - 1]
            start = span.start - (clean.rfind("\n", 0, span.start) + 1)
            shown = row[:start] + span.mask + row[start + (span.end - span.start) :]
            print(f"  {span.kind:16s} {source}:{line}: {shown.strip()[:140]}")
    print("\nhits per detector:", dict(sorted(totals.items())) or "none")

    from conftest import HashEmbedder  # a whitespace tokenizer is enough to count chunks

    from runbook_rag.access import AccessMap, AccessRule

    embedder = HashEmbedder()
    embedder.max_tokens = 200
    amap = AccessMap((AccessRule("**", ("all",)),))
    chunks = flagged = 0
    rules: Counter[str] = Counter()
    for source, text in texts.items():
        try:
            doc = parse_markdown(text, source=source, access_map=amap)
            pieces = chunk_document(doc, count_tokens=embedder.count_tokens, max_tokens=embedder.max_tokens)
        except RunbookRagError as exc:
            print(f"  not chunked: {exc}")
            continue
        for chunk in pieces:
            chunks += 1
            flag = screen(chunk.text)
            if flag:
                flagged += 1
                rules[flag.rule] += 1
                print(f"  quarantined: {source}:{chunk.start_line}-{chunk.end_line} ({flag.rule})")
    print(
        f"instruction screen: {flagged} of {chunks} chunks quarantined ({flagged / max(chunks, 1):.2%})",
        dict(rules),
    )


def _baseline_redaction(rev: str) -> object:
    """The redaction module of git revision ``rev``, loaded beside the current package."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:runbook_rag/redaction.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "baseline_redaction.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("runbook_rag._baseline_redaction", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "runbook_rag"  # its relative imports resolve against this package
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.Redactor()


if __name__ == "__main__":
    main()
