"""The fake Open API is strict: it refuses what Feishu refuses, with Feishu's code, and keeps
the chat as Feishu would show it. A lenient fake proves nothing, so these tests make the
calls with requests and check each answer (the codes: ../shared/feishu-app-protocol.md,
copied into tests/fake_open_api/answers.py with their sections)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from fake_open_api import FakeOpenAPI
from fake_open_api import answers as a
from support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("no_proxy_env")
APP, SECRET, OTHER = "cli_a1", "s3cret-a1", "cli_b2"
CHAT = "oc_c1"


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def fake(clock):
    with FakeOpenAPI(clock=clock.now) as fake:
        fake.add_app(APP, SECRET)
        fake.add_app(OTHER, "s3cret-b2")
        fake.add_chat(CHAT, apps=[APP, OTHER], members=["ou_alice", "ou_bob"])
        fake.add_user("ou_alice", "alice@example.com")
        yield fake


def token(fake, app=APP, secret=SECRET) -> str:
    answer = requests.post(f"{fake.base_url}/open-apis/auth/v3/tenant_access_token/internal",
                           json={"app_id": app, "app_secret": secret}, timeout=5).json()
    assert answer["code"] == 0, answer
    return answer["tenant_access_token"]


def call(fake, method: str, path: str, body: object, tok: str | None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    response = requests.request(method, f"{fake.base_url}/open-apis{path}", json=body, headers=headers, timeout=5)
    return response.status_code, response.json()


def card(title: str = "t", *elements: dict, **config) -> dict:
    return {"schema": "2.0", "config": {"update_multi": True, **config},
            "header": {"title": {"tag": "plain_text", "content": title}, "template": "red"},
            "body": {"elements": list(elements) or [{"tag": "markdown", "content": "x"}]}}


def send(fake, tok, content: dict, *, msg_type="interactive", chat=CHAT, uuid=None) -> tuple[int, dict]:
    body = {"receive_id": chat, "msg_type": msg_type, "content": json.dumps(content)}
    if uuid is not None:
        body["uuid"] = uuid
    return call(fake, "POST", "/im/v1/messages?receive_id_type=chat_id", body, tok)


def sent_id(fake, tok, content=None, **kw) -> str:
    status, answer = send(fake, tok, content or card(), **kw)
    assert (status, answer["code"]) == (200, 0), answer
    return answer["data"]["message_id"]


# -- tokens -----------------------------------------------------------------------------------
def test_a_token_is_the_same_until_30_minutes_are_left_then_a_new_one_and_both_work(fake, clock):
    first = token(fake)
    clock.advance(3600)
    assert token(fake) == first
    clock.advance(1801)          # 1799 s left
    second = token(fake)
    assert second != first
    assert send(fake, first, card())[1]["code"] == 0
    assert send(fake, second, card())[1]["code"] == 0
    clock.advance(1800)          # the first has expired
    assert send(fake, first, card()) == (400, a.body(a.TOKEN_INVALID))
    assert send(fake, second, card())[1]["code"] == 0


def test_expire_is_the_seconds_left(fake, clock):
    requests.post(f"{fake.base_url}/open-apis/auth/v3/tenant_access_token/internal",
                  json={"app_id": APP, "app_secret": SECRET}, timeout=5)
    clock.advance(100)
    answer = requests.post(f"{fake.base_url}/open-apis/auth/v3/tenant_access_token/internal",
                           json={"app_id": APP, "app_secret": SECRET}, timeout=5).json()
    assert answer["expire"] == 7100 and answer["msg"] == "ok" and answer["tenant_access_token"].startswith("t-")


@pytest.mark.parametrize("app, secret, code", [(APP, "wrong", a.WRONG_SECRET), ("cli_zz", SECRET, a.APP_UNAUTHORIZED)])
def test_bad_credentials_get_no_token(fake, app, secret, code):
    answer = requests.post(f"{fake.base_url}/open-apis/auth/v3/tenant_access_token/internal",
                           json={"app_id": app, "app_secret": secret}, timeout=5)
    assert (answer.status_code, answer.json()["code"]) == (400, code)
    assert "tenant_access_token" not in answer.json()


def test_calls_need_a_live_token_with_the_scope(fake):
    assert send(fake, None, card()) == (400, a.body(a.NEED_TOKEN))
    assert send(fake, "t-made-up", card())[1]["code"] == a.TOKEN_INVALID
    fake.add_app("cli_mute", "m", scopes={"contact:user.id:readonly"})
    fake.add_chat("oc_m", apps=["cli_mute"])
    status, answer = send(fake, token(fake, "cli_mute", "m"), card(), chat="oc_m")
    assert (status, answer["code"]) == (400, a.NO_SCOPE)
    assert "im:message:send_as_bot" in answer["msg"]


# -- sending ----------------------------------------------------------------------------------
def test_a_card_is_sent_into_the_chat(fake):
    tok = token(fake)
    status, answer = send(fake, tok, card("hello"))
    assert status == 200 and answer["code"] == 0
    data = answer["data"]
    assert data["message_id"].startswith("om_") and data["chat_id"] == CHAT and data["msg_type"] == "interactive"
    assert fake.cards(CHAT) == [card("hello")]


@pytest.mark.parametrize("chat, code", [("oc_nowhere", a.BAD_RECEIVE_ID), ("oc_lonely", a.BOT_NOT_IN_CHAT)])
def test_only_a_chat_the_bot_is_in(fake, chat, code):
    fake.add_chat("oc_lonely", apps=[OTHER])
    assert send(fake, token(fake), card(), chat=chat) == (400, a.body(code))


def test_the_bot_capability_must_be_on(fake):
    fake.add_app("cli_off", "o", bot_on=False)
    fake.add_chat("oc_o", apps=["cli_off"])
    assert send(fake, token(fake, "cli_off", "o"), card(), chat="oc_o")[1]["code"] == a.BOT_OFF


def test_content_must_be_a_json_string(fake):
    body = {"receive_id": CHAT, "msg_type": "interactive", "content": card()}
    status, answer = call(fake, "POST", "/im/v1/messages?receive_id_type=chat_id", body, token(fake))
    assert (status, answer["code"]) == (400, a.INVALID_PARAM)


def test_a_uuid_sends_one_message_within_an_hour(fake, clock):
    tok = token(fake)
    first = sent_id(fake, tok, card("a"), uuid="u-1")
    assert sent_id(fake, tok, card("b"), uuid="u-1") == first
    assert fake.cards(CHAT) == [card("a")]
    clock.advance(3600)
    assert sent_id(fake, tok, card("c"), uuid="u-1") != first
    assert send(fake, tok, card(), uuid="u" * 51)[1]["code"] == a.INVALID_PARAM


def test_cards_over_30_kb_are_refused_text_is_allowed_150(fake):
    tok = token(fake)
    big = card("t", {"tag": "markdown", "content": "x" * (30 * 1024)})
    assert send(fake, tok, big) == (400, a.body(a.TOO_LONG))
    assert send(fake, tok, {"text": "x" * (100 * 1024)}, msg_type="text")[1]["code"] == 0


@pytest.mark.parametrize("content, code", [
    (card("t", update_multi=False), a.CARD_CONTENT),
    (card("t", {"tag": "note", "elements": []}), a.CARD_CONTENT),
    (card("t", {"tag": "markdown", "content": "<at id=bob@example></at>"}), a.CARD_CONTENT),
    (card("t", {"tag": "markdown", "content": "<person id=ou_1></person>"}), a.CARD_CONTENT),
    (card("t", {"tag": "markdown", "content": "<at email=alice@example.com></at> <at id=ou_1></at>"}), 0),
    (card("t", {"tag": "markdown", "content": "<at id=all></at>"}), 0),
])
def test_cards_are_checked_and_mentions_may_be_by_email(fake, content, code):
    assert send(fake, token(fake), content)[1]["code"] == code


def test_text_and_post_content(fake):
    tok = token(fake)
    assert send(fake, tok, {"text": "hi"}, msg_type="text")[1]["code"] == 0
    assert send(fake, tok, {"text": "hi", "x": 1}, msg_type="text")[1]["code"] == a.INVALID_PARAM
    post = {"zh_cn": {"title": "t", "content": [[{"tag": "text", "text": "x"}]]}}
    assert send(fake, tok, post, msg_type="post")[1]["code"] == 0
    assert send(fake, tok, {"post": post}, msg_type="post")[1]["code"] == a.INVALID_PARAM


# -- updating in place --------------------------------------------------------------------------
def patch(fake, tok, message_id, content) -> tuple[int, dict]:
    return call(fake, "PATCH", f"/im/v1/messages/{message_id}", {"content": json.dumps(content)}, tok)


def test_a_card_is_updated_in_place(fake):
    tok = token(fake)
    first = sent_id(fake, tok, card("firing"))
    assert patch(fake, tok, first, card("resolved")) == (200, {"code": 0, "msg": "success", "data": {}})
    assert fake.cards(CHAT) == [card("resolved")] and fake.message(first).updates == 1


def test_an_update_needs_update_multi_before_and_after(fake):
    tok = token(fake)
    v1 = {"header": {"title": {"tag": "plain_text", "content": "t"}}, "elements": []}
    old = sent_id(fake, tok, v1)
    assert patch(fake, tok, old, {**v1, "config": {"update_multi": True}})[1]["code"] == a.CARD_CONTENT
    shared = sent_id(fake, tok, {**v1, "config": {"update_multi": True}})
    assert patch(fake, tok, shared, v1)[1]["code"] == a.CARD_CONTENT
    assert patch(fake, tok, shared, {**v1, "config": {"update_multi": True}})[1]["code"] == 0


def test_an_update_after_14_days_is_refused(fake, clock):
    tok = token(fake)
    first = sent_id(fake, tok)
    clock.advance(14 * 86400)
    tok = token(fake)
    assert patch(fake, tok, first, card("same day"))[1]["code"] == 0
    clock.advance(1)
    tok = token(fake)
    assert patch(fake, tok, first, card("too late")) == (400, a.body(a.TOO_OLD))


def test_gone_and_foreign_messages_cannot_be_updated(fake):
    tok = token(fake)
    deleted, recalled, text = sent_id(fake, tok), sent_id(fake, tok), sent_id(fake, tok, {"text": "x"}, msg_type="text")
    fake.delete(deleted)
    fake.recall(recalled)
    assert patch(fake, tok, deleted, card())[1]["code"] == a.DELETED
    assert patch(fake, tok, recalled, card())[1]["code"] == a.RECALLED
    assert patch(fake, tok, text, card())[1]["code"] == a.INVALID_PARAM
    assert patch(fake, token(fake, OTHER, "s3cret-b2"), sent_id(fake, tok), card())[1]["code"] == a.NO_PERMISSION
    assert fake.chat(CHAT)[-1].msg_type == "interactive" and len(fake.chat(CHAT)) == 2


# -- threads -----------------------------------------------------------------------------------
def reply(fake, tok, message_id, text, uuid=None) -> tuple[int, dict]:
    body = {"msg_type": "text", "content": json.dumps({"text": text}), "reply_in_thread": True}
    if uuid:
        body["uuid"] = uuid
    return call(fake, "POST", f"/im/v1/messages/{message_id}/reply", body, tok)


def test_a_reply_goes_into_the_cards_thread(fake):
    tok = token(fake)
    root = sent_id(fake, tok)
    status, answer = reply(fake, tok, root, "resolved after 23m", uuid="r-1")
    assert status == 200 and answer["data"]["root_id"] == root and answer["data"]["thread_id"].startswith("omt_")
    assert reply(fake, tok, root, "again", uuid="r-1")[1]["data"]["message_id"] == answer["data"]["message_id"]
    assert [m.content for m in fake.thread(root)] == [{"text": "resolved after 23m"}]
    assert len(fake.chat(CHAT)) == 1, "a thread reply is not a message of the chat's own"


def test_no_reply_to_a_deleted_card_or_in_a_group_without_threads(fake):
    tok = token(fake)
    root = sent_id(fake, tok)
    fake.delete(root)
    assert reply(fake, tok, root, "x")[1]["code"] == a.DELETED
    fake.add_chat("oc_flat", apps=[APP], threads=False)
    assert reply(fake, tok, sent_id(fake, tok, chat="oc_flat"), "x")[1]["code"] == a.NO_THREADS


# -- urgent ------------------------------------------------------------------------------------
def urgent(fake, tok, message_id, users, kind="app") -> tuple[int, dict]:
    return call(fake, "PATCH", f"/im/v1/messages/{message_id}/urgent_{kind}?user_id_type=open_id",
                {"user_id_list": users}, tok)


def test_urgent_buzzes_the_users_in_the_chat_and_names_the_others(fake):
    tok = token(fake)
    root = sent_id(fake, tok)
    status, answer = urgent(fake, tok, root, ["ou_alice", "ou_stranger"])
    assert (status, answer["data"]) == (200, {"invalid_user_id_list": ["ou_stranger"]})
    assert fake.message(root).urgent == [("app", ("ou_alice",))]
    assert urgent(fake, tok, root, ["ou_stranger"])[1]["code"] == a.INVALID_PARAM


def test_urgent_preconditions(fake):
    tok = token(fake)
    assert urgent(fake, token(fake, OTHER, "s3cret-b2"), sent_id(fake, tok), ["ou_alice"])[1]["code"] == a.NOT_SENDER
    fake.add_chat("oc_strict", apps=[APP], members=["ou_alice"], urgent_allowed=False)
    assert urgent(fake, tok, sent_id(fake, tok, chat="oc_strict"), ["ou_alice"])[1]["code"] == a.URGENT_REFUSED
    fake.set_urgent_quota(1)
    root = sent_id(fake, tok)
    assert urgent(fake, tok, root, ["ou_alice"], kind="sms")[1]["code"] == 0
    assert urgent(fake, tok, root, ["ou_bob"], kind="phone")[1]["code"] == a.URGENT_QUOTA
    assert urgent(fake, tok, root, ["ou_bob"], kind="app")[1]["code"] == 0, "in-app urgent spends no quota"
    fake.set_unread_urgent("ou_alice", 199)
    assert urgent(fake, tok, root, ["ou_alice"])[1]["code"] == 0
    assert urgent(fake, tok, root, ["ou_alice"])[1]["code"] == a.URGENT_UNREAD


# -- contacts ----------------------------------------------------------------------------------
def button(value: object, element_id: str = "b1") -> dict:
    return {"tag": "button", "element_id": element_id, "text": {"tag": "plain_text", "content": "Silence 1h"},
            "behaviors": [{"type": "callback", "value": value}]}


@pytest.mark.parametrize("content, code", [
    (card("t", button({"a": "silence"})), 0),
    (card("t", button("silence")), a.CARD_CONTENT),                         # the SDKs take objects only (§6.2)
    (card("t", button({"a": 1}, "1bad")), a.CARD_CONTENT),                  # element_id [A-Za-z][A-Za-z0-9_]*
    (card("t", button({"a": 1}, "b" * 21)), a.CARD_CONTENT),                # at most 20 characters
    (card("t", button({"a": 1}), button({"a": 2})), a.CARD_CONTENT),        # unique in the card
])
def test_an_apps_card_may_call_back_as_feishu_allows(fake, content, code):
    assert send(fake, token(fake), content)[1]["code"] == code


def test_a_users_name_needs_the_scope(fake):
    fake.add_user("ou_bob", "bob@example.com", name="Bob")
    status, answer = call(fake, "GET", "/contact/v3/users/ou_bob?user_id_type=open_id", None, token(fake))
    assert status == 200 and answer["data"]["user"] == {"open_id": "ou_bob", "name": "Bob"}
    assert call(fake, "GET", "/contact/v3/users/ou_nobody?user_id_type=open_id", None, token(fake))[0] == 400
    fake.add_app("cli_c3", "s3cret-c3", scopes=["im:message"])
    assert call(fake, "GET", "/contact/v3/users/ou_bob", None, token(fake, "cli_c3", "s3cret-c3"))[1]["code"] \
        == a.NO_SCOPE


def test_batch_get_id_by_email(fake):
    status, answer = call(fake, "POST", "/contact/v3/users/batch_get_id?user_id_type=open_id",
                          {"emails": ["alice@example.com", "nobody@example.com"]}, token(fake))
    assert status == 200 and answer["data"]["user_list"] == [
        {"email": "alice@example.com", "user_id": "ou_alice"}, {"email": "nobody@example.com"}]


# -- rate limits -------------------------------------------------------------------------------
def test_five_messages_a_second_per_chat_for_every_app_together(fake):
    mine, theirs = token(fake), token(fake, OTHER, "s3cret-b2")
    codes = [send(fake, tok, card())[1]["code"] for tok in (mine, theirs, mine, theirs, mine, theirs)]
    assert codes == [0] * 5 + [a.CHAT_RATE]
    assert len(fake.throttled()) == 1
    time.sleep(1.05)
    assert send(fake, mine, card())[1]["code"] == 0


def test_five_updates_a_second_per_message(fake):
    tok = token(fake)
    first, second = sent_id(fake, tok), sent_id(fake, tok)
    assert [patch(fake, tok, first, card())[1]["code"] for _ in range(6)] == [0] * 5 + [a.CHAT_RATE]
    assert patch(fake, tok, second, card())[1]["code"] == 0


def test_an_apps_api_limit_is_answered_429_with_the_wait(clock):
    with FakeOpenAPI(clock=clock.now, app_per_second=3, chat_per_second=100) as fake:
        fake.add_app(APP, SECRET)
        fake.add_chat(CHAT, apps=[APP])
        tok = token(fake)
        assert [send(fake, tok, card())[0] for _ in range(3)] == [200] * 3
        response = requests.post(f"{fake.base_url}/open-apis/im/v1/messages?receive_id_type=chat_id",
                                 json={"receive_id": CHAT, "msg_type": "text", "content": '{"text":"x"}'},
                                 headers={"Authorization": f"Bearer {tok}"}, timeout=5)
        assert (response.status_code, response.json()["code"]) == (429, a.API_RATE)
        assert response.headers["x-ogw-ratelimit-reset"] == "1"


# -- scripts -----------------------------------------------------------------------------------
def test_a_lost_answer_delivers_and_the_retry_is_deduplicated(fake):
    tok = token(fake)
    fake.script("send", ("lost_answer",))
    with pytest.raises(requests.ConnectionError):
        send(fake, tok, card("once"), uuid="u-lost")
    assert sent_id(fake, tok, card("once"), uuid="u-lost") == fake.chat(CHAT)[0].message_id
    assert fake.cards(CHAT) == [card("once")]


def test_scripted_answers_skip_the_checks(fake):
    fake.script("patch", ("code", a.TOO_OLD), ("http", 502))
    assert patch(fake, None, "om_x", card()) == (400, a.body(a.TOO_OLD))
    assert requests.patch(f"{fake.base_url}/open-apis/im/v1/messages/om_x", json={}, timeout=5).status_code == 502
    with pytest.raises(ValueError):
        fake.script("delete", ("code", 1))
