"""POST /send/<bot>, the relay, in process: every Feishu message type end to end through the
strict fake Feishu (which checks each type's shape, the signature and the keyword), templates,
mentions, splitting, deduplication, and the refusals, each before anything is stored.

The request bodies are tests/fixtures/feishu/requests/*.json: copies of the examples in
Feishu's custom-bot guide (tests/fixtures/SOURCES.md, "Feishu requests"); the relay posts
them as Feishu's guide writes them.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from bridge import create_app
from bridge.config import loads
from bridge.errors import ConfigError
from bridge.limits import BODY_LIMIT_BYTES, encode_body

REQUESTS = Path(__file__).parent / "fixtures" / "feishu" / "requests"
SECRET = "relay-test-secret-Kx3"
TOKEN = "relay-inbound-token-9Wq"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEYWORD = "运维"
# A relay template: a 1.0 card from data. `{{ mentions | at }}` places the pings itself.
DEPLOY = """{"msg_type": "interactive", "card": {
  "header": {"title": {"tag": "plain_text", "content": {{ "Deploy of " ~ data.service ~ " " ~ data.version }}},
             "template": {{ "green" if data.ok else "red" }}},
  "elements": [
    {"tag": "markdown", "content": {{ "**Service:** " ~ (data.service | md) ~ "\\n**By:** " ~ (data.who | md) }}},
    {"tag": "div", "text": {"tag": "plain_text", "content": {{ data.notes }}}}
  ]}}
"""
PING = """{"msg_type": "text", "content": {"text": {{ (mentions | at_text) ~ " " ~ data.line }}}}
"""
BROKEN = """{"msg_type": "text", "content": {"text": {{ data.count / 0 }}}}
"""


def relay_config(fake, tmp_path: Path, relay: str = "relay: {enabled: true}", auth: str = f"auth: {{bearer_token: {TOKEN}}}",
                 extra: str = "", tokens: str = "") -> str:
    """Bot `ops` (signed, keyword 运维) and `pics` (signed, no keyword) on the fake, at
    tok-relay-ops and tok-relay-pics (`tokens` appended, for a second config on one fake)."""
    templates = tmp_path / "templates"
    templates.mkdir(parents=True, exist_ok=True)
    (templates / "deploy.json.j2").write_text(DEPLOY, encoding="utf-8")
    (templates / "ping.json.j2").write_text(PING, encoding="utf-8")
    (templates / "broken.json.j2").write_text(BROKEN, encoding="utf-8")
    ops = fake.add_bot("tok-relay-ops" + tokens, secret=SECRET, keywords=[KEYWORD])
    pics = fake.add_bot("tok-relay-pics" + tokens, secret=SECRET)
    return f"""
bots:
  - {{name: ops, webhook_url: "{ops}", secret: {SECRET}, keywords: ["{KEYWORD}"]}}
  - {{name: pics, webhook_url: "{pics}", secret: {SECRET}}}
  - {{name: quiet}}
