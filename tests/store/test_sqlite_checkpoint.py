"""The SQLite outbox's WAL checkpoint, made by a thread of its own off the request path
(bridge/store/sqlite/checkpoint.py), and the bound that still holds without it."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.store.sqlite import SqliteOutbox, checkpoint
from outbox_messages import msg


def test_the_accepting_connections_checkpoint_only_at_the_bound_whatever_the_page_size(tmp_path, clock):
    box = SqliteOutbox(tmp_path / "outbox.db", clock=clock)
    try:
        box.open()
        conn = box._engine.conn()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] * page == 32 * 1024 * 1024
        assert box._engine.checkpointer.frames * page == 8 * 1024 * 1024
    finally:
        box.close()


def test_the_wait_for_the_next_checkpoint_follows_the_rate_the_wal_grew_at():
    made = checkpoint.Checkpointer(Path("unused.db"), 1024)
    assert made.frames == 8 * 1024
    assert made.next_wait(8 * 1024, 2.0) == 2.0         # 8 MiB in 2 s: the next in 2 s
    assert made.next_wait(4 * 1024, 1.0) == 2.0
    assert made.next_wait(10**9, 1.0) == checkpoint.SHORTEST
    assert made.next_wait(1, 1.0) == checkpoint.LONGEST
    assert made.next_wait(0, 1.0) == checkpoint.LONGEST   # nothing to copy
    assert made.next_wait(-1, 1.0) == checkpoint.FIRST    # it failed: look again soon


def _wal_after(box: SqliteOutbox, path: Path, first: int, count: int) -> int:
    for n in range(first, first + count):
        box.store([msg(n, group=f"g{n}")])
        time.sleep(0.001)
    return (path.parent / f"{path.name}-wal").stat().st_size


def test_a_thread_checkpoints_the_wal_once_it_holds_enough_and_the_commits_do_not(tmp_path, clock, monkeypatch):
    monkeypatch.setattr(checkpoint, "CHECKPOINT_BYTES", 64 * 1024)
    monkeypatch.setattr(checkpoint, "FIRST", 0.05)
    monkeypatch.setattr(checkpoint, "SHORTEST", 0.01)
    path = tmp_path / "outbox.db"
    box = SqliteOutbox(path, clock=clock)
    try:
        box.open()
        made = box._engine.checkpointer
        deadline = time.monotonic() + 20
        n = 0
        while made.checkpoints < 3 and time.monotonic() < deadline:
            n += 1
            _wal_after(box, path, n, 1)
        assert made.checkpoints >= 3
        assert _wal_after(box, path, n + 1, 600) < 16 * 64 * 1024
        # The commits themselves never checkpoint below the bound (32 MiB): without the
        # thread the same commits grow the WAL well past that.
        monkeypatch.setattr(checkpoint.Checkpointer, "committed", lambda self: None)
        assert _wal_after(box, path, n + 601, 600) > 16 * 64 * 1024
        assert len(box.list(dead=False)) == n + 1200
    finally:
        box.close()
