from __future__ import annotations

import json
import subprocess
import sys

import pytest

import runbook_rag

# What a bare import and every ``--help`` must not load: each costs tens to hundreds of
# milliseconds, and only a command that does work needs them.
HEAVY = (
    "numpy",
    "pydantic",
    "pydantic_settings",
    "chromadb",
    "markdown_it",
    "torch",
    "yaml",
    "fastapi",
    "sentence_transformers",
    "llama_index",
)

# Runs the CLI's ``main`` with ``--help`` for the group and for every command and subcommand
# found in it, and prints, per invocation, the heavy packages loaded so far.
HELP_PROBE = """
import json, sys
import click
from runbook_rag.cli import cli, main

def paths(group, prefix):
    for name, command in sorted(group.commands.items()):
        yield [*prefix, name]
        if isinstance(command, click.Group):
            yield from paths(command, [*prefix, name])

heavy = sys.argv[1:]
loaded = {}
for words in [[], *paths(cli, [])]:
    argv = [*words, "--help"]
    try:
        main(argv)
    except SystemExit:
        pass
    loaded[" ".join(argv)] = [m for m in heavy if m in sys.modules]
print(json.dumps(loaded))
"""


def run_probe(code: str) -> str:
    """What ``code`` prints in a fresh interpreter, which gets the HEAVY names as arguments."""
    done = subprocess.run([sys.executable, "-c", code, *HEAVY], capture_output=True, text=True, check=True)
    return done.stdout


def test_public_api_is_pinned() -> None:
    assert runbook_rag.__all__ == [
        "AccessMap",
        "Answer",
        "BuildReport",
        "Citation",
        "Hit",
        "Principal",
        "RunbookIndex",
        "RunbookRagError",
        "Settings",
        "Skipped",
    ]
    for name in runbook_rag.__all__:
        value = getattr(runbook_rag, name)
        assert value.__name__ == name
        assert value.__module__.startswith("runbook_rag.")
        assert value.__doc__


@pytest.mark.slow
def test_every_public_name_resolves_on_first_use() -> None:
    # In a fresh interpreter, so each name goes through the package's lazy lookup.
    out = run_probe(
        "import json, runbook_rag\n"
        "print(json.dumps({n: getattr(runbook_rag, n).__module__ for n in runbook_rag.__all__}))"
    )
    homes = json.loads(out)
    assert list(homes) == runbook_rag.__all__
    assert homes["RunbookIndex"] == "runbook_rag.index"
    assert homes["Principal"] == "runbook_rag.records"

    namespace: dict[str, object] = {}
    exec("from runbook_rag import *", namespace)
    assert sorted(n for n in namespace if n != "__builtins__") == runbook_rag.__all__


def test_dir_lists_the_public_names() -> None:
    assert set(runbook_rag.__all__) <= set(dir(runbook_rag))


def test_unknown_names_are_attribute_errors() -> None:
    assert not hasattr(runbook_rag, "NoSuchName")
    with pytest.raises(ImportError):
        from runbook_rag import NoSuchName  # type: ignore[attr-defined]  # noqa: F401
    # a submodule is still importable by name from the package
    from runbook_rag import records

    assert records.Principal is runbook_rag.Principal


@pytest.mark.slow
def test_import_loads_no_heavy_package() -> None:
    out = run_probe(
        "import sys, runbook_rag\ndir(runbook_rag)\nprint([m for m in sys.argv[1:] if m in sys.modules])"
    )
    assert out.strip() == "[]"


@pytest.mark.slow
def test_help_of_every_command_loads_no_heavy_package() -> None:
    out = run_probe(HELP_PROBE)
    *help_text, last = out.strip().splitlines()
    loaded = json.loads(last)
    assert {"--help", "search --help", "index info --help", "audit verify --help"} <= set(loaded)
    assert {argv: heavy for argv, heavy in loaded.items() if heavy} == {}
    text = "\n".join(help_text)
    assert "Usage: runbook-rag search [OPTIONS] QUERY" in text
    assert "Usage: runbook-rag audit verify [OPTIONS] LOG_FILE" in text


@pytest.mark.slow
def test_python_m_help_loads_no_heavy_package() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runbook_rag", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "Usage: runbook-rag" in done.stdout
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "runbook_rag" in imported
    assert imported.isdisjoint(HEAVY)


def test_every_error_derives_from_the_base() -> None:
    from runbook_rag import errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, runbook_rag.RunbookRagError)
        assert cls.__name__ in errors.__doc__
