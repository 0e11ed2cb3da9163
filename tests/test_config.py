"""Configuration: the public keys load into typed objects; every mistake is named by its key path."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bridge import config as cfg
from bridge.errors import ConfigError

ISSUE_EXAMPLE = """
bots:
  - name: ops
    webhook_url: ${FEISHU_OPS_WEBHOOK}
    secret: ${FEISHU_OPS_SECRET}
    keywords: ["告警"]
    template: default
  - name: db
    webhook_url_file: db-url
    secret_file: db-secret
  - name: oncall
route:
  bots: [ops]
  routes:
    - matchers: ['team="db"']
      bots: [db]
    - matchers: ['severity=~"critical|page"', 'env!="staging"']
      bots: [oncall]
      continue: true
      routes: []
timezone: Asia/Shanghai
"""

ENV = {"FEISHU_OPS_WEBHOOK": "https://open.feishu.cn/open-apis/bot/v2/hook/tok-ops-123",
       "FEISHU_OPS_SECRET": "s3cr3t-ops"}


def problems(text: str, env: dict | None = None, base_dir: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfg.loads(textwrap.dedent(text), env=env or {}, base_dir=base_dir)
    return info.value.problems


def test_the_documented_example_loads(tmp_path: Path) -> None:
    (tmp_path / "db-url").write_text("https://open.larksuite.com/open-apis/bot/v2/hook/tok-db-456\n")
    (tmp_path / "db-secret").write_text("s3cr3t-db\n")
    config = cfg.loads(ISSUE_EXAMPLE, env=ENV, base_dir=tmp_path)

    ops, db, oncall = config.bots.values()
    assert ops.webhook_url.reveal() == ENV["FEISHU_OPS_WEBHOOK"]
    assert ops.secret.reveal() == "s3cr3t-ops" and ops.keywords == ("告警",) and ops.sends
    assert db.webhook_url.reveal().endswith("tok-db-456") and db.secret.reveal() == "s3cr3t-db"
    assert not oncall.sends  # no webhook URL: a dry-run bot
    assert config.route.bots == ("ops",)
    second = config.route.routes[1]
    assert second.continue_ and second.bots == ("oncall",) and len(second.matchers) == 2
    assert str(config.timezone) == "Asia/Shanghai"
    # Secrets never print.
    assert "tok-ops-123" not in repr(config) and "s3cr3t" not in repr(config)


def test_children_inherit_the_parents_bots() -> None:
    config = cfg.loads("""
bots: [{name: a}, {name: b}]
route:
  bots: [a]
  routes:
    - matchers: ['x="1"']
      routes:
        - matchers: ['y="2"']
          bots: [b]
