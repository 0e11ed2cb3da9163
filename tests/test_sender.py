"""One bot's Sender, stepped by hand on a FakeClock: no thread and no sleep.

Pacing, backoff, max_age and lease takeover are checked to the millisecond, and "nothing
more is sent" is a step that sends nothing. What is checked is what a user would see at
Feishu's end: every message once, in order, never faster than the bot's limits, retried
after failures, given up on with a reason.
"""

from __future__ import annotations

import logging
import random

import pytest

from bridge.config import Bot, DeliveryConfig, RateLimit
from bridge.delivery.outcomes import Dead, Retry, Sent, decide
from bridge.delivery.pacing import Windows, backoff, next_allowed
from bridge.errors import StorageError
from bridge.notify.outcome import Outcome, SendResult
from bridge.metrics import Metrics
from bridge.store import LEASE_TTL
from bridge.store.records import PENDING
from bridge.store.sqlite import SqliteOutbox
from bridge.store.records import Head
from support.clock import FakeClock
from support.delivery import (enqueue, KEYWORD, LOG, OK, SERVER_ERROR, StubClient, events, expected_starts, make_bot,
                              make_config, msg, outbox_on, sample, stepped_workers)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stepped(clock):
    with stepped_workers(clock) as make:
        yield make


# -- pacing ----------------------------------------------------------------------------------

def test_a_bot_keeps_both_windows_to_the_millisecond_and_sends_nothing_while_it_waits(tmp_path, stepped, clock):
    client = StubClient(clock=clock)
    delivery, sender = stepped(make_config(tmp_path, make_bot(per_second=5, per_minute=8)), client)
    start = clock.now()
    enqueue(delivery, [msg(f"m{i}") for i in range(12)])
    while not (step := sender.until_waiting()).on_news:      # until idle, waiting for news
        sent = len(client.calls)
        assert sender.step().wait == pytest.approx(step.wait) and len(client.calls) == sent   # nothing until due
        sender.advance(step.wait)
    assert client.texts() == [f"m{i}" for i in range(12)]
    assert client.times() == pytest.approx(expected_starts(12, start, 5, 8))


def test_a_new_holder_keeps_to_the_minute_window_the_last_one_used(tmp_path, stepped, clock):
    config = make_config(tmp_path, make_bot(per_second=5, per_minute=8))
    # The previous holder sent 8 (the minute's quota) 0.25 s apart, then went away.
    old = outbox_on(config.storage.path, clock)
    ids = old.store([msg(f"old{i}") for i in range(8)]).ids
    old.acquire("ops", "previous-worker")
    ends = []
    for message_id in ids:
        send = old.claim(message_id, "ops", "previous-worker", record=True)
        clock.advance(0.25)
        old.mark_sent(message_id, send, "ops", "previous-worker", 0)
        ends.append(clock.now())
    old.release("ops", "previous-worker")
    old.close()

    client = StubClient(clock=clock)
    delivery, sender = stepped(config, client)
    enqueue(delivery, [msg("new0"), msg("new1")])
    sender.run()
    # Each may go only once the send 8 places before it has left the 60 s window.
    assert client.texts() == ["new0", "new1"]
    assert client.times() == pytest.approx([ends[0] + 60.01, ends[1] + 60.01])


def test_rate_windows_are_measured_from_the_end_of_earlier_requests():
    limit = RateLimit(per_second=2, per_minute=3)
    assert next_allowed([], limit, 100.0) == 100.0
    assert next_allowed([99.5], limit, 100.0) == 100.0
    assert next_allowed([99.9, 99.5], limit, 100.0) == pytest.approx(100.51)       # 2 in the last second
    assert next_allowed([99.9, 98.0, 50.0], limit, 100.0) == pytest.approx(110.01)  # 3 in the last minute
    # A shorter "minute", as the real-time burst test uses on both sides.
    assert next_allowed([99.9, 98.0, 95.0], limit, 100.0, Windows(minute=6.0)) == pytest.approx(101.01)


def test_backoff_grows_with_jitter_and_stays_between_base_and_cap():
    rng = random.Random(7)
    delay, seen = 0.0, []
    for _ in range(50):
        delay = backoff(delay, 1.0, 60.0, rng)
        seen.append(delay)
    assert all(1.0 <= d <= 60.0 for d in seen)
    assert seen[0] <= 3.0 and max(seen) == 60.0 and len(set(seen)) > 40    # grows to the cap, jittered


