"""Issue 17 item 7: a hanging Feishu must cost at most one extra copy and no rate-limit answer.

A request whose answer never came (a read timeout, a connection dropped after the request
was written) may have been taken by Feishu, and may still be in flight there. The bridge
counts it in the rate windows until it assumes Feishu is done with it
(delivery.backoff_unknown after it gave up), and a custom bot, which has no idempotency
key, sends it again no sooner. An app bot's repeats are dropped by Feishu (uuid), so its
retry stays quick.

Checked three ways: the policy with numbers; a sender stepped on a fake clock against a
model of a Feishu that hangs for a minute and then carries out every request it held;
and (slow) the service under gunicorn against the strict fake Feishu hanging for a minute.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter

import pytest
import requests
import yaml

from bridge.config import DeliveryConfig, loads
from bridge.delivery.outcomes import UNKNOWN_GROWTH, Retry, decide
from bridge.notify.feishu import FeishuClient
from bridge.notify.outcome import Outcome, SendResult, may_have_arrived
from procs import BridgeProcess
from support.clock import FakeClock
from support.delivery import StubClient, enqueue, make_bot, make_config, msg, stepped_workers
from test_delivery_service import bot, events, names, notification, post
from test_sender import head
from test_shared_windows import app_bot

TIMED_OUT = SendResult(Outcome.RETRY, "timeout", detail="ReadTimeout", unknown=True)
REFUSED = SendResult(Outcome.RETRY, "connection_error", detail="Connection refused")


# -- the policy ----------------------------------------------------------------------------------

def test_a_custom_bots_retry_after_an_unknown_outcome_waits_backoff_unknown_then_grows_capped():
    settings = DeliveryConfig(max_age=3600.0, backoff_base=1.0, backoff_cap=60.0, backoff_unknown=60.0)
    rng = random.Random(5)
    first = decide(TIMED_OUT, head(), settings, 1010.0, last_delay=0.0, rng=rng)
    assert first == Retry(1070.0, 60.0)
    delays, last = [], first.delay
    for _ in range(30):
        last = decide(TIMED_OUT, head(), settings, 1010.0, last_delay=last, rng=rng).delay
        delays.append(last)
    assert min(delays) >= 60.0 and max(delays) == 60.0 * UNKNOWN_GROWTH
    # Even after short retries (a 500 before), never sooner than backoff_unknown.
    assert decide(TIMED_OUT, head(), settings, 1010.0, last_delay=2.0, rng=rng).when >= 1070.0
    # Not pulled forward to max_age: the last attempt may come later, never sooner.
    near_end = decide(TIMED_OUT, head(), settings, 1000.0 + 3590.0, last_delay=0.0, rng=rng)
    assert near_end.when == 1000.0 + 3590.0 + 60.0
    # A connection that was never made is an ordinary retry.
    assert decide(REFUSED, head(), settings, 1010.0, last_delay=0.0, rng=rng).when <= 1013.0


def test_an_app_bots_retry_after_an_unknown_outcome_stays_quick():
    """Its posts and replies carry a uuid that Feishu de-duplicates for an hour, and an
    update or urgent sent twice changes nothing more: a quick retry costs no copy."""
    settings = DeliveryConfig(backoff_base=1.0, backoff_cap=60.0, backoff_unknown=60.0)
    retry = decide(TIMED_OUT, head(), settings, 1010.0, last_delay=0.0, rng=random.Random(1), idempotent=True)
    assert isinstance(retry, Retry) and retry.when <= 1013.0


def test_backoff_unknown_is_a_delivery_setting_with_a_minute_by_default():
    base = "bots: [{name: b, webhook_url: 'https://open.feishu.cn/open-apis/bot/v2/hook/x'}]\nroute: {bots: [b]}\n"
    assert loads(base).delivery.backoff_unknown == 60.0
    assert loads(base + "delivery: {backoff_unknown: 2m}").delivery.backoff_unknown == 120.0
    with pytest.raises(Exception, match=r"delivery\.backoff_unknown: expected a positive duration"):
        loads(base + "delivery: {backoff_unknown: soon}")


# -- which failures leave the outcome unknown ----------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("step, unknown", [
    (("hang", 2.0), True),            # read timeout: the request was written
    (("reset",), True),               # reset after the request was read
    (("close",), True),               # closed unanswered
    (None, False),                    # refused: nothing was sent
])
def test_the_client_says_when_a_request_may_have_reached_feishu(fake_feishu, step, unknown):
    url = fake_feishu.add_bot("tok-unknown")
    if step is None:
        url = f"http://127.0.0.1:{closed_port()}/open-apis/bot/v2/hook/tok-unknown"
    else:
        fake_feishu.script("tok-unknown", step)
    sent = FeishuClient().send(make_bot(url=url, read_timeout=0.5), {"msg_type": "text", "content": {"text": "x"}})
    assert sent.outcome is Outcome.RETRY and sent.unknown is unknown, sent


def test_a_connect_timeout_is_known_not_to_have_arrived():
    exc = requests.ConnectTimeout("connect timed out")
    assert not may_have_arrived(exc) and may_have_arrived(requests.ReadTimeout("read timed out"))


# -- a minute's hang, stepped on a fake clock ----------------------------------------------------

class HangingFeishu:
    """A model of Feishu for one custom bot: during [start, end) it takes requests and
    holds them, and carries each out at `end` (counted in its windows then, delivered);
    the bridge gives up on each after `read_timeout`. Otherwise a request is carried out
    at once, or refused when over Feishu's 5/s and 100/min."""

    def __init__(self, clock: FakeClock, start: float, end: float, read_timeout: float):
        self.clock, self.start, self.end, self.read_timeout = clock, start, end, read_timeout
        self.carried: list[tuple[float, str]] = []     # (when Feishu carried it out, text)
        self.refused = 0

    def send(self, bot, message: dict) -> SendResult:
        now, text = self.clock.now(), message["content"]["text"]
        if self.start <= now < self.end:
            self.carried.append((self.end, text))
            self.clock.advance(self.read_timeout)
            return TIMED_OUT
        times = [t for t, _ in self.carried if t <= now]
        if sum(t > now - 1 for t in times) >= 5 or sum(t > now - 60 for t in times) >= 100:
            self.refused += 1
            return SendResult(Outcome.RETRY, "rate_limited", 9499, 400, "too many request")
        self.carried.append((now, text))
        return SendResult(Outcome.SENT, "ok", 0, 200)


