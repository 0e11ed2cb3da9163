"""The one clock: wall time for what is stored and compared across processes, monotonic
time for measuring intervals within one.

Everything that reads the time takes a Clock, so the store and delivery agree on what
"now" is and tests can step time instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch: what leases, send windows and message ages are stored in."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back: for intervals in this process."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK = SystemClock()
