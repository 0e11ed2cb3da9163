"""Two replicas sharing one PostgreSQL database, as two pods of the chart would: two
`feishu-alert-bridge serve` servers (gunicorn, two workers each, different ports), the
strict fake Feishu, and the session's throw-away PostgreSQL server (tests/support/postgres.py).

What must hold across replicas is checked at Feishu's end: every accepted message once,
never over the bot's limits, one message for a notification posted to both replicas;
and what an operator would see: 503 (never 500, never 200) on webhooks and /-/ready while
the database is away, and recovery without a restart.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests
import yaml

from procs import BridgeProcess
from support import eventually
from support.replicas import Replicas, postgres_storage
from test_delivery_service import (FAST_BACKOFF, NO_PROXY, ROOT, SHORT_MINUTE, SLOW, bot, events, minimum_drain,
                                   names, notification, post)


@pytest.fixture
def database(postgres_cluster) -> str:
    """A fresh database for the replicas of one test."""
    return postgres_cluster.new_database("replicas")


def write_config(tmp_path: Path, bots: list[dict], *, sync: str = "always", **delivery: object) -> Path:
    doc = {"bots": bots, "route": {"bots": [bots[0]["name"]]}, "storage": {"sync": sync, **postgres_storage(tmp_path)},
           "delivery": {**FAST_BACKOFF, **delivery}, "log": {"level": "debug"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def replicas(tmp_path: Path, database: str, postgres_cluster) -> Iterator[Callable[..., BridgeProcess]]:
    # The config names the database through the environment: the DSN without its
    # password (that one comes from password_file). stop_all fails on a password in a log.
    started = Replicas(tmp_path, postgres_cluster, database)
    yield started.start
    started.stop_all()


def answer(replica: BridgeProcess, path: str, payload: dict | None = None) -> int:
    call = requests.post if payload is not None else requests.get
    return call(replica.url + path, json=payload, headers={"Connection": "close"}, timeout=20,
                proxies=NO_PROXY).status_code


# -- one bot's storm over both replicas ---------------------------------------------------------
@pytest.mark.slow
def test_a_storm_accepted_by_two_replicas_keeps_feishus_limits_and_the_order(fake_feishu, tmp_path, replicas):
    # Feishu's minute shortened to 6 s on both sides (tests/support/short_minute), so that
    # the minute window is exercised three times in seconds.
    token, per_second, per_minute, count, minute = "tok-replicas-9b1e", 5, 20, 60, 6.0
    url = fake_feishu.add_bot(token, rate_per_second=per_second, rate_per_minute=per_minute, minute=minute)
    config = write_config(tmp_path, [bot("ops", url, rate_limit={"per_second": per_second,
                                                                 "per_minute": per_minute})])
    path = os.pathsep.join([str(SHORT_MINUTE), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {"PYTHONPATH": path, "FEISHU_BRIDGE_TEST_MINUTE": str(minute)}
    one, two = replicas(config, env), replicas(config, env)
    posted = [f"Storm-{i:03d}" for i in range(count)]
    began = time.monotonic()
    for i, name in enumerate(posted):   # one at a time, alternating: the commit order is the post order
        post((one, two)[i % 2], notification(name))
    assert len(events(one, "accepted")) == len(events(two, "accepted")) == count // 2

    minimum = minimum_drain(count, per_second, per_minute, minute)
    received = fake_feishu.wait_for(token, count, timeout=minimum * 1.5 + 10)
    drained = max(a.at for a in fake_feishu.attempts(token)) - began
    print(f"two replicas: {count} messages drained in {drained:.1f}s; minimum {minimum:.0f}s; "
          f"ratio {drained / minimum:.3f}")
    assert not fake_feishu.throttled(token), "a request over Feishu's limit"
    assert names(received) == posted
    assert len(fake_feishu.attempts(token)) == count
    assert drained <= 1.5 * minimum


# -- one notification, both replicas -------------------------------------------------------------
def test_the_same_notification_posted_to_both_replicas_gives_one_feishu_message(fake_feishu, tmp_path, replicas):
    tokens = {"a": "tok-pair-a-5d0c", "b": "tok-pair-b-71ae"}
    bots = [bot(name, fake_feishu.add_bot(token)) for name, token in tokens.items()]
    config = write_config(tmp_path, bots)
    doc = yaml.safe_load(config.read_text())
    doc["route"]["bots"] = list(tokens)
    config.write_text(yaml.safe_dump(doc))
    one, two = replicas(config), replicas(config)
    for round_ in range(5):
        first = notification(f"Paired-{round_:03d}", firing=2)
        second = {**first, "receiver": "feishu-ha", "externalURL": "http://am-2.test:9093"}   # the pair's other member
        gate = threading.Barrier(2)

        def send(job: tuple[BridgeProcess, dict]) -> None:
            gate.wait(5)
            post(*job)

        with ThreadPoolExecutor(2) as pool:   # both members at once, each to its own replica
            list(pool.map(send, [(one, first), (two, second)]))
        post(two, first)                      # a retry that lands on the other pod
    for token in tokens.values():
        fake_feishu.wait_for(token, 5, timeout=20)
    time.sleep(1.0)   # a second copy would be sent within the pacing's second
    for name, token in tokens.items():
        assert names(fake_feishu.received(token)) == [f"Paired-{r:03d}" for r in range(5)], f"bot {name}"


# -- the database away mid-storm ---------------------------------------------------------------
@pytest.mark.slow
def test_the_database_stopped_mid_storm_gives_503_then_everything_recovers(fake_feishu, tmp_path, replicas,
                                                                            postgres_cluster):
    bots = {f"db{b}": f"tok-dbdown-{b}-2c7e" for b in range(3)}
    config = write_config(tmp_path, [bot(name, fake_feishu.add_bot(token)) for name, token in bots.items()])
    pair = (replicas(config), replicas(config))
    statuses: Counter = Counter()
    ready: Counter = Counter()
    lock = threading.Lock()
    posted = {name: [f"Down{name[-1]}-{i:03d}" for i in range(40)] for name in bots}
    jobs = [(name, group, i) for i in range(40) for name, group in zip(bots, [posted[n][i] for n in bots])]

    def deliver(job: tuple[str, str, int]) -> None:
        """Post until 200, as Alertmanager does (a 503 is retried), each try to either replica."""
        name, group, i = job
        # Spread over 6 s, as groups reach Alertmanager over time: posted all at once they
        # could all be stored before the database stops, and the outage would meet no webhook.
        time.sleep(max(0.0, began + i * 0.15 - time.monotonic()))
        for attempt in range(200):
            status = answer(pair[(i + attempt) % 2], f"/alertmanager/{name}", notification(group))
            with lock:
                statuses[status] += 1
            if status == 200:
                return
            time.sleep(0.5)
        raise AssertionError(f"{group} never accepted")

    def probe(stop: threading.Event) -> None:
        while not stop.is_set():
            for replica in pair:
                status = answer(replica, "/-/ready")
                with lock:
                    ready[status] += 1
            stop.wait(0.2)

    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(stop,))
    prober.start()
    began = time.monotonic()
    try:
        with ThreadPoolExecutor(6) as pool:
            posting = pool.map(deliver, jobs)
            eventually(lambda: sum(len(fake_feishu.received(t)) for t in bots.values()) >= 15, 30, "sends under way")
            postgres_cluster.stop()
            eventually(lambda: ready[503] >= 2 and statuses[503] >= 3, 30, "503s while the database is away")
            time.sleep(20)
            postgres_cluster.start()
            list(posting)
        for name, token in bots.items():
            eventually(lambda: set(posted[name]) <= set(names(fake_feishu.received(token))), 60,
                       f"every message of {name} delivered after the database came back")
        eventually(lambda: all(answer(r, "/-/ready") == 200 for r in pair), 30, "both replicas ready again")
    finally:
        stop.set()
        prober.join(10)
        if not _running(postgres_cluster):
            postgres_cluster.start()
    duplicates = {name: sum(n - 1 for n in Counter(names(fake_feishu.received(t))).values())
                  for name, t in bots.items()}
    print(f"database away 20 s: webhook answers {dict(statuses)}, /-/ready {dict(ready)}, duplicates {duplicates}")
    assert set(statuses) <= {200, 503} and set(ready) <= {200, 503}, "a 500 (or another status), or a 200 early"
    for name, token in bots.items():
        assert not fake_feishu.throttled(token), name
        # Only a send whose outcome could not be recorded while the database was away may repeat.
        assert duplicates[name] <= 1, f"{name}: {duplicates[name]} duplicates"


def _running(cluster) -> bool:
    try:
        cluster.sql("SELECT 1")
        return True
    except Exception:
        return False


# -- one replica killed mid-storm ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sync", ["always", "interval"])
def test_kill_9_of_one_replica_mid_storm_the_other_finishes_and_nothing_is_lost(sync, fake_feishu, tmp_path, replicas,
                                                                               postgres_cluster, database):
    tokens = {f"kill{b}": f"tok-rkill-{b}-77d3" for b in range(4)}
    config = write_config(tmp_path, [bot(name, fake_feishu.add_bot(token)) for name, token in tokens.items()],
                          sync=sync)
    pair = [replicas(config), replicas(config)]
    for token in tokens.values():
        fake_feishu.script(token, *[SLOW] * 10)   # a request in flight most of the time
    posted = {name: [f"Kill{name[-1]}-{i:03d}" for i in range(40)] for name in tokens}
    jobs = [(name, posted[name][i], i) for i in range(40) for name in tokens]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda job: post(pair[job[2] % 2], notification(job[1]), f"/alertmanager/{job[0]}"), jobs))

    holder = eventually(lambda: next((r for r in pair if events(r, "sent")), None), 20, "a replica sending")
    survivor = pair[1 - pair.index(holder)]
    os.killpg(holder.proc.pid, signal.SIGKILL)   # the master and its workers, mid-send
    holder.proc.wait(5)
    time.sleep(2 * SLOW[1])                       # requests already at the fake land
    in_flight = postgres_cluster.sql("SELECT bot, count(*) FROM feishu_bridge.messages WHERE state = 'sending'"
                                     " GROUP BY bot", dbname=database)
    for name, token in tokens.items():
        eventually(lambda: set(posted[name]) <= set(names(fake_feishu.received(token))), 60,
                   f"every message of {name} delivered by the surviving replica")
    assert answer(survivor, "/-/ready") == 200
    flying = dict(in_flight)
    for name, token in tokens.items():
        duplicates = sum(n - 1 for n in Counter(names(fake_feishu.received(token))).values())
        print(f"{name}: {flying.get(name, 0)} in flight at the kill, {duplicates} sent twice")
        assert duplicates <= flying.get(name, 0) <= 1, name
        assert not fake_feishu.throttled(token), name