# -- outcomes ----------------------------------------------------------------------------------

def head(created: float = 1000.0, attempts: int = 0) -> Head:
    return Head(1, "g", "alertmanager", None, None, True, [{}], 0, attempts, created)


def test_decide_sends_retries_with_backoff_until_max_age_and_gives_up_on_a_refusal():
    settings = DeliveryConfig(max_age=100.0, backoff_base=1.0, backoff_cap=10.0)
    rng = random.Random(3)
    assert decide(OK, head(), settings, 1001.0, last_delay=0.0, rng=rng) == Sent()
    assert decide(KEYWORD, head(), settings, 1001.0, last_delay=0.0, rng=rng) == Dead("Key Words Not Found")

    retry = decide(SERVER_ERROR, head(), settings, 1001.0, last_delay=4.0, rng=rng)
    assert isinstance(retry, Retry) and 1.0 <= retry.delay <= 10.0 and retry.when == 1001.0 + retry.delay
    # The last attempt lands at max_age, not beyond; Feishu's Retry-After wins over both.
    assert decide(SERVER_ERROR, head(), settings, 1099.5, last_delay=4.0, rng=rng).when == 1100.0
    throttled = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=30.0)
    assert decide(throttled, head(), settings, 1099.5, last_delay=4.0, rng=rng).when == 1129.5

    late = decide(SERVER_ERROR, head(attempts=6), settings, 1100.0, last_delay=4.0, rng=rng)
    assert late == Dead("gave up after 7 attempts in 100s (delivery.max_age); 500 Internal Server Error")


def test_a_retry_then_success_is_delivered_once_and_later_messages_wait_behind_it(tmp_path, stepped, clock):
    metrics = Metrics()
    client = StubClient(SERVER_ERROR, clock=clock)
    delivery, sender = stepped(make_config(tmp_path), client, metrics=metrics)
    enqueue(delivery, [msg("first")])
    enqueue(delivery, [msg("second")])
    pause = sender.until_waiting()
    assert client.texts() == ["first"] and 0.05 <= pause.wait <= 0.1        # backoff_base .. backoff_cap
    assert sender.step().wait > 0 and client.texts() == ["first"]            # the second waits behind it
    sender.run()
    assert client.texts() == ["first", "first", "second"]
    assert client.times()[1] - client.times()[0] == pytest.approx(pause.wait)
    assert sample(metrics, "feishu_bridge_retries_total", bot="ops") == 1
    assert sample(metrics, "feishu_bridge_messages_total", bot="ops", outcome="sent") == 2
    assert delivery.outbox.list() == []


def test_retry_after_from_feishu_is_honoured(tmp_path, stepped, clock):
    throttled = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=0.6)
    client = StubClient(throttled, clock=clock)
    delivery, sender = stepped(make_config(tmp_path), client)
    enqueue(delivery, [msg("m")])
    sender.run()
    first, second = client.times()
    assert second - first == pytest.approx(0.6)


def test_a_message_still_failing_at_max_age_becomes_a_dead_letter(tmp_path, stepped, clock, caplog):
    metrics = Metrics()
    client = StubClient(*[SERVER_ERROR] * 100, clock=clock)
    config = make_config(tmp_path, max_age=0.4, backoff_base=0.1, backoff_cap=0.15)
    delivery, sender = stepped(config, client, metrics=metrics)
    created = clock.now()
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        enqueue(delivery, [msg("m")])
        sender.run()
    (dead,) = delivery.outbox.list(dead=True)
    assert dead.reason == "server_error" and "delivery.max_age" in dead.detail
    times = client.times()
    assert len(times) >= 3 and times[-1] == pytest.approx(created + 0.4)    # the last try at max_age, no later
    assert all(0.1 - 1e-9 <= b - a <= 0.15 + 1e-9 for a, b in zip(times, times[1:-1]))
    assert sample(metrics, "feishu_bridge_dead_letters_total", bot="ops", reason="server_error") == 1
    assert len(events(caplog, "dead_letter")) == 1
    sender.advance(3600)
    assert sender.until_waiting().on_news and len(client.calls) == len(times)   # given up: no more attempts


