"""SQLite as the outbox uses it: one connection per thread, one writer at a time, group commit.

Every method of the outbox is one short transaction on this thread's own connection
(sqlite3 connections must not cross threads). Failures raise StorageError with the
reason. Concurrent accepts share one commit (GroupCommit). How an accept's commit is
made durable depends on storage.sync:

    always    synchronous=FULL: the WAL is fsync'd at the commit, on disk before the
              webhook is answered.
    interval  synchronous=NORMAL: the commit is in the WAL file in the operating system's
              page cache before the answer, so it survives a kill -9 or crash of the bridge
              (the OS writes it out), and this process's Syncer fdatasyncs the WAL file
              every sync_interval after a commit, so a power loss of the host loses at most
              that window. WAL mode with NORMAL never corrupts the file: a power loss only
              undoes the last transactions, whole.

The senders' bookkeeping uses NORMAL in both modes: it survives a killed process and at
worst repeats a send after a power cut.

Group commit (concurrent accepts sharing one transaction) is group.py's.

SQLite has one writer for the whole file: BEGIN IMMEDIATE takes it, so every write
transaction, in every process, runs alone. The queue semantics in outbox.py rely on
that (see bridge.store.Outbox for what a backend without it must do instead).
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from ...errors import StorageError
from .checkpoint import BOUND_BYTES, Checkpointer

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
# The WAL is copied into the file once it holds checkpoint.CHECKPOINT_BYTES (8 MiB), by a
# thread of its own (checkpoint.py), not by a commit. A page changed by many commits between
# two checkpoints is copied once: SQLite's default, 1000 pages (1 MiB with 1 KiB pages),
# copied the same index pages over and over. bench/accept.py: 10.3 -> 7.9 KiB written per
# webhook (always), 9.7 -> 6.9 (interval), the rates unchanged. Crash recovery reads at most
# BOUND_BYTES.
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
                 prepare: Callable[[sqlite3.Connection, float], None], sync_interval: float | None = None):
        """sync_interval: None for storage.sync always (a durable write is on disk at its
        commit), else the seconds within which a durable write reaches the disk."""
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._prepare = prepare
        self.syncer = Syncer(Path(f"{self.path}-wal"), sync_interval) if sync_interval is not None else None
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()
        self.checkpointer: Checkpointer | None = None      # once the page size is known
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
        deadline = time.monotonic() + self.busy_timeout

        def setting(sql: str) -> Any:
            # Even a PRAGMA may read the file's header or schema, which needs a shared lock
            # that another process starting at the same moment can hold off (its switch to
            # WAL, its schema check): each waits, as _prepare's statements do.
            return patiently(lambda: conn.execute(sql).fetchone(), deadline)

        try:
            setting(f"PRAGMA cache_size = -{CACHE_KIB}")
            # Off by default in SQLite, per connection: messages.payload must name a
            # payload that exists (prune relies on it, and so would any other database).
            setting("PRAGMA foreign_keys = ON")
            with self._ready_lock:
                if not self._ready:
                    self._prepare(conn, deadline)
                    self._ready = True
            page = setting("PRAGMA page_size")[0]     # known once the file is made
            setting(f"PRAGMA wal_autocheckpoint = {max(1000, BOUND_BYTES // page)}")
            with self._ready_lock:
                if self.checkpointer is None:
                    self.checkpointer = Checkpointer(self.path, page)
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
            full = durable and self.syncer is None
            if full != self._local.durable:
                conn.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
                self._local.durable = full
            deadline = time.monotonic() + self.busy_timeout
            if not self._write_lock.acquire(timeout=self.busy_timeout):
                raise sqlite3.OperationalError("database is locked (by this process's other writers)")
            try:
                patiently(lambda: conn.execute("BEGIN IMMEDIATE"), deadline)
                try:
                    yield conn
                    patiently(lambda: conn.execute("COMMIT"), deadline)
                    if self.checkpointer is not None:
                        self.checkpointer.committed()
                    if durable and self.syncer is not None:
                        self.syncer.committed()
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


class Syncer:
    """storage.sync: interval. A thread of each process that committed durable writes
    fdatasyncs the WAL file at most `interval` seconds after each such commit.

    fdatasync of the WAL file is what FULL would have done at the commit (a checkpoint
    syncs the WAL too before copying it into the database, and the database after). The
    file is opened afresh each time: SQLite may delete the WAL when its last connection
    closes (after a checkpoint, which synced it). The thread is started in the process
    that commits (gunicorn forks workers after the master opened the store) and at exit
    the last window is synced too."""

    def __init__(self, wal: Path, interval: float):
        self.wal = wal
        self.interval = interval
        self._dirty = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()
        self.syncs = 0          # fdatasyncs made by this process (tests and the benchmark read it)

    def committed(self) -> None:
        if self._pid != os.getpid():
            self._start()
        self._dirty.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._dirty = threading.Event()
            me = weakref.ref(self)
            threading.Thread(target=_sync_loop, args=(me, self._dirty, self.interval), name="outbox-sync",
                             daemon=True).start()
            atexit_sync(me)

    def sync_now(self) -> None:
        """fdatasync the WAL file now (nothing to do when there is none: it was checkpointed
        and deleted, which synced it)."""
        try:
            fd = os.open(self.wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fdatasync(fd)
            self.syncs += 1
        finally:
            os.close(fd)


def _sync_loop(syncer: weakref.ref, dirty: threading.Event, interval: float) -> None:
    """Wait for a commit, let the window fill, sync it; ends when the Syncer is gone."""
    while True:
        if not dirty.wait(1.0):
            if syncer() is None:
                return
            continue
        time.sleep(interval)
        dirty.clear()       # before the sync: a commit from now on waits for the next one
        me = syncer()
        if me is None:
            return
        try:
            me.sync_now()
        except OSError:     # the disk is failing: the next commit fails as well, and says so
            dirty.set()
        del me


def atexit_sync(syncer: weakref.ref) -> None:
    """On a clean exit the window left is synced too (a kill -9 leaves it to the OS)."""
    def last() -> None:
        me = syncer()
        if me is not None and me._dirty.is_set():
            me.sync_now()

    atexit.register(last)
