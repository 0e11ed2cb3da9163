"""App bots end to end in one process (the Flask app and its delivery threads, the real
outbox, the real client) against the strict fake Open API: one living card per alert
group, updated in place, thread replies, urgent once per firing; and what goes wrong."""

from __future__ import annotations

import logging

import pytest

from bridge.config import loads
from bridge.delivery.appbot import moved
from bridge.web import create_app
from fake_open_api import answers as a
from support.appbot import (ALICE, APP_ID, BOB, CHAT, alert, buzzes, config_yaml, payload, setup_fake,
                            thread_texts, titles)

pytestmark = pytest.mark.usefixtures("no_proxy_env")


@pytest.fixture
def service(fake_open_api, tmp_path):
    """Start the app on a config; yields a function posting an Alertmanager webhook."""
    setup_fake(fake_open_api)
    started = []

    def start(extra: str = "", kind: str = "app"):
        config = loads(config_yaml(fake_open_api.base_url, storage=tmp_path / "outbox.db", extra=extra, kind=kind),
                       env={})
        app = create_app(config, logger=logging.getLogger("bridge.test-appbot"))
        started.append(app)
        client = app.test_client()

        def post(body: bytes) -> None:
            answer = client.post("/alertmanager", data=body, headers={"Content-Type": "application/json"})
            assert answer.status_code == 200, answer.get_json()

        return post, app

    yield start
    for app in started:
        app.extensions["bridge"].services.stop(timeout=2)


def settled(fake, app) -> bool:
    return all(depth == 0 for _, depth, _ in app.extensions["bridge"].services.delivery.depths())


def test_one_card_per_group_updated_in_place_with_thread_replies_and_one_urgent(service, fake_open_api):
    post, app = service()
    fake = fake_open_api
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: titles(fake) == [("[FIRING:1]", "red")] and buzzes(fake), what="the first card")
    (card,) = fake.chat(CHAT)
    post(payload(alert("DiskFull"), alert("HighLoad", severity="warning")))
    fake.wait_for(lambda: titles(fake) == [("[FIRING:2]", "red")] and thread_texts(fake, card.message_id),
                  what="the card updated, a reply")
    post(payload(alert("DiskFull", "resolved"), alert("HighLoad", "resolved", severity="warning")))
    fake.wait_for(lambda: titles(fake) == [("[RESOLVED]", "green")] and len(fake.thread(card.message_id)) == 2,
                  what="the card green, a second reply")
    fake.wait_for(lambda: settled(fake, app), what="the outbox empty")
    assert [m.message_id for m in fake.chat(CHAT)] == [card.message_id], "one card, the same one"
    assert thread_texts(fake, card.message_id) == ["🔴 1 more firing: HighLoad", "✅ Resolved after 23m"]
    assert buzzes(fake) == [("app", (BOB, ALICE))], "buzzed once, both (alice by her email)"
    assert fake.message(card.message_id).updates == 2 and not fake.throttled()


def test_the_group_firing_again_gets_a_new_card_and_a_new_urgent(service, fake_open_api):
    post, app = service()
    fake = fake_open_api
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: buzzes(fake), what="the first card, buzzed")
    post(payload(alert("DiskFull", "resolved")))
    fake.wait_for(lambda: titles(fake) == [("[RESOLVED]", "green")], what="resolved")
    post(payload(alert("DiskFull", starts="2026-03-02T09:10:00Z")))
    fake.wait_for(lambda: len(titles(fake)) == 2, what="a second card")
    fake.wait_for(lambda: settled(fake, app), what="the outbox empty")
    assert titles(fake) == [("[RESOLVED]", "green"), ("[FIRING:1]", "red")]
    assert len(buzzes(fake)) == 2


def test_a_deleted_card_is_replaced_by_a_new_one(service, fake_open_api, caplog):
    caplog.set_level(logging.INFO)
    post, app = service()
    fake = fake_open_api
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: titles(fake), what="the card")
    fake.delete(fake.chat(CHAT)[0].message_id)
    post(payload(alert("DiskFull", "resolved")))
    fake.wait_for(lambda: titles(fake) == [("[RESOLVED]", "green")], what="a new card")
    assert [t.code for t in fake.attempts("patch")] == [a.DELETED]
    # Logged once the new card is out (the line names it): after the fake shows it.
    fake.wait_for(lambda: any(getattr(r, "event", "") == "card_gone" for r in caplog.records), what="card_gone")


def test_a_card_older_than_feishu_updates_is_replaced(service, fake_open_api):
    post, app = service()
    fake = fake_open_api
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: titles(fake), what="the card")
    fake.wait_for(lambda: settled(fake, app), what="the outbox empty")
    fake.advance(14 * 86400 + 10)
    post(payload(alert("DiskFull"), alert("HighLoad")))
    fake.wait_for(lambda: len(titles(fake)) == 2, what="a new card")
    # Feishu's clock moved 14 days, the bridge's did not: its token is refused (and refreshed)
    # before the card is, and it learns the card's age from Feishu's answer.
    assert [t.code for t in fake.attempts("patch")] == [a.TOKEN_INVALID, a.TOO_OLD]
    assert titles(fake) == [("[FIRING:1]", "red"), ("[FIRING:2]", "red")]
    old = fake.chat(CHAT)[0].message_id
    fake.wait_for(lambda: thread_texts(fake, old), what="the old card's pointer")
    fake.wait_for(lambda: settled(fake, app), what="the outbox empty")
    assert thread_texts(fake, old) == [moved()["content"]["text"]]


