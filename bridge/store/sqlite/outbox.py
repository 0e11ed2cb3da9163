"""The durable outbox in SQLite: every accepted message is a row before the webhook is answered.

The tables are in schema.py; connections, transactions and group commit in engine.py.

Exactly one sender per bot at a time, across processes: a process may send for a bot
only while it holds the bot's lease, which its watcher renews every second and which
lapses LEASE_TTL seconds after the process dies. Marking a row in flight checks the
lease in the same transaction, and so does every state change after a send, so a
process that lost its lease can neither start a send nor overwrite a newer holder's
work. A new holder puts the rows left in flight back to pending (sent again: at least
once) and closes the dead owner's open send records at the takeover time, which can
only be later than those requests arrived.

What bridge.store.Outbox asks a backend to make atomic (the send order, dedupe,
coalescing, the lease) holds here because SQLite has a single writer: every write
transaction below runs alone (BEGIN IMMEDIATE), in every process.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ...clock import SYSTEM_CLOCK, Clock
from ...errors import StorageError
from .. import LEASE_TTL, SENDS_KEPT
from ..records import (DEAD, PENDING, SENDING, SENT, SUPERSEDED, WAITING, BotState, Card, CardChange, Entry, Head,
                       GroupActions, GroupTarget, LeaseLost, OutgoingMessage, Silence, Stored, Takeover, Window,
                       check_windows)
from . import actions, cards
from .accepting import insert, payload_of, requeue_seq
from .engine import BUSY_TIMEOUT, Engine
from .group import COMMIT_DELAY, GroupCommit
from .schema import create

PRUNE_BATCH = 1000

_ENTRY = ("SELECT id, bot, group_key, state, sent, IFNULL(json_array_length(bodies), 0), attempts,"
          " created, next_attempt, reason, code, detail FROM messages")


class SqliteOutbox:
    """bridge.store.Outbox in one SQLite file."""

    def __init__(self, path: str | Path, *, busy_timeout: float = BUSY_TIMEOUT, clock: Clock = SYSTEM_CLOCK,
                 sync_interval: float | None = None):
        """sync_interval: None (storage.sync always) or storage.sync_interval (interval): see engine.py."""
        self._engine = Engine(path, busy_timeout=busy_timeout, prepare=create, sync_interval=sync_interval)
        self.clock = clock
        self._accepts = GroupCommit(self._engine, "store messages in", commit_delay=COMMIT_DELAY)

    @property
    def path(self) -> Path:
        return self._engine.path

    @property
    def busy_timeout(self) -> float:
        return self._engine.busy_timeout

    def describe(self) -> str:
        return str(self.path)

    def open(self) -> None:
        """Create the file and its tables now, so a bad path shows at start-up."""
        self._engine.open()

    def close(self) -> None:
        """Close this thread's connection (each thread closes its own)."""
        self._engine.close()

    def wait_for_change(self, timeout: float) -> bool:
        return self._engine.wait_for_change(timeout)

    # -- accepting --------------------------------------------------------------------
    def store(self, messages: Iterable[OutgoingMessage], *, dedupe_window: float = 0.0,
              coalesce: bool = False) -> Stored:
        """Store one notification's messages, all or none, committed on return (on disk, or
        with storage.sync interval in the OS and on disk within the interval).
        Concurrent calls share one commit (group.GroupCommit)."""
        batch = list(messages)
        job = self._accepts.run_job(lambda conn: insert(conn, batch, dedupe_window, coalesce, self.clock.now()))
        job.result.commits = int(job.led)
        return job.result

    # -- the lease --------------------------------------------------------------------
    def bot_state(self, bot: str) -> BotState:
        rows = self._engine.read("SELECT owner, expires, paused_until, backoff FROM bots WHERE bot = ?", (bot,))
        return BotState(*rows[0]) if rows else BotState()

    def acquire(self, bot: str, owner: str, ttl: float = LEASE_TTL) -> Takeover | None:
        """Take the bot's lease if it is free, lapsed or ours; None if another holds it."""
        with self._engine.write("take a lease in") as conn:
            now = self.clock.now()
            # Read, then write: one decision only because no other writer runs meanwhile.
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
        with self._engine.write("renew leases in") as conn:
            return conn.execute("UPDATE bots SET expires = ? WHERE owner = ?", (self.clock.now() + ttl, owner)).rowcount

    def release(self, bot: str, owner: str) -> None:
        with self._engine.write("release a lease in") as conn:
            conn.execute("UPDATE bots SET owner = NULL, expires = 0 WHERE bot = ? AND owner = ?", (bot, owner))

    # -- sending ----------------------------------------------------------------------
    def head(self, bot: str) -> Head | None:
        rows = self._engine.read(
            "SELECT m.id, m.group_key, m.source, CASE WHEN m.bodies IS NULL THEN m.body END,"
            " CASE WHEN m.bodies IS NULL THEN p.body END, p.packed, m.alerts,"
            " m.routed, m.bodies, m.sent, m.attempts, m.created FROM messages m"
            " LEFT JOIN payloads p ON p.id = m.payload"
            " WHERE m.bot = ? AND m.state = ? ORDER BY m.seq LIMIT 1", (bot, PENDING))
        if not rows:
            return None
        id_, group_key, source, inline, shared, packed, alerts, routed, bodies, sent, attempts, created = rows[0]
        return Head(id_, group_key, source, payload_of(inline, shared, packed), None if alerts is None else tuple(json.loads(alerts)),
                    bool(routed), None if bodies is None else json.loads(bodies), sent, attempts, created)

    def set_bodies(self, message_id: int, bot: str, owner: str, bodies: list[dict],
                   *, ttl: float = LEASE_TTL) -> bool:
        """Keep a message's rendered parts, so that every retry sends the same ones.
        False if it is no longer pending (superseded meanwhile); raises LeaseLost."""
        text = json.dumps(bodies, ensure_ascii=False, separators=(",", ":"))
        with self._engine.write("store a rendered message in") as conn:
            if not _extend_lease(conn, bot, owner, self.clock.now(), ttl):
                raise LeaseLost(bot)
            return conn.execute("UPDATE messages SET bodies = ? WHERE id = ? AND state = ?",
                                (text, message_id, PENDING)).rowcount == 1

    def recent_ends(self, bot: str, count: int) -> list[float]:
        """End times of the bot's `count` latest-ending requests, latest first."""
        rows = self._engine.read("SELECT IFNULL(finished, started) AS ended FROM sends WHERE bot = ?"
                                 " ORDER BY ended DESC LIMIT ?", (bot, count))
        return [r[0] for r in rows]

    def claim(self, message_id: int, bot: str, owner: str, *, record: bool, ttl: float = LEASE_TTL,
              windows: Sequence[Window] = ()) -> int | None:
        """Mark the message in flight (and open a send record when `record`, counted in
        `windows` too), checking the lease and the windows in the same transaction: one
        decision, since no other writer runs meanwhile. Returns the send record's id (0
        when not recorded), None when the message is no longer pending; raises LeaseLost,
        or WindowFull with nothing changed."""
        with self._engine.write("mark a message in flight in") as conn:
            now = self.clock.now()
            if not _extend_lease(conn, bot, owner, now, ttl):
                raise LeaseLost(bot)
            if conn.execute("SELECT 1 FROM messages WHERE id = ? AND state = ?", (message_id, PENDING)).fetchone() \
                    is None:
                return None
            _check_windows(conn, windows, now)
            conn.execute("UPDATE messages SET state = ?, owner = ?, attempts = attempts + 1 WHERE id = ?",
                         (SENDING, owner, message_id))
            if not record:
                return 0
            send_id = conn.execute("INSERT INTO sends (bot, started) VALUES (?, ?)", (bot, now)).lastrowid
            conn.executemany("INSERT OR IGNORE INTO send_windows (key, send_id) VALUES (?, ?)",
                             [(key, send_id) for key in dict.fromkeys(w.key for w in windows)])
            return send_id

    def mark_logged(self, message_id: int, bot: str, owner: str, *, last: bool, record: bool,
                    ttl: float = LEASE_TTL) -> bool:
        """A dry-run bot's part is done (one transaction, no in-flight step: a log line
        lost to a crash is not worth a second write per part); with `record`, it counts
        against the rate limit like a real request. False if no longer pending."""
        with self._engine.write("record a dry run in") as conn:
            now = self.clock.now()
            if not _extend_lease(conn, bot, owner, now, ttl):
                raise LeaseLost(bot)
            if record:
                conn.execute("INSERT INTO sends (bot, started, finished) VALUES (?, ?, ?)", (bot, now, now))
                _forget_old_sends(conn, bot, now)
            return conn.execute("UPDATE messages SET state = ?, finished = ?, reason = 'dry_run', sent = sent + 1,"
                                " attempts = attempts + 1, payload = CASE WHEN ? THEN NULL ELSE payload END,"
                                " body = CASE WHEN ? THEN NULL ELSE body END"
                                " WHERE id = ? AND state = ?",
                                (SENT if last else PENDING, now if last else None, last, last, message_id,
                                 PENDING)).rowcount == 1

    def mark_sent(self, message_id: int, send_id: int, bot: str, owner: str, code: int | None, *,
                  last: bool = True, card: CardChange | None = None) -> bool:
        """A part went out; the message is sent with its `last` part, else pending for the next;
        with `card`, the group's card changes in the same transaction."""
        with self._engine.write("record a send in") as conn:
            now = self.clock.now()
            conn.execute("UPDATE bots SET backoff = 0 WHERE bot = ? AND owner = ?", (bot, owner))
            ours = _settle(conn, message_id, send_id, bot, owner, now, state=SENT if last else PENDING,
                           finished=now if last else None, reason="ok", code=code, detail=None)
            if ours:
                conn.execute("UPDATE messages SET sent = sent + 1 WHERE id = ?", (message_id,))
                if card is not None:
                    cards.change(conn, bot, card, now)
            return ours

    # -- app bots ---------------------------------------------------------------------
    def card(self, bot: str, group_key: str) -> Card | None:
        return cards.read(self._engine, bot, group_key)

    def app_token(self, key: str) -> tuple[str, float] | None:
        return cards.app_token(self._engine, key)

    def keep_app_token(self, key: str, token: str, expires: float) -> None:
        cards.keep_app_token(self._engine, key, token, expires)

    def app_users(self, key: str, emails: Sequence[str]) -> dict[str, tuple[str | None, float]]:
        return cards.app_users(self._engine, key, emails)

    def keep_app_users(self, key: str, users: Mapping[str, tuple[str | None, float]]) -> None:
        cards.keep_app_users(self._engine, key, users)

    # -- card actions -----------------------------------------------------------------
    def remember_group(self, bot: str, group_key: str, target: GroupTarget, *, fresh: bool) -> GroupActions:
        return actions.remember(self._engine, bot, group_key, target, fresh, self.clock.now())

    def group_actions(self, ref: str) -> GroupActions | None:
        return actions.read(self._engine, ref)

    def claim_silence(self, ref: str, hold: float) -> bool:
        return actions.claim_silence(self._engine, ref, self.clock.now(), hold)

    def settle_silence(self, ref: str, silence: Silence | None) -> None:
        actions.settle_silence(self._engine, ref, silence, self.clock.now())

    def expire_silence(self, ref: str, silence_id: str) -> None:
        actions.expire_silence(self._engine, ref, silence_id, self.clock.now())

    def acknowledge(self, ref: str, by: str) -> None:
        actions.acknowledge(self._engine, ref, by, self.clock.now())

    def first_event(self, event_id: str) -> bool:
        return actions.first_event(self._engine, event_id, self.clock.now())

    def reschedule(self, message_id: int, send_id: int, bot: str, owner: str, *, when: float, delay: float,
                   reason: str, code: int | None, detail: str, in_flight: float = 0.0) -> bool:
        """Back to pending; the whole bot pauses until `when` (later messages keep their place)."""
        with self._engine.write("record a retry in") as conn:
            now = self.clock.now()
            conn.execute("UPDATE bots SET paused_until = ?, backoff = ? WHERE bot = ? AND owner = ?",
                         (when, delay, bot, owner))
            conn.execute("UPDATE messages SET next_attempt = ? WHERE id = ? AND owner = ? AND state = ?",
                         (when, message_id, owner, SENDING))
            return _settle(conn, message_id, send_id, bot, owner, now, state=PENDING, finished=None,
                           reason=reason, code=code, detail=detail, in_flight=in_flight)

    def dead_letter(self, message_id: int, send_id: int, bot: str, owner: str, *, reason: str,
                    code: int | None, detail: str, in_flight: float = 0.0) -> bool:
        with self._engine.write("record a dead letter in") as conn:
            now = self.clock.now()
            return _settle(conn, message_id, send_id, bot, owner, now, state=DEAD, finished=now,
                           reason=reason, code=code, detail=detail, in_flight=in_flight)

    def writable_problem(self) -> str | None:
        """None when a write transaction can start now (for /-/ready), else why not."""
        try:
            with self._engine.write("check"):
                pass
        except StorageError as exc:
            return str(exc)
        return None

    # -- operating --------------------------------------------------------------------
    def list(self, dead: bool | None = None) -> list[Entry]:
        """Messages still in the store: dead letters (dead=True), waiting ones (False), or both."""
        states = (DEAD,) if dead else WAITING if dead is False else (*WAITING, DEAD)
        marks = ", ".join("?" * len(states))
        return [_entry(row) for row in self._engine.read(f"{_ENTRY} WHERE state IN ({marks}) ORDER BY seq", states)]

    def entry(self, message_id: int) -> Entry | None:
        rows = self._engine.read(f"{_ENTRY} WHERE id = ?", (message_id,))
        return _entry(rows[0]) if rows else None

    def retry(self, message_id: int) -> int:
        """Queue a dead letter again, as if just accepted; returns 1, or 0 if no such dead letter.
        Its unsent parts are rendered again with the configuration then in force, so a
        fixed keyword or template applies."""
        with self._engine.write("retry a dead letter in", durable=True) as conn:
            return _requeue(conn, [message_id], self.clock.now())

    def retry_all_dead(self) -> int:
        with self._engine.write("retry dead letters in", durable=True) as conn:
            ids = [r[0] for r in conn.execute("SELECT id FROM messages WHERE state = ? ORDER BY seq", (DEAD,))]
            return _requeue(conn, ids, self.clock.now())

    def depths(self) -> list[tuple[str, int, float]]:
        """(bot, messages waiting, age of the oldest in seconds) for bots with any waiting."""
        now = self.clock.now()
        rows = self._engine.read("SELECT bot, COUNT(*), MIN(created) FROM messages WHERE state IN (?, ?)"
                                 " GROUP BY bot", WAITING)
        return [(bot, count, max(0.0, now - oldest)) for bot, count, oldest in rows]

    def prune(self, before: float) -> int:
        """Forget sent and superseded messages that ended before `before` (dead letters stay),
        and payloads no message needs any more."""
        total = 0
        while True:
            with self._engine.write("prune") as conn:
                removed = conn.execute(
                    "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state IN (?, ?)"
                    " AND finished < ? LIMIT ?)", (SENT, SUPERSEDED, before, PRUNE_BATCH)).rowcount
                # A payload is needed until its messages are sent: a dead letter queued again
                # is rendered from it afresh. Rows that are done no longer name theirs
                # (_settle, _supersede), so a payload no row names is one nobody needs.
                conn.execute("DELETE FROM payloads WHERE id IN (SELECT id FROM payloads WHERE id NOT IN"
                             " (SELECT payload FROM messages WHERE payload IS NOT NULL) LIMIT ?)", (PRUNE_BATCH,))
            total += removed
            # In batches: a long delete would hold the write lock the HTTP handlers wait for.
            if removed < PRUNE_BATCH:
                break
        cards.prune(self._engine, self.clock.now(), PRUNE_BATCH)
        actions.prune(self._engine, self.clock.now(), PRUNE_BATCH)
        return total


