"""Delivery: what a user would see at Feishu's end: every message once, in order, never
faster than the bot's limits, retried after failures, given up on with a reason, and
nothing lost across a stop or a dead worker.

Most tests step one bot's Sender by hand on a FakeClock: no thread and no sleep, so
pacing, backoff, max_age and lease takeover are checked to the millisecond, and "nothing
more is sent" is a step that sends nothing. The others run Delivery's threads (a
"worker" is a Delivery instance; several share one outbox file) where the threads are
the point: one sender at a time across workers, stop, reload, the idle latency, and the
strict fake Feishu over HTTP.
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
from bridge.delivery import Delivery, Next
from bridge.delivery.outcomes import Dead, Retry, Sent, decide
from bridge.delivery.pacing import Windows, backoff, next_allowed
from bridge.errors import PayloadError, StorageError
from bridge.feishu import FeishuClient, Outcome, SendResult
from bridge.metrics import Metrics
from bridge.outbox import LEASE_TTL, PENDING, SENDING, Outbox
from bridge.pipeline import OutgoingMessage
from bridge.routing import Route
from bridge.secret import Secret, WebhookURL
from bridge.store.records import Head
from support import eventually
from support.clock import FakeClock

FIXTURES = Path(__file__).parent / "fixtures"
LOG = logging.getLogger("bridge.test-delivery")
OK = SendResult(Outcome.SENT, "ok", 0, 200)
SERVER_ERROR = SendResult(Outcome.RETRY, "server_error", None, 500, "500 Internal Server Error")
KEYWORD = SendResult(Outcome.PERMANENT, "keyword_missing", 19024, 200, "Key Words Not Found")


class StubClient:
    """Records when each request started (on `clock`) and answers from a script (then success)."""

    def __init__(self, *script: SendResult, delay: float = 0.0, clock=None):
        self.calls: list[tuple[float, str, str]] = []    # (clock.now(), bot, text)
        self.script = deque(script)
        self.delay = delay
        self.now = clock.now if clock is not None else time.time
        self.cond = threading.Condition()
        self.in_flight = self.most_in_flight = 0

    def send(self, bot: Bot, message: dict) -> SendResult:
        with self.cond:
            self.calls.append((self.now(), bot.name, message["content"]["text"]))
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

    def times(self) -> list[float]:
        with self.cond:
            return [c[0] for c in self.calls]

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


def rendered_only(bot: Bot, head: Head) -> list[dict]:
    raise AssertionError("this test stores rendered messages: nothing should need rendering")


def outbox_on(path: Path, clock: FakeClock | None = None) -> Outbox:
    # MERGE-SHIM: the SQLite backend takes the Clock itself (clock=clock), not its now().
    return Outbox(path) if clock is None else Outbox(path, clock=clock.now)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def events(caplog, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == event]


@pytest.fixture
def deliveries():
    """Started Delivery instances on the real clock, stopped at the end of the test."""
    made: list[Delivery] = []

    def make(config: Config, client, start: bool = True, **kw) -> Delivery:
        kw.setdefault("outbox", outbox_on(config.storage.path))
        kw.setdefault("render", rendered_only)
        delivery = Delivery(config, client, LOG, **kw)
        made.append(delivery)
        if start:
            delivery.start()
        return delivery

    yield make
    for delivery in made:
        delivery.stop(timeout=2)


# -- stepping a sender by hand -------------------------------------------------------------

class Stepped:
    """One worker's sender for one bot, stepped by hand on a fake clock: no threads."""

    def __init__(self, delivery: Delivery, clock: FakeClock, bot: str = "ops"):
        self.delivery, self.clock, self.name = delivery, clock, bot
        self.sender = delivery.sender(bot)
        self.holding = False

    def step(self) -> Next:
        config = self.delivery.config
        step = self.sender.step(config.bots[self.name], config.delivery, self.holding)
        self.holding = step.holding
        return step

    def until_waiting(self) -> Next:
        """Step while there is something to do at once; return the step that says to wait."""
        for _ in range(1000):
            step = self.step()
            if step.wait > 0:
                return step
        raise AssertionError("the sender never waits: it spins")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.holding:   # what the watcher does every second meanwhile
            self.delivery.outbox.renew(self.delivery.owner, LEASE_TTL)

    def run(self, max_steps: int = 10_000) -> None:
        """Step, moving the clock on by each wait, until the bot has nothing left to do."""
        for _ in range(max_steps):
            step = self.until_waiting()
            if step.on_news:
                return
            self.advance(step.wait)
        raise AssertionError("the bot never ran out of work")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stepped(tmp_path, clock):
    """A worker that is not started, for stepping: stepped(config, client, **kw) -> (Delivery, Stepped)."""
    outboxes: list[Outbox] = []

    def make(config: Config, client, bot: str = "ops", **kw) -> tuple[Delivery, Stepped]:
        outbox = kw.setdefault("outbox", outbox_on(config.storage.path, clock))
        outboxes.append(outbox)
        kw.setdefault("render", rendered_only)
        delivery = Delivery(config, client, LOG, clock=clock, **kw)
        return delivery, Stepped(delivery, clock, bot)

    yield make
    for outbox in outboxes:
        outbox.close()


