"""The database's clock, read from a replica: what leases, send windows and dedupe
windows are measured on, so that replicas whose own clocks disagree still agree.

The outbox's statements read the time inside the database (`clock_timestamp()`). A
sender also compares stored times with "now" in Python (its pacing, a retry's pause):
`DatabaseClock.now()` is the database's time as last measured, carried forward on this
process's monotonic clock, measured again every RESYNC seconds. Its error is half a
round trip to the database: well inside the pacing's slack (delivery.pacing.EDGE_SLACK).
"""

from __future__ import annotations

import threading
from typing import Callable

from ...clock import SYSTEM_CLOCK, Clock

RESYNC = 30.0
# After a failed measurement, try again no sooner than this (the database may be away;
# every caller of now() must not wait for it).
RETRY_AFTER = 5.0


class DatabaseClock:
    """bridge.clock.Clock whose wall time is the database's. `measure()` returns the
    database's time (seconds since the epoch) or raises; until the first measurement
    succeeds, the local clock stands in."""

    def __init__(self, measure: Callable[[], float], *, local: Clock = SYSTEM_CLOCK):
        self._measure = measure
        self._local = local
        self._lock = threading.Lock()
        self._offset = 0.0           # database time - local monotonic time, at the last measurement
        self._synced = False
        self._next = float("-inf")   # local monotonic time of the next measurement

    def now(self) -> float:
        mono = self._local.monotonic()
        if mono >= self._next and self._lock.acquire(blocking=False):
            try:
                self._sync(mono)
            finally:
                self._lock.release()
        if not self._synced:
            return self._local.now()
        return mono + self._offset

    def monotonic(self) -> float:
        return self._local.monotonic()

    def _sync(self, mono: float) -> None:
        try:
            before = self._local.monotonic()
            database = self._measure()
            after = self._local.monotonic()
        except Exception:   # the database is away: keep the last offset, try later
            self._next = mono + RETRY_AFTER
            return
        self._offset = database - (before + after) / 2
        self._synced = True
        self._next = after + RESYNC
