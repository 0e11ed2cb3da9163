"""Reloading config and templates while running: /-/reload, SIGHUP under gunicorn, reload.watch.

A reload that fails keeps the running configuration, in every worker.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bridge import create_app, sources
from bridge.config import load
from procs import BridgeProcess
from support import eventually

GOOD = """
bots: [{name: ops, dry_run: true}]
route: {bots: [ops]}
storage: {path: outbox.db}
"""
GOOD_TWO_BOTS = """
bots: [{name: ops, dry_run: true}, {name: db, dry_run: true}]
route: {bots: [ops], routes: [{matchers: ['team="db"'], bots: [db]}]}
storage: {path: outbox.db}
"""
BROKEN = """
bots: [{name: ops, dry_run: true}]
route: {bots: [nobody]}
storage: {path: outbox.db}
"""


def workers(bridge: BridgeProcess) -> set[int]:
    """The gunicorn workers' pids: the master's (the bridge process's) children."""
    pid = bridge.proc.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def every_worker_serves(bridge: BridgeProcess, bots: tuple[str, ...], timeout: float = 20.0) -> None:
    """Ask /-/ready on new connections until every worker, by its pid (X-Bridge-Worker), has
    answered with `bots`: each one is checked, not a sample the kernel happened to spread."""
    expected = workers(bridge)
    latest: dict[int, tuple[str, ...]] = {}

    def ask(_) -> None:
        answer = requests.get(f"{bridge.url}/-/ready", headers={"Connection": "close"}, timeout=5)
        latest[int(answer.headers["X-Bridge-Worker"])] = tuple(answer.json()["bots"])

    def done() -> bool:
        with ThreadPoolExecutor(2 * len(expected)) as pool:
            list(pool.map(ask, range(4 * len(expected))))
        return set(latest) == expected and all(seen == bots for seen in latest.values())

    eventually(done, timeout, lambda: f"every worker of {sorted(expected)} serving {bots}; the last answers "
                                      f"by pid: {latest}\n{bridge.log()}")


def worker_events(bridge: BridgeProcess, event: str) -> list[int]:
    """The pids of the workers (not the master) that logged `event`."""
    lines = (json.loads(line) for line in bridge.log().splitlines() if line.startswith("{"))
    return [line["pid"] for line in lines if line.get("event") == event and line.get("pid") != bridge.proc.pid]


def test_reload_endpoint_applies_a_good_config_and_keeps_the_old_on_a_broken_one(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    app = create_app(load(path), logger=logging.getLogger("bridge.reload-test"))
    client = app.test_client()
    try:
        path.write_text(GOOD_TWO_BOTS)
        response = client.post("/-/reload")
        assert response.status_code == 200 and response.get_json()["bots"] == ["ops", "db"]
        assert client.post("/alertmanager/db", json=_alert()).status_code == 200

        path.write_text(BROKEN)
        response = client.post("/-/reload")
        assert response.status_code == 500
        assert response.get_json()["problems"] == ["route.bots[0]: unknown bot 'nobody' (known: ops)"]
        # Still the last good configuration.
        assert client.get("/-/ready").get_json()["bots"] == ["ops", "db"]
        assert client.post("/alertmanager/db", json=_alert()).status_code == 200
    finally:
        app.extensions["bridge"].stop(timeout=5)


def test_sighup_and_reload_endpoint_reach_every_gunicorn_worker(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    bridge = BridgeProcess(path, tmp_path / "bridge.log", workers=3, threads=2)
    try:
        eventually(lambda: len(workers(bridge)) == 3, 20, "three workers")
        every_worker_serves(bridge, ("ops",))

        path.write_text(GOOD_TWO_BOTS)
        os.kill(bridge.proc.pid, signal.SIGHUP)
        every_worker_serves(bridge, ("ops", "db"))
        assert set(worker_events(bridge, "reloaded")) == workers(bridge)

        path.write_text(BROKEN)
        os.kill(bridge.proc.pid, signal.SIGHUP)
        eventually(lambda: "reload refused" in bridge.log(), 10, "the master refusing the broken file")
        time.sleep(2.5)  # every worker's watcher has had its chance to (wrongly) reload
        assert worker_events(bridge, "reload_failed") == [], "a worker was asked to load the broken file"
        every_worker_serves(bridge, ("ops", "db"))
        assert requests.post(f"{bridge.url}/-/reload", timeout=10).status_code == 500
        every_worker_serves(bridge, ("ops", "db"))

        path.write_text(GOOD)
        assert requests.post(f"{bridge.url}/-/reload", timeout=10).status_code == 200
        every_worker_serves(bridge, ("ops",))
        assert bridge.proc.poll() is None
    finally:
        bridge.stop()


def test_watch_reloads_every_worker_when_the_file_changes(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD + "reload: {watch: true, interval: 1s}\n")
    bridge = BridgeProcess(path, tmp_path / "bridge.log", workers=2, threads=2)
    try:
        # As Kubernetes updates a ConfigMap: a new file swapped in under the same name.
        new = tmp_path / "config.yaml.new"
        new.write_text(GOOD_TWO_BOTS + "reload: {watch: true, interval: 1s}\n")
        os.replace(new, path)
        every_worker_serves(bridge, ("ops", "db"))
    finally:
        bridge.stop()


def test_a_reload_that_removes_the_bot_of_a_request_in_flight_answers_200_or_404_never_500(tmp_path,
                                                                                           monkeypatch):
    """A request sees the configuration it started with, whole (or, started later, the new one)."""
    path = tmp_path / "config.yaml"
    path.write_text(GOOD_TWO_BOTS)
    app = create_app(load(path), logger=logging.getLogger("bridge.reload-test"), start_delivery=False)
    bridge, parse = app.extensions["bridge"], sources.parse

    def parse_while_a_reload_removes_db(source, document):
        # Between the request's check of its bot and storing its message: db goes away.
        path.write_text(GOOD)
        assert bridge.reload().bots.keys() == {"ops"}
        return parse(source, document)

    monkeypatch.setattr(sources, "parse", parse_while_a_reload_removes_db)
    try:
        # A resolved alert: the bot's send_resolved is looked up while routing.
        answer = app.test_client().post("/alertmanager/db", json=_alert("resolved"))
        assert answer.status_code in (200, 404), answer.get_json()
        monkeypatch.setattr(sources, "parse", parse)
        assert app.test_client().post("/alertmanager/db", json=_alert("resolved")).status_code == 404
    finally:
        bridge.stop(timeout=5)


def _alert(status: str = "firing") -> dict:
    ends = "2026-11-29T00:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z"
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": status, "receiver": "r",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [{"status": status, "labels": {"alertname": "A", "team": "db"}, "annotations": {},
                        "startsAt": "2026-11-29T00:00:00Z", "endsAt": ends,
                        "generatorURL": "http://prom", "fingerprint": ""}]}
