"""The package's layers: lower stages never import the ones built on them."""

from __future__ import annotations

import ast
from pathlib import Path

import runbook_rag

PACKAGE = Path(runbook_rag.__file__).parent

# Stages of the pipeline and the records between them: they know nothing of the front doors.
LOWER = {
    "_phrases",
    "access",
    "actions",
    "atomic",
    "cardholder",
    "chunking",
    "commands",
    "embedding",
    "errors",
    "encoders",
    "lexical",
    "parsing",
    "records",
    "redaction",
    "runtime",
    "screening",
    "secret_rules",
    "settings",
    "sources",
    "store",
    "store_process",
    "tracing",
}
# The front doors and what drives them.
UPPER = {
    "index",
    "service",
    "mcp_server",
    "cli",
    "cli_actions",
    "cli_mcp",
    "evaluation",
    "retriever",
    "__main__",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (lazy imports in functions included)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(["runbook_rag", *base, *([node.module] if node.module else [])])
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
            else:
                found.add(node.module or "")
    return found


def test_lower_layers_never_import_the_front_doors() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        top = module_name(path).split(".")[0]
        if top not in LOWER:
            continue
        for target in imports(path):
            parts = target.split(".")
            if parts[0] == "runbook_rag" and len(parts) > 1 and parts[1] in UPPER:
                problems.append(f"{module_name(path)} imports {target}")
    assert problems == []


def test_only_the_store_imports_chromadb() -> None:
    users = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if any(t == "chromadb" or t.startswith("chromadb.") for t in imports(path))
    )
    assert users == ["store"]


def test_the_layer_lists_cover_every_module() -> None:
    tops = {module_name(p).split(".")[0] for p in PACKAGE.rglob("*.py")} - {""}
    middle = tops - LOWER - UPPER
    # The middle layer: the served generation, ranking, answers and their support, audit and the build.
    assert middle == {
        "answer",
        "audit",
        "generations",
        "grounding",
        "guard",
        "build",
        "links",
        "llm",
        "prompting",
        "ranking",
        "serving",
        "support",
    }


def test_the_checker_sees_relative_and_lazy_imports(tmp_path: Path) -> None:
    source = PACKAGE / "serving.py"
    found = imports(source)
    assert "runbook_rag.generations" in found and "runbook_rag.lexical.LexicalIndex" in found
    lazy = imports(PACKAGE / "index.py")
    assert "runbook_rag.sources.confluence_api" in lazy  # imported inside a method
