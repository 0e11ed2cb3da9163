"""`actions:` and the apps' callback keys (encrypt_key, verification_token): defaults,
values, and every mistake named by its key path."""

from __future__ import annotations

import pytest

from bridge.config import loads
from bridge.errors import ConfigError

BASE = """
apps: [{name: oncall, app_id: cli_a1, app_secret: s3cret, encrypt_key_file: ek, verification_token: vt-1}]
bots: [{name: sre, app: oncall, chat_id: oc_1}]
route: {bots: [sre]}
users: {alice: ou_alice, carol: {email: carol@example.com}}
"""


def load(tmp_path, extra: str = ""):
    (tmp_path / "ek").write_text("ek-1\n")
    return loads(BASE + extra, base_dir=tmp_path, env={})


def problems(tmp_path, extra: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, extra)
    return caught.value.problems


def test_defaults_and_the_apps_callback_keys(tmp_path):
    config = load(tmp_path)
    app = config.apps["oncall"]
    assert app.encrypt_key.reveal() == "ek-1" and app.verification_token.reveal() == "vt-1"
    assert "ek-1" not in repr(app) and "vt-1" not in repr(app)
    assert not config.actions.enabled
    assert [label for label, _ in config.actions.silence_durations] == ["1h", "4h", "24h"]


def test_every_key(tmp_path):
    actions = load(tmp_path, """
actions:
  enabled: true
  silence_durations: [30m, 2h]
  allowed_users: [alice, ou_bob]
  alertmanagers:
    - {external_url: https://am.example.com/, url: http://am:9093, bearer_token: t}
    - {external_url: https://am2.example.com, url: http://am2:9093, basic: {username: u, password: p}}
  grafana: {url: http://grafana:3000, token: gt}
  timeout: 1500ms
""").actions
    assert actions.enabled and actions.silence_durations == (("30m", 1800.0), ("2h", 7200.0))
    assert actions.allowed_users == ("ou_alice", "ou_bob") and actions.timeout == 1.5
    first, second = actions.alertmanagers
    assert first.external_url == "https://am.example.com" and first.bearer_token.reveal() == "t"
    assert second.basic_username == "u" and second.basic_password.reveal() == "p"
    assert actions.grafana.url == "http://grafana:3000" and actions.grafana.bearer_token.reveal() == "gt"


def test_mistakes_name_their_key_paths(tmp_path):
    found = problems(tmp_path, """
actions:
  enabled: maybe
  silence_durations: [soon]
  allowed_users: [carol, bob]
  alertmanagers: [{url: "ftp://x"}, {external_url: "http://a", url: "http://b", bearer_token: t, basic: {username: u}}]
  grafana: {url: http://grafana:3000}
  timeout: 5s
  colour: red
""")
    assert found == [
        "actions.colour: unknown key",
        "actions.enabled: expected true or false, got 'maybe'",
        "actions.silence_durations[0]: expected a positive duration like 10s, 1m or 500ms, got 'soon'",
        "actions.timeout: at most 2.5s: Feishu waits 3 s for the answer to a tap",
        "actions.allowed_users[0]: 'carol' is neither an open_id (ou_...) nor a name in users: with an open_id "
        "(the tap tells the bridge the person's open_id only)",
        "actions.allowed_users[1]: 'bob' is neither an open_id (ou_...) nor a name in users: with an open_id "
        "(the tap tells the bridge the person's open_id only)",
        "actions.alertmanagers[0].external_url: required",
        "actions.alertmanagers[0].url: expected an http(s) URL with a host, got 'ftp://x'",
        "actions.alertmanagers[1].basic: needs username and password (or password_file)",
        "actions.alertmanagers[1]: set bearer_token or basic, not both",
        "actions.grafana.token: required (or token_file): a Grafana service-account token that may create silences",
    ]


def test_an_empty_key_and_both_forms_are_refused(tmp_path):
    (tmp_path / "vt").write_text("x")
    with pytest.raises(ConfigError) as caught:
        loads("""
apps: [{name: oncall, app_id: cli_a1, app_secret: s, encrypt_key: "", verification_token: v, verification_token_file: vt}]
bots: [{name: sre, app: oncall, chat_id: oc_1}]
route: {bots: [sre]}
""", base_dir=tmp_path, env={})
    assert caught.value.problems == [
        "apps[0].verification_token: set either verification_token or verification_token_file, not both",
        "apps[0].encrypt_key: is empty: copy it from the console's 事件与回调 (Events & callbacks) page, or remove the key",
    ]


def test_enabled_without_an_app_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        loads("bots: [{name: d, webhook_url: 'https://open.feishu.cn/open-apis/bot/v2/hook/x'}]\n"
              "route: {bots: [d]}\nactions: {enabled: true}\n", env={})
    assert caught.value.problems == ["actions.enabled: card actions need an app bot: configure apps: and a bot "
                                     "with app:"]
