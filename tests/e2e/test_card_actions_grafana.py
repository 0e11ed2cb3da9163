"""Card actions for Grafana-managed alerts (issue 14): a Grafana webhook's card, a tap on
Silence, and the silence made in *Grafana's* Alertmanager, at
`/api/alertmanager/grafana/api/v2/silences` with the service-account token of
`actions.grafana`.

No Grafana runs here. Grafana's Alertmanager API is Alertmanager's v2 API under that
prefix (Grafana's docs, "Alertmanager API"; the silence URL of each alert in the webhook,
`/alerting/silence/new?alertmanager=grafana`, points at the same store), so the test puts
a strict stand-in in front of the real Alertmanager: it refuses any request without the
bearer token or outside the prefix, and passes the rest on with the prefix cut. What this
proves is the bridge's side: the right path, the token, the group's matchers, and that
the silence exists afterwards. What it cannot prove is Grafana's own handling of a token
without the `alerting.instances:write` permission (the toast then says what Grafana
answered, as for any refusal)."""

from __future__ import annotations

import http.server
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import requests

from fake_open_api import FakeOpenAPI
from fake_open_api.callbacks import button_texts, find_button
from procs import AlertmanagerProcess, BridgeProcess
from support.appbot import ALICE, APP_ID, CHAT, config_yaml, setup_fake

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("no_proxy_env")]
WAIT = 30.0
ENCRYPT_KEY, TOKEN = "ek-grafana-card-actions", "vt-grafana-card-actions"
SA_TOKEN = "glsa_test-service-account-token"
PREFIX = "/api/alertmanager/grafana"
NO_PROXY = {"http": "", "https": ""}

ALERTMANAGER_CONFIG = """\
route: {receiver: nowhere}
receivers: [{name: nowhere}]
"""


