"""The real Alertmanager 0.25 notifying the bridge (gunicorn, 2 workers), which routes to the fake Feishu."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from procs import AlertmanagerProcess

from .chain import (ALERTS, BOTS, EXPECTED, KEYWORD, alertmanager_config, cards, prometheus_alerts, secrets,
                    start_bridge)

pytestmark = pytest.mark.e2e

FIRING_COLOUR = {"critical": "red", "warning": "orange"}
WAIT = 20.0


def test_alertmanager_firing_then_resolved_reach_the_routed_bots_signed_and_keyworded(
        fake_feishu, tmp_path, alertmanager_binary, running):
    bridge = running(start_bridge(fake_feishu, tmp_path))
    am = running(AlertmanagerProcess(alertmanager_config(bridge.url), tmp_path / "am",
                                     binary=alertmanager_binary))
    started = datetime.now(timezone.utc) - timedelta(minutes=10)

    am.post_alerts(prometheus_alerts(started))
    for bot in BOTS:
        fake_feishu.wait_for(bot.token, len(EXPECTED[bot.name]), timeout=WAIT)
    for bot in BOTS:
        got = cards(fake_feishu, bot)
        assert sorted(c.alertname for c in got) == sorted(EXPECTED[bot.name]), (bot.name, got)
        for card in got:
            assert card.state == "FIRING"
            assert card.colour == FIRING_COLOUR[ALERTS[card.alertname]["severity"]], card

    am.post_alerts(prometheus_alerts(started, ended=datetime.now(timezone.utc) - timedelta(seconds=1)))
    for bot in BOTS:
        fake_feishu.wait_for(bot.token, 2 * len(EXPECTED[bot.name]), timeout=WAIT)
    for bot in BOTS:
        got = cards(fake_feishu, bot)
        resolved = [c for c in got if c.state == "RESOLVED"]
        assert sorted(c.alertname for c in resolved) == sorted(EXPECTED[bot.name]), (bot.name, got)
        assert len(got) == 2 * len(EXPECTED[bot.name]), (bot.name, got)
        assert all(c.colour == "green" for c in resolved), resolved

    # The fake refuses a bad signature (19021) or a missing keyword (19024): all were accepted.
    for bot in BOTS:
        attempts = fake_feishu.attempts(bot.token)
        assert [a.code for a in attempts] == [0] * len(attempts), (bot.name, [a.why for a in attempts])
        assert all(("sign" in a.body) == bool(bot.secret) for a in attempts), bot.name
    assert all(KEYWORD in c.title for c in cards(fake_feishu, BOTS[1]))

    bridge.stop()
    log = bridge.log()
    assert not [s for s in secrets() if s in log], "a token or secret is in the bridge's log"