def test_a_permanent_refusal_is_a_dead_letter_at_once_and_retry_delivers_it(tmp_path, stepped, clock, caplog):
    client = StubClient(KEYWORD, clock=clock)
    delivery, sender = stepped(make_config(tmp_path), client)
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        enqueue(delivery, [msg("refused")])
        enqueue(delivery, [msg("next")])
        sender.run()
    assert client.texts() == ["refused", "next"]                  # the next one was not held up
    (dead,) = delivery.outbox.list(dead=True)
    assert (dead.reason, dead.code, dead.attempts) == ("keyword_missing", 19024, 1)
    (line,) = events(caplog, "dead_letter")
    assert KEYWORD.advice in line.getMessage()                    # says what to fix

    assert delivery.outbox.retry(dead.id) == 1
    sender.run()
    assert client.texts() == ["refused", "next", "refused"]
    assert delivery.outbox.list() == []


# -- leases ------------------------------------------------------------------------------------

def test_a_message_in_flight_when_its_worker_died_is_sent_by_another_once_the_lease_lapses(
        tmp_path, stepped, clock, caplog):
    config = make_config(tmp_path)
    dead_worker = outbox_on(config.storage.path, clock)                 # killed mid-send
    message_id = dead_worker.store([msg("a")]).ids[0]
    dead_worker.acquire("ops", "killed-worker")
    dead_worker.claim(message_id, "ops", "killed-worker", record=True)
    dead_worker.close()

    client = StubClient(clock=clock)
    delivery, sender = stepped(config, client)
    waiting = sender.step()
    assert not waiting.holding and waiting.wait == pytest.approx(LEASE_TTL)   # the dead worker's lease
    clock.advance(LEASE_TTL - 0.5)
    assert not sender.step().holding and client.calls == []             # not a moment early
    clock.advance(0.5)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        sender.run()
    assert client.texts() == ["a"] and delivery.outbox.list() == []
    (line,) = events(caplog, "takeover")
    assert "killed-worker" in line.getMessage() and line.requeued == 1


def test_a_sender_that_lost_its_lease_sends_nothing_more(tmp_path, stepped, clock, caplog):
    client = StubClient(clock=clock)
    delivery, sender = stepped(make_config(tmp_path), client)
    enqueue(delivery, [msg("a")])
    assert sender.step().holding
    clock.advance(LEASE_TTL + 1)                                        # no renewal: it lapsed
    other = outbox_on(delivery.config.storage.path, clock)
    assert other.acquire("ops", "other-worker") is not None
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        lost = sender.step()
        again = sender.step()
    assert not lost.holding and not again.holding and client.calls == []
    assert events(caplog, "lease_lost")
    other.close()


# -- what waits is what is sent ------------------------------------------------------------------

@pytest.mark.parametrize("coalesce, expected", [(True, ["firing", "resolved"]),
                                                (False, ["firing", "firing", "resolved"])])
def test_a_bot_catching_up_shows_the_current_state_not_a_backlog(tmp_path, stepped, clock, coalesce, expected):
    metrics = Metrics()
    paused = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=0.5)
    client = StubClient(paused, clock=clock)
    delivery, sender = stepped(make_config(tmp_path, coalesce=coalesce), client, metrics=metrics)
    enqueue(delivery, [msg("firing", group="g1")])
    sender.until_waiting()
    assert [(r.state, r.attempts) for r in delivery.outbox.list()] == [(PENDING, 1)]
    enqueue(delivery, [msg("resolved", group="g1")])     # arrives while the bot waits
    sender.run()
    assert client.texts() == expected
    assert sample(metrics, "feishu_bridge_messages_superseded_total", bot="ops") == (1 if coalesce else 0)


def test_a_duplicate_notification_is_dropped_counted_and_logged(tmp_path, stepped, clock, caplog):
    client = StubClient(clock=clock)
    metrics = Metrics()
    config = make_config(tmp_path)
    one, sender = stepped(config, client)
    two, _ = stepped(config, client, metrics=metrics)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        enqueue(one, [msg("a", identity="n1:ops:1/1")])
        enqueue(two, [msg("a", identity="n1:ops:1/1")])     # the HA twin, via the other worker
    sender.run()
    assert client.texts() == ["a"] and sample(metrics, "feishu_bridge_duplicates_dropped_total", bot="ops") == 1
    assert [r.bot for r in events(caplog, "duplicate")] == ["ops"]


