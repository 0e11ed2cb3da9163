"""Whether this process could store a webhook the last time it tried: for /-/ready.

The store's own probe (`writable_problem`) sees a lock or a read-only file, but not every
failure a real write meets: with the disk full, a probe that writes nothing passed while
every webhook was answered 503, so Kubernetes kept sending traffic to a pod that could
store none of it. A failed store is therefore remembered until a later one succeeds, or
until FORGET_AFTER passes with no webhook to tell (then the next one tells again).
"""

from __future__ import annotations

from ..clock import Clock

# Long enough to span Alertmanager's retries of a refused webhook (10 s and up), short
# enough that a pod with no traffic does not stay unready for a failure long gone.
FORGET_AFTER = 60.0


class WriteHealth:
    def __init__(self, clock: Clock):
        self._clock = clock
        # (when, why) of the last failed store since the last success; one tuple, replaced
        # whole, so a reader in another thread never sees half of it.
        self._failure: tuple[float, str] | None = None

    def stored(self) -> None:
        self._failure = None

    def failed(self, reason: str) -> None:
        self._failure = (self._clock.now(), reason)

    def problem(self) -> str | None:
        failure = self._failure
        if failure is None or self._clock.now() - failure[0] > FORGET_AFTER:
            return None
        return f"the last webhook could not be stored: {failure[1]}"
