"""The command line with app bots: render shows the request as im/v1 takes it, send-test
sends through the app and explains Feishu's answer in words."""

from __future__ import annotations

import json

import pytest

from bridge import cli
from fake_open_api import FakeOpenAPI
from support.appbot import APP_ID, APP_SECRET, CHAT, alert, config_yaml, payload, setup_fake

pytestmark = pytest.mark.usefixtures("no_proxy_env")


@pytest.fixture
def fake():
    with FakeOpenAPI() as fake:
        setup_fake(fake)
        yield fake


def test_render_shows_an_app_bots_request(tmp_path, fake, capsys):
    (tmp_path / "config.yaml").write_text(config_yaml(fake.base_url, storage=tmp_path / "o.db"))
    (tmp_path / "payload.json").write_bytes(payload(alert("DiskFull")))
    assert cli.main(["render", "--config", str(tmp_path / "config.yaml"), "--payload",
                     str(tmp_path / "payload.json")]) == 0
    head, body = capsys.readouterr().out.split("\n", 1)
    assert head.startswith("# bot sre: message 1/1, ") and "app bot" in head
    request = json.loads(body)
    assert request["receive_id"] == CHAT and request["msg_type"] == "interactive"
    assert request["content"]["config"]["update_multi"] is True


def send_test(tmp_path, fake, capsys) -> tuple[int, str, str]:
    (tmp_path / "config.yaml").write_text(config_yaml(fake.base_url, storage=tmp_path / "o.db"))
    code = cli.main(["send-test", "--config", str(tmp_path / "config.yaml"), "--bot", "sre"])
    out, err = capsys.readouterr()
    return code, out, err


def test_send_test_through_the_app(tmp_path, fake, capsys):
    code, out, err = send_test(tmp_path, fake, capsys)
    assert code == 0, err
    assert out.startswith(f"bot sre (app oncall, chat {CHAT}): sent") and len(fake.cards(CHAT)) == 1


@pytest.mark.parametrize("break_it, words", [
    (lambda fake: fake.world.chats[CHAT].bots.clear(), ["code 230002", "add the bot to the group"]),
    (lambda fake: setattr(fake.world.apps[APP_ID], "scopes", {"contact:user.id:readonly"}),
     ["code 99991672", "im:message:send_as_bot", "publish"]),
    (lambda fake: setattr(fake.world.apps[APP_ID], "bot_on", False), ["code 230006", "publish a version"]),
    (lambda fake: setattr(fake.world.apps[APP_ID], "secret", "rotated"), ["code 10015", "app_secret"]),
], ids=["bot not in the chat", "missing scope", "app not published", "wrong secret"])
def test_send_test_explains_the_apps_refusal(tmp_path, fake, capsys, break_it, words):
    break_it(fake)
    code, out, err = send_test(tmp_path, fake, capsys)
    assert code == 1 and fake.cards(CHAT) == []
    for word in words:
        assert word in err, err
    assert APP_SECRET not in out + err
