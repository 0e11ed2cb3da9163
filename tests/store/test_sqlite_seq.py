"""The SQLite outbox's send order without an index on seq (schema 8): a new row's seq is
its id plus seq_offset (bridge/store/sqlite/accepting.py), and files of schema 7 upgrade
with every new row after every row there. Raw SQL is allowed here."""

from __future__ import annotations

import sqlite3

from bridge.store.sqlite import SqliteOutbox
from bridge.store.sqlite.schema import SCHEMA_VERSION
from outbox_messages import msg


def _sql(path, *statements: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        result = [row for statement in statements for row in conn.execute(statement).fetchall()]
    conn.close()
    return result


def _waiting(box: SqliteOutbox) -> list[int]:
    return [e.id for e in box.list()]


def test_a_new_file_has_no_index_on_seq_and_rows_keep_the_order_they_were_stored_in(tmp_path, clock):
    box = SqliteOutbox(tmp_path / "outbox.db", clock=clock)
    try:
        ids = [box.store([msg(n, bot="ab"[n % 2], group=f"g{n}")]).ids[0] for n in range(6)]
        indexes = {r[0] for r in _sql(box.path, "SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "messages_seq" not in indexes and "messages_queue" in indexes
        assert _waiting(box) == ids and box.head("a").id == ids[0] and box.head("b").id == ids[1]
        # The newest row deleted (pruned) and its id taken again: still at the back.
        _sql(box.path, f"DELETE FROM messages WHERE id = {ids[-1]}")
        again = box.store([msg(9, group="g9")]).ids[0]
        assert again == ids[-1] and _waiting(box) == ids[:-1] + [again]
    finally:
        box.close()


def test_a_requeued_dead_letter_goes_to_the_back_and_rows_stored_later_after_it(tmp_path, clock):
    box = SqliteOutbox(tmp_path / "outbox.db", clock=clock)
    try:
        first, second, third = (box.store([msg(n, group=f"g{n}")]).ids[0] for n in range(3))
        _sql(box.path, f"UPDATE messages SET state = 'dead' WHERE id = {first}")
        assert box.retry(first) == 1
        assert _waiting(box) == [second, third, first]
        _sql(box.path, f"DELETE FROM messages WHERE id = {third}")      # the newest id, free again
        later = box.store([msg(5, group="g5")]).ids[0]
        assert later == third and _waiting(box) == [second, first, later]
        assert box.head("ops").id == second
    finally:
        box.close()


def test_an_outbox_of_schema_7_keeps_its_order_and_new_rows_go_after_every_row_there(tmp_path, clock):
    path = tmp_path / "outbox.db"
    box = SqliteOutbox(path, clock=clock)
    ids = [box.store([msg(n, group=f"g{n}")]).ids[0] for n in range(3)]
    box.close()
    # As schema 7 left it: messages_seq, no outbox_meta, and a row requeued (its seq above
    # every id) before the newest row was deleted.
    _sql(path, "DROP TABLE outbox_meta", "CREATE INDEX messages_seq ON messages (seq)",
         f"UPDATE messages SET seq = 10 WHERE id = {ids[0]}", f"DELETE FROM messages WHERE id = {ids[2]}",
         "PRAGMA user_version = 7")
    upgraded = SqliteOutbox(path, clock=clock)
    try:
        assert _waiting(upgraded) == [ids[1], ids[0]]
        new = upgraded.store([msg(7, group="g7")]).ids[0]
        assert new == ids[2] and _waiting(upgraded) == [ids[1], ids[0], new]
        assert _sql(path, "SELECT name FROM sqlite_master WHERE name = 'messages_seq'") == []
        assert _sql(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 8
    finally:
        upgraded.close()
