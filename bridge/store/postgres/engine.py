"""PostgreSQL as the outbox uses it: a pool of connections per process, short
transactions, errors without secrets, and LISTEN for other processes' commits.

Every connection is set up the same way (`_setup`): the schema on the search path,
synchronous commit on (a webhook is answered 200 only once its messages are durable, on
the primary and on any synchronous standby; off with storage.sync interval, see _setup), and short statement and lock timeouts, so
that a database that is stuck answers the HTTP handler with an error (503) within
seconds instead of holding it.

The pool (psycopg_pool) reconnects by itself after a restart or a failover: a
connection found broken is replaced (`run` moves on to another when one fails at BEGIN),
and new ones are opened in the background with backoff while the database is away.
"""

from __future__ import annotations

import logging
import threading
import zlib
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ...config import PostgresConfig
from ...errors import StorageError

T = TypeVar("T")

# How long a statement, a lock wait, and the wait for a pooled connection may take: the
# HTTP handler is waiting, and answers 503 after them (Alertmanager then retries).
STATEMENT_TIMEOUT = 5.0
LOCK_TIMEOUT = 3.0
CONNECT_TIMEOUT = 3.0
# A transaction that failed on a serialization failure or a deadlock ran nothing: it is
# run again, this many times in all.
ATTEMPTS = 3
# libpq's keepalives, so that a connection to a host that vanished (a failover, a node
# lost) fails within seconds instead of waiting for the kernel's two hours.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 2,
               "tcp_user_timeout": 10_000}
APPLICATION = "feishu-alert-bridge"

_RETRYABLE = (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)


def lock_namespace(schema: str) -> int:
    """The first key of every advisory lock the bridge takes (a signed 32-bit int): one
    per schema, so two bridges in two schemas of one database never wait for each other."""
    return zlib.crc32(schema.encode()) - 2**31


def lock_key(name: str) -> int:
    """The second key: a bot's name (or a fixed name such as "prune"), as a 32-bit int.
    Two names may share a key; they then merely wait for each other."""
    return zlib.crc32(name.encode()) - 2**31


