"""App bots in the configuration (issue 13): `apps:`, `app:` + `chat_id` instead of
webhook_url, update_in_place, thread_replies, urgent, users by email; each mistake named
by its key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge import config as cfg
from bridge.errors import ConfigError
from bridge.limits import APP_RATE_PER_MINUTE, APP_RATE_PER_SECOND

# The issue's example, as written there.
ISSUE_EXAMPLE = """
apps:
  - name: oncall
    app_id: cli_a1b2c3
    app_secret: ${FEISHU_APP_SECRET}     # or app_secret_file
    domain: feishu                       # feishu (open.feishu.cn) | lark (open.larksuite.com)
bots:
  - name: sre
    app: oncall                          # instead of webhook_url: send as this app's bot
    chat_id: oc_5ad11d72b830411d72b836c20   # the group; the app's bot must be a member
    update_in_place: true                # default true for app bots
    thread_replies: [resolved]           # which state changes also get a short reply in the card's thread
    urgent:                              # optional: 加急 for matching alerts, once per group firing
      kind: app                          # app | sms | phone (sms and phone spend the company's paid quota)
      users: [alice]                     # names from users:, open_ids, or mention_labels as for mentions
      matchers: ['severity="critical"']
route: {bots: [sre]}
users:
  alice: {email: alice@example.com}      # resolved to an open_id through the app (contact API), cached
