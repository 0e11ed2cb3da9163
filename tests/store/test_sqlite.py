"""The SQLite outbox's own behaviour, beyond the contract: the file, its locking, its schema
and upgrades, and its foreign key. Raw SQL is allowed here (and only here)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge.errors import StorageError
from bridge.store.records import DEAD, PENDING, Window
from bridge.store.sqlite import SqliteOutbox
from bridge.store.sqlite.schema import SCHEMA_VERSION
from outbox_messages import SteppedClock, msg, payload_message


@pytest.fixture
def outbox(tmp_path, clock):
    box = SqliteOutbox(tmp_path / "sub" / "outbox.db", clock=clock)
    yield box
    box.close()


def rows(path: Path, sql: str, args: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        result = conn.execute(sql, args).fetchall()
    conn.close()
    return result


def count(outbox: SqliteOutbox, table: str) -> int:
    return rows(outbox.path, f"SELECT COUNT(*) FROM {table}")[0][0]


def broken_references(path: Path) -> list[tuple]:
    return rows(path, "PRAGMA foreign_key_check")


def test_the_file_is_created_with_its_directory_in_wal_mode(outbox, tmp_path):
    stored = outbox.store([msg(1)])
    assert (tmp_path / "sub" / "outbox.db").exists() and outbox.describe() == str(tmp_path / "sub" / "outbox.db")
    assert rows(outbox.path, "PRAGMA journal_mode") == [("wal",)]
    # The bodies kept are the unsigned messages, byte for byte what the renderer made.
    (bodies,) = rows(outbox.path, "SELECT bodies FROM messages WHERE id = ?", (stored.ids[0],))[0]
    assert tuple(json.loads(bodies)) == msg(1).bodies and "sign" not in bodies


def test_a_path_under_a_file_is_a_storage_error_with_the_reason(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StorageError, match="cannot store messages in the outbox .*file/outbox.db"):
        SqliteOutbox(tmp_path / "file" / "outbox.db").store([msg(1)])


def test_a_database_locked_beyond_the_busy_timeout_is_a_storage_error(tmp_path):
    box = SqliteOutbox(tmp_path / "outbox.db", busy_timeout=0.2)
    box.open()
    holder = sqlite3.connect(box.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="database is locked"):
            box.store([msg(1)])
        assert "database is locked" in box.writable_problem()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert box.list() == []          # nothing half-stored
    assert box.writable_problem() is None
    box.store([msg(1)])              # and usable again once the lock is gone
    assert len(box.list()) == 1
    box.close()


def test_the_foreign_key_is_enforced_on_the_outboxs_connections(outbox):
    # SQLite leaves foreign keys off unless each connection turns them on.
    outbox.open()
    assert outbox._engine.conn().execute("PRAGMA foreign_keys").fetchone() == (1,)


def test_prune_never_deletes_a_payload_a_kept_row_refers_to(outbox, clock):
    body, dead_body = b'{"the": "webhook body"}', b'{"a": "dead letter"}'
    ids = outbox.store([payload_message("ops", body), payload_message("db", body),
                        payload_message("ops", dead_body, group="g2")]).ids
    assert count(outbox, "payloads") == 1               # the two bots share one copy ...
    assert rows(outbox.path, "SELECT COUNT(*) FROM messages WHERE body IS NOT NULL") == [(1,)]   # ... one bot's is its row's
    outbox.acquire("ops", "me")
    outbox.mark_sent(ids[0], outbox.claim(ids[0], "ops", "me", record=True), "ops", "me", 0)
    outbox.dead_letter(ids[2], outbox.claim(ids[2], "ops", "me", record=True), "ops", "me",
                       reason="keyword_missing", code=19024, detail="")
    clock.step(10)
    outbox.prune(0)                                     # the sent row is kept (for dedupe) ...
    assert broken_references(outbox.path) == []         # ... and names no payload prune deleted
    outbox.prune(clock.now())
    assert count(outbox, "payloads") == 1               # db's message needs it

    outbox.acquire("db", "me")
    outbox.mark_sent(ids[1], outbox.claim(ids[1], "db", "me", record=True), "db", "me", 0)
    outbox.prune(0)
    assert broken_references(outbox.path) == [] and count(outbox, "payloads") == 0
    clock.step(10)
    outbox.prune(clock.now())
    assert count(outbox, "payloads") == 0 and count(outbox, "messages") == 1   # the dead letter, with its body
    assert outbox.retry(ids[2]) == 1 and outbox.head("ops").payload == dead_body


def test_prune_finds_a_payloads_messages_through_an_index(outbox):
    # With the foreign key enforced, deleting a payload looks for messages naming it:
    # without an index, one scan of every kept message per payload, under the write lock
    # the webhooks wait for (6 s for 1 000 payloads beside 200 000 rows).
    outbox.open()
    plan = rows(outbox.path, "EXPLAIN QUERY PLAN SELECT 1 FROM messages WHERE payload = 1")
    assert any("INDEX messages_payload" in step[-1] for step in plan), plan


def test_an_outbox_written_before_the_foreign_key_was_enforced_is_repaired_on_open(tmp_path, clock):
    path = tmp_path / "outbox.db"
    box = SqliteOutbox(path, clock=clock)
    # Two bots each: a shared payload row (a one-bot notification's lives in its message's row).
    ids = box.store([payload_message("ops", b'{"sent": 1}'), payload_message("db", b'{"sent": 1}')]).ids
    box.store([payload_message("ops", b'{"waits": 1}', group="g2"), payload_message("db", b'{"waits": 1}', group="g2")])
    box.close()
    # As the version before left it: no index, sent rows naming a payload prune deleted.
    with sqlite3.connect(path) as conn:
        conn.execute("DROP INDEX messages_payload")
        conn.execute("UPDATE messages SET state = 'sent', finished = 1 WHERE id IN (?, ?)", tuple(ids))
        conn.execute("DELETE FROM payloads WHERE id = (SELECT payload FROM messages WHERE id = ?)", (ids[0],))
    conn.close()
    assert len(broken_references(path)) == 2

    upgraded = SqliteOutbox(path, clock=clock)
    upgraded.open()
    assert broken_references(path) == []
    assert upgraded.head("ops").payload == b'{"waits": 1}'
    assert upgraded.prune(2) == 2 and upgraded.entry(ids[0]) is None
    upgraded.close()


def test_a_newer_schema_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError, match=rf"written by a newer version \(schema 99 > {SCHEMA_VERSION}\)"):
        SqliteOutbox(path).open()


def test_an_outbox_of_schema_2_gets_the_app_bot_tables_and_keeps_everything(tmp_path):
    path = tmp_path / "outbox.db"
    before = SqliteOutbox(path, clock=SteppedClock())
    ids = before.store([msg(1), msg(2, group="g2")]).ids
    before.close()
    with sqlite3.connect(path) as conn:   # as schema 2 left it: no cards, no app_tokens
        conn.execute("DROP TABLE cards")
        conn.execute("DROP TABLE app_tokens")
        conn.execute("DROP TABLE app_users")
        conn.execute("DROP TABLE send_windows")
        conn.execute("DROP TABLE group_actions")
        conn.execute("DROP TABLE callback_events")
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    after = SqliteOutbox(path, clock=SteppedClock())
    assert [e.id for e in after.list()] == ids and after.card("ops", "g1") is None
    after.keep_app_token("k", "t-1", 5e6)
    assert after.app_token("k") == ("t-1", 5e6) and rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    after.close()


def test_an_outbox_of_schema_3_gets_the_looked_up_users_table(tmp_path):
    path = tmp_path / "outbox.db"
    before = SqliteOutbox(path, clock=SteppedClock())
    before.keep_app_token("k", "t-1", 5e6)
    before.close()
    with sqlite3.connect(path) as conn:   # as schema 3 left it: no app_users, no send_windows
        conn.execute("DROP TABLE app_users")
        conn.execute("DROP TABLE send_windows")
        conn.execute("DROP TABLE group_actions")
        conn.execute("DROP TABLE callback_events")
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    after = SqliteOutbox(path, clock=SteppedClock())
    assert after.app_token("k") == ("t-1", 5e6) and after.app_users("k", ["a@example.com"]) == {}
    after.keep_app_users("k", {"a@example.com": ("ou_a", 5e6)})
    assert after.app_users("k", ["a@example.com"]) == {"a@example.com": ("ou_a", 5e6)}
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    after.close()


def test_an_outbox_of_schema_3_gets_the_shared_windows_and_keeps_everything(tmp_path):
    path = tmp_path / "outbox.db"
    before = SqliteOutbox(path, clock=SteppedClock())
    ids = before.store([msg(1), msg(2, group="g2")]).ids
    before.close()
    with sqlite3.connect(path) as conn:   # as schema 3 left it: no send_windows, no app_users
        conn.execute("DROP TABLE send_windows")
        conn.execute("DROP TABLE app_users")
        conn.execute("DROP TABLE group_actions")
        conn.execute("DROP TABLE callback_events")
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    after = SqliteOutbox(path, clock=SteppedClock())
    assert [e.id for e in after.list()] == ids
    after.acquire("ops", "me")
    assert after.claim(ids[0], "ops", "me", record=True, windows=[Window("chat:oc_1", 5, 1.0)])
    assert rows(path, "SELECT key FROM send_windows") == [("chat:oc_1",)]
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    after.close()


SCHEMA_1 = (  # the 0.1 outbox, as bridge/outbox.py created it before rendering moved to send time
    """CREATE TABLE messages (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, bot TEXT NOT NULL,
        group_key TEXT NOT NULL, batch TEXT NOT NULL, identity TEXT NOT NULL, part INTEGER NOT NULL,
        parts INTEGER NOT NULL, source TEXT NOT NULL, body TEXT NOT NULL, state TEXT NOT NULL, owner TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, next_attempt REAL NOT NULL, finished REAL,
        reason TEXT, code INTEGER, detail TEXT)""",
    "CREATE INDEX messages_queue ON messages (bot, state, seq)",
    """CREATE TABLE bots (bot TEXT PRIMARY KEY, owner TEXT, expires REAL NOT NULL DEFAULT 0,
        paused_until REAL NOT NULL DEFAULT 0, backoff REAL NOT NULL DEFAULT 0)""",
    "CREATE TABLE sends (id INTEGER PRIMARY KEY, bot TEXT NOT NULL, started REAL NOT NULL, finished REAL)",
)


def test_an_outbox_of_the_previous_version_keeps_what_waits_after_an_upgrade(tmp_path):
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA_1:
            conn.execute(statement)
        for i, (state, part) in enumerate([("sent", 1), ("pending", 1), ("pending", 2), ("dead", 1)], start=1):
            conn.execute("INSERT INTO messages (seq, bot, group_key, batch, identity, part, parts, source, body,"
                         " state, created, next_attempt) VALUES (?, 'ops', 'g', 'b', '', ?, 2, 'alertmanager', ?,"
                         " ?, 1, 1)", (i, part, json.dumps({"text": f"m{i}"}), state))
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    outbox = SqliteOutbox(path, clock=SteppedClock())
    assert [(e.id, e.state) for e in outbox.list()] == [(2, PENDING), (3, PENDING), (4, DEAD)]
    head = outbox.head("ops")
    assert (head.id, head.bodies, head.parts) == (2, [{"text": "m2"}], 1)
    assert outbox.retry(4) == 1 and outbox.head("ops").id == 2
    assert [e.id for e in outbox.list(dead=False)] == [2, 3, 4]
    assert rows(path, "SELECT bodies FROM messages WHERE id = 4") == [('[{"text": "m4"}]',)]
    assert broken_references(path) == [] and rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    outbox.close()


def test_wait_for_change_sees_another_thread_of_the_same_process(outbox):
    # Each thread has its own connection: a commit from another thread is another connection's.
    outbox.wait_for_change(0)
    writer = threading.Thread(target=lambda: (outbox.store([msg(1)]), outbox.close()))
    writer.start()
    writer.join()
    assert outbox.wait_for_change(5) is True
    assert outbox.wait_for_change(0) is False


def test_window_records_are_forgotten_with_their_send_records(tmp_path):
    clock = SteppedClock()
    outbox = SqliteOutbox(tmp_path / "outbox.db", clock=clock)
    path = tmp_path / "outbox.db"
    ids = outbox.store([msg(1), msg(2)]).ids
    outbox.acquire("ops", "me", 1000.0)
    window = Window("chat:oc_1", 5, 1.0)
    outbox.mark_sent(ids[0], outbox.claim(ids[0], "ops", "me", record=True, ttl=1000.0, windows=[window]), "ops",
                     "me", 0)
    clock.step(100)
    outbox.mark_sent(ids[1], outbox.claim(ids[1], "ops", "me", record=True, ttl=1000.0, windows=[window]), "ops",
                     "me", 0)
    assert rows(path, "SELECT COUNT(*) FROM send_windows") == [(1,)]
    assert rows(path, "SELECT COUNT(*) FROM send_windows WHERE send_id NOT IN (SELECT id FROM sends)") == [(0,)]
    outbox.close()
# -- storage.sync interval --------------------------------------------------------------------------
def test_interval_mode_commits_accepts_without_the_disk_and_syncs_the_wal_within_the_window(tmp_path, clock):
    box = SqliteOutbox(tmp_path / "outbox.db", clock=clock, sync_interval=0.05)
    always = SqliteOutbox(tmp_path / "always.db", clock=clock)
    try:
        box.store([msg(1)])
        always.store([msg(1)])
        # The accept's connection: NORMAL (the WAL is not fsync'd at the commit) against FULL.
        assert box._engine.conn().execute("PRAGMA synchronous").fetchone()[0] == 1
        assert always._engine.conn().execute("PRAGMA synchronous").fetchone()[0] == 2
        syncer = box._engine.syncer
        assert syncer is not None and always._engine.syncer is None
        deadline = time.monotonic() + 2
        while syncer.syncs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert syncer.syncs == 1, "the WAL was not synced within the window after a commit"
        time.sleep(0.2)
        assert syncer.syncs == 1, "synced again with nothing committed"
        for n in range(2, 12):
            box.store([msg(n)])
        time.sleep(0.3)
        assert 2 <= syncer.syncs <= 4, f"{syncer.syncs} syncs for ten commits within one window or two"
    finally:
        box.close()
        always.close()


KILLED_WRITER = """
import os, signal, sys
from bridge.store.records import OutgoingMessage
from bridge.store.sqlite import SqliteOutbox
from bridge.store.sqlite.schema import SCHEMA_VERSION
box = SqliteOutbox(sys.argv[1], sync_interval=10.0)   # no sync before the kill
for n in range(50):
    stored = box.store([OutgoingMessage(bot="ops", group_key=f"g{n}", source="alertmanager", identity=f"i{n}",
                                        payload=b'{"n": %d}' % n)])
    print(stored.ids[0], flush=True)
