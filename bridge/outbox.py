"""Moved: the interface is bridge.store, the SQLite backend bridge.store.sqlite."""
# MERGE-SHIM: this whole module; imports move to bridge.store / bridge.store.sqlite.

from __future__ import annotations

import time
from pathlib import Path

from .clock import SYSTEM_CLOCK, Clock
from .store import LEASE_RENEW, LEASE_TTL, SENDS_KEPT  # noqa: F401
from .store.records import (DEAD, PENDING, SENDING, SENT, SUPERSEDED, WAITING, BotState, Entry,  # noqa: F401
                            Head, LeaseLost, OutgoingMessage, Stored, Takeover)
from .store.sqlite import BUSY_TIMEOUT, SqliteOutbox
from .store.sqlite.outbox import PRUNE_BATCH  # noqa: F401


class Outbox(SqliteOutbox):
    # MERGE-SHIM: becomes `Outbox = SqliteOutbox` once tests/test_delivery.py passes a Clock
    # (it passes a bare callable, as the outbox took before).
    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT, clock: Clock = SYSTEM_CLOCK):
        super().__init__(path, busy_timeout=busy_timeout, clock=clock if hasattr(clock, "now") else _Called(clock))


class _Called:
    # MERGE-SHIM: goes with Outbox above.
    def __init__(self, now):
        self.now = now

    def monotonic(self) -> float:
        return time.monotonic()
