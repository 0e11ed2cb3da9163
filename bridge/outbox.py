"""The durable outbox: every accepted message is a row in SQLite before the webhook is answered.

One file (config `storage.path`, WAL mode) is shared by every gunicorn worker process.
Four tables:

    payloads  each accepted notification's body, as received (JSON), kept while a
              message still needs it. Accepting stores this and nothing derived from
              it: rendering happens at send time, once per message (bridge.pipeline).
    messages  one row per notification and bot: which of the payload's alerts are the
              bot's, and once rendered, the Feishu request bodies (`bodies`, one or
              more parts) and how many of them are sent. state: pending -> sending ->
              pending (the next part) ... -> sent, or -> dead (a dead letter, kept until
              `outbox retry`), or -> superseded (a newer message of the same group
              replaced it while it waited). `seq` is the send order: the order the
              rows were committed in.
    bots      one row per bot: the sender lease (owner, expires) and the bot's retry
              pause (paused_until, backoff), so a process that takes the bot over
              carries on where the last one stopped.
    sends     when each request to Feishu started and ended, for the rate limit;
              only the last minute is kept.

Exactly one sender per bot at a time, across processes: a process may send for a bot
only while it holds the bot's lease, which its watcher renews every second and which
lapses LEASE_TTL seconds after the process dies. Marking a row in flight checks the
lease in the same transaction, and so does every state change after a send, so a
process that lost its lease can neither start a send nor overwrite a newer holder's
work. A new holder puts the rows left in flight back to pending (sent again: at least
once) and closes the dead owner's open send records at the takeover time, which can
only be later than those requests arrived.

Every method is one short transaction on this thread's own connection (sqlite3
connections must not cross threads). Failures raise StorageError with the reason.
Accepted messages are committed with synchronous=FULL (on disk before the webhook is
answered; concurrent accepts share one commit); the senders' bookkeeping uses NORMAL,
which survives a killed process and at worst repeats a send after a power cut.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

from .errors import StorageError

from .store.records import (DEAD, PENDING, SENDING, SENT, SUPERSEDED, WAITING, BotState, Entry,  # noqa: F401
                            Head, LeaseLost, OutgoingMessage, Stored, Takeover)

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
# A dead process's lease lapses after this; renewed every LEASE_RENEW seconds while alive.
LEASE_TTL = 5.0
LEASE_RENEW = 1.0
# Send records needed: Feishu's longest window (60 s) plus slack.
SENDS_KEPT = 65.0
PRUNE_BATCH = 1000
CHANGE_POLL = 0.025   # MERGE-SHIM: wait_for_change's poll step, replaced with it
SCHEMA_VERSION = 2

T = TypeVar("T")


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS payloads (
        id INTEGER PRIMARY KEY, source TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, bot TEXT NOT NULL,
        group_key TEXT NOT NULL, identity TEXT NOT NULL, source TEXT NOT NULL,
        payload INTEGER REFERENCES payloads (id), alerts TEXT, routed INTEGER NOT NULL DEFAULT 1,
        bodies TEXT, sent INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL, owner TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
        next_attempt REAL NOT NULL, finished REAL,
        reason TEXT, code INTEGER, detail TEXT)""",
    "CREATE INDEX IF NOT EXISTS messages_queue ON messages (bot, state, seq)",
    "CREATE INDEX IF NOT EXISTS messages_seq ON messages (seq)",
    "CREATE INDEX IF NOT EXISTS messages_identity ON messages (bot, identity, created)",
    "CREATE INDEX IF NOT EXISTS messages_group ON messages (bot, group_key, state)",
    """CREATE TABLE IF NOT EXISTS bots (
        bot TEXT PRIMARY KEY, owner TEXT, expires REAL NOT NULL DEFAULT 0,
        paused_until REAL NOT NULL DEFAULT 0, backoff REAL NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS sends (
        id INTEGER PRIMARY KEY, bot TEXT NOT NULL, started REAL NOT NULL, finished REAL)""",
    "CREATE INDEX IF NOT EXISTS sends_bot ON sends (bot, id)",
)


