"""Delivery: several "workers" (Delivery instances on one outbox file, each with its own threads)
sending through a recording stub client or the strict fake Feishu.

What is checked is what a user would see at Feishu's end: every message once, in order,
never faster than the bot's limits, retried after failures, given up on with a reason,
and nothing lost across a stop or a dead worker.
"""

from __future__ import annotations

import json
import logging
import random
import statistics
import threading
import time
from collections import deque
from pathlib import Path

import pytest

from bridge import create_app
from bridge.config import Bot, Config, DeliveryConfig, RateLimit, StorageConfig, loads
from bridge.pipeline import Delivery  # MERGE-SHIM: bridge.delivery.Delivery, once these tests store through bridge.accept
from bridge.feishu import FeishuClient, Outcome, SendResult
from bridge.metrics import Metrics
from bridge.outbox import PENDING, SENDING, Outbox
from bridge.pipeline import OutgoingMessage
from bridge.ratelimit import backoff, next_allowed
from bridge.routing import Route
from bridge.secret import Secret, WebhookURL

FIXTURES = Path(__file__).parent / "fixtures"
LOG = logging.getLogger("bridge.test-delivery")
OK = SendResult(Outcome.SENT, "ok", 0, 200)
SERVER_ERROR = SendResult(Outcome.RETRY, "server_error", None, 500, "500 Internal Server Error")
KEYWORD = SendResult(Outcome.PERMANENT, "keyword_missing", 19024, 200, "Key Words Not Found")


class StubClient:
    """Records when each request started and answers from a script (then success)."""

    def __init__(self, *script: SendResult, delay: float = 0.0):
        self.calls: list[tuple[float, str, str]] = []    # (time.time(), bot, text)
        self.script = deque(script)
        self.delay = delay
        self.cond = threading.Condition()
        self.in_flight = self.most_in_flight = 0

    def send(self, bot: Bot, message: dict) -> SendResult:
        with self.cond:
            self.calls.append((time.time(), bot.name, message["content"]["text"]))
            result = self.script.popleft() if self.script else OK
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.cond.notify_all()
        time.sleep(self.delay)
        with self.cond:
            self.in_flight -= 1
        return result

    def texts(self) -> list[str]:
        with self.cond:
            return [c[2] for c in self.calls]

    def wait_calls(self, count: int, timeout: float = 10.0) -> list[tuple[float, str, str]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.calls) >= count, timeout), \
                f"{len(self.calls)} of {count} sends in {timeout}s: {[c[2] for c in self.calls]}"
            return list(self.calls)


def make_bot(name: str = "ops", per_second: int = 5, per_minute: int = 100, url: str | None = None,
             **kw) -> Bot:
    return Bot(name=name, webhook_url=WebhookURL(url or f"http://127.0.0.1:9/open-apis/bot/v2/hook/tok-{name}"),
               rate_limit=RateLimit(per_second, per_minute), **kw)


def make_config(tmp_path: Path, *bots: Bot, **delivery) -> Config:
    bots = bots or (make_bot(),)
    settings = {"backoff_base": 0.05, "backoff_cap": 0.1, **delivery}
    return Config(bots={b.name: b for b in bots}, route=Route(bots=(bots[0].name,)),
                  storage=StorageConfig(path=tmp_path / "outbox.db"), delivery=DeliveryConfig(**settings))


def msg(text: str, bot: str = "ops", group: str | None = None, identity: str = "") -> OutgoingMessage:
    return OutgoingMessage(bot=bot, group_key=group or f"group-{text}", source="alertmanager",
                           bodies=({"msg_type": "text", "content": {"text": text}},), identity=identity)


def eventually(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


@pytest.fixture
def deliveries():
    """Started Delivery instances, stopped at the end of the test."""
    made: list[Delivery] = []

    def make(config: Config, client, start: bool = True, **kw) -> Delivery:
        delivery = Delivery(config, client, LOG, **kw)
        made.append(delivery)
        if start:
            delivery.start()
        return delivery

    yield make
    for delivery in made:
        delivery.stop(timeout=2)


def test_two_workers_send_one_bots_messages_once_in_order_within_the_per_second_limit(tmp_path, deliveries):
    config = make_config(tmp_path, make_bot(per_second=5, per_minute=100))
    client = StubClient(delay=0.05)    # a round trip, so that two senders at once would overlap
    workers = [deliveries(config, client), deliveries(config, client)]
    for i in range(30):
        workers[i % 2].enqueue([msg(f"m{i}")])
    calls = client.wait_calls(30, timeout=15)
    time.sleep(0.2)   # a duplicate send would show up now
    assert client.texts() == [f"m{i}" for i in range(30)]
    assert client.most_in_flight == 1        # one sender at a time, so Feishu sees them in order
    times = [c[0] for c in calls]
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[5:])), "6 sends within 1 s"
    assert times[29] - times[0] < 8, "much slower than 5 per second"


