"""Incremental rebuild costs: full build, no-op, one document changed, labels changed only.

    python benchmarks/rebuild.py [FOLDER]   # default ../shared/corpus (its access map is picked up)

Works on a copy of FOLDER in a temporary directory and prints, for each build, the
seconds, the chunks embedded (embedding calls) and the share of the full build's time.
Targets: no-op at most 5% of the full build with 0 embeddings; one changed document
at most 10%.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runbook_rag import RunbookIndex  # noqa: E402
from runbook_rag.access import AccessMap  # noqa: E402
from runbook_rag.embedding import SentenceTransformerEmbedder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = parser.parse_args()
    if not args.folder.is_dir():
        print(f"skipped: {args.folder} does not exist")
        return
    folder = args.folder.resolve()
    amap_path = (
        ROOT / "benchmarks" / "corpus-access-map.yaml"
        if folder.name == "corpus"
        else folder / "access-map.yaml"
    )
    work = Path(tempfile.mkdtemp(prefix="rr-rebuild-"))
    src = work / "src"
    shutil.copytree(folder, src, ignore=shutil.ignore_patterns("LICENSE*", "*.xml", "*.html"))
    access_map = AccessMap.load(amap_path) if amap_path.exists() else AccessMap()
    model = SentenceTransformerEmbedder()
    model.embed(["warm-up"] * 8)

    def build(label: str, full: float | None = None) -> float:
        report = RunbookIndex.build([src], path=work / "idx", access_map=access_map, embedder=model)
        share = f"  ({report.seconds / full:.1%} of the full build)" if full else ""
        print(
            f"{label:22s} {report.seconds:7.2f} s  embedded {report.embedded:5d}  reused {report.reused:5d}  "
            f"removed {report.removed:4d}  relabelled {report.relabelled:4d}{share}"
        )
        return report.seconds

    full = build("full build")
    build("no-op rebuild", full)
    docs = sorted(p for p in src.rglob("*.md") if "access:" not in p.read_text()[:400])
    victim = docs[len(docs) // 2] if docs else sorted(src.rglob("*.md"))[0]
    victim.write_text(victim.read_text() + "\n\n## Follow-up\n\nAdded during the last incident review.\n")
    build("one document changed", full)
    if amap_path.exists():
        relabel = work / "relabel.yaml"
        relabel.write_text(amap_path.read_text().replace("groups: [sre, platform]", "groups: [sre]", 1))
        access_map = AccessMap.load(relabel)
        build("labels changed only", full)


if __name__ == "__main__":
    main()
