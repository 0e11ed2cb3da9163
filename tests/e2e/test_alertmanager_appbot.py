"""The real Alertmanager notifying the bridge (gunicorn, 2 workers) whose app bot keeps one
living card per alert group on the fake Open API: an alert fires -> one card, urgent for
the critical one; a second alert joins the group -> the same card updated, a thread
reply; the bridge is killed (SIGKILL) and started again on its port; all resolve -> the
same card green, a thread reply. Alertmanager's own retries carry it over the restart."""

from __future__ import annotations

import os
import signal
from datetime import datetime, timedelta, timezone

import pytest

from fake_open_api import FakeOpenAPI
from procs import AlertmanagerProcess, BridgeProcess
from support.appbot import ALICE, APP_SECRET, BOB, CHAT, buzzes, config_yaml, setup_fake, thread_texts, titles

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_proxy_env")]
WAIT = 30.0

ALERTMANAGER_CONFIG = """\
route:
  receiver: feishu-bridge
  group_by: [cluster]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: feishu-bridge
    webhook_configs:
      - url: {bridge_url}/alertmanager
        send_resolved: true
"""


def alerts(started: datetime, names: dict[str, str], ended: datetime | None = None) -> list[dict]:
    return [{"labels": {"alertname": name, "cluster": "prod", "severity": severity},
             "annotations": {"summary": f"{name} on prod"}, "startsAt": started.isoformat(),
             **({"endsAt": ended.isoformat()} if ended else {})}
            for name, severity in names.items()]


def test_one_living_card_per_group_from_the_real_alertmanager(tmp_path, alertmanager_binary, running):
    with FakeOpenAPI() as fake:
        setup_fake(fake)
        config = tmp_path / "config.yaml"
        config.write_text(config_yaml(fake.base_url))
        bridge = BridgeProcess(config, tmp_path / "bridge-1.log", workers=2)
        am = running(AlertmanagerProcess(ALERTMANAGER_CONFIG.format(bridge_url=bridge.url), tmp_path / "am",
                                         binary=alertmanager_binary))
        started = datetime.now(timezone.utc) - timedelta(minutes=10)
        both = {"DiskFull": "critical", "HighLoad": "warning"}

        am.post_alerts(alerts(started, {"DiskFull": "critical"}))
        fake.wait_for(lambda: titles(fake) == [("[FIRING:1]", "red")] and buzzes(fake), timeout=WAIT,
                      what="one card, buzzed")
        (card,) = fake.chat(CHAT)
        am.post_alerts(alerts(started, both))
        fake.wait_for(lambda: titles(fake) == [("[FIRING:2]", "red")] and thread_texts(fake, card.message_id),
                      timeout=WAIT, what="the same card updated, a reply")

        os.killpg(bridge.proc.pid, signal.SIGKILL)
        bridge.stop()
        log = bridge.log()
        bridge = running(BridgeProcess(config, tmp_path / "bridge-2.log", workers=2, port=bridge.port))
        am.post_alerts(alerts(started, both, ended=datetime.now(timezone.utc) - timedelta(seconds=1)))
        fake.wait_for(lambda: titles(fake) == [("[RESOLVED]", "green")] and len(fake.thread(card.message_id)) == 2,
                      timeout=WAIT, what="the same card green, a second reply")

        assert [m.message_id for m in fake.chat(CHAT)] == [card.message_id]
        first, second = thread_texts(fake, card.message_id)
        assert first == "🔴 1 more firing: HighLoad" and second.startswith("✅ Resolved after 10m")
        assert buzzes(fake) == [("app", (BOB, ALICE))]
        assert not fake.throttled()
        bridge.stop()
        assert APP_SECRET not in log + bridge.log()
