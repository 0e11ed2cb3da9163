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
])
def test_single_mistakes(text: str, expected: str) -> None:
    assert expected in "\n".join(problems(text))


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
