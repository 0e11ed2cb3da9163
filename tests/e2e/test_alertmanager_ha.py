"""An Alertmanager HA pair (two clustered Alertmanager 0.25 processes gossiping on loopback)
in front of two bridge replicas sharing one PostgreSQL: member 1 posts to replica 1 and
member 2 to replica 2, as when each member's webhook URL names the pod next to it. The
alerts go to both members, as Prometheus sends every alert to every Alertmanager.

Each member sends every notification here: `--cluster.peer-timeout=0s` keeps the second
member from waiting for the first's notification log. That is what an HA pair does when
gossip is slower than its peer timeout (a partition, a congested network, a webhook
that took longer than the timeout to answer). With the default 15 s the second member
sees the first's log and stays silent, and the test would show Alertmanager's
deduplication, not the bridge's. The test checks that both members did send each one.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Iterator

import pytest

from procs import AlertmanagerProcess, gossip_pair
from support import eventually
from support.replicas import Replicas, postgres_storage
from test_delivery_service import drained, metric, scrape

from .chain import (BOTS, BRIDGE_ENV, EXPECTED, alertmanager_config, cards, prometheus_alerts, secrets,
                    write_bridge_config)

pytestmark = pytest.mark.e2e

# peer-timeout: see the module doc. gossip-interval: Alertmanager waits for the cluster to
# settle (3 polls of 10 gossip intervals without a change of members) before it notifies:
# 2 s instead of 8 at the default 200 ms.
CLUSTER_FLAGS = ("--cluster.peer-timeout=0s", "--cluster.gossip-interval=50ms")
WAIT = 30.0
GROUPS = len({name for names in EXPECTED.values() for name in names})
MESSAGES = sum(len(names) for names in EXPECTED.values())   # per state: one per group and routed bot


@pytest.fixture
def replicas(tmp_path, postgres_cluster) -> Iterator[Replicas]:
    started = Replicas(tmp_path, postgres_cluster, postgres_cluster.new_database("ha"))
    yield started
    started.stop_all()


def post_to_both(members: tuple[AlertmanagerProcess, ...], alerts: list[dict]) -> None:
    """Prometheus sends each batch to every Alertmanager it knows, concurrently."""
    failures: list[Exception] = []

    def post(member: AlertmanagerProcess) -> None:
        try:
            member.post_alerts(alerts)
        except Exception as exc:
            failures.append(exc)

    threads = [threading.Thread(target=post, args=(m,)) for m in members]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not failures, failures


def test_an_alertmanager_ha_pair_posting_to_two_replicas_gives_one_feishu_message_per_notification(
        fake_feishu, tmp_path, alertmanager_binary, running, replicas):
    config = write_bridge_config(fake_feishu, tmp_path, postgres_storage(tmp_path))
    pods = (replicas.start(config, BRIDGE_ENV), replicas.start(config, BRIDGE_ENV))
    gossip = gossip_pair(*CLUSTER_FLAGS)
    members = tuple(running(AlertmanagerProcess(alertmanager_config(pod.url), tmp_path / f"am-{i}",
                                                binary=alertmanager_binary, gossip=gossip[i - 1]))
                    for i, pod in enumerate(pods, start=1))
    eventually(lambda: all(m.cluster()["status"] == "ready" and len(m.cluster()["peers"]) == 2 for m in members),
               WAIT, lambda: f"the pair clustered: {[m.cluster() for m in members]}")
    started = datetime.now(timezone.utc) - timedelta(minutes=10)

    for state, alerts, sent in (("FIRING", prometheus_alerts(started), 1),
                                ("RESOLVED", prometheus_alerts(started, datetime.now(timezone.utc)), 2)):
        post_to_both(members, alerts)
        eventually(lambda: all(m.notifications() >= sent * GROUPS for m in members), WAIT,
                   lambda: f"each member sending its {GROUPS} {state.lower()} notifications: "
                           f"{[m.notifications() for m in members]} sent")
        for bot in BOTS:
            fake_feishu.wait_for(bot.token, sent * len(EXPECTED[bot.name]), timeout=WAIT)
    drained(pods[0], *(bot.name for bot in BOTS))   # the outbox is shared: nothing left for any bot

    for bot in BOTS:
        seen = Counter((c.state, c.alertname) for c in cards(fake_feishu, bot))
        wanted = Counter((state, name) for state in ("FIRING", "RESOLVED") for name in EXPECTED[bot.name])
        assert seen == wanted, f"bot {bot.name}: Feishu showed {dict(seen)}, one of each of {sorted(wanted)} expected"
        refused = [a.why for a in fake_feishu.attempts(bot.token) if a.code != 0]
        assert not refused, f"bot {bot.name}: the fake Feishu refused {refused}"

    # Both members posted every notification, each to its own replica; one copy of each message was dropped.
    sent = [m.notifications() for m in members]
    figures = [scrape(pod) for pod in pods]
    received = [metric(f, "feishu_bridge_notifications_received_total", source="alertmanager", result="accepted")
                for f in figures]
    dropped = sum(metric(f, "feishu_bridge_duplicates_dropped_total", bot=bot.name) for f in figures for bot in BOTS)
    print(f"\nAlertmanager HA pair: the members sent {sent[0]:.0f} and {sent[1]:.0f} notifications, the replicas "
          f"answered {received[0]:.0f} and {received[1]:.0f} with 200, dropped {dropped:.0f} duplicate messages; "
          f"{2 * MESSAGES} messages at Feishu, one per notification and bot")
    assert sent == [2 * GROUPS] * 2 and received == [2 * GROUPS] * 2, (sent, received)
    assert dropped == 2 * MESSAGES
    for pod in pods:
        pod.stop()
        assert not [s for s in secrets() if s in pod.log()], f"a token or secret is in {pod.log_path.name}"
