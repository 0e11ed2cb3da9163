"""Group commit: concurrent accepts of one process share one SQLite transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar

from ...errors import StorageError
from .engine import Engine

# The longest the first of a group waits for the next call (GroupCommit): under steady
# load, about the time between calls, when that is shorter than this.
COMMIT_DELAY = 0.002
# It waits in steps of this, and stops after a step in which no call came.
COMMIT_STEP = 0.0003
# ... and only while more than this share of the recent commits held several calls.
SHARED = 0.1
# ... and stops once the queue holds as many calls as the largest of the last RECENT
# commits did: then every thread of the process that commits is likely in it already,
# and nobody else is coming.
RECENT = 32
FULL = True
T = TypeVar("T")


@dataclass
class _Job(Generic[T]):
    work: Callable[[sqlite3.Connection], T]
    result: Any = None
    error: StorageError | None = None
    done: bool = False
    led: bool = False       # this job's thread made the commit (for the others too)


class GroupCommit:
    """Group commit: the calls arriving while a commit is under way are written together
    in the next transaction, so concurrent requests share one fsync instead of queueing
    for one each. Each call still gets its own answer.

    Under a steady stream of concurrent calls the one that will commit first waits a little
    for the next (commit_delay, as PostgreSQL's): about the time between calls of late,
    never more than COMMIT_DELAY, and only while commits are shared now and then (calls
    do overlap: one client posting one request after another never waits for itself). Every commit writes the pages it touches whole (the page
    header, the right edges of the indexes), whatever it holds, so one of two webhooks
    writes about half of what two of one do, and costs one BEGIN/COMMIT instead of two.
    When calls are far apart (any real alert rate) nobody waits."""

    def __init__(self, engine: Engine, doing: str, commit_delay: float = 0.0):
        self.engine = engine
        self.doing = doing
        self.commit_delay = commit_delay
        self._group = threading.Condition()
        self._queue: list[_Job] = []
        self._committing = False
        self._last = 0.0                 # when the last call came (monotonic)
        self._gap = float("inf")         # the time between calls, averaged (EWMA)
        self._shared = 0.0               # how often commits held more than one call (EWMA)
        self._sizes: deque[int] = deque(maxlen=RECENT)   # the calls of the last commits

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(conn)` inside a durable write transaction shared with concurrent calls;
        its result once committed (on disk)."""
        return self.run_job(work).result

    def run_job(self, work: Callable[[sqlite3.Connection], T]) -> _Job[T]:
        """As run, but the finished job: its result, and whether it led the commit."""
        job = _Job(work)
        with self._group:
            now = time.monotonic()
            self._gap = min(now - self._last, 1.0) if self._gap == float("inf") else \
                0.8 * self._gap + 0.2 * min(now - self._last, 1.0)
            self._last = now
            self._queue.append(job)
            deadline = time.monotonic() + 2 * self.engine.busy_timeout
            while not job.done and self._committing:
                if not self._group.wait(max(0.0, deadline - time.monotonic())):
                    if job in self._queue:
                        self._queue.remove(job)
                    # Else a commit under way has it: if that succeeds after all, the
                    # sender's retry of this 503 is dropped as a duplicate.
                    raise StorageError(f"cannot {self.doing} the outbox {self.engine.path}: timed out")
            if not job.done:
                self._committing = True
                delay = self._gap if self._shared > SHARED and self._gap < self.commit_delay else 0.0
        if not job.done:
            job.led = True
            if delay:
                self._wait_for_more(time.monotonic() + delay)
            with self._group:
                jobs, self._queue = self._queue, []
                self._shared = 0.9 * self._shared + 0.1 * (len(jobs) > 1)
                self._sizes.append(len(jobs))
            self._commit(jobs)
        if job.error is not None:
            raise job.error
        return job

    def _wait_for_more(self, deadline: float) -> None:
        """Sleep (the lock released: the next calls join the queue) while calls keep
        coming, until `deadline`: a step with none means the others are not near; a queue
        as long as the largest recent group means they are all here."""
        with self._group:
            full = max(self._sizes, default=0) if FULL else 0
        while True:
            with self._group:
                queued = len(self._queue)
            left = deadline - time.monotonic()
            if left <= 0 or 1 < full <= queued:
                return
            time.sleep(min(COMMIT_STEP, left))
            with self._group:
                if len(self._queue) == queued:
                    return

    def _commit(self, jobs: list[_Job]) -> None:
        error: StorageError | None = None
        try:
            with self.engine.write(self.doing, durable=True) as conn:
                for job in jobs:
                    job.result = job.work(conn)
        except StorageError as exc:
            error = exc
        except BaseException as exc:   # a bug: every job in the group learns of it
            error = StorageError(f"cannot {self.doing} the outbox {self.engine.path}: {exc!r}")
            raise
        finally:
            with self._group:
                for job in jobs:
                    job.error, job.done = error, True
                self._committing = False
                self._group.notify_all()
