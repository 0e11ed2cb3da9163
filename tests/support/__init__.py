"""Helpers shared by the tests: one of each, instead of a copy per file."""

from __future__ import annotations

import socket
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float, what: str | Callable[[], str], *,
               step: float = 0.05) -> T:
    """Poll `check` until it returns something truthy, and return that; fail after `timeout`
    seconds saying `what` was awaited (a callable is asked only then, with the latest state)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what() if callable(what) else what}")
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
