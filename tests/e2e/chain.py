"""The chain under test, shared by the end-to-end tests: bots, route tree, configs, card reading.

Three bots on the fake Feishu: `oncall` signs with a secret, `db` has a keyword, `ops`
has neither. The route tree sends critical alerts to oncall and keeps looking
(`continue`), team=db to db, and everything no child takes to ops.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from procs import BridgeProcess

ONCALL_SECRET = "e2e-oncall-secret-Qm42Zr"
KEYWORD = "告警"
# Alertmanager's webhook sends it (http_config.authorization, as in the README's
# "Setting up Alertmanager"); the bridge requires it (auth.bearer_token).
AM_CREDENTIALS = "e2e-bearer-credential-7d1f0c"


@dataclass(frozen=True)
class FakeBot:
    name: str
    token: str
    secret: str | None = None
    keywords: tuple[str, ...] = ()


BOTS = (
    FakeBot("oncall", "tok-e2e-oncall-5c1d9a", secret=ONCALL_SECRET),
    FakeBot("db", "tok-e2e-db-88ab31", keywords=(KEYWORD,)),
    FakeBot("ops", "tok-e2e-ops-7e2046"),
)

ROUTE = """\
route:
  bots: [ops]
  routes:
    - matchers: ['severity="critical"']
      bots: [oncall]
      continue: true
    - matchers: ['team="db"']
      bots: [db]
"""

# alertname -> labels, as a Prometheus rule would fire them; where each goes follows ROUTE.
ALERTS = {
    "DBReplicationLag": {"team": "db", "severity": "critical"},   # oncall (continue), then db
    "DiskAlmostFull": {"team": "db", "severity": "warning"},      # db
    "HighCPU": {"team": "infra", "severity": "critical"},         # oncall only: a child took it
    "NodeDown": {"team": "infra", "severity": "warning"},         # no child: the root's ops
}
EXPECTED = {
    "oncall": {"DBReplicationLag", "HighCPU"},
    "db": {"DBReplicationLag", "DiskAlmostFull"},
    "ops": {"NodeDown"},
}


def prometheus_alerts(started: datetime, ended: datetime | None = None) -> list[dict]:
    """ALERTS as Prometheus posts them to Alertmanager's /api/v2/alerts: firing, or
    resolved once `ended` is given."""
    return [
        {
            "labels": {"alertname": name, "instance": f"{name.lower()}-1:9100", "job": "node", **labels},
            "annotations": {"summary": f"{name} on {name.lower()}-1"},
            "startsAt": started.isoformat(),
            **({"endsAt": ended.isoformat()} if ended else {}),
            "generatorURL": f"http://prometheus.test:9090/graph?g0.expr={name}",
        }
        for name, labels in ALERTS.items()
    ]


ALERTMANAGER_CONFIG = """\
route:
  receiver: feishu-bridge
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: feishu-bridge
    webhook_configs:
      - url: {bridge_url}/alertmanager
        send_resolved: true
        max_alerts: 0
        http_config:
          authorization:
            type: Bearer
            credentials: {credentials}
"""

# Header title as the default template writes it, keyword possibly in front:
# "[FIRING:2] HighCPU (…)" or "[RESOLVED] HighCPU (…)".
TITLE = re.compile(r"\[(FIRING|RESOLVED)(?::\d+)?\] (\S+)")


def write_bridge_config(fake_feishu, tmp_path: Path, storage: dict | None = None) -> Path:
    """The bridge's config, its bots registered on the fake Feishu; SQLite unless `storage` says otherwise."""
    lines = ["bots:"]
    for bot in BOTS:
        url_file = tmp_path / f"{bot.name}.url"
        url_file.write_text(fake_feishu.add_bot(bot.token, secret=bot.secret, keywords=bot.keywords) + "\n")
        lines += [f"  - name: {bot.name}", f"    webhook_url_file: {url_file.name}"]
        if bot.secret:
            lines.append("    secret: ${ONCALL_SECRET}")
        if bot.keywords:
            lines.append(f"    keywords: {json.dumps(list(bot.keywords), ensure_ascii=False)}")
    config = tmp_path / "bridge.yaml"
    config.write_text("\n".join(lines) + "\n" + ROUTE + f"storage: {json.dumps(storage or {'path': 'outbox.db'})}\n"
                      "auth:\n  bearer_token: ${INBOUND_TOKEN}\n")
    return config


# What the config above reads from the environment.
BRIDGE_ENV = {"ONCALL_SECRET": ONCALL_SECRET, "INBOUND_TOKEN": AM_CREDENTIALS}


def start_bridge(fake_feishu, tmp_path: Path) -> BridgeProcess:
    """The bridge under gunicorn (2 workers), its bots registered on the fake Feishu."""
    return BridgeProcess(write_bridge_config(fake_feishu, tmp_path), tmp_path / "bridge.log", workers=2,
                         env=BRIDGE_ENV)


def alertmanager_config(bridge_url: str) -> str:
    return ALERTMANAGER_CONFIG.format(bridge_url=bridge_url, credentials=AM_CREDENTIALS)


@dataclass(frozen=True)
class Card:
    state: str        # FIRING or RESOLVED, from the title
    alertname: str
    title: str
    colour: str       # header.template


def read_card(message: dict) -> Card:
    """What a user sees first: the header's title and colour."""
    assert message["msg_type"] == "interactive", message
    header = message["card"]["header"]
    title = header["title"]["content"]
    match = TITLE.search(title)
    assert match, f"card title {title!r} has no [FIRING:n]/[RESOLVED] alertname"
    return Card(match[1], match[2], title, header["template"])


def cards(fake_feishu, bot: FakeBot) -> list[Card]:
    return [read_card(m) for m in fake_feishu.received(bot.token)]


def secrets() -> list[str]:
    return [ONCALL_SECRET, AM_CREDENTIALS, *(bot.token for bot in BOTS)]
