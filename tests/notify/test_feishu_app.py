"""The app-bot client against the strict fake Open API: tokens (shared, refreshed ahead,
refreshed once when refused), send with uuid, update in place, thread replies, urgent,
and every answer classified from the table."""

from __future__ import annotations

import logging

import pytest

from bridge.config import App, Bot
from bridge.model import Mention
from bridge.notify import AppMessages, ByKind, Outcome
from bridge.notify.feishu_app import AppClient
from bridge.notify.feishu_app.answers import CODES, classify
from bridge.notify.feishu_app.tokens import MemoryTokens
from bridge.notify.outcome import (BAD_CREDENTIALS, MESSAGE_GONE, MISSING_SCOPE, NOT_IN_CHAT, OK, RATE_LIMITED,
                                   TOO_LARGE, UNKNOWN_USERS, URGENT_QUOTA, USERS_NOT_IN_CHAT)
from bridge.secret import Secret
from fake_open_api import FakeOpenAPI
from fake_open_api import answers as a
from support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("no_proxy_env")
APP_ID, SECRET, CHAT = "cli_unit1", "unit-s3cret-Zx", "oc_unit1"
SENT, RETRY, PERMANENT = Outcome.SENT, Outcome.RETRY, Outcome.PERMANENT


def card(title: str) -> dict:
    return {"msg_type": "interactive", "card": {
        "schema": "2.0", "config": {"update_multi": True},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": "red"},
        "body": {"elements": [{"tag": "markdown", "content": title}]}}}


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def fake(clock):
    with FakeOpenAPI(clock=clock.now) as fake:
        fake.add_app(APP_ID, SECRET)
        fake.add_chat(CHAT, apps=[APP_ID], members=["ou_alice", "ou_bob"])
        fake.add_user("ou_alice", "alice@example.com")
        yield fake


@pytest.fixture
def bot(fake):
    return Bot("sre", app=App("oncall", APP_ID, Secret(SECRET), base_url_override=fake.base_url), chat_id=CHAT)


@pytest.fixture
def client(clock):
    return AppClient(MemoryTokens(), clock=clock, logger=logging.getLogger("bridge.test-app"))


def test_it_has_the_app_capability_and_the_router_hands_app_bots_to_it(client, bot):
    assert isinstance(client, AppMessages) and isinstance(ByKind(object(), client), AppMessages)
    sent = []
    custom = type("Custom", (), {"send": lambda self, b, m: sent.append(b.name) or "custom"})()
    assert ByKind(custom, client).send(Bot("hook"), {}) == "custom" and sent == ["hook"]


def test_a_card_is_posted_with_its_id_and_the_token_is_fetched_once(client, bot, fake):
    first = client.post(bot, card("one"), uuid="u-1")
    second = client.send(bot, card("two"))
    assert (first.outcome, first.reason, second.outcome) == (SENT, OK, SENT)
    assert first.message_id.startswith("om_") and second.message_id != first.message_id
    assert fake.cards(CHAT) == [card("one")["card"], card("two")["card"]]
    assert fake.token_fetches(APP_ID) == 1


def test_a_repeated_uuid_posts_once(client, bot, fake):
    fake.script("send", ("lost_answer",))
    lost = client.post(bot, card("once"), uuid="u-lost")
    assert lost.outcome is RETRY
    again = client.post(bot, card("once"), uuid="u-lost")
    assert again.outcome is SENT and len(fake.chat(CHAT)) == 1 and again.message_id == fake.chat(CHAT)[0].message_id


def test_the_token_is_refreshed_ahead_of_its_expiry(client, bot, fake, clock):
    client.send(bot, card("a"))
    clock.advance(7200 - 600 - 1)
    client.send(bot, card("b"))
    assert fake.token_fetches(APP_ID) == 1
    clock.advance(2)           # within 10 minutes of the end: fetched again, before Feishu would refuse it
    assert client.send(bot, card("c")).outcome is SENT
    assert fake.token_fetches(APP_ID) == 2 and not [t for t in fake.attempts() if t.code == a.TOKEN_INVALID]


