"""Waiting for events in tests: the event itself is checked, under one generous deadline.

A test never sleeps for a guessed time and then looks: it polls the condition it needs
until it holds, or fails after ``WAIT`` seconds saying what it waited for. The deadline is
far above what anything here takes, so a loaded machine only makes a test slower.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT = 120.0


def wait_until(condition: Callable[[], T], what: str, *, timeout: float = WAIT, interval: float = 0.05) -> T:
    """The condition's first true value, polled until it holds; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}, in vain")
        time.sleep(interval)


def join(thread: threading.Thread, what: str, *, timeout: float = WAIT) -> None:
    """Wait for a thread to end; fail, naming it, if it is still running after ``timeout`` s."""
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"waited {timeout:g} s for {what} to finish, in vain")


def wait_exit(proc: subprocess.Popen[bytes], what: str, *, timeout: float = WAIT) -> int:
    """A process's exit code once it ends; killed and failed if it is still running after ``timeout`` s."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"waited {timeout:g} s for {what} to exit, in vain") from None