def test_a_chat_the_bot_is_not_in_is_one_dead_letter_with_advice(service, fake_open_api, caplog):
    post, app = service()
    fake = fake_open_api
    fake.world.chats[CHAT].bots.clear()
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: settled(fake, app), what="the message given up on")
    (dead,) = app.extensions["bridge"].services.store.list(dead=True)
    assert (dead.reason, dead.code) == ("not_in_chat", a.BOT_NOT_IN_CHAT)
    assert len(fake.attempts("send")) == 1, "no retry loop"
    lines = [r for r in caplog.records if getattr(r, "event", "") == "dead_letter"]
    assert len(lines) == 1 and "add the bot to the group" in lines[0].getMessage()


def test_a_wrong_app_secret_is_one_dead_letter_and_never_shown(service, fake_open_api, caplog):
    fake = fake_open_api
    fake.world.apps[APP_ID].secret = "rotated"
    post, app = service()
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: settled(fake, app), what="the message given up on")
    (dead,) = app.extensions["bridge"].services.store.list(dead=True)
    assert dead.reason == "bad_credentials" and len(fake.attempts("token")) == 1
    lines = [r for r in caplog.records if getattr(r, "event", "") == "dead_letter"]
    assert len(lines) == 1 and "app_secret" in lines[0].getMessage(), "one line, with advice"
    assert "appbot-S3cret-4Kq" not in caplog.text + repr(dead)


def test_urgent_refused_by_the_group_never_blocks_the_card(service, fake_open_api, caplog):
    fake = fake_open_api
    fake.world.chats[CHAT].urgent_allowed = False
    post, app = service()
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: settled(fake, app), what="sent")
    assert titles(fake) == [("[FIRING:1]", "red")] and len(fake.attempts("urgent")) == 1
    post(payload(alert("DiskFull"), alert("HighLoad")))
    fake.wait_for(lambda: titles(fake) == [("[FIRING:2]", "red")], what="updated")
    fake.wait_for(lambda: settled(fake, app), what="sent")
    assert len(fake.attempts("urgent")) == 1, "a refusal is not tried again in the same firing"
    (line,) = [r for r in caplog.records if getattr(r, "event", "") == "urgent_failed"]
    assert "群设置" in line.getMessage() and app.extensions["bridge"].services.store.list(dead=True) == []


def test_a_split_card_keeps_one_card_per_part_and_stubs_the_parts_no_longer_needed(service, fake_open_api):
    post, app = service()
    fake = fake_open_api
    big = [alert(f"Alert{i:02d}", severity="warning", detail="x" * 900) for i in range(40)]
    post(payload(*big))
    fake.wait_for(lambda: settled(fake, app) and len(titles(fake)) >= 2, what="the group in parts")
    first = [m.message_id for m in fake.chat(CHAT)]
    assert [c for c, _ in titles(fake)] == ["[FIRING:40]"] * len(first)
    post(payload(*big[:3]))
    fake.wait_for(lambda: settled(fake, app) and titles(fake)[0][0] == "[FIRING:3]", what="one part, stubs")
    assert [m.message_id for m in fake.chat(CHAT)] == first, "the same messages, updated"
    headers = [c["header"] for c in fake.cards(CHAT)]
    assert [h["template"] for h in headers] == ["orange"] + ["grey"] * (len(first) - 1), "never two live cards"
    assert [h["title"]["content"] for h in headers[1:]] == [
        f"Part {i} merged into the card above" for i in range(2, len(first) + 1)]


@pytest.mark.slow
def test_a_storm_of_groups_gets_no_rate_limit_answer(service, fake_open_api):
    post, app = service()
    fake = fake_open_api
    for i in range(25):
        post(payload(alert("DiskFull", severity="warning"), group=f"cluster-{i:02d}"))
    fake.wait_for(lambda: settled(fake, app), timeout=30, what="every group's card")
    assert len(fake.chat(CHAT)) == 25 and not fake.throttled()
    sends = [t for t in fake.attempts("send")]
    assert len(sends) == 25 and all(t.code == 0 for t in sends)



def test_sms_urgent_over_the_companys_quota_buzzes_in_the_app_instead(service, fake_open_api, caplog):
    fake = fake_open_api
    fake.set_urgent_quota(0)
    post, app = service(kind="sms")
    post(payload(alert("DiskFull")))
    fake.wait_for(lambda: settled(fake, app) and buzzes(fake), what="the card, buzzed")
    assert [t.code for t in fake.attempts("urgent")] == [a.URGENT_QUOTA, 0]
    assert buzzes(fake) == [("app", (BOB, ALICE))]
    assert [r for r in caplog.records if getattr(r, "event", "") == "urgent_degraded"]