def test_a_new_holder_keeps_to_the_minute_window_the_last_one_used(tmp_path, deliveries):
    config = make_config(tmp_path, make_bot(per_second=5, per_minute=8))
    # The previous holder sent 8 (the minute's quota) in the two seconds ending 57.5 s ago, then went away.
    start = time.time() - 59.5 - 0.25
    seed_clock = [start]
    old = Outbox(config.storage.path, clock=lambda: seed_clock[0])
    ids = old.store([msg(f"old{i}") for i in range(8)]).ids
    old.acquire("ops", "previous-worker")
    ends = []
    for message_id in ids:
        send = old.claim(message_id, "ops", "previous-worker", record=True)
        seed_clock[0] += 0.25
        old.mark_sent(message_id, send, "ops", "previous-worker", 0)
        ends.append(seed_clock[0])
    old.release("ops", "previous-worker")
    old.close()

    client = StubClient()
    deliveries(config, client, start=False).enqueue([msg("new0"), msg("new1")])
    deliveries(config, client)
    calls = client.wait_calls(2, timeout=6)
    # Each may go only once the send 8 places before it has left the 60 s window.
    assert calls[0][0] >= ends[0] + 60 and calls[1][0] >= ends[1] + 60
    assert calls[1][0] < ends[1] + 61


def test_a_retry_then_success_is_delivered_once_and_later_messages_wait_behind_it(tmp_path, deliveries):
    client = StubClient(SERVER_ERROR)
    delivery = deliveries(make_config(tmp_path), client)
    delivery.enqueue([msg("first")])
    delivery.enqueue([msg("second")])
    calls = client.wait_calls(3)
    time.sleep(0.2)
    assert client.texts() == ["first", "first", "second"]
    assert calls[1][0] - calls[0][0] >= 0.05                 # backoff_base
    assert delivery.counters.get("retries", "ops") == 1 and delivery.counters.get("sent", "ops") == 2
    assert delivery.outbox.list() == []


def test_retry_after_from_feishu_is_honoured(tmp_path, deliveries):
    throttled = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=0.6)
    client = StubClient(throttled)
    deliveries(make_config(tmp_path), client).enqueue([msg("m")])
    calls = client.wait_calls(2)
    assert calls[1][0] - calls[0][0] >= 0.6


def test_a_message_still_failing_at_max_age_becomes_a_dead_letter(tmp_path, deliveries, caplog):
    client = StubClient(*[SERVER_ERROR] * 100)
    # Retries 0.1-0.15 s apart: under the 5/s limit, which attempts count against too.
    delivery = deliveries(make_config(tmp_path, max_age=0.4, backoff_base=0.1, backoff_cap=0.15), client)
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        delivery.enqueue([msg("m")])
        dead = eventually(lambda: delivery.outbox.list(dead=True), timeout=3)
    assert len(dead) == 1 and dead[0].reason == "server_error" and "delivery.max_age" in dead[0].detail
    created = dead[0].created
    calls = client.texts()
    assert len(calls) >= 2 and client.calls[-1][0] <= created + 0.4 + 0.1   # the last try at max_age, no later
    assert delivery.counters.get("dead_letters", "ops") == 1
    assert any(getattr(r, "event", "") == "dead_letter" for r in caplog.records)
    time.sleep(0.3)
    assert len(client.texts()) == len(calls)                      # given up: no more attempts


def test_a_permanent_refusal_is_a_dead_letter_at_once_and_retry_delivers_it(tmp_path, deliveries, caplog):
    client = StubClient(KEYWORD)
    delivery = deliveries(make_config(tmp_path), client)
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        delivery.enqueue([msg("refused")])
        delivery.enqueue([msg("next")])
        client.wait_calls(2)
    assert client.texts() == ["refused", "next"]                  # the next one was not held up
    (dead,) = eventually(lambda: delivery.outbox.list(dead=True))
    assert (dead.reason, dead.code, dead.attempts) == ("keyword_missing", 19024, 1)
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "dead_letter"]
    assert KEYWORD.advice in line.getMessage()                    # says what to fix

    assert delivery.outbox.retry(dead.id) == 1
    client.wait_calls(3)
    assert client.texts() == ["refused", "next", "refused"]
    assert eventually(lambda: delivery.outbox.list() == [])