class Engine:
    """The connections to one database and schema. `prepare(conn)` runs once per process,
    before the first transaction: it creates or migrates the schema."""

    def __init__(self, config: PostgresConfig, *, prepare: Callable[[psycopg.Connection], None],
                 sync_commit: bool = True):
        """sync_commit: storage.sync always (True) or interval (False): see `_setup`."""
        self.config = config
        self.sync_commit = sync_commit
        self.schema = config.schema
        self.namespace = lock_namespace(config.schema)
        self.channel = f"{config.schema}_changes"
        self._prepare = prepare
        self._ready = False
        self._ready_lock = threading.Lock()
        self._local = threading.local()
        self._secrets = [s for s in (config.password.reveal() if config.password else None,
                                     _dsn_password(config.dsn.reveal())) if s]
        self.pool = ConnectionPool(config.dsn.reveal(), kwargs=self.connect_kwargs(), min_size=1,
                                   max_size=config.pool_size, open=False, configure=self._setup,
                                   timeout=CONNECT_TIMEOUT,
                                   name=f"bridge-{config.schema}")
        self._opened = False
        self._open_lock = threading.Lock()

    def describe(self) -> str:
        return f"postgres {self.config.dsn} schema={self.schema}"

    def connect_kwargs(self) -> dict:
        kwargs: dict = {"connect_timeout": int(CONNECT_TIMEOUT), "application_name": APPLICATION}
        given = psycopg.conninfo.conninfo_to_dict(self.config.dsn.reveal())
        kwargs.update({k: v for k, v in _KEEPALIVES.items() if k not in given})
        if self.config.password is not None:
            kwargs["password"] = self.config.password.reveal()
        return kwargs

    def _setup(self, conn: psycopg.Connection) -> None:
        """storage.sync interval turns synchronous_commit off for the whole session: a commit
        returns once it is in the server's WAL buffers (it survives the bridge's crash, and
        its effects are visible to every replica at once), and the server's WAL writer puts
        it on disk within 3 x wal_writer_delay (200 ms by default); a crash of the database
        server or its host loses at most that window, never corrupts. Per session rather
        than per accept: a SET LOCAL would cost each accept a round trip, and the senders'
        bookkeeping is allowed the same (a lost record only repeats a send)."""
        conn.autocommit = True     # transactions are explicit (`transaction` below)
        conn.execute(f"SET search_path TO {self.schema};"
                     f" SET synchronous_commit TO {'on' if self.sync_commit else 'off'};"
                     f" SET statement_timeout TO {int(STATEMENT_TIMEOUT * 1000)};"
                     f" SET lock_timeout TO {int(LOCK_TIMEOUT * 1000)};"
                     " SET idle_in_transaction_session_timeout TO 60000")

    # -- errors -------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """`text` with any password replaced: libpq's messages do not quote it, but a
        message that ever did must not carry it into a log or an HTTP answer."""
        for secret in self._secrets:
            text = text.replace(secret, "<secret>")
        return text

    @contextmanager
    def storage(self, doing: str) -> Iterator[None]:
        try:
            yield
        except StorageError:
            raise
        except PoolTimeout as exc:
            raise StorageError(f"cannot {doing} the outbox ({self.describe()}): no database connection within "
                               f"{CONNECT_TIMEOUT:g}s") from exc
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StorageError(f"cannot {doing} the outbox ({self.describe()}): {self.scrub(first)}") from exc

    def why_not_connected(self) -> str:
        """Why the pool has no connection: one direct attempt, for /-/ready's reason (not
        on every failed request: a host that does not answer would double its wait)."""
        try:
            psycopg.connect(self.config.dsn.reveal(), **self.connect_kwargs()).close()
        except psycopg.Error as exc:
            return f" ({self.scrub(' '.join(str(exc).split()))})"
        return ""

    # -- lifecycle ----------------------------------------------------------------------
    def open(self) -> None:
        """Start the pool and prepare the schema now; raises StorageError if the database
        cannot be reached (the pool keeps trying: the next call may succeed)."""
        with self.storage("open"):
            self._ensure_open()
            with self.pool.connection() as conn:
                self._ensure_ready(conn)

    def _ensure_open(self) -> None:
        with self._open_lock:
            if not self._opened:
                self.pool.open(wait=False)
                self._opened = True

    def _ensure_ready(self, conn: psycopg.Connection) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                self._prepare(conn)
                self._ready = True

    def close(self) -> None:
        """Let go of this thread's listening connection (the pool stays for the others)."""
        listener = getattr(self._local, "listener", None)
        if listener is not None:
            self._local.listener = None
            listener.close()

    def shutdown(self) -> None:
        self.close()
        with self._open_lock:
            if self._opened:
                self.pool.close()
                self._opened = False

    # -- transactions -------------------------------------------------------------------
    def run(self, doing: str, work: Callable[[psycopg.Connection], T], *, notify: bool = False) -> T:
        """`work(conn)` in one transaction, committed on return (and then, with `notify`,
        announced to the listeners). Run again after a serialization failure or a
        deadlock: it was rolled back, nothing happened."""
        with self.storage(doing):
            self._ensure_open()
            for attempt in range(1, ATTEMPTS + self.config.pool_size + 1):
                with self.pool.connection() as conn:
                    self._ensure_ready(conn)
                    begun = False
                    try:
                        with conn.transaction():
                            begun = True
                            result = work(conn)
                    except _RETRYABLE:
                        if attempt >= ATTEMPTS:
                            raise
                        continue
                    except psycopg.OperationalError:
                        # A pooled connection the server has closed (a restart, a failover)
                        # fails at BEGIN, before anything was done: the pool drops it, and
                        # the next one is tried. Cheaper than checking every connection
                        # before use, which cost a round trip per transaction.
                        if begun or not conn.broken:
                            raise
                        continue
                    if notify:
                        self.notify(conn)
                    return result
            raise AssertionError("unreachable")

    def read(self, sql: str, args: dict | tuple = ()) -> list[tuple]:
        def fetch(conn: psycopg.Connection) -> list[tuple]:
            return conn.execute(sql, args).fetchall()
        return self.run("read", fetch)

    @contextmanager
    def session(self, doing: str) -> Iterator[psycopg.Connection]:
        """One connection for a while, outside any transaction (a session-level advisory lock)."""
        with self.storage(doing):
            self._ensure_open()
            with self.pool.connection() as conn:
                self._ensure_ready(conn)
                yield conn

    def notify(self, conn: psycopg.Connection) -> None:
        """Tell the listeners (other processes' watchers) that something was committed.

        After the commit, in a transaction of its own: PostgreSQL serializes the commits
        of transactions that NOTIFY (a database-wide lock held through the commit), which
        would make concurrent accepts wait for each other's disk flush. Its own commit
        needs no flush: a notification lost to a crash only delays a watcher, which looks
        every POLL_INTERVAL anyway."""
        try:
            conn.execute(f"BEGIN; SET LOCAL synchronous_commit TO off; NOTIFY {self.channel}; COMMIT")
        except psycopg.Error:
            logging.getLogger("bridge").debug("notify failed", exc_info=True)

    # -- changes by others ----------------------------------------------------------------
    def wait_for_change(self, timeout: float) -> bool:
        """True once a commit was notified since this thread's previous call; False after
        `timeout`. The first call (or the first after the connection was lost, which
        answers True at once: what happened meanwhile is unknown) starts listening."""
        with self.storage("watch"):
            listener = getattr(self._local, "listener", None)
            if listener is None:
                fresh = psycopg.connect(self.config.dsn.reveal(), autocommit=True, **self.connect_kwargs())
                fresh.execute(f"LISTEN {self.channel}")
                self._local.listener = fresh
                lost, self._local.lost = getattr(self._local, "lost", False), False
                if lost:
                    return True
                listener = fresh
            try:
                got = any(True for _ in listener.notifies(timeout=timeout, stop_after=1))
                if got:   # drain what queued meanwhile: one answer for all of them
                    for _ in listener.notifies(timeout=0):
                        pass
                return got
            except psycopg.Error:
                self._local.listener, self._local.lost = None, True
                listener.close()
                raise


def _dsn_password(dsn: str) -> str | None:
    try:
        return psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        return None