""", env={})
    child = config.route.routes[0]
    assert child.bots == ("a",) and child.routes[0].bots == ("b",)


@pytest.mark.parametrize("value,env,expected", [
    ("${A}", {"A": "x"}, "x"),
    ("${A:-dflt}", {}, "dflt"),
    ("${A:-dflt}", {"A": ""}, "dflt"),
    ("x${A}", {"A": ""}, "x"),
    ("pre-${A}-${B:-b}", {"A": "a"}, "pre-a-b"),
    ("cost $$5", {}, "cost $5"),
])
def test_environment_expansion(value: str, env: dict, expected: str) -> None:
    config = cfg.loads(f"bots: [{{name: a, keywords: ['{value}']}}]\nroute: {{bots: [a]}}", env=env)
    assert config.bots["a"].keywords == (expected,)


def test_unset_variable_is_named_with_its_key_path() -> None:
    assert problems("bots: [{name: a, webhook_url: '${NOPE}'}]\nroute: {bots: [a]}") == [
        "bots[0].webhook_url: environment variable NOPE is not set (use ${NOPE:-default} for a default)"]


def test_every_problem_is_reported_at_once_with_its_key_path(tmp_path: Path) -> None:
    found = problems("""
        bots:
          - name: ops
            webhook_url: ftp://example.com/hook/tok-should-not-leak
            colour: red
          - name: ops
          - name: db
            secret_file: missing-file
            template: fancy
        route:
          bots: [ops]
          routes:
            - matchers: ['team="db"']
              bots: [dba]
            - matchers: ['severity=~"critical|page"', 'env!=staging"', 'x=~"("']
              bots: [ops]
              continu: true
        timezone: Mars/Olympus
        extra: 1
        """, base_dir=tmp_path)
    text = "\n".join(found)
    for expected in [
        "extra: unknown key",
        "bots[0].webhook_url: expected an http(s) URL",
        "bots[0].colour: unknown key",
        "bots[1].name: duplicate bot name 'ops' (also bots[0])",
        "bots[2].secret_file: cannot read missing-file",
        "bots[2].template: unknown template 'fancy'",
        "route.routes[0].bots[0]: unknown bot 'dba'",
        "route.routes[1].matchers[1]:",
        "route.routes[1].matchers[2]:",
        "route.routes[1].continu: unknown key (did you mean 'continue'?)",
        "timezone: unknown time zone 'Mars/Olympus'",
    ]:
        assert expected in text, f"missing {expected!r} in:\n{text}"
    assert "tok-should-not-leak" not in text


@pytest.mark.parametrize("text,expected", [
    ("", "the config file is empty"),
    ("bots: []\nroute: {bots: [a]}", "bots: expected a non-empty list"),
    ("bots: [{name: a}]", "route: required"),
    ("bots: [{name: a}]\nroute: {}", "route.bots: required on the root route"),
    ("bots: [{name: a}]\nroute: {bots: [a], matchers: ['x=1']}", "route.matchers: not allowed on the root route"),
    ("bots: [{webhook_url: 'https://x/y'}]\nroute: {bots: [a]}", "bots[0].name: required"),
    ("bots: [{name: 'a b'}]\nroute: {bots: [a]}", "bots[0].name: 'a b' is not a valid bot name"),
    ("bots: [{name: a, webhook_url: x, webhook_url_file: y}]\nroute: {bots: [a]}",
     "bots[0].webhook_url: set either webhook_url or webhook_url_file, not both"),
    ("bots: [{name: a, read_timeout: soon}]\nroute: {bots: [a]}", "bots[0].read_timeout: expected a positive duration"),
    ("bots: [{name: a, dry_run: maybe}]\nroute: {bots: [a]}", "bots[0].dry_run: expected true or false"),
    ("bots: [{name: a}]\nroute: {bots: [a], routes: {bots: [a]}}", "route.routes: expected a list of routes"),
    ("bots: [{name: a}]\nroute: {bots: [a]}\nserver: {max_body_bytes: lots}", "server.max_body_bytes: expected a size"),
    ("bots: [{name: a}\nroute: {bots: [a]}", "invalid YAML"),
    ("bots: [{name: a, keywords: [a,b,c,d,e,f,g,h,i,j,k]}]\nroute: {bots: [a]}", "at most 10 keywords"),
    # A port no request could use: named at start-up, not a traceback when first masked or sent to.
    ("bots: [{name: a, webhook_url: 'https://open.feishu.cn:99999/open-apis/bot/v2/hook/tok-x'}]\n"
     "route: {bots: [a]}", "bots[0].webhook_url: expected an http(s) URL with a host, got 'https://open.feishu.cn:99999/open-apis/bot/v2/hook/tok-…'"),
    ("bots: [{name: a, webhook_url: 'https://open.feishu.cn:0/open-apis/bot/v2/hook/tok-x'}]\nroute: {bots: [a]}",
     "bots[0].webhook_url: expected an http(s) URL"),
])
def test_single_mistakes(text: str, expected: str) -> None:
    assert expected in "\n".join(problems(text))


def test_a_bot_with_an_invalid_name_still_has_its_other_problems_named() -> None:
    found = "\n".join(problems("bots: [{name: 'a b', read_timeout: soon, rate_limit: {per_second: 0}}]\n"
                               "route: {bots: [c]}"))
    assert "bots[0].name: 'a b' is not a valid bot name" in found
    assert "bots[0].read_timeout: expected a positive duration" in found
    assert "bots[0].rate_limit.per_second" in found


def test_durations_and_sizes() -> None:
    config = cfg.loads("""
