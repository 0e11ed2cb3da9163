"""The webhook endpoints, in process: what each answer says, and what reaches the fake Feishu.

Golden files under tests/golden/ hold what the fake Feishu *received* for each
fixture (timestamp and sign removed); `pytest --update-golden` rewrites them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from bridge import create_app
from bridge.config import loads

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = Path(__file__).parent / "golden"
# am025-headers.json documents the capture's request headers; it is not a payload.
AM_FIXTURES = sorted(p for p in (FIXTURES / "alertmanager").glob("*.json") if p.stem != "am025-headers")
GRAFANA_FIXTURES = sorted((FIXTURES / "grafana").glob("*.json"))
SECRET = "bridge-test-secret-Zq7"


def make_app(fake, tmp_path: Path, route: str = "route: {bots: [ops]}", extra_bots: str = "", **kw):
    """An app with bot `ops` (signed, keyword 告警) on the fake, plus whatever the test adds."""
    url = fake.add_bot("tok-ops-0001", secret=SECRET, keywords=["告警"])
    text = f"""
bots:
  - name: ops
    webhook_url: {url}
    secret: {SECRET}
    keywords: ["告警"]
{extra_bots}
{route}
timezone: Asia/Shanghai
storage: {{path: {tmp_path / 'outbox.db'}}}
"""
    app = create_app(loads(text, env={}, **kw), logger=logging.getLogger("bridge"))
    return app


@pytest.fixture
def app(fake_feishu, tmp_path):
    app = make_app(fake_feishu, tmp_path)
    yield app
    app.extensions["bridge"].stop(timeout=5)


@pytest.fixture
def client(app):
    return app.test_client()


def post(client, path: str, body, content_type: str = "application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


def check_golden(name: str, received: list[dict], update: bool) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(received, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    if update or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if not update:
            pytest.fail(f"golden file {path.name} was missing and has been written; check it and commit it")
    assert text == path.read_text(encoding="utf-8"), f"card differs from {path.name} (pytest --update-golden)"


@pytest.mark.parametrize("fixture", AM_FIXTURES + GRAFANA_FIXTURES, ids=lambda p: p.stem)
def test_each_fixture_reaches_feishu_as_a_signed_keyworded_card(fixture, client, fake_feishu, update_golden):
    source = fixture.parent.name
    body = fixture.read_bytes()
    response = post(client, f"/{source}", body)
    assert response.status_code == 200, response.get_json()
    summary = response.get_json()
    assert summary["status"] == "accepted" and summary["messages"] == {"ops": 1}
    assert summary["alerts"] == len(json.loads(body).get("alerts", [None]))

    received = fake_feishu.wait_for("tok-ops-0001", 1)
    # The fake has already checked the signature and the keyword; the card is visible text.
    assert "告警" in json.dumps(received[0], ensure_ascii=False)
    assert not fake_feishu.throttled("tok-ops-0001")
    check_golden(fixture.stem, received, update_golden)


BAD_BODIES = [
    # (body, content type, expected status, a phrase the error must contain)
    (b"{not json", "application/json", 400, "malformed JSON"),
    (b"\xff\xfe\x00garbage", "application/json", 400, ""),
    (b"[]", "application/json", 400, "expected a JSON object"),
    (b"{}", "application/json", 400, "missing required field"),
    (json.dumps({"status": "firing", "alerts": "x"}).encode(), "application/json", 400, "missing required field"),
    (b'{"a": 1}', "text/plain", 415, "application/json"),
    (b'{"a": 1}', "", 415, "application/json"),
]


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
@pytest.mark.parametrize("body,ctype,status,phrase", BAD_BODIES)
def test_bad_input_gets_a_clear_json_answer(client, source, body, ctype, status, phrase):
    response = client.post(f"/{source}", data=body, content_type=ctype or None)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert phrase in error and "Traceback" not in error


def test_wrong_type_names_the_field(client):
    payload = json.loads((FIXTURES / "alertmanager" / "am025-firing-group2.json").read_text())
    payload["alerts"][1]["labels"]["severity"] = 3
    response = post(client, "/alertmanager", payload)
    assert response.status_code == 400
    assert response.get_json() == {"error": "alerts[1].labels.severity: expected a string, got number"}


def test_unknown_bot_is_404_and_known_bot_skips_the_route_tree(fake_feishu, tmp_path):
    db_url = fake_feishu.add_bot("tok-db-0002")
    app = make_app(fake_feishu, tmp_path, extra_bots=f"  - name: db\n    webhook_url: {db_url}\n")
    try:
        client = app.test_client()
        body = (FIXTURES / "alertmanager" / "am025-firing-group2.json").read_bytes()
        assert post(client, "/alertmanager/nobody", body).status_code == 404
        assert post(client, "/grafana/nobody", body).status_code == 404
        response = post(client, "/alertmanager/db", body)
        assert response.status_code == 200 and response.get_json()["messages"] == {"db": 1}
        assert len(fake_feishu.wait_for("tok-db-0002", 1)) == 1
        assert fake_feishu.received("tok-ops-0001") == []  # the root's bot got nothing
    finally:
        app.extensions["bridge"].stop(timeout=5)


def test_body_over_the_limit_is_413(fake_feishu, tmp_path):
    app = make_app(fake_feishu, tmp_path, route="route: {bots: [ops]}\nserver: {max_body_bytes: 2KiB}")
    try:
        body = (FIXTURES / "alertmanager" / "am025-firing-group2.json").read_bytes()
        padded = body.rstrip()[:-1] + b', "pad": "' + b"x" * 4096 + b'"}'
        response = post(app.test_client(), "/alertmanager", padded)
        assert response.status_code == 413 and "error" in response.get_json()
    finally:
        app.extensions["bridge"].stop(timeout=5)


ROUTE_TREE = """
route:
  bots: [ops]
  routes:
    - matchers: ['team="db"']
      bots: [db]
    - matchers: ['severity=~"critical|page"', 'env!="staging"']
      bots: [oncall]
      continue: true
