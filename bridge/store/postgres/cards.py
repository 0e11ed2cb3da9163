"""App bots' rows in PostgreSQL: each group's card (written by mark_sent, in its
transaction), each app's access token and the open_ids its contact API gave for emails.
The same rules as the SQLite backend's
(bridge/store/sqlite/cards.py); the tables are schema versions 2 and 4 (schema.py)."""

from __future__ import annotations

from typing import Mapping, Sequence

import psycopg

from .. import CARDS_KEPT
from ..records import Card, CardChange

_CARD = "SELECT parts, firing, closed, buzzed, updated FROM cards WHERE bot = %s AND group_key = %s"


def read(conn: psycopg.Connection, bot: str, group_key: str) -> Card | None:
    row = conn.execute(_CARD, (bot, group_key)).fetchone()
    return Card.from_stored(row) if row else None


def change(conn: psycopg.Connection, bot: str, change: CardChange, now: float) -> None:
    """Read (locking the row), apply (CardChange.applied: the rule every backend shares),
    write. Only the bot's lease holder gets here, inside the transaction that settles the
    message it holds; the row lock orders it after any other writer all the same."""
    row = conn.execute(_CARD + " FOR UPDATE", (bot, change.group_key)).fetchone()
    card = change.applied(Card.from_stored(row) if row else None, now)
    conn.execute("INSERT INTO cards (bot, group_key, parts, firing, closed, buzzed, updated)"
                 " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (bot, group_key) DO UPDATE SET"
                 " parts = excluded.parts, firing = excluded.firing, closed = excluded.closed,"
                 " buzzed = excluded.buzzed, updated = excluded.updated",
                 (bot, change.group_key, *card.stored()))


def app_token(conn: psycopg.Connection, key: str) -> tuple[str, float] | None:
    row = conn.execute("SELECT token, expires FROM app_tokens WHERE key = %s", (key,)).fetchone()
    return (row[0], row[1]) if row else None


def keep_app_token(conn: psycopg.Connection, key: str, token: str, expires: float) -> None:
    conn.execute("INSERT INTO app_tokens (key, token, expires) VALUES (%s, %s, %s) ON CONFLICT (key)"
                 " DO UPDATE SET token = excluded.token, expires = excluded.expires", (key, token, expires))


def app_users(conn: psycopg.Connection, key: str, emails: Sequence[str]) -> dict[str, tuple[str | None, float]]:
    rows = conn.execute("SELECT email, open_id, expires FROM app_users WHERE key = %s AND email = ANY(%s)",
                        (key, list(dict.fromkeys(emails)))).fetchall()
    return {email: (open_id, expires) for email, open_id, expires in rows}


def keep_app_users(conn: psycopg.Connection, key: str, users: Mapping[str, tuple[str | None, float]]) -> None:
    # In the order of the key: two replicas keeping overlapping emails at once lock the rows
    # in one order and cannot deadlock.
    with conn.cursor() as cursor:
        cursor.executemany("INSERT INTO app_users (key, email, open_id, expires) VALUES (%s, %s, %s, %s)"
                           " ON CONFLICT (key, email) DO UPDATE SET open_id = excluded.open_id,"
                           " expires = excluded.expires",
                           [(key, email, *users[email]) for email in sorted(users)])


def prune(conn: psycopg.Connection, now: float, batch: int) -> None:
    """Cards unchanged for CARDS_KEPT (30 days: bridge.store says why), expired tokens
    and looked-up users."""
    conn.execute("DELETE FROM cards WHERE ctid IN (SELECT ctid FROM cards WHERE updated < %s LIMIT %s)",
                 (now - CARDS_KEPT, batch))
    conn.execute("DELETE FROM app_tokens WHERE expires < %s", (now,))
    conn.execute("DELETE FROM app_users WHERE expires < %s", (now,))