bots: [{name: a, connect_timeout: 500ms, read_timeout: 1m30s}]
route: {bots: [a]}
server: {max_body_bytes: 2MiB}
""", env={})
    assert config.bots["a"].connect_timeout == 0.5 and config.bots["a"].read_timeout == 90
    assert config.server.max_body_bytes == 2 * 1024 * 1024


def test_embedded_default_runs_dry_and_sends_once_the_url_is_set() -> None:
    dry = cfg.load(None, env={})
    assert [b.sends for b in dry.bots.values()] == [False]
    live = cfg.load(None, env={"FEISHU_WEBHOOK_URL": "https://open.feishu.cn/open-apis/bot/v2/hook/t",
                               "FEISHU_SECRET": "s"})
    bot = next(iter(live.bots.values()))
    assert bot.sends and bot.secret.reveal() == "s"


def test_cli_exits_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("bots: [{name: a, webhook_url: 'ftp://h/hook/tok-secret-9'}]\nroute: {bots: [b]}\nfoo: 1\n")
    run = subprocess.run([sys.executable, "-m", "bridge", "check-config", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "Traceback" not in run.stderr and "tok-secret-9" not in run.stderr + run.stdout
    assert "foo: unknown key" in run.stderr
    assert "bots[0].webhook_url:" in run.stderr
    assert "route.bots[0]: unknown bot 'b'" in run.stderr


def test_serve_refuses_a_bad_config_before_starting(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("bots: [{name: a}]\nroute: {bots: [a], routes: [{matchers: ['x=~\"(\"'], bots: [a]}]}\n")
    run = subprocess.run([sys.executable, "-m", "bridge", "serve", "--config", str(path), "--port", "1"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "route.routes[0].matchers[0]:" in run.stderr and "Traceback" not in run.stderr


# --- users, mentions, send_resolved, per-bot timezone, preview --------------------------------

MENTIONS_EXAMPLE = """
users:
  alice: ou_7d8a6e6df7621556ce0d21922b676706ccs
  bob: {open_id: ou_18eac8}
  张三: ${ZHANG_SAN_OPEN_ID}
bots:
  - name: ops
    timezone: Europe/Berlin
    mentions: {all: true, matchers: ['severity="critical"']}
    mention_labels: [owner, oncall]
    mention_on: [firing, resolved]
    send_resolved: false
  - name: db
route:
  bots: [ops]
  mentions: {users: [alice, ou_xyz, 张三]}
  routes:
    - matchers: ['team="db"']
      bots: [db]
      send_resolved: false
      routes:
        - {matchers: ['severity="page"'], mentions: {}}
