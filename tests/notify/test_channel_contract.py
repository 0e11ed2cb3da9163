"""What every channel must do, run against each implementation (bridge/notify/__init__.py).

A channel sends once and says what happened: it never raises for anything the network
or the far end does, every reason is from the closed set, a message counts as sent only
when the far end said so, and no secret shows in a result or a log line. A new channel
(an app bot, a Lark variant, a DingTalk sibling) adds a Harness to HARNESSES and must
pass this file unchanged.

Each harness has a strict fake of its service (an accepting bot, a refusing one) and can
point the same bot at `far_end.FarEnd`, which breaks the way networks and proxies break.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, replace
from typing import Callable

import pytest

from bridge.config import App, Bot
from bridge.notify import REASONS, Channel, Outcome, SendResult
from bridge.notify.feishu import FeishuClient
from bridge.notify.feishu_app import AppClient
from bridge.notify.feishu_app.tokens import MemoryTokens
from bridge.notify.outcome import DETAIL_LIMIT
from bridge.secret import Secret, WebhookURL

from .far_end import FarEnd, closed_port_url, http

RETRY, PERMANENT, SENT = Outcome.RETRY, Outcome.PERMANENT, Outcome.SENT
LOGGER = "bridge.contract"          # the channel's injected logger, captured at DEBUG
READ_TIMEOUT = 0.5


@dataclass(frozen=True)
class Harness:
    channel: Channel
    accepted: Bot                       # a bot the fake service accepts this message from
    refused: Bot                        # the same bot with a wrong credential: refused for good
    message: dict
    received: Callable[[], list[dict]]  # what the fake service accepted, in order
    at: Callable[[str], Bot]            # the accepted bot, its far end at this base URL
    secrets: tuple[str, ...]            # every form of every secret: none may show
    # Bots whose settings the config accepts but that no request can be made with.
    unusable: dict[str, Bot]


# -- Feishu custom bots -----------------------------------------------------------------
TOKEN = "b6c2d9e4-77f1-4c3a-9e0d-5a1f2e3d4c5b"
SECRET = "Zk3pQ9sVw2Lx8Nr4Tt6Yh1Bm"
PROXY_USER, PROXY_PASSWORD = "relay", "pr0xy-Pa55-w0rd"
FEISHU_MESSAGE = {"msg_type": "text", "content": {"text": "[alert] disk full on node-1"}}
HOOK = f"/open-apis/bot/v2/hook/{TOKEN}"


def feishu(fake_feishu, *, via_proxy: bool) -> Harness:
    """The custom-bot client, straight to the fake or through an authenticated proxy.

    Through the proxy, the webhook URL names the real host over http, and the proxy (the
    fake Feishu, or the far end) gets the whole request; loopback_only proves nothing
    tries to reach the real host.
    """
    fake_feishu.add_bot(TOKEN, secret=SECRET, keywords=["alert"])

    def at(base_url: str, secret: str = SECRET) -> Bot:
        if via_proxy:
            host_port = base_url.removeprefix("http://")
            return Bot("ops", WebhookURL(f"http://open.feishu.cn{HOOK}"), Secret(secret),
                       proxy_url=Secret(f"http://{PROXY_USER}:{PROXY_PASSWORD}@{host_port}"),
                       connect_timeout=2, read_timeout=READ_TIMEOUT)
        return Bot("ops", WebhookURL(f"{base_url}{HOOK}"), Secret(secret),
                   connect_timeout=2, read_timeout=READ_TIMEOUT)

    credentials = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    unusable = {
        "a port over 65535": at("http://127.0.0.1:99999"),
        "a host name label over 63 characters": at(f"http://{'a' * 64}.example.com"),
        "a proxy password HTTP cannot carry (not Latin-1)": replace(
            at(fake_feishu.base_url), proxy_url=Secret(f"http://{PROXY_USER}:密码-{PROXY_PASSWORD}@127.0.0.1:9")),
    }
    return Harness(
        channel=FeishuClient(logger=logging.getLogger(LOGGER)),
        accepted=at(fake_feishu.base_url),
        refused=at(fake_feishu.base_url, secret="not-the-bot-s-secret"),
        message=FEISHU_MESSAGE,
        received=lambda: fake_feishu.received(TOKEN),
        at=at,
        secrets=(TOKEN, SECRET, PROXY_PASSWORD, credentials) if via_proxy else (TOKEN, SECRET, PROXY_PASSWORD),
        unusable=unusable,
    )


# -- Feishu app bots (the Open API) -------------------------------------------------------
APP_ID, APP_SECRET, CHAT = "cli_contract1", "Ap9-s3cret-Qw7xZ", "oc_contract1"
SEEDED = "t-seeded-0123456789abcdef"   # the token a far end is called with (no fetch: one request)


def feishu_app(fake_open_api) -> Harness:
    """The app client against the fake Open API; at a far end, with a token already kept
    (as another process would have), so that the message is the one request made."""
    fake_open_api.add_app(APP_ID, APP_SECRET)
    fake_open_api.add_chat(CHAT, apps=[APP_ID])
    tokens = MemoryTokens()

    def at(base_url: str, secret: str = APP_SECRET) -> Bot:
        tokens.keep_app_token(f"{base_url}|{APP_ID}", SEEDED, time.time() + 7200)
        app = App("oncall", APP_ID, Secret(secret), base_url_override=base_url)
        return Bot("ops", app=app, chat_id=CHAT, connect_timeout=2, read_timeout=READ_TIMEOUT)

    def received() -> list[dict]:
        return [{"msg_type": m.msg_type, "content": m.content} for m in fake_open_api.chat(CHAT)]

    unusable = {
        "a port over 65535": at("http://127.0.0.1:99999"),
        "a host name label over 63 characters": at(f"http://{'a' * 64}.example.com"),
        "a proxy password HTTP cannot carry (not Latin-1)": replace(
            at(fake_open_api.base_url), proxy_url=Secret(f"http://{PROXY_USER}:密码-{PROXY_PASSWORD}@127.0.0.1:9")),
    }
    return Harness(
        channel=AppClient(tokens, logger=logging.getLogger(LOGGER)),
        accepted=Bot("ops", app=App("oncall", APP_ID, Secret(APP_SECRET), base_url_override=fake_open_api.base_url),
                     chat_id=CHAT, connect_timeout=2, read_timeout=READ_TIMEOUT),
        refused=Bot("ops", app=App("oncall", APP_ID, Secret("not-the-app-secret"),
                                   base_url_override=fake_open_api.base_url), chat_id=CHAT),
        message=FEISHU_MESSAGE,
        received=received,
        at=at,
        secrets=(APP_SECRET, SEEDED, PROXY_PASSWORD, "not-the-app-secret"),
        unusable=unusable,
    )


# name -> a Harness, built from the fixtures it asks the request for.
HARNESSES: dict[str, Callable[[pytest.FixtureRequest], Harness]] = {
    "feishu": lambda request: feishu(request.getfixturevalue("fake_feishu"), via_proxy=False),
    "feishu via proxy": lambda request: feishu(request.getfixturevalue("fake_feishu"), via_proxy=True),
    "feishu app": lambda request: feishu_app(request.getfixturevalue("fake_open_api")),
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request, loopback_only, caplog) -> Harness:
    # Everything at INFO, the channel at DEBUG. urllib3 logs each request line, token
    # included, at DEBUG: the service's logging keeps it at WARNING (bridge/logs.py).
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return HARNESSES[request.param](request)


# -- the contract -----------------------------------------------------------------------
def send(harness: Harness, bot: Bot) -> SendResult:
    try:
        result = harness.channel.send(bot, harness.message)
    except Exception as exc:  # noqa: BLE001 (the contract is that nothing comes out)
        pytest.fail(f"the channel raised instead of answering with an outcome: {exc!r}")
    assert isinstance(result, SendResult), result
    assert result.reason in REASONS, result.reason
    assert result.advice, "a result says what to fix"
    assert len(result.detail) <= DETAIL_LIMIT, len(result.detail)
    if result.outcome is not SENT:
        assert result.message_id is None, "only a message the far end took has an id"
    return result


def assert_no_secret(harness: Harness, result: SendResult, caplog: pytest.LogCaptureFixture) -> None:
    shown = [repr(result), str(result), result.detail, result.advice,
             *(f"{r.getMessage()} {r.args!r} {vars(r)!r}" for r in caplog.records)]
    for secret in harness.secrets:
        for text in shown:
            assert secret not in text


def test_a_message_the_far_end_accepts_is_sent_once(harness, caplog):
    result = send(harness, harness.accepted)
    assert result.outcome is SENT
    assert harness.received() == [harness.message]
    assert caplog.records, "the channel logs what it did"
    assert_no_secret(harness, result, caplog)


def test_a_refusal_is_permanent_and_nothing_is_delivered(harness, caplog):
    result = send(harness, harness.refused)
    assert result.outcome is PERMANENT
    assert harness.received() == []
    assert_no_secret(harness, result, caplog)


# name -> (far end's behaviour, outcome). A RETRY where the message may have arrived is
# right: a lost alert is worse than a duplicate, and delivery bounds the attempts.
FAULTS = {
    "reset after the request": (("reset",), RETRY),
    "closed without an answer": (("close",), RETRY),
    "no answer within the read timeout": (("hang", 10), RETRY),
    "not HTTP at all": (("answer", b"SSH-2.0-OpenSSH_9.6\r\n"), RETRY),
    "a body cut short of its Content-Length": (
        ("answer", b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"code":0'), RETRY),
    "HTTP 500 with an HTML page": (("answer", http("500 Internal Server Error", b"<html>oops</html>")), RETRY),
    "HTTP 502 from a proxy": (("answer", http("502 Bad Gateway")), RETRY),
    "200 with an HTML page (a captive portal)": (("answer", http("200 OK", b"<html>log in</html>")), RETRY),
    "200 with an empty body": (("answer", http("200 OK")), RETRY),
    "200 with JSON that is not an object": (("answer", http("200 OK", b"[0]", "Content-Type: application/json")), RETRY),
    "200 with bytes that are not UTF-8": (
        ("answer", http("200 OK", b"\xff\xfe{\x00\xc3", "Content-Type: application/json")), RETRY),
    "200 with JSON nested too deep to parse": (("answer", http("200 OK", b"[" * 100_000)), RETRY),
    "200 with a megabyte of text": (("answer", http("200 OK", b"x" * 1_000_000)), RETRY),
    "an error page that echoes the request": (("echo", "400 Bad Request"), PERMANENT),
    "an error page that echoes the request's headers": (("echo_headers", "400 Bad Request"), PERMANENT),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_whatever_the_far_end_does_the_channel_answers_with_an_outcome(harness, caplog, fault):
    behaviour, outcome = FAULTS[fault]
    with FarEnd(behaviour) as far:
        started = time.monotonic()
        result = send(harness, harness.at(far.url))
        assert far.requests == 1, "sent once: retrying is delivery's business"
    assert result.outcome is outcome, result
    assert time.monotonic() - started < 5 * READ_TIMEOUT + 2
    assert_no_secret(harness, result, caplog)


def test_a_setting_no_request_can_be_made_with_is_permanent(harness, caplog):
    assert harness.unusable
    for setting, bot in harness.unusable.items():
        result = send(harness, bot)
        assert result.outcome is PERMANENT, (setting, result)
        assert_no_secret(harness, result, caplog)


def test_a_refused_connection_is_retried(harness, caplog):
    result = send(harness, harness.at(closed_port_url()))
    assert result.outcome is RETRY
    assert_no_secret(harness, result, caplog)


def test_the_wait_the_far_end_asks_for_comes_back(harness, caplog):
    with FarEnd(("answer", http("429 Too Many Requests", b"", "Retry-After: 2"))) as far:
        result = send(harness, harness.at(far.url))
    assert (result.outcome, result.retry_after) == (RETRY, 2.0)
    assert_no_secret(harness, result, caplog)


def test_a_redirect_is_not_followed(harness, caplog):
    """A followed redirect would carry the message, and its credentials, to another host."""
    with FarEnd(("answer", http("200 OK", b'{"code":0,"msg":"success"}'))) as elsewhere:
        redirect = http("307 Temporary Redirect", b"", f"Location: {elsewhere.url}/elsewhere")
        with FarEnd(("answer", redirect)) as far:
            result = send(harness, harness.at(far.url))
        assert (far.requests, elsewhere.requests) == (1, 0)
    assert result.outcome is not SENT
    assert_no_secret(harness, result, caplog)


def test_results_outside_the_closed_set_cannot_be_made():
    with pytest.raises(ValueError, match="not a send reason"):
        SendResult(RETRY, "something_new")
