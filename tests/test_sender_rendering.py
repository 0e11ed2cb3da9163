"""Rendering at send time, with a bot's Sender stepped by hand on a FakeClock: a message is
rendered once, when it is due, never if superseded first; a payload this version cannot read
is a dead letter, a bug in rendering is retried like a Feishu retry.
"""

from __future__ import annotations

import logging

import pytest

from bridge.notify.outcome import Outcome, SendResult
from bridge.metrics import Metrics
from bridge.store.records import PENDING
from support.clock import FakeClock
from support.delivery import (enqueue, LOG, SERVER_ERROR, Renders, StubClient, events, make_config, sample, stored,
                              stepped_workers)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stepped(clock):
    with stepped_workers(clock) as make:
        yield make


def test_a_message_is_rendered_once_when_due_and_its_parts_sent_in_order(tmp_path, stepped, clock):
    client = StubClient(SERVER_ERROR, clock=clock)      # part 1 fails once: retried with the same rendering
    renders = Renders(parts=3)
    delivery, sender = stepped(make_config(tmp_path), client, render=renders)
    enqueue(delivery, [stored("a")])
    enqueue(delivery, [stored("b")])
    sender.run()
    assert client.texts() == ["a 1/3", "a 1/3", "a 2/3", "a 3/3", "b 1/3", "b 2/3", "b 3/3"]
    assert renders.rendered == ["a", "b"]
    assert delivery.outbox.list() == []


def test_a_message_superseded_while_it_waits_is_never_rendered(tmp_path, stepped, clock):
    paused = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=0.5)
    client = StubClient(paused, clock=clock)
    renders = Renders()
    delivery, sender = stepped(make_config(tmp_path), client, render=renders)
    enqueue(delivery, [stored("first", group="g")])
    sender.until_waiting()                                # refused: the bot waits 0.5 s
    for state in ("second", "third", "fourth"):           # the group changes meanwhile
        enqueue(delivery, [stored(state, group="g")])
    sender.run()
    assert client.texts() == ["first 1/1", "fourth 1/1"]
    assert renders.rendered == ["first", "fourth"]


def test_a_payload_this_version_cannot_read_is_a_dead_letter_and_the_next_goes_on(tmp_path, stepped, clock, caplog):
    metrics = Metrics()
    client = StubClient(clock=clock)
    renders = Renders(unreadable=("broken", "json-broken"))
    delivery, sender = stepped(make_config(tmp_path), client, render=renders, metrics=metrics)
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        enqueue(delivery, [stored("broken")])
        enqueue(delivery, [stored("json-broken")])
        enqueue(delivery, [stored("fine")])
        sender.run()
    assert client.texts() == ["fine 1/1"]
    dead = delivery.outbox.list(dead=True)
    assert [d.reason for d in dead] == ["unrenderable", "unrenderable"]
    assert "cannot read this payload" in dead[0].detail and "JSONDecodeError" in dead[1].detail
    assert [r.event for r in caplog.records if getattr(r, "event", "")] == ["render_failed", "render_failed"]
    assert sample(metrics, "feishu_bridge_dead_letters_total", bot="ops", reason="unrenderable") == 2
    assert sample(metrics, "feishu_bridge_internal_errors_total", where="render") == 0


def test_a_bug_in_rendering_is_retried_with_backoff_counted_and_logged_every_time(tmp_path, stepped, clock, caplog):
    metrics = Metrics()
    client = StubClient(clock=clock)
    renders = Renders(buggy={"a"})
    delivery, sender = stepped(make_config(tmp_path, backoff_base=1.0, backoff_cap=8.0), client,
                               render=renders, metrics=metrics)
    enqueue(delivery, [stored("a")])
    enqueue(delivery, [stored("b")])
    pauses = []
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        for _ in range(4):
            pause = sender.until_waiting()             # the bot pauses, as after a Feishu retry
            assert not pause.on_news and client.calls == []
            pauses.append(pause.wait)
            sender.advance(pause.wait)
    assert pauses[0] == pytest.approx(1.0) and all(1.0 <= p <= 8.0 for p in pauses)   # backoff_base .. cap
    (waiting, _) = delivery.outbox.list()
    assert (waiting.state, waiting.reason, waiting.attempts) == (PENDING, "render_error", 4)
    assert "KeyError" in waiting.detail and delivery.outbox.list(dead=True) == []
    bugs = events(caplog, "delivery_bug")
    assert len(bugs) == 4 and all(r.where == "render" and r.exc_info for r in bugs)
    assert sample(metrics, "feishu_bridge_internal_errors_total", where="render") == 4

    renders.buggy.clear()                              # the fix (a reload, say): it goes, then the rest
    sender.run()
    assert client.texts() == ["a 1/1", "b 1/1"] and delivery.outbox.list() == []


def test_a_bug_in_rendering_that_lasts_past_max_age_ends_in_a_dead_letter(tmp_path, stepped, clock):
    client = StubClient(clock=clock)
    delivery, sender = stepped(make_config(tmp_path, max_age=30.0, backoff_base=1.0, backoff_cap=8.0), client,
                               render=Renders(buggy={"a"}))
    enqueue(delivery, [stored("a")])
    enqueue(delivery, [stored("b")])
    sender.run()
    (dead,) = delivery.outbox.list(dead=True)
    assert dead.reason == "render_error" and "delivery.max_age" in dead.detail and "KeyError" in dead.detail
    assert client.texts() == ["b 1/1"]