def _entry(row: tuple) -> Entry:
    id_, bot, group, state, sent, parts, *rest = row
    return Entry(id_, bot, group, state, min(sent + 1, parts) if parts else 1, parts, *rest)


def _extend_lease(conn: sqlite3.Connection, bot: str, owner: str, now: float, ttl: float) -> bool:
    return conn.execute("UPDATE bots SET expires = ? WHERE bot = ? AND owner = ? AND expires > ?",
                        (now + ttl, bot, owner, now)).rowcount == 1


def _forget_old_sends(conn: sqlite3.Connection, bot: str, now: float) -> None:
    """The rate limit looks back at most SENDS_KEPT seconds: older send records go, and
    what they counted in."""
    conn.execute("DELETE FROM send_windows WHERE send_id IN (SELECT id FROM sends WHERE bot = ? AND finished < ?)",
                 (bot, now - SENDS_KEPT))
    conn.execute("DELETE FROM sends WHERE bot = ? AND finished < ?", (bot, now - SENDS_KEPT))


def _check_windows(conn: sqlite3.Connection, windows: Sequence[Window], now: float) -> None:
    """records.check_windows on this file."""
    def ends_of(key: str, since: float) -> list[float | None]:
        return [r[0] for r in conn.execute(
            "SELECT s.finished FROM send_windows w JOIN sends s ON s.id = w.send_id WHERE w.key = ?"
            " AND (s.finished > ? OR (s.finished IS NULL AND s.started > ?))", (key, since, now - SENDS_KEPT))]

    check_windows(windows, now, ends_of)


