"""App bots in the service as it runs in production: `feishu-alert-bridge serve` under
gunicorn, two workers sharing the outbox (and the app's token), against the strict fake
Open API over real HTTP; killed with SIGKILL in between, twice.

Fire -> one card (and urgent for the critical alert); a second alert joins -> the same
card updated, a thread reply; all resolve -> the same card green, a thread reply. The
first card's answer is lost and the bridge killed before it could retry: the card is
posted once (Feishu de-duplicates the retry by its uuid) and still updated afterwards.
The update's answer is lost and the bridge killed: it is made again, and its thread
reply is not doubled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import requests

from fake_open_api import FakeOpenAPI
from procs import BridgeProcess
from support.appbot import (ALICE, APP_ID, APP_SECRET, BOB, CHAT, alert, buzzes, config_yaml, payload, setup_fake,
                            thread_texts, titles)

NO_PROXY = {"http": "", "https": ""}
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_proxy_env")]


def post(bridge: BridgeProcess, body: bytes) -> None:
    answer = requests.post(f"{bridge.url}/alertmanager", data=body, headers={"Content-Type": "application/json"},
                           timeout=10, proxies=NO_PROXY)
    assert answer.status_code == 200, answer.text


def kill(bridge: BridgeProcess) -> str:
    """SIGKILL to the master and every worker at once; the log so far."""
    os.killpg(bridge.proc.pid, signal.SIGKILL)
    bridge.stop()
    return bridge.log()


def test_one_living_card_through_two_kills(tmp_path):
    with FakeOpenAPI() as fake:
        setup_fake(fake)
        config = tmp_path / "config.yaml"
        config.write_text(config_yaml(fake.base_url))
        logs = []

        fake.script("send", ("lost_answer",))
        bridge = BridgeProcess(config, tmp_path / "bridge-1.log", workers=2)
        post(bridge, payload(alert("DiskFull")))
        fake.wait_for(lambda: fake.attempts("send"), timeout=20, what="the first card's request")
        logs.append(kill(bridge))      # before its retry (backoff 200 ms and up)

        bridge = BridgeProcess(config, tmp_path / "bridge-2.log", workers=2)
        fake.wait_for(lambda: buzzes(fake), timeout=20, what="the card's urgent, after the restart")
        (card,) = fake.chat(CHAT)
        fake.script("patch", ("lost_answer",))
        post(bridge, payload(alert("DiskFull"), alert("HighLoad", severity="warning")))
        fake.wait_for(lambda: fake.attempts("patch"), timeout=20, what="the update's request")
        logs.append(kill(bridge))

        bridge = BridgeProcess(config, tmp_path / "bridge-3.log", workers=2)
        fake.wait_for(lambda: thread_texts(fake, card.message_id), timeout=20, what="the reply, after the restart")
        post(bridge, payload(alert("DiskFull", "resolved"), alert("HighLoad", "resolved", severity="warning")))
        fake.wait_for(lambda: titles(fake) == [("[RESOLVED]", "green")] and len(fake.thread(card.message_id)) == 2,
                      timeout=20, what="the card green and its second reply")
        bridge.stop()
        logs.append(bridge.log())

        assert [m.message_id for m in fake.chat(CHAT)] == [card.message_id], "one card, posted once"
        assert [t.code for t in fake.attempts("send")] == [0, 0], "the retry answered with the same card"
        assert thread_texts(fake, card.message_id) == ["🔴 1 more firing: HighLoad", "✅ Resolved after 23m"]
        assert buzzes(fake) == [("app", (BOB, ALICE))]
        assert fake.message(card.message_id).updates >= 2 and not fake.throttled()
        assert fake.token_fetches(APP_ID) == 1, "one token, shared by every worker and run through the outbox"
        tokens = list(fake.world.apps[APP_ID].tokens)
        everything = "".join(logs)
        assert APP_SECRET not in everything and not [t for t in tokens if t in everything]


def test_no_app_secret_or_token_in_logs_answers_metrics_or_cli_output(tmp_path):
    """Forced failures (a wrong secret, an expired token, a lost answer) under gunicorn, then
    every way out: the log, /metrics, `outbox list`, `send-test`, `check-config`."""
    with FakeOpenAPI() as fake:
        setup_fake(fake)
        fake.add_app("cli_wrong1", "the-real-one-Zz9")
        fake.add_chat("oc_wrong1", apps=["cli_wrong1"])
        config = tmp_path / "config.yaml"
        config.write_text(config_yaml(fake.base_url).replace("apps:\n", f"""apps:
  - name: other
    app_id: cli_wrong1
    app_secret: wrong-Secret-Yy8
    base_url: {fake.base_url}
""", 1).replace("route: {bots: [sre]}", """  - name: wrong
    app: other
    chat_id: oc_wrong1
route: {bots: [sre, wrong]}"""))
        seen = []
        bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=2)
        try:
            fake.script("send", ("lost_answer",))
            post(bridge, payload(alert("DiskFull")))
            fake.wait_for(lambda: buzzes(fake), timeout=20, what="the card, buzzed")
            fake.expire_tokens(APP_ID)
            post(bridge, payload(alert("DiskFull"), alert("HighLoad")))
            fake.wait_for(lambda: titles(fake) == [("[FIRING:2]", "red")], timeout=20, what="updated")
            fake.wait_for(lambda: "bad_credentials" in bridge.log(), timeout=20, what="the wrong app refused")
            seen.append(requests.get(f"{bridge.url}/metrics", timeout=10, proxies=NO_PROXY).text)
        finally:
            bridge.stop()
        for args in (["outbox", "list", "--config", str(config)], ["send-test", "--config", str(config), "--bot", "wrong"],
                     ["send-test", "--config", str(config), "--bot", "sre"], ["check-config", str(config)]):
            run = subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True,
                                 timeout=60, cwd=tmp_path)
            seen.append(run.stdout + run.stderr)
        everything = bridge.log() + "\n".join(seen)
        assert "feishu_bridge_app_token_refreshes_total" in everything and "not sent (code 10015)" in everything
        tokens = [t for app in fake.world.apps.values() for t in app.tokens]
        leaked = [s for s in [APP_SECRET, "wrong-Secret-Yy8", "the-real-one-Zz9", *tokens] if s in everything]
        assert not leaked, f"leaked: {leaked}"
