"""A process's outbox watcher: it notices messages other processes accepted, keeps this
process's leases alive and prunes old rows.

Every POLL_INTERVAL at most it learns from the outbox whether another connection has
committed (`wait_for_change`) and if so wakes the senders, so a message accepted by
another process is picked up within about POLL_INTERVAL; one accepted here, at once
(the accept service wakes them itself). It renews the leases every LEASE_RENEW and prunes
every PRUNE_EVERY.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from ..clock import Clock
from ..store import LEASE_RENEW, LEASE_TTL

if TYPE_CHECKING:
    from ..store import Outbox

# How often a process looks for messages other processes accepted: the idle latency
# when the accepting process is not the sender. A PRAGMA is microseconds.
POLL_INTERVAL = 0.025
PRUNE_EVERY = 60.0


class Watcher:
    def __init__(self, outbox: Outbox, owner: str, *, clock: Clock, wake: Callable[[], None],
                 holding: Callable[[], bool], kept: Callable[[], float],
                 failed: Callable[[str | None, Exception, str], str],
                 recovered: Callable[[str | None, str], None]):
        self.outbox = outbox
        self.owner = owner
        self.clock = clock
        self.wake = wake                  # new messages may be waiting
        self.holding = holding            # does this process hold any bot's lease?
        self.kept = kept                  # how long sent rows are kept (delivery.dedupe_window)
        self.failed = failed
        self.recovered = recovered
        self._renewed = self._pruned = None

    def run(self, stop: threading.Event) -> None:
        failure = None
        while not stop.is_set():
            try:
                self.step()
                failure = self.recovered(failure, "watcher")
            except Exception as exc:  # the watcher must outlive any error: it keeps the leases
                failure = self.failed(failure, exc, "watcher")
                stop.wait(POLL_INTERVAL)   # wait_for_change may have failed at once: never spin
        self.outbox.close()

    def step(self) -> None:
        """Wait up to POLL_INTERVAL for news; then renew and prune when due."""
        if self.outbox.wait_for_change(POLL_INTERVAL):
            self.wake()
        now = self.clock.monotonic()
        if self.holding() and (self._renewed is None or now - self._renewed >= LEASE_RENEW):
            self.outbox.renew(self.owner, LEASE_TTL)
            self._renewed = now
        if self._pruned is None or now - self._pruned >= PRUNE_EVERY:
            # Sent rows are kept only as long as deduplication looks back.
            self.outbox.prune(self.clock.now() - self.kept())
            self._pruned = now
