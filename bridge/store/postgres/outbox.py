"""The durable outbox in PostgreSQL: one database shared by every replica.

bridge.store.Outbox's contract, held across machines by the database itself: the queue
writes and their locks are in queue.py; the lease is here. Every method is one
transaction (engine.Engine.run), committed with synchronous commit on.

The lease is a row of `bots`. Taking it is one conditional upsert: the row is written
only if it is free, lapsed or already the caller's, so of two replicas racing for a
lapsed lease exactly one gets a row back (the other waits for the winner's row lock and
then finds the lease taken). Every write a sender makes after that first updates its
own lease row (`queue.extend_lease`) or the message it holds, so a takeover, which
locks the same rows, is ordered before or after it, never in between.

Time: leases, send windows and dedupe windows are on the database's clock, read inside
each transaction, so replicas whose clocks disagree still agree. `clock` is that clock
as Python reads it (a sender's pacing); a clock given to the constructor (tests) is used
for both instead.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping, Sequence

import psycopg

from ...clock import Clock
from ...config import PostgresConfig
from ...errors import StorageError
from .. import LEASE_TTL
from ..records import (DEAD, PENDING, SENDING, SENT, WAITING, BotState, Card, CardChange, Entry, GroupActions,
                       GroupTarget, Head, LeaseLost, OutgoingMessage, Silence, Stored, Takeover, Window)
from . import actions, cards, queue
from .clock import DatabaseClock
from .engine import Engine, lock_key
from .schema import prepare

PRUNE_LOCK = lock_key("prune")

_ENTRY = ("SELECT id, bot, group_key, state, sent, COALESCE(json_array_length(bodies::json), 0), attempts,"
          " created, next_attempt, reason, code, detail FROM messages")


class PostgresOutbox:
    """bridge.store.Outbox in a PostgreSQL schema."""

    def __init__(self, config: PostgresConfig, *, clock: Clock | None = None, sync_commit: bool = True):
        self._engine = Engine(config, prepare=lambda conn: prepare(conn, config.schema, self._engine.namespace),
                              sync_commit=sync_commit)
        self._given = clock
        self.clock: Clock = clock if clock is not None else DatabaseClock(self._database_time)
        self.config = config

    def _now(self) -> float | None:
        """The time to write: the given clock's, or None for the database's own."""
        return None if self._given is None else self._given.now()

    def _database_time(self) -> float:
        return self._engine.run("read the time from", lambda conn: queue.read_time(conn, None))

    def _run(self, doing: str, work, *, notify: bool = False):
        return self._engine.run(doing, work, notify=notify)

    # -- lifecycle --------------------------------------------------------------------
    def describe(self) -> str:
        return self._engine.describe()

    def open(self) -> None:
        """Connect and create or migrate the schema now; raises StorageError while the
        database cannot be reached (the pool keeps trying, the next call may succeed)."""
        self._engine.open()

    def close(self) -> None:
        self._engine.close()

    def shutdown(self) -> None:
        """Close every connection of this process (the pool's too): for tests and tools
        that open many stores; the service lets its pool go at exit."""
        self._engine.shutdown()

    def writable_problem(self) -> str | None:
        """None when a transaction can commit a write now: a write to the outbox's own
        table (refused by a standby, a read-only database, missing rights), waiting for
        its commit to be durable as an accept's would. A no-op row version per probe."""
        try:
            self._run("check", lambda conn: conn.execute(
                "UPDATE meta SET value = value WHERE key = 'schema_version'"))
        except StorageError as exc:
            return str(exc) + (self._engine.why_not_connected() if "no database connection" in str(exc) else "")
        return None

    def wait_for_change(self, timeout: float) -> bool:
        return self._engine.wait_for_change(timeout)

    # -- accepting --------------------------------------------------------------------
    def store(self, messages: Iterable[OutgoingMessage], *, dedupe_window: float = 0.0,
              coalesce: bool = False) -> Stored:
        batch = list(messages)
        ns = self._engine.namespace
        return self._run("store messages in", lambda conn: queue.insert(conn, ns, batch, dedupe_window, coalesce,
                                                                         self._now()), notify=True)

    # -- the lease --------------------------------------------------------------------
    def bot_state(self, bot: str) -> BotState:
        rows = self._engine.read("SELECT owner, expires, paused_until, backoff FROM bots WHERE bot = %s", (bot,))
        return BotState(*rows[0]) if rows else BotState()

    def acquire(self, bot: str, owner: str, ttl: float = LEASE_TTL) -> Takeover | None:
        def take(conn: psycopg.Connection) -> Takeover | None:
            now = queue.read_time(conn, self._now())
            row = conn.execute(
                "WITH prior AS (SELECT owner FROM bots WHERE bot = %(bot)s)"
                " INSERT INTO bots AS b (bot, owner, expires) VALUES (%(bot)s, %(owner)s, %(expires)s)"
                " ON CONFLICT (bot) DO UPDATE SET owner = excluded.owner, expires = excluded.expires"
                " WHERE b.owner IS NULL OR b.owner = excluded.owner OR b.expires <= %(now)s"
                " RETURNING (SELECT owner FROM prior)",
                {"bot": bot, "owner": owner, "expires": now + ttl, "now": now}).fetchone()
            if row is None:
                return None
            # Only the holder sends, and it is not sending now: whatever is in flight was
            # left by a process that stopped or lost the lease. Its result is unknown.
            requeued = conn.execute("UPDATE messages SET state = %s, owner = NULL WHERE bot = %s AND state = %s",
                                    (PENDING, bot, SENDING)).rowcount
            conn.execute("UPDATE sends SET finished = %s WHERE bot = %s AND finished IS NULL", (now, bot))
            return Takeover(row[0] if row[0] != owner else None, requeued)

        return self._run("take a lease in", take)

    def renew(self, owner: str, ttl: float = LEASE_TTL) -> int:
        def renew(conn: psycopg.Connection) -> int:
            now = queue.read_time(conn, self._now())
            return conn.execute("UPDATE bots SET expires = %s WHERE owner = %s", (now + ttl, owner)).rowcount
        return self._run("renew leases in", renew)

    def release(self, bot: str, owner: str) -> None:
        self._run("release a lease in", lambda conn: conn.execute(
            "UPDATE bots SET owner = NULL, expires = 0 WHERE bot = %s AND owner = %s", (bot, owner)), notify=True)

    # -- sending ----------------------------------------------------------------------
    def head(self, bot: str) -> Head | None:
        rows = self._engine.read(
            "SELECT m.id, m.group_key, m.source, CASE WHEN m.bodies IS NULL THEN p.body END, m.alerts,"
            " m.routed, m.bodies, m.sent, m.attempts, m.created FROM messages m"
            " LEFT JOIN payloads p ON p.id = m.payload"
            " WHERE m.bot = %s AND m.state = %s ORDER BY m.seq LIMIT 1", (bot, PENDING))
        if not rows:
            return None
        id_, group_key, source, payload, alerts, routed, bodies, sent, attempts, created = rows[0]
        return Head(id_, group_key, source, None if payload is None else bytes(payload),
                    None if alerts is None else tuple(json.loads(alerts)), routed,
                    None if bodies is None else json.loads(bodies), sent, attempts, created)

    def set_bodies(self, message_id: int, bot: str, owner: str, bodies: list[dict],
                   *, ttl: float = LEASE_TTL) -> bool:
        text = json.dumps(bodies, ensure_ascii=False, separators=(",", ":"))

        def keep(conn: psycopg.Connection) -> bool:
            if not queue.extend_lease(conn, bot, owner, queue.read_time(conn, self._now()), ttl):
                raise LeaseLost(bot)
            return conn.execute("UPDATE messages SET bodies = %s WHERE id = %s AND state = %s",
                                (text, message_id, PENDING)).rowcount == 1
        return self._run("store a rendered message in", keep)

    def recent_ends(self, bot: str, count: int) -> list[float]:
        rows = self._engine.read("SELECT COALESCE(finished, started) AS ended FROM sends WHERE bot = %s"
                                 " ORDER BY ended DESC LIMIT %s", (bot, count))
        return [r[0] for r in rows]

    def claim(self, message_id: int, bot: str, owner: str, *, record: bool, ttl: float = LEASE_TTL,
              windows: Sequence[Window] = ()) -> int | None:
        def claim(conn: psycopg.Connection) -> int | None:
            queue.lock_windows(conn, self._engine.namespace, windows)
            now = queue.read_time(conn, self._now())
            if not queue.extend_lease(conn, bot, owner, now, ttl):
                raise LeaseLost(bot)
            marked = conn.execute("UPDATE messages SET state = %s, owner = %s, attempts = attempts + 1"
                                  " WHERE id = %s AND state = %s", (SENDING, owner, message_id, PENDING)).rowcount
            if not marked:
                return None
            queue.check_windows(conn, windows, now)    # WindowFull rolls all of it back
            if not record:
                return 0
            send_id = conn.execute("INSERT INTO sends (bot, started) VALUES (%s, %s) RETURNING id",
                                   (bot, now)).fetchone()[0]
            for key in dict.fromkeys(w.key for w in windows):
                conn.execute("INSERT INTO send_windows (key, send_id) VALUES (%s, %s)", (key, send_id))
            return send_id
        return self._run("mark a message in flight in", claim)

    def mark_logged(self, message_id: int, bot: str, owner: str, *, last: bool, record: bool,
                    ttl: float = LEASE_TTL) -> bool:
        def logged(conn: psycopg.Connection) -> bool:
            now = queue.read_time(conn, self._now())
            if not queue.extend_lease(conn, bot, owner, now, ttl):
                raise LeaseLost(bot)
            if record:
                conn.execute("INSERT INTO sends (bot, started, finished) VALUES (%s, %s, %s)", (bot, now, now))
                queue.forget_old_sends(conn, bot, now)
            return conn.execute("UPDATE messages SET state = %s, finished = %s, reason = 'dry_run', sent = sent + 1,"
                                " attempts = attempts + 1, payload = CASE WHEN %s THEN NULL ELSE payload END"
                                " WHERE id = %s AND state = %s",
                                (SENT if last else PENDING, now if last else None, last, message_id,
                                 PENDING)).rowcount == 1
        return self._run("record a dry run in", logged)

    def mark_sent(self, message_id: int, send_id: int, bot: str, owner: str, code: int | None, *,
                  last: bool = True, card: CardChange | None = None) -> bool:
        def sent(conn: psycopg.Connection) -> bool:
            now = queue.read_time(conn, self._now())
            conn.execute("UPDATE bots SET backoff = 0 WHERE bot = %s AND owner = %s", (bot, owner))
            ours = queue.settle(conn, message_id, send_id, bot, owner, now, state=SENT if last else PENDING,
                                finished=now if last else None, reason="ok", code=code, detail=None, sent=True)
            if ours and card is not None:
                cards.change(conn, bot, card, now)
            return ours
        return self._run("record a send in", sent)

    # -- app bots ---------------------------------------------------------------------
    def card(self, bot: str, group_key: str) -> Card | None:
        return self._run("read a card in", lambda conn: cards.read(conn, bot, group_key))

    def app_token(self, key: str) -> tuple[str, float] | None:
        return self._run("read an app token in", lambda conn: cards.app_token(conn, key))

    def keep_app_token(self, key: str, token: str, expires: float) -> None:
        self._run("keep an app token in", lambda conn: cards.keep_app_token(conn, key, token, expires))

    def app_users(self, key: str, emails: Sequence[str]) -> dict[str, tuple[str | None, float]]:
        return self._run("read looked-up users in", lambda conn: cards.app_users(conn, key, emails))

    def keep_app_users(self, key: str, users: Mapping[str, tuple[str | None, float]]) -> None:
        self._run("keep looked-up users in", lambda conn: cards.keep_app_users(conn, key, users))

    # -- card actions (on the database's clock, as every other time here) ---------------
    def remember_group(self, bot: str, group_key: str, target: GroupTarget, *, fresh: bool) -> GroupActions:
        return self._run("remember a card's group in", lambda conn: actions.remember(
            conn, bot, group_key, target, fresh, queue.read_time(conn, self._now())))

    def group_actions(self, ref: str) -> GroupActions | None:
        return self._run("read a card's actions in", lambda conn: actions.read(conn, ref))

    def claim_silence(self, ref: str, hold: float) -> bool:
        return self._run("claim a silence in", lambda conn: actions.claim_silence(
            conn, ref, queue.read_time(conn, self._now()), hold))

    def settle_silence(self, ref: str, silence: Silence | None) -> None:
        self._run("record a silence in", lambda conn: actions.settle_silence(
            conn, ref, silence, queue.read_time(conn, self._now())))

    def expire_silence(self, ref: str, silence_id: str) -> None:
        self._run("record an expired silence in", lambda conn: actions.expire_silence(
            conn, ref, silence_id, queue.read_time(conn, self._now())))

    def acknowledge(self, ref: str, by: str) -> None:
        self._run("record an acknowledgement in", lambda conn: actions.acknowledge(
            conn, ref, by, queue.read_time(conn, self._now())))

    def first_event(self, event_id: str) -> bool:
        return self._run("note a callback event in", lambda conn: actions.first_event(
            conn, event_id, queue.read_time(conn, self._now())))

    def reschedule(self, message_id: int, send_id: int, bot: str, owner: str, *, when: float, delay: float,
                   reason: str, code: int | None, detail: str, in_flight: float = 0.0) -> bool:
        def later(conn: psycopg.Connection) -> bool:
            now = queue.read_time(conn, self._now())
            conn.execute("UPDATE bots SET paused_until = %s, backoff = %s WHERE bot = %s AND owner = %s",
                         (when, delay, bot, owner))
            conn.execute("UPDATE messages SET next_attempt = %s WHERE id = %s AND owner = %s AND state = %s",
                         (when, message_id, owner, SENDING))
            return queue.settle(conn, message_id, send_id, bot, owner, now, state=PENDING, finished=None,
                                reason=reason, code=code, detail=detail, in_flight=in_flight)
        return self._run("record a retry in", later)

    def dead_letter(self, message_id: int, send_id: int, bot: str, owner: str, *, reason: str,
                    code: int | None, detail: str, in_flight: float = 0.0) -> bool:
        def dead(conn: psycopg.Connection) -> bool:
            now = queue.read_time(conn, self._now())
            return queue.settle(conn, message_id, send_id, bot, owner, now, state=DEAD, finished=now,
                                reason=reason, code=code, detail=detail, in_flight=in_flight)
        return self._run("record a dead letter in", dead)

    # -- operating --------------------------------------------------------------------
    def list(self, dead: bool | None = None) -> list[Entry]:
        states = [DEAD] if dead else list(WAITING) if dead is False else [*WAITING, DEAD]
        return [_entry(row) for row in self._engine.read(f"{_ENTRY} WHERE state = ANY(%s) ORDER BY seq", (states,))]

    def entry(self, message_id: int) -> Entry | None:
        rows = self._engine.read(f"{_ENTRY} WHERE id = %s", (message_id,))
        return _entry(rows[0]) if rows else None

    def retry(self, message_id: int) -> int:
        ns = self._engine.namespace
        return self._run("retry a dead letter in", lambda conn: queue.requeue(conn, ns, [message_id], self._now()),
                         notify=True)

    def retry_all_dead(self) -> int:
        def requeue(conn: psycopg.Connection) -> int:
            ids = [r[0] for r in conn.execute("SELECT id FROM messages WHERE state = %s ORDER BY seq", (DEAD,))]
            return queue.requeue(conn, self._engine.namespace, ids, self._now())
        return self._run("retry dead letters in", requeue, notify=True)

    def depths(self) -> list[tuple[str, int, float]]:
        rows = self._engine.read(f"SELECT bot, COUNT(*), {queue.NOW} - MIN(created) FROM messages"
                                 " WHERE state = ANY(%s) GROUP BY bot", (self._now(), list(WAITING)))
        return [(bot, count, max(0.0, age)) for bot, count, age in rows]

    def prune(self, before: float) -> int:
        """One replica at a time (a session advisory lock; another that finds it taken
        returns 0: the one holding it is doing the work), in batches."""
        total = 0
        with self._engine.session("prune") as conn:
            if not conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (self._engine.namespace, PRUNE_LOCK)).fetchone()[0]:
                return 0
            try:
                more = True
                while more:
                    with conn.transaction():
                        removed, more = queue.prune_batch(conn, before)
                    total += removed
                with conn.transaction():
                    cards.prune(conn, queue.read_time(conn, self._now()), queue.PRUNE_BATCH)
                    actions.prune(conn, queue.read_time(conn, self._now()), queue.PRUNE_BATCH)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (self._engine.namespace, PRUNE_LOCK))
        return total


def _entry(row: tuple) -> Entry:
    id_, bot, group, state, sent, parts, *rest = row
    return Entry(id_, bot, group, state, min(sent + 1, parts) if parts else 1, parts, *rest)
