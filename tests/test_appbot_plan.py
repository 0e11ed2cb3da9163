"""The app-bot plan (bridge.delivery.appbot.plan), pure: from a message's cards, its facts
and the group's card as remembered, the requests that bring the chat up to date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bridge.config import App, Bot, Urgent
from bridge.delivery.appbot import plan, reply_text, uuid_for
from bridge.limits import APP_BUDGET_BYTES, BUDGET_BYTES, app_size, encode_body
from bridge.model import GroupFacts, Mention
from bridge.render import Renderer
from bridge.secret import Secret
from bridge.store.records import Card, CardPart, Head
from bridge.sources import parse
from support.appbot import alert, payload

ALICE = Mention("ou_alice", "alice")
URGENT = Urgent(users=(ALICE,))
APP = App("oncall", "cli_1", Secret("s"))
BOT = Bot("sre", app=APP, chat_id="oc_1", thread_replies=frozenset({"firing", "partly_resolved", "resolved"}),
          urgent=URGENT)
START = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)


def card(n: int = 1, schema: str = "2.0") -> list[dict]:
    body = {"schema": "2.0", "body": {"elements": []}} if schema == "2.0" else {"elements": []}
    return [{"msg_type": "interactive", "card": {**body, "header": {"title": {"tag": "plain_text",
                                                                           "content": f"{i}/{n}"}}}}
            for i in range(1, n + 1)]


def facts(*firing: str, urgent: bool = False, ended: bool = False) -> GroupFacts:
    return GroupFacts(firing=tuple(firing), firing_names=tuple(f.upper() for f in firing), started=START,
                      ended=START + timedelta(minutes=23) if ended else None, urgent=(ALICE,) if urgent else ())


def kept(*firing: str, parts: int = 1, closed: bool = False, buzzed: bool = False) -> Card:
    return Card(tuple(CardPart(f"om_{i}", 0.0) for i in range(parts)), tuple(firing), closed, buzzed)


def ops(steps: list[dict]) -> list[str]:
    return [s["op"] + ("*" if s.get("fresh") else "") for s in steps]


def test_a_new_group_posts_its_card_and_buzzes():
    steps = plan(BOT, card(), facts("a", urgent=True), None)
    assert ops(steps) == ["card*", "urgent"]
    assert steps[0]["reopen"] is False and steps[1]["people"] == [["ou_alice", "alice", ""]]
    assert (steps[-1]["shown"], steps[-1]["parts"]) == (["a"], 1)


def test_a_change_updates_the_card_and_replies_in_its_thread():
    steps = plan(BOT, card(), facts("a", "b"), kept("a", buzzed=True))
    assert ops(steps) == ["card", "reply"]
    assert steps[1]["message"] == {"msg_type": "text", "content": {"text": "🔴 1 more firing: B"}}


def test_urgent_once_per_firing_and_for_a_critical_alert_that_joins_later():
    assert "urgent" not in ops(plan(BOT, card(), facts("a", "b", urgent=True), kept("a", buzzed=True)))
    assert "urgent" in ops(plan(BOT, card(), facts("a", "b", urgent=True), kept("a", buzzed=False)))


def test_resolved_turns_the_card_green_and_says_after_how_long():
    steps = plan(BOT, card(), facts(ended=True), kept("a", "b", buzzed=True))
    assert ops(steps) == ["card", "reply"]
    assert steps[1]["message"]["content"]["text"] == "✅ Resolved after 23m"
    assert steps[-1]["shown"] == []


def test_partly_resolved():
    steps = plan(BOT, card(), facts("b"), kept("a", "b"))
    assert steps[1]["message"]["content"]["text"] == "✅ 1 resolved, 1 still firing"


def test_firing_again_after_resolved_is_a_new_card_and_a_new_urgent():
    steps = plan(BOT, card(), facts("a", urgent=True), kept(closed=True, buzzed=True))
    assert ops(steps) == ["card*", "urgent"] and steps[0]["reopen"] is True


def test_a_repeated_resolved_updates_the_green_card_quietly():
    assert ops(plan(BOT, card(), facts(ended=True), kept(closed=True))) == ["card"]


@pytest.mark.parametrize("wanted, firing, before, text", [
    (set(), ("a", "b"), ("a",), None),
    ({"resolved"}, ("a", "b"), ("a",), None),
    ({"firing"}, (), ("a",), None),
    ({"firing"}, ("a",), ("a",), None),
])
def test_replies_only_for_the_changes_the_bot_names(wanted, firing, before, text):
    bot = Bot("sre", app=APP, chat_id="oc_1", thread_replies=frozenset(wanted))
    assert reply_text(bot, facts(*firing, ended=not firing), kept(*before)) == text


def test_without_update_in_place_every_message_is_new_cards_and_urgent_still_once():
    bot = Bot("sre", app=APP, chat_id="oc_1", update_in_place=False, urgent=URGENT,
              thread_replies=frozenset({"firing"}))
    assert ops(plan(bot, card(2), facts("a", "b", urgent=True), kept("a", parts=3, buzzed=True))) == ["card*", "card"]


@pytest.mark.parametrize("schema", ["2.0", "1.0"])
def test_parts_the_group_no_longer_needs_are_stubbed_in_the_cards_schema(schema):
    steps = plan(BOT, card(1, schema), facts("a"), kept("a", parts=3, buzzed=True))
    assert ops(steps) == ["card", "stub", "stub"] and [s["part"] for s in steps[1:]] == [1, 2]
    stub = steps[1]["message"]["card"]
    assert stub["header"]["template"] == "grey" and stub["config"]["update_multi"] is True
    assert (stub.get("schema") == "2.0") == (schema == "2.0")
    assert steps[-1]["parts"] == 1


def test_the_uuid_is_stable_per_request_and_short():
    head = Head(7, "g", "alertmanager", None, None, True, [], 0, 0, 1000.5)
    one = uuid_for("sre", head, 0)
    assert one == uuid_for("sre", head, 0) and len(one) <= 50
    others = {uuid_for("sre", head, 1), uuid_for("db", head, 0),
              uuid_for("sre", Head(7, "g", "alertmanager", None, None, True, [], 0, 0, 1000.6), 0)}
    assert one not in others and len(others) == 3


def test_app_bots_cards_are_cut_to_30_kb_measured_as_sent():
    """The same big group: a custom bot's parts fit 20 KB, an app bot's fewer, bigger ones
    fit 30 KB once its card is escaped into the content string."""
    many = [alert(f"Alert{i}", instance=f"host-{i}-" + "x" * 300) for i in range(120)]
    notification = parse("alertmanager", __import__("json").loads(payload(*many)))
    renderer = Renderer(None, START.tzinfo)
    custom = renderer.render(notification, Bot("hook"))
    app = renderer.render(notification, BOT)
    assert len(app) < len(custom)
    assert all(len(encode_body(m)) <= BUDGET_BYTES for m in custom)
    assert all(app_size(m) <= APP_BUDGET_BYTES for m in app)
    assert max(app_size(m) for m in app) > BUDGET_BYTES, "the app's room is used"