def test_a_refused_token_is_refreshed_once_and_the_call_made_again(client, bot, fake):
    client.send(bot, card("a"))
    fake.expire_tokens(APP_ID)
    result = client.send(bot, card("b"))
    assert result.outcome is SENT and fake.token_fetches(APP_ID) == 2
    assert [t.code for t in fake.attempts("send")] == [0, a.TOKEN_INVALID, 0]


def test_a_token_refused_again_after_a_refresh_is_not_retried_in_a_loop(client, bot, fake):
    fake.script("send", ("code", a.TOKEN_INVALID), ("code", a.TOKEN_INVALID))
    result = client.send(bot, card("a"))
    assert result.outcome is PERMANENT and len(fake.attempts("send")) == 2


def test_processes_share_the_token_through_the_store(bot, fake, clock):
    shared = MemoryTokens()
    one, two = AppClient(shared, clock=clock), AppClient(shared, clock=clock)
    assert one.send(bot, card("a")).outcome is SENT and two.send(bot, card("b")).outcome is SENT
    assert fake.token_fetches(APP_ID) == 1


def test_a_wrong_secret_is_permanent_with_advice_and_never_shown(fake, client, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = Bot("sre", app=App("oncall", APP_ID, Secret("wr0ng-s3cret"), base_url_override=fake.base_url),
                chat_id=CHAT)
    result = client.send(wrong, card("a"))
    assert (result.outcome, result.reason, result.code) == (PERMANENT, BAD_CREDENTIALS, a.WRONG_SECRET)
    assert "app_secret" in result.advice
    assert "wr0ng-s3cret" not in repr(result) + caplog.text and SECRET not in caplog.text
    assert fake.chat(CHAT) == []


def test_a_chat_the_bot_is_not_in(client, bot, fake):
    fake.add_chat("oc_elsewhere")
    result = client.send(Bot("sre", app=bot.app, chat_id="oc_elsewhere"), card("a"))
    assert (result.outcome, result.reason, result.code) == (PERMANENT, NOT_IN_CHAT, a.BOT_NOT_IN_CHAT)
    assert "add the bot to the group" in result.advice


def test_a_missing_scope_is_named(fake, clock):
    fake.add_app("cli_noscope", "n", scopes={"contact:user.id:readonly"})
    fake.add_chat("oc_n", apps=["cli_noscope"])
    bot = Bot("n", app=App("n", "cli_noscope", Secret("n"), base_url_override=fake.base_url), chat_id="oc_n")
    result = AppClient(clock=clock).send(bot, card("a"))
    assert (result.outcome, result.reason) == (PERMANENT, MISSING_SCOPE)
    assert "im:message:send_as_bot" in result.advice and "publish" in result.advice


def test_a_card_over_30_kb_is_too_large(client, bot):
    big = card("x" * 31_000)
    assert client.send(bot, big).reason == TOO_LARGE


# -- in place, threads ---------------------------------------------------------------------
def test_a_card_is_updated_in_place_and_replied_to(client, bot, fake):
    first = client.post(bot, card("firing"), uuid="u-1").message_id
    assert client.update(bot, first, card("resolved")).outcome is SENT
    reply = client.reply(bot, first, {"msg_type": "text", "content": {"text": "✅ Resolved after 23m"}}, uuid="r-1")
    assert reply.outcome is SENT and reply.message_id != first
    assert fake.cards(CHAT) == [card("resolved")["card"]]
    assert [m.content for m in fake.thread(first)] == [{"text": "✅ Resolved after 23m"}]


@pytest.mark.parametrize("gone, code", [("delete", a.DELETED), ("recall", a.RECALLED), ("age", a.TOO_OLD)])
def test_a_card_that_cannot_be_updated_any_more_is_message_gone(client, bot, fake, clock, gone, code):
    first = client.post(bot, card("firing"), uuid="u-1").message_id
    if gone == "age":
        clock.advance(14 * 86400 + 1)
    else:
        getattr(fake, gone)(first)
    result = client.update(bot, first, card("resolved"))
    assert (result.outcome, result.reason, result.code) == (PERMANENT, MESSAGE_GONE, code)


def test_only_cards_are_updated(client, bot):
    result = client.update(bot, "om_x", {"msg_type": "text", "content": {"text": "x"}})
    assert result.outcome is PERMANENT


# -- urgent --------------------------------------------------------------------------------
def test_urgent_buzzes_open_ids_and_people_known_by_email(client, bot, fake):
    root = client.post(bot, card("critical"), uuid="u-1").message_id
    found = client.urgent(bot, root, "app", [Mention("ou_bob", "bob"), Mention("", "alice", "alice@example.com")])
    assert found.result.outcome is SENT and found.result.reason == OK
    assert set(found.buzzed) == {"ou_alice", "ou_bob"} and found.not_buzzed == ()
    assert fake.message(root).urgent == [("app", ("ou_bob", "ou_alice"))]
    client.urgent(bot, root, "app", [Mention("", "alice", "alice@example.com")])
    assert len(fake.attempts("contact")) == 1, "an email is looked up once"


def test_urgent_says_who_was_not_buzzed_and_why(client, bot, fake):
    root = client.post(bot, card("critical"), uuid="u-1").message_id
    some = client.urgent(bot, root, "app", [Mention("ou_bob"), Mention("ou_carol"), Mention("", "x", "x@example.com")])
    assert (some.result.outcome, some.result.reason) == (SENT, USERS_NOT_IN_CHAT)
    assert some.buzzed == ("ou_bob",) and set(some.not_buzzed) == {"ou_carol", "x@example.com"}
    nobody = client.urgent(bot, root, "app", [Mention("ou_carol")])
    assert (nobody.result.outcome, nobody.result.reason) == (PERMANENT, USERS_NOT_IN_CHAT)
    unknown = client.urgent(bot, root, "app", [Mention("", "x", "x@example.com")])
    assert (unknown.result.outcome, unknown.result.reason) == (PERMANENT, UNKNOWN_USERS)


def test_urgent_quota(client, bot, fake):
    fake.set_urgent_quota(0)
    root = client.post(bot, card("critical"), uuid="u-1").message_id
    found = client.urgent(bot, root, "sms", [Mention("ou_bob")])
    assert (found.result.outcome, found.result.reason) == (PERMANENT, URGENT_QUOTA)
    assert "kind: app" in found.result.advice


# -- the table -----------------------------------------------------------------------------
@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_in_the_table_is_classified_as_written(code):
    outcome, reason = CODES[code]
    found = classify(400, {"code": code, "msg": "x"}, {})
    assert (found.outcome, found.reason, found.code) == (outcome, reason, code)
    assert found.advice


@pytest.mark.parametrize("status, body, expected", [
    (200, {"code": 0, "msg": "success", "data": {"message_id": "om_1"}}, (SENT, OK)),
    (200, {"code": 230020, "msg": "x"}, (RETRY, RATE_LIMITED)),
    (400, {"code": 230099, "msg": "Failed to create card content, ext=ErrCode: 11310; ErrMsg: card action is lock"},
     (RETRY, RATE_LIMITED)),
    (400, {"code": 230099, "msg": "ErrCode: 100290; invalid user resource"}, (PERMANENT, "bad_mention")),
    (400, {"code": 230099, "msg": "ErrCode: 200621"}, (PERMANENT, "bad_request")),
    (400, {"code": 424242, "msg": "?"}, (PERMANENT, "unexpected_answer")),
    (429, "", (RETRY, "http_429")),
    (503, "<html>", (RETRY, "server_error")),
    (200, "<html>captive</html>", (RETRY, "unexpected_answer")),
    (404, "404 page not found", (PERMANENT, "client_error")),
])
def test_answers_beyond_the_table(status, body, expected):
    found = classify(status, body, {"x-ogw-ratelimit-reset": "2"})
    assert (found.outcome, found.reason) == expected
    if expected[0] is RETRY:
        assert found.retry_after == 2.0


def test_a_store_that_cannot_be_read_or_written_does_not_stop_sending(bot, fake, clock):
    from bridge.errors import StorageError

    class Broken:
        def app_token(self, key):
            raise StorageError("cannot read the outbox: disk I/O error")

        def keep_app_token(self, key, token, expires):
            raise StorageError("cannot write the outbox: disk full")

    client = AppClient(Broken(), clock=clock)
    assert client.send(bot, card("a")).outcome is SENT and client.send(bot, card("b")).outcome is SENT
    assert fake.token_fetches(APP_ID) == 1, "kept in memory meanwhile"
