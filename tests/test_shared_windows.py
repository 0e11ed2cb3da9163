"""Issue 13: an app's and a chat's limits, kept over every bot, process and replica.

Several app bots, each stepped by its own worker (a process of its own, sharing one
outbox) on one fake clock, in the order their waits come due: the requests that reach
Feishu never exceed 5 in any second per chat, nor 50 a second or 1000 a minute per app,
and nothing waits longer than those windows make it.
"""

from __future__ import annotations

import heapq

import pytest

from bridge.config import App
from bridge.delivery.pacing import Windows, shared_windows
from bridge.secret import Secret
from support.clock import FakeClock
from support.delivery import StubClient, enqueue, make_bot, make_config, msg, stepped_workers

APP = App("oncall", "cli_a1", Secret("s"), base_url_override="http://open.test")


def app_bot(name: str, chat: str, **kw):
    bot = make_bot(name, **kw)
    return bot.__class__(**{**bot.__dict__, "webhook_url": None, "app": APP, "chat_id": chat})


def run_all(senders, clock: FakeClock, limit: int = 100_000) -> None:
    """Step every sender when its wait is due, earliest first, until all are idle."""
    due = [(clock.now(), i) for i in range(len(senders))]
    idle: set[int] = set()
    for _ in range(limit):
        if not due:
            return
        when, i = heapq.heappop(due)
        if when > clock.now():
            senders[0].advance(when - clock.now())
            for s in senders[1:]:
                if s.holding:
                    s.delivery.outbox.renew(s.delivery.owner)
        step = senders[i].step()
        if step.on_news:
            idle.add(i)
            continue
        heapq.heappush(due, (clock.now() + step.wait, i))
    raise AssertionError("the senders never ran out of work")


def most_in(times: list[float], span: float) -> int:
    times = sorted(times)
    return max((sum(1 for u in times if t <= u < t + span) for t in times), default=0)


def test_bots_of_one_chat_in_several_processes_keep_the_chats_5_a_second_together(tmp_path):
    clock = FakeClock()
    bots = [app_bot(f"b{i}", "oc_shared") for i in range(3)]
    config = make_config(tmp_path, *bots)
    client = StubClient(clock=clock)
    with stepped_workers(clock) as stepped:
        senders = []
        for bot in bots:
            delivery, sender = stepped(config, client, bot=bot.name)
            enqueue(delivery, [msg(f"{bot.name}-{i}", bot=bot.name) for i in range(10)])
            senders.append(sender)
        start = clock.now()
        run_all(senders, clock)
    times = client.times()
    assert len(times) == 30
    assert most_in(times, 1.0) <= 5, "over the chat's 5 a second"
    # Each bot alone could send its 10 in 1 s; together they share 5 a second: 30 take 5 s.
    assert max(times) - start == pytest.approx(5.05, abs=0.05)


def test_an_apps_busy_bot_uses_what_its_quiet_bots_leave_and_the_app_keeps_its_limits(tmp_path, monkeypatch):
    """Before, the app's 50/s was shared out in the config: with 20 bots each got 2/s."""
    clock = FakeClock()
    # A short "minute" (each Delivery reads it when built), so that the app's 1000 show in seconds.
    monkeypatch.setattr("bridge.delivery.pacing.FEISHU_WINDOWS", Windows(minute=6.0))
    bots = [app_bot(f"b{i}", f"oc_{i}") for i in range(20)]
    config = make_config(tmp_path, *bots)
    client = StubClient(clock=clock)
    with stepped_workers(clock) as stepped:
        senders = []
        for i, bot in enumerate(bots):
            delivery, sender = stepped(config, client, bot=bot.name)
            enqueue(delivery, [msg(f"{bot.name}-{k}", bot=bot.name) for k in range(60 if i < 12 else 5)])
            senders.append(sender)
        run_all(senders, clock)
    by_bot = {}
    for at, name, _ in client.calls:
        by_bot.setdefault(name, []).append(at)
    assert sum(len(t) for t in by_bot.values()) == 12 * 60 + 8 * 5
    assert most_in(by_bot["b0"], 1.0) == 5, "a busy bot sends at its chat's 5 a second, not 2"
    everything = client.times()
    assert most_in(everything, 1.0) <= 50 and most_in(everything, 6.0) <= 1000


def test_only_app_bots_share_windows_keyed_by_app_and_chat():
    assert shared_windows(make_bot("custom")) == ()
    keys = [(w.key, w.limit) for w in shared_windows(app_bot("a", "oc_1"))]
    assert keys == [("app:http://open.test|cli_a1", 50), ("app:http://open.test|cli_a1", 1000),
                    ("chat:http://open.test|oc_1", 5)]