def expected_starts(count: int, start: float, per_second: int, per_minute: int, minute: float = 60.0) -> list[float]:
    """When each of `count` instant requests may start, the first at `start`: each waits
    until the request per_second (per_minute) places back left its window, plus the slack."""
    starts: list[float] = []
    for k in range(count):
        t = starts[-1] if starts else start
        if k >= per_second:
            t = max(t, starts[k - per_second] + 1.0 + 0.01)
        if k >= per_minute:
            t = max(t, starts[k - per_minute] + minute + 0.01)
        starts.append(t)
    return starts


# -- pacing ----------------------------------------------------------------------------------

def test_a_bot_keeps_both_windows_to_the_millisecond_and_sends_nothing_while_it_waits(tmp_path, stepped, clock):
    client = StubClient(clock=clock)
    delivery, sender = stepped(make_config(tmp_path, make_bot(per_second=5, per_minute=8)), client)
    start = clock.now()
    delivery.enqueue([msg(f"m{i}") for i in range(12)])
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
    delivery.enqueue([msg("new0"), msg("new1")])
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
    delivery.enqueue([msg("first")])
    delivery.enqueue([msg("second")])
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
    delivery.enqueue([msg("m")])
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
        delivery.enqueue([msg("m")])
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
        delivery.enqueue([msg("refused")])
        delivery.enqueue([msg("next")])
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
    delivery.enqueue([msg("a")])
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
    delivery.enqueue([msg("firing", group="g1")])
    sender.until_waiting()
    assert [(r.state, r.attempts) for r in delivery.outbox.list()] == [(PENDING, 1)]
    delivery.enqueue([msg("resolved", group="g1")])     # arrives while the bot waits
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
        one.enqueue([msg("a", identity="n1:ops:1/1")])
        two.enqueue([msg("a", identity="n1:ops:1/1")])     # the HA twin, via the other worker
    sender.run()
    assert client.texts() == ["a"] and sample(metrics, "feishu_bridge_duplicates_dropped_total", bot="ops") == 1
    assert [r.bot for r in events(caplog, "duplicate")] == ["ops"]


def test_a_dry_run_bot_logs_the_message_and_sends_nothing(tmp_path, stepped, clock, caplog):
    metrics = Metrics()
    client = StubClient(clock=clock)
    delivery, sender = stepped(make_config(tmp_path, Bot(name="dry")), client, bot="dry", metrics=metrics)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        delivery.enqueue([msg("hello", bot="dry")])
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
            delivery.enqueue([msg(f"m{i}", bot="dry") for i in range(5)])
            sender.run()
    finally:
        LOG.removeHandler(stamp)
    assert printed == pytest.approx(expected_starts(5, start, 2, 100))


# -- a send whose outcome cannot be recorded (issue #18) ------------------------------------------

class FailingRecords(Outbox):
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
    outbox = FailingRecords(config.storage.path, clock=clock.now)   # MERGE-SHIM: clock=clock on the new backend
    client = StubClient(clock=clock)
    delivery, sender = stepped(config, client, outbox=outbox, metrics=metrics)
    delivery.enqueue([msg("a"), msg("b")])
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


# -- rendering at send time ----------------------------------------------------------------