preview: {enabled: false}
timezone: Asia/Shanghai
"""


def test_mention_keys_load_into_typed_settings() -> None:
    from bridge.model import Mention

    config = cfg.loads(MENTIONS_EXAMPLE, env={"ZHANG_SAN_OPEN_ID": "ou_zs1"})
    assert config.users == {"alice": "ou_7d8a6e6df7621556ce0d21922b676706ccs", "bob": "ou_18eac8",
                            "张三": "ou_zs1"}
    ops, db = config.bots["ops"], config.bots["db"]
    assert str(ops.timezone) == "Europe/Berlin" and db.timezone is None and str(config.timezone) == "Asia/Shanghai"
    assert ops.mentions.all and ops.mentions.users == () and [str(m) for m in ops.mentions.matchers] == [
        'severity="critical"']
    assert ops.mention_labels == ("owner", "oncall") and ops.mention_on == {"firing", "resolved"}
    assert not ops.send_resolved
    # Defaults: nobody pinged, mention on firing only, resolved alerts sent.
    assert not db.mentions.all and db.mentions.users == () and db.mention_labels == ()
    assert db.mention_on == {"firing"} and db.send_resolved
    root = config.route
    assert root.mentions.users == (Mention("ou_7d8a6e6df7621556ce0d21922b676706ccs", "alice"), Mention("ou_xyz"),
                                   Mention("ou_zs1", "张三"))
    assert root.send_resolved and root.mention_on == {"firing"}
    child = root.routes[0]
    assert child.mentions == root.mentions and not child.send_resolved   # inherited / set
    grandchild = child.routes[0]
    assert grandchild.mentions.users == () and not grandchild.send_resolved  # cleared / inherited
    assert not config.preview.enabled


def test_defaults_without_the_new_keys() -> None:
    config = cfg.loads("bots: [{name: a}]\nroute: {bots: [a]}", env={})
    assert config.users == {} and config.preview.enabled and str(config.timezone) == "UTC"
    assert config.bots["a"].timezone is None


@pytest.mark.parametrize("users,expected", [
    ("users: [alice]", "users: expected a mapping of names to open_ids, got a list"),
    ("users: {alice: alice@example.com}", "users.alice: 'alice@example.com' is not a Feishu open_id "
                                          "(ou_ then letters and digits): custom bots cannot mention by email"),
    ("users: {alice: on_123abc}", "users.alice: 'on_123abc' is not a Feishu open_id (ou_ then letters and digits): "
                                  "that is a union_id, custom bots need the open_id"),
    ("users: {alice: ' ou_123'}", "users.alice: ' ou_123' is not a Feishu open_id (ou_ then letters and digits): "
                                  "remove the spaces"),
    ("users: {alice: ou_}", "users.alice: 'ou_' is not a Feishu open_id"),
    ("users: {alice: ou_12-34}", "users.alice: 'ou_12-34' is not a Feishu open_id"),
    ("users: {alice: 12345}", "users.alice: '12345' is not a Feishu open_id"),
    ("users: {bob: {open_id: u_1}}", "users.bob.open_id: 'u_1' is not a Feishu open_id"),
    ("users: {bob: {}}", "users.bob.open_id: required"),
    ("users: {bob: {open_id: ou_1, email: b@x}}", "users.bob.email: 'b@x' is not an email address"),
    ("users: {bob: {open_id: ou_1, mail: b@x.io}}", "users.bob.mail: unknown key (did you mean 'email'?)"),
    ("users: {'a b': ou_1}", "users.a b: 'a b' is not usable as a name"),
    ("users: {'a,b': ou_1}", "users.a,b: 'a,b' is not usable as a name"),
    ("users: {'@bob': ou_1}", "users.@bob: '@bob' is not usable as a name"),
    ("users: {ou_1: ou_1}", "users.ou_1: 'ou_1' is not usable as a name"),
])
def test_users_directory_mistakes(users: str, expected: str) -> None:
    assert expected in "\n".join(problems(f"bots: [{{name: a}}]\nroute: {{bots: [a]}}\n{users}"))


@pytest.mark.parametrize("setting,expected", [
    ("mentions: {users: [alice, bobby]}",
     "{where}.mentions.users[1]: unknown user 'bobby': not an open_id (ou_...) and not a name in users: "
     "(did you mean 'bob'?)"),
    ("mentions: {users: [all]}", "{where}.mentions.users[0]: unknown user 'all': not an open_id (ou_...) and not "
                                 "a name in users:; to mention everyone, use all: true"),
    ("mentions: {users: [bob@example.com]}", "{where}.mentions.users[0]: unknown user 'bob@example.com': not an "
                                             "open_id (ou_...) and not a name in users:; custom bots cannot "
                                             "mention by email"),
    ("mentions: {users: [ou_bad.id]}", "{where}.mentions.users[0]: 'ou_bad.id' is not a Feishu open_id"),
    ("mentions: {users: [{a: 1}, nobody]}", "{where}.mentions.users[1]: unknown user 'nobody'"),
    ("mentions: {all: yes please}", "{where}.mentions.all: expected true or false"),
    ("mentions: {everyone: true}", "{where}.mentions.everyone: unknown key"),
    ("mentions: [alice]", "{where}.mentions: expected a mapping, got a list"),
    ("mentions: {matchers: ['x=~\"(\"']}", "{where}.mentions.matchers[0]: invalid regex"),
    ("mention_labels: [owner, '']", "{where}.mention_labels[1]: expected a label or annotation name"),
    ("mention_labels: owner", "{where}.mention_labels: expected a list, got a string"),
    ("mention_on: [firing, pending]", "{where}.mention_on[1]: expected one of firing, resolved, got 'pending'"),
    ("send_resolved: sometimes", "{where}.send_resolved: expected true or false"),
])
@pytest.mark.parametrize("where", ["bots[0]", "route", "route.routes[0].routes[1]"])
def test_mention_settings_mistakes_name_their_key_path(setting: str, expected: str, where: str) -> None:
    extra = ", " + setting
    bot, root, leaf = {"bots[0]": (extra, "", ""), "route": ("", extra, ""),
                       "route.routes[0].routes[1]": ("", "", extra)}[where]
    text = f"""