class GrafanaAlertmanager(http.server.ThreadingHTTPServer):
    """Grafana's Alertmanager API in front of a real Alertmanager: the token and the prefix
    are checked, everything else is Alertmanager's own answer."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.seen: list[tuple[str, str, str]] = []   # (method, path, Authorization)
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: GrafanaAlertmanager

    def _forward(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.server.seen.append((self.command, self.path, auth))
        if auth != f"Bearer {SA_TOKEN}":
            return self._answer(401, b'{"message":"invalid API key"}')
        if not self.path.startswith(PREFIX + "/api/v2/"):
            return self._answer(404, b'{"message":"Not found"}')
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
        answer = requests.request(self.command, self.server.upstream + self.path[len(PREFIX):], data=body,
                                  headers={"Content-Type": "application/json"}, timeout=5, proxies=NO_PROXY)
        self._answer(answer.status_code, answer.content)

    do_GET = do_POST = do_DELETE = _forward

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def grafana_webhook() -> bytes:
    """A Grafana unified-alerting webhook (the shape of tests/fixtures/grafana/
    grafana-unified-firing.json) grouped by alertname and grafana_folder, Grafana's default."""
    starts = (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    labels = {"alertname": "HighCPU", "grafana_folder": "Infra", "instance": "node-1", "severity": "warning"}
    return json.dumps({
        "receiver": "feishu", "status": "firing", "orgId": 1, "version": "1", "state": "alerting",
        "groupKey": '{}:{alertname="HighCPU", grafana_folder="Infra"}', "truncatedAlerts": 0,
        "groupLabels": {"alertname": "HighCPU", "grafana_folder": "Infra"},
        "commonLabels": labels, "commonAnnotations": {"summary": "CPU over 90%"},
        "externalURL": "http://grafana.test:3000/", "title": "[FIRING:1] HighCPU Infra", "message": "",
        "alerts": [{"status": "firing", "labels": labels, "annotations": {"summary": "CPU over 90%"},
                    "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z", "fingerprint": "a1b2c3d4e5f60718",
                    "generatorURL": "http://grafana.test:3000/alerting/grafana/abc/view",
                    "silenceURL": "http://grafana.test:3000/alerting/silence/new?alertmanager=grafana",
                    "dashboardURL": "", "panelURL": "", "values": {"B": 93.5}, "valueString": ""}],
    }).encode()


@pytest.fixture
def world(tmp_path, alertmanager_binary, running):
    with FakeOpenAPI() as fake:
        setup_fake(fake)
        fake.add_user(ALICE, "alice@example.com", name="Alice")
        fake.set_callback_keys(APP_ID, ENCRYPT_KEY, TOKEN)
        am = running(AlertmanagerProcess(ALERTMANAGER_CONFIG, tmp_path / "am", binary=alertmanager_binary))
        grafana = GrafanaAlertmanager(am.url)
        config = config_yaml(fake.base_url, extra=f"""
            actions:
              enabled: true
              silence_durations: [1h]
              grafana: {{url: {grafana.url}, token: {SA_TOKEN}}}
        """).replace(f"    base_url: {fake.base_url}\n", f"    base_url: {fake.base_url}\n"
                     f"    encrypt_key: {ENCRYPT_KEY}\n    verification_token: {TOKEN}\n")
        (tmp_path / "config.yaml").write_text(config)
        bridge = running(BridgeProcess(tmp_path / "config.yaml", tmp_path / "bridge.log", workers=2))
        try:
            yield fake, bridge, am, grafana
        finally:
            grafana.shutdown()
            grafana.server_close()


def test_a_grafana_alerts_silence_is_made_in_grafanas_alertmanager_with_the_token(world):
    fake, bridge, am, grafana = world
    answer = requests.post(f"{bridge.url}/grafana", data=grafana_webhook(),
                           headers={"Content-Type": "application/json"}, timeout=10, proxies=NO_PROXY)
    assert answer.status_code == 200, answer.text
    fake.wait_for(lambda: len(fake.chat(CHAT)) == 1, timeout=WAIT, what="the Grafana card")
    (message,) = fake.chat(CHAT)
    assert "Silence 1h" in button_texts(message.content)

    tapped = fake.tap(f"{bridge.url}/feishu/callback", message.message_id,
                      find_button(message.content, "Silence 1h"), open_id=ALICE)
    assert tapped.client_error is None, tapped.answer
    assert tapped.answer["toast"] == {"type": "success", "content": "Silenced for 1h."}
    (silence,) = requests.get(f"{am.url}/api/v2/silences", timeout=5, proxies=NO_PROXY).json()
    assert sorted((m["name"], m["value"], m["isEqual"], m["isRegex"]) for m in silence["matchers"]) == [
        ("alertname", "HighCPU", True, False), ("grafana_folder", "Infra", True, False)]
    assert silence["createdBy"] == "Alice"
    assert ("POST", f"{PREFIX}/api/v2/silences", f"Bearer {SA_TOKEN}") in grafana.seen
    # The card links the silence on Grafana's own page, not on the stand-in or Alertmanager.
    shown = json.dumps(fake.message(message.message_id).content, ensure_ascii=False)
    assert "🔕 Silenced by Alice until" in shown
    assert f"http://grafana.test:3000/alerting/silence/{silence['id']}/edit" in shown

    shown_card = fake.message(message.message_id).content
    expired = fake.tap(f"{bridge.url}/feishu/callback", message.message_id,
                       find_button(shown_card, "Expire silence"), open_id=ALICE)
    assert expired.answer["toast"] == {"type": "success", "content": "Silence expired."}
    (silence,) = requests.get(f"{am.url}/api/v2/silences", timeout=5, proxies=NO_PROXY).json()
    assert silence["status"]["state"] == "expired"
    assert ("DELETE", f"{PREFIX}/api/v2/silence/{silence['id']}", f"Bearer {SA_TOKEN}") in grafana.seen
    bridge.stop()
    assert SA_TOKEN not in bridge.log()
