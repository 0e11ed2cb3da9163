"""The outbox's writes in PostgreSQL, each a part of one transaction (outbox.py runs them).

What SQLite gets from running one writer at a time, PostgreSQL gets here from locks:

- Per bot, an advisory transaction lock (`lock_bots`) serializes whatever gives the bot's
  messages their place in the queue (`insert`, `requeue`): the sequence number is taken
  after the lock, and the lock is held until the commit, so no earlier number can commit
  after a later one was sent. Several bots are locked in one order (by key), so two
  transactions never wait for each other crosswise.
- Dedupe is an upsert on (bot, identity): of two replicas storing one notification at
  the same instant, the second waits for the first's row and then finds it.
- Coalescing is an UPDATE of the group's pending rows under the bot's lock; a sender's
  claim locks the row it marks in flight, so a row is superseded or sent, never both.
- The lease and everything fenced by it is in outbox.py: row locks on `bots` do it.
"""

from __future__ import annotations

import json
from typing import Sequence

import psycopg

from .. import SENDS_KEPT, records
from ..records import DEAD, PENDING, SENDING, SENT, SUPERSEDED, OutgoingMessage, Stored, Window
from .engine import lock_key

# The time inside the database, unless the outbox was given a clock (tests step one).
NOW = "COALESCE(%s::float8, extract(epoch FROM clock_timestamp())::float8)"
PRUNE_BATCH = 1000


def lock_bots(conn: psycopg.Connection, namespace: int, bots: set[str], now: float | None,
              payload: bytes | None = None, source: str = "") -> tuple[float, int | None]:
    """Take the bots' queue locks (until the commit), in key order: (the time after them,
    the id of `payload`, stored in the same round trip when given)."""
    keys = sorted({lock_key(bot) for bot in bots})
    locks = "".join(f"pg_advisory_xact_lock({namespace}, {key}), " for key in keys)
    if payload is None:
        return conn.execute(f"SELECT {locks}{NOW}", (now,)).fetchone()[-1], None
    # A payload whose messages all turn out to be duplicates is left unnamed: prune takes it.
    row = conn.execute(f"WITH p AS (INSERT INTO payloads (source, body, created) VALUES (%s, %s, {NOW}) RETURNING id)"
                       f" SELECT {locks}{NOW}, (SELECT id FROM p)", (source, payload, now, now)).fetchone()
    return row[-2], row[-1]


def read_time(conn: psycopg.Connection, now: float | None) -> float:
    return conn.execute(f"SELECT {NOW}", (now,)).fetchone()[0]


def insert(conn: psycopg.Connection, namespace: int, messages: list[OutgoingMessage], dedupe_window: float,
           coalesce: bool, clock_now: float | None) -> Stored:
    """Two round trips for the usual notification (the bots' locks with its body, then one
    statement per message), since every round trip is spent holding the bot's lock."""
    stored = Stored()
    if not messages:
        return stored
    first = next((m.payload for m in messages if m.payload is not None), None)
    now, payload = lock_bots(conn, namespace, {m.bot for m in messages}, clock_now, first, messages[0].source)
    payloads: dict[int, int] = {} if first is None else {id(first): payload}   # a notification's bots share one
    for m in messages:
        payload = None
        if m.payload is not None:
            payload = payloads.get(id(m.payload))
            if payload is None:
                payload = payloads[id(m.payload)] = conn.execute(
                    "INSERT INTO payloads (source, body, created) VALUES (%s, %s, %s) RETURNING id",
                    (m.source, m.payload, now)).fetchone()[0]
        added, gone = conn.execute(_INSERT, {
            "bot": m.bot, "group": m.group_key, "identity": m.identity, "source": m.source, "payload": payload,
            "alerts": None if m.alerts is None else json.dumps(m.alerts), "routed": m.routed,
            "bodies": None if m.bodies is None else json.dumps(m.bodies, ensure_ascii=False, separators=(",", ":")),
            "now": now, "window": dedupe_window, "dedupe": dedupe_window > 0 and bool(m.identity),
            "coalesce": coalesce}).fetchone()
        if added is None:
            stored.duplicates.append(m)
            continue
        stored.superseded += [(i, m.bot, m.group_key) for i in gone]
        stored.ids.append(added)
    return stored


