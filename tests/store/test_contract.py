"""What every outbox backend must do, through bridge.store.Outbox alone (no SQL, no
backend's attributes): what is stored, what is dropped as a duplicate or superseded, what
a crashed or lapsed sender leaves behind, what `outbox list/retry` see, and the
guarantees that must hold with several processes writing at once.

Runs once per backend in conftest.BACKENDS; a new backend must pass it unchanged, and
test_contract_concurrent.py too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.config import loads
from bridge.accept import outgoing, route_shares
from bridge.sources import parse
from bridge.store import LEASE_TTL, Outbox
from bridge.store.records import DEAD, PENDING, SENDING, SENT, SUPERSEDED, LeaseLost, OutgoingMessage
from outbox_messages import msg, payload_message, state

FIXTURES = Path(__file__).parent.parent / "fixtures"
WINDOW = 600.0


def test_the_backend_offers_every_operation_of_the_interface(outbox):
    assert isinstance(outbox, Outbox)
    assert outbox.describe()


def test_stored_messages_are_committed_and_listed_without_secrets(outbox, connect):
    stored = outbox.store([msg(1), msg(2, group="g2")])
    assert len(stored.ids) == 2
    # Another connection (another process) sees them: committed, not just buffered.
    other = connect()
    rows = other.list()
    assert [(r.bot, r.group_key, r.state, r.attempts) for r in rows] == [("ops", "g1", PENDING, 0),
                                                                         ("ops", "g2", PENDING, 0)]
    assert other.list(dead=True) == [] and len(other.list(dead=False)) == 2
    assert set(rows[0].as_dict()) == {"id", "bot", "group_key", "state", "part", "parts", "attempts", "created",
                                      "next_attempt", "reason", "code", "detail"}
    # The bodies kept are the unsigned messages, as the renderer made them.
    head = other.head("ops")
    assert head.id == stored.ids[0] and head.bodies == list(msg(1).bodies) and head.payload is None


def test_an_entry_is_there_in_any_state_until_pruned(outbox, clock):
    ids = outbox.store([msg(1), msg(2, group="g2")]).ids
    assert outbox.entry(ids[0]) == outbox.list()[0]
    assert outbox.entry(max(ids) + 1) is None
    outbox.acquire("ops", "me")
    outbox.mark_sent(ids[0], outbox.claim(ids[0], "ops", "me", record=True), "ops", "me", 200)
    sent = outbox.entry(ids[0])
    assert (sent.state, sent.reason, sent.code, sent.attempts) == (SENT, "ok", 200, 1)
    assert [e.id for e in outbox.list()] == [ids[1]]
    clock.step(10)
    outbox.prune(clock.now())
    assert outbox.entry(ids[0]) is None and state(outbox, ids[1]) == PENDING


def test_the_same_identity_within_the_window_is_stored_once(outbox, clock):
    first = outbox.store([msg(1, identity="abc:ops:1/1")], dedupe_window=WINDOW)
    again = outbox.store([msg(1, identity="abc:ops:1/1")], dedupe_window=WINDOW)
    assert len(first.ids) == 1 and again.ids == [] and len(again.duplicates) == 1
    # Another bot with the same notification is not a duplicate.
    assert len(outbox.store([msg(1, bot="db", identity="abc:db:1/1")], dedupe_window=WINDOW).ids) == 1
    clock.step(WINDOW + 1)
    assert len(outbox.store([msg(1, identity="abc:ops:1/1")], dedupe_window=WINDOW).ids) == 1
    # No identity: never deduplicated.
    assert len(outbox.store([msg(1)], dedupe_window=WINDOW).ids) == 1
    assert len(outbox.store([msg(1)], dedupe_window=WINDOW).ids) == 1


def test_a_sent_message_still_drops_its_duplicate_after_pruning(outbox, clock):
    body = b'{"the": "webhook body"}'
    (first,) = outbox.store([payload_message("ops", body, identity="n1")], dedupe_window=WINDOW).ids
    outbox.acquire("ops", "me")
    outbox.mark_sent(first, outbox.claim(first, "ops", "me", record=True), "ops", "me", 0)
    clock.step(60)
    outbox.prune(clock.now() - WINDOW)        # as the watcher does: the row is kept for dedupe
    assert state(outbox, first) == SENT
    assert outbox.store([payload_message("ops", body, identity="n1")], dedupe_window=WINDOW).ids == []


def pipeline_messages(payload: dict) -> list[OutgoingMessage]:
    """The messages the accept service would store for this Alertmanager body."""
    config = loads("bots: [{name: ops}, {name: db}]\nroute: {bots: [ops, db]}\n", env={})
    notification = parse("alertmanager", payload)
    return outgoing(notification, json.dumps(payload).encode(), route_shares(config, notification))


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
    assert new.superseded == [(old.ids[0], "ops", "g1")]
    assert [state(outbox, i) for i in (*old.ids, *new.ids)] == [SUPERSEDED, PENDING, PENDING, PENDING]
    assert outbox.entry(old.ids[0]).reason == "superseded"


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
    second = outbox.store([msg(2)], coalesce=True).ids[0]
    assert state(outbox, first) == SENDING
    # And a superseded message can no longer be claimed.
    outbox.store([msg(3)], coalesce=True)
    assert state(outbox, second) == SUPERSEDED
    assert outbox.claim(second, "ops", "me", record=True) is None


def test_a_dead_owners_in_flight_message_is_sent_again_by_the_next_holder(outbox, clock):
    message_id = outbox.store([msg(1)]).ids[0]
    outbox.acquire("ops", "worker-1")
    outbox.claim(message_id, "ops", "worker-1", record=True)
    assert outbox.head("ops") is None            # in flight: not offered again meanwhile
    assert outbox.acquire("ops", "worker-2") is None   # worker-1 is alive (lease fresh)

    clock.step(LEASE_TTL + 0.1)                   # kill -9: no more renewals
    takeover = outbox.acquire("ops", "worker-2")
    assert takeover is not None and takeover.previous == "worker-1" and takeover.requeued == 1
    head = outbox.head("ops")
    assert head is not None and head.id == message_id and head.attempts == 1
    # The dead owner's open send record counts as ended now, so the limit still holds.
    assert outbox.recent_ends("ops", 5) == [clock.now()]


def test_a_request_with_an_unknown_outcome_counts_in_the_windows_until_it_may_be_over(outbox, clock):
    """issue 17 item 7: a request Feishu did not answer may still be in flight there; its
    send record ends `in_flight` seconds after it was settled, and prune keeps it till then."""
    ids = outbox.store([msg(1), msg(2), msg(3)]).ids
    outbox.acquire("ops", "me", ttl=1000)
    first = outbox.claim(ids[0], "ops", "me", record=True, ttl=1000)
    clock.step(10)    # the read timeout
    gave_up = clock.now()
    assert outbox.reschedule(ids[0], first, "ops", "me", when=gave_up + 60, delay=60, reason="timeout", code=None,
                             detail="ReadTimeout", in_flight=60)
    assert outbox.recent_ends("ops", 5) == [gave_up + 60]
    # Later requests that end sooner do not push it out of the latest `count` ends.
    for message_id in ids[1:]:
        clock.step(1)
        outbox.mark_sent(message_id, outbox.claim(message_id, "ops", "me", record=True), "ops", "me", 0)
    assert outbox.recent_ends("ops", 1) == [gave_up + 60]
    assert outbox.recent_ends("ops", 3) == [gave_up + 60, gave_up + 2, gave_up + 1]
    outbox.prune(clock.now())
    # A dead letter after an unknown outcome as well.
    (last,) = outbox.store([msg(4)]).ids
    send = outbox.claim(last, "ops", "me", record=True)
    assert outbox.dead_letter(last, send, "ops", "me", reason="timeout", code=None, detail="ReadTimeout",
                              in_flight=30)
    assert outbox.recent_ends("ops", 1) == [gave_up + 60] and clock.now() + 30 in outbox.recent_ends("ops", 5)


def test_a_lapsed_holder_can_neither_claim_nor_overwrite_the_new_holders_work(outbox, clock):
    ids = outbox.store([msg(1), msg(2)]).ids
    outbox.acquire("ops", "a")
    send = outbox.claim(ids[0], "ops", "a", record=True)
    clock.step(LEASE_TTL + 0.1)
    outbox.acquire("ops", "b")
    with pytest.raises(LeaseLost):
        outbox.claim(ids[1], "ops", "a", record=True)
    assert outbox.claim(ids[0], "ops", "b", record=True)
    # a's late answer must not mark b's send done.
    assert outbox.mark_sent(ids[0], send, "ops", "a", 0) is False
    assert state(outbox, ids[0]) == SENDING


def lapsed_holder_and_new_one(outbox: Outbox, clock) -> tuple[int, int, int]:
    """"a" claimed the message and stalled; "b" took the bot over and is sending it now.
    Returns (the message, a's send record, b's send record)."""
    (message_id,) = outbox.store([msg(1)]).ids
    outbox.acquire("ops", "a")
    late_send = outbox.claim(message_id, "ops", "a", record=True)
    clock.step(LEASE_TTL + 0.1)
    outbox.acquire("ops", "b")
    return message_id, late_send, outbox.claim(message_id, "ops", "b", record=True)


def test_a_lapsed_holders_late_success_does_not_reset_the_new_holders_backoff(outbox, clock):
    message_id, late_send, send = lapsed_holder_and_new_one(outbox, clock)
    assert outbox.reschedule(message_id, send, "ops", "b", when=clock.now() + 8, delay=8,
                             reason="rate_limited", code=11232, detail="too many requests")
    before = outbox.bot_state("ops")
    assert before.backoff == 8

    assert outbox.mark_sent(message_id, late_send, "ops", "a", 0) is False
    assert outbox.bot_state("ops") == before       # b's next retry still backs off from 8 s


def test_a_lapsed_holders_late_retry_does_not_pause_the_new_holder(outbox, clock):
    message_id, late_send, send = lapsed_holder_and_new_one(outbox, clock)
    before, entry = outbox.bot_state("ops"), outbox.entry(message_id)

    assert outbox.reschedule(message_id, late_send, "ops", "a", when=clock.now() + 300, delay=300,
                             reason="server_error", code=500, detail="late") is False
    assert outbox.bot_state("ops") == before       # b is not paused for 300 s
    assert outbox.entry(message_id) == entry       # nor is its message rescheduled
    assert outbox.mark_sent(message_id, send, "ops", "b", 0)


def test_renewal_keeps_the_lease_and_release_frees_it(outbox, clock):
    outbox.acquire("ops", "a")
    for _ in range(3):
        clock.step(LEASE_TTL - 1)
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
    clock.step(100)
    assert outbox.retry(ids[2]) == 0                   # not a dead letter
    assert outbox.retry(ids[0]) == 1
    assert outbox.retry(ids[0]) == 0                   # already queued again
    again = outbox.entry(ids[0])
    assert again.state == PENDING and again.attempts == 0 and again.created == clock.now()
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
    clock.step(10)
    assert outbox.prune(clock.now() - 5) == 1
    assert [state(outbox, i) for i in ids] == [None, DEAD, PENDING]


def test_depths_count_waiting_messages_and_their_age(outbox, clock):
    outbox.store([msg(1), msg(2, group="g2"), msg(3, bot="db")])
    clock.step(30)
    outbox.store([msg(4, bot="db", group="g9")])
    assert sorted(outbox.depths()) == [("db", 2, 30.0), ("ops", 2, 30.0)]


def test_a_notification_for_several_bots_keeps_its_body_until_none_needs_it(outbox, clock):
    body = b'{"the": "webhook body"}'
    ids = outbox.store([payload_message("ops", body), payload_message("db", body)]).ids
    head = outbox.head("db")
    assert head.payload == body and head.bodies is None and head.parts == 0    # not rendered yet
    assert [(e.part, e.parts) for e in outbox.list()] == [(1, 0), (1, 0)]

    outbox.acquire("ops", "me")
    assert outbox.set_bodies(ids[0], "ops", "me", [{"n": 1}, {"n": 2}])
    head = outbox.head("ops")
    assert head.payload is None and (head.part, head.parts) == (1, 2)
    for part in (1, 2):
        assert outbox.head("ops").part == part
        outbox.mark_sent(ids[0], outbox.claim(ids[0], "ops", "me", record=True), "ops", "me", 0, last=part == 2)
    clock.step(10)
    outbox.prune(clock.now())
    assert outbox.entry(ids[0]) is None
    assert outbox.head("db").payload == body          # db's message still needs it


def test_a_dead_letter_queued_again_is_rendered_again_even_after_pruning(outbox, clock):
    (message_id,) = outbox.store([payload_message("ops", b"{}")]).ids
    outbox.acquire("ops", "me")
    outbox.set_bodies(message_id, "ops", "me", [{"keyword": "missing"}])
    outbox.dead_letter(message_id, outbox.claim(message_id, "ops", "me", record=True), "ops", "me",
                       reason="keyword_missing", code=19024, detail="")
    clock.step(WINDOW * 2)
    outbox.prune(clock.now())
    assert outbox.retry(message_id) == 1
    head = outbox.head("ops")
    assert head.bodies is None and head.payload == b"{}"   # the fixed config renders it anew
