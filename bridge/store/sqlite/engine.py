"""SQLite as the outbox uses it: one connection per thread, one writer at a time, group commit.

Every method of the outbox is one short transaction on this thread's own connection
(sqlite3 connections must not cross threads). Failures raise StorageError with the
reason. Accepted messages are committed with synchronous=FULL (on disk before the
webhook is answered; concurrent accepts share one commit); the senders' bookkeeping
uses NORMAL, which survives a killed process and at worst repeats a send after a
power cut.

SQLite has one writer for the whole file: BEGIN IMMEDIATE takes it, so every write
transaction, in every process, runs alone. The queue semantics in outbox.py rely on
that (see bridge.store.Outbox for what a backend without it must do instead).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from ...errors import StorageError

# A writer waits this long for another's lock before giving up: short, because the HTTP
# handler is waiting too and answers 503 (Alertmanager then retries) rather than hang.
BUSY_TIMEOUT = 3.0
# SQLite's own busy handler sleeps in growing steps (up to 100 ms) while it waits for a
# lock, which made the slowest accepts wait ~1 s under load. Polling in steps this short
# hands the lock over promptly; only one thread of each other process ever waits this way
# (its group committer). A commit takes ~0.5 ms (fsync), so a 1 ms step left the other
# worker idle for longer than the commit it waited for: 0.2 ms gave ~13% more accepts/s.
LOCK_POLL = 0.0002
# Page cache per connection, in KiB. Every handler thread has its own connection, and
# SQLite's default (2 MiB each) grew a worker by several MiB for lookups that touch a
# handful of index pages; the OS page cache holds the file anyway.
CACHE_KIB = 256
# How often wait_for_change looks: the idle latency when the accepting process is not
# the sender. A PRAGMA is microseconds.
CHANGE_POLL = 0.025

T = TypeVar("T")


def patiently(action: Callable[[], T], deadline: float) -> T:
    """Run `action`, again every LOCK_POLL while the database is locked, until `deadline`."""
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY   # extended codes too
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_POLL)


class Engine:
    """The connections to one SQLite file. `prepare(conn, deadline)` runs once per
    process, on the first connection: it creates or migrates the schema.

    Lock waits are measured in real time (time.monotonic), not on the outbox's clock:
    they wait for another process, which a test's clock does not step."""

    def __init__(self, path: str | Path, *, busy_timeout: float,
                 prepare: Callable[[sqlite3.Connection, float], None]):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._prepare = prepare
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()
        # This process's writers queue here (woken at once, in turn) rather than in SQLite.
        self._write_lock = threading.Lock()

    # -- connections ------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn, self._local.durable, self._local.version = conn, None, None
        return conn

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: each method says BEGIN IMMEDIATE itself, so a writer takes the
        # lock up front instead of failing half-way on an upgrade from a read.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)   # we wait ourselves: LOCK_POLL
        try:
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # Off by default in SQLite, per connection: messages.payload must name a
            # payload that exists (prune relies on it, and so would any other database).
            conn.execute("PRAGMA foreign_keys = ON")
            with self._ready_lock:
                if not self._ready:
                    self._prepare(conn, time.monotonic() + self.busy_timeout)
                    self._ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self) -> None:
        """Create the file and its tables now, so a bad path shows at start-up."""
        with self.storage("open"):
            self.conn()

    def close(self) -> None:
        """Close this thread's connection (each thread closes its own)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    # -- transactions -----------------------------------------------------------------
    @contextmanager
    def storage(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot {doing} the outbox {self.path}: {exc}") from exc

    @contextmanager
    def write(self, doing: str, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction. `durable`: on disk at commit, even through a power cut.
        Otherwise it survives a crash of the process (WAL in the page cache), and a power cut
        may undo it: for sender bookkeeping that only means a message is sent again."""
        with self.storage(doing):
            conn = self.conn()
            if durable != self._local.durable:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._local.durable = durable
            deadline = time.monotonic() + self.busy_timeout
            if not self._write_lock.acquire(timeout=self.busy_timeout):
                raise sqlite3.OperationalError("database is locked (by this process's other writers)")
            try:
                patiently(lambda: conn.execute("BEGIN IMMEDIATE"), deadline)
                try:
                    yield conn
                    patiently(lambda: conn.execute("COMMIT"), deadline)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                self._write_lock.release()

    def read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.storage("read"):
            conn = self.conn()
            return patiently(lambda: conn.execute(sql, args).fetchall(), time.monotonic() + self.busy_timeout)

    # -- changes by others ------------------------------------------------------------
    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "anything new?"."""
        return self.read("PRAGMA data_version")[0][0]

    def wait_for_change(self, timeout: float) -> bool:
        """True once another connection has committed since this thread last asked;
        False after `timeout` seconds. The first call on a thread (or after close) only
        notes where things stand, so it reports commits made while it waits."""
        deadline = time.monotonic() + timeout
        while True:
            # data_version is per connection: read it first, so a fresh one resets `seen`.
            version = self.data_version()
            seen = self._local.version
            self._local.version = version
            if seen is not None and version != seen:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(CHANGE_POLL, left))


@dataclass
class _Job(Generic[T]):
    work: Callable[[sqlite3.Connection], T]
    result: Any = None
    error: StorageError | None = None
    done: bool = False


class GroupCommit:
    """Group commit: the calls arriving while a commit is under way are written together
    in the next transaction, so concurrent requests share one fsync instead of queueing
    for one each. Each call still gets its own answer."""

    def __init__(self, engine: Engine, doing: str):
        self.engine = engine
        self.doing = doing
        self._group = threading.Condition()
        self._queue: list[_Job] = []
        self._committing = False

    def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(conn)` inside a durable write transaction shared with concurrent calls;
        its result once committed (on disk)."""
        job = _Job(work)
        with self._group:
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
                jobs, self._queue = self._queue, []
        if not job.done:
            self._commit(jobs)
        if job.error is not None:
            raise job.error
        return job.result

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
