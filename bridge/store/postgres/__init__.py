"""The PostgreSQL backend of bridge.store.Outbox: one database shared by every replica.

engine.py   the pool (psycopg_pool), transactions, timeouts, errors without secrets,
            LISTEN/NOTIFY for other processes' commits
clock.py    the database's clock as a replica reads it (a sender's pacing)
schema.py   the tables, created and migrated at start-up under an advisory lock, versioned
queue.py    the queue's writes and the locks that make them safe with concurrent writers
outbox.py   PostgresOutbox: the lease, and bridge.store.Outbox method by method
"""

from .outbox import PostgresOutbox

__all__ = ["PostgresOutbox"]
