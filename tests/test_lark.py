"""Lark (open.larksuite.com) bots work exactly like Feishu (open.feishu.cn) ones.

Lark serves the same path and protocol (protocols.md A.1, D.7), so the same config
keys, signature and keyword handling must apply, and the host must change nothing.

How this stays on loopback: each bot's webhook URL names the real host
(`http://open.larksuite.com/open-apis/bot/v2/hook/<token>`), and its `proxy_url` is the
fake Feishu on 127.0.0.1. For an http:// URL, requests sends the whole request to the
proxy with the absolute URL in the request line and the real host in `Host:`, and never
resolves the target itself; the fake serves such proxied requests as the real endpoint
(it records `proxied`). So the bridge's config, signing and sending code run unchanged
with the real host name in the URL. A guard on socket.getaddrinfo fails the test if
anything tries to resolve or connect to a non-loopback name. The scheme is http, not
https: with https the client would tunnel (CONNECT) and need a certificate for the real
host; TLS is requests' business and is the same for both hosts.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge import cli
from bridge import config as cfg
from bridge.notify import Outcome
from bridge.notify.feishu import FeishuClient
from bridge.notify.outcome import BAD_SIGNATURE, KEYWORD_MISSING, OK
from support import LOOPBACK

HOSTS = {"feishu": "open.feishu.cn", "lark": "open.larksuite.com"}
SECRET = "lark-sign-secret-4f1a"
KEYWORD = "告警"


def write_config(tmp_path: Path, fake, tokens: dict[str, str]) -> Path:
    """One bot per host, identical but for the host of its webhook URL."""
    bots = "".join(textwrap.dedent(f"""
        - name: {name}
          webhook_url: http://{HOSTS[name]}/open-apis/bot/v2/hook/{token}
          secret: {SECRET}
          keywords: ["{KEYWORD}"]
          proxy_url: {fake.base_url}
        """) for name, token in tokens.items())
    path = tmp_path / "config.yaml"
    path.write_text(f"bots:{textwrap.indent(bots, '  ')}\nroute: {{bots: [{', '.join(tokens)}]}}\n"
                    f"storage: {{path: {tmp_path / 'outbox.db'}}}\n", encoding="utf-8")
    return path


def test_a_lark_webhook_url_is_accepted_like_a_feishu_one() -> None:
    config = cfg.loads(textwrap.dedent("""
        bots:
          - {name: feishu, webhook_url: 'https://open.feishu.cn/open-apis/bot/v2/hook/tok-f-1', secret: s}
          - {name: lark, webhook_url: 'https://open.larksuite.com/open-apis/bot/v2/hook/tok-l-2', secret: s}
        route: {bots: [feishu, lark]}
        """), env={})
    feishu, lark = config.bots["feishu"], config.bots["lark"]
    assert lark.sends and feishu.sends
    assert lark.webhook_url.reveal() == "https://open.larksuite.com/open-apis/bot/v2/hook/tok-l-2"
    assert "open.larksuite.com" in str(lark.webhook_url) and "tok-l-2" not in str(lark.webhook_url)
    fields = ("secret", "keywords", "template", "dry_run", "proxy_url", "rate_limit", "connect_timeout")
    assert all(getattr(feishu, f) == getattr(lark, f) for f in fields)


def test_send_test_delivers_the_same_signed_keyworded_card_to_lark_and_feishu(
        tmp_path: Path, fake_feishu, loopback_only: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    tokens = {"feishu": "tok-feishu-7c1d", "lark": "tok-lark-2b9e"}
    for name, token in tokens.items():
        # The fake checks the signature and the keyword as Feishu does (A.8).
        fake_feishu.add_bot(token, secret=SECRET, keywords=[KEYWORD], lark=name == "lark")
    path = write_config(tmp_path, fake_feishu, tokens)

    for name in tokens:
        assert cli.main(["send-test", "--config", str(path), "--bot", name]) == 0, capsys.readouterr().err

    lark, feishu = (fake_feishu.attempts(tokens[n]) for n in ("lark", "feishu"))
    assert [a.why for a in lark] == ["accepted"] and [a.why for a in feishu] == ["accepted"]
    assert lark[0].proxied and lark[0].headers["Host"] == "open.larksuite.com"
    assert feishu[0].headers["Host"] == "open.feishu.cn"
    assert "timestamp" in lark[0].body and "sign" in lark[0].body
    assert fake_feishu.received(tokens["lark"]) == fake_feishu.received(tokens["feishu"])
    assert loopback_only and set(loopback_only) <= LOOPBACK   # the guard saw the connection


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("fake_secret,fake_keywords,outcome,reason", [
    (SECRET, [KEYWORD], Outcome.SENT, OK),
    ("another-secret", [KEYWORD], Outcome.PERMANENT, BAD_SIGNATURE),
    (SECRET, ["a keyword the bot does not know"], Outcome.PERMANENT, KEYWORD_MISSING),
])
def test_signature_and_keyword_answers_are_the_same_on_both_hosts(
        tmp_path: Path, fake_feishu, loopback_only: list[str], host: str, fake_secret: str,
        fake_keywords: list[str], outcome: Outcome, reason: str) -> None:
    token = f"tok-{host}-{reason}"
    fake_feishu.add_bot(token, secret=fake_secret, keywords=fake_keywords, lark=host == "lark")
    bot = cfg.load(write_config(tmp_path, fake_feishu, {host: token})).bots[host]
    message = {"msg_type": "text", "content": {"text": f"{KEYWORD} disk full on db-1"}}

    result = FeishuClient().send(bot, message)

    assert (result.outcome, result.reason) == (outcome, reason)
    assert fake_feishu.attempts(token)[0].headers["Host"] == HOSTS[host]
    assert loopback_only and set(loopback_only) <= LOOPBACK   # the guard saw the connection
