"""App bots' rows in the SQLite outbox: each group's card (written by mark_sent, in its
transaction), each app's access token and the open_ids its contact API gave for emails
(schema.py has the tables)."""

from __future__ import annotations

import sqlite3
from typing import Mapping, Sequence

from .. import CARDS_KEPT
from ..records import Card, CardChange
from .engine import Engine

# SQLite allows 999 parameters a statement in older builds; a lookup asks for a few emails.
_IN_BATCH = 500
_CARD = "SELECT parts, firing, closed, buzzed, updated FROM cards WHERE bot = ? AND group_key = ?"


def read(engine: Engine, bot: str, group_key: str) -> Card | None:
    rows = engine.read(_CARD, (bot, group_key))
    return Card.from_stored(rows[0]) if rows else None


def change(conn: sqlite3.Connection, bot: str, change: CardChange, now: float) -> None:
    """Read, apply (CardChange.applied: the rule every backend shares), write: one decision
    only because no other writer runs meanwhile, and only the bot's lease holder writes."""
    row = conn.execute(_CARD, (bot, change.group_key)).fetchone()
    card = change.applied(Card.from_stored(row) if row else None, now)
    conn.execute("INSERT INTO cards (bot, group_key, parts, firing, closed, buzzed, updated)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bot, group_key) DO UPDATE SET parts = excluded.parts,"
                 " firing = excluded.firing, closed = excluded.closed, buzzed = excluded.buzzed,"
                 " updated = excluded.updated",
                 (bot, change.group_key, *card.stored()))


def app_token(engine: Engine, key: str) -> tuple[str, float] | None:
    rows = engine.read("SELECT token, expires FROM app_tokens WHERE key = ?", (key,))
    return (rows[0][0], rows[0][1]) if rows else None


def keep_app_token(engine: Engine, key: str, token: str, expires: float) -> None:
    with engine.write("keep an app token in") as conn:
        conn.execute("INSERT INTO app_tokens (key, token, expires) VALUES (?, ?, ?) ON CONFLICT (key)"
                     " DO UPDATE SET token = excluded.token, expires = excluded.expires", (key, token, expires))


def app_users(engine: Engine, key: str, emails: Sequence[str]) -> dict[str, tuple[str | None, float]]:
    found: dict[str, tuple[str | None, float]] = {}
    wanted = list(dict.fromkeys(emails))
    for start in range(0, len(wanted), _IN_BATCH):
        batch = wanted[start:start + _IN_BATCH]
        rows = engine.read(f"SELECT email, open_id, expires FROM app_users WHERE key = ? AND email IN"
                           f" ({', '.join('?' * len(batch))})", (key, *batch))
        found.update((email, (open_id, expires)) for email, open_id, expires in rows)
    return found


def keep_app_users(engine: Engine, key: str, users: Mapping[str, tuple[str | None, float]]) -> None:
    with engine.write("keep looked-up users in") as conn:
        conn.executemany("INSERT INTO app_users (key, email, open_id, expires) VALUES (?, ?, ?, ?)"
                         " ON CONFLICT (key, email) DO UPDATE SET open_id = excluded.open_id,"
                         " expires = excluded.expires",
                         [(key, email, open_id, expires) for email, (open_id, expires) in users.items()])


def prune(engine: Engine, now: float, batch: int) -> None:
    """Cards unchanged for CARDS_KEPT (30 days: bridge.store says why), expired tokens
    and looked-up users."""
    with engine.write("prune cards in") as conn:
        conn.execute("DELETE FROM cards WHERE rowid IN (SELECT rowid FROM cards WHERE updated < ? LIMIT ?)",
                     (now - CARDS_KEPT, batch))
        conn.execute("DELETE FROM app_tokens WHERE expires < ?", (now,))
        conn.execute("DELETE FROM app_users WHERE expires < ?", (now,))
