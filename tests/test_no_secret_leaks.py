"""No webhook token, bot secret, bearer token, password or HMAC secret ever leaves the bridge:
not in its logs, its answers, its metrics, or its command-line output, whatever goes wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from procs import BridgeProcess

FIXTURES = Path(__file__).parent / "fixtures"
AM_BODY = (FIXTURES / "alertmanager" / "am025-mixed-resolved-firing.json").read_bytes()
GRAFANA_BODY = (FIXTURES / "grafana" / "grafana-unified-firing.json").read_bytes()

TOKEN_OK = "tokOKleak0000a1"
TOKEN_BADSIG = "tokSIGleak000b2"
TOKEN_GONE = "tokGONEleak00c3"
BOT_SECRET = "botSecretLeak-d4"
WRONG_BOT_SECRET = "wrongBotSecret-e5"
BEARER = "bearerLeak-f6"
PASSWORD = "basicPwLeak-g7"
HMAC_SECRET = "hmacLeak-h8"
SECRETS = [TOKEN_OK, TOKEN_BADSIG, TOKEN_GONE, BOT_SECRET, WRONG_BOT_SECRET, BEARER, PASSWORD, HMAC_SECRET]


def config_text(fake, tmp_path: Path, extra: str = "") -> str:
    ok = fake.add_bot(TOKEN_OK, secret=BOT_SECRET)
    badsig = fake.add_bot(TOKEN_BADSIG, secret=BOT_SECRET)
    (tmp_path / "badsig-url").write_text(badsig)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    gone = ok.replace(TOKEN_OK, TOKEN_GONE)  # a token Feishu does not know: 19001
    return f"""
bots:
  - name: ok
    webhook_url: {ok}
    secret: ${{BOT_SECRET}}
  - name: badsig
    webhook_url_file: badsig-url
    secret: {WRONG_BOT_SECRET}
  - name: gone
    webhook_url: {gone}
route:
  bots: [ok, badsig, gone]
storage: {{path: outbox.db}}
auth:
  bearer_token: {BEARER}
  basic: {{username: am, password_file: password}}
  grafana_hmac: {{secret: {HMAC_SECRET}}}
{extra}"""


def test_nothing_secret_in_logs_answers_metrics_or_cli_output(fake_feishu, tmp_path):
    config = tmp_path / "config.yaml"
    good = config_text(fake_feishu, tmp_path, "relay: {enabled: true}\n")
    config.write_text(good)
    env = {"BOT_SECRET": BOT_SECRET}
    seen: list[str] = []

    def keep(response: requests.Response) -> requests.Response:
        seen.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response

    bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=2, env=env)
    try:
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {BEARER}"}
        keep(requests.post(f"{bridge.url}/alertmanager", data=AM_BODY, headers=auth, timeout=10))
        basic = "Basic " + base64.b64encode(f"am:{PASSWORD}".encode()).decode()
        signature = hmac.new(HMAC_SECRET.encode(), GRAFANA_BODY, hashlib.sha256).hexdigest()
        keep(requests.post(f"{bridge.url}/grafana", data=GRAFANA_BODY, timeout=10,
                           headers={"Content-Type": "application/json", "Authorization": basic,
                                    "X-Grafana-Alerting-Signature": signature}))
        for wrong in ({}, {"Authorization": "Bearer nope"}, {"Authorization": basic[:-4] + "AAA="}):
            keep(requests.post(f"{bridge.url}/alertmanager", data=AM_BODY, timeout=10,
                               headers={"Content-Type": "application/json", **wrong}))
        keep(requests.post(f"{bridge.url}/alertmanager", data=b"{", headers=auth, timeout=10))
        for bot in ("ok", "badsig", "gone"):   # the relay: the same secrets, the same refusals
            keep(requests.post(f"{bridge.url}/send/{bot}", json={"text": "relayed"}, headers=auth, timeout=10))
        keep(requests.post(f"{bridge.url}/send/ok", json={"text": "relayed"}, timeout=10,
                           headers={"Authorization": "Bearer nope"}))
        keep(requests.post(f"{bridge.url}/send/ok", json={"msg_type": "text", "content": {}}, headers=auth, timeout=10))
        fake_feishu.wait_for(TOKEN_OK, 3)
        deadline = time.monotonic() + 15   # Feishu's refusals have to have happened and been logged
        while not ("bad_signature" in bridge.log() and "bad_token" in bridge.log()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not fake_feishu.received(TOKEN_BADSIG)

        config.write_text(good + "route_typo: 1\n")
        keep(requests.post(f"{bridge.url}/-/reload", timeout=10))
        keep(requests.get(f"{bridge.url}/metrics", timeout=10))
        keep(requests.get(f"{bridge.url}/-/ready", timeout=10))
    finally:
        bridge.stop()

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(good)
    cli = []
    for args in (["check-config", str(config)],
                 ["send-test", "--config", str(fixed), "--bot", "badsig"],
                 ["send-test", "--config", str(fixed), "--bot", "gone"],
                 ["send", "--direct", "--config", str(fixed), "--bot", "badsig", "--text", "x"],
                 ["send", "--direct", "--config", str(fixed), "--bot", "gone", "--text", "x"],
                 ["render", "--config", str(fixed), "--payload", str(FIXTURES / "alertmanager" / "am025-nasty.json")]):
        run = subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60,
                             env={**os.environ, **env}, cwd=tmp_path)
        cli.append(run.stdout + run.stderr)

    everything = bridge.log() + "\n".join(seen) + "\n".join(cli)
    # The checks had something to say: refusals, failures and the reload error are in there.
    assert "bad_signature" in everything and "bad_token" in everything   # Feishu's refusals, logged
    assert "not sent (code 19021)" in everything and "not sent (code 19001)" in everything  # send-test
    assert "route_typo: unknown key" in everything
    leaked = [s for s in SECRETS if s in everything]
    assert not leaked, f"leaked: {leaked}"