"""
SECRET = "app-secret-9Qx"


def load(text: str, env: dict | None = None, base_dir: Path | None = None) -> cfg.Config:
    return cfg.loads(textwrap.dedent(text), env={"FEISHU_APP_SECRET": SECRET, **(env or {})}, base_dir=base_dir)


def problems(text: str, env: dict | None = None, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, env, base_dir)
    return info.value.problems


def test_the_issue_example_loads():
    config = load(ISSUE_EXAMPLE)
    app = config.apps["oncall"]
    assert (app.app_id, app.app_secret.reveal(), app.domain, app.base_url) == (
        "cli_a1b2c3", SECRET, "feishu", "https://open.feishu.cn")
    bot = config.bots["sre"]
    assert bot.app == app and bot.chat_id == "oc_5ad11d72b830411d72b836c20" and bot.sends and bot.is_app
    assert bot.webhook_url is None and bot.update_in_place and bot.thread_replies == {"resolved"}
    assert bot.urgent.kind == "app" and [str(m) for m in bot.urgent.matchers] == ['severity="critical"']
    (alice,) = bot.urgent.users
    assert (alice.user_id, alice.name, alice.email) == ("", "alice", "alice@example.com")
    assert config.user_emails == {"alice": "alice@example.com"} and config.users == {}
    # An app bot sends for its chat: Feishu's 5 per second per group, no minute limit of its own.
    assert (bot.rate_limit.per_second, bot.rate_limit.per_minute) == (5, 300)
    assert SECRET not in repr(config)


def test_app_bot_defaults_and_lark():
    config = load("""
        apps: [{name: a, app_id: cli_1, app_secret: s, domain: lark}]
        bots: [{name: b, app: a, chat_id: oc_1}]
        route: {bots: [b]}
    """)
    bot = config.bots["b"]
    assert bot.app.base_url == "https://open.larksuite.com"
    assert bot.update_in_place and bot.thread_replies == {"firing", "resolved"} and bot.urgent is None


def test_app_secret_file_and_base_url(tmp_path):
    (tmp_path / "secret").write_text(SECRET + "\n")
    config = load("""
        apps: [{name: a, app_id: cli_1, app_secret_file: secret, base_url: "http://127.0.0.1:9/"}]
        bots: [{name: b, app: a, chat_id: oc_1}]
        route: {bots: [b]}
    """, base_dir=tmp_path)
    assert config.apps["a"].app_secret.reveal() == SECRET
    assert config.apps["a"].base_url == "http://127.0.0.1:9"


@pytest.mark.parametrize("bot, expected", [
    ("{name: b, app: a, chat_id: oc_1, webhook_url: 'https://open.feishu.cn/open-apis/bot/v2/hook/x'}",
     "bots[0].webhook_url: a bot has webhook_url (a custom bot) or app (an app bot), not both"),
    ("{name: b, app: a}", "bots[0].chat_id: required for an app bot"),
    ("{name: b, chat_id: oc_1}", "bots[0].chat_id: only app bots have this: set app (and chat_id) instead of "
                                 "webhook_url"),
    ("{name: b, webhook_url: 'https://x.test/h', urgent: {users: [ou_1]}}", "bots[0].urgent: only app bots"),
    ("{name: b, app: nope, chat_id: oc_1}", "bots[0].app: unknown app 'nope' (configured apps: a)"),
    ("{name: b, app: a, chat_id: '5ad11d72'}", "bots[0].chat_id: '5ad11d72' is not a Feishu group chat_id"),
    ("{name: b, app: a, chat_id: oc_1, keywords: [x]}", "bots[0].keywords: app bots have no keywords"),
    ("{name: b, app: a, chat_id: oc_1, secret: x}", "bots[0].secret: app bots are not signed"),
    ("{name: b, app: a, chat_id: oc_1, thread_replies: [resolve]}",
     "bots[0].thread_replies[0]: expected one of firing, partly_resolved, resolved, got 'resolve'"),
    ("{name: b, app: a, chat_id: oc_1, urgent: {kind: call, users: [ou_1]}}",
     "bots[0].urgent.kind: expected one of app, sms, phone"),
    ("{name: b, app: a, chat_id: oc_1, urgent: {matchers: ['severity=\"critical\"']}}",
     "bots[0].urgent: names nobody to buzz: give users or mention_labels"),
    ("{name: b, app: a, chat_id: oc_1, urgent: {users: [carol]}}",
     "bots[0].urgent.users[0]: unknown user 'carol'"),
    ("{name: b, app: a, chat_id: oc_1, urgent: {users: [ou_1], matchers: ['severity~~critical']}}",
     "bots[0].urgent.matchers[0]"),
    ("{name: b, app: a, chat_id: oc_1, update_in_place: maybe}", "bots[0].update_in_place: expected true or false"),
    ("{name: b, app: a, chat_id: oc_1, rate_limit: {per_second: 6}}",
     "bots[0].rate_limit.per_second: Feishu allows at most 5 per second per chat for an app bot"),
    ("{name: b, webhook_url: 'https://x.test/h', mentions: {users: [mailonly]}}",
     "bots[0].mentions.users[0]: 'mailonly' has only an email in users:, and custom bots cannot mention by email"),
])
def test_app_bot_mistakes_name_the_key(bot, expected):
    found = problems(f"""
        apps: [{{name: a, app_id: cli_1, app_secret: s}}]
        bots: [{bot}]
        route: {{bots: [b]}}
        users: {{mailonly: {{email: m@example.com}}}}
    """)
    assert any(expected in p for p in found), found


@pytest.mark.parametrize("app, expected", [
    ("{name: a, app_id: cli_1}", "apps[0].app_secret: required (or app_secret_file)"),
    ("{name: a, app_secret: s}", "apps[0].app_id: required"),
    ("{name: a, app_id: a1b2c3, app_secret: s}", "apps[0].app_id: 'a1b2c3' is not a Feishu app id"),
    ("{name: a, app_id: cli_1, app_secret: s, domain: larksuite}", "apps[0].domain: expected one of feishu, lark"),
    ("{name: a, app_id: cli_1, app_secret: s, app_secret_file: f}", "apps[0].app_secret: set either app_secret"),
    ("{name: a, app_id: cli_1, app_secret: s, appsecret: s}", "apps[0].appsecret: unknown key"),
    ("{name: a, app_id: cli_1, app_secret: s, base_url: 'ftp://x'}", "apps[0].base_url: expected an http(s) URL"),
    ("{name: 'a b', app_id: cli_1, app_secret: s}", "apps[0].name: 'a b' is not a valid app name"),
])
def test_app_mistakes_name_the_key(app, expected):
    found = problems(f"apps: [{app}]\nbots: [{{name: b}}]\nroute: {{bots: [b]}}")
    assert any(expected in p for p in found), found


def test_a_wrong_app_secret_is_never_shown():
    found = problems("apps: [{name: a, app_id: wrong, app_secret: hush-123}]\nbots: [{name: b}]\n"
                     "route: {bots: [b]}")
    assert "hush-123" not in "\n".join(found)


def test_two_app_bots_of_one_app_may_share_a_chat():
    """The chat's 5/s is kept where requests are counted (the outbox's shared windows),
    so two bots (say, two teams' templates) need not be merged into one any more."""
    config = load("""
        apps: [{name: a, app_id: cli_1, app_secret: s}]
        bots: [{name: b, app: a, chat_id: oc_1}, {name: c, app: a, chat_id: oc_1}]
        route: {bots: [b, c]}
    """)
    assert config.bots["b"].chat_id == config.bots["c"].chat_id == "oc_1"


def test_an_apps_bots_are_not_throttled_to_a_share_of_its_limits():
    """Before, 20 bots of one app got 2/s and 50/min each, however quiet the others were;
    the app's 50/s and 1000/min are now counted over all of them at send time."""
    chats = [f"{{name: b{i}, app: a, chat_id: oc_{i}}}" for i in range(20)]
    config = load(f"""
        apps: [{{name: a, app_id: cli_1, app_secret: s}}]
        bots: [{', '.join(chats)}]
        route: {{bots: [b0]}}
    """)
    assert {(b.rate_limit.per_second, b.rate_limit.per_minute) for b in config.bots.values()} == {
        (APP_RATE_PER_SECOND, APP_RATE_PER_MINUTE)}


def test_an_app_bots_own_rate_limit_still_applies_and_is_checked_against_the_chats():
    config = load("""
        apps: [{name: a, app_id: cli_1, app_secret: s}]
        bots: [{name: b, app: a, chat_id: oc_1, rate_limit: {per_second: 2}}]
        route: {bots: [b]}
    """)
    assert (config.bots["b"].rate_limit.per_second, config.bots["b"].rate_limit.per_minute) == (2, 300)
    found = problems("""
        apps: [{name: a, app_id: cli_1, app_secret: s}]
        bots: [{name: b, app: a, chat_id: oc_1, rate_limit: {per_second: 6}}]
        route: {bots: [b]}
    """)
    assert any(p.startswith("bots[0].rate_limit.per_second: Feishu allows at most 5 per second per chat")
               for p in found), found


def test_users_may_be_emails_for_app_bots():
    config = load("""
        apps: [{name: a, app_id: cli_1, app_secret: s}]
        bots: [{name: b, app: a, chat_id: oc_1, mentions: {users: [alice, bob]}}]
        route: {bots: [b]}
        users: {alice: {email: alice@example.com}, bob: {open_id: ou_b0b, email: bob@example.com}}
    """)
    assert [(m.user_id, m.name, m.email) for m in config.bots["b"].mentions.users] == [
        ("", "alice", "alice@example.com"), ("ou_b0b", "bob", "bob@example.com")]
    assert config.users == {"bob": "ou_b0b"}