class Renders:
    """A render callable that records what it rendered: each message becomes `parts` texts.
    A message whose text is in `unreadable` fails as a payload this version cannot read;
    one in `buggy` fails as a bug in rendering would (while `buggy` holds it)."""

    def __init__(self, parts: int = 1, unreadable: tuple[str, ...] = (), buggy: set[str] | None = None):
        self.parts, self.unreadable, self.buggy = parts, unreadable, buggy if buggy is not None else set()
        self.rendered: list[str] = []

    def __call__(self, bot: Bot, message) -> list[dict]:
        text = json.loads(message.payload)["text"]
        self.rendered.append(text)
        if text in self.unreadable:
            if text.startswith("json"):
                json.loads("{not json")
            raise PayloadError("cannot read this payload")
        if text in self.buggy:
            return {}["a bug"]        # KeyError
        return [{"msg_type": "text", "content": {"text": f"{text} {i}/{self.parts}"}}
                for i in range(1, self.parts + 1)]


def stored(text: str, group: str | None = None) -> OutgoingMessage:
    """A message as the accept path stores it: the payload, not yet rendered."""
    return OutgoingMessage(bot="ops", group_key=group or f"group-{text}", source="alertmanager",
                           payload=json.dumps({"text": text}).encode())


def test_a_message_is_rendered_once_when_due_and_its_parts_sent_in_order(tmp_path, stepped, clock):
    client = StubClient(SERVER_ERROR, clock=clock)      # part 1 fails once: retried with the same rendering
    renders = Renders(parts=3)
    delivery, sender = stepped(make_config(tmp_path), client, render=renders)
    delivery.enqueue([stored("a")])
    delivery.enqueue([stored("b")])
    sender.run()
    assert client.texts() == ["a 1/3", "a 1/3", "a 2/3", "a 3/3", "b 1/3", "b 2/3", "b 3/3"]
    assert renders.rendered == ["a", "b"]
    assert delivery.outbox.list() == []


def test_a_message_superseded_while_it_waits_is_never_rendered(tmp_path, stepped, clock):
    paused = SendResult(Outcome.RETRY, "rate_limited", 11232, 200, "frequency limited", retry_after=0.5)
    client = StubClient(paused, clock=clock)
    renders = Renders()
    delivery, sender = stepped(make_config(tmp_path), client, render=renders)
    delivery.enqueue([stored("first", group="g")])
    sender.until_waiting()                                # refused: the bot waits 0.5 s
    for state in ("second", "third", "fourth"):           # the group changes meanwhile
        delivery.enqueue([stored(state, group="g")])
    sender.run()
    assert client.texts() == ["first 1/1", "fourth 1/1"]
    assert renders.rendered == ["first", "fourth"]


def test_a_payload_this_version_cannot_read_is_a_dead_letter_and_the_next_goes_on(tmp_path, stepped, clock, caplog):
    metrics = Metrics()
    client = StubClient(clock=clock)
    renders = Renders(unreadable=("broken", "json-broken"))
    delivery, sender = stepped(make_config(tmp_path), client, render=renders, metrics=metrics)
    with caplog.at_level(logging.ERROR, logger=LOG.name):
        delivery.enqueue([stored("broken")])
        delivery.enqueue([stored("json-broken")])
        delivery.enqueue([stored("fine")])
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
    delivery.enqueue([stored("a")])
    delivery.enqueue([stored("b")])
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
    delivery.enqueue([stored("a")])
    delivery.enqueue([stored("b")])
    sender.run()
    (dead,) = delivery.outbox.list(dead=True)
    assert dead.reason == "render_error" and "delivery.max_age" in dead.detail and "KeyError" in dead.detail
    assert client.texts() == ["b 1/1"]


# -- metrics ----------------------------------------------------------------------------------

def test_metrics_count_outcomes_and_show_the_outbox_depth(tmp_path, stepped, clock):
    metrics = Metrics()
    client = StubClient(SERVER_ERROR, KEYWORD, clock=clock)
    delivery, sender = stepped(make_config(tmp_path, make_bot(), make_bot("idle")), client, metrics=metrics)
    delivery.enqueue([msg("a"), msg("b")])
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


def test_an_unreadable_outbox_shows_as_outbox_up_0_and_the_scrape_still_answers(tmp_path):
    (tmp_path / "file").write_text("")
    config = make_config(tmp_path)
    metrics = Metrics()
    metrics.notification("alertmanager", "not_stored")
    Delivery(config, StubClient(), LOG, outbox=outbox_on(tmp_path / "file" / "o.db"), render=rendered_only,
             metrics=metrics)
    text = metrics.scrape().decode()
    assert "feishu_bridge_outbox_up 0.0" in text
    assert "feishu_bridge_outbox_depth{" not in text
    assert 'feishu_bridge_notifications_received_total{result="not_stored",source="alertmanager"} 1.0' in text


