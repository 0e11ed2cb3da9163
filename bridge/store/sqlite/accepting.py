"""What accepting writes (schemas 7 and 8): as little as the send order, dedupe and coalescing need.

An accept is one INSERT into payloads and one per bot into messages, and every page those
touch is written twice (into the WAL at the commit, into the file at the checkpoint), whole.
So the rows are small and the indexes few:

- The payload is stored compressed (zlib level 1: a 1.4 KB Alertmanager body becomes about
  500 bytes, in 10 us), and in the message's own row (`messages.body`, always compressed)
  when the notification is for one bot: no payloads row, no messages_payload entry, two
  pages fewer per commit. A notification for several bots keeps one shared copy in
  payloads (`packed` says it is compressed; rows of earlier versions stay as they are).
- Dedupe and coalescing look a message up by its group, through one index on `gkey`, an
  8-byte hash of (bot, group_key), and `state`. A message's identity implies its bot and
  group (bridge.store.Outbox.store), so dedupe looks for it among the group's rows, which
  are few (a group's rows are kept for the dedupe window), and compares the identity in
  the row. Before, two indexes keyed by long random strings (identity, group_key) put two
  random leaf pages into every commit: 12 of the 27 KiB an accept wrote.
- The send order (`seq`) has no index of its own (schema 8): a new row's seq is its id
  plus `seq_offset` (next_seq), so finding the next one needs no index on seq, and no
  commit writes the right edge of one.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import zlib
from collections import Counter

from ..records import PENDING, SUPERSEDED, OutgoingMessage, Stored

# Level 1: nearly all of level 6's saving (503 against 484 bytes for the benchmark's body)
# at 80% of its time. Bodies below this are stored as they are: the saving is smaller
# than a row's bookkeeping.
_LEVEL = 1
_PACK_FROM = 256


def group_hash(bot: str, group_key: str) -> int:
    """The signed 64-bit key of a (bot, group) in the messages_key index."""
    digest = hashlib.blake2b(f"{bot}\0{group_key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def pack(body: bytes) -> tuple[bytes, int]:
    """(what to store, packed) for a payload body."""
    if len(body) < _PACK_FROM:
        return body, 0
    return zlib.compress(body, _LEVEL), 1


def unpack(stored: bytes | None, packed: int | None) -> bytes | None:
    return zlib.decompress(stored) if stored is not None and packed else stored


def payload_of(inline: bytes | None, shared: bytes | None, packed: int | None) -> bytes | None:
    """A message's payload as received: its own (messages.body) or the shared one."""
    return zlib.decompress(inline) if inline is not None else unpack(shared, packed)


def insert(conn: sqlite3.Connection, messages: list[OutgoingMessage], dedupe_window: float, coalesce: bool,
           now: float) -> Stored:
    stored = Stored()
    # The send order, dedupe and coalescing below are each one decision only because no
    # other writer runs meanwhile (BEGIN IMMEDIATE): see bridge.store.Outbox.store.
    seq = next_seq(conn) - 1
    payloads: dict[int, int] = {}    # id(payload bytes) -> row: a notification's bots share one copy
    uses = Counter(id(m.payload) for m in messages if m.payload is not None)
    for m in messages:
        key = group_hash(m.bot, m.group_key)
        if dedupe_window > 0 and _seen(conn, m, key, now - dedupe_window):
            stored.duplicates.append(m)
            continue
        if coalesce:
            stored.superseded += _supersede(conn, m, key, now)
        payload = inline = None
        if m.payload is not None and uses[id(m.payload)] == 1:
            inline = zlib.compress(m.payload, _LEVEL)
        elif m.payload is not None:
            payload = payloads.get(id(m.payload))
            if payload is None:
                body, packed = pack(m.payload)
                payload = conn.execute("INSERT INTO payloads (source, body, created, packed) VALUES (?, ?, ?, ?)",
                                       (m.source, body, now, packed)).lastrowid
                payloads[id(m.payload)] = payload
        seq += 1
        cursor = conn.execute(
            "INSERT INTO messages (seq, bot, group_key, gkey, identity, source, payload, body, alerts, routed, bodies,"
            " state, created, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, m.bot, m.group_key, key, m.identity, m.source, payload, inline,
             None if m.alerts is None else json.dumps(m.alerts), int(m.routed),
             None if m.bodies is None else json.dumps(m.bodies, ensure_ascii=False, separators=(",", ":")),
             PENDING, now, now))
        stored.ids.append(cursor.lastrowid)
    return stored


def next_seq(conn: sqlite3.Connection) -> int:
    """The seq of the next row inserted: its id (the largest id + 1, O(log n) in the table's
    own tree) plus seq_offset, without an index on seq (schema 8: one index page fewer in
    every commit). Each row inserted takes the next id and the next seq alike."""
    return conn.execute("SELECT (SELECT value FROM outbox_meta WHERE key = 'seq_offset') + IFNULL(MAX(id), 0) + 1"
                        " FROM messages").fetchone()[0]


def requeue_seq(conn: sqlite3.Connection, count: int) -> int:
    """The first of `count` seqs at the back of the queue for rows requeued (an operator's
    `outbox retry`), with seq_offset raised past them: a row inserted later has an id of at
    least 1, so its seq is above theirs whatever id it gets (ids are taken again when the
    newest rows were deleted). No row's seq is above next_seq's: an inserted row's is its id
    plus the offset then, a requeued or migrated row's at most the offset."""
    first = next_seq(conn)
    conn.execute("UPDATE outbox_meta SET value = ? WHERE key = 'seq_offset'", (first + count - 1,))
    return first


def _seen(conn: sqlite3.Connection, m: OutgoingMessage, key: int, since: float) -> bool:
    if not m.identity:
        return False
    return conn.execute("SELECT 1 FROM messages WHERE gkey = ? AND identity = ? AND bot = ? AND created > ? LIMIT 1",
                        (key, m.identity, m.bot, since)).fetchone() is not None


def _supersede(conn: sqlite3.Connection, m: OutgoingMessage, key: int, now: float) -> list[tuple[int, str, str]]:
    # Only pending rows: one in flight is already on its way. A message with some of its
    # parts sent goes too: the newer one shows the whole group as it is now. bot and
    # group_key are compared too: two groups may share a hash.
    rows = conn.execute("UPDATE messages SET state = ?, finished = ?, reason = 'superseded', payload = NULL,"
                        " body = NULL"
                        " WHERE gkey = ? AND state = ? AND bot = ? AND group_key = ? RETURNING id",
                        (SUPERSEDED, now, key, PENDING, m.bot, m.group_key)).fetchall()
    return [(r[0], m.bot, m.group_key) for r in rows]
