"""What every outbox backend must do for card actions (issue 14), through bridge.store.Outbox
alone: a group's target kept when its card is sent, acknowledgements and silences seen by
every process, one silence claim at a time, a new firing forgetting them, prune.

Runs once per backend in conftest.BACKENDS, like test_contract.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from bridge.store import CARDS_KEPT, EVENTS_KEPT
from bridge.store.records import GroupTarget, Silence, group_ref

TARGET = GroupTarget("oc_1", "alertmanager", "http://am:9093", {"cluster": "prod", "alertname": "Disk"},
                     {"msg_type": "interactive", "card": {"schema": "2.0", "body": {"elements": []}}})
REF = group_ref("ops", "g1")


def test_a_group_is_remembered_with_its_target_and_found_by_its_ref(outbox, connect):
    assert outbox.group_actions(REF) is None
    kept = outbox.remember_group("ops", "g1", TARGET, fresh=True)
    assert (kept.ref, kept.bot, kept.group_key, kept.target) == (REF, "ops", "g1", TARGET)
    assert kept.acked_by is None and kept.silence_id is None
    assert connect().group_actions(REF) == kept
    assert outbox.group_actions(group_ref("ops", "g2")) is None and len(REF) == 24


def test_an_acknowledgement_and_a_silence_are_seen_by_every_process_and_kept_by_updates(outbox, connect, clock):
    outbox.remember_group("ops", "g1", TARGET, fresh=True)
    outbox.acknowledge(REF, "Alice")
    assert outbox.claim_silence(REF, hold=10)
    outbox.settle_silence(REF, Silence("s-1", "Bob", clock.now() + 3600, "http://am/#/silences/s-1"))
    other = connect()
    seen = other.group_actions(REF)
    assert (seen.acked_by, seen.acked_at) == ("Alice", clock.now())
    assert (seen.silence_id, seen.silenced_by, seen.silenced_until, seen.silence_url) == (
        "s-1", "Bob", clock.now() + 3600, "http://am/#/silences/s-1")
    assert seen.silenced(clock.now()) and not seen.silenced(clock.now() + 3600)
    changed = GroupTarget("oc_1", "alertmanager", "http://am:9093", TARGET.matchers, {"msg_type": "interactive"})
    updated = other.remember_group("ops", "g1", changed, fresh=False)
    assert updated.target == changed and (updated.acked_by, updated.silence_id) == ("Alice", "s-1")
    renewed = other.remember_group("ops", "g1", changed, fresh=True)
    assert (renewed.acked_by, renewed.acked_at, renewed.silence_id, renewed.silenced_until) == (None,) * 4


def test_one_silence_claim_at_a_time(outbox, connect, clock):
    outbox.remember_group("ops", "g1", TARGET, fresh=True)
    others = [connect() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        won = list(pool.map(lambda store: store.claim_silence(REF, 10), others))
    assert won.count(True) == 1
    assert not outbox.claim_silence(REF, 10)
    clock.step(11)
    assert outbox.claim_silence(REF, 10), "a claim its holder never settled lapses"
    outbox.settle_silence(REF, None)
    assert outbox.claim_silence(REF, 10), "a claim settled without a silence frees the group"
    outbox.settle_silence(REF, Silence("s-1", "Bob", clock.now() + 60, ""))
    assert not outbox.claim_silence(REF, 10), "a silence in force: no second one"
    clock.step(61)
    assert outbox.claim_silence(REF, 10), "once it has ended, a new one may be made"


def test_expiring_forgets_only_that_silence(outbox, clock):
    outbox.remember_group("ops", "g1", TARGET, fresh=True)
    outbox.claim_silence(REF, 10)
    outbox.settle_silence(REF, Silence("s-2", "Bob", clock.now() + 60, ""))
    outbox.expire_silence(REF, "s-1")
    assert outbox.group_actions(REF).silence_id == "s-2"
    outbox.expire_silence(REF, "s-2")
    found = outbox.group_actions(REF)
    assert (found.silence_id, found.silenced_by, found.silenced_until, found.silence_url) == (None,) * 4


def test_prune_forgets_a_group_unchanged_as_long_as_a_card(outbox, clock):
    outbox.remember_group("ops", "g1", TARGET, fresh=True)
    clock.step(CARDS_KEPT - 1)
    outbox.acknowledge(REF, "Alice")
    outbox.remember_group("ops", "g2", TARGET, fresh=True)
    clock.step(2)
    outbox.prune(clock.now())
    assert outbox.group_actions(REF) is not None
    clock.step(CARDS_KEPT)
    outbox.prune(clock.now())
    assert outbox.group_actions(REF) is None and outbox.group_actions(group_ref("ops", "g2")) is None


def test_a_callback_event_is_first_seen_once_by_every_process(outbox, connect, clock):
    others = [connect() for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(lambda store: store.first_event("ev-1"), others))
    assert first.count(True) == 1
    assert not outbox.first_event("ev-1") and outbox.first_event("ev-2")
    clock.step(EVENTS_KEPT + 1)
    outbox.prune(clock.now())
    assert outbox.first_event("ev-1"), "forgotten once no replay could pass the time window"
