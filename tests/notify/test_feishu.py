"""The Feishu custom-bot channel: signing, classifying answers, and sending to the strict fake_feishu.

What every channel must do is in test_channel_contract.py; this is what is Feishu's own."""

from __future__ import annotations

import json
import logging
import time

import pytest
import requests
from requests.structures import CaseInsensitiveDict

import bridge
from bridge.config import Bot
from bridge.limits import BODY_LIMIT_BYTES, SIGNATURE_OVERHEAD
from bridge.notify import REASONS, Outcome, SendResult
from bridge.notify.feishu import FeishuClient, answers
from bridge.notify.feishu.answers import classify
from bridge.notify.feishu.sign import encode_body, sign, signed_body
from bridge.secret import Secret, WebhookURL
from fake_feishu import (
    BAD_REQUEST,
    FREQUENCY_LIMITED,
    INVALID_AT,
    IP_NOT_ALLOWED,
    KEYWORDS_NOT_FOUND,
    SIGN_FAILED,
    SIZE_LIMIT,
    SUCCESS,
    TOKEN_INVALID,
    TOO_MANY_REQUEST,
    FakeFeishu,
)

RETRY, PERMANENT, SENT = Outcome.RETRY, Outcome.PERMANENT, Outcome.SENT
# Every test here talks to the fake on loopback: no proxy from the environment.
pytestmark = pytest.mark.usefixtures("no_proxy_env")
TOKEN = "b6c2d9e4-77f1-4c3a-9e0d-5a1f2e3d4c5b"
SECRET = "Zk3pQ9sVw2Lx8Nr4Tt6Yh1Bm"
ALERT = {"msg_type": "text", "content": {"text": "[alert] disk full on node-1"}}


def bot_for(url: str, secret: str | None = SECRET, **kwargs) -> Bot:
    return Bot("ops", WebhookURL(url), Secret(secret) if secret else None, **kwargs)


# -- signing --------------------------------------------------------------------------------
def test_sign_matches_the_guide_test_vector():
    assert sign("demo", 1599360473) == "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="


def test_signed_body_adds_string_timestamp_and_sign_without_touching_the_message():
    message = {"msg_type": "text", "content": {"text": "hi"}}
    before = json.dumps(message)
    body = signed_body(message, bot_for("http://x.test/hook/t", secret="demo"), 1599360473.9)

    assert json.loads(body) == {**message, "timestamp": "1599360473",
                                "sign": "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="}
    assert json.dumps(message) == before
    assert len(body) - len(encode_body(message)) <= SIGNATURE_OVERHEAD


def test_unsigned_body_is_the_encoded_message():
    message = {"msg_type": "text", "content": {"text": "告警 \"quoted\""}}
    assert signed_body(message, bot_for("http://x.test/hook/t", secret=None), 1e9) == encode_body(message)


# -- classification ---------------------------------------------------------------------------
OLD_SUCCESS = {"Extra": None, "StatusCode": 0, "StatusMessage": "success"}

CLASSIFY = [
    # (http status, body, outcome, reason)
    (200, SUCCESS, SENT, "ok"),
    (200, OLD_SUCCESS, SENT, "ok"),
    (200, TOKEN_INVALID, PERMANENT, "bad_token"),
    (200, SIGN_FAILED, PERMANENT, "bad_signature"),
    (200, IP_NOT_ALLOWED, PERMANENT, "ip_not_allowed"),
    (200, KEYWORDS_NOT_FOUND, PERMANENT, "keyword_missing"),
    (200, SIZE_LIMIT, PERMANENT, "too_large"),
    (200, INVALID_AT, PERMANENT, "bad_mention"),
    (200, {"code": 19002, "msg": "param invalid", "data": {}}, PERMANENT, "bad_request"),
    (400, BAD_REQUEST, PERMANENT, "bad_request"),
    (200, BAD_REQUEST, PERMANENT, "bad_request"),
    (400, TOO_MANY_REQUEST, RETRY, "rate_limited"),
    (200, TOO_MANY_REQUEST, RETRY, "rate_limited"),
    (200, FREQUENCY_LIMITED, RETRY, "rate_limited"),
    (429, {"code": 99991400, "msg": "request trigger frequency limit"}, RETRY, "rate_limited"),
    (429, "", RETRY, "http_429"),
    (429, {"code": 12345, "msg": "?"}, RETRY, "http_429"),
    (500, "<html>500 Internal Server Error</html>", RETRY, "server_error"),
    (502, None, RETRY, "server_error"),
    (503, {"code": 12345, "msg": "busy"}, RETRY, "server_error"),
    (500, SUCCESS, RETRY, "server_error"),
    (404, "404 page not found", PERMANENT, "client_error"),
    (400, {"code": 12345, "msg": "?"}, PERMANENT, "client_error"),
    (401, {}, PERMANENT, "client_error"),
    (200, {"code": 12345, "msg": "new refusal"}, PERMANENT, "unexpected_answer"),
    (200, {"StatusCode": 12345, "StatusMessage": "old refusal"}, PERMANENT, "unexpected_answer"),
    (200, "<html>captive portal</html>", RETRY, "unexpected_answer"),
    (200, "", RETRY, "unexpected_answer"),
    (200, {}, RETRY, "unexpected_answer"),
    (200, [SUCCESS], RETRY, "unexpected_answer"),
    (200, {"code": "0", "msg": "success"}, RETRY, "unexpected_answer"),
    (302, "", PERMANENT, "unexpected_answer"),
]


