"""Reloading config and templates while running: /-/reload, SIGHUP under gunicorn, reload.watch.

A reload that fails keeps the running configuration, in every worker.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import requests

from bridge import create_app
from bridge.config import load
from procs import BridgeProcess

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


def bots_seen(url: str, tries: int = 20) -> set[tuple[str, ...]]:
    """The bot lists that /-/ready reports across many requests (so, across workers)."""
    return {tuple(requests.get(f"{url}/-/ready", timeout=5).json()["bots"]) for _ in range(tries)}


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


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
        assert bots_seen(bridge.url) == {("ops",)}

        path.write_text(GOOD_TWO_BOTS)
        os.kill(bridge.proc.pid, signal.SIGHUP)
        assert wait_until(lambda: bots_seen(bridge.url) == {("ops", "db")}), bridge.log()

        path.write_text(BROKEN)
        os.kill(bridge.proc.pid, signal.SIGHUP)
        time.sleep(2.5)  # every worker's watcher has had its chance to (wrongly) reload
        assert bots_seen(bridge.url) == {("ops", "db")}
        assert "reload refused" in bridge.log()
        assert requests.post(f"{bridge.url}/-/reload", timeout=10).status_code == 500
        assert bots_seen(bridge.url) == {("ops", "db")}

        path.write_text(GOOD)
        assert requests.post(f"{bridge.url}/-/reload", timeout=10).status_code == 200
        assert wait_until(lambda: bots_seen(bridge.url) == {("ops",)}), bridge.log()
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
        assert wait_until(lambda: bots_seen(bridge.url) == {("ops", "db")}), bridge.log()
    finally:
        bridge.stop()


def _alert() -> dict:
    return {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing", "receiver": "r",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": [{"status": "firing", "labels": {"alertname": "A", "team": "db"}, "annotations": {},
                        "startsAt": "2026-11-29T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prom", "fingerprint": ""}]}