def test_stop_finishes_the_send_in_flight_and_the_next_start_sends_the_rest(tmp_path, deliveries):
    config = make_config(tmp_path)
    slow = StubClient(delay=0.3)
    first = deliveries(config, slow)
    first.enqueue([msg("a"), msg("b"), msg("c")])
    slow.wait_calls(1)
    first.stop()
    assert slow.texts() == ["a"]
    assert [(r.state, r.attempts) for r in first.outbox.list()] == [(PENDING, 0), (PENDING, 0)]
    assert first.outbox.bot_state("ops").owner is None           # released: no wait for it to lapse

    client = StubClient()
    deliveries(config, client)
    client.wait_calls(2)
    assert client.texts() == ["b", "c"]


def test_stop_gives_up_on_a_hung_send_after_the_grace_and_keeps_the_message(tmp_path, deliveries, caplog):
    hung = StubClient(delay=1.0)
    delivery = deliveries(make_config(tmp_path, shutdown_grace=0.2), hung)
    delivery.enqueue([msg("a")])
    hung.wait_calls(1)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        delivery.stop()
    assert time.monotonic() - began < 0.6
    assert [r.state for r in delivery.outbox.list()] == [SENDING]   # still stored; result unknown
    assert any(getattr(r, "event", "") == "stop_in_flight" for r in caplog.records)


def test_a_message_in_flight_when_its_worker_died_is_sent_by_another(tmp_path, deliveries, caplog):
    config = make_config(tmp_path)
    past = time.time() - 30
    dead_worker = Outbox(config.storage.path, clock=lambda: past)     # killed 30 s ago, mid-send
    message_id = dead_worker.store([msg("a")]).ids[0]
    dead_worker.acquire("ops", "killed-worker")
    dead_worker.claim(message_id, "ops", "killed-worker", record=True)
    dead_worker.close()

    client = StubClient()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        delivery = deliveries(config, client)
        client.wait_calls(1)
    assert client.texts() == ["a"]
    assert eventually(lambda: delivery.outbox.list() == [])
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "takeover"]
    assert "killed-worker" in line.getMessage() and line.requeued == 1


@pytest.mark.parametrize("coalesce, expected", [(True, ["firing", "resolved"]),
                                                (False, ["firing", "firing", "resolved"])])
def test_a_bot_catching_up_shows_the_current_state_not_a_backlog(tmp_path, deliveries, coalesce, expected):
    paused = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=0.5)
    client = StubClient(paused)
    delivery = deliveries(make_config(tmp_path, coalesce=coalesce), client)
    delivery.enqueue([msg("firing", group="g1")])
    assert eventually(lambda: [(r.state, r.attempts) for r in delivery.outbox.list()] == [(PENDING, 1)])
    delivery.enqueue([msg("resolved", group="g1")])     # arrives while the bot waits
    client.wait_calls(len(expected))
    time.sleep(0.2)
    assert client.texts() == expected
    assert delivery.counters.get("superseded", "ops") == (1 if coalesce else 0)


def test_a_duplicate_notification_is_dropped_counted_and_logged(tmp_path, deliveries, caplog):
    client = StubClient()
    one, two = deliveries(make_config(tmp_path), client), deliveries(make_config(tmp_path), client)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        one.enqueue([msg("a", identity="n1:ops:1/1")])
        two.enqueue([msg("a", identity="n1:ops:1/1")])     # the HA twin, via the other worker
    client.wait_calls(1)
    time.sleep(0.2)
    assert client.texts() == ["a"] and two.counters.get("duplicates", "ops") == 1
    assert [r.bot for r in caplog.records if getattr(r, "event", "") == "duplicate"] == ["ops"]


def test_a_dry_run_bot_logs_the_message_and_sends_nothing(tmp_path, deliveries, caplog):
    client = StubClient()
    delivery = deliveries(make_config(tmp_path, Bot(name="dry")), client)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        delivery.enqueue([msg("hello", bot="dry")])
        assert eventually(lambda: delivery.counters.get("dry_run", "dry") == 1)
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "dry_run"]
    assert '"text":"hello"' in line.getMessage()
    assert client.calls == [] and delivery.outbox.list() == []


