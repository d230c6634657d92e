"""Commands write only into the index folder and the cache directory: no telemetry files, no
caches in the home folder, the temp folder or the working directory."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook_rag import Settings, runtime

from .conftest import SAMPLES
from .openai_server import FakeOpenAI

# A few runbooks of the sample set, with their access map: enough for every command.
SUBSET = (
    "access-map.yaml",
    "payments/card-authorisation-decline-spike.md",
    "platform/postgres-primary-failover.md",
    "process/incident-communications.md",
)
# What libraries that ignore TMPDIR would leave in the shared /tmp (other processes write
# there too, so only these names are watched there).
SHARED_TMP = Path("/tmp")
SHARED_PATTERNS = ("torchinductor_*", ".ses", "*onnxruntime*")

Snapshot = dict[str, tuple[int, int, int]]


def snapshot(root: Path, *, skip: tuple[Path, ...] = ()) -> Snapshot:
    """Every path under ``root`` (outside ``skip``) with its inode, size and mtime."""
    found: Snapshot = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not any((here / d).is_relative_to(s) for s in skip)]
        for name in [*dirs, *files]:
            path = here / name
            st = path.lstat()
            found[str(path)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def shared_tmp() -> Snapshot:
    found: Snapshot = {}
    for entry in os.scandir(SHARED_TMP):
        if any(fnmatch.fnmatch(entry.name, p) for p in SHARED_PATTERNS):
            st = entry.stat(follow_symlinks=False)
            found[entry.path] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return found


def written(before: Snapshot, after: Snapshot) -> list[str]:
    return sorted(
        f"{path} ({'new' if path not in before else 'changed'})"
        for path, state in after.items()
        if before.get(path) != state
    )


def clean_env(home: Path, tmp: Path, cache: Path | None) -> dict[str, str]:
    """This process's environment without what runbook-rag or the user set to quiet or
    redirect the libraries: the command itself must do it."""
    drop = {*runtime.QUIET, *runtime.CACHES, "XDG_CACHE_HOME", "HF_HUB_CACHE", "NLTK_DATA"}
    env = {
        k: v for k, v in os.environ.items() if k not in drop and not k.startswith(("RUNBOOK_RAG_", "ORT_"))
    }
    env.update(HOME=str(home), TMPDIR=str(tmp), TEMP=str(tmp), TMP=str(tmp))
    if cache is not None:
        env["RUNBOOK_RAG_CACHE_DIR"] = str(cache)
    return env


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.close()


def run_commands(tmp_path: Path, llm: FakeOpenAI, *, separate_cache: bool) -> tuple[list[str], Path]:
    """Build, search and ask (extractive, and through a model) in a fresh home, temp folder
    and working directory; returns what was written outside the index folder and the cache
    directory, and the index folder."""
    sources = tmp_path / "runbooks"
    for rel in SUBSET:
        (sources / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLES / rel, sources / rel)
    home, tmp, cwd = (tmp_path / name for name in ("home", "tmp", "cwd"))
    for folder in (home, tmp, cwd):
        folder.mkdir()
    index = cwd / "idx"
    cache = tmp / "cache" if separate_cache else index / "cache"
    env = clean_env(home, tmp, cache if separate_cache else None)
    allowed = (index, cache)
    watched = (home, tmp, cwd)
    before = {root: snapshot(root, skip=allowed) for root in watched}
    shared_before = shared_tmp()
    caller = ["--index", str(index), "--user", "ana", "--group", "sre"]
    commands = [
        ["build", "--index", str(index), "--access-map", str(sources / "access-map.yaml"), str(sources)],
        ["search", *caller, "card declines spiking"],
        ["ask", *caller, "card declines are spiking, what do I check first?"],
        ["ask", *caller, "--llm-base-url", llm.base_url, "--llm-model", "good", "card declines are spiking"],
    ]
    calls = llm.calls.get("good", 0)
    for args in commands:
        done = subprocess.run(
            [sys.executable, "-m", "runbook_rag", *args], cwd=cwd, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{args[0]} failed: {done.stderr}"
    assert llm.calls.get("good", 0) > calls, "the answer was not written by the model"
    found = [line for root in watched for line in written(before[root], snapshot(root, skip=allowed))]
    found += written(shared_before, shared_tmp())
    return found, index


@pytest.mark.slow
def test_commands_write_only_the_index_and_its_cache(tmp_path: Path, llm: FakeOpenAI) -> None:
    found, index = run_commands(tmp_path, llm, separate_cache=False)
    assert found == [], "written outside the index folder:\n" + "\n".join(found)
    assert (index / "CURRENT").exists()


@pytest.mark.slow
def test_a_cache_directory_of_its_own(tmp_path: Path, llm: FakeOpenAI) -> None:
    found, index = run_commands(tmp_path, llm, separate_cache=True)
    assert found == [], "written outside the index folder and the cache directory:\n" + "\n".join(found)
    assert not (index / "cache").exists()


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No library variable set, by the user or by runbook-rag, for this test."""
    for name in (*runtime.QUIET, *runtime.CACHES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime, "_ours", set())
    return monkeypatch


def test_variables_the_user_set_are_kept(bare_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bare_env.setenv("ORT_DISABLE_TELEMETRY", "0")
    bare_env.setenv("HF_HOME", str(tmp_path / "mine"))
    runtime.quiet()
    runtime.use_cache_dir(tmp_path / "cache")
    assert os.environ["ORT_DISABLE_TELEMETRY"] == "0"
    assert os.environ["HF_HOME"] == str(tmp_path / "mine")
    assert os.environ["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "cache" / "torchinductor")
    runtime.use_cache_dir(tmp_path / "other")  # the first cache directory of a process stays
    assert os.environ["TORCH_HOME"] == str(tmp_path / "cache" / "torch")


def test_torch_gets_a_temporary_cache_when_the_cache_directory_cannot_be_made(
    bare_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    bare_env.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    runtime.use_cache_dir(blocker / "cache")  # cannot be created, as in a read-only index folder
    runtime.prepare_torch()
    folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    assert folder.is_dir() and folder.parent == tmp_path / "tmp"


def test_torch_cache_in_the_cache_directory(bare_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runtime.use_cache_dir(tmp_path / "cache")
    runtime.prepare_torch()
    assert (tmp_path / "cache" / "torchinductor").is_dir()


def test_a_torch_cache_the_user_set_is_left_alone(bare_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bare_env.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "theirs"))
    runtime.use_cache_dir(tmp_path / "cache")
    runtime.prepare_torch()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "theirs")
    assert not (tmp_path / "theirs").exists() and not (tmp_path / "cache").exists()


def test_the_cache_directory_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RUNBOOK_RAG_CACHE_DIR", raising=False)
    assert Settings().cache_path(tmp_path / "idx") == tmp_path / "idx" / "cache"
    monkeypatch.setenv("RUNBOOK_RAG_CACHE_DIR", str(tmp_path / "c"))
    assert Settings().cache_path(tmp_path / "idx") == tmp_path / "c"


@pytest.mark.slow
def test_importing_onnxruntime_after_the_embedding_module_writes_nothing(tmp_path: Path) -> None:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    subprocess.run(
        [sys.executable, "-c", "import runbook_rag.embedding, onnxruntime"],
        cwd=tmp_path,
        env=clean_env(home, tmp, None),
        check=True,
    )
    found = sorted(str(p.relative_to(tmp_path)) for p in [*home.rglob("*"), *tmp.rglob("*")])
    assert found == []
