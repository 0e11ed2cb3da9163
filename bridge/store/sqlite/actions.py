"""What was done from app bots' cards, in the SQLite outbox (table group_actions, schema
6): each group's target, who acknowledged it, the silence made from it. The same rules as
the PostgreSQL backend's (bridge/store/postgres/actions.py)."""

from __future__ import annotations

import json

from .. import CARDS_KEPT, EVENTS_KEPT
from ..records import GroupActions, GroupTarget, Silence, group_ref
from .engine import Engine

_COLUMNS = GroupActions.COLUMNS


def remember(engine: Engine, bot: str, group_key: str, target: GroupTarget, fresh: bool, now: float) -> GroupActions:
    ref = group_ref(bot, group_key)
    with engine.write("remember a card's group in") as conn:
        conn.execute(
            "INSERT INTO group_actions (ref, bot, group_key, chat, source, external_url, matchers, body, updated)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ref) DO UPDATE SET chat = excluded.chat,"
            " source = excluded.source, external_url = excluded.external_url, matchers = excluded.matchers,"
            " body = excluded.body, updated = excluded.updated",
            (ref, bot, group_key, target.chat, target.source, target.external_url,
             json.dumps(target.matchers, sort_keys=True), json.dumps(target.body), now))
        if fresh:   # a new card for a new firing: what was done from the last one is over
            conn.execute("UPDATE group_actions SET acked_by = NULL, acked_at = NULL, silence_id = NULL,"
                         " silenced_by = NULL, silenced_until = NULL, silence_url = NULL, pending = NULL"
                         " WHERE ref = ?", (ref,))
        row = conn.execute(f"SELECT {_COLUMNS} FROM group_actions WHERE ref = ?", (ref,)).fetchone()
    return GroupActions.from_stored(row)


def read(engine: Engine, ref: str) -> GroupActions | None:
    rows = engine.read(f"SELECT {_COLUMNS} FROM group_actions WHERE ref = ?", (ref,))
    return GroupActions.from_stored(rows[0]) if rows else None


def claim_silence(engine: Engine, ref: str, now: float, hold: float) -> bool:
    with engine.write("claim a silence in") as conn:
        return conn.execute(
            "UPDATE group_actions SET pending = ? WHERE ref = ? AND (silence_id IS NULL OR silenced_until <= ?)"
            " AND (pending IS NULL OR pending < ?)", (now, ref, now, now - hold)).rowcount == 1


def settle_silence(engine: Engine, ref: str, silence: Silence | None, now: float) -> None:
    with engine.write("record a silence in") as conn:
        if silence is None:
            conn.execute("UPDATE group_actions SET pending = NULL WHERE ref = ?", (ref,))
        else:
            conn.execute("UPDATE group_actions SET silence_id = ?, silenced_by = ?, silenced_until = ?,"
                         " silence_url = ?, pending = NULL, updated = ? WHERE ref = ?",
                         (silence.silence_id, silence.by, silence.until, silence.url, now, ref))


def expire_silence(engine: Engine, ref: str, silence_id: str, now: float) -> None:
    with engine.write("record an expired silence in") as conn:
        conn.execute("UPDATE group_actions SET silence_id = NULL, silenced_by = NULL, silenced_until = NULL,"
                     " silence_url = NULL, updated = ? WHERE ref = ? AND silence_id = ?", (now, ref, silence_id))


def acknowledge(engine: Engine, ref: str, by: str, now: float) -> None:
    with engine.write("record an acknowledgement in") as conn:
        conn.execute("UPDATE group_actions SET acked_by = ?, acked_at = ?, updated = ? WHERE ref = ?",
                     (by, now, now, ref))


def first_event(engine: Engine, event_id: str, now: float) -> bool:
    with engine.write("note a callback event in") as conn:
        return conn.execute("INSERT INTO callback_events (event_id, seen) VALUES (?, ?) ON CONFLICT (event_id)"
                            " DO NOTHING", (event_id, now)).rowcount == 1


def prune(engine: Engine, now: float, batch: int) -> None:
    with engine.write("prune card actions in") as conn:
        conn.execute("DELETE FROM group_actions WHERE rowid IN (SELECT rowid FROM group_actions WHERE updated < ?"
                     " LIMIT ?)", (now - CARDS_KEPT, batch))
        conn.execute("DELETE FROM callback_events WHERE rowid IN (SELECT rowid FROM callback_events WHERE seen < ?"
                     " LIMIT ?)", (now - EVENTS_KEPT, batch))
