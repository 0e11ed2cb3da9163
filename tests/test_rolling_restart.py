"""A rolling restart of two replicas sharing one PostgreSQL while Grafana sends.

Grafana posts each notification once and never retries, so a notification that meets a
closed port or a 503 is lost. Here a Grafana-shaped sender posts 5 notifications a second,
each a group of its own, each once, through a Service-like router, while the replicas are
restarted one after the other as a Deployment with `maxUnavailable: 0` does it: the second
goes only once the first is ready again.

The Service (kube-proxy routing to the endpoints of ready pods): round robin over the
replicas, skipping one whose /-/ready does not answer 200 right now, and one that is
being deleted (Kubernetes takes a terminating pod out of the endpoints at once, whatever
its readiness). The replica's deletion is what the chart asks of Kubernetes: out of the
endpoints, the preStop sleep, then SIGTERM; the bridge finishes what it holds and exits;
it is started again on the same port.

How faithful that is: the router asks /-/ready before every request, so it learns of a
replica that stopped answering at once; kube-proxy learns from the readiness probe
(every `readinessProbe.periodSeconds`) and from the endpoint's removal at deletion, both
propagated to every node within about a second. At start-up that lag only delays the
traffic a new pod gets (never to a pod not ready). At deletion the chart's preStop sleep
(5 s with PostgreSQL) covers it: the pod serves until every node has stopped routing to it.
In this model the propagation is instant, so PRESTOP only has to cover requests the
router had already sent on their way.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml

from procs import BridgeProcess
from support.replicas import Replicas, postgres_storage
from test_delivery_service import FAST_BACKOFF, NO_PROXY, bot, drained, names

FIXTURE = Path(__file__).parent / "fixtures" / "grafana" / "grafana-unified-firing.json"
BOTS = {f"roll{b}": f"tok-roll-{b}-3e9c" for b in range(5)}   # 1 notification a second each: under 5/s and 100/min
RATE = 5.0              # notifications a second
SETTLE = 3.0            # seconds of traffic before the first restart and after the last
PRESTOP = 1.0           # see the module doc
GRAFANA_TIMEOUT = 10.0  # seconds Grafana waits for a webhook's answer (its default is 30)


def grafana_notification(name: str) -> dict:
    """Grafana's unified-alerting webhook body, one firing alert whose alertname is `name`."""
    body = json.loads(FIXTURE.read_text())
    alert = body["alerts"][0]
    alert["labels"] = {"alertname": name, "grafana_folder": "Rollout", "severity": "warning"}
    alert["annotations"] = {"summary": f"{name} during the rollout"}
    alert["startsAt"] = "2026-03-02T08:30:00Z"
    alert["fingerprint"] = hashlib.sha256(name.encode()).hexdigest()[:16]
    body.update(groupLabels={"alertname": name}, commonLabels=alert["labels"],
                commonAnnotations=alert["annotations"], groupKey=f'{{}}/{{}}:{{alertname="{name}"}}',
                title=f"[FIRING:1] {name} (Rollout warning)", message=f"{name} during the rollout")
    return body


@dataclass
class Service:
    """Round robin over the replicas that are ready now and not being deleted."""

    urls: list[str]
    deleting: set[int] = field(default_factory=set)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self) -> int | None:
        with self._lock:
            start = self._next
            self._next += 1
        for k in range(len(self.urls)):
            i = (start + k) % len(self.urls)
            if i not in self.deleting and self._ready(self.urls[i]):
                return i
        return None

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            return requests.get(f"{url}/-/ready", timeout=1, proxies=NO_PROXY).status_code == 200
        except requests.RequestException:
            return False


