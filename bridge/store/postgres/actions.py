"""What was done from app bots' cards, in PostgreSQL (table group_actions, schema 5): the
same rules as the SQLite backend's (bridge/store/sqlite/actions.py). Each function runs
in the caller's transaction; one statement each, so concurrent replicas agree (the claim
is one conditional UPDATE)."""

from __future__ import annotations

import json

import psycopg

from .. import CARDS_KEPT, EVENTS_KEPT
from ..records import GroupActions, GroupTarget, Silence, group_ref

_COLUMNS = GroupActions.COLUMNS


def remember(conn: psycopg.Connection, bot: str, group_key: str, target: GroupTarget, fresh: bool,
             now: float) -> GroupActions:
    ref = group_ref(bot, group_key)
    conn.execute(
        "INSERT INTO group_actions (ref, bot, group_key, chat, source, external_url, matchers, body, updated)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (ref) DO UPDATE SET chat = excluded.chat,"
        " source = excluded.source, external_url = excluded.external_url, matchers = excluded.matchers,"
        " body = excluded.body, updated = excluded.updated",
        (ref, bot, group_key, target.chat, target.source, target.external_url,
         json.dumps(target.matchers, sort_keys=True), json.dumps(target.body), now))
    if fresh:   # a new card for a new firing: what was done from the last one is over
        conn.execute("UPDATE group_actions SET acked_by = NULL, acked_at = NULL, silence_id = NULL,"
                     " silenced_by = NULL, silenced_until = NULL, silence_url = NULL, pending = NULL"
                     " WHERE ref = %s", (ref,))
    row = conn.execute(f"SELECT {_COLUMNS} FROM group_actions WHERE ref = %s", (ref,)).fetchone()
    return GroupActions.from_stored(row)


def read(conn: psycopg.Connection, ref: str) -> GroupActions | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM group_actions WHERE ref = %s", (ref,)).fetchone()
    return GroupActions.from_stored(row) if row else None


def claim_silence(conn: psycopg.Connection, ref: str, now: float, hold: float) -> bool:
    return conn.execute(
        "UPDATE group_actions SET pending = %s WHERE ref = %s AND (silence_id IS NULL OR silenced_until <= %s)"
        " AND (pending IS NULL OR pending < %s)", (now, ref, now, now - hold)).rowcount == 1


def settle_silence(conn: psycopg.Connection, ref: str, silence: Silence | None, now: float) -> None:
    if silence is None:
        conn.execute("UPDATE group_actions SET pending = NULL WHERE ref = %s", (ref,))
    else:
        conn.execute("UPDATE group_actions SET silence_id = %s, silenced_by = %s, silenced_until = %s,"
                     " silence_url = %s, pending = NULL, updated = %s WHERE ref = %s",
                     (silence.silence_id, silence.by, silence.until, silence.url, now, ref))


def expire_silence(conn: psycopg.Connection, ref: str, silence_id: str, now: float) -> None:
    conn.execute("UPDATE group_actions SET silence_id = NULL, silenced_by = NULL, silenced_until = NULL,"
                 " silence_url = NULL, updated = %s WHERE ref = %s AND silence_id = %s", (now, ref, silence_id))


def acknowledge(conn: psycopg.Connection, ref: str, by: str, now: float) -> None:
    conn.execute("UPDATE group_actions SET acked_by = %s, acked_at = %s, updated = %s WHERE ref = %s",
                 (by, now, now, ref))


def first_event(conn: psycopg.Connection, event_id: str, now: float) -> bool:
    return conn.execute("INSERT INTO callback_events (event_id, seen) VALUES (%s, %s) ON CONFLICT (event_id)"
                        " DO NOTHING", (event_id, now)).rowcount == 1


def prune(conn: psycopg.Connection, now: float, batch: int) -> None:
    conn.execute("DELETE FROM group_actions WHERE ref IN (SELECT ref FROM group_actions WHERE updated < %s"
                 " LIMIT %s)", (now - CARDS_KEPT, batch))
    conn.execute("DELETE FROM callback_events WHERE event_id IN (SELECT event_id FROM callback_events"
                 " WHERE seen < %s LIMIT %s)", (now - EVENTS_KEPT, batch))
