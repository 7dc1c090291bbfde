"""Waiting in tests for something another process or thread does: poll until true or a generous deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    """True as soon as ``predicate()`` is; False once ``timeout`` seconds passed without it (a liveness bound)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