@pytest.mark.parametrize("status, body, outcome, reason", CLASSIFY,
                         ids=[f"{s}-{json.dumps(b)[:40]}" for s, b, _, _ in CLASSIFY])
def test_classify(status, body, outcome, reason):
    result = classify(status, body, {})
    assert (result.outcome, result.reason) == (outcome, reason)
    assert result.reason in REASONS
    assert result.http_status == status
    if isinstance(body, dict) and isinstance(body.get("code"), int):
        assert (result.code, result.detail) == (body["code"], body["msg"])


@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "3"}, 3.0),
    ({"retry-after": "0.5"}, 0.5),
    ({"x-ogw-ratelimit-reset": "7"}, 7.0),
    ({"X-Ogw-Ratelimit-Reset": "7", "Retry-After": "2"}, 2.0),
    (CaseInsensitiveDict({"RETRY-AFTER": "4"}), 4.0),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
    ({"Retry-After": "-1"}, None),
    ({}, None),
])
def test_retry_after_comes_from_headers(headers, expected):
    assert classify(429, "", headers).retry_after == expected


@pytest.mark.parametrize("reason, words", [
    ("bad_signature", ["secret", "clock"]),
    ("bad_token", ["webhook_url"]),
    ("keyword_missing", ["keyword"]),
    ("ip_not_allowed", ["IP", "allow-list"]),
    ("too_large", ["size"]),
    ("rate_limited", ["rate"]),
    ("bad_mention", ["open_id"]),
])
def test_advice_says_what_to_fix_in_the_custom_bot_s_settings(reason, words):
    advice = answers.result(PERMANENT, reason).advice
    assert all(word in advice for word in words)


def test_every_answer_carries_feishu_s_advice_not_the_generic_one():
    for status, body, _, reason in CLASSIFY:
        assert classify(status, body, {}).advice == answers.ADVICE[reason]
    assert answers.ADVICE["bad_token"] != SendResult(PERMANENT, "bad_token").advice


# -- sending to the fake_feishu ------------------------------------------------------------------------
def test_send_delivers_a_signed_json_message(fake_feishu):
    url = fake_feishu.add_bot(TOKEN, secret=SECRET, keywords=["alert"])
    client = FeishuClient(clock=TwoMinutesSlow())  # signed at send time, by this clock

    result = client.send(bot_for(url), ALERT)

    assert (result.outcome, result.reason, result.code, result.http_status) == (SENT, "ok", 0, 200)
    assert result.message_id is None  # a custom bot's answer names no message
    assert fake_feishu.received(TOKEN) == [ALERT]
    attempt = fake_feishu.attempts(TOKEN)[0]
    assert attempt.headers["Content-Type"] == "application/json; charset=utf-8"
    assert attempt.headers["User-Agent"] == f"feishu-alert-bridge/{bridge.__version__}"
    assert abs(int(attempt.body["timestamp"]) - (time.time() - 120)) < 5


class TwoMinutesSlow:
    def now(self) -> float:
        return time.time() - 120

    def monotonic(self) -> float:
        return time.monotonic()


def test_the_client_logs_to_the_logger_it_is_given(fake_feishu, caplog):
    url = fake_feishu.add_bot(TOKEN, secret=SECRET)
    caplog.set_level(logging.DEBUG, logger="tests.feishu")
    FeishuClient(logger=logging.getLogger("tests.feishu")).send(bot_for(url), ALERT)
    lines = [r.getMessage() for r in caplog.records if r.name == "tests.feishu"]
    assert len(lines) == 1 and "bot=ops" in lines[0] and "outcome=sent" in lines[0], lines
    assert TOKEN not in lines[0]