def test_a_dry_run_bot_logs_the_message_and_sends_nothing(tmp_path, stepped, clock, caplog):
    metrics = Metrics()
    client = StubClient(clock=clock)
    delivery, sender = stepped(make_config(tmp_path, Bot(name="dry")), client, bot="dry", metrics=metrics)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        enqueue(delivery, [msg("hello", bot="dry")])
        sender.run()
    (line,) = events(caplog, "dry_run")
    assert '"text":"hello"' in line.getMessage()
    assert client.calls == [] and delivery.outbox.list() == []
    assert sample(metrics, "feishu_bridge_messages_total", bot="dry", outcome="dry_run") == 1


def test_a_dry_run_bot_prints_at_the_pace_the_real_bot_would_send(tmp_path, stepped, clock, caplog):
    config = make_config(tmp_path, Bot(name="dry", rate_limit=RateLimit(2, 100)))
    delivery, sender = stepped(config, StubClient(clock=clock), bot="dry")
    start = clock.now()
    printed: list[float] = []

    class Stamp(logging.Handler):
        def emit(self, record):
            if getattr(record, "event", "") == "dry_run":
                printed.append(clock.now())

    stamp = Stamp()
    LOG.addHandler(stamp)
    try:
        with caplog.at_level(logging.INFO, logger=LOG.name):
            enqueue(delivery, [msg(f"m{i}", bot="dry") for i in range(5)])
            sender.run()
    finally:
        LOG.removeHandler(stamp)
    assert printed == pytest.approx(expected_starts(5, start, 2, 100))


# -- a send whose outcome cannot be recorded (issue #18) ------------------------------------------

class FailingRecords(SqliteOutbox):
    """An outbox whose disk refuses to record the next `failures` sends."""

    failures = 0

    def mark_sent(self, *args, **kw):
        if self.failures:
            self.failures -= 1
            raise StorageError("cannot record a send in the outbox: disk I/O error")
        return super().mark_sent(*args, **kw)


def test_a_send_that_cannot_be_recorded_stops_its_bot_and_is_never_sent_again(tmp_path, stepped, clock, caplog):
    metrics = Metrics()
    config = make_config(tmp_path)
    outbox = FailingRecords(config.storage.path, clock=clock)
    client = StubClient(clock=clock)
    delivery, sender = stepped(config, client, outbox=outbox, metrics=metrics)
    enqueue(delivery, [msg("a"), msg("b")])
    outbox.failures = 3
    with caplog.at_level(logging.INFO, logger=LOG.name):
        for _ in range(3):                  # each recording fails: the bot stops, b waits
            step = sender.until_waiting()
            assert step.holding and not step.on_news
            sender.advance(step.wait)
        assert client.texts() == ["a"]
        assert "recording that failed 3 time(s)" in delivery.problems()["ops"]
        assert sample(metrics, "feishu_bridge_internal_errors_total", where="record_send") == 3
        sender.run()                        # the disk recovers: a is recorded, b goes
    assert client.texts() == ["a", "b"] and delivery.problems() == {}
    assert len(events(caplog, "record_failed")) == 3 and len(events(caplog, "record_recovered")) == 1
    assert delivery.outbox.list() == []


# -- metrics ----------------------------------------------------------------------------------

def test_metrics_count_outcomes_and_show_the_outbox_depth(tmp_path, stepped, clock):
    metrics = Metrics()
    client = StubClient(SERVER_ERROR, KEYWORD, clock=clock)
    delivery, sender = stepped(make_config(tmp_path, make_bot(), make_bot("idle")), client, metrics=metrics)
    enqueue(delivery, [msg("a"), msg("b")])
    sender.run()
    assert len(client.calls) == 3
    text = metrics.scrape().decode()
    for line in ('feishu_bridge_retries_total{bot="ops"} 1.0',
                 'feishu_bridge_dead_letters_total{bot="ops",reason="keyword_missing"} 1.0',
                 'feishu_bridge_messages_total{bot="ops",outcome="sent"} 1.0',
                 'feishu_bridge_feishu_errors_total{bot="ops",code="19024",reason="keyword_missing"} 1.0',
                 'feishu_bridge_outbox_depth{bot="idle"} 0.0',
                 'feishu_bridge_outbox_up 1.0'):
        assert line in text
