"""A tap that lands while a card update is on its way (issue 14). The sender decorates the
card with what the store knows, sends it, and the tap's own answer has put its line on the
card Feishu holds meanwhile: the update, decorated before the tap, replaces that card
without the line. Once silenced, Alertmanager sends nothing that would bring it back, so
the sender reads once more after its request and sends the card again if a tap came in
between. Stepped by hand on a FakeClock, with the strict fake Open API."""

from __future__ import annotations

import json
import logging

import pytest

from bridge.store.records import group_ref
from support.appbot import APP_ID, SteppedBridge, alert, config_yaml, payload, stepped_fake
from support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("no_proxy_env")
GROUP = '{}:{cluster="prod"}'


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def fake(clock):
    with stepped_fake(clock) as fake:
        fake.set_callback_keys(APP_ID, "ek-race", "vt-race")
        yield fake


@pytest.fixture
def bridge(fake, clock, tmp_path):
    text = config_yaml(fake.base_url, storage=tmp_path / "outbox.db", extra="""
        actions:
          enabled: true
          alertmanagers: [{external_url: "http://alertmanager.test:9093", url: "http://127.0.0.1:9"}]
    """).replace(f"    base_url: {fake.base_url}\n", f"    base_url: {fake.base_url}\n"
                 "    encrypt_key: ek-race\n    verification_token: vt-race\n")
    bridge = SteppedBridge(text, clock, logging.getLogger("bridge.test-card-actions-race"))
    yield bridge
    bridge.close()


def shown(fake, message_id: str) -> str:
    return json.dumps(fake.message(message_id).content, ensure_ascii=False)


def test_a_tap_during_a_card_update_stays_on_the_card(bridge, fake, monkeypatch):
    bridge.post(payload(alert("DiskFull")))
    (card,) = bridge.card_ids()
    assert "is on it" not in shown(fake, card)

    channel = bridge.services.channel   # the one the senders send through
    real_update, tapped = channel.update, []

    def update_while_alice_taps(bot, message_id, body):
        # Alice taps Acknowledge while this request is on its way: the tap is written to
        # the store (and its answer's card reaches Feishu) before the update lands.
        if not tapped:
            tapped.append(True)
            bridge.store.acknowledge(group_ref("sre", GROUP), "Alice")
        return real_update(bot, message_id, body)

    monkeypatch.setattr(channel, "update", update_while_alice_taps)
    bridge.post(payload(alert("DiskFull"), alert("HighLoad")))
    assert tapped, "the group's second notification updated the card"
    assert bridge.card_ids() == [card]
    assert "👀 Alice is on it" in shown(fake, card), "the update sent before the tap must not hide it"
    assert "HighLoad" in shown(fake, card)