# One message, in one statement:
# - fresh: dedupe, an upsert of (bot, identity) that writes (and returns a row) only if
#   the key is new or its window has passed; of two replicas storing it at once the
#   second waits for the first's row and then finds it;
# - gone: coalescing, the group's pending messages superseded (not one in flight: a
#   sender's claim locks the row it marks, so a row is superseded or sent, never both;
#   one with some parts sent goes too, the newer one shows the whole group as it is now);
# - added: the message. All three see the same snapshot: the new row supersedes nothing
#   of its own. A duplicate does neither of the last two.
_INSERT = f"""
WITH fresh AS (
    INSERT INTO dedupe AS d (bot, identity, created) SELECT %(bot)s, %(identity)s, %(now)s WHERE %(dedupe)s
    ON CONFLICT (bot, identity) DO UPDATE SET created = excluded.created
    WHERE d.created <= excluded.created - %(window)s RETURNING 1),
go AS (SELECT 1 WHERE NOT %(dedupe)s OR EXISTS (SELECT 1 FROM fresh)),
gone AS (
    UPDATE messages SET state = '{SUPERSEDED}', finished = %(now)s, reason = 'superseded', payload = NULL
    WHERE %(coalesce)s AND bot = %(bot)s AND group_key = %(group)s AND state = '{PENDING}'
    AND EXISTS (SELECT 1 FROM go) RETURNING id),
added AS (
    INSERT INTO messages (bot, group_key, identity, source, payload, alerts, routed, bodies, state, created,
                          next_attempt)
    SELECT %(bot)s, %(group)s, %(identity)s, %(source)s, %(payload)s, %(alerts)s, %(routed)s, %(bodies)s,
           '{PENDING}', %(now)s, %(now)s
    WHERE EXISTS (SELECT 1 FROM go) RETURNING id)
SELECT (SELECT id FROM added), ARRAY(SELECT id FROM gone)
"""


def requeue(conn: psycopg.Connection, namespace: int, ids: list[int], clock_now: float | None) -> int:
    """Dead letters back to pending, each at the back of its bot's queue, in `ids` order."""
    rows = conn.execute("SELECT id, bot FROM messages WHERE id = ANY(%s) AND state = %s", (ids, DEAD)).fetchall()
    if not rows:
        return 0
    now, _ = lock_bots(conn, namespace, {bot for _, bot in rows}, clock_now)
    dead = {id_ for id_, _ in rows}
    count = 0
    for message_id in (i for i in ids if i in dead):
        # A fresh age (max_age counts from now), a place at the back of the queue, and
        # when it has its payload, rendered again: the fix that made it worth a retry (a
        # keyword, a template) then applies.
        count += conn.execute(
            "UPDATE messages SET state = %s, seq = nextval('message_seq'), attempts = 0, created = %s,"
            " next_attempt = %s, finished = NULL, bodies = CASE WHEN payload IS NULL THEN bodies END,"
            " sent = CASE WHEN payload IS NULL THEN sent ELSE 0 END WHERE id = %s AND state = %s",
            (PENDING, now, now, message_id, DEAD)).rowcount
    return count


def extend_lease(conn: psycopg.Connection, bot: str, owner: str, now: float, ttl: float) -> bool:
    """The lease, checked and extended: the row lock it takes fences the rest of the
    transaction against a takeover (which waits for it, or wins first and this fails)."""
    return conn.execute("UPDATE bots SET expires = %s WHERE bot = %s AND owner = %s AND expires > %s",
                        (now + ttl, bot, owner, now)).rowcount == 1


