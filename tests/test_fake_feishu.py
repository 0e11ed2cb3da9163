"""The fake_feishu Feishu is strict: it refuses what the real one refuses, with the real answer.

A lenient fake_feishu proves nothing, so these tests post bad bodies straight to it with
requests and check each refusal's HTTP status and code.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests

from bridge.limits import BODY_LIMIT_BYTES
from fake_feishu import BAD_REQUEST, SUCCESS, FakeFeishu

REQUESTS = Path(__file__).parent / "fixtures" / "feishu" / "requests"
GUIDE_TS = 1599360473
GUIDE_SIGN = "l1N0gAcBjdwBvGm1xMjOF0XSyaLRpR7tuO5dHfhAYc8="
FAST = 1000  # a rate that no test here reaches, for tests about other checks
# Every test here talks to the fake on loopback: no proxy from the environment.
pytestmark = pytest.mark.usefixtures("no_proxy_env")


@pytest.fixture
def fake_at():
    """Starts fakes whose clock (Feishu's wall clock) is `GUIDE_TS + offset`."""
    started: list[FakeFeishu] = []

    def start(offset: float) -> FakeFeishu:
        started.append(FakeFeishu(clock=lambda: GUIDE_TS + offset).start())
        return started[-1]

    yield start
    for fake_feishu in started:
        fake_feishu.stop()


def post(url: str, body: object, content_type: str = "application/json") -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return requests.post(url, data=data, headers={"Content-Type": content_type}, timeout=5)


def answer(response: requests.Response) -> tuple[int, int]:
    return response.status_code, response.json()["code"]


def text(s: str) -> dict:
    return {"msg_type": "text", "content": {"text": s}}


def card2(*elements: dict, **extra: object) -> dict:
    return {"msg_type": "interactive", "card": {"schema": "2.0", "body": {"elements": list(elements)}, **extra}}


def md(content: str) -> dict:
    return {"tag": "markdown", "content": content}


def button(**behavior: object) -> dict:
    return {"tag": "button", "text": {"tag": "plain_text", "content": "open"},
            "behaviors": [{"type": "open_url", **behavior}]}


@pytest.mark.parametrize("name", sorted(p.stem for p in REQUESTS.glob("*.json") if "signed" not in p.stem))
def test_accepts_every_request_body_from_the_guide(fake_feishu, name):
    url = fake_feishu.add_bot("t")
    body = json.loads((REQUESTS / f"{name}.json").read_text())

    response = post(url, body)

    assert (response.status_code, response.json()) == (200, SUCCESS)
    assert fake_feishu.received("t") == [body]


def test_unknown_token_gets_19001_with_http_200(fake_feishu):
    fake_feishu.add_bot("known")
    response = post(f"{fake_feishu.base_url}/open-apis/bot/v2/hook/unknown", text("hi"))
    assert answer(response) == (200, 19001)
    assert fake_feishu.attempts("unknown")[0].why == "unknown token"


def test_wrong_method_and_wrong_path_are_refused(fake_feishu):
    url = fake_feishu.add_bot("t")
    assert requests.get(url, timeout=5).status_code == 405
    assert post(f"{fake_feishu.base_url}/open-apis/bot/v2/hooks/t", text("hi")).status_code == 404
    assert fake_feishu.received("t") == []


@pytest.mark.parametrize("raw, content_type", [
    (b'{"msg_type":"text","content":{"text":"hi"}}', "text/plain"),
    (b'{"msg_type":"text","content":{"text":"hi"}}', "application/x-www-form-urlencoded"),
    (b'{"msg_type":"text","content":{"text":"hi"}}', "application/json; charset=latin-1"),
    (b'{"msg_type":"text","content":{"text":"hi"}', "application/json"),
    (b'[{"msg_type":"text"}]', "application/json"),
    (b'{"msg_type":"text","content":{"text":NaN}}', "application/json"),
    ('{"msg_type":"text","content":{"text":"caf\u00e9"}}'.encode("latin-1"), "application/json"),
    (b"", "application/json"),
])
def test_malformed_bodies_get_9499_bad_request(fake_feishu, raw, content_type):
    url = fake_feishu.add_bot("t")
    response = post(url, raw, content_type)
    assert (response.status_code, response.json()) == (400, BAD_REQUEST)


def test_body_size_limit_is_on_raw_bytes(fake_feishu):
    url = fake_feishu.add_bot("t", rate_per_second=FAST)
    room = BODY_LIMIT_BYTES - len(json.dumps(text("")).encode())
    # 3-byte characters: a limit counted in characters would let far more through.
    at_limit = json.dumps(text("告" * (room // 3) + "x" * (room % 3)), ensure_ascii=False).encode()
    over = json.dumps(text("告" * (room // 3) + "x" * (room % 3 + 1)), ensure_ascii=False).encode()
    assert (len(at_limit), len(over)) == (BODY_LIMIT_BYTES, BODY_LIMIT_BYTES + 1)

    assert answer(post(url, at_limit)) == (200, 0)
    assert answer(post(url, over)) == (400, 9499)


BAD_SHAPES = {
    "unknown msg_type": {"msg_type": "markdown", "content": {"text": "hi"}},
    "no msg_type": {"content": {"text": "hi"}},
    "unknown top-level key": {**text("hi"), "at_all": True},
    "text content is a string": {"msg_type": "text", "content": "hi"},
    "text content extra key": {"msg_type": "text", "content": {"text": "hi", "title": "x"}},
    "text not a string": {"msg_type": "text", "content": {"text": 5}},
    "card as a string under content": {"msg_type": "interactive", "content": json.dumps({"elements": []})},
    "card as a JSON string": {"msg_type": "interactive", "card": json.dumps({"elements": []})},
    "card schema 3.0": {"msg_type": "interactive", "card": {"schema": "3.0", "body": {"elements": []}}},
    "v1 elements not a list": {"msg_type": "interactive", "card": {"elements": {"tag": "hr"}}},
    "v1 element without tag": {"msg_type": "interactive", "card": {"elements": [{"text": "x"}]}},
    "v1 unknown colour": {"msg_type": "interactive", "card": {"header": {"template": "pink"}, "elements": []}},
    "v2 elements at top level": {"msg_type": "interactive", "card": {"schema": "2.0", "elements": [md("x")]}},
    "v2 without body": {"msg_type": "interactive", "card": {"schema": "2.0"}},
    "v2 note": card2({"tag": "note", "elements": [{"tag": "plain_text", "content": "x"}]}),
    "v2 action module": card2({"tag": "action", "actions": [button(default_url="https://x.test")]}),
    "v2 note nested in a column": card2({"tag": "column_set", "columns": [
        {"tag": "column", "elements": [{"tag": "note", "elements": []}]}]}),
    "v2 button without behaviors": card2({"tag": "button", "text": {"tag": "plain_text", "content": "x"}}),
    "v2 button callback": card2({"tag": "button", "behaviors": [{"type": "callback", "value": {}}]}),
    "v2 button javascript url": card2(button(default_url="javascript:alert(1)")),
    "v2 button relative url": card2(button(default_url="/grafana/d/1")),
    "v2 button bad pc_url": card2(button(default_url="https://x.test", pc_url="ftp://x.test")),
    "v2 unknown colour": card2(md("x"), header={"title": {"tag": "plain_text", "content": "t"}, "template": "pink"}),
    "v2 update_multi false": card2(md("x"), config={"update_multi": False}),
    "v2 fallback": card2(md("x"), fallback={}),
    "v2 over 200 components": card2(*[md(str(i)) for i in range(201)]),
    "v2 over 200 counting plain_text": card2(*[button(default_url="https://x.test") for _ in range(101)]),
    "post as a list": {"msg_type": "post", "content": {"post": []}},
    "post unknown language": {"msg_type": "post", "content": {"post": {"fr_fr": {"content": []}}}},
    "post unknown node": {"msg_type": "post", "content": {"post": {"zh_cn": {"content": [[{"tag": "b"}]]}}}},
    "post href not a url": {"msg_type": "post", "content": {"post": {"zh_cn": {"content": [
        [{"tag": "a", "text": "x", "href": "www.example.com"}]]}}}},
    "image without key": {"msg_type": "image", "content": {}},
    "share_chat id not a string": {"msg_type": "share_chat", "content": {"share_chat_id": 12}},
}


@pytest.mark.parametrize("name", sorted(BAD_SHAPES))
def test_bad_shapes_get_9499(fake_feishu, name):
    url = fake_feishu.add_bot("t")
    response = post(url, BAD_SHAPES[name])
    assert (response.status_code, response.json()) == (400, BAD_REQUEST)
    assert fake_feishu.attempts("t")[0].why.startswith("shape:")


def test_card_limits_are_inclusive(fake_feishu):
    url = fake_feishu.add_bot("t", rate_per_second=FAST)
    assert answer(post(url, card2(*[md(str(i)) for i in range(200)]))) == (200, 0)
    assert answer(post(url, card2(*[button(default_url="https://x.test") for _ in range(100)]))) == (200, 0)
    header = {"title": {"tag": "plain_text", "content": "t"}, "template": "carmine"}
    assert answer(post(url, card2(md("x"), header=header))) == (200, 0)


@pytest.mark.parametrize("mention", [
    "<at email=someone@example.com></at>",
    "<at id=someone@example.com></at>",
    "<at id='on_8a1b2c'></at>",
    "<at ids=ou_a1,bob@example.com></at>",
    "<at></at>",
    "<person id=all></person>",
])
def test_card_mentions_not_by_open_id_or_user_id_get_11246(fake_feishu, mention):
    url = fake_feishu.add_bot("t")
    assert answer(post(url, card2(md(f"owner: {mention}")))) == (200, 11246)


@pytest.mark.parametrize("mention", [
    "<at id=all></at>", "<at id=ou_0a1b2c></at>", '<at id="5d9bdxxx"></at>',
    "<at ids=ou_a1,ou_b2></at>", "<person id=ou_0a1b2c></person>",
])
def test_card_mentions_by_open_id_user_id_or_all_are_accepted(fake_feishu, mention):
    url = fake_feishu.add_bot("t")
    assert answer(post(url, card2(md(f"owner: {mention}")))) == (200, 0)


def test_text_mention_of_an_unknown_id_is_delivered_as_the_guide_says(fake_feishu):
    url = fake_feishu.add_bot("t")
    assert answer(post(url, text('<at user_id="bob@example.com">Bob</at> look'))) == (200, 0)


@pytest.fixture
def signed(fake_at):
    """A bot with the guide's secret, on a Feishu clock 10 s after the guide's timestamp."""
    return fake_at(10).add_bot("s", secret="demo", rate_per_second=FAST)


def signed_text(ts: object = str(GUIDE_TS), sign: object = GUIDE_SIGN) -> dict:
    return {"timestamp": ts, "sign": sign, **text("request example")}


def test_guide_signature_is_accepted_and_its_placeholder_refused(fake_at):
    fake_feishu = fake_at(10)
    url = fake_feishu.add_bot("s", secret="demo")
    sample = json.loads((REQUESTS / "text-signed-example.json").read_text())
    assert answer(post(url, sample)) == (200, 19021)
    assert answer(post(url, {**sample, "sign": GUIDE_SIGN})) == (200, 0)
    assert fake_feishu.received("s") == [text("request example")]


@pytest.mark.parametrize("body", [
    text("request example"),
    signed_text(ts=GUIDE_TS),
    signed_text(ts=f" {GUIDE_TS}"),
    signed_text(ts=str(GUIDE_TS * 1000)),
    signed_text(sign=GUIDE_SIGN.lower()),
    {"timestamp": str(GUIDE_TS), **text("request example")},
], ids=["unsigned", "int timestamp", "spaced timestamp", "milliseconds", "wrong sign", "no sign"])
def test_bad_signatures_get_19021(signed, body):
    assert answer(post(signed, body)) == (200, 19021)


@pytest.mark.parametrize("offset, accepted", [(3600, True), (-3600, True), (3601, False), (-3601, False)])
def test_signature_window_is_one_hour_both_ways(fake_at, offset, accepted):
    url = fake_at(offset).add_bot("s", secret="demo")
    assert answer(post(url, signed_text())) == (200, 0 if accepted else 19021)


def test_bot_without_secret_ignores_a_signature(fake_feishu):
    url = fake_feishu.add_bot("t")
    assert answer(post(url, signed_text(sign="garbage"))) == (200, 0)


@pytest.mark.parametrize("body, code", [
    (text("【告警】disk full"), 0),
    (text("disk full"), 19024),
    (card2(md("disk full"), header={"title": {"tag": "plain_text", "content": "告警"}}), 0),
    (card2(md("disk full"), header={"title": {"tag": "plain_text", "i18n_content": {"zh_cn": "告警"}}}), 0),
    (card2(md("disk full"), button(default_url="https://x.test/告警")), 19024),
    ({"msg_type": "post", "content": {"post": {"zh_cn": {"content": [
        [{"tag": "a", "text": "look", "href": "https://x.test/告警"}]]}}}}, 19024),
    ({"msg_type": "post", "content": {"post": {"zh_cn": {"title": "告警", "content": []}}}}, 0),
    ({"msg_type": "post", "content": {"post": {"zh_cn": {"content": [
        [{"tag": "at", "user_id": "ou_1", "user_name": "告警值班"}]]}}}}, 0),
    ({"msg_type": "interactive", "card": {"header": {"template": "red"}, "elements": []}}, 19024),
], ids=["text", "missing", "card title", "i18n title", "only in url", "only in href", "post title",
        "at user_name", "template is not text"])
def test_keywords_are_searched_in_text_values_only(fake_feishu, body, code):
    url = fake_feishu.add_bot("k", keywords=["告警", "alert"], rate_per_second=FAST)
    assert answer(post(url, body)) == (200, code)


def test_rate_limit_is_a_sliding_second_answered_9499_http_400(fake_feishu):
    url = fake_feishu.add_bot("t")
    assert [answer(post(url, text(str(i)))) for i in range(5)] == [(200, 0)] * 5
    assert answer(post(url, text("6th"))) == (400, 9499)
    time.sleep(0.5)
    assert answer(post(url, text("half a second later"))) == (400, 9499)
    time.sleep(0.6)
    assert answer(post(url, text("a second later"))) == (200, 0)
    assert len(fake_feishu.throttled("t")) == 2
    assert fake_feishu.throttled("t")[0].body == text("6th")
    assert len(fake_feishu.received("t")) == 6


def test_rate_limit_per_minute(fake_feishu):
    url = fake_feishu.add_bot("t", rate_per_second=FAST, rate_per_minute=3)
    assert [answer(post(url, text(str(i))))[1] for i in range(4)] == [0, 0, 0, 9499]


def test_rate_limits_are_per_bot(fake_feishu):
    a, b = fake_feishu.add_bot("a"), fake_feishu.add_bot("b")
    for i in range(5):
        post(a, text(str(i)))
    assert answer(post(b, text("b"))) == (200, 0)
    assert fake_feishu.throttled("b") == []


def test_script_injects_faults_then_checks_resume(fake_feishu):
    url = fake_feishu.add_bot("t", rate_per_second=FAST)
    fake_feishu.script("t", ("code", 11232), ("http", 502), ("code", 9499, 400, "too many request"),
                ("reset",), ("close",), ("http", 429, {"code": 99991400, "msg": "x"}, {"Retry-After": "3"}))

    assert post(url, text("a")).json()["msg"].startswith("frequency limited")
    assert post(url, text("b")).status_code == 502
    assert post(url, text("c")).json() == {"code": 9499, "msg": "too many request", "data": {}}
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            post(url, text("d"))
    throttled = post(url, text("e"))
    assert (throttled.status_code, throttled.headers["Retry-After"]) == (429, "3")
    assert answer(post(url, text("f"))) == (200, 0)
    assert fake_feishu.received("t") == [text("f")]
    assert [a.http_status for a in fake_feishu.attempts("t")] == [200, 502, 400, None, None, 429, 200]


def test_lost_answer_delivers_but_the_sender_sees_a_reset(fake_feishu):
    url = fake_feishu.add_bot("t")
    fake_feishu.script("t", ("lost_answer",))
    with pytest.raises(requests.ConnectionError):
        post(url, text("delivered"))
    assert fake_feishu.received("t") == [text("delivered")]


def test_hang_delays_then_checks_as_usual(fake_feishu):
    url = fake_feishu.add_bot("t")
    fake_feishu.script("t", ("hang", 0.3))
    started = time.monotonic()
    assert answer(post(url, text("slow"))) == (200, 0)
    assert time.monotonic() - started >= 0.3


def test_unknown_script_step_is_refused(fake_feishu):
    fake_feishu.add_bot("t")
    with pytest.raises(ValueError):
        fake_feishu.script("t", ("explode",))


def test_stop_does_not_wait_for_a_hung_request():
    fake_feishu = FakeFeishu().start()
    url = fake_feishu.add_bot("t")
    fake_feishu.script("t", ("hang", 30))
    with pytest.raises(requests.Timeout):
        requests.post(url, json=text("x"), timeout=0.2)
    started = time.monotonic()
    fake_feishu.stop()
    assert time.monotonic() - started < 2


def test_wait_for_blocks_until_accepted_and_reports_what_it_saw(fake_feishu):
    url = fake_feishu.add_bot("t")
    threading.Timer(0.2, post, (url, text("later"))).start()
    assert fake_feishu.wait_for("t", 1, timeout=5) == [text("later")]

    post(url, text(""))  # accepted: no keywords
    post(url, {"msg_type": "nope"})
    with pytest.raises(AssertionError, match="msg_type"):
        fake_feishu.wait_for("t", 3, timeout=0.2)


def test_concurrent_senders_are_all_recorded(fake_feishu):
    url = fake_feishu.add_bot("t", rate_per_second=FAST)
    threads = [threading.Thread(target=post, args=(url, text(str(i)))) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(m["content"]["text"] for m in fake_feishu.received("t")) == sorted(str(i) for i in range(20))


def test_requests_through_a_proxy_are_served_and_marked(fake_feishu):
    fake_feishu.add_bot("t")
    closed_port_url = "http://127.0.0.1:9/open-apis/bot/v2/hook/t"  # the fake_feishu is the proxy
    response = requests.post(closed_port_url, json=text("via proxy"), timeout=5,
                             proxies={"http": fake_feishu.base_url})
    assert answer(response) == (200, 0)
    assert fake_feishu.attempts("t")[0].proxied
