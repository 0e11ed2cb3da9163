"""The outbox's tables, created on first use and migrated from older versions.

One file (config `storage.path`, WAL mode) is shared by every gunicorn worker process.
Four tables:

    payloads  each accepted notification's body, as received (JSON; zlib-compressed
              when `packed`, schema 7), kept while a message still needs it. Accepting
              stores this and nothing derived from it: rendering happens at send time,
              once per message (bridge.pipeline).
    messages  one row per notification and bot: which of the payload's alerts are the
              bot's, and once rendered, the Feishu request bodies (`bodies`, one or
              more parts) and how many of them are sent. state: pending -> sending ->
              pending (the next part) ... -> sent, or -> dead (a dead letter, kept until
              `outbox retry`), or -> superseded (a newer message of the same group
              replaced it while it waited). `seq` is the send order: the order the
              rows were committed in (schema 8: a new row's is its id plus
              outbox_meta's `seq_offset`, with no index of its own). `gkey` (schema 7) hashes (bot, group_key): dedupe
              and coalescing find a group's rows by it (accepting.py says why). `body`
              (schema 7) is a one-bot notification's payload, compressed, in the row
              itself; `payload` names a shared one. Both are cleared when the row is
              done (sent, superseded): it is kept after that only for deduplication.
    bots      one row per bot: the sender lease (owner, expires) and the bot's retry
              pause (paused_until, backoff), so a process that takes the bot over
              carries on where the last one stopped.
    sends     when each request to Feishu started and ended, for the rate limit;
              only the last minute is kept.
    cards     app bots (schema 3): each alert group's card per bot, its Feishu message
              ids (`parts`, JSON [[message_id, sent], ...]) and what it shows
              (`firing` fingerprints, `closed`, `buzzed`); forgotten 30 days unchanged.
    app_tokens  app bots (schema 3): each app's access token, shared by every process.
              A secret, like the webhook URLs in the config: the file needs the same care.
    send_windows  app bots (schema 4): the windows shared by several bots that each send
              record also counts in (`key`: an app's, a chat's), so that every process
              keeps to Feishu's per-app and per-chat limits (Outbox.claim's windows).
              Forgotten with their send record.
    app_users app bots (schema 5): the open_id each app's contact API gave for an email
              (NULL: not found), until `expires`; shared by every process, so an email
              costs one lookup per app, not one per worker (bridge.notify.feishu_app.people).
    group_actions  card actions (schema 6): per app bot and group (`ref`, the id its
              buttons carry), the chat, where to silence it (source, external_url,
              matchers), the first part as rendered (`body`), who acknowledged it, the
              silence made from it, and `pending`: a silence being made (one at a time);
              forgotten when unchanged as long as cards are (CARDS_KEPT).
    callback_events  card actions (schema 6): the event ids of Feishu's callbacks handled
              lately, so a replayed one is refused by every process; kept an hour.
    outbox_meta  (schema 8) the store's own numbers: `seq_offset` (see messages.seq).
"""

from __future__ import annotations

import sqlite3

from .accepting import group_hash
from .engine import patiently