def settle(conn: psycopg.Connection, message_id: int, send_id: int, bot: str, owner: str, now: float, *,
           state: str, finished: float | None, reason: str, code: int | None, detail: str | None,
           sent: bool = False, in_flight: float = 0.0) -> bool:
    """Record a send's end (`in_flight` seconds from now: see Outbox.reschedule) and the
    message's new state; False if a new lease holder has taken the message back meanwhile. A sent message lets go of its payload; a dead
    letter keeps it (`outbox retry` renders it again).

    The message first, then the send record: a takeover (outbox.acquire) locks them in
    that order too, so a lapsed holder settling late never waits for it crosswise."""
    ours = conn.execute(
        "UPDATE messages SET state = %s, owner = NULL, finished = %s, reason = %s, code = %s, detail = %s,"
        " sent = sent + %s, payload = CASE WHEN %s THEN NULL ELSE payload END"
        " WHERE id = %s AND owner = %s AND state = %s",
        (state, finished, reason, code, detail, int(sent), state == SENT, message_id, owner, SENDING)).rowcount == 1
    if send_id:
        conn.execute("UPDATE sends SET finished = %s WHERE id = %s", (now + in_flight, send_id))
        forget_old_sends(conn, bot, now)
    return ours


def forget_old_sends(conn: psycopg.Connection, bot: str, now: float) -> None:
    """The rate limit looks back at most SENDS_KEPT seconds: older send records go, and
    what they counted in."""
    conn.execute("DELETE FROM send_windows WHERE send_id IN (SELECT id FROM sends WHERE bot = %s AND finished < %s)",
                 (bot, now - SENDS_KEPT))
    conn.execute("DELETE FROM sends WHERE bot = %s AND finished < %s", (bot, now - SENDS_KEPT))


def lock_windows(conn: psycopg.Connection, namespace: int, windows: Sequence[Window]) -> None:
    """Take the windows' locks (until the commit), in key order, before anything else of
    the claim: a claim checks and fills its windows as one decision, and holds no row
    while it waits for them."""
    keys = sorted({lock_key(f"window:{w.key}") for w in windows})
    if keys:
        conn.execute("SELECT " + ", ".join(f"pg_advisory_xact_lock({namespace}, {key})" for key in keys))


def check_windows(conn: psycopg.Connection, windows: Sequence[Window], now: float) -> None:
    """records.check_windows on this database (the windows' locks held)."""
    def ends_of(key: str, since: float) -> list[float | None]:
        return [r[0] for r in conn.execute(
            "SELECT s.finished FROM send_windows w JOIN sends s ON s.id = w.send_id WHERE w.key = %s"
            " AND (s.finished > %s OR (s.finished IS NULL AND s.started > %s))", (key, since, now - SENDS_KEPT))]

    records.check_windows(windows, now, ends_of)


def prune_batch(conn: psycopg.Connection, before: float) -> tuple[int, bool]:
    """One batch of prune (see Outbox.prune): a long delete would hold its locks and
    make the accepts that need them wait. (messages deleted, whether more may be left)"""
    removed = conn.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state IN (%s, %s) AND finished < %s"
        " LIMIT %s)", (SENT, SUPERSEDED, before, PRUNE_BATCH)).rowcount
    # Done rows no longer name their payload (settle, _supersede): a payload no row names
    # is one nobody needs. One stored by a transaction not yet committed is not seen here,
    # and its message, committed with it, names it.
    conn.execute("DELETE FROM payloads WHERE id IN (SELECT p.id FROM payloads p WHERE NOT EXISTS"
                 " (SELECT 1 FROM messages m WHERE m.payload = p.id) LIMIT %s)", (PRUNE_BATCH,))
    forgotten = conn.execute("DELETE FROM dedupe WHERE ctid IN (SELECT ctid FROM dedupe WHERE created < %s LIMIT %s)",
                             (before, PRUNE_BATCH)).rowcount
    return removed, PRUNE_BATCH in (removed, forgotten)
