"""The SQLite outbox on its own: what is stored, what is dropped as a duplicate or superseded,
what a crashed or lapsed sender leaves behind, and what `outbox list/retry` see."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from bridge.config import loads
from bridge.errors import StorageError
from bridge.outbox import DEAD, LEASE_TTL, PENDING, SENDING, SUPERSEDED, LeaseLost, Outbox
from bridge.pipeline import OutgoingMessage, Pipeline
from bridge.render import Renderer
from bridge.sources import parse

FIXTURES = Path(__file__).parent / "fixtures"
WINDOW = 600.0


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def msg(n: int, bot: str = "ops", group: str = "g1", identity: str = "", parts: int = 1):
    """A message stored already rendered, in `parts` parts."""
    return OutgoingMessage(bot=bot, group_key=group, source="alertmanager", identity=identity,
                           bodies=tuple({"msg_type": "text", "content": {"text": f"m{n} {i}/{parts}"}}
                                        for i in range(1, parts + 1)))


def states(outbox: Outbox) -> dict[int, str]:
    with sqlite3.connect(outbox.path) as conn:
        return dict(conn.execute("SELECT id, state FROM messages"))


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def outbox(tmp_path, clock):
    box = Outbox(tmp_path / "sub" / "outbox.db", clock=clock)
    yield box
    box.close()


def test_stored_messages_are_committed_and_listed_without_secrets(outbox, tmp_path):
    stored = outbox.store([msg(1), msg(2, group="g2")])
    assert len(stored.ids) == 2 and (tmp_path / "sub" / "outbox.db").exists()
    # Another connection (another process) sees them: committed, not just buffered.
    other = Outbox(outbox.path)
    rows = other.list()
    assert [(r.bot, r.group_key, r.state, r.attempts) for r in rows] == [("ops", "g1", PENDING, 0),
                                                                         ("ops", "g2", PENDING, 0)]
    assert other.list(dead=True) == [] and len(other.list(dead=False)) == 2
    assert set(rows[0].as_dict()) == {"id", "bot", "group_key", "state", "part", "parts", "attempts", "created",
                                      "next_attempt", "reason", "code", "detail"}
    # The bodies stored are the unsigned messages, byte for byte what the renderer made.
    with sqlite3.connect(outbox.path) as conn:
        bodies = conn.execute("SELECT bodies FROM messages WHERE id = ?", (stored.ids[0],)).fetchone()[0]
    assert tuple(json.loads(bodies)) == msg(1).bodies and "sign" not in bodies
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    other.close()


def test_a_path_under_a_file_is_a_storage_error_with_the_reason(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StorageError, match="cannot store messages in the outbox .*file/outbox.db"):
        Outbox(tmp_path / "file" / "outbox.db").store([msg(1)])


def test_a_database_locked_beyond_the_busy_timeout_is_a_storage_error(tmp_path):
    box = Outbox(tmp_path / "outbox.db", busy_timeout=0.2)
    box.open()
    holder = sqlite3.connect(box.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StorageError, match="database is locked"):
            box.store([msg(1)])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert box.list() == []          # nothing half-stored
    box.store([msg(1)])              # and usable again once the lock is gone
    assert len(box.list()) == 1
    box.close()


def test_the_same_identity_within_the_window_is_stored_once(outbox, clock):
    first = outbox.store([msg(1, identity="abc:ops:1/1")], dedupe_window=WINDOW)
    again = outbox.store([msg(1, identity="abc:ops:1/1")], dedupe_window=WINDOW)
    assert len(first.ids) == 1 and again.ids == [] and len(again.duplicates) == 1
    # Another bot with the same notification is not a duplicate.
    assert len(outbox.store([msg(1, bot="db", identity="abc:db:1/1")], dedupe_window=WINDOW).ids) == 1
    clock.now += WINDOW + 1
    assert len(outbox.store([msg(1, identity="abc:ops:1/1")], dedupe_window=WINDOW).ids) == 1
    # No identity: never deduplicated.
    assert len(outbox.store([msg(1)], dedupe_window=WINDOW).ids) == 1
    assert len(outbox.store([msg(1)], dedupe_window=WINDOW).ids) == 1


def pipeline_messages(payload: dict) -> list[OutgoingMessage]:
    config = loads("bots: [{name: ops}, {name: db}]\nroute: {bots: [ops, db]}\n", env={})

    class Recorder:
        def enqueue(self, messages):
            self.messages = list(messages)
            return set()

    recorder = Recorder()
    log = logging.getLogger("bridge.test")
    raw = json.dumps(payload).encode()
    Pipeline(config, Renderer(None, config.timezone, log), recorder, log).accept(parse("alertmanager", payload), raw)
    return recorder.messages


def test_an_alertmanager_ha_pair_produces_one_message_per_bot(outbox):
    payload = json.loads((FIXTURES / "alertmanager" / "am025-mixed-resolved-firing.json").read_text())
    twin = {**payload, "externalURL": "http://alertmanager-1.test:9093", "receiver": "feishu-b"}
    first, second = pipeline_messages(payload), pipeline_messages(twin)
    assert [m.payload for m in first] != [m.payload for m in second]  # the bodies differ (links) ...
    assert len(outbox.store(first, dedupe_window=WINDOW).ids) == 2   # ... ops and db
    assert outbox.store(second, dedupe_window=WINDOW).ids == []      # ... yet it is the same notification

    # A new state of the group is not a duplicate: one alert has ended since.
    later = json.loads(json.dumps(payload))
    later["alerts"][1].update(status="resolved", endsAt="2026-01-01T00:00:00Z")
    assert len(outbox.store(pipeline_messages(later), dedupe_window=WINDOW).ids) == 2


def test_a_newer_message_of_a_group_supersedes_the_waiting_one(outbox):
    old = outbox.store([msg(1, group="g1"), msg(2, group="g2"), msg(3, bot="db", group="g1")], coalesce=True)
    new = outbox.store([msg(4, group="g1")], coalesce=True)
    assert [s[0] for s in new.superseded] == [old.ids[0]]
    assert states(outbox) == {old.ids[0]: SUPERSEDED, old.ids[1]: PENDING, old.ids[2]: PENDING,
                              new.ids[0]: PENDING}


def test_coalescing_off_keeps_every_message(outbox):
    outbox.store([msg(1)], coalesce=False)
    outbox.store([msg(2)], coalesce=False)
    assert [r.state for r in outbox.list()] == [PENDING, PENDING]


def test_a_message_with_some_parts_sent_is_superseded_by_a_newer_state(outbox):
    (old,) = outbox.store([msg(1, parts=3)], coalesce=True).ids
    outbox.acquire("ops", "me")
    send = outbox.claim(old, "ops", "me", record=True)
    assert outbox.mark_sent(old, send, "ops", "me", 0, last=False)
    head = outbox.head("ops")
    assert (head.id, head.part, head.parts) == (old, 2, 3)          # part 2 of 3 is next ...
    new = outbox.store([msg(2, parts=2)], coalesce=True)
    assert [s[0] for s in new.superseded] == [old]                  # ... but the group has moved on
    head = outbox.head("ops")
    assert (head.id, head.part, head.parts) == (new.ids[0], 1, 2)


def test_a_message_in_flight_is_not_superseded(outbox):
    first = outbox.store([msg(1)], coalesce=True).ids[0]
    outbox.acquire("ops", "me")
    assert outbox.claim(first, "ops", "me", record=True)
    outbox.store([msg(2)], coalesce=True)
    assert states(outbox)[first] == SENDING
    # And a superseded message can no longer be claimed.
    third = outbox.store([msg(3)], coalesce=True).ids[0]
    assert outbox.claim(third - 1, "ops", "me", record=True) is None


def test_a_dead_owners_in_flight_message_is_sent_again_by_the_next_holder(outbox, clock):
    message_id = outbox.store([msg(1)]).ids[0]
    outbox.acquire("ops", "worker-1")
    outbox.claim(message_id, "ops", "worker-1", record=True)
    assert outbox.head("ops") is None            # in flight: not offered again meanwhile
    assert outbox.acquire("ops", "worker-2") is None   # worker-1 is alive (lease fresh)

    clock.now += LEASE_TTL + 0.1                  # kill -9: no more renewals
    takeover = outbox.acquire("ops", "worker-2")
    assert takeover is not None and takeover.previous == "worker-1" and takeover.requeued == 1
    head = outbox.head("ops")
    assert head is not None and head.id == message_id and head.attempts == 1
    # The dead owner's open send record counts as ended now, so the limit still holds.
    assert outbox.recent_ends("ops", 5) == [clock.now]


def test_a_lapsed_holder_can_neither_claim_nor_overwrite_the_new_holders_work(outbox, clock):
    ids = outbox.store([msg(1), msg(2)]).ids
    outbox.acquire("ops", "a")
    send = outbox.claim(ids[0], "ops", "a", record=True)
    clock.now += LEASE_TTL + 0.1
    outbox.acquire("ops", "b")
    with pytest.raises(LeaseLost):
        outbox.claim(ids[1], "ops", "a", record=True)
    assert outbox.claim(ids[0], "ops", "b", record=True)
    # a's late answer must not mark b's send done.
    assert outbox.mark_sent(ids[0], send, "ops", "a", 0) is False
    assert states(outbox)[ids[0]] == SENDING


def test_renewal_keeps_the_lease_and_release_frees_it(outbox, clock):
    outbox.acquire("ops", "a")
    for _ in range(3):
        clock.now += LEASE_TTL - 1
        assert outbox.renew("a") == 1
        assert outbox.acquire("ops", "b") is None
    outbox.release("ops", "a")
    assert outbox.acquire("ops", "b") is not None
    assert outbox.bot_state("ops").owner == "b"


def test_dead_letters_stay_listed_and_retry_requeues_them_with_a_fresh_age(outbox, clock):
    ids = outbox.store([msg(1), msg(2), msg(3, group="g2")]).ids
    outbox.acquire("ops", "me")
    for message_id in ids[:2]:
        send = outbox.claim(message_id, "ops", "me", record=True)
        outbox.dead_letter(message_id, send, "ops", "me", reason="keyword_missing", code=19024, detail="Key Words")
    dead = outbox.list(dead=True)
    assert [(d.id, d.reason, d.code, d.attempts) for d in dead] == [(ids[0], "keyword_missing", 19024, 1),
                                                                    (ids[1], "keyword_missing", 19024, 1)]
    clock.now += 100
    assert outbox.retry(ids[2]) == 0                   # not a dead letter
    assert outbox.retry(ids[0]) == 1
    assert outbox.retry(ids[0]) == 0                   # already queued again
    again = [r for r in outbox.list() if r.id == ids[0]][0]
    assert again.state == PENDING and again.attempts == 0 and again.created == clock.now
    # A retried message goes to the back of the queue, behind what waited meanwhile.
    assert [r.id for r in outbox.list(dead=False)] == [ids[2], ids[0]]
    assert outbox.retry_all_dead() == 1
    assert outbox.list(dead=True) == []


def test_prune_forgets_old_sent_messages_but_keeps_dead_letters(outbox, clock):
    ids = outbox.store([msg(1), msg(2, group="g2"), msg(3, group="g3")]).ids
    outbox.acquire("ops", "me")
    outbox.mark_sent(ids[0], outbox.claim(ids[0], "ops", "me", record=True), "ops", "me", 0)
    outbox.dead_letter(ids[1], outbox.claim(ids[1], "ops", "me", record=True), "ops", "me",
                       reason="bad_token", code=19001, detail="")
    clock.now += 10
    assert outbox.prune(clock.now - 5) == 1
    assert states(outbox) == {ids[1]: DEAD, ids[2]: PENDING}


def test_depths_count_waiting_messages_and_their_age(outbox, clock):
    outbox.store([msg(1), msg(2, group="g2"), msg(3, bot="db")])
    clock.now += 30
    outbox.store([msg(4, bot="db", group="g9")])
    assert sorted(outbox.depths()) == [("db", 2, 30.0), ("ops", 2, 30.0)]


def payload_message(bot: str, payload: bytes, group: str = "g1") -> OutgoingMessage:
    return OutgoingMessage(bot=bot, group_key=group, source="alertmanager", payload=payload)


def count(outbox: Outbox, table: str) -> int:
    with sqlite3.connect(outbox.path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_a_notification_for_several_bots_is_stored_once_until_none_needs_it(outbox, clock):
    body = b'{"the": "webhook body"}'
    ids = outbox.store([payload_message("ops", body), payload_message("db", body)]).ids
    assert count(outbox, "payloads") == 1
    head = outbox.head("db")
    assert head.payload == body and head.bodies is None and head.parts == 0    # not rendered yet
    assert [(e.part, e.parts) for e in outbox.list()] == [(1, 0), (1, 0)]

    outbox.acquire("ops", "me")
    outbox.acquire("db", "me")
    assert outbox.set_bodies(ids[0], "ops", "me", [{"n": 1}, {"n": 2}])
    head = outbox.head("ops")
    assert head.payload is None and (head.part, head.parts) == (1, 2)
    for part in (1, 2):
        assert outbox.head("ops").part == part
        outbox.mark_sent(ids[0], outbox.claim(ids[0], "ops", "me", record=True), "ops", "me", 0, last=part == 2)
    clock.now += 10
    outbox.prune(clock.now)
    assert count(outbox, "payloads") == 1            # db's message still needs it
    outbox.acquire("db", "me")
    outbox.mark_sent(ids[1], outbox.claim(ids[1], "db", "me", record=True), "db", "me", 0)
    clock.now += 10
    outbox.prune(clock.now)
    assert count(outbox, "payloads") == 0 and count(outbox, "messages") == 0


def test_a_dead_letter_queued_again_is_rendered_again(outbox):
    (message_id,) = outbox.store([payload_message("ops", b"{}")]).ids
    outbox.acquire("ops", "me")
    outbox.set_bodies(message_id, "ops", "me", [{"keyword": "missing"}])
    outbox.dead_letter(message_id, outbox.claim(message_id, "ops", "me", record=True), "ops", "me",
                       reason="keyword_missing", code=19024, detail="")
    assert outbox.retry(message_id) == 1
    head = outbox.head("ops")
    assert head.bodies is None and head.payload == b"{}"   # the fixed config renders it anew


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
    outbox = Outbox(path)
    assert [(e.id, e.state) for e in outbox.list()] == [(2, PENDING), (3, PENDING), (4, DEAD)]
    head = outbox.head("ops")
    assert (head.id, head.bodies, head.parts) == (2, [{"text": "m2"}], 1)
    assert outbox.retry(4) == 1 and outbox.head("ops").id == 2
    assert [e.id for e in outbox.list(dead=False)] == [2, 3, 4]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT bodies FROM messages WHERE id = 4").fetchone()[0] == '[{"text": "m4"}]'
