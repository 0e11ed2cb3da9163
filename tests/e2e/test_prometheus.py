"""The whole chain: Prometheus 2.42 rule -> Alertmanager 0.25 -> the bridge (gunicorn) -> the fake Feishu."""

from __future__ import annotations

import json

import pytest

from procs import AlertmanagerProcess, PrometheusProcess

from .chain import BOTS, KEYWORD, alertmanager_config, cards, start_bridge

pytestmark = pytest.mark.e2e

ALERTNAME = "E2EAlwaysFiring"
# Fires on its first evaluation: no `for`, evaluated every second.
RULES = f"""\
groups:
  - name: e2e
    interval: 1s
    rules:
      - alert: {ALERTNAME}
        expr: vector(1)
        labels: {{severity: critical, team: db}}
        annotations: {{summary: "always firing, for the end-to-end test"}}
"""
PROMETHEUS_CONFIG = """\
global:
  evaluation_interval: 1s
rule_files: [rules.yml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{am_port}"]
"""
# protocols.md "Prometheus in end-to-end tests": about 7 s once resend-delay is 1s.
WAIT = 30.0


def test_prometheus_rule_reaches_feishu_through_alertmanager_and_the_bridge(
        fake_feishu, tmp_path, alertmanager_binary, prometheus_binary, running):
    bridge = running(start_bridge(fake_feishu, tmp_path))
    am = running(AlertmanagerProcess(alertmanager_config(bridge.url), tmp_path / "am",
                                     binary=alertmanager_binary))
    prometheus = running(PrometheusProcess(PROMETHEUS_CONFIG.format(am_port=am.port), {"rules.yml": RULES},
                                           tmp_path / "prometheus", binary=prometheus_binary))

    # severity=critical and team=db: oncall (signed) and db (keyword), not ops.
    oncall, db, ops = BOTS
    for bot in (oncall, db):
        message = fake_feishu.wait_for(bot.token, 1, timeout=WAIT)[0]
        card = cards(fake_feishu, bot)[0]
        assert (card.state, card.alertname, card.colour) == ("FIRING", ALERTNAME, "red"), card
        # The source link is the rule's generatorURL: Prometheus's own external URL.
        assert f"127.0.0.1:{prometheus.port}/graph" in json.dumps(message), message
    assert KEYWORD in cards(fake_feishu, db)[0].title
    assert "sign" in fake_feishu.attempts(oncall.token)[0].body
    assert fake_feishu.attempts(ops.token) == []
