"""The SQLite backend of bridge.store.Outbox: one file, shared by the processes of one host.

engine.py   connections (one per thread), write and read transactions, waiting for a
            lock, storage.sync (the Syncer), noticing other processes'
            commits (data_version)
group.py    group commit: concurrent accepts of one process share a transaction
checkpoint.py the WAL checkpoint, by a thread of its own off the request path
schema.py   the tables, created on first use; migrations from older versions
accepting.py  what an accept writes (schemas 7, 8): the insert, dedupe and coalescing, the next seq
outbox.py   SqliteOutbox: the queue semantics (store, lease, claim, settle, operate)
cards.py    app bots: each group's card, each app's access token
"""

from .engine import BUSY_TIMEOUT
from .outbox import SqliteOutbox

__all__ = ["BUSY_TIMEOUT", "SqliteOutbox"]
