"""The command line: render and send-test, run as a user would run them."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from bridge import cli, create_app
from bridge.config import load
from bridge.store.sqlite import SqliteOutbox

FIXTURES = Path(__file__).parent / "fixtures"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True, text=True, timeout=timeout)


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(body)
    return path


def test_every_command_has_help_with_an_example():
    for command in ("serve", "check-config", "render", "send-test"):
        result = run(command, "--help")
        assert result.returncode == 0 and "example: feishu-alert-bridge " + command in result.stdout


def test_render_prints_each_bots_messages_after_routing(tmp_path):
    config = write_config(tmp_path, """
bots: [{name: ops, keywords: [告警]}, {name: infra, template: text}]
route: {bots: [ops], routes: [{matchers: ['team="infra"'], bots: [infra], continue: true}]}
""")
    result = run("render", "--config", str(config), "--payload",
                 str(FIXTURES / "alertmanager" / "am025-mixed-resolved-firing.json"))
    assert result.returncode == 0, result.stderr
    assert "# bot infra: message 1/1" in result.stdout and "# bot ops" not in result.stdout

    result = run("render", "--config", str(config), "--bot", "ops", "--payload",
                 str(FIXTURES / "alertmanager" / "am025-mixed-resolved-firing.json"))
    assert "# bot ops: message 1/1" in result.stdout
    body = json.loads(result.stdout.split("\n", 1)[1])
    assert body["card"]["header"]["title"]["content"].startswith("告警 ")  # the keyword, put in the title


def test_render_shows_the_split_of_a_big_group(tmp_path):
    payload = json.loads((FIXTURES / "alertmanager" / "am025-firing-single.json").read_text())
    template = payload["alerts"][0]
    payload["alerts"] = [{**template, "labels": {**template["labels"], "instance": f"node-{i}:9100"},
                          "fingerprint": ""} for i in range(500)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(payload))
    result = run("render", "--payload", str(path))
    assert result.returncode == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.startswith("# bot default: message ")]
    parts = len(headers)
    assert parts > 1 and headers[-1].startswith(f"# bot default: message {parts}/{parts}")
    assert all(int(h.split(", ")[1].split()[0]) <= 20 * 1024 for h in headers)
    assert sum(result.stdout.count(f"node&#45;{i}&#58;9100\\n") for i in range(500)) == 500


def test_render_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"alerts": 1}')
    result = run("render", "--payload", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "not a valid alertmanager payload" in result.stderr
    result = run("render", "--payload", str(tmp_path / "missing.json"))
    assert result.returncode == 1 and result.stderr.startswith("error: cannot read")


def test_send_test_explains_feishus_answer(tmp_path, fake_feishu):
    url = fake_feishu.add_bot("tok-cli-5150", secret="right-secret")
    good = write_config(tmp_path, f"bots: [{{name: ops, webhook_url: '{url}', secret: right-secret}}]\n"
                                  "route: {bots: [ops]}\n")
    result = run("send-test", "--config", str(good), "--bot", "ops")
    assert result.returncode == 0, result.stderr
    assert "sent" in result.stdout and len(fake_feishu.received("tok-cli-5150")) == 1

    wrong = write_config(tmp_path, f"bots: [{{name: ops, webhook_url: '{url}', secret: wrong-secret}}]\n"
                                   "route: {bots: [ops]}\n")
    result = run("send-test", "--config", str(wrong), "--bot", "ops")
    assert result.returncode == 1
    assert "signature" in result.stderr and "clock" in result.stderr and "code 19021" in result.stderr
    assert "tok-cli-5150" not in result.stderr + result.stdout and "wrong-secret" not in result.stderr

    result = run("send-test", "--config", str(good), "--bot", "nobody")
    assert result.returncode == 1 and "unknown bot 'nobody'" in result.stderr


def busy_bridge(tmp_path: Path, fake_feishu, token: str, messages: int):
    """The service, in this process, with `messages` alerts for bot ops: once it has sent
    five, Feishu's per-second window is full."""
    url = fake_feishu.add_bot(token, secret="busy-secret")
    path = write_config(tmp_path, f"bots: [{{name: ops, webhook_url: '{url}', secret: busy-secret}}]\n"
                                  "route: {bots: [ops]}\nstorage: {path: outbox.db}\n")
    app = create_app(load(path), logger=logging.getLogger("bridge.cli-test"))
    body = json.loads((FIXTURES / "alertmanager" / "am025-firing-single.json").read_text())
    for i in range(messages):
        answer = app.test_client().post("/alertmanager", json={**body, "groupKey": f"{{}}:{{group=\"{i}\"}}"})
        assert answer.status_code == 200
    fake_feishu.wait_for(token, min(messages, 5))
    return app, path


def test_send_test_to_a_busy_bot_waits_its_turn_within_feishus_rate_limit(tmp_path, fake_feishu):
    """The card goes through the outbox: the service holding the bot sends it in turn."""
    app, path = busy_bridge(tmp_path, fake_feishu, "tok-cli-busy", 25)
    try:
        result = run("send-test", "--config", str(path), "--bot", "ops")
        assert result.returncode == 0, result.stderr
        assert "sent; Feishu accepted the test card" in result.stdout
        assert len(fake_feishu.wait_for("tok-cli-busy", 26)) == 26
        assert fake_feishu.throttled("tok-cli-busy") == []
    finally:
        app.extensions["bridge"].stop(timeout=5)
    assert SqliteOutbox(tmp_path / "outbox.db").list() == []


def test_send_test_right_after_the_service_stopped_keeps_to_the_bots_recorded_window(tmp_path, fake_feishu,
                                                                                      capsys):
    app, path = busy_bridge(tmp_path, fake_feishu, "tok-cli-after", 5)
    app.extensions["bridge"].stop(timeout=5)    # no one holds the bot: send-test takes it
    assert cli.main(["send-test", "--config", str(path), "--bot", "ops"]) == 0, capsys.readouterr().err
    assert len(fake_feishu.received("tok-cli-after")) == 6 and fake_feishu.throttled("tok-cli-after") == []
    assert SqliteOutbox(tmp_path / "outbox.db").list() == []


def test_outbox_list_shows_what_waits_and_which_part_is_next(tmp_path):
    """A message is rendered only when it is sent: until then its parts are unknown (?)."""
    from bridge.store.records import OutgoingMessage

    config = write_config(tmp_path, "bots: [{name: ops}]\nroute: {bots: [ops]}\nstorage: {path: outbox.db}\n")
    outbox = SqliteOutbox(tmp_path / "outbox.db")
    body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
    waiting, split = outbox.store([OutgoingMessage(bot="ops", group_key="g-new", source="alertmanager", payload=body),
                                   OutgoingMessage(bot="ops", group_key="g-split", source="alertmanager",
                                                   bodies=({"n": 1}, {"n": 2}, {"n": 3}))]).ids
    outbox.acquire("ops", "cli-test")
    outbox.mark_sent(split, outbox.claim(split, "ops", "cli-test", record=True), "ops", "cli-test", 0, last=False)
    outbox.close()

    result = run("outbox", "list", "--config", str(config))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows[str(waiting)][1:4] == ["ops", "pending", "1/?"]
    assert rows[str(split)][1:4] == ["ops", "pending", "2/3"]
