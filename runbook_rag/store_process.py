"""A new local generation's store, written by a process of its own.

Chroma's embedded client holds the GIL for the whole of a write (about 0.4 s per 512 chunks),
so in a build the encoder's threads, which need it between texts, would stall behind every
write. :class:`StoreProcess` offers the calls a build makes of a new store (``add``,
``vectors``, ``close``) and runs them in a child process: the writes then take their share
of the cores without stopping the encoder.

The child reads requests from its standard input and answers on its standard output, in
order, one at a time; when the parent goes away (even killed), its input ends and it closes
the store and exits. What it writes is the unpublished generation's folder only.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from .errors import IndexStateError
from .records import Chunk

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


class StoreProcess:
    """A new store at ``path`` (created, as ``ChromaStore(path, create=True)`` creates it),
    written by a child process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self._child: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", __name__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            reason = f"cannot start the store's writer: {exc.strerror or exc}"
            raise IndexStateError(reason, path=path) from exc
        self._call("open", str(path))

    def add(self, chunks: Sequence[Chunk], embeddings: Any, keys: Sequence[str]) -> None:
        """Write chunks with their vectors and content keys (see :meth:`ChromaStore.add`)."""
        import numpy as np

        self._call("add", list(chunks), np.asarray(embeddings, dtype=np.float32), list(keys))

    def vectors(self, ids: Sequence[str]) -> Any:
        """The stored vectors of ``ids``, in order (see :meth:`ChromaStore.vectors`)."""
        return self._call("vectors", list(ids))

    def close(self) -> None:
        """Close the store (Chroma finishes its files) and let the child exit; closing again,
        or after the child failed, does nothing."""
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return
        try:
            if child.poll() is None:
                self._send(child, ("close", ()))
                self._receive(child)
        finally:
            _stop(child)

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            child = self._child
            if child is None:
                raise IndexStateError("the store's writer is closed", path=self.path)
            try:
                self._send(child, (op, args))
                return self._receive(child)
            except BaseException:
                # Failed, or interrupted mid-call: the generation is being given up.
                self._child = None
                _stop(child, kill=True)
                raise

    def _send(self, child: subprocess.Popen[bytes], request: tuple[str, tuple[Any, ...]]) -> None:
        assert child.stdin is not None
        try:
            pickle.dump(request, child.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            child.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._gone(child) from None

    def _receive(self, child: subprocess.Popen[bytes]) -> Any:
        assert child.stdout is not None
        try:
            ok, result = pickle.load(child.stdout)
        except (EOFError, OSError, pickle.UnpicklingError):
            raise self._gone(child) from None
        if not ok:
            raise IndexStateError(f"writing the vector store failed: {result}", path=self.path)
        return result

    def _gone(self, child: subprocess.Popen[bytes]) -> IndexStateError:
        try:
            code = child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return IndexStateError(f"the store's writer stopped (exit status {code})", path=self.path)


def _stop(child: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """End the child: its input closed, it closes the store and exits (or, with ``kill``, at once)."""
    if kill:
        with contextlib.suppress(OSError):
            child.kill()
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """Answer requests until ``close`` or the end of input."""
    from .store import ChromaStore

    store: ChromaStore | None = None
    try:
        while True:
            try:
                op, args = pickle.load(requests)
            except EOFError:
                return
            try:
                if op == "open":
                    store = ChromaStore(Path(args[0]), create=True)
                    result: Any = None
                elif store is None:
                    raise ValueError("the store is not open")
                elif op == "add":
                    store.add(*args)
                    result = None
                elif op == "vectors":
                    result = store.vectors(*args)
                elif op == "close":
                    store.close()
                    store = None
                    result = None
                else:
                    raise ValueError(f"unknown request {op!r}")
                answer: tuple[bool, Any] = (True, result)
            except Exception as exc:  # handed to the parent, which raises it
                answer = (False, str(exc) or type(exc).__name__)
            pickle.dump(answer, answers, protocol=pickle.HIGHEST_PROTOCOL)
            answers.flush()
            if op == "close":
                return
    finally:
        if store is not None:
            store.close()


def main() -> None:
    # An interrupt at a terminal reaches the whole process group: the parent decides, and
    # this process ends when the parent's requests do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The answers go to a private copy of standard output; anything else printed goes to
    # standard error, so that it cannot corrupt them.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
