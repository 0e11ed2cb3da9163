"""What the delivery tests share: a recording stub client, bots, configs and messages, and
a bot's Sender stepped by hand on a fake clock."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from bridge.config import Bot, Config, DeliveryConfig, RateLimit, StorageConfig
from bridge.delivery import Delivery, Next
from bridge.errors import PayloadError
from bridge.notify.outcome import Outcome, SendResult
from bridge.metrics import Metrics
from bridge.store import LEASE_TTL
from bridge.store.sqlite import SqliteOutbox
from bridge.accept import store_messages
from bridge.store.records import OutgoingMessage
from bridge.routing import Route
from bridge.secret import WebhookURL
from bridge.store.records import Head

from .clock import FakeClock

LOG = logging.getLogger("bridge.test-delivery")
OK = SendResult(Outcome.SENT, "ok", 0, 200)
SERVER_ERROR = SendResult(Outcome.RETRY, "server_error", None, 500, "500 Internal Server Error")
KEYWORD = SendResult(Outcome.PERMANENT, "keyword_missing", 19024, 200, "Key Words Not Found")


class StubClient:
    """Records when each request started (on `clock`) and answers from a script (then success)."""

    def __init__(self, *script: SendResult, delay: float = 0.0, clock: FakeClock | None = None):
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
    settings = {"backoff_base": 0.05, "backoff_cap": 0.1, "backoff_unknown": 0.1, **delivery}
    return Config(bots={b.name: b for b in bots}, route=Route(bots=(bots[0].name,)),
                  storage=StorageConfig(path=tmp_path / "outbox.db"), delivery=DeliveryConfig(**settings))


def msg(text: str, bot: str = "ops", group: str | None = None, identity: str = "") -> OutgoingMessage:
    """A message stored rendered: one text part."""
    return OutgoingMessage(bot=bot, group_key=group or f"group-{text}", source="alertmanager",
                           bodies=({"msg_type": "text", "content": {"text": text}},), identity=identity)


def stored(text: str, group: str | None = None) -> OutgoingMessage:
    """A message as the accept path stores it: the payload, not yet rendered."""
    return OutgoingMessage(bot="ops", group_key=group or f"group-{text}", source="alertmanager",
                           payload=json.dumps({"text": text}).encode())


def rendered_only(bot: Bot, head: Head) -> list[dict]:
    raise AssertionError("this test stores rendered messages: nothing should need rendering")


class Renders:
    """A render callable that records what it rendered: each message becomes `parts` texts.
    A message whose text is in `unreadable` fails as a payload this version cannot read
    (one starting with "json" as a JSON error); one in `buggy` fails as a bug in rendering
    would, for as long as it is there."""

    def __init__(self, parts: int = 1, unreadable: tuple[str, ...] = (), buggy: set[str] | None = None):
        self.parts, self.unreadable, self.buggy = parts, unreadable, buggy if buggy is not None else set()
        self.rendered: list[str] = []

    def __call__(self, bot: Bot, message: Head) -> list[dict]:
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


def outbox_on(path: Path, clock: FakeClock | None = None) -> SqliteOutbox:
    return SqliteOutbox(path) if clock is None else SqliteOutbox(path, clock=clock)


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def events(caplog, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", "") == event]


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


@contextmanager
def stepped_workers(clock: FakeClock) -> Iterator[Callable[..., tuple[Delivery, Stepped]]]:
    """make(config, client, bot="ops", **Delivery keywords) -> a worker that is not started,
    on `clock`, and its sender for `bot`."""
    outboxes: list[SqliteOutbox] = []

    def make(config: Config, client, bot: str = "ops", **kw) -> tuple[Delivery, Stepped]:
        outbox = kw.setdefault("outbox", outbox_on(config.storage.path, clock))
        outboxes.append(outbox)
        kw.setdefault("render", rendered_only)
        delivery = Delivery(config, client, LOG, clock=clock, **kw)
        return delivery, Stepped(delivery, clock, bot)

    try:
        yield make
    finally:
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


def enqueue(delivery: Delivery, messages: list[OutgoingMessage]) -> set[str]:
    """What the accept service does after routing: store the messages, then wake the
    senders. Returns the bots whose message was a duplicate."""
    stored = store_messages(delivery.outbox, messages, delivery.config.delivery, delivery.log, delivery.metrics)
    if stored.ids:
        delivery.wake()
    return {m.bot for m in stored.duplicates}