class Outbox:
    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT,
                 clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.clock = clock
        self._local = threading.local()
        self._ready = False
        self._ready_lock = threading.Lock()
        # This process's writers queue here (woken at once, in turn) rather than in SQLite.
        self._write_lock = threading.Lock()
        self._group = threading.Condition()    # group commit of store() calls
        self._queue: list[_StoreJob] = []
        self._committing = False

    # -- connections ------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn, self._local.durable = conn, None
        return conn

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: each method says BEGIN IMMEDIATE itself, so a writer takes the
        # lock up front instead of failing half-way on an upgrade from a read.
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None)   # we wait ourselves: LOCK_POLL
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        try:
            with self._ready_lock:
                if not self._ready:
                    _create(conn, time.monotonic() + self.busy_timeout)
                    self._ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self) -> None:
        """Create the file and its tables now, so a bad path shows at start-up."""
        with self._storage("open"):
            self._conn()

    def close(self) -> None:
        """Close this thread's connection (each thread closes its own)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            self._local.seen = None   # MERGE-SHIM: a new connection counts data_version afresh
            conn.close()

    @contextmanager
    def _storage(self, doing: str) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot {doing} the outbox {self.path}: {exc}") from exc

    @contextmanager
    def _write(self, doing: str, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction. `durable`: on disk at commit, even through a power cut.
        Otherwise it survives a crash of the process (WAL in the page cache), and a power cut
        may undo it: for sender bookkeeping that only means a message is sent again."""
        with self._storage(doing):
            conn = self._conn()
            if durable != self._local.durable:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._local.durable = durable
            deadline = time.monotonic() + self.busy_timeout
            if not self._write_lock.acquire(timeout=self.busy_timeout):
                raise sqlite3.OperationalError("database is locked (by this process's other writers)")
            try:
                _patiently(lambda: conn.execute("BEGIN IMMEDIATE"), deadline)
                try:
                    yield conn
                    _patiently(lambda: conn.execute("COMMIT"), deadline)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                self._write_lock.release()

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._storage("read"):
            conn = self._conn()
            return _patiently(lambda: conn.execute(sql, args).fetchall(), time.monotonic() + self.busy_timeout)

    def data_version(self) -> int:
        """Changes whenever another connection commits: a cheap "anything new?"."""
        return self._read("PRAGMA data_version")[0][0]

    # MERGE-SHIM: bridge.store.sqlite's SqliteOutbox.wait_for_change replaces this.
    def wait_for_change(self, timeout: float) -> bool:
        """True as soon as another connection has committed since this thread's previous
        call (at once on its first), False after `timeout` seconds without."""
        deadline = time.monotonic() + timeout
        while True:
            version = self.data_version()
            if version != getattr(self._local, "seen", None):
                self._local.seen = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, CHANGE_POLL))

    # -- accepting --------------------------------------------------------------------
    def store(self, messages: Iterable[OutgoingMessage], *, dedupe_window: float = 0.0,
              coalesce: bool = False) -> Stored:
        """Store one notification's messages, all or none, committed (on disk) on return.

        Group commit: the calls arriving while a commit is under way are written together
        in the next transaction, so concurrent requests share one fsync instead of
        queueing for one each. Each call still gets its own answer.
        """
        job = _StoreJob(list(messages), dedupe_window, coalesce)
        with self._group:
            self._queue.append(job)
            deadline = time.monotonic() + 2 * self.busy_timeout
            while not job.done and self._committing:
                if not self._group.wait(max(0.0, deadline - time.monotonic())):
                    if job in self._queue:
                        self._queue.remove(job)
                    # Else a commit under way has it: if that succeeds after all, the
                    # sender's retry of this 503 is dropped as a duplicate.
                    raise StorageError(f"cannot store messages in the outbox {self.path}: timed out")
            if not job.done:
                self._committing = True
                jobs, self._queue = self._queue, []
        if not job.done:
            self._commit_jobs(jobs)
        if job.error is not None:
            raise job.error
        assert job.stored is not None
        return job.stored

    def _commit_jobs(self, jobs: list[_StoreJob]) -> None:
        error: StorageError | None = None
        try:
            with self._write("store messages in", durable=True) as conn:
                now = self.clock()
                for job in jobs:
                    job.stored = _insert(conn, job, now)
        except StorageError as exc:
            error = exc
        except BaseException as exc:   # a bug: every job in the group learns of it
            error = StorageError(f"cannot store messages in the outbox {self.path}: {exc!r}")
            raise
        finally:
            with self._group:
                for job in jobs:
                    job.error, job.done = error, True
                self._committing = False
                self._group.notify_all()

    # -- the lease --------------------------------------------------------------------
    def bot_state(self, bot: str) -> BotState:
        rows = self._read("SELECT owner, expires, paused_until, backoff FROM bots WHERE bot = ?", (bot,))
        return BotState(*rows[0]) if rows else BotState()

    def acquire(self, bot: str, owner: str, ttl: float = LEASE_TTL) -> Takeover | None:
        """Take the bot's lease if it is free, lapsed or ours; None if another holds it."""
        with self._write("take a lease in") as conn:
            now = self.clock()
            row = conn.execute("SELECT owner, expires FROM bots WHERE bot = ?", (bot,)).fetchone()
            if row and row[0] not in (None, owner) and row[1] > now:
                return None
            conn.execute("INSERT INTO bots (bot, owner, expires) VALUES (?, ?, ?) ON CONFLICT (bot)"
                         " DO UPDATE SET owner = excluded.owner, expires = excluded.expires", (bot, owner, now + ttl))
            # Only the holder sends, and it is not sending now: whatever is in flight was
            # left by a process that stopped or lost the lease. Its result is unknown.
            requeued = conn.execute("UPDATE messages SET state = ?, owner = NULL WHERE bot = ? AND state = ?",
                                    (PENDING, bot, SENDING)).rowcount
            conn.execute("UPDATE sends SET finished = ? WHERE bot = ? AND finished IS NULL", (now, bot))
        previous = row[0] if row and row[0] != owner else None
        return Takeover(previous, requeued)

    def renew(self, owner: str, ttl: float = LEASE_TTL) -> int:
        with self._write("renew leases in") as conn:
            return conn.execute("UPDATE bots SET expires = ? WHERE owner = ?", (self.clock() + ttl, owner)).rowcount

    def release(self, bot: str, owner: str) -> None:
        with self._write("release a lease in") as conn:
            conn.execute("UPDATE bots SET owner = NULL, expires = 0 WHERE bot = ? AND owner = ?", (bot, owner))

    # -- sending ----------------------------------------------------------------------
    def head(self, bot: str) -> Head | None:
        rows = self._read("SELECT m.id, m.group_key, m.source, CASE WHEN m.bodies IS NULL THEN p.body END, m.alerts,"
                          " m.routed, m.bodies, m.sent, m.attempts, m.created FROM messages m"
                          " LEFT JOIN payloads p ON p.id = m.payload"
                          " WHERE m.bot = ? AND m.state = ? ORDER BY m.seq LIMIT 1", (bot, PENDING))
        if not rows:
            return None
        id_, group_key, source, payload, alerts, routed, bodies, sent, attempts, created = rows[0]
        return Head(id_, group_key, source, payload, None if alerts is None else tuple(json.loads(alerts)),
                    bool(routed), None if bodies is None else json.loads(bodies), sent, attempts, created)

    def set_bodies(self, message_id: int, bot: str, owner: str, bodies: list[dict],
                   *, ttl: float = LEASE_TTL) -> bool:
        """Keep a message's rendered parts, so that every retry sends the same ones.
        False if it is no longer pending (superseded meanwhile); raises LeaseLost."""
        text = json.dumps(bodies, ensure_ascii=False, separators=(",", ":"))
        with self._write("store a rendered message in") as conn:
            if not _extend_lease(conn, bot, owner, self.clock(), ttl):
                raise LeaseLost(bot)
            return conn.execute("UPDATE messages SET bodies = ? WHERE id = ? AND state = ?",
                                (text, message_id, PENDING)).rowcount == 1

    def recent_ends(self, bot: str, count: int) -> list[float]:
        """End times of the bot's latest `count` requests, newest first."""
        rows = self._read("SELECT IFNULL(finished, started) FROM sends WHERE bot = ? ORDER BY id DESC LIMIT ?",
                          (bot, count))
        return sorted((r[0] for r in rows), reverse=True)

    def claim(self, message_id: int, bot: str, owner: str, *, record: bool, ttl: float = LEASE_TTL) -> int | None:
        """Mark the message in flight (and open a send record when `record`), checking the
        lease in the same transaction. Returns the send record's id (0 when not recorded),
        None when the message is no longer pending; raises LeaseLost."""
        with self._write("mark a message in flight in") as conn:
            now = self.clock()
            if not _extend_lease(conn, bot, owner, now, ttl):
                raise LeaseLost(bot)
            marked = conn.execute("UPDATE messages SET state = ?, owner = ?, attempts = attempts + 1"
                                  " WHERE id = ? AND state = ?", (SENDING, owner, message_id, PENDING)).rowcount
            if not marked:
                return None
            if not record:
                return 0
            return conn.execute("INSERT INTO sends (bot, started) VALUES (?, ?)", (bot, now)).lastrowid

    def mark_logged(self, message_id: int, bot: str, owner: str, *, last: bool, record: bool,
                    ttl: float = LEASE_TTL) -> bool:
        """A dry-run bot's part is done (one transaction, no in-flight step: a log line
        lost to a crash is not worth a second write per part); with `record`, it counts
        against the rate limit like a real request. False if no longer pending."""
        with self._write("record a dry run in") as conn:
            now = self.clock()
            if not _extend_lease(conn, bot, owner, now, ttl):
                raise LeaseLost(bot)
            if record:
                conn.execute("INSERT INTO sends (bot, started, finished) VALUES (?, ?, ?)", (bot, now, now))
                _forget_old_sends(conn, bot, now)
            return conn.execute("UPDATE messages SET state = ?, finished = ?, reason = 'dry_run', sent = sent + 1,"
                                " attempts = attempts + 1 WHERE id = ? AND state = ?",
                                (SENT if last else PENDING, now if last else None, message_id, PENDING)).rowcount == 1

    def mark_sent(self, message_id: int, send_id: int, bot: str, owner: str, code: int | None, *,
                  last: bool = True) -> bool:
        """A part went out; the message is sent with its `last` part, else pending for the next."""
        with self._write("record a send in") as conn:
            now = self.clock()
            conn.execute("UPDATE bots SET backoff = 0 WHERE bot = ?", (bot,))
            ours = _settle(conn, message_id, send_id, bot, owner, now, state=SENT if last else PENDING,
                           finished=now if last else None, reason="ok", code=code, detail=None)
            if ours:
                conn.execute("UPDATE messages SET sent = sent + 1 WHERE id = ?", (message_id,))
            return ours

    def reschedule(self, message_id: int, send_id: int, bot: str, owner: str, *, when: float, delay: float,
                   reason: str, code: int | None, detail: str) -> bool:
        """Back to pending; the whole bot pauses until `when` (later messages keep their place)."""
        with self._write("record a retry in") as conn:
            now = self.clock()
            conn.execute("UPDATE bots SET paused_until = ?, backoff = ? WHERE bot = ?", (when, delay, bot))
            conn.execute("UPDATE messages SET next_attempt = ? WHERE id = ?", (when, message_id))
            return _settle(conn, message_id, send_id, bot, owner, now, state=PENDING, finished=None,
                           reason=reason, code=code, detail=detail)

    def dead_letter(self, message_id: int, send_id: int, bot: str, owner: str, *, reason: str,
                    code: int | None, detail: str) -> bool:
        with self._write("record a dead letter in") as conn:
            now = self.clock()
            return _settle(conn, message_id, send_id, bot, owner, now, state=DEAD, finished=now,
                           reason=reason, code=code, detail=detail)

    def writable_problem(self) -> str | None:
        """None when a write transaction can start now (for /-/ready), else why not."""
        try:
            with self._write("check"):
                pass
        except StorageError as exc:
            return str(exc)
        return None

    # -- operating --------------------------------------------------------------------
    def list(self, dead: bool | None = None) -> list[Entry]:
        """Messages still in the store: dead letters (dead=True), waiting ones (False), or both."""
        states = (DEAD,) if dead else WAITING if dead is False else (*WAITING, DEAD)
        marks = ", ".join("?" * len(states))
        rows = self._read("SELECT id, bot, group_key, state, sent, IFNULL(json_array_length(bodies), 0), attempts,"
                          f" created, next_attempt, reason, code, detail FROM messages WHERE state IN ({marks})"
                          " ORDER BY seq", states)
        return [Entry(id_, bot, group, state, min(sent + 1, parts) if parts else 1, parts, *rest)
                for id_, bot, group, state, sent, parts, *rest in rows]

    def retry(self, message_id: int) -> int:
        """Queue a dead letter again, as if just accepted; returns 1, or 0 if no such dead letter.
        Its unsent parts are rendered again with the configuration then in force, so a
        fixed keyword or template applies."""
        with self._write("retry a dead letter in", durable=True) as conn:
            return _requeue(conn, [message_id], self.clock())

    def retry_all_dead(self) -> int:
        with self._write("retry dead letters in", durable=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM messages WHERE state = ? ORDER BY seq", (DEAD,))]
            return _requeue(conn, ids, self.clock())

    def depths(self) -> list[tuple[str, int, float]]:
        """(bot, messages waiting, age of the oldest in seconds) for bots with any waiting."""
        now = self.clock()
        rows = self._read("SELECT bot, COUNT(*), MIN(created) FROM messages WHERE state IN (?, ?) GROUP BY bot",
                          WAITING)
        return [(bot, count, max(0.0, now - oldest)) for bot, count, oldest in rows]

    def prune(self, before: float) -> int:
        """Forget sent and superseded messages that ended before `before` (dead letters stay),
        and payloads no message needs any more."""
        total = 0
        while True:
            with self._write("prune") as conn:
                removed = conn.execute(
                    "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state IN (?, ?)"
                    " AND finished < ? LIMIT ?)", (SENT, SUPERSEDED, before, PRUNE_BATCH)).rowcount
                # A payload is needed until its messages are sent: a dead letter queued again
                # is rendered from it afresh. (No index serves these two: each insert into
                # an index is a page written at every accept, and pruning runs once a minute
                # over rows kept only dedupe_window long.)
                conn.execute("DELETE FROM payloads WHERE id IN (SELECT id FROM payloads WHERE id NOT IN"
                             " (SELECT payload FROM messages WHERE payload IS NOT NULL AND state IN (?, ?, ?))"
                             " LIMIT ?)", (PENDING, SENDING, DEAD, PRUNE_BATCH))
            total += removed
            # In batches: a long delete would hold the write lock the HTTP handlers wait for.
            if removed < PRUNE_BATCH:
                return total


def _patiently(action: Callable[[], T], deadline: float) -> T:
    """Run `action`, again every LOCK_POLL while the database is locked, until `deadline`."""
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY   # extended codes too
            if not busy or time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_POLL)