def _settle(conn: sqlite3.Connection, message_id: int, send_id: int, bot: str, owner: str, now: float, *,
            state: str, finished: float | None, reason: str, code: int | None, detail: str | None,
            in_flight: float = 0.0) -> bool:
    """Record a send's end (`in_flight` seconds from now: see Outbox.reschedule) and the
    message's new state; False if a new lease holder has taken the message back meanwhile
    (then it is theirs, and may be sent again). A sent message lets go of its payload; a
    dead letter keeps it (`outbox retry` renders it again)."""
    if send_id:
        conn.execute("UPDATE sends SET finished = ? WHERE id = ?", (now + in_flight, send_id))
        _forget_old_sends(conn, bot, now)
    return conn.execute(
        "UPDATE messages SET state = ?, owner = NULL, finished = ?, reason = ?, code = ?, detail = ?,"
        " payload = CASE WHEN ? THEN NULL ELSE payload END, body = CASE WHEN ? THEN NULL ELSE body END"
        " WHERE id = ? AND owner = ? AND state = ?",
        (state, finished, reason, code, detail, state == SENT, state == SENT, message_id, owner,
         SENDING)).rowcount == 1


def _requeue(conn: sqlite3.Connection, ids: list[int], now: float) -> int:
    seq = requeue_seq(conn, len(ids)) - 1
    count = 0
    for message_id in ids:
        # A fresh age (max_age counts from now) and a place at the back of the queue.
        seq += 1
        # Rendered again, all its parts, when it has its payload: the fix that made it
        # worth a retry (a keyword, a template) then applies.
        count += conn.execute("UPDATE messages SET state = ?, seq = ?, attempts = 0, created = ?, next_attempt = ?,"
                              " finished = NULL, bodies = CASE WHEN payload IS NULL AND body IS NULL THEN bodies END,"
                              " sent = CASE WHEN payload IS NULL AND body IS NULL THEN sent ELSE 0 END"
                              " WHERE id = ? AND state = ?",
                              (PENDING, seq, now, now, message_id, DEAD)).rowcount
    return count
