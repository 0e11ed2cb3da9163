"""App bots at the edge of Feishu's 14 days (issue 13): a card Feishu no longer lets the bridge
update (too old, deleted, recalled) is replaced by a new card; a too-old one, still in the
chat, gets one reply in its thread pointing at the new one, a deleted one nothing; the store
forgets the old message id; one log line; no retry loop.

The bridge (its services, a sender stepped by hand) and the strict fake Open API share one
FakeClock, so 14 days pass in a step and the fake applies its own 14-day rule. The fake's
per-chat window runs on the real monotonic clock, which a stepped sender does not move:
it is widened here (pacing is tested elsewhere)."""

from __future__ import annotations

import logging

import pytest

from bridge.delivery.appbot import moved
from fake_open_api import answers as a
from support.appbot import CHAT, SteppedBridge, alert, buzzes, config_yaml, payload, stepped_fake, thread_texts, titles
from support.clock import FakeClock
from support.delivery import events

pytestmark = pytest.mark.usefixtures("no_proxy_env")
DAY = 86400
MOVED = moved()["content"]["text"]


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def fake(clock):
    with stepped_fake(clock) as fake:
        yield fake


@pytest.fixture
def bridge(fake, clock, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    bridge = SteppedBridge(config_yaml(fake.base_url, storage=tmp_path / "outbox.db"), clock,
                           logging.getLogger("bridge.test-appbot-edge"))
    yield bridge
    bridge.close()


def test_a_card_past_14_days_is_replaced_and_its_thread_points_to_the_new_one(bridge, fake, clock, caplog):
    post = bridge.post
    post(payload(alert("DiskFull")))
    (old,) = [m.message_id for m in fake.chat(CHAT)]
    clock.advance(14 * DAY + 60)
    bridge.store.prune(clock.now())   # the watcher's: a card past 14 days is still known
    post(payload(alert("DiskFull"), alert("HighLoad")))
    assert titles(fake) == [("[FIRING:1]", "red"), ("[FIRING:2]", "red")], "the old card stays as it was"
    new = fake.chat(CHAT)[1].message_id
    assert fake.attempts("patch") == [], "its age is known: no request Feishu would refuse"
    assert thread_texts(fake, old) == [MOVED]
    assert bridge.card_ids() == [new], "the store forgot the old card"
    (line,) = events(caplog, "card_gone")
    assert "14 days" in line.getMessage() and "points to the new one" in line.getMessage()
    assert (line.old_message_id, line.message_id) == (old, new)
    post(payload(alert("DiskFull", "resolved"), alert("HighLoad", "resolved")))
    assert titles(fake) == [("[FIRING:1]", "red"), ("[RESOLVED]", "green")]
    assert thread_texts(fake, new) == ["🔴 1 more firing: HighLoad", "✅ Resolved after 23m"]
    assert thread_texts(fake, old) == [MOVED], "pointed to once"
    assert fake.message(new).updates == 1 and len(events(caplog, "card_gone")) == 1
    assert len(buzzes(fake)) == 1, "the same firing: not buzzed again"
    assert bridge.store.list() == []


def test_a_card_just_within_the_window_is_still_updated(bridge, fake, clock):
    post = bridge.post
    post(payload(alert("DiskFull")))
    clock.advance(12 * DAY)
    post(payload(alert("DiskFull"), alert("HighLoad")))
    assert titles(fake) == [("[FIRING:2]", "red")] and [t.code for t in fake.attempts("patch")] == [0]


@pytest.mark.parametrize("remove", ["delete", "recall"])
def test_a_deleted_or_recalled_card_is_replaced_without_a_reply_to_it(bridge, fake, caplog, remove):
    post = bridge.post
    post(payload(alert("DiskFull")))
    (old,) = [m.message_id for m in fake.chat(CHAT)]
    getattr(fake, remove)(old)
    post(payload(alert("DiskFull"), alert("HighLoad")))
    (new,) = [m.message_id for m in fake.chat(CHAT)]
    assert new != old and titles(fake) == [("[FIRING:2]", "red")]
    assert [t.code for t in fake.attempts("patch")] == [a.DELETED if remove == "delete" else a.RECALLED]
    assert fake.thread(old) == [] and thread_texts(fake, new) == ["🔴 1 more firing: HighLoad"]
    assert bridge.card_ids() == [new]
    (line,) = events(caplog, "card_gone")
    assert "points" not in line.getMessage() and line.old_message_id == old
    post(payload(alert("DiskFull", "resolved"), alert("HighLoad", "resolved")))
    assert [t.code for t in fake.attempts("patch")][1:] == [0], "the new card is the one updated"
    assert len(fake.attempts("patch")) == 2 and bridge.store.list(dead=True) == []


def test_feishu_saying_too_old_first_is_replaced_and_pointed_to_once(bridge, fake, caplog):
    post = bridge.post
    post(payload(alert("DiskFull")))
    (old,) = [m.message_id for m in fake.chat(CHAT)]
    fake.advance(14 * DAY + 60)   # Feishu's clock only: the bridge learns the age from the answer
    post(payload(alert("DiskFull"), alert("HighLoad")))
    assert [t.code for t in fake.attempts("patch")] == [a.TOKEN_INVALID, a.TOO_OLD]
    assert len(fake.chat(CHAT)) == 2 and thread_texts(fake, old) == [MOVED]
    assert len(events(caplog, "card_gone")) == 1


def test_a_pointer_feishu_refuses_is_logged_and_not_tried_again(bridge, fake, clock, caplog):
    post = bridge.post
    fake.world.chats[CHAT].threads = False
    post(payload(alert("DiskFull")))
    (old,) = [m.message_id for m in fake.chat(CHAT)]
    clock.advance(14 * DAY + 60)
    post(payload(alert("DiskFull"), alert("HighLoad")))
    assert len(fake.chat(CHAT)) == 2 and bridge.card_ids() != [old]
    assert [t.code for t in fake.attempts("reply")] == [a.NO_THREADS, a.NO_THREADS], \
        "one try for the pointer, one for the step's own reply"
    (line,) = events(caplog, "card_gone")
    assert "could not point" in line.getMessage()
    assert bridge.store.list(dead=True) == [] and bridge.store.list() == []