# -- the threads ------------------------------------------------------------------------------

def test_two_workers_send_one_bots_messages_once_in_order_within_the_per_second_limit(tmp_path, deliveries):
    config = make_config(tmp_path, make_bot(per_second=5, per_minute=100))
    client = StubClient(delay=0.05)    # a round trip, so that two senders at once would overlap
    workers = [deliveries(config, client), deliveries(config, client)]
    for i in range(15):
        workers[i % 2].enqueue([msg(f"m{i}")])
    client.wait_calls(15, timeout=15)
    eventually(lambda: workers[0].outbox.list() == [], 5, "every send recorded")   # so none can follow
    assert client.texts() == [f"m{i}" for i in range(15)]
    assert client.most_in_flight == 1        # one sender at a time, so Feishu sees them in order
    times = client.times()
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[5:])), "6 sends within 1 s"


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
    assert time.monotonic() - began < 0.9                       # the grace, not the hung second
    assert [r.state for r in delivery.outbox.list()] == [SENDING]   # still stored; result unknown
    assert events(caplog, "stop_in_flight")


def test_a_reloaded_configuration_starts_new_bots_and_stops_removed_ones(tmp_path, deliveries):
    client = StubClient()
    delivery = deliveries(make_config(tmp_path, make_bot("ops")), client)
    eventually(lambda: delivery.outbox.bot_state("ops").owner == delivery.owner, 5, "the ops lease")
    delivery.configure(make_config(tmp_path, make_bot("db")))
    # The removed bot's lease is free for a worker that still has it: once it is, no sender
    # here is left to send its message.
    eventually(lambda: delivery.outbox.bot_state("ops").owner is None, 5, "the ops lease released")
    delivery.enqueue([msg("to-db", bot="db"), msg("to-ops", bot="ops")])
    client.wait_calls(1)
    eventually(lambda: [(d[0], d[1]) for d in delivery.depths()] == [("db", 0), ("ops", 1)], 5,
               lambda: f"db sent, ops waiting: {delivery.depths()}")
    assert client.calls[0][1:] == ("db", "to-db") and len(client.calls) == 1


def test_idle_latency_when_another_worker_is_the_sender(tmp_path, deliveries):
    config = make_config(tmp_path, make_bot(per_second=50))
    client = StubClient()
    sender = deliveries(config, client)
    eventually(lambda: sender.outbox.bot_state("ops").owner == sender.owner, 5, "the lease")
    acceptor = deliveries(config, client, start=False)   # a worker that only accepts
    latencies = []
    for i in range(10):
        before = time.time()
        acceptor.enqueue([msg(f"m{i}")])
        latencies.append(client.wait_calls(i + 1)[-1][0] - before)
        time.sleep(0.05)      # idle between messages
    p50, top = statistics.median(latencies), max(latencies)
    print(f"\nidle latency enqueue->request, other process sending: p50 {p50 * 1000:.1f} ms, "
          f"max {top * 1000:.1f} ms")
    assert p50 < 0.5       # generous: a slow polling loop (>= 1 s) would fail it


def test_not_stored_is_answered_503_never_200(tmp_path):
    (tmp_path / "file").write_text("")
    config = loads(f"bots: [{{name: ops}}]\nroute: {{bots: [ops]}}\nstorage: {{path: {tmp_path / 'file' / 'o.db'}}}\n",
                   env={})
    app = create_app(config, logger=LOG)
    try:
        body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
        response = app.test_client().post("/alertmanager", data=body, content_type="application/json")
        assert response.status_code == 503 and "not stored" in response.get_json()["error"]
        assert "feishu_bridge_outbox_up 0.0" in app.test_client().get("/metrics").get_data(as_text=True)
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
    eventually(lambda: workers[0].outbox.list() == [], 5, "every send recorded")   # so none can follow
    assert [m["content"]["text"] for m in fake_feishu.received("tok-delivery-1")] == [f"告警 {i}" for i in range(9)]
    assert fake_feishu.throttled("tok-delivery-1") == []
    assert len(fake_feishu.attempts("tok-delivery-1")) == 11