"""


def test_each_alert_is_routed_on_its_own_and_each_bot_gets_its_share(fake_feishu, tmp_path):
    bots = ""
    for name in ("db", "oncall"):
        bots += f"  - name: {name}\n    webhook_url: {fake_feishu.add_bot('tok-' + name)}\n"
    app = make_app(fake_feishu, tmp_path, route=ROUTE_TREE, extra_bots=bots)

    def alert(name, **labels):
        return {"status": "firing", "labels": {"alertname": name, **labels}, "annotations": {},
                "startsAt": "2026-11-29T00:42:10Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus/graph", "fingerprint": ""}

    payload = {"version": "4", "groupKey": "{}:{}", "truncatedAlerts": 0, "status": "firing",
               "receiver": "bridge", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
               "externalURL": "http://am:9093",
               "alerts": [alert("DbDown", team="db", severity="critical"),     # db only (first match, no continue)
                          alert("Disk", severity="page", env="prod"),          # oncall (continue; no more) 
                          alert("Cpu", severity="critical", env="staging"),    # no child: root's ops
                          alert("Mem")]}                                       # root's ops
    try:
        response = post(app.test_client(), "/alertmanager", payload)
        assert response.get_json()["messages"] == {"db": 1, "oncall": 1, "ops": 1}

        def names(token):
            text = json.dumps(fake_feishu.wait_for(token, 1), ensure_ascii=False)
            return {n for n in ("DbDown", "Disk", "Cpu", "Mem") if n in text}

        assert names("tok-db") == {"DbDown"}
        assert names("tok-oncall") == {"Disk"}
        assert names("tok-ops-0001") == {"Cpu", "Mem"}
    finally:
        app.extensions["bridge"].stop(timeout=5)


def test_dry_run_bot_logs_the_message_instead_of_sending(fake_feishu, tmp_path, caplog):
    app = make_app(fake_feishu, tmp_path, route="route: {bots: [dry]}", extra_bots="  - name: dry\n")
    try:
        with caplog.at_level(logging.DEBUG, logger="bridge"):
            body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
            assert post(app.test_client(), "/alertmanager", body).status_code == 200
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not any(
                    getattr(r, "event", "") == "dry_run" for r in caplog.records):
                time.sleep(0.05)
        dry = [r for r in caplog.records if getattr(r, "event", "") == "dry_run"]
        assert len(dry) == 1 and '"msg_type"' in dry[0].getMessage()
        assert fake_feishu.attempts("tok-ops-0001") == []
    finally:
        app.extensions["bridge"].stop(timeout=5)


def test_each_request_has_an_id_in_the_answer_and_the_log(client, caplog):
    from bridge.logs import RequestContext

    handler_filter = RequestContext()
    logging.getLogger("bridge").addFilter(handler_filter)
    try:
        with caplog.at_level(logging.DEBUG, logger="bridge"):
            body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
            given = client.post("/alertmanager", data=body, content_type="application/json",
                                headers={"X-Request-Id": "am-retry-7"})
            made = client.post("/alertmanager", data=body, content_type="application/json")
            odd = client.post("/alertmanager", data=body, content_type="application/json",
                              headers={"X-Request-Id": "<script>" * 20})
    finally:
        logging.getLogger("bridge").removeFilter(handler_filter)
    assert given.headers["X-Request-Id"] == "am-retry-7"
    assert len(made.headers["X-Request-Id"]) == 16 and odd.headers["X-Request-Id"] != "<script>" * 20
    accepted = [r for r in caplog.records if getattr(r, "event", "") == "accepted"]
    assert [r.request_id for r in accepted][:1] == ["am-retry-7"]


def test_mentions_and_send_resolved_reach_feishu_as_configured(fake_feishu, tmp_path, caplog):
    """From the webhook to the card Feishu receives: alice (named in the alert's owner label)
    and the route's @all ping; carol, whom users: does not know, is shown but pings no one;
    the bot that does not send resolved alerts gets only the firing one."""
    quiet_url = fake_feishu.add_bot("tok-quiet-0003")
    app = make_app(fake_feishu, tmp_path,
                   extra_bots=f"    mention_labels: [owner]\n  - name: quiet\n    webhook_url: {quiet_url}\n"
                              "    send_resolved: false\nusers: {alice: ou_alice0001}",
                   route="route: {bots: [ops, quiet], routes: [{matchers: ['severity=\"critical\"'], "
                         "bots: [ops, quiet], mentions: {all: true}}]}")
    body = json.loads((FIXTURES / "alertmanager" / "am025-mixed-resolved-firing.json").read_text())
    for alert in body["alerts"]:
        alert["labels"].update(severity="critical", owner="alice, carol")
    try:
        with caplog.at_level(logging.WARNING, logger="bridge"):
            assert post(app.test_client(), "/alertmanager", body).status_code == 200
            (card,) = fake_feishu.wait_for("tok-ops-0001", 1)
            (quiet,) = fake_feishu.wait_for("tok-quiet-0003", 1)
    finally:
        app.extensions["bridge"].stop(timeout=5)
    text = json.dumps(card, ensure_ascii=False)
    assert '"content": "<at id=all></at> <at id=ou_alice0001></at> @carol"' in text   # the card's last line
    assert "<at id=carol" not in text
    assert [r.getMessage() for r in caplog.records if getattr(r, "event", "") == "unknown_mention"] != []
    quiet_text = json.dumps(quiet, ensure_ascii=False)
    assert "node-2" in quiet_text and "node-1" not in quiet_text      # node-1's alert is resolved


def test_the_same_notification_again_is_answered_with_no_new_message(client, fake_feishu):
    """An Alertmanager retry after a timeout: 200 again (nothing for it to retry), but the
    answer says no message was stored, and Feishu gets the card once."""
    body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
    first, again = post(client, "/alertmanager", body), post(client, "/alertmanager", body)
    assert first.get_json()["messages"] == {"ops": 1} and again.get_json()["messages"] == {"ops": 0}
    assert again.status_code == 200 and len(fake_feishu.wait_for("tok-ops-0001", 1)) == 1
    time.sleep(0.3)
    assert len(fake_feishu.received("tok-ops-0001")) == 1


def test_ready_turns_503_once_a_webhook_could_not_be_stored_and_back_once_one_is(tmp_path, monkeypatch):
    """The disk full case: the store's own probe still passes (it writes nothing), but every
    webhook is refused. Kubernetes must stop sending traffic to this pod meanwhile."""
    from bridge.errors import StorageError

    config = loads(f"bots: [{{name: ops}}]\nroute: {{bots: [ops]}}\nstorage: {{path: {tmp_path / 'outbox.db'}}}\n",
                   env={})
    app = create_app(config, start_delivery=False)
    client = app.test_client()
    store = app.extensions["bridge"].services.store
    body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
    real_store = store.store

    def disk_full(*args, **kwargs):
        raise StorageError("outbox feishu-alert-bridge-outbox.db: database or disk is full")

    monkeypatch.setattr(store, "store", disk_full)
    assert store.writable_problem() is None          # what /-/ready used to rely on alone
    assert client.get("/-/ready").status_code == 200  # nothing has failed yet
    assert post(client, "/alertmanager", body).status_code == 503
    answer = client.get("/-/ready")
    assert answer.status_code == 503
    assert "could not be stored" in answer.get_json()["reason"] and "disk is full" in answer.get_json()["reason"]

    monkeypatch.setattr(store, "store", real_store)   # space freed
    assert post(client, "/alertmanager", body).status_code == 200
    assert client.get("/-/ready").status_code == 200


def test_a_store_failure_is_forgotten_after_a_minute_without_webhooks():
    from bridge.store.health import FORGET_AFTER, WriteHealth
    from support.clock import FakeClock

    clock = FakeClock()
    health = WriteHealth(clock)
    health.failed("database or disk is full")
    assert "disk is full" in health.problem()
    clock.advance(FORGET_AFTER - 1)
    assert health.problem() is not None
    clock.advance(2)
    assert health.problem() is None
    health.failed("again")
    health.stored()
    assert health.problem() is None



def test_the_accept_answer_is_byte_for_byte_what_jsonify_gives(client, app):
    """The webhook answer is built without jsonify (a cost per request); it must not differ."""
    from flask import jsonify

    body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
    answer = client.post("/alertmanager", data=body, content_type="application/json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    with app.app_context():
        assert answer.get_data() == jsonify(answer.get_json()).get_data()