SCHEMA_VERSION = 8
# A new file's page size. Every commit writes each page it touches whole, and an accept
# touches a leaf of the messages_key index at random: smaller pages write less per accept.
# Files made before keep theirs (a WAL file's page size cannot change without a VACUUM).
PAGE_SIZE = 1024

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS payloads (
        id INTEGER PRIMARY KEY, source TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL,
        packed INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, bot TEXT NOT NULL,
        group_key TEXT NOT NULL, identity TEXT NOT NULL, source TEXT NOT NULL,
        payload INTEGER REFERENCES payloads (id), alerts TEXT, routed INTEGER NOT NULL DEFAULT 1,
        bodies TEXT, sent INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL, owner TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL,
        next_attempt REAL NOT NULL, finished REAL,
        reason TEXT, code INTEGER, detail TEXT, gkey INTEGER, body BLOB)""",
    "CREATE INDEX IF NOT EXISTS messages_queue ON messages (bot, state, seq)",
    # Schema 8: no index on seq (the queue's index has it after bot and state); a new row's
    # seq is its id plus `seq_offset`, which a requeue raises (accepting.py).
    """CREATE TABLE IF NOT EXISTS outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)""",
    # Dedupe and coalescing (accepting.py); replaces schema 3's messages_identity
    # (bot, identity, created) and messages_group (bot, group_key, state).
    "CREATE INDEX IF NOT EXISTS messages_key ON messages (gkey, state)",
    # With the foreign key enforced, deleting a payload looks for messages still naming
    # it: without this index that is a scan of messages per payload, and prune deleting
    # 1 000 payloads beside 200 000 kept rows held the write lock for 6 s (2 ms with it).
    # Only rows that still need their payload are in it. The extra index entry per
    # accept cost nothing measurable (8 threads storing 3 000 messages, A B A B six
    # times: ~8 000/s either way, within the noise).
    "CREATE INDEX IF NOT EXISTS messages_payload ON messages (payload) WHERE payload IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS bots (
        bot TEXT PRIMARY KEY, owner TEXT, expires REAL NOT NULL DEFAULT 0,
        paused_until REAL NOT NULL DEFAULT 0, backoff REAL NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS sends (
        id INTEGER PRIMARY KEY, bot TEXT NOT NULL, started REAL NOT NULL, finished REAL)""",
    "CREATE INDEX IF NOT EXISTS sends_bot ON sends (bot, id)",
    """CREATE TABLE IF NOT EXISTS cards (
        bot TEXT NOT NULL, group_key TEXT NOT NULL, parts TEXT NOT NULL, firing TEXT NOT NULL,
        closed INTEGER NOT NULL, buzzed INTEGER NOT NULL, updated REAL NOT NULL,
        PRIMARY KEY (bot, group_key))""",
    "CREATE INDEX IF NOT EXISTS cards_updated ON cards (updated)",
    """CREATE TABLE IF NOT EXISTS app_tokens (
        key TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL)""",
    # Schemas 4 (send_windows), 5 (app_users) and 6 (group_actions, callback_events):
    # only new tables (and their indexes), so they apply to a file of any version before;
    # a bridge of an earlier schema refuses the file afterwards.
    """CREATE TABLE IF NOT EXISTS send_windows (
        key TEXT NOT NULL, send_id INTEGER NOT NULL, PRIMARY KEY (key, send_id)) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS send_windows_send ON send_windows (send_id)",
    """CREATE TABLE IF NOT EXISTS app_users (
        key TEXT NOT NULL, email TEXT NOT NULL, open_id TEXT, expires REAL NOT NULL,
        PRIMARY KEY (key, email))""",
    "CREATE INDEX IF NOT EXISTS app_users_expires ON app_users (expires)",
    """CREATE TABLE IF NOT EXISTS group_actions (
        ref TEXT PRIMARY KEY, bot TEXT NOT NULL, group_key TEXT NOT NULL, chat TEXT NOT NULL,
        source TEXT NOT NULL, external_url TEXT NOT NULL, matchers TEXT NOT NULL, body TEXT NOT NULL,
        acked_by TEXT, acked_at REAL, silence_id TEXT, silenced_by TEXT, silenced_until REAL,
        silence_url TEXT, pending REAL, updated REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS group_actions_updated ON group_actions (updated)",
    """CREATE TABLE IF NOT EXISTS callback_events (
        event_id TEXT PRIMARY KEY, seen REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS callback_events_seen ON callback_events (seen)",
)


def create(conn: sqlite3.Connection, deadline: float) -> None:
    """Create the tables, or bring an older file up to date (once per process)."""
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")     # a new file: before its first page
    mode = patiently(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone()[0], deadline)
    if mode != "wal":
        # Without WAL, readers block the writer and several processes would stall each other.
        raise sqlite3.OperationalError(f"cannot use WAL journal mode (got {mode})")
    patiently(lambda: conn.execute("BEGIN IMMEDIATE"), deadline)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise sqlite3.OperationalError(f"written by a newer version (schema {version} > {SCHEMA_VERSION})")
        if version == 1:
            _migrate_from_1(conn)
        if version >= 2:
            _forget_done_payloads(conn)
        if version >= 1:
            _lean_accepts(conn)
        # 2 -> 3 adds the app bots' tables (cards, app_tokens) and changes nothing else:
        # _SCHEMA below creates them. A bridge of schema 2 refuses the file afterwards.
        # 3 -> 4 adds send_windows (the shared rate windows), 5 app_users and 6 group_actions
        # and callback_events (card actions), likewise.
        for statement in _SCHEMA:
            conn.execute(statement)
        _seq_without_index(conn)
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


def _lean_accepts(conn: sqlite3.Connection) -> None:
    """To schema 7 (accepting.py), from any earlier file: payloads.packed (0: the rows
    there are stored as received), messages.body (a one-bot notification's payload, in
    its row), messages.gkey filled in for every row, and the two
    indexes it replaces dropped. Checked by the columns, not the version number, so the
    step stands on its own whatever steps come before it."""
    if "packed" not in _columns(conn, "payloads"):
        conn.execute("ALTER TABLE payloads ADD COLUMN packed INTEGER NOT NULL DEFAULT 0")
    columns = _columns(conn, "messages")
    if "gkey" not in columns:
        conn.execute("ALTER TABLE messages ADD COLUMN gkey INTEGER")
    if "body" not in columns:
        conn.execute("ALTER TABLE messages ADD COLUMN body BLOB")
    conn.create_function("group_hash", 2, group_hash, deterministic=True)
    conn.execute("UPDATE messages SET gkey = group_hash(bot, group_key) WHERE gkey IS NULL")
    for index in ("messages_identity", "messages_group"):
        conn.execute(f"DROP INDEX IF EXISTS {index}")


def _seq_without_index(conn: sqlite3.Connection) -> None:
    """To schema 8, from any file: a seq_offset that puts every new row after every row
    there (the largest seq: a requeue may have given a row a seq above every id, and the
    newest ids may be deleted and taken again), then messages_seq dropped. Checked by the
    row, not the version number."""
    if conn.execute("SELECT 1 FROM outbox_meta WHERE key = 'seq_offset'").fetchone() is None:
        offset = conn.execute("SELECT IFNULL(MAX(seq), 0) FROM messages").fetchone()[0]
        conn.execute("INSERT INTO outbox_meta (key, value) VALUES ('seq_offset', ?)", (offset,))
    conn.execute("DROP INDEX IF EXISTS messages_seq")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def _forget_done_payloads(conn: sqlite3.Connection) -> None:
    """Once, on a file written before the foreign key was enforced (it has no
    messages_payload index yet): sent and superseded rows kept naming payloads that
    prune had already deleted. They never need them again, so the reference goes.
    Not a new schema version: the file stays usable by the version before (which may
    leave such rows again; they are never written to, and prune deletes them)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'messages_payload'").fetchone():
        return
    conn.execute("UPDATE messages SET payload = NULL WHERE payload IS NOT NULL AND state IN ('sent', 'superseded')")
