"""A clock that moves only when a test says so."""

from __future__ import annotations

import threading


class FakeClock:
    """bridge.clock.Clock for tests: `advance(seconds)` moves wall and monotonic time together.

    Its wall time starts in 1970, far from the real one: code that reads the real clock
    where it should read this one is off by decades, and fails its test. Small numbers
    also keep float sums exact to the microsecond (around 1.8e9 the step is 2.4e-7 s)."""

    def __init__(self, start: float = 1_000_000.0):
        self._lock = threading.Lock()
        self._now = start
        self._monotonic = 1_000.0

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += seconds
            self._monotonic += seconds