def _create(conn: sqlite3.Connection, deadline: float) -> None:
    mode = _patiently(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], deadline)
    if mode != "wal":
        # Without WAL, readers block the writer and several processes would stall each other.
        raise sqlite3.OperationalError(f"cannot use WAL journal mode (got {mode})")
    _patiently(lambda: conn.execute("BEGIN IMMEDIATE"), deadline)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.OperationalError(f"written by a newer version (schema {version} > {SCHEMA_VERSION})")
        if version == 1:
            _migrate_from_1(conn)
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Schema 1 (0.1) stored one row per rendered part: each becomes a one-part message
    of schema 2, in the same order and state, so an upgrade loses nothing waiting."""
    conn.execute("ALTER TABLE messages RENAME TO messages_1")
    for index in ("messages_queue", "messages_seq", "messages_identity", "messages_group", "messages_done"):   # schema 1's
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    for statement in _SCHEMA:
        conn.execute(statement)
    conn.execute(
        "INSERT INTO messages (id, seq, bot, group_key, identity, source, payload, alerts, routed, bodies, sent,"
        " state, owner, attempts, created, next_attempt, finished, reason, code, detail)"
        " SELECT id, seq, bot, group_key, identity, source, NULL, NULL, 1, '[' || body || ']',"
        " CASE WHEN state = 'sent' THEN 1 ELSE 0 END, state, owner, attempts, created, next_attempt, finished,"
        " reason, code, detail FROM messages_1")
    conn.execute("DROP TABLE messages_1")


@dataclass
class _StoreJob:
    messages: list[OutgoingMessage]
    dedupe_window: float
    coalesce: bool
    stored: Stored | None = None
    error: StorageError | None = None
    done: bool = False


def _insert(conn: sqlite3.Connection, job: _StoreJob, now: float) -> Stored:
    stored = Stored()
    seq = conn.execute("SELECT IFNULL(MAX(seq), 0) FROM messages").fetchone()[0]
    payloads: dict[int, int] = {}    # id(payload bytes) -> row: a notification's bots share one copy
    for m in job.messages:
        if job.dedupe_window > 0 and _seen(conn, m, now - job.dedupe_window):
            stored.duplicates.append(m)
            continue
        if job.coalesce:
            stored.superseded += _supersede(conn, m, now)
        payload = None
        if m.payload is not None:
            payload = payloads.get(id(m.payload))
            if payload is None:
                payload = conn.execute("INSERT INTO payloads (source, body, created) VALUES (?, ?, ?)",
                                       (m.source, m.payload, now)).lastrowid
                payloads[id(m.payload)] = payload
        seq += 1
        cursor = conn.execute(
            "INSERT INTO messages (seq, bot, group_key, identity, source, payload, alerts, routed, bodies,"
            " state, created, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, m.bot, m.group_key, m.identity, m.source, payload,
             None if m.alerts is None else json.dumps(m.alerts), int(m.routed),
             None if m.bodies is None else json.dumps(m.bodies, ensure_ascii=False, separators=(",", ":")),
             PENDING, now, now))
        stored.ids.append(cursor.lastrowid)
    return stored


def _seen(conn: sqlite3.Connection, m: OutgoingMessage, since: float) -> bool:
    if not m.identity:
        return False
    return conn.execute("SELECT 1 FROM messages WHERE bot = ? AND identity = ? AND created > ? LIMIT 1",
                        (m.bot, m.identity, since)).fetchone() is not None


def _supersede(conn: sqlite3.Connection, m: OutgoingMessage, now: float) -> list[tuple[int, str, str]]:
    # Only pending rows: one in flight is already on its way. A message with some of its
    # parts sent goes too: the newer one shows the whole group as it is now.
    rows = conn.execute("UPDATE messages SET state = ?, finished = ?, reason = 'superseded' WHERE bot = ?"
                        " AND group_key = ? AND state = ? RETURNING id",
                        (SUPERSEDED, now, m.bot, m.group_key, PENDING)).fetchall()
    return [(r[0], m.bot, m.group_key) for r in rows]


def _extend_lease(conn: sqlite3.Connection, bot: str, owner: str, now: float, ttl: float) -> bool:
    return conn.execute("UPDATE bots SET expires = ? WHERE bot = ? AND owner = ? AND expires > ?",
                        (now + ttl, bot, owner, now)).rowcount == 1


def _forget_old_sends(conn: sqlite3.Connection, bot: str, now: float) -> None:
    """The rate limit looks back at most SENDS_KEPT seconds: older send records go."""
    conn.execute("DELETE FROM sends WHERE bot = ? AND finished < ?", (bot, now - SENDS_KEPT))


def _settle(conn: sqlite3.Connection, message_id: int, send_id: int, bot: str, owner: str, now: float, *,
            state: str, finished: float | None, reason: str, code: int | None, detail: str | None) -> bool:
    """Record a send's end and the message's new state; False if a new lease holder has
    taken the message back meanwhile (then it is theirs, and may be sent again)."""
    if send_id:
        conn.execute("UPDATE sends SET finished = ? WHERE id = ?", (now, send_id))
        _forget_old_sends(conn, bot, now)
    return conn.execute(
        "UPDATE messages SET state = ?, owner = NULL, finished = ?, reason = ?, code = ?, detail = ?"
        " WHERE id = ? AND owner = ? AND state = ?",
        (state, finished, reason, code, detail, message_id, owner, SENDING)).rowcount == 1


def _requeue(conn: sqlite3.Connection, ids: list[int], now: float) -> int:
    seq = conn.execute("SELECT IFNULL(MAX(seq), 0) FROM messages").fetchone()[0]
    count = 0
    for message_id in ids:
        # A fresh age (max_age counts from now) and a place at the back of the queue.
        seq += 1
        # Rendered again, all its parts, when it has its payload: the fix that made it
        # worth a retry (a keyword, a template) then applies.
        count += conn.execute("UPDATE messages SET state = ?, seq = ?, attempts = 0, created = ?, next_attempt = ?,"
                              " finished = NULL, bodies = CASE WHEN payload IS NULL THEN bodies END,"
                              " sent = CASE WHEN payload IS NULL THEN sent ELSE 0 END"
                              " WHERE id = ? AND state = ?",
                              (PENDING, seq, now, now, message_id, DEAD)).rowcount
    return count