def test_a_minute_of_hanging_feishu_costs_one_extra_copy_and_no_rate_limit_answer(tmp_path):
    clock = FakeClock()
    start = clock.now()
    feishu = HangingFeishu(clock, start, start + 60.0, read_timeout=10.0)
    config = make_config(tmp_path, make_bot(per_second=5, per_minute=100), backoff_base=1.0, backoff_cap=60.0,
                         backoff_unknown=60.0)
    with stepped_workers(clock) as stepped:
        delivery, sender = stepped(config, feishu)
        texts = [f"m{i}" for i in range(30)]
        enqueue(delivery, [msg(t) for t in texts])
        sender.run()

    copies = Counter(text for _, text in feishu.carried)
    assert copies["m0"] == 2, "the hung request and one retry after the hang"
    assert all(copies[t] == 1 for t in texts[1:]), copies
    assert feishu.refused == 0
    assert list(dict.fromkeys(text for _, text in sorted(feishu.carried, key=lambda c: c[0]))) == texts
    # Feishu never carried out more than 5 in a second, counting the one it held.
    times = sorted(t for t, _ in feishu.carried)
    assert all(sum(0 <= u - t < 1 for u in times) <= 5 for t in times)


def test_an_app_bot_retries_quickly_after_no_answer_but_the_request_keeps_its_place_in_the_windows(tmp_path):
    clock = FakeClock()
    client = StubClient(TIMED_OUT, clock=clock)
    config = make_config(tmp_path, app_bot("sre", "oc_1"), backoff_base=1.0, backoff_cap=2.0, backoff_unknown=60.0)
    with stepped_workers(clock) as stepped:
        delivery, sender = stepped(config, client, bot="sre")
        start = clock.now()
        enqueue(delivery, [msg("card", bot="sre")])
        sender.run()
        ends = delivery.outbox.recent_ends("sre", 5)
    assert client.texts() == ["card", "card"]
    assert client.times()[1] - start <= 2.0, "the uuid makes a quick retry safe"
    assert ends[0] == pytest.approx(start + 60.0), "the unanswered request counts for backoff_unknown"


# -- the service under gunicorn, against the strict fake hanging for a minute ------------------

@pytest.mark.slow
def test_under_gunicorn_a_minute_of_hanging_feishu_costs_at_most_one_copy_and_no_rate_limit_answer(
        fake_feishu, tmp_path):
    token = "tok-hang-7e1d"
    url = fake_feishu.add_bot(token)     # Feishu's own limits: 5/s, 100/min
    doc = {"bots": [bot("ops", url, read_timeout="2s")], "route": {"bots": ["ops"]},
           "storage": {"path": "outbox.db"}, "log": {"level": "debug"}}    # delivery: the defaults
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=2)
    try:
        fake_feishu.hang(token, 60.0)
        began = time.monotonic()
        posted = [f"Hang-{i:03d}" for i in range(12)]
        for name in posted:
            post(bridge, notification(name))
        received = fake_feishu.wait_for(token, len(posted) + 1, timeout=120)
        drained = time.monotonic() - began
        got = Counter(names(received))
        retries = [e for e in events(bridge, "retry") if e["reason"] == "timeout"]
        print(f"\na minute's hang under gunicorn: {len(fake_feishu.attempts(token))} requests, "
              f"{len(received)} delivered for {len(posted)} messages (the first {got[posted[0]]} times), "
              f"{len(fake_feishu.throttled(token))} rate-limit answers, {len(retries)} timeouts, "
              f"drained in {drained:.1f}s")
        assert got[posted[0]] == 2 and len(retries) == 1, (got, retries)
        assert all(got[name] == 1 for name in posted[1:]), got
        assert not fake_feishu.throttled(token)
        assert list(dict.fromkeys(names(received))) == posted
    finally:
        bridge.stop()