def test_a_reloaded_configuration_starts_new_bots_and_stops_removed_ones(tmp_path, deliveries):
    client = StubClient()
    delivery = deliveries(make_config(tmp_path, make_bot("ops")), client)
    assert eventually(lambda: delivery.outbox.bot_state("ops").owner == delivery.owner)
    delivery.configure(make_config(tmp_path, make_bot("db")))
    delivery.enqueue([msg("to-db", bot="db"), msg("to-ops", bot="ops")])
    client.wait_calls(1)
    time.sleep(0.2)
    assert client.calls[0][1:] == ("db", "to-db") and len(client.calls) == 1
    # The removed bot's lease is free for a worker that still has it; its message waits, stored.
    assert eventually(lambda: delivery.outbox.bot_state("ops").owner is None)
    assert [(d[0], d[1]) for d in delivery.depths()] == [("db", 0), ("ops", 1)]


def test_idle_latency_when_another_worker_is_the_sender(tmp_path, deliveries):
    config = make_config(tmp_path)
    client = StubClient()
    sender = deliveries(config, client)
    assert eventually(lambda: sender.outbox.bot_state("ops").owner == sender.owner)
    acceptor = deliveries(config, client, start=False)   # a worker that only accepts
    latencies = []
    for i in range(10):
        before = time.time()
        acceptor.enqueue([msg(f"m{i}")])
        latencies.append(client.wait_calls(i + 1)[-1][0] - before)
        time.sleep(0.21)      # idle between messages, and under the 5/s limit
    p50, top = statistics.median(latencies), max(latencies)
    print(f"\nidle latency enqueue->request, other process sending: p50 {p50 * 1000:.1f} ms, "
          f"max {top * 1000:.1f} ms")
    assert p50 < 0.5       # generous: a slow polling loop (>= 1 s) would fail it


def test_metrics_count_outcomes_and_show_the_outbox_depth(tmp_path, deliveries):
    metrics = Metrics()
    client = StubClient(SERVER_ERROR, KEYWORD)
    delivery = deliveries(make_config(tmp_path, make_bot(), make_bot("idle")), client, metrics=metrics)
    delivery.enqueue([msg("a"), msg("b")])
    client.wait_calls(3)
    assert eventually(lambda: delivery.counters.get("sent", "ops") == 1)
    text = metrics.scrape().decode()
    for line in ('feishu_bridge_retries_total{bot="ops"} 1.0',
                 'feishu_bridge_dead_letters_total{bot="ops",reason="keyword_missing"} 1.0',
                 'feishu_bridge_messages_total{bot="ops",outcome="sent"} 1.0',
                 'feishu_bridge_feishu_errors_total{bot="ops",code="19024",reason="keyword_missing"} 1.0',
                 'feishu_bridge_outbox_depth{bot="idle"} 0.0'):
        assert line in text


def test_not_stored_is_answered_503_never_200(tmp_path):
    (tmp_path / "file").write_text("")
    config = loads(f"bots: [{{name: ops}}]\nroute: {{bots: [ops]}}\nstorage: {{path: {tmp_path / 'file' / 'o.db'}}}\n",
                   env={})
    app = create_app(config, logger=LOG)
    try:
        body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
        response = app.test_client().post("/alertmanager", data=body, content_type="application/json")
        assert response.status_code == 503 and "not stored" in response.get_json()["error"]
    finally:
        app.extensions["bridge"].stop(timeout=1)


def test_against_the_fake_feishu_nothing_is_throttled_lost_or_doubled(tmp_path, deliveries, fake_feishu):
    url = fake_feishu.add_bot("tok-delivery-1", secret="s3cr3t", keywords=["告警"])
    fake_feishu.script("tok-delivery-1", ("http", 500), ("reset",))
    bot = make_bot(url=url, secret=Secret("s3cr3t"), read_timeout=2.0)
    config = make_config(tmp_path, bot)
    workers = [deliveries(config, FeishuClient()), deliveries(config, FeishuClient())]
    for i in range(9):   # the two failures plus 9 go over Feishu's 5 per second
        workers[i % 2].enqueue([msg(f"告警 {i}")])
    fake_feishu.wait_for("tok-delivery-1", 9, timeout=10)
    time.sleep(0.3)
    assert [m["content"]["text"] for m in fake_feishu.received("tok-delivery-1")] == [f"告警 {i}" for i in range(9)]
    assert fake_feishu.throttled("tok-delivery-1") == []
    assert len(fake_feishu.attempts("tok-delivery-1")) == 11