route: {{bots: [ops]}}
users: {{alice: ou_a11ce, bob: {{open_id: ou_b0b}}}}
templates_dir: {templates}
storage: {{path: {tmp_path / 'outbox.db'}}}
{auth}
{relay}
{extra}
"""


@pytest.fixture
def app(fake_feishu, tmp_path):
    app = create_app(loads(relay_config(fake_feishu, tmp_path), env={}), logger=logging.getLogger("bridge"))
    yield app
    app.extensions["bridge"].stop(timeout=5)


@pytest.fixture
def client(app):
    return app.test_client()


def send(client, bot: str, body, headers=AUTH, content_type: str = "application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body, ensure_ascii=False).encode()
    return client.post(f"/send/{bot}", data=data, content_type=content_type, headers=headers)


def stored(app) -> list:
    return app.extensions["bridge"].services.store.list()


def fixture(name: str) -> dict:
    return json.loads((REQUESTS / name).read_text(encoding="utf-8"))


# -- every message type, end to end ------------------------------------------------------
@pytest.mark.parametrize("name", ["text-example.json", "text-at-example.json", "post-example.json",
                                  "post-at-all-example.json", "card-v1-at-example.json", "card-v2-example.json"])
def test_each_text_like_type_reaches_feishu_signed_with_the_keyword_where_feishu_looks(client, fake_feishu, name):
    body = fixture(name)
    answer = send(client, "ops", body)
    assert answer.status_code == 200 and answer.get_json() == {"status": "accepted", "messages": 1}
    # The fake checked the shape, the signature and the keyword; and nothing else changed.
    assert fake_feishu.wait_for("tok-relay-ops", 1) == [_keyworded(body)]
    (attempt,) = fake_feishu.attempts("tok-relay-ops")
    assert attempt.why == "accepted" and attempt.body["sign"] and attempt.body["timestamp"]


def _keyworded(body: dict) -> dict:
    """The body as the bridge should send it to `ops`: its keyword where Feishu looks."""
    body = json.loads(json.dumps(body))
    if body["msg_type"] == "text":
        body["content"]["text"] = f"{KEYWORD} {body['content']['text']}"
    elif body["msg_type"] == "post":
        for language in body["content"]["post"].values():
            language["title"] = f"{KEYWORD} {language.get('title', '')}".rstrip()
    else:
        header = body["card"].setdefault("header", {})
        if "title" in header:
            header["title"]["content"] = f"{KEYWORD} {header['title']['content']}"
        else:
            header["title"] = {"tag": "plain_text", "content": KEYWORD}
    return body


@pytest.mark.parametrize("name", ["image-example.json", "share-chat-example.json"])
def test_image_and_share_chat_reach_a_bot_without_keywords_as_given(client, fake_feishu, name):
    body = fixture(name)
    assert send(client, "pics", body).get_json() == {"status": "accepted", "messages": 1}
    assert fake_feishu.wait_for("tok-relay-pics", 1) == [body]
    assert fake_feishu.attempts("tok-relay-pics")[0].body["sign"]


def test_image_to_a_bot_with_keywords_is_refused_before_it_is_stored(app, client):
    answer = send(client, "ops", fixture("image-example.json"))
    assert answer.status_code == 400 and "keywords" in answer.get_json()["error"] and "19024" in answer.get_json()["error"]
    assert stored(app) == []


def test_the_text_shorthand_and_a_card_given_as_content(client, fake_feishu):
    card = fixture("card-v2-example.json")["card"]
    assert send(client, "ops", {"text": "Deploy of api v1.42 finished"}).status_code == 200
    assert send(client, "ops", {"msg_type": "interactive", "content": card}).status_code == 200
    text, interactive = fake_feishu.wait_for("tok-relay-ops", 2)
    assert text == {"msg_type": "text", "content": {"text": f"{KEYWORD} Deploy of api v1.42 finished"}}
    assert interactive == _keyworded({"msg_type": "interactive", "card": card})


# -- templates ---------------------------------------------------------------------------
def test_a_template_renders_data_in_the_sandbox_json_safe_and_without_pings(client, fake_feishu):
    nasty = 'He said "hi"\n<at id=all></at> {{ 7*7 }} \\ end'
    answer = send(client, "ops", {"template": "deploy", "data": {"service": "api", "version": "v1.42", "ok": True,
                                                                  "who": "ci <at id=all></at>", "notes": nasty}})
    assert answer.status_code == 200, answer.get_json()
    (card,) = fake_feishu.wait_for("tok-relay-ops", 1)
    assert card["card"]["header"] == {"title": {"tag": "plain_text", "content": f"{KEYWORD} Deploy of api v1.42"},
                                      "template": "green"}
    notes = card["card"]["elements"][1]["text"]["content"]
    # Every character arrived, and no value pinged anyone: the tags are neutralised.
    assert notes == nasty.replace("<", "<\u2060")
    assert "<at" not in json.dumps(card, ensure_ascii=False)


def test_a_template_places_the_mentions_or_the_bridge_adds_them(client, fake_feishu):
    assert send(client, "ops", {"template": "ping", "data": {"line": "backup done"},
                                "mentions": {"users": ["alice"]}}).status_code == 200
    assert send(client, "ops", {"template": "deploy", "data": {"service": "db", "version": "2", "who": "x", "notes": "n"},
                                "mentions": {"users": ["bob"], "all": True}}).status_code == 200
    text, card = fake_feishu.wait_for("tok-relay-ops", 2)
    assert text["content"]["text"] == f'{KEYWORD} <at user_id="ou_a11ce">alice</at> backup done'
    assert card["card"]["elements"][0] == {"tag": "markdown", "content": "<at id=all></at> <at id=ou_b0b></at>"}


@pytest.mark.parametrize("body,phrase", [
    ({"template": "nope"}, "no template 'nope' in templates_dir"),
    ({"template": "default"}, "no template 'default' in templates_dir"),   # the shipped ones are for alerts
    ({"template": "broken", "data": {"count": 1}}, "broken.json.j2:1: ZeroDivisionError"),
    ({"template": "deploy", "data": []}, "data: expected an object"),
])
def test_template_problems_are_400_naming_the_template_and_never_stored(app, client, body, phrase):
    answer = send(client, "ops", body)
    assert answer.status_code == 400 and phrase in answer.get_json()["error"], answer.get_json()
    assert "/templates/" not in answer.get_json()["error"]   # not where the server keeps it
    assert stored(app) == []


# -- splitting ---------------------------------------------------------------------------
def test_a_60_kb_text_is_delivered_as_numbered_parts_all_accepted(client, fake_feishu):
    lines = [f"line {i:05d} " + "日志" * 20 + "x" * 40 for i in range(700)]
    text = "\n".join(lines)
    assert len(text.encode()) > 60_000
    answer = send(client, "ops", {"text": text})
    count = answer.get_json()["messages"]
    assert answer.status_code == 200 and count >= 3
    parts = fake_feishu.wait_for("tok-relay-ops", count)
    assert not fake_feishu.throttled("tok-relay-ops")
    shown = []
    for n, part in enumerate(parts, 1):
        body = part["content"]["text"]
        assert len(encode_body(part)) <= BODY_LIMIT_BYTES
        prefix = f"{KEYWORD} ({n}/{count}) "
        assert body.startswith(prefix)
        shown.append(body[len(prefix):])
    assert "".join(shown) == text   # every character, in order, cut between lines


def test_one_enormous_line_is_cut_anywhere_and_still_arrives_whole(client, fake_feishu):
    text = "é" * 30_000 + '"\\' * 4_000
    count = send(client, "ops", {"text": text}).get_json()["messages"]
    parts = fake_feishu.wait_for("tok-relay-ops", count)
    assert "".join(p["content"]["text"].split(") ", 1)[1] for p in parts) == text


def test_a_card_over_200_components_is_split_between_elements(client, fake_feishu):
    card = {"schema": "2.0", "header": {"title": {"tag": "plain_text", "content": "Nightly report"}},
            "body": {"elements": [{"tag": "markdown", "content": f"row {i}"} for i in range(450)]}}
    count = send(client, "ops", {"msg_type": "interactive", "card": card}).get_json()["messages"]
    assert count == 3
    parts = fake_feishu.wait_for("tok-relay-ops", count)   # the fake refuses a 2.0 card over 200
    titles = [p["card"]["header"]["title"]["content"] for p in parts]
    assert titles == [f"{KEYWORD} Nightly report ({n}/3)" for n in (1, 2, 3)]
    rows = [e["content"] for p in parts for e in p["card"]["body"]["elements"]]
    assert rows == [f"row {i}" for i in range(450)]


def test_a_long_post_is_split_between_paragraphs(client, fake_feishu):
    paragraphs = [[{"tag": "text", "text": f"paragraph {i} " + "字" * 300}] for i in range(60)]
    body = {"msg_type": "post", "content": {"post": {"en_us": {"title": "Digest", "content": paragraphs}}}}
    count = send(client, "ops", body).get_json()["messages"]
    parts = fake_feishu.wait_for("tok-relay-ops", count)
    assert count >= 2 and [p["content"]["post"]["en_us"]["title"] for p in parts] == \
        [f"{KEYWORD} Digest ({n}/{count})" for n in range(1, count + 1)]
    assert [para for p in parts for para in p["content"]["post"]["en_us"]["content"]] == paragraphs


@pytest.mark.parametrize("body,phrase", [
    ({"text": "x" * 250_000}, "the relay sends for one message"),
    ({"msg_type": "interactive", "card": {"elements": [{"tag": "markdown", "content": "y" * 25_000}]}},
     "card.elements[0]: over Feishu's limits on its own"),
    ({"msg_type": "post", "content": {"post": {lang: {"content": [[{"tag": "text", "text": "z" * 12_000}]]}
                                               for lang in ("zh_cn", "en_us")}}}, "more than one language"),
])
def test_what_cannot_be_cut_to_size_is_400(app, client, body, phrase):
    answer = send(client, "ops", body)
    assert answer.status_code == 400 and phrase in answer.get_json()["error"], answer.get_json()
    assert stored(app) == []


# -- delivery: the alerts' retries and dead letters ---------------------------------------
def test_a_relayed_message_is_retried_part_by_part_and_a_refusal_is_a_dead_letter(fake_feishu, tmp_path):
    fast = "delivery: {backoff_base: 50ms, backoff_cap: 100ms}"
    app = create_app(loads(relay_config(fake_feishu, tmp_path, extra=fast), env={}), logger=logging.getLogger("bridge"))
    try:
        client = app.test_client()
        # Part 1 passes, part 2 meets a server error once: it is sent again, and only it.
        fake_feishu.script("tok-relay-ops", ("hang", 0), ("http", 500))
        text = "\n".join(f"entry {i} " + "y" * 100 for i in range(400))
        count = send(client, "ops", {"text": text}).get_json()["messages"]
        parts = fake_feishu.wait_for("tok-relay-ops", count)
        assert [p["content"]["text"].split(" ", 2)[1] for p in parts] == [f"({n}/{count})" for n in range(1, count + 1)]
        assert [a.http_status for a in fake_feishu.attempts("tok-relay-ops")] == [200, 500] + [200] * (count - 1)

        # A permanent refusal (here the keyword, as if the bot's settings changed) is a dead letter.
        fake_feishu.script("tok-relay-ops", ("code", 19024))
        assert send(client, "ops", {"text": "refused"}).status_code == 200
        store = app.extensions["bridge"].services.store
        deadline = time.monotonic() + 5
        while not store.list(dead=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        (dead,) = store.list(dead=True)
        assert dead.bot == "ops" and dead.reason == "keyword_missing" and dead.code == 19024
        # `outbox retry` sends the parts as stored: there is no payload to render again.
        assert store.retry(dead.id) == 1
        assert fake_feishu.wait_for("tok-relay-ops", count + 1)[-1] == \
            {"msg_type": "text", "content": {"text": f"{KEYWORD} refused"}}
    finally:
        app.extensions["bridge"].stop(timeout=5)


# -- dedupe_key and mentions -------------------------------------------------------------
def test_the_same_dedupe_key_twice_sends_once(client, fake_feishu):
    body = {"text": "Nightly backup finished", "dedupe_key": "backup-2026-03-02"}
    first, again = send(client, "ops", body), send(client, "ops", body)
    assert first.get_json() == {"status": "accepted", "messages": 1}
    assert again.status_code == 200 and again.get_json() == {"status": "accepted", "messages": 0, "duplicate": True}
    other = send(client, "ops", {**body, "dedupe_key": "backup-2026-03-03"})
    assert other.get_json()["messages"] == 1
    fake_feishu.wait_for("tok-relay-ops", 2)
    time.sleep(0.3)
    assert len(fake_feishu.received("tok-relay-ops")) == 2


def test_mentions_come_from_the_directory_into_each_message_type(client, fake_feishu):
    mentions = {"users": ["alice", "bob"], "all": True}
    assert send(client, "ops", {"text": "deploy", "mentions": mentions}).status_code == 200
    assert send(client, "ops", {**fixture("post-example.json"), "mentions": {"users": ["bob"]}}).status_code == 200
    assert send(client, "ops", {**fixture("card-v2-example.json"), "mentions": {"all": True}}).status_code == 200
    text, post, card = fake_feishu.wait_for("tok-relay-ops", 3)
    assert text["content"]["text"] == (f'{KEYWORD} <at user_id="all">所有人</at> <at user_id="ou_a11ce">alice</at> '
                                       '<at user_id="ou_b0b">bob</at> deploy')
    assert post["content"]["post"]["zh_cn"]["content"][0] == [{"tag": "at", "user_id": "ou_b0b", "user_name": "bob"}]
    assert card["card"]["body"]["elements"][0] == {"tag": "markdown", "content": "<at id=all></at>"}


@pytest.mark.parametrize("mentions,phrase", [
    ({"users": ["carol"]}, "mentions.users[0]: 'carol' is not in the users: directory"),
    ({"users": ["alice", "ou_123abc"]}, "add this open_id there under a name"),
    ({"users": ["a@example.com"]}, "not in the users: directory"),
    ({"all": "yes"}, "mentions.all: expected true or false"),
    ({"who": ["alice"]}, "mentions.who: unknown field"),
])
def test_mentions_never_come_from_free_text(app, client, mentions, phrase):
    answer = send(client, "ops", {"text": "hi", "mentions": mentions})
    assert answer.status_code == 400 and phrase in answer.get_json()["error"], answer.get_json()
    assert stored(app) == []


# -- refusals: the webhooks' answers, never a 500, nothing stored ------------------------
@pytest.mark.parametrize("body,phrase", [
    ({"msg_type": "text", "content": {"txt": "hi"}}, "content.txt: unknown field"),
    ({"msg_type": "text", "content": {"text": 3}}, "content.text: expected a non-empty string"),
    ({"msg_type": "post", "content": {"post": {"zh_cn": {"content": [[{"tag": "a", "text": "x", "href": "ftp://h"}]]}}}},
     "content.post.zh_cn.content[0][0].href: expected an http(s) URL"),
    ({"msg_type": "post", "content": {"post": {"fr_fr": {"content": []}}}}, "content.post.fr_fr"),
    ({"msg_type": "post", "content": {"post": {"zh_cn": {"content": [[{"tag": "bold", "text": "x"}]]}}}},
     "content.post.zh_cn.content[0][0].tag"),
    ({"msg_type": "image", "content": {"image_key": ""}}, "content.image_key: expected a non-empty string"),
    ({"msg_type": "share_chat", "content": {}}, "content.share_chat_id"),
    ({"msg_type": "interactive", "content": "{\"elements\": []}"}, "content: a custom bot takes the card as a JSON object"),
    ({"msg_type": "interactive", "card": {"schema": "2.0", "body": {"elements": [{"tag": "note", "elements": []}]}}},
     "card.body.elements[0]: card JSON 2.0 has no note component"),
    ({"msg_type": "interactive", "card": {"schema": "2.0", "elements": [], "body": {"elements": []}}},
     "card.elements: card JSON 2.0 has no such field"),
    ({"msg_type": "interactive", "card": {"header": {"template": "pink"}}}, "card.header.template"),
    ({"msg_type": "interactive", "card": {"elements": [{"tag": "markdown", "content": "<at email=a@b.c></at>"}]}},
     "card.elements[0].content: <at email=...>"),
    ({"msg_type": "interactive", "card": {"schema": "2.0", "body": {"elements": [
        {"tag": "button", "text": {"tag": "plain_text", "content": "go"},
         "behaviors": [{"type": "callback", "value": {}}]}]}}}, "behaviors[0].type: custom bots support only open_url"),
    ({"msg_type": "file", "content": {}}, "msg_type: expected one of text, post, image, share_chat, interactive"),
    ({"text": "hi", "msg_type": "text"}, "exactly one of text, msg_type and template"),
    ({**fixture("text-signed-example.json")}, "sign: unknown field (the bridge signs the message itself)"),
    ({"text": "   "}, "text: expected a non-empty string"),
    ({"text": "hi", "dedupe_key": ""}, "dedupe_key"),
    ([], "expected a JSON object"),
])
def test_a_wrong_shape_is_400_naming_the_field_before_anything_is_stored(app, client, body, phrase):
    answer = send(client, "ops", body)
    assert answer.status_code == 400 and phrase in answer.get_json()["error"], answer.get_json()
    assert stored(app) == []


def test_a_wrong_token_is_401_and_nothing_is_stored(app, client, fake_feishu):
    for headers in ({"Authorization": "Bearer wrong"}, {}):
        answer = send(client, "ops", {"text": "hi"}, headers=headers)
        assert answer.status_code == 401 and answer.get_json() == {"error": "unauthorized"}
    assert stored(app) == []
    time.sleep(0.2)
    assert fake_feishu.attempts("tok-relay-ops") == []


def test_bad_requests_get_the_webhooks_answers(app, client, monkeypatch):
    assert send(client, "nobody", {"text": "hi"}).status_code == 404
    assert "unknown bot 'nobody'" in send(client, "nobody", {"text": "hi"}).get_json()["error"]
    assert send(client, "ops", b"{not json").status_code == 400
    assert send(client, "ops", b"\xff\xfe", ).status_code == 400
    assert send(client, "ops", b'{"text": "hi"}', content_type="text/plain").status_code == 415
    assert client.get("/send/ops", headers=AUTH).status_code == 405
    from bridge.errors import StorageError

    def disk_full(*args, **kwargs):
        raise StorageError("outbox: database or disk is full")

    monkeypatch.setattr(app.extensions["bridge"].services.store, "store", disk_full)
    answer = send(client, "ops", {"text": "hi"})
    assert answer.status_code == 503 and "retry later" in answer.get_json()["error"]
    assert client.get("/-/ready").status_code == 503   # as for a webhook that could not be stored


def test_a_body_over_max_body_bytes_is_413(fake_feishu, tmp_path):
    app = create_app(loads(relay_config(fake_feishu, tmp_path, extra="server: {max_body_bytes: 1000}"), env={}),
                     start_delivery=False)
    answer = send(app.test_client(), "ops", {"text": "x" * 2000})
    assert answer.status_code == 413 and answer.is_json


def test_the_relay_is_off_unless_enabled_and_only_for_the_listed_bots(fake_feishu, tmp_path):
    off = create_app(loads(relay_config(fake_feishu, tmp_path / "a", relay="", tokens="-a"), env={}),
                     start_delivery=False)
    answer = send(off.test_client(), "ops", {"text": "hi"})
    assert answer.status_code == 404 and "relay is off" in answer.get_json()["error"]

    listed = create_app(loads(relay_config(fake_feishu, tmp_path / "b", relay="relay: {enabled: true, bots: [pics]}",
                                           tokens="-b"), env={}), start_delivery=False)
    answer = send(listed.test_client(), "ops", {"text": "hi"})
    assert answer.status_code == 404 and answer.get_json() == {"error": "bot 'ops' takes no relayed messages: "
                                                                        "relay.bots lists pics"}
    assert send(listed.test_client(), "pics", {"text": "hi"}).status_code == 200


def test_a_dry_run_bot_logs_what_it_would_send(client, caplog):
    with caplog.at_level(logging.INFO, logger="bridge"):
        assert send(client, "quiet", {"text": "cron says hi"}).get_json()["messages"] == 1
        deadline = time.monotonic() + 5
        while not any("cron says hi" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert any(getattr(r, "event", "") == "dry_run" and "cron says hi" in r.getMessage() for r in caplog.records)


def test_relay_messages_are_counted_by_bot_and_result(client):
    send(client, "ops", {"text": "one", "dedupe_key": "k"})
    send(client, "ops", {"text": "one", "dedupe_key": "k"})
    send(client, "ops", {"text": ""})
    send(client, "ops", {"text": "x"}, headers={})
    send(client, "who-knows", {"text": "x"})
    metrics = client.get("/metrics").get_data(as_text=True)
    for bot, result in [("ops", "accepted"), ("ops", "duplicate"), ("ops", "bad_request"), ("ops", "unauthorized"),
                        ("", "unknown_bot")]:
        assert f'feishu_bridge_relay_messages_total{{bot="{bot}",result="{result}"}} 1.0' in metrics
    assert "who-knows" not in metrics


# -- configuration -----------------------------------------------------------------------
def test_the_relay_without_inbound_auth_is_refused(fake_feishu, tmp_path):
    with pytest.raises(ConfigError) as refused:
        loads(relay_config(fake_feishu, tmp_path, auth="auth: {grafana_hmac: {secret: s}}"), env={})
    assert any(p.startswith("relay.enabled: the relay posts into your group chats") for p in refused.value.problems)


def test_relay_bots_must_be_configured_bots(fake_feishu, tmp_path):
    with pytest.raises(ConfigError) as refused:
        loads(relay_config(fake_feishu, tmp_path, relay="relay: {enabled: true, bots: [ops, opz], extra: 1}"), env={})
    assert refused.value.problems == ["relay.extra: unknown key", "relay.bots[1]: unknown bot 'opz' "
                                                                  "(known: ops, pics, quiet)"]


def test_a_v1_custom_bot_url_is_refused_with_what_to_do():
    with pytest.raises(ConfigError) as refused:
        loads("bots: [{name: old, webhook_url: 'https://open.feishu.cn/open-apis/bot/hook/0123456789abcdef'}]\n"
              "route: {bots: [old]}\n", env={})
    (problem,) = refused.value.problems
    assert problem.startswith("bots[0].webhook_url: https://open.feishu.cn/open-apis/bot/hook/0123… is a v1 custom-bot URL")
    assert "v2/hook" in problem and "0123456789abcdef" not in problem


@pytest.mark.parametrize("raw,phrase", [
    (b'{"msg_type": "text", "content": {"\\ud800": 1}}', "content.\\ud800: unknown field"),
    (b'{"\\udc00": 1, "text": "x"}', "\\udc00: unknown field"),
    (b'{"msg_type": "post", "content": {"post": {"\\ud800x": {}}}}', "content.post.\\ud800x"),
    (b'{"text": "\\ud800"}', "lone surrogate"),
    (b'{"msg_type": "interactive", "card": {"elements": [{"tag": "div", "x": ' + b"[" * 500 + b"]" * 500 + b"}]}}",
     "deeper than 64 levels"),
    (b'{"template": "deploy", "data": {"y": ' + b"[" * 5000 + b"]" * 5000 + b"}}", "deeper than 64 levels"),
])
def test_hostile_bodies_are_400_never_500(app, client, raw, phrase):
    """What a caller sends is quoted in the answer and copied while it is cut to size: a key
    UTF-8 cannot carry, or JSON nested past Python's stack, must not turn into a 500."""
    answer = send(client, "ops", raw)
    assert answer.status_code == 400 and phrase in answer.get_json()["error"], answer.get_data()
    assert stored(app) == []
