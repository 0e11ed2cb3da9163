"""The WAL checkpoint, off the request path: a thread of each committing process copies the
WAL into the database file once it holds CHECKPOINT_BYTES not yet copied.

SQLite's own checkpoint (wal_autocheckpoint) runs in the commit that takes the WAL past
its limit: that request, and the group committing with it, waits for ~8 MiB to be copied
and the file fsync'd, and so does every writer of every process queued behind it (it holds
the write lock meanwhile). A PASSIVE checkpoint on another connection holds no write lock:
the writers go on appending to the WAL while it copies, and the first writer after a
complete one starts the WAL again from its beginning. The accepting connections keep an
autocheckpoint, at BOUND_BYTES, only as the bound: should this thread fall behind (or die),
the WAL still cannot grow without limit, and is checkpointed as before.

How much the WAL holds is learnt from the checkpoints themselves: PRAGMA wal_checkpoint
answers the frames the WAL held, so the thread knows the rate at which the WAL grew and
waits for about CHECKPOINT_BYTES more before the next (only while commits come). It must not
read the WAL-index (`-shm`) file itself: closing any descriptor of that file in a process
drops every POSIX lock SQLite holds on it in that process, which corrupts the database
(https://www.sqlite.org/howtocorrupt.html, 2.2); a first version did, and the benchmark
showed "database disk image is malformed" within seconds. Several processes may each run
this thread: a checkpoint already running in another makes this one's return at once.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

# When the thread checkpoints: as SQLite's autocheckpoint did before (engine.py says why 8 MiB).
CHECKPOINT_BYTES = 8 * 1024 * 1024
# The commit that takes the WAL past this checkpoints itself (wal_autocheckpoint): the bound.
BOUND_BYTES = 4 * CHECKPOINT_BYTES
# The least and the most time between two checkpoints while commits come.
SHORTEST = 0.05
LONGEST = 10.0
# The first wait, before a rate is known.
FIRST = 1.0


class Checkpointer:
    """Started in the process that commits (gunicorn forks its workers after the master
    opened the store); told of each commit by `committed`."""

    def __init__(self, path: Path, page_size: int):
        self.path = path
        self.frames = max(1, CHECKPOINT_BYTES // page_size)
        self._pid = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.checkpoints = 0        # made by this process's thread (tests read it)

    def committed(self) -> None:
        if self._pid != os.getpid():
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._wake = threading.Event()
            threading.Thread(target=_loop, args=(weakref.ref(self), self._wake), name="outbox-checkpoint",
                             daemon=True).start()

    def checkpoint(self) -> int:
        """One PASSIVE checkpoint on a connection of its own, opened for it: it copies what
        no reader still needs, takes no write lock, and returns at once if another runs.
        The frames the WAL held (-1 if unknown)."""
        # mode=rw: a file gone meanwhile (a test's, removed) is not made again, empty.
        conn = sqlite3.connect(f"{Path(self.path).resolve().as_uri()}?mode=rw", uri=True, timeout=0,
                               isolation_level=None)
        try:
            _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
            return frames
        finally:
            conn.close()

    def next_wait(self, frames: int, elapsed: float) -> float:
        """How long to let the WAL grow before the next checkpoint, at the rate it grew."""
        if frames <= 0 or elapsed <= 0:
            return LONGEST if frames == 0 else FIRST
        return min(LONGEST, max(SHORTEST, self.frames * elapsed / frames))


def _loop(me: weakref.ref, wake: threading.Event) -> None:
    """Wait for a commit; checkpoint when the WAL should hold CHECKPOINT_BYTES by now;
    ends when the Checkpointer is gone."""
    wait, last = FIRST, time.monotonic()
    while True:
        if not wake.wait(1.0):
            if me() is None:
                return
            continue
        time.sleep(max(0.0, last + wait - time.monotonic()))
        wake.clear()        # commits from now on count towards the next one
        checkpointer = me()
        if checkpointer is None:
            return
        now = time.monotonic()
        try:
            frames = checkpointer.checkpoint()
        except sqlite3.Error:
            frames = -1     # busy or failing: the bound (wal_autocheckpoint) still holds
        wait, last = checkpointer.next_wait(frames, now - last), now
        del checkpointer