assert box._engine.syncer.syncs == 0
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_interval_mode_loses_nothing_answered_when_the_process_is_killed(tmp_path):
    path = tmp_path / "outbox.db"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == -signal.SIGKILL, done.stderr
    answered = [int(line) for line in done.stdout.split()]
    assert len(answered) == 50
    box = SqliteOutbox(path)
    try:
        assert [e.id for e in box.list(dead=False)] == answered
        assert box.head("ops").payload == b'{"n": 0}'
    finally:
        box.close()


SCHEMA_3 = (  # the outbox as schema 3 (before the lean accepts of schema 7) created it
    """CREATE TABLE payloads (id INTEGER PRIMARY KEY, source TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL)""",
    """CREATE TABLE messages (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, bot TEXT NOT NULL,
        group_key TEXT NOT NULL, identity TEXT NOT NULL, source TEXT NOT NULL,
        payload INTEGER REFERENCES payloads (id), alerts TEXT, routed INTEGER NOT NULL DEFAULT 1,
        bodies TEXT, sent INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL, owner TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, next_attempt REAL NOT NULL, finished REAL,
        reason TEXT, code INTEGER, detail TEXT)""",
    "CREATE INDEX messages_queue ON messages (bot, state, seq)",
    "CREATE INDEX messages_seq ON messages (seq)",
    "CREATE INDEX messages_identity ON messages (bot, identity, created)",
    "CREATE INDEX messages_group ON messages (bot, group_key, state)",
    "CREATE INDEX messages_payload ON messages (payload) WHERE payload IS NOT NULL",
    """CREATE TABLE bots (bot TEXT PRIMARY KEY, owner TEXT, expires REAL NOT NULL DEFAULT 0,
        paused_until REAL NOT NULL DEFAULT 0, backoff REAL NOT NULL DEFAULT 0)""",
    "CREATE TABLE sends (id INTEGER PRIMARY KEY, bot TEXT NOT NULL, started REAL NOT NULL, finished REAL)",
    "CREATE INDEX sends_bot ON sends (bot, id)",
    """CREATE TABLE cards (bot TEXT NOT NULL, group_key TEXT NOT NULL, parts TEXT NOT NULL, firing TEXT NOT NULL,
        closed INTEGER NOT NULL, buzzed INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (bot, group_key))""",
    "CREATE INDEX cards_updated ON cards (updated)",
    "CREATE TABLE app_tokens (key TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL)",
)


