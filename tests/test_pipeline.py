"""The pipeline between a parsed notification and Feishu cards: which alerts each bot's
message holds (routing, send_resolved), that accepting stores without rendering, and that
rendering at send time gives each alert the mentions its bot and routes ask for."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

from bridge.config import loads
from bridge.model import Mention
from bridge.outbox import Head
from bridge.pipeline import Pipeline
from bridge.sources import parse

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"
LOG = logging.getLogger("bridge.test-pipeline")
# Two alerts of one group: HighCPU on node-1 resolved, on node-2 still firing (Alertmanager 0.25).
MIXED = (FIXTURES / "am025-mixed-resolved-firing.json").read_bytes()


class Recorder:
    """Stands in for delivery (what accept stores) and for the renderer (what it is given)."""

    def __init__(self):
        self.stored, self.rendered = [], []

    def enqueue(self, messages):
        self.stored.extend(messages)
        return set()

    def render(self, notification, bot):
        self.rendered.append((bot.name, notification))
        return [{"msg_type": "text", "content": {"text": "card"}}]


def pipeline(config_text: str) -> tuple[Pipeline, Recorder]:
    config = loads(textwrap.dedent(config_text), env={})
    recorder = Recorder()
    return Pipeline(config, recorder, recorder, LOG), recorder


def accept(p: Pipeline, raw: bytes = MIXED, only_bot: str | None = None):
    return p.accept(parse("alertmanager", json.loads(raw)), raw, only_bot=only_bot)


def statuses(raw: bytes, message) -> list[str]:
    alerts = json.loads(raw)["alerts"]
    return [alerts[i]["status"] for i in (message.alerts if message.alerts is not None else range(len(alerts)))]


def head(message) -> Head:
    return Head(id=1, group_key=message.group_key, source=message.source, payload=message.payload,
                alerts=message.alerts, routed=message.routed, bodies=None, sent=0, attempts=0, created=0.0)


def test_accepting_stores_the_body_as_received_and_renders_nothing():
    p, recorder = pipeline("bots: [{name: ops}, {name: db}]\nroute: {bots: [ops, db]}\n")
    accepted = accept(p)
    assert accepted.as_json() == {"status": "accepted", "alerts": 2, "messages": {"ops": 1, "db": 1},
                                  "routed": {"ops": 2, "db": 2}}
    assert [m.bot for m in recorder.stored] == ["ops", "db"] and recorder.rendered == []
    assert all(m.payload == MIXED and m.alerts is None for m in recorder.stored)


def test_send_resolved_false_on_a_bot_drops_its_resolved_alerts_only():
    p, recorder = pipeline("""
        bots: [{name: ops}, {name: quiet, send_resolved: false}]
        route: {bots: [ops, quiet]}
        """)
    accept(p)
    ops, quiet = recorder.stored
    assert statuses(MIXED, ops) == ["resolved", "firing"]
    assert statuses(MIXED, quiet) == ["firing"]


def test_send_resolved_false_on_a_route_and_a_group_that_is_all_resolved_sends_nothing():
    p, recorder = pipeline("""
        bots: [{name: ops}, {name: db}]
        route:
          bots: [ops]
          routes:
            - {matchers: ['alertname="HighCPU"'], bots: [db], send_resolved: false, continue: true}
            - {matchers: ['alertname="HighCPU"'], bots: [ops]}
        """)
    resolved = json.loads(MIXED)
    for alert in resolved["alerts"]:
        alert.update(status="resolved", endsAt="2026-01-01T00:00:00Z")
    resolved["status"] = "resolved"
    raw = json.dumps(resolved).encode()
    accepted = accept(p, raw)
    assert [m.bot for m in recorder.stored] == ["ops"] and accepted.routed == {"ops": 2}
    assert accept(p, raw, only_bot="db").routed == {"db": 2}   # a direct post skips the route's setting


def test_rendering_gives_each_alert_the_mentions_of_its_bot_and_routes():
    p, recorder = pipeline("""
        users: {alice: ou_alice1, bob: ou_bob2}
        bots: [{name: ops, mentions: {users: [alice]}}]
        route:
          bots: [ops]
          routes:
            - {matchers: ['instance=~"node-2.*"'], mentions: {users: [bob]}}
        """)
    accept(p)
    (message,) = recorder.stored
    p.render_stored(p.config.bots["ops"], head(message))
    (bot, notification), = recorder.rendered
    by_instance = {a.labels["instance"].split(":")[0]: a.mentions for a in notification.alerts}
    # node-1 is resolved: mention_on defaults to firing, so it pings nobody.
    assert by_instance == {"node-1": (), "node-2": (Mention("ou_alice1", "alice"), Mention("ou_bob2", "bob"))}


def test_a_message_posted_to_a_bot_directly_gets_only_the_bots_mentions():
    p, recorder = pipeline("""
        users: {bob: ou_bob2}
        bots: [{name: ops}]
        route: {bots: [ops], mentions: {all: true}}
        """)
    accept(p, only_bot="ops")
    (message,) = recorder.stored
    assert message.routed is False
    p.render_stored(p.config.bots["ops"], head(message))
    assert all(a.mentions == () for a in recorder.rendered[0][1].alerts)
