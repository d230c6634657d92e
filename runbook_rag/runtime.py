"""The process environment of the libraries runbook-rag loads: telemetry off, caches in one folder.

What they write unless told otherwise (measured with a fresh ``HOME`` and ``TMPDIR``):

- onnxruntime writes a device id and queued telemetry events (OS, CPU model, interpreter
  path) to ``~/.cache/Microsoft/DeveloperTools/.onnxruntime/`` and a session file
  ``$TMPDIR/.ses`` when it is *imported*; only ``ORT_DISABLE_TELEMETRY`` set beforehand
  stops all three (``disable_telemetry_events()`` comes too late for the files).
- torch creates its compile cache folder (``$TMPDIR/torchinductor_<user>``) when
  sentence-transformers is imported, even though nothing is compiled.
- Hugging Face libraries would check the hub and send telemetry; the model is a local
  folder, so they are kept offline.

Chroma's telemetry is switched off where its clients are created (:mod:`runbook_rag.store`).
LlamaIndex's tokenizer and NLTK data ship inside its package: ``TIKTOKEN_CACHE_DIR`` and
``NLTK_DATA`` are deliberately left alone, since setting them would hide that data and make
it try to download.

Every variable is set only when it is unset: a value the user gave wins. The environment is
the process's, so the first index opened in a process decides where caches go.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

QUIET = {
    "ORT_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Each library's cache variable and its folder inside the cache directory.
CACHES = {
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TORCH_HOME": "torch",
    "HF_HOME": "huggingface",
    "SENTENCE_TRANSFORMERS_HOME": "sentence-transformers",
    "LLAMA_INDEX_CACHE_DIR": "llama_index",
}
_TORCH_CACHE = "TORCHINDUCTOR_CACHE_DIR"

# The variables set here rather than by the user: only those may be redirected.
_ours: set[str] = set()


def quiet() -> None:
    """Switch off telemetry and hub look-ups of the libraries loaded later in this process."""
    for name, value in QUIET.items():
        _set_default(name, value)


def use_cache_dir(folder: Path) -> None:
    """Point each library's cache variable at a folder inside ``folder`` (nothing is created)."""
    root = Path(folder).expanduser().absolute()
    for name, sub in CACHES.items():
        _set_default(name, str(root / sub))


def prepare_torch() -> None:
    """Make sure torch's cache folder can be created before torch is imported.

    torch creates it on import and fails when it cannot. With no cache directory given, or
    one that cannot be written (a read-only index folder), torch gets a private temporary
    folder, removed when the process exits.
    """
    wanted = os.environ.get(_TORCH_CACHE)
    if wanted is not None and _TORCH_CACHE not in _ours:
        return  # the user's own
    if wanted is not None:
        try:
            Path(wanted).mkdir(parents=True, exist_ok=True)
            return
        except OSError:
            pass
    temporary = tempfile.mkdtemp(prefix="runbook-rag-torch-")
    atexit.register(shutil.rmtree, temporary, ignore_errors=True)
    os.environ[_TORCH_CACHE] = temporary
    _ours.add(_TORCH_CACHE)


def _set_default(name: str, value: str) -> None:
    if name not in os.environ:
        os.environ[name] = value
        _ours.add(name)
