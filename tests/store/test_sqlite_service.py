"""SQLite faults seen through the service: what a user notices when the outbox's file
refuses a write. These tests reach into the SQLite file (a lock held by another process, a
trigger that refuses one update), so they live with the backend's own tests; the contract
suite (test_contract*.py) holds what every backend must do.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path

import requests

from bridge import create_app
from bridge.config import loads
from procs import BridgeProcess
from support import eventually as until
from test_delivery_service import NO_PROXY, bot, events, metric, names, notification, post, scrape, write_config

FIXTURES = Path(__file__).parent.parent / "fixtures"


def answers(bridge: BridgeProcess, path: str) -> int:
    return requests.get(bridge.url + path, headers={"Connection": "close"}, timeout=10, proxies=NO_PROXY).status_code


def test_ready_says_so_only_while_the_outbox_is_writable(tmp_path):
    config = loads(f"bots: [{{name: ops}}]\nroute: {{bots: [ops]}}\nstorage: {{path: {tmp_path / 'outbox.db'}}}\n",
                   env={})
    app = create_app(config, start_delivery=False)
    client = app.test_client()
    assert client.get("/-/ready").status_code == 200
    blocker = sqlite3.connect(tmp_path / "outbox.db", timeout=10, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the store's write lock
    try:
        response = client.get("/-/ready")
        assert response.status_code == 503 and "outbox not writable" in response.get_json()["reason"]
        # The handler answers 503 too: nothing is acknowledged that was not stored.
        body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
        answer = client.post("/alertmanager", data=body, content_type="application/json")
        assert answer.status_code == 503 and "retry" in answer.get_json()["error"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # The refused webhook is remembered until one is stored again: Alertmanager's retry is.
    assert client.get("/-/ready").status_code == 503
    assert client.post("/alertmanager", data=body, content_type="application/json").status_code == 200
    assert client.get("/-/ready").status_code == 200


def test_a_send_that_cannot_be_recorded_is_not_sent_again_and_its_bot_stops_until_it_can(fake_feishu, tmp_path):
    token = "tok-record-4b7e"
    config = write_config(tmp_path, [bot("ops", fake_feishu.add_bot(token))])
    bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=2)
    outbox = tmp_path / "outbox.db"
    try:
        # The fault: the outbox refuses to mark a message sent (as a full disk or a broken
        # volume would refuse that one write), while everything before it works.
        with sqlite3.connect(outbox) as db:
            db.execute("CREATE TRIGGER injected_fault BEFORE UPDATE OF state ON messages WHEN NEW.state = 'sent'"
                       " BEGIN SELECT RAISE(ABORT, 'injected fault: cannot record a send'); END")
        posted = [f"Record-{i:03d}" for i in range(3)]
        for name in posted:
            post(bridge, notification(name))
        until(lambda: len(events(bridge, "record_failed")) >= 3, 15, "three failed attempts to record the send")

        assert names(fake_feishu.received(token)) == ["Record-000"], "a message was sent again, or the bot went on"
        failed = events(bridge, "record_failed")
        stamps = [datetime.fromisoformat(e["ts"]).timestamp() for e in failed]
        gaps = [b - a for a, b in zip(stamps, stamps[1:])]
        assert all(gap >= 0.5 for gap in gaps), f"the recording was retried in a tight loop: {gaps}"
        assert all(e["message_id"] == failed[0]["message_id"] for e in failed)

        def not_ready() -> dict | None:
            answer = requests.get(bridge.url + "/-/ready", headers={"Connection": "close"}, timeout=10,
                                  proxies=NO_PROXY)
            return answer.json() if answer.status_code == 503 else None
        reason = until(not_ready, 10, "/-/ready answering 503 from the worker that stopped the bot")
        assert "bot ops stopped" in reason["reason"] and reason["stopped_bots"] == ["ops"]
        assert metric(scrape(bridge), "feishu_bridge_internal_errors_total", where="record_send") >= 3

        with sqlite3.connect(outbox) as db:   # the disk is fixed
            db.execute("DROP TRIGGER injected_fault")
        until(lambda: set(posted) <= set(names(fake_feishu.received(token))), 15, "the rest delivered")
        time.sleep(1.0)
        assert names(fake_feishu.received(token)) == posted, "each message exactly once, in order"
        assert events(bridge, "record_recovered"), "no log line saying the bot sends again"
        statuses = {answers(bridge, "/-/ready") for _ in range(6)}
        assert statuses == {200}
    finally:
        bridge.stop()
