"""What the app-bot tests share: Alertmanager payloads for one group as it changes, a config
with an app bot on the fake Open API, and reading the chat the fake keeps."""

from __future__ import annotations

import json
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

APP_ID, APP_SECRET, CHAT = "cli_appbot1", "appbot-S3cret-4Kq", "oc_appbot1"
ALICE, BOB = "ou_alice1", "ou_bob2"
STARTS = "2026-03-02T08:30:00Z"
ENDS = "2026-03-02T08:53:00Z"


def alert(name: str, status: str = "firing", severity: str = "critical", starts: str = STARTS, **labels: str) -> dict:
    """One alert of the group `cluster=prod`, firing since `starts` (resolved at ENDS)."""
    return {"status": status, "labels": {"alertname": name, "cluster": "prod", "severity": severity, **labels},
            "annotations": {"summary": f"{name} on prod"}, "startsAt": starts,
            "endsAt": ENDS if status == "resolved" else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.test:9090/graph", "fingerprint": f"fp{name.lower()}"}


def payload(*alerts: dict, group: str = "prod") -> bytes:
    """An Alertmanager webhook (version 4) for the group `cluster=<group>`."""
    alerts = [{**a, "labels": {**a["labels"], "cluster": group}} for a in alerts]
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return json.dumps({
        "receiver": "feishu", "status": status, "alerts": alerts, "groupLabels": {"cluster": group},
        "commonLabels": {"cluster": group}, "commonAnnotations": {}, "externalURL": "http://alertmanager.test:9093",
        "version": "4", "groupKey": f'{{}}:{{cluster="{group}"}}', "truncatedAlerts": 0}).encode()


def config_yaml(base_url: str, *, storage: Path | str = "outbox.db", extra: str = "", kind: str = "app") -> str:
    """One app bot `sre` on the fake, urgent for critical alerts to alice (by email) and bob."""
    return textwrap.dedent(f"""
        apps:
          - name: oncall
            app_id: {APP_ID}
            app_secret: {APP_SECRET}
            base_url: {base_url}
        bots:
          - name: sre
            app: oncall
            chat_id: {CHAT}
            thread_replies: [firing, partly_resolved, resolved]
            urgent: {{kind: {kind}, users: [alice, {BOB}], matchers: ['severity="critical"']}}
            read_timeout: 2s
        route: {{bots: [sre]}}
        users:
          alice: {{email: alice@example.com}}
        storage: {{path: {storage}}}
        delivery: {{backoff_base: 200ms, backoff_cap: 1s}}
    """) + textwrap.dedent(extra)


def setup_fake(fake) -> None:
    fake.add_app(APP_ID, APP_SECRET)
    fake.add_chat(CHAT, apps=[APP_ID], members=[ALICE, BOB])
    fake.add_user(ALICE, "alice@example.com")


@contextmanager
def stepped_fake(clock) -> Iterator:
    """The strict fake Open API on `clock` (a FakeClock the bridge's senders share, so its
    14-day rule moves with them), set up as setup_fake does. Its per-chat window runs on the
    real monotonic clock, which a sender stepped by hand does not move: it is widened here
    (pacing is tested elsewhere)."""
    from fake_open_api import FakeOpenAPI

    with FakeOpenAPI(clock=clock.now, chat_per_second=1000) as fake:
        setup_fake(fake)
        yield fake


def titles(fake, chat: str = CHAT) -> list[tuple[str, str]]:
    """(status, colour) of each card in the chat as it shows now: ("[FIRING:2]", "red")."""
    return [(c["header"]["title"]["content"].partition("]")[0] + "]", c["header"].get("template", ""))
            for c in fake.cards(chat)]


def thread_texts(fake, message_id: str) -> list[str]:
    return [m.content.get("text", "") for m in fake.thread(message_id)]


def buzzes(fake, chat: str = CHAT) -> list[tuple[str, tuple[str, ...]]]:
    """Every urgent of every card of the chat, in order."""
    return [u for m in fake.chat(chat) for u in m.urgent]


class SteppedBridge:
    """The bridge's services on `clock` with the bot `sre`'s sender stepped by hand: `post(body)`
    accepts an Alertmanager webhook and steps the sender until it is idle."""

    def __init__(self, config_text: str, clock, logger, metrics=None):
        from bridge.bootstrap import build_services
        from bridge.config import loads

        from .delivery import Stepped

        self.services = build_services(loads(config_text, env={}), clock=clock, logger=logger, metrics=metrics)
        self.store = self.services.store
        self.sender = Stepped(self.services.delivery, clock, "sre")

    def post(self, body: bytes) -> None:
        from bridge import sources

        self.services.runtime.accept(sources.parse("alertmanager", json.loads(body)), body)
        self.sender.run()

    def card_ids(self, group: str = "prod") -> list[str]:
        card = self.store.card("sre", f'{{}}:{{cluster="{group}"}}')
        return [p.message_id for p in card.parts] if card is not None else []

    def close(self) -> None:
        self.store.close()
