"""App bots' rows in PostgreSQL: each group's card (written by mark_sent, in its
transaction) and each app's access token. The same rules as the SQLite backend's
(bridge/store/sqlite/cards.py); the tables are schema version 2 (schema.py)."""

from __future__ import annotations

import json

import psycopg

from .. import CARDS_KEPT
from ..records import Card, CardChange, CardPart

_CARD = "SELECT parts, firing, closed, buzzed, updated FROM cards WHERE bot = %s AND group_key = %s"


def read(conn: psycopg.Connection, bot: str, group_key: str) -> Card | None:
    row = conn.execute(_CARD, (bot, group_key)).fetchone()
    return _card(row) if row else None


def change(conn: psycopg.Connection, bot: str, change: CardChange, now: float) -> None:
    """Read (locking the row), apply (CardChange.applied: the rule every backend shares),
    write. Only the bot's lease holder gets here, inside the transaction that settles the
    message it holds; the row lock orders it after any other writer all the same."""
    row = conn.execute(_CARD + " FOR UPDATE", (bot, change.group_key)).fetchone()
    card = change.applied(_card(row) if row else None, now)
    conn.execute("INSERT INTO cards (bot, group_key, parts, firing, closed, buzzed, updated)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (bot, group_key) DO UPDATE SET"
                 " parts = excluded.parts, firing = excluded.firing, closed = excluded.closed,"
                 " buzzed = excluded.buzzed, updated = excluded.updated",
                 (bot, change.group_key, json.dumps([[p.message_id, p.sent] for p in card.parts]),
                  json.dumps(list(card.firing)), card.closed, card.buzzed, card.updated))


def app_token(conn: psycopg.Connection, key: str) -> tuple[str, float] | None:
    row = conn.execute("SELECT token, expires FROM app_tokens WHERE key = %s", (key,)).fetchone()
    return (row[0], row[1]) if row else None


def keep_app_token(conn: psycopg.Connection, key: str, token: str, expires: float) -> None:
    conn.execute("INSERT INTO app_tokens (key, token, expires) VALUES (%s, %s, %s) ON CONFLICT (key)"
                 " DO UPDATE SET token = excluded.token, expires = excluded.expires", (key, token, expires))


def prune(conn: psycopg.Connection, now: float, batch: int) -> None:
    """Cards unchanged for CARDS_KEPT (Feishu updates a message for 14 days), expired tokens."""
    conn.execute("DELETE FROM cards WHERE ctid IN (SELECT ctid FROM cards WHERE updated < %s LIMIT %s)",
                 (now - CARDS_KEPT, batch))
    conn.execute("DELETE FROM app_tokens WHERE expires < %s", (now,))


def _card(row: tuple) -> Card:
    parts, firing, closed, buzzed, updated = row
    return Card(tuple(CardPart(m, t) for m, t in json.loads(parts)), tuple(json.loads(firing)), bool(closed),
                bool(buzzed), updated)