def test_an_outbox_of_schema_3_keeps_what_waits_and_its_dedupe_and_coalescing_after_the_upgrade(tmp_path):
    path = tmp_path / "outbox.db"
    body = json.dumps({"alerts": [{"labels": {"alertname": "X"}}] * 20}).encode()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        for statement in SCHEMA_3:
            conn.execute(statement)
        conn.execute("INSERT INTO payloads (id, source, body, created) VALUES (1, 'alertmanager', ?, 100)", (body,))
        for id_, group, identity, state in [(1, "g1", "i1", "pending"), (2, "g2", "i2", "pending"),
                                            (3, "g3", "i3", "sent"), (4, "g4", "i4", "dead")]:
            conn.execute("INSERT INTO messages (id, seq, bot, group_key, identity, source, payload, state, created,"
                         " next_attempt) VALUES (?, ?, 'ops', ?, ?, 'alertmanager', ?, ?, 100, 100)",
                         (id_, id_, group, identity, None if state == "sent" else 1, state))
        conn.execute("PRAGMA user_version = 3")
    conn.close()
    clock = SteppedClock(start=150)
    upgraded = SqliteOutbox(path, clock=clock)
    try:
        assert [(e.id, e.state) for e in upgraded.list()] == [(1, PENDING), (2, PENDING), (4, DEAD)]
        assert upgraded.head("ops").payload == body          # stored as received, read back as such
        # Dedupe finds the rows written before (a sent one too), coalescing supersedes them.
        again = upgraded.store([payload_message("ops", body, group="g3", identity="i3")], dedupe_window=600)
        assert again.ids == [] and len(again.duplicates) == 1
        newer = upgraded.store([payload_message("ops", body, group="g1", identity="i1b")], dedupe_window=600,
                               coalesce=True)
        assert [s[0] for s in newer.superseded] == [1] and len(newer.ids) == 1
        assert upgraded.head("ops").id == 2
        indexes = {r[0] for r in rows(path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "messages_key" in indexes and not {"messages_identity", "messages_group"} & indexes
        assert rows(path, "SELECT COUNT(*) FROM messages WHERE gkey IS NULL") == [(0,)]
        assert broken_references(path) == [] and rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    finally:
        upgraded.close()


def test_a_payload_is_stored_compressed_and_read_back_as_received(outbox):
    body = json.dumps({"alerts": [{"labels": {"alertname": f"A{i}"}} for i in range(30)]}).encode()
    outbox.store([payload_message("ops", body)])                                  # one bot: in its row
    outbox.store([payload_message("a", body, group="g2"), payload_message("b", body, group="g2")])   # shared
    ((inline,),) = rows(outbox.path, "SELECT body FROM messages WHERE body IS NOT NULL")
    ((shared, packed),) = rows(outbox.path, "SELECT body, packed FROM payloads")
    assert len(inline) < len(body) / 2 and packed == 1 and len(shared) < len(body) / 2
    assert outbox.head("ops").payload == outbox.head("a").payload == outbox.head("b").payload == body


def test_dedupe_and_coalescing_compare_the_group_not_only_its_hash(outbox, monkeypatch):
    """Two groups whose hashes collide stay apart: the rows' bot and group_key decide."""
    from bridge.store.sqlite import accepting
    monkeypatch.setattr(accepting, "group_hash", lambda bot, group: 7)
    first = outbox.store([msg(1, group="a", identity="same")], dedupe_window=600, coalesce=True)
    other = outbox.store([msg(2, group="b", identity="other")], dedupe_window=600, coalesce=True)
    assert len(first.ids) == len(other.ids) == 1 and other.superseded == []
    assert len(outbox.store([msg(3, bot="db", group="a", identity="same")], dedupe_window=600).ids) == 1


def test_a_steady_stream_of_stores_shares_commits_and_a_lone_one_does_not_wait(tmp_path, clock):
    from bridge.store.sqlite.group import COMMIT_DELAY
    box = SqliteOutbox(tmp_path / "outbox.db", clock=clock, sync_interval=1.0)
    try:
        box.store([msg(0)])
        time.sleep(0.05)
        started = time.monotonic()
        assert box.store([msg(1)]).commits == 1          # calls far apart: it commits at once
        assert time.monotonic() - started < COMMIT_DELAY * 5
        # One client posting one request after another (close together) never waits for itself.
        started = time.monotonic()
        for n in range(2, 202):
            box.store([msg(n, group=f"seq{n}")])
        each = (time.monotonic() - started) / 200
        assert each < COMMIT_DELAY / 2, f"{each * 1000:.2f} ms per store from one thread"

        results = []

        def stream(t: int) -> None:
            for n in range(40):
                results.append(box.store([msg(100 * t + n, group=f"g{t}-{n}")]))
                time.sleep(COMMIT_DELAY / 4)
        threads = [threading.Thread(target=stream, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        group = len(results) / sum(r.commits for r in results)
        assert group >= 1.5, f"{group:.2f} stores per commit under a steady stream"
        assert len(box.list(dead=False)) == 2 + 200 + 160
    finally:
        box.close()