def test_rate_windows_are_measured_from_the_end_of_earlier_requests():
    limit = RateLimit(per_second=2, per_minute=3)
    assert next_allowed([], limit, 100.0) == 100.0
    assert next_allowed([99.5], limit, 100.0) == 100.0
    assert next_allowed([99.9, 99.5], limit, 100.0) == pytest.approx(100.51)       # 2 in the last second
    assert next_allowed([99.9, 98.0, 50.0], limit, 100.0) == pytest.approx(110.01)  # 3 in the last minute


def test_backoff_grows_with_jitter_and_stays_between_base_and_cap():
    rng = random.Random(7)
    delay, seen = 0.0, []
    for _ in range(50):
        delay = backoff(delay, 1.0, 60.0, rng)
        seen.append(delay)
    assert all(1.0 <= d <= 60.0 for d in seen)
    assert seen[0] <= 3.0 and max(seen) == 60.0 and len(set(seen)) > 40    # grows to the cap, jittered


# -- rendering at send time ----------------------------------------------------------------

class Renders:
    """A render callable that records what it rendered: each message becomes `parts` texts."""

    def __init__(self, parts: int = 1, fail: str = ""):
        self.parts, self.fail = parts, fail
        self.rendered: list[str] = []

    def __call__(self, bot: Bot, message) -> list[dict]:
        text = json.loads(message.payload)["text"]
        self.rendered.append(text)
        if text == self.fail:
            raise ValueError("cannot read this payload")
        return [{"msg_type": "text", "content": {"text": f"{text} {i}/{self.parts}"}}
                for i in range(1, self.parts + 1)]


def stored(text: str, group: str | None = None) -> OutgoingMessage:
    """A message as the accept path stores it: the payload, not yet rendered."""
    return OutgoingMessage(bot="ops", group_key=group or f"group-{text}", source="alertmanager",
                           payload=json.dumps({"text": text}).encode())


def test_a_message_is_rendered_once_when_due_and_its_parts_sent_in_order(tmp_path, deliveries):
    client = StubClient(SERVER_ERROR)      # part 1 fails once: retried with the same rendering
    renders = Renders(parts=3)
    delivery = deliveries(make_config(tmp_path), client, render=renders)
    delivery.enqueue([stored("a")])
    delivery.enqueue([stored("b")])
    client.wait_calls(7)
    assert client.texts() == ["a 1/3", "a 1/3", "a 2/3", "a 3/3", "b 1/3", "b 2/3", "b 3/3"]
    assert renders.rendered == ["a", "b"]
    assert eventually(lambda: delivery.outbox.list() == [])


def test_a_message_superseded_while_it_waits_is_never_rendered(tmp_path, deliveries):
    paused = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=0.5)
    client = StubClient(paused)
    renders = Renders()
    delivery = deliveries(make_config(tmp_path), client, render=renders)
    delivery.enqueue([stored("first", group="g")])
    client.wait_calls(1)                                  # refused: the bot waits 0.5 s
    for state in ("second", "third", "fourth"):           # the group changes meanwhile
        delivery.enqueue([stored(state, group="g")])
    client.wait_calls(2)
    time.sleep(0.3)
    assert client.texts() == ["first 1/1", "fourth 1/1"]
    assert renders.rendered == ["first", "fourth"]


def test_a_message_that_cannot_be_rendered_is_a_dead_letter_and_the_next_goes_on(tmp_path, deliveries, caplog):
    client = StubClient()
    delivery = deliveries(make_config(tmp_path), client, render=Renders(fail="broken"))
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        delivery.enqueue([stored("broken")])
        delivery.enqueue([stored("fine")])
        client.wait_calls(1)
    assert client.texts() == ["fine 1/1"]
    (dead,) = eventually(lambda: delivery.outbox.list(dead=True))
    assert dead.reason == "unrenderable" and "cannot read this payload" in dead.detail
    assert [r.event for r in caplog.records if getattr(r, "event", "")] == ["render_failed"]


def test_a_dry_run_bot_prints_at_the_pace_the_real_bot_would_send(tmp_path, deliveries, caplog):
    delivery = deliveries(make_config(tmp_path, Bot(name="dry", rate_limit=RateLimit(2, 100))), StubClient())
    with caplog.at_level(logging.INFO, logger=LOG.name):
        delivery.enqueue([msg(f"m{i}", bot="dry") for i in range(5)])
        assert eventually(lambda: delivery.counters.get("dry_run", "dry") == 5, timeout=10)
    times = [r.created for r in caplog.records if getattr(r, "event", "") == "dry_run"]
    assert times[2] - times[0] >= 1.0 and times[4] - times[2] >= 1.0, "more than 2 in a second"