def _oversized() -> dict:
    return {"msg_type": "text", "content": {"text": "alert " + "x" * BODY_LIMIT_BYTES}}


# (what the fake_feishu's bot is, what the client's bot is, message, fake_feishu clock offset) -> expected
REFUSALS = {
    "wrong secret": (dict(secret="fake_feishu-side-secret"), {}, ALERT, 0, "bad_signature", 19021),
    "stale timestamp": (dict(secret=SECRET), {}, ALERT, 3601, "bad_signature", 19021),
    "timestamp from the future": (dict(secret=SECRET), {}, ALERT, -3601, "bad_signature", 19021),
    "unsigned for a signing bot": (dict(secret=SECRET), dict(secret=None), ALERT, 0, "bad_signature", 19021),
    "missing keyword": (dict(keywords=["告警"]), {}, ALERT, 0, "keyword_missing", 19024),
    "oversized body": ({}, {}, _oversized(), 0, "bad_request", 9499),
    "bad mention": ({}, {}, {"msg_type": "interactive", "card": {"elements": [
        {"tag": "div", "text": {"tag": "lark_md", "content": "<at email=a@example.com></at>"}}]}},
        0, "bad_mention", 11246),
    "malformed card": ({}, {}, {"msg_type": "interactive", "content": "{}"}, 0, "bad_request", 9499),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_send_reports_each_refusal_as_permanent(name, caplog):
    fake_bot, client_bot, message, offset, reason, code = REFUSALS[name]
    capture_logs(caplog)
    with FakeFeishu(clock=lambda: time.time() + offset) as fake_feishu:
        url = fake_feishu.add_bot(TOKEN, **fake_bot)
        result = FeishuClient().send(bot_for(url, **client_bot), message)
    assert (result.outcome, result.reason, result.code) == (PERMANENT, reason, code)
    assert fake_feishu.received(TOKEN) == []
    assert_no_leak(result, caplog, "fake_feishu-side-secret")


def test_send_to_an_unknown_token(fake_feishu, caplog):
    capture_logs(caplog)
    fake_feishu.add_bot("someone-else")
    result = FeishuClient().send(bot_for(f"{fake_feishu.base_url}/open-apis/bot/v2/hook/{TOKEN}"), ALERT)
    assert (result.outcome, result.reason, result.code, result.http_status) == (PERMANENT, "bad_token", 19001, 200)
    assert_no_leak(result, caplog)


def test_a_burst_of_six_gets_rate_limited_on_the_sixth(fake_feishu):
    url = fake_feishu.add_bot(TOKEN)
    client = FeishuClient()
    results = [client.send(bot_for(url), ALERT) for _ in range(6)]
    assert [r.outcome for r in results] == [SENT] * 5 + [RETRY]
    assert (results[5].reason, results[5].http_status, results[5].code) == ("rate_limited", 400, 9499)


@pytest.mark.parametrize("step, reason, status", [
    (("http", 500), "server_error", 500),
    (("http", 503, "<html>upstream unavailable</html>"), "server_error", 503),
    (("code", 11232), "rate_limited", 200),
    (("reset",), "connection_error", None),
    (("close",), "connection_error", None),
    (("lost_answer",), "connection_error", None),
])
def test_transient_failures_are_retried(fake_feishu, caplog, step, reason, status):
    capture_logs(caplog)
    url = fake_feishu.add_bot(TOKEN, secret=SECRET)
    fake_feishu.script(TOKEN, step)
    result = FeishuClient().send(bot_for(url), ALERT)
    assert (result.outcome, result.reason, result.http_status) == (RETRY, reason, status)
    assert_no_leak(result, caplog)


def test_retry_after_from_a_429(fake_feishu):
    url = fake_feishu.add_bot(TOKEN)
    fake_feishu.script(TOKEN, ("http", 429, "", {"Retry-After": "2"}))
    result = FeishuClient().send(bot_for(url, secret=None), ALERT)
    assert (result.outcome, result.reason, result.retry_after) == (RETRY, "http_429", 2.0)


def test_hang_past_the_read_timeout_is_a_timeout(fake_feishu, caplog):
    capture_logs(caplog)
    url = fake_feishu.add_bot(TOKEN, secret=SECRET)
    fake_feishu.script(TOKEN, ("hang", 3))
    started = time.monotonic()
    result = FeishuClient().send(bot_for(url, read_timeout=0.3), ALERT)
    assert (result.outcome, result.reason) == (RETRY, "timeout")
    assert time.monotonic() - started < 2
    assert_no_leak(result, caplog)


def test_connection_refused_is_retried_without_leaking_the_url(caplog):
    capture_logs(caplog)
    with FakeFeishu() as fake_feishu:
        url = fake_feishu.add_bot(TOKEN)  # then stopped: its port is closed
    result = FeishuClient().send(bot_for(url, connect_timeout=1), ALERT)
    assert (result.outcome, result.reason) == (RETRY, "connection_error")
    assert "/hook/" in result.detail  # the error text is kept, the token is not
    assert_no_leak(result, caplog)


def test_per_bot_proxy_is_used(fake_feishu):
    fake_feishu.add_bot(TOKEN)
    unreachable = f"http://127.0.0.1:9/open-apis/bot/v2/hook/{TOKEN}"
    result = FeishuClient().send(bot_for(unreachable, secret=None, proxy_url=Secret(fake_feishu.base_url)), ALERT)
    assert result.outcome is SENT
    assert fake_feishu.attempts(TOKEN)[0].proxied


def test_environment_proxy_is_used_when_the_bot_has_none(fake_feishu, monkeypatch):
    fake_feishu.add_bot(TOKEN)
    monkeypatch.setenv("HTTP_PROXY", fake_feishu.base_url)
    unreachable = f"http://127.0.0.1:9/open-apis/bot/v2/hook/{TOKEN}"
    assert FeishuClient().send(bot_for(unreachable, secret=None), ALERT).outcome is SENT
    assert fake_feishu.attempts(TOKEN)[0].proxied


@pytest.mark.parametrize("url, proxy", [
    ("http://127.0.0.1:99999/open-apis/bot/v2/hook/t", None),
    (f"http://{'a' * 64}.example.com/open-apis/bot/v2/hook/t", None),
    ("http://127.0.0.1:9/open-apis/bot/v2/hook/t", "http://user:密码@127.0.0.1:9"),
])
def test_urls_refused_only_when_used_are_bad_urls(url, proxy):
    result = FeishuClient().send(bot_for(url, proxy_url=Secret(proxy) if proxy else None), ALERT)
    assert (result.outcome, result.reason) == (PERMANENT, "bad_url")
    assert "proxy_url" in result.advice


def test_dry_run_bot_cannot_be_sent():
    with pytest.raises(ValueError, match="ops"):
        FeishuClient().send(Bot("ops"), ALERT)


# -- an injected session: errors the fake_feishu cannot produce --------------------------------------
class RaisingSession:
    def __init__(self, exc: Exception):
        self.exc = exc
        self.calls: list[dict] = []

    def post(self, url: str, **kwargs) -> requests.Response:
        self.calls.append({"url": url, **kwargs})
        raise self.exc


PROXY = "http://proxyuser:pr0xy-pa55@proxy.test:3128"


@pytest.mark.parametrize("exc, outcome, reason", [
    (requests.ConnectTimeout, RETRY, "timeout"),
    (requests.ReadTimeout, RETRY, "timeout"),
    (requests.exceptions.ProxyError, RETRY, "connection_error"),
    (requests.exceptions.SSLError, RETRY, "connection_error"),
    (requests.exceptions.ChunkedEncodingError, RETRY, "connection_error"),
    (requests.exceptions.InvalidURL, PERMANENT, "bad_url"),
])
def test_request_errors_are_classified_and_scrubbed(exc, outcome, reason, caplog):
    capture_logs(caplog)
    url = f"https://open.feishu.cn/open-apis/bot/v2/hook/{TOKEN}"
    text = f"HTTPSConnectionPool: Max retries exceeded with url: {url} via {PROXY} (/hook/{TOKEN})"
    session = RaisingSession(exc(text))
    bot = bot_for(url, proxy_url=Secret(PROXY), connect_timeout=1.5, read_timeout=4)

    result = FeishuClient(session=session).send(bot, ALERT)

    assert (result.outcome, result.reason) == (outcome, reason)
    assert session.calls[0]["timeout"] == (1.5, 4)
    assert session.calls[0]["proxies"] == {"http": PROXY, "https": PROXY}
    assert_no_leak(result, caplog, "pr0xy-pa55")


def capture_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Everything at INFO, the bridge at DEBUG. urllib3 logs each request's path, token
    included, at DEBUG: the service's logging setup must keep urllib3 at INFO or above."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bridge")


def assert_no_leak(result: SendResult, caplog: pytest.LogCaptureFixture, *more: str) -> None:
    shown = [repr(result), result.detail, result.advice, str(result), caplog.text,
             *(repr(r.args) for r in caplog.records)]
    for secret in (TOKEN, SECRET, *more):
        for text in shown:
            assert secret not in text
