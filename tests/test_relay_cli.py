"""`feishu-alert-bridge send`, run as a user runs it: through the bridge under gunicorn (as in
production) with credentials from the environment, and --direct; and check-config's word
on the relay and on v1 custom-bot URLs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from procs import BridgeProcess

TOKEN = "relay-cli-token-Qm4"
SECRET = "relay-cli-secret-Zp1"


def run(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=60,
                          env={**base, **(env or {})}, input=stdin)


def write_config(tmp_path: Path, url: str, *, secret: str = SECRET, relay: bool = True) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
bots: [{{name: ops, webhook_url: '{url}', secret: {secret}, keywords: [cron]}}]
route: {{bots: [ops]}}
users: {{alice: ou_a11ce}}
storage: {{path: outbox.db}}
auth: {{bearer_token: {TOKEN}}}
relay: {{enabled: {str(relay).lower()}}}
""")
    return path


@pytest.fixture
def bridge(tmp_path, fake_feishu):
    url = fake_feishu.add_bot("tok-relay-cli-1", secret=SECRET, keywords=["cron"])
    process = BridgeProcess(write_config(tmp_path, url), tmp_path / "bridge.log")
    yield process
    process.stop()


def test_send_through_a_running_bridge_with_credentials_from_the_environment(bridge, fake_feishu, tmp_path):
    result = run("send", "--bot", "ops", "--text", "Backup of db1 finished", "--mention", "alice",
                 "--dedupe-key", "backup-db1-2026-03-02", "--url", bridge.url, env={"BRIDGE_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert "accepted by the bridge" in result.stdout and "1 message queued" in result.stdout
    assert fake_feishu.wait_for("tok-relay-cli-1", 1) == [
        {"msg_type": "text", "content": {"text": 'cron <at user_id="ou_a11ce">alice</at> Backup of db1 finished'}}]

    again = run("send", "--bot", "ops", "--text", "Backup of db1 finished", "--dedupe-key", "backup-db1-2026-03-02",
                env={"BRIDGE_TOKEN": TOKEN, "BRIDGE_URL": bridge.url})
    assert again.returncode == 0 and "not sent again" in again.stdout

    message = tmp_path / "message.json"
    message.write_text(json.dumps({"msg_type": "post", "content": {"post": {"zh_cn": {
        "title": "cron digest", "content": [[{"tag": "text", "text": "3 jobs ran"}]]}}}}))
    result = run("send", "--bot", "ops", "--file", str(message), "--url", bridge.url, env={"BRIDGE_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert fake_feishu.wait_for("tok-relay-cli-1", 2)[1]["content"]["post"]["zh_cn"]["title"] == "cron digest"


def test_send_through_the_bridge_says_what_was_refused_and_exits_1(bridge):
    wrong = run("send", "--bot", "ops", "--text", "hi", "--url", bridge.url, env={"BRIDGE_TOKEN": "not-it"})
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr and "BRIDGE_TOKEN" in wrong.stderr
    assert "not-it" not in wrong.stderr + wrong.stdout

    bad = run("send", "--bot", "ops", "--file", "-", "--url", bridge.url, env={"BRIDGE_TOKEN": TOKEN},
              stdin='{"msg_type": "text", "content": {"txt": "hi"}}')
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "content.txt: unknown field" in bad.stderr

    nobody = run("send", "--bot", "nobody", "--text", "hi", "--url", bridge.url, env={"BRIDGE_TOKEN": TOKEN})
    assert nobody.returncode == 1 and "HTTP 404" in nobody.stderr

    gone = run("send", "--bot", "ops", "--text", "hi", "--url", "http://user:pw@127.0.0.1:9", env={"BRIDGE_TOKEN": TOKEN})
    assert gone.returncode == 1 and "cannot reach the bridge at http://127.0.0.1:9" in gone.stderr
    assert "pw" not in gone.stderr


def test_send_direct_signs_sends_and_explains_feishus_answer(tmp_path, fake_feishu):
    url = fake_feishu.add_bot("tok-relay-cli-2", secret=SECRET, keywords=["cron"])
    good = write_config(tmp_path, url, relay=False)   # --direct needs no relay, only the bot
    text = "\n".join(f"line {i} " + "x" * 200 for i in range(300))    # about 62 KB: four parts
    result = run("send", "--direct", "--config", str(good), "--bot", "ops", "--text", text)
    assert result.returncode == 0, result.stderr
    assert "Feishu accepted all 4 parts" in result.stdout
    parts = fake_feishu.wait_for("tok-relay-cli-2", 4)
    assert [p["content"]["text"][:10] for p in parts] == [f"cron ({n}/4)" for n in range(1, 5)]
    assert not fake_feishu.throttled("tok-relay-cli-2")

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    result = run("send", "--direct", "--config", str(write_config(wrong, url, secret="not-the-secret")),
                 "--bot", "ops", "--text", "hi")
    assert result.returncode == 1
    assert "code 19021" in result.stderr and "signature" in result.stderr and "clock" in result.stderr
    assert "tok-relay-cli-2" not in result.stderr + result.stdout and "not-the-secret" not in result.stderr

    result = run("send", "--direct", "--config", str(good), "--bot", "ops", "--text", "hi", "--mention", "carol")
    assert result.returncode == 1 and "'carol' is not in the users: directory" in result.stderr
    assert len(fake_feishu.received("tok-relay-cli-2")) == 4


def test_send_needs_a_message_and_has_help_with_examples():
    assert run("send", "--bot", "ops").returncode == 2
    result = run("send", "--help")
    assert result.returncode == 0 and "feishu-alert-bridge send --bot ops --text" in result.stdout


def test_check_config_refuses_the_relay_without_auth_and_v1_urls(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("bots: [{name: old, webhook_url: 'https://open.feishu.cn/open-apis/bot/hook/9f8e7d6c5b4a'}]\n"
                    "route: {bots: [old]}\nrelay: {enabled: true}\n")
    result = run("check-config", str(path))
    assert result.returncode == 2
    assert "bots[0].webhook_url: https://open.feishu.cn/open-apis/bot/hook/9f8e… is a v1 custom-bot URL" in result.stderr
    assert "relay.enabled: the relay posts into your group chats, so it needs inbound authentication" in result.stderr
    assert "9f8e7d6c5b4a" not in result.stderr

    path.write_text("bots: [{name: ops}]\nroute: {bots: [ops]}\nauth: {bearer_token: t}\nrelay: {enabled: true}\n")
    result = run("check-config", str(path))
    assert result.returncode == 0 and "relay: POST /send/<bot> is on for ops" in result.stdout
