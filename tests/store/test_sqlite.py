"""The SQLite outbox's own behaviour, beyond the contract: the file, its locking, its schema
and upgrades, and its foreign key. Raw SQL is allowed here (and only here)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from bridge.errors import StorageError
from bridge.store.records import DEAD, PENDING
from bridge.store.sqlite import SqliteOutbox
from outbox_messages import SteppedClock, msg


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


def test_a_newer_schema_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "outbox.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StorageError, match=r"written by a newer version \(schema 99 > 2\)"):
        SqliteOutbox(path).open()


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
    assert rows(path, "PRAGMA user_version") == [(2,)]
    outbox.close()


def test_wait_for_change_sees_another_thread_of_the_same_process(outbox):
    # Each thread has its own connection: a commit from another thread is another connection's.
    outbox.wait_for_change(0)
    writer = threading.Thread(target=lambda: (outbox.store([msg(1)]), outbox.close()))
    writer.start()
    writer.join()
    assert outbox.wait_for_change(5) is True
    assert outbox.wait_for_change(0) is False
