"""The outbox's tables in PostgreSQL: created at start-up, versioned, migrated.

Everything lives in one schema (storage.postgres.schema, created if missing). The
tables mirror the SQLite backend's (bridge/store/sqlite/schema.py tells what each
holds), with times as seconds since the epoch (double precision) from the database's
clock, and two differences:

    messages.seq  the send order, from one sequence, taken while the bot's advisory
                  lock is held (see outbox.py): within a bot it is the commit order.
    dedupe        (bot, identity) -> when it was first stored: the dedupe window's
                  record, one row per key (its primary key makes "stored once" hold
                  for concurrent replicas), kept apart from messages so that pruning
                  a message does not forget it.

`meta` holds the schema's version. Every replica prepares the schema when it starts,
inside one transaction holding an advisory lock, so replicas starting together do it
one after the other (the others then find it done). A bridge older than the schema
refuses it: it cannot know what the newer one changed. Migrations must keep the
version before working (expand, then contract a version later): during a rolling
upgrade the old replicas run on the new schema until they are replaced.
"""

from __future__ import annotations

import psycopg

from ...errors import StorageError
from .engine import lock_key

SCHEMA_VERSION = 5
MIGRATE_LOCK = lock_key("migrate")

# Each version's statements, applied in order from the database's version + 1.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        "CREATE SEQUENCE message_seq",
        """CREATE TABLE payloads (
            id bigserial PRIMARY KEY, source text NOT NULL, body bytea NOT NULL,
            created double precision NOT NULL)""",
        """CREATE TABLE messages (
            id bigserial PRIMARY KEY, seq bigint NOT NULL DEFAULT nextval('message_seq'), bot text NOT NULL,
            group_key text NOT NULL, identity text NOT NULL, source text NOT NULL,
            payload bigint REFERENCES payloads (id), alerts text, routed boolean NOT NULL DEFAULT true,
            bodies text, sent integer NOT NULL DEFAULT 0, state text NOT NULL, owner text,
            attempts integer NOT NULL DEFAULT 0, created double precision NOT NULL,
            next_attempt double precision NOT NULL, finished double precision,
            reason text, code integer, detail text)""",
        "CREATE INDEX messages_queue ON messages (bot, state, seq)",
        "CREATE INDEX messages_state ON messages (state, seq)",
        "CREATE INDEX messages_group ON messages (bot, group_key, state)",
        "CREATE INDEX messages_payload ON messages (payload) WHERE payload IS NOT NULL",
        "CREATE INDEX messages_done ON messages (finished) WHERE state IN ('sent', 'superseded')",
        """CREATE TABLE dedupe (
            bot text NOT NULL, identity text NOT NULL, created double precision NOT NULL,
            PRIMARY KEY (bot, identity))""",
        "CREATE INDEX dedupe_created ON dedupe (created)",
        """CREATE TABLE bots (
            bot text PRIMARY KEY, owner text, expires double precision NOT NULL DEFAULT 0,
            paused_until double precision NOT NULL DEFAULT 0, backoff double precision NOT NULL DEFAULT 0)""",
        """CREATE TABLE sends (
            id bigserial PRIMARY KEY, bot text NOT NULL, started double precision NOT NULL,
            finished double precision)""",
        "CREATE INDEX sends_bot ON sends (bot, id)",
    ),
    # App bots (cards.py): each group's card per bot and each app's access token. Only new
    # tables, so a replica of the version before keeps working beside them.
    2: (
        """CREATE TABLE cards (
            bot text NOT NULL, group_key text NOT NULL, parts text NOT NULL, firing text NOT NULL,
            closed boolean NOT NULL, buzzed boolean NOT NULL, updated double precision NOT NULL,
            PRIMARY KEY (bot, group_key))""",
        "CREATE INDEX cards_updated ON cards (updated)",
        """CREATE TABLE app_tokens (
            key text PRIMARY KEY, token text NOT NULL, expires double precision NOT NULL)""",
    ),
    # The rate windows shared by several bots (an app's, a chat's) that each send record
    # also counts in (Outbox.claim's windows). Only a new table: a replica of the version
    # before keeps working beside it (it does not count in them).
    3: (
        """CREATE TABLE send_windows (
            key text NOT NULL, send_id bigint NOT NULL, PRIMARY KEY (key, send_id))""",
        "CREATE INDEX send_windows_send ON send_windows (send_id)",
    ),
    # App bots: the open_id each app's contact API gave for an email (NULL: not found), until
    # `expires` (cards.py, bridge.notify.feishu_app.people). Only a new table.
    4: (
        """CREATE TABLE app_users (
            key text NOT NULL, email text NOT NULL, open_id text, expires double precision NOT NULL,
            PRIMARY KEY (key, email))""",
        "CREATE INDEX app_users_expires ON app_users (expires)",
    ),
    # Card actions (actions.py): what was done from each group's card. A new table only.
    5: (
        """CREATE TABLE group_actions (
            ref text PRIMARY KEY, bot text NOT NULL, group_key text NOT NULL, chat text NOT NULL,
            source text NOT NULL, external_url text NOT NULL, matchers text NOT NULL, body text NOT NULL,
            acked_by text, acked_at double precision, silence_id text, silenced_by text,
            silenced_until double precision, silence_url text, pending double precision,
            updated double precision NOT NULL)""",
        "CREATE INDEX group_actions_updated ON group_actions (updated)",
        "CREATE TABLE callback_events (event_id text PRIMARY KEY, seen double precision NOT NULL)",
        "CREATE INDEX callback_events_seen ON callback_events (seen)",
    ),
}
assert max(_MIGRATIONS) == SCHEMA_VERSION


def prepare(conn: psycopg.Connection, schema: str, namespace: int) -> None:
    """Create the schema, or bring it up to this version; raise StorageError if it is
    newer than this bridge. `conn` is in autocommit mode; this is one transaction."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (namespace, MIGRATE_LOCK))
        # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs the right to create
        # schemas, which a database whose schema was made by its administrator may not give.
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
            conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET LOCAL search_path TO {schema}")
        version = current_version(conn, schema)
        if version > SCHEMA_VERSION:
            raise StorageError(f"the outbox schema {schema} is at version {version}, written by a newer "
                               f"feishu-alert-bridge; this one knows versions up to {SCHEMA_VERSION} and "
                               "refuses to touch it: run the newer version (or a new schema)")
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                         " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(step),))


def current_version(conn: psycopg.Connection, schema: str) -> int:
    """The schema's version; 0 when it has no tables yet."""
    if conn.execute("SELECT to_regclass(%s)", (f"{schema}.meta",)).fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0
