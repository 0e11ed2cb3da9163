"""From a parsed notification to Feishu cards: which alerts each bot's message holds
(bridge.accept: routing, send_resolved), that accepting stores without rendering and then
wakes the senders, and that composing at send time (bridge.compose) gives each alert the
mentions its bot and routes ask for."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

from bridge.accept import Accept
from bridge.compose import Compose
from bridge.config import loads
from bridge.mentions import MentionResolver
from bridge.model import Mention
from bridge.sources import parse
from bridge.store.records import Head, Stored

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"
LOG = logging.getLogger("bridge.test-accept")
# Two alerts of one group: HighCPU on node-1 resolved, on node-2 still firing (Alertmanager 0.25).
MIXED = (FIXTURES / "am025-mixed-resolved-firing.json").read_bytes()


class Recorder:
    """Stands in for the outbox (what accept stores), the senders (woken) and the renderer
    (what it is given)."""

    def __init__(self):
        self.stored, self.rendered, self.wakes = [], [], 0

    def store(self, messages, *, dedupe_window, coalesce):
        self.stored.extend(messages)
        return Stored(ids=list(range(len(self.stored) - len(messages) + 1, len(self.stored) + 1)))

    def wake(self):
        self.wakes += 1

    def render(self, notification, bot):
        self.rendered.append((bot.name, notification))
        return [{"msg_type": "text", "content": {"text": "card"}}]


class Services:
    def __init__(self, config_text: str):
        self.config = loads(textwrap.dedent(config_text), env={})
        self.recorder = Recorder()
        self.accept = Accept(self.config, self.recorder, self.recorder.wake, LOG)
        self.compose = Compose(self.config, self.recorder, MentionResolver(self.config.users, LOG))


def services(config_text: str) -> tuple[Services, Recorder]:
    made = Services(config_text)
    return made, made.recorder


def accept(p: Services, raw: bytes = MIXED, only_bot: str | None = None):
    return p.accept(parse("alertmanager", json.loads(raw)), raw, only_bot=only_bot)


def statuses(raw: bytes, message) -> list[str]:
    alerts = json.loads(raw)["alerts"]
    return [alerts[i]["status"] for i in (message.alerts if message.alerts is not None else range(len(alerts)))]


def head(message) -> Head:
    return Head(id=1, group_key=message.group_key, source=message.source, payload=message.payload,
                alerts=message.alerts, routed=message.routed, bodies=None, sent=0, attempts=0, created=0.0)


def test_accepting_stores_the_body_as_received_renders_nothing_and_wakes_the_senders():
    p, recorder = services("bots: [{name: ops}, {name: db}]\nroute: {bots: [ops, db]}\n")
    accepted = accept(p)
    assert accepted.as_json() == {"status": "accepted", "alerts": 2, "messages": {"ops": 1, "db": 1},
                                  "routed": {"ops": 2, "db": 2}}
    assert [m.bot for m in recorder.stored] == ["ops", "db"] and recorder.rendered == []
    assert all(m.payload == MIXED and m.alerts is None for m in recorder.stored)
    assert recorder.wakes == 1


def test_send_resolved_false_on_a_bot_drops_its_resolved_alerts_only():
    p, recorder = services("""
        bots: [{name: ops}, {name: quiet, send_resolved: false}]
        route: {bots: [ops, quiet]}
        """)
    accept(p)
    ops, quiet = recorder.stored
    assert statuses(MIXED, ops) == ["resolved", "firing"]
    assert statuses(MIXED, quiet) == ["firing"]


def test_send_resolved_false_on_a_route_and_a_group_that_is_all_resolved_sends_nothing():
    p, recorder = services("""
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
    p, recorder = services("""
        users: {alice: ou_alice1, bob: ou_bob2}
        bots: [{name: ops, mentions: {users: [alice]}}]
        route:
          bots: [ops]
          routes:
            - {matchers: ['instance=~"node-2.*"'], mentions: {users: [bob]}}
        """)
    accept(p)
    (message,) = recorder.stored
    p.compose.render_stored(p.config.bots["ops"], head(message))
    (bot, notification), = recorder.rendered
    by_instance = {a.labels["instance"].split(":")[0]: a.mentions for a in notification.alerts}
    # node-1 is resolved: mention_on defaults to firing, so it pings nobody.
    assert by_instance == {"node-1": (), "node-2": (Mention("ou_alice1", "alice"), Mention("ou_bob2", "bob"))}


def test_a_message_posted_to_a_bot_directly_gets_only_the_bots_mentions():
    p, recorder = services("""
        users: {bob: ou_bob2}
        bots: [{name: ops}]
        route: {bots: [ops], mentions: {all: true}}
        """)
    accept(p, only_bot="ops")
    (message,) = recorder.stored
    assert message.routed is False
    p.compose.render_stored(p.config.bots["ops"], head(message))
    assert all(a.mentions == () for a in recorder.rendered[0][1].alerts)


def test_the_same_notification_again_is_stored_once_counted_as_a_duplicate_and_wakes_no_one(tmp_path):
    from bridge.metrics import Metrics
    from bridge.store.sqlite import SqliteOutbox as Outbox

    config = loads("bots: [{name: ops}]\nroute: {bots: [ops]}\n", env={})
    recorder, metrics, outbox = Recorder(), Metrics(), Outbox(tmp_path / "outbox.db")
    accept_ = Accept(config, outbox, recorder.wake, LOG, metrics)
    notification = parse("alertmanager", json.loads(MIXED))
    assert accept_(notification, MIXED).as_json()["messages"] == {"ops": 1}
    assert accept_(notification, MIXED).as_json()["messages"] == {"ops": 0}   # an Alertmanager retry
    assert recorder.wakes == 1 and len(outbox.list()) == 1
    assert 'feishu_bridge_duplicates_dropped_total{bot="ops"} 1.0' in metrics.scrape().decode()
    outbox.close()