users: {{alice: ou_a1, bob: ou_b2}}
bots: [{{name: a{bot}}}]
route: {{bots: [a]{root}, routes: [{{matchers: ['x="1"'], routes: [{{}}, {{matchers: ['y="2"']{leaf}}}]}}]}}
"""
    assert expected.format(where=where) in "\n".join(problems(text))


def test_a_broken_users_entry_is_reported_once_not_again_where_it_is_used() -> None:
    found = problems("""
        users: {alice: alice@example.com}
        bots: [{name: a, mentions: {users: [alice]}}]
        route: {bots: [a]}
        """)
    assert len(found) == 1 and found[0].startswith("users.alice:")


def test_matcher_errors_name_the_items_real_position() -> None:
    found = problems("bots: [{name: a}]\nroute: {bots: [a], routes: [{matchers: [{x: 1}, 'y=~\"(\"'], bots: [a]}]}")
    assert [p.split(":")[0] for p in found] == ["route.routes[0].matchers[0]", "route.routes[0].matchers[1]"]


@pytest.mark.parametrize("text,expected", [
    ("bots: [{name: a, timezone: Mars/Olympus}]\nroute: {bots: [a]}",
     "bots[0].timezone: unknown time zone 'Mars/Olympus' (use an IANA name like Asia/Shanghai or UTC)"),
    ("bots: [{name: a, timezone: '+08:00'}]\nroute: {bots: [a]}", "bots[0].timezone: unknown time zone '+08:00'"),
    ("bots: [{name: a, timezone: Asia}]\nroute: {bots: [a]}", "bots[0].timezone: unknown time zone 'Asia'"),
    ("bots: [{name: a, timezone: ''}]\nroute: {bots: [a]}", "bots[0].timezone: is empty"),
    ("bots: [{name: a}]\nroute: {bots: [a]}\ntimezone: ''", "timezone: is empty"),
    ("bots: [{name: a}]\nroute: {bots: [a]}\ntimezone: '${TZ_NAME}'", "timezone: environment variable TZ_NAME"),
    ("bots: [{name: 'a b', timezone: Nowhere}]\nroute: {bots: [a]}", "bots[0].timezone: unknown time zone"),
    ("bots: [{name: a}]\nroute: {bots: [a]}\npreview: {enabled: maybe}", "preview.enabled: expected true or false"),
    ("bots: [{name: a}]\nroute: {bots: [a]}\npreview: {enable: false}",
     "preview.enable: unknown key (did you mean 'enabled'?)"),
])
def test_timezone_and_preview_mistakes(text: str, expected: str) -> None:
    assert expected in "\n".join(problems(text))


def test_example_config_documents_every_new_key() -> None:
    example = cfg.EMBEDDED_DEFAULT.read_text(encoding="utf-8")
    for key in ("users:", "preview:", "mentions:", "mention_labels:", "mention_on:", "send_resolved:",
                "timezone"):
        assert key in example, key
