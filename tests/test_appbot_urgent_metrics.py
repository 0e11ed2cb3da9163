"""What issue 13 asks of app bots' metrics and urgent, seen from outside: every card request,
thread reply, urgent and token fetch counted by bot (the token by app); urgent for the people
an alert's label names; an urgent Feishu refuses for a person's unread limit logged with
advice without holding the card back. The bridge's services with a sender stepped by hand,
on the strict fake Open API."""

from __future__ import annotations

import logging

import pytest

from bridge.metrics import Metrics
from fake_open_api import answers as a
from support.appbot import ALICE, BOB, CHAT, SteppedBridge, alert, buzzes, config_yaml, payload, stepped_fake, titles
from support.clock import FakeClock
from support.delivery import events, sample

pytestmark = pytest.mark.usefixtures("no_proxy_env")


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
                           logging.getLogger("bridge.test-appbot-metrics"), metrics=Metrics())
    yield bridge
    bridge.close()


def test_cards_updates_replies_urgent_and_tokens_are_counted_by_bot(bridge, fake):
    bridge.post(payload(alert("DiskFull")))
    bridge.post(payload(alert("DiskFull"), alert("HighLoad", severity="warning")))
    bridge.post(payload(alert("DiskFull", "resolved"), alert("HighLoad", "resolved", severity="warning")))
    assert titles(fake) == [("[RESOLVED]", "green")]
    metrics = bridge.services.metrics

    def count(name: str, **labels: str) -> float:
        return sample(metrics, name, **labels)

    assert count("feishu_bridge_app_cards_total", bot="sre", action="posted", outcome="sent") == 1
    assert count("feishu_bridge_app_cards_total", bot="sre", action="updated", outcome="sent") == 2
    assert count("feishu_bridge_thread_replies_total", bot="sre", reason="ok") == 2
    assert count("feishu_bridge_urgent_total", bot="sre", kind="app", reason="ok") == 1
    assert count("feishu_bridge_app_token_refreshes_total", app="oncall", result="ok") == 1
    assert count("feishu_bridge_messages_total", bot="sre", outcome="sent") == 6, \
        "every request: post, urgent, update, reply, update, reply"


def test_an_urgent_over_a_persons_unread_limit_is_logged_with_advice_and_the_card_goes_out(bridge, fake, caplog):
    fake.set_unread_urgent(ALICE, 200)
    bridge.post(payload(alert("DiskFull")))
    assert titles(fake) == [("[FIRING:1]", "red")] and buzzes(fake) == []
    assert [t.code for t in fake.attempts("urgent")] == [a.URGENT_UNREAD], "refused once, not retried"
    (line,) = events(caplog, "urgent_failed")
    assert line.reason == "urgent_unread_limit" and "unread" in line.getMessage()
    assert bridge.store.list() == [] and bridge.store.list(dead=True) == []
    assert sample(bridge.services.metrics, "feishu_bridge_urgent_total", bot="sre", kind="app",
                  reason="urgent_unread_limit") == 1
    bridge.post(payload(alert("DiskFull"), alert("HighLoad")))
    assert len(fake.attempts("urgent")) == 1, "not tried again in the same firing"
    assert fake.chat(CHAT)[0].updates == 1


def test_urgent_buzzes_the_person_a_critical_alerts_label_names(fake, clock, tmp_path):
    config = config_yaml(fake.base_url, storage=tmp_path / "outbox.db").replace(
        f"users: [alice, {BOB}]", "mention_labels: [oncall]")
    bridge = SteppedBridge(config, clock, logging.getLogger("bridge.test-appbot-metrics"))
    try:
        bridge.post(payload(alert("DiskFull", oncall="alice"), alert("HighLoad", severity="warning", oncall=BOB)))
    finally:
        bridge.close()
    assert buzzes(fake) == [("app", (ALICE,))], "alice by her email, looked up; not bob: his alert is not critical"