@dataclass
class Grafana:
    """Posts notification k to /grafana/<bot k mod 5>, once each, at RATE a second."""

    service: Service
    answers: dict[str, str] = field(default_factory=dict)   # name -> "200", "503", "no endpoint", an error
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, stop: threading.Event) -> None:
        began = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            k = 0
            while not stop.is_set():
                pool.submit(self.notify, k)
                k += 1
                stop.wait(max(0.0, began + k / RATE - time.monotonic()))

    def notify(self, k: int) -> None:
        name, bot_name = f"Roll-{k:03d}", list(BOTS)[k % len(BOTS)]
        target = self.service.route()
        if target is None:
            answer = "no endpoint"
        else:
            try:
                answer = str(requests.post(f"{self.service.urls[target]}/grafana/{bot_name}",
                                           json=grafana_notification(name), headers={"Connection": "close"},
                                           timeout=GRAFANA_TIMEOUT, proxies=NO_PROXY).status_code)
            except requests.RequestException as exc:
                answer = type(exc).__name__
        with self._lock:
            self.answers[name] = answer


def write_config(tmp_path: Path, urls: dict[str, str]) -> Path:
    doc = {"bots": [bot(name, url) for name, url in urls.items()], "route": {"bots": [next(iter(urls))]},
           "storage": postgres_storage(tmp_path), "delivery": FAST_BACKOFF}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def replicas(tmp_path, postgres_cluster) -> Iterator[Replicas]:
    started = Replicas(tmp_path, postgres_cluster, postgres_cluster.new_database("rolling"))
    yield started
    started.stop_all()


def roll(service: Service, replicas: Replicas, pods: list[BridgeProcess], i: int) -> str:
    """Replace replica i as Kubernetes does (see the module doc); what it took, for the report."""
    service.deleting.add(i)
    time.sleep(PRESTOP)
    began = time.monotonic()
    code = pods[i].stop(signal.SIGTERM)
    stopped = time.monotonic()
    assert code == 0, f"replica {i + 1} did not exit by itself on SIGTERM within 20 s (exit {code})"
    pods[i] = replicas.again(pods[i])
    service.deleting.discard(i)
    return f"replica {i + 1} stopped in {stopped - began:.1f}s and was ready again {time.monotonic() - stopped:.1f}s later"


@pytest.mark.slow
def test_a_rolling_restart_of_both_replicas_loses_no_grafana_notification(fake_feishu, tmp_path, replicas):
    config = write_config(tmp_path, {name: fake_feishu.add_bot(token) for name, token in BOTS.items()})
    pods = [replicas.start(config), replicas.start(config)]
    service = Service([pod.url for pod in pods])
    grafana = Grafana(service)
    stop = threading.Event()
    sender = threading.Thread(target=grafana.run, args=(stop,))
    sender.start()
    try:
        time.sleep(SETTLE)
        steps = [roll(service, replicas, pods, i) for i in range(len(pods))]
        time.sleep(SETTLE)
    finally:
        stop.set()
        sender.join(GRAFANA_TIMEOUT + 5)
    drained(pods[0], *BOTS)   # the outbox is shared: nothing is left for any bot

    answers = dict(grafana.answers)
    tally = Counter(answers.values())
    delivered = Counter(n for token in BOTS.values() for n in names(fake_feishu.received(token)))
    lost = sorted(n for n, a in answers.items() if a == "200" and n not in delivered)
    refused = sorted(n for n, a in answers.items() if a != "200")
    twice = sorted(n for n, c in delivered.items() if c > 1)
    print(f"\nrolling restart under Grafana at {RATE:g}/s: {len(answers)} notifications over "
          f"{len(answers) / RATE:.0f}s, answers {dict(tally)}; {'; '.join(steps)}; "
          f"{len(lost)} answered 200 but lost, {len(refused)} refused, {len(twice)} delivered twice")
    assert not lost, f"answered 200 but never reached Feishu: {lost}"
    assert not refused, f"Grafana would have lost these (it does not retry): {[(n, answers[n]) for n in refused]}"
    assert not twice, f"delivered twice: {twice}"
    assert sum(delivered.values()) == len(answers)
