"""Card actions in one process (the Flask app, its delivery threads, the real outbox) against
the strict fake Open API and the real Alertmanager: POST /feishu/callback as Feishu's
(URL check, refusals with their reasons), `Actions.tap` called directly as the `events`
process calls it and the same tap through HTTP, who may act, Ack stopping 加急."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from bridge.config import loads
from bridge.web import create_app
from fake_open_api.callbacks import card_action, encrypt, find_button, request_for
from procs import AlertmanagerProcess, alertmanager_binary
from support.appbot import ALICE, APP_ID, APP_SECRET, BOB, CHAT, alert, buzzes, config_yaml, payload, setup_fake, titles

pytestmark = pytest.mark.usefixtures("no_proxy_env")
ENCRYPT_KEY, TOKEN = "ek-unit-7Hq", "vt-unit-3Zp"
NO_PROXY = {"http": "", "https": ""}


@pytest.fixture
def alertmanager(tmp_path):
    am = AlertmanagerProcess("route: {receiver: none}\nreceivers: [{name: none}]\n", tmp_path / "am",
                             binary=alertmanager_binary())
    yield am
    am.stop()


@pytest.fixture
def service(fake_open_api, tmp_path, alertmanager):
    setup_fake(fake_open_api)
    fake_open_api.add_user(ALICE, "alice@example.com", name="Alice")
    fake_open_api.set_callback_keys(APP_ID, ENCRYPT_KEY, TOKEN)
    apps = []

    def start(actions: str = "", enabled: bool = True):
        text = config_yaml(fake_open_api.base_url, storage=tmp_path / "outbox.db", extra=f"""
            actions:
              enabled: {str(enabled).lower()}
              alertmanagers: [{{external_url: "http://alertmanager.test:9093", url: "{alertmanager.url}"}}]\n""" + actions)
        text = text.replace(f"    base_url: {fake_open_api.base_url}\n", f"    base_url: {fake_open_api.base_url}\n"
                            f"    encrypt_key: {ENCRYPT_KEY}\n    verification_token: {TOKEN}\n")
        app = create_app(loads(text, env={}), logger=logging.getLogger("bridge.test-card-actions"))
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.extensions["bridge"].services.stop(timeout=2)


def fire(app, fake, *alerts) -> object:
    answer = app.test_client().post("/alertmanager", data=payload(*alerts), headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    fake.wait_for(lambda: [t for t, _ in titles(fake)] == [f"[FIRING:{len(alerts)}]"], what="the card")
    return fake.chat(CHAT)[0]


def post_tap(app, body: dict, form: str = "signed"):
    raw, headers = request_for(body, ENCRYPT_KEY, form=form)
    return app.test_client().post("/feishu/callback", data=raw, headers=headers)


def silences(am) -> list[dict]:
    return requests.get(f"{am.url}/api/v2/silences", timeout=5, proxies=NO_PROXY).json()


def test_the_url_check_is_answered_with_its_challenge(service):
    app = service()
    check = {"challenge": "ch-42", "token": TOKEN, "type": "url_verification"}
    raw = json.dumps({"encrypt": encrypt(ENCRYPT_KEY, json.dumps(check).encode())}).encode()
    answer = app.test_client().post("/feishu/callback", data=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.get_json() == {"challenge": "ch-42"}
    wrong = {**check, "token": "nope"}
    raw = json.dumps({"encrypt": encrypt(ENCRYPT_KEY, json.dumps(wrong).encode())}).encode()
    answer = app.test_client().post("/feishu/callback", data=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 401 and answer.get_json() == {"error": "the verification token does not match"}


def test_refusals_say_why_and_never_show_a_secret(service, fake_open_api):
    app = service()
    client = app.test_client()
    tap = card_action(APP_ID, TOKEN, open_id=ALICE, chat=CHAT, message_id="om_1", value={}, when=0)
    cases = [
        (b"not json", {}, 400, "the body is not JSON"),
        (json.dumps({"encrypt": "%%%"}).encode(), {}, 401, "the body does not decrypt with the app's encrypt_key"),
        (json.dumps(tap).encode(), {}, 401, "an unencrypted callback, but the app has an encrypt_key"),
        (*request_for({"open_id": ALICE, "token": TOKEN, "action": {}}, ENCRYPT_KEY), 400,
         "not a schema 2.0 callback: subscribe to card.action.trigger (the new card callback), not the old "
         "message-card request URL"),
    ]
    for raw, headers, status, reason in cases:
        answer = client.post("/feishu/callback", data=raw, headers={"Content-Type": "application/json", **headers})
        assert (answer.status_code, answer.get_json()) == (status, {"error": reason})
        for secret in (ENCRYPT_KEY, TOKEN, APP_SECRET):
            assert secret not in answer.get_data(as_text=True)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'feishu_bridge_card_actions_total{action="unknown",result="refused"} 4.0' in metrics


def test_off_unless_enabled(service):
    app = service(enabled=False)
    answer = app.test_client().post("/feishu/callback", data=b"{}", headers={"Content-Type": "application/json"})
    assert answer.status_code == 404 and "actions.enabled" in answer.get_json()["error"]
    assert app.extensions["bridge"].services.runtime.actions is None


def test_tap_directly_and_through_http_are_the_same_handler(service, fake_open_api, alertmanager):
    app = service()
    card = fire(app, fake_open_api, alert("DiskFull"))
    value = find_button(card.content, "Silence 1h")
    actions = app.extensions["bridge"].services.runtime.actions
    body = card_action(APP_ID, TOKEN, open_id=ALICE, chat=CHAT, message_id=card.message_id, value=value,
                       when=fake_open_api.now())
    direct = actions.tap("oncall", body)     # as the events process calls it
    assert direct["toast"] == {"type": "success", "content": "Silenced for 1h."}
    assert "🔕 Silenced by Alice until" in json.dumps(direct["card"], ensure_ascii=False)
    assert direct["card"]["type"] == "raw" and direct["card"]["data"]["schema"] == "2.0"
    (silence,) = silences(alertmanager)
    assert silence["createdBy"] == "Alice" and silence["matchers"] == [
        {"name": "cluster", "value": "prod", "isRegex": False, "isEqual": True}]
    over_http = post_tap(app, {**body, "header": {**body["header"], "create_time": str(int(fake_open_api.now() * 1e6))}})
    assert over_http.status_code == 200
    assert over_http.get_json()["toast"]["content"].startswith("Already silenced by Alice until ")
    assert over_http.get_json()["card"] == direct["card"]
    assert len(silences(alertmanager)) == 1


def test_a_value_is_good_only_in_its_own_chat_and_for_allowed_people(service, fake_open_api, alertmanager):
    app = service(actions=f"              allowed_users: [{BOB}]\n")
    card = fire(app, fake_open_api, alert("DiskFull"))
    actions = app.extensions["bridge"].services.runtime.actions
    value = find_button(card.content, "Silence 1h")

    def tap(open_id: str, chat: str = CHAT, value: object = value) -> dict:
        return actions.tap("oncall", card_action(APP_ID, TOKEN, open_id=open_id, chat=chat,
                                                 message_id=card.message_id, value=value, when=0))

    assert tap(BOB, chat="oc_elsewhere")["toast"]["content"].startswith("This button is not valid here")
    assert tap(BOB, value={**value, "d": "24h"})["toast"]["content"].startswith("This button is not valid here")
    assert tap(BOB, value={**value, "g": "0" * 24})["toast"]["content"].startswith("This button is not valid here")
    assert tap(ALICE)["toast"] == {"type": "error", "content": "You are not among the people allowed to act on "
                                                              "alerts from this card."}
    assert silences(alertmanager) == []
    assert tap(BOB)["toast"]["type"] == "success"
    assert silences(alertmanager)[0]["createdBy"] == BOB, "no name for Bob: his open_id"
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    for line in ('{action="unknown",result="forged"} 3.0', '{action="silence",result="denied"} 1.0',
                 '{action="silence",result="ok"} 1.0'):
        assert "feishu_bridge_card_actions_total" + line in metrics


def test_acknowledge_stops_urgent_for_the_group(service, fake_open_api):
    app = service()
    fake = fake_open_api
    fake.script("urgent", *[("http", 503)] * 6)   # 加急 waits in its retries
    answer = app.test_client().post("/alertmanager", data=payload(alert("DiskFull")),
                                    headers={"Content-Type": "application/json"})
    assert answer.status_code == 200
    fake.wait_for(lambda: fake.attempts("urgent"), what="the first urgent attempt")
    (card,) = fake.chat(CHAT)
    tapped = app.extensions["bridge"].services.runtime.actions.tap("oncall", card_action(
        APP_ID, TOKEN, open_id=ALICE, chat=CHAT, message_id=card.message_id,
        value=find_button(card.content, "Acknowledge"), when=0))
    assert tapped["toast"]["type"] == "success"
    assert "👀 Alice is on it (" in json.dumps(tapped["card"], ensure_ascii=False)
    fake.wait_for(lambda: all(d == 0 for _, d, _ in app.extensions["bridge"].services.delivery.depths()),
                  what="the outbox empty")
    assert buzzes(fake) == [] and len(fake.attempts("urgent")) < 6


def test_alertmanager_refusing_and_unreachable_are_said_in_words(alertmanager):
    from bridge.config import ActionsConfig, SilenceTarget
    from bridge.secret import Secret
    from bridge.silences import SilenceError, Silences

    silences = Silences(ActionsConfig(enabled=True, alertmanagers=(
        SilenceTarget("https://am.example.com", alertmanager.url, Secret("am-T0ken")),)))
    where = silences.where("alertmanager", "https://am.example.com/")
    assert where.api == alertmanager.url + "/api/v2" and where.headers == {"Authorization": "Bearer am-T0ken"}
    assert where.silence_url("abc") == "https://am.example.com/#/silences/abc"
    with pytest.raises(SilenceError) as refused:   # a group without groupLabels: no matcher at all
        silences.create(where, {}, 1e9, 1e9 + 60, "Alice", "test")
    assert str(refused.value) == ('Alertmanager refused: HTTP 422 ({"code":612,"message":"matchers in body should '
                                  'have at least 1 items"})')
    with pytest.raises(SilenceError) as gone:
        silences.expire(where, "6e3c1c52-1a2b-4c5d-8e9f-0a1b2c3d4e5f")
    assert str(gone.value) == "Alertmanager does not know this silence any more"
    unmapped = silences.where("alertmanager", "http://127.0.0.1:9")
    with pytest.raises(SilenceError, match="^Alertmanager could not be reached$"):
        silences.create(unmapped, {"a": "b"}, 1e9, 1e9 + 60, "Alice", "test")
    with pytest.raises(SilenceError, match="actions.grafana"):
        silences.where("grafana", "http://grafana:3000")
    assert "am-T0ken" not in str(refused.value) + str(gone.value)


def test_the_same_callback_twice_is_a_replay(service, fake_open_api, alertmanager):
    app = service()
    card = fire(app, fake_open_api, alert("DiskFull"))
    body = card_action(APP_ID, TOKEN, open_id=ALICE, chat=CHAT, message_id=card.message_id,
                       value=find_button(card.content, "Acknowledge"), when=fake_open_api.now())
    raw, headers = request_for(body, ENCRYPT_KEY)
    client = app.test_client()
    assert client.post("/feishu/callback", data=raw, headers=headers).status_code == 200
    again = client.post("/feishu/callback", data=raw, headers=headers)
    assert (again.status_code, again.get_json()) == (401, {"error": "this event was handled already: a replay"})
    no_id = {**body, "header": {k: v for k, v in body["header"].items() if k != "event_id"}}
    answer = post_tap(app, no_id)
    assert (answer.status_code, answer.get_json()) == (400, {"error": "a callback without header.event_id"})
