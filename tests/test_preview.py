"""The template preview: its JSON API in process, and the page itself in a real browser.

The browser test drives Debian's headless Chromium through its chromedriver (Selenium)
against the bridge under gunicorn. Without Chromium it skips, or fails under
--require-tools (CI): `apt-get install -y chromium chromium-driver`.
"""

from __future__ import annotations

import base64
import json
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge import create_app
from bridge.config import Bot, PreviewConfig, loads
from bridge.limits import encode_body
from bridge.limits import APP_BUDGET_BYTES, BUDGET_BYTES, app_size
from bridge.render import Renderer
from bridge.template_files import shipped_templates_dir
from bridge.samples import all_samples
from bridge.web.preview import sandbox, views
from support import eventually, require_tool

FIXTURES = Path(__file__).parent / "fixtures"
TOKEN = "tok-preview-5c1e"
SECRET = "sec-preview-Jq9"
PROXY_PASSWORD = "proxy-pw-Vv3"
BEARER = "bearer-preview-Lm2"
PASSWORD = "basic-pw-Tt8"
SECRETS = (TOKEN, SECRET, PROXY_PASSWORD, BEARER, PASSWORD)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ZONE = "Asia/Shanghai"


def config_text(storage: Path, extra: str = "", route: str = "route: {bots: [ops]}", bots: str = "") -> str:
    # Port 9 on loopback: nothing listens, and nothing is ever sent there by a preview.
    return f"""
bots:
  - name: ops
    webhook_url: http://127.0.0.1:9/open-apis/bot/v2/hook/{TOKEN}
    secret: {SECRET}
    keywords: ["告警"]
    proxy_url: http://user:{PROXY_PASSWORD}@127.0.0.1:9/
  - name: old
    template: legacy
  - name: plain
    template: text
{bots}
{route}
timezone: {ZONE}
storage: {{path: {storage}}}
{extra}
"""


def make_app(tmp_path: Path, extra: str = "", route: str = "route: {bots: [ops]}", **changes):
    config = loads(config_text(tmp_path / "outbox.db", extra, route), env={}, base_dir=tmp_path)
    return create_app(replace(config, **changes), logger=logging.getLogger("bridge"), start_delivery=False)


@pytest.fixture
def app(tmp_path):
    app = make_app(tmp_path)
    yield app
    app.extensions["bridge"].stop(timeout=5)


@pytest.fixture
def client(app):
    return app.test_client()


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def render(client, **body):
    return client.post("/preview/render", json=body)


def expected(bot: Bot, sample: str) -> list[dict]:
    """What the renderer itself makes of a sample: the preview must show exactly this."""
    return Renderer(None, ZoneInfo(ZONE)).render_strict(all_samples()[sample], bot)


# --- the page and its files ------------------------------------------------------------


def test_the_page_and_its_files_come_from_the_package_and_load_nothing_from_outside(client):
    page = client.get("/preview")
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    html = page.get_data(as_text=True)
    assert 'src="/preview/assets/preview.js"' in html and 'href="/preview/assets/preview.css"' in html
    for name, mimetype in (("preview.js", "text/javascript"), ("preview.css", "text/css")):
        asset = client.get(f"/preview/assets/{name}")
        assert asset.status_code == 200 and asset.mimetype == mimetype
        text = asset.get_data(as_text=True)
        assert "@import" not in text and "url(" not in text and "@font-face" not in text
    assert "://" not in html
    assert client.get("/preview/assets/../preview.py").status_code == 404


def test_options_list_bots_templates_samples_and_limits(client):
    options = client.get("/preview/options").get_json()
    assert options["bots"] == [{"name": "ops", "template": "default"}, {"name": "old", "template": "legacy"},
                               {"name": "plain", "template": "text"}]
    assert {"default", "legacy", "text"} <= set(options["templates"])
    assert [s["name"] for s in options["samples"]] == ["firing", "resolved", "mixed", "fifty", "grafana"]
    assert next(s for s in options["samples"] if s["name"] == "fifty")["alerts"] == 50
    assert options["limits"]["body_bytes"] == 20 * 1024 and options["limits"]["budget_bytes"] == BUDGET_BYTES


# --- rendering -------------------------------------------------------------------------


@pytest.mark.parametrize("bot", ["ops", "old", "plain"])
def test_every_sample_renders_as_the_renderer_renders_it_with_each_message_measured(app, client, bot):
    configured = app.extensions["bridge"].runtime.config.bots[bot]
    for sample in all_samples():
        answer = render(client, bot=bot, sample=sample)
        assert answer.status_code == 200, answer.get_json()
        data = answer.get_json()
        want = expected(configured, sample)
        assert [m["body"] for m in data["messages"]] == want
        assert [m["bytes"] for m in data["messages"]] == [len(encode_body(m)) for m in want]
        assert data["alerts"] == len(all_samples()[sample].alerts) and data["template"] == configured.template


def test_fifty_alerts_are_split_and_every_part_is_within_the_limit(client):
    messages = render(client, bot="ops", sample="fifty").get_json()["messages"]
    assert len(messages) > 1
    titles = [m["body"]["card"]["header"]["title"]["content"] for m in messages]
    assert all(t.endswith(f"{i}/{len(messages)}") for i, t in enumerate(titles, 1))
    assert all(m["bytes"] <= BUDGET_BYTES and 0 < m["components"] <= 200 for m in messages)


def test_the_answer_keeps_the_key_order_of_the_message_as_sent(client):
    raw = render(client, bot="ops", sample="firing").get_data(as_text=True)
    body = json.loads(raw)["messages"][0]["body"]
    assert list(body) == ["msg_type", "card"]
    assert json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode() == encode_body(body)


@pytest.mark.parametrize("fixture, source, alerts", [
    ("alertmanager/am025-firing-group2.json", "auto", 2),
    ("grafana/grafana-unified-firing.json", "auto", 1),
    ("grafana/grafana-legacy.json", "grafana", 1),
])
def test_a_pasted_payload_renders_as_text_or_as_json(client, fixture, source, alerts):
    text = (FIXTURES / fixture).read_text(encoding="utf-8")
    for payload in (text, json.loads(text)):
        answer = render(client, bot="ops", payload=payload, source=source)
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["alerts"] == alerts
    grafana = "Grafana" in json.dumps(answer.get_json()["messages"][0]["body"], ensure_ascii=False)
    assert grafana == fixture.startswith("grafana")


@pytest.mark.parametrize("body, status, kind, reason", [
    (b"{", 400, "request", "malformed JSON"),
    (b"[]", 400, "request", "expected a JSON object"),
    (b'{"bot": "ops", "sample": "firing", "colour": "red"}', 400, "request", "unknown keys ['colour']"),
    (b'{"bot": "ops"}', 400, "request", "either sample"),
    (b'{"bot": "ops", "sample": "firing", "payload": {}}', 400, "request", "not both"),
    (b'{"bot": "ops", "sample": "hundred"}', 400, "request", "unknown sample 'hundred'"),
    (b'{"bot": "ops", "sample": "firing", "source": "zabbix"}', 400, "request", "source: expected one of"),
    (b'{"bot": "ops", "payload": "{\\"alerts\\": ["}', 400, "payload", "the pasted payload is malformed JSON"),
    (b'{"bot": "ops", "payload": {"version": "4", "alerts": 3}}', 400, "payload", "not a valid alertmanager payload"),
    (b'{"bot": "nobody", "sample": "firing"}', 404, "request", "unknown bot 'nobody'"),
    (b'{"sample": "firing"}', 404, "request", "configured bots are ops, old, plain"),
])
def test_bad_requests_get_a_json_reason(client, body, status, kind, reason):
    answer = client.post("/preview/render", data=body, content_type="application/json")
    assert answer.status_code == status
    assert answer.get_json()["kind"] == kind and reason in answer.get_json()["error"]


def test_a_body_that_is_not_json_gets_415(client):
    answer = client.post("/preview/render", data="bot=ops", content_type="application/x-www-form-urlencoded")
    assert answer.status_code == 415 and "application/json" in answer.get_json()["error"]


# --- pasted templates ------------------------------------------------------------------

PASTED_TEXT = ('{"msg_type": "text", "content": {"text": '
               '{{ title ~ " for " ~ bot.name ~ ": " ~ (alerts[0].starts_at | time) }}}}')


def test_a_pasted_template_renders_in_the_sandbox_with_the_bots_keyword(client):
    answer = render(client, bot="ops", sample="firing", template=PASTED_TEXT)
    assert answer.status_code == 200, answer.get_json()
    data = answer.get_json()
    assert data["template"] == "<pasted>"
    # The keyword the bot needs goes in front; times are in the configured zone.
    assert data["messages"][0]["body"]["content"]["text"] == (
        "告警 [FIRING:1] HighCPU prod-bj (node-1:9100 node critical infra) for ops: 2026-11-29 08:42:10 CST")


def test_a_pasted_template_can_include_a_shipped_one(client):
    answer = render(client, bot="old", sample="resolved", template='{% include "legacy.json.j2" %}')
    assert answer.status_code == 200
    legacy = expected(Bot(name="old", template="legacy"), "resolved")
    assert [m["body"] for m in answer.get_json()["messages"]] == legacy


@pytest.mark.parametrize("template, reason, line", [
    ('{"msg_type": "text",\n "content": {"text": {{ title }}}}\n{% if %}',
     "<pasted>.json.j2:3: Expected an expression", 3),
    ('{"msg_type": "text",\n "content": {"text": {{ nobody.name }}}}',
     "<pasted>.json.j2:2: UndefinedError: 'nobody' is undefined", 2),
    ('{"msg_type": "text", "content": {"text": {{ bot.webhook_url }}}}', "has no attribute 'webhook_url'", 1),
    ('{"msg_type": "text", "content": {"text": title}}', "the output is not valid JSON", None),
    ('{"msg_type": "telegram", "content": {}}', "msg_type 'telegram' is not one of", None),
])
def test_a_pasted_template_error_is_a_400_with_the_message_and_line(client, template, reason, line):
    answer = render(client, bot="ops", sample="firing", template=template)
    assert answer.status_code == 400
    data = answer.get_json()
    assert data["kind"] == "template" and reason in data["error"] and data["line"] == line


def test_a_runaway_pasted_template_is_stopped_and_the_worker_goes_on(client, monkeypatch):
    monkeypatch.setattr(sandbox, "CHILD_CPU_SECONDS", 1)
    monkeypatch.setattr(sandbox, "CHILD_WALL_SECONDS", 5)
    monkeypatch.setattr(sandbox, "CHILD_MEMORY_BYTES", 256 * 2**20)
    loops = "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    answer = render(client, bot="ops", sample="firing", template=loops)
    assert answer.status_code == 400 and "was stopped" in answer.get_json()["error"]
    assert time.monotonic() - started < 8  # the CPU limit, or on a busy machine the wall clock's
    answer = render(client, bot="ops", sample="firing", template='{{ "x" * 1000000000 }}')
    assert answer.status_code == 400 and "MemoryError" in answer.get_json()["error"]
    assert render(client, bot="ops", sample="firing", template=PASTED_TEXT).status_code == 200


def test_pasted_renders_beyond_the_free_slots_wait_then_get_503(app, client, monkeypatch):
    monkeypatch.setattr(sandbox, "CHILD_WALL_SECONDS", 0.2)
    slots = app.extensions["preview"]
    taken = [slots.acquire(blocking=False) for _ in range(views.CHILD_SLOTS)]
    try:
        answer = render(client, bot="ops", sample="firing", template=PASTED_TEXT)
        assert answer.status_code == 503 and answer.get_json()["kind"] == "busy"
        assert render(client, bot="ops", sample="firing").status_code == 200  # configured templates need no slot
    finally:
        for ok in taken:
            if ok:
                slots.release()


def test_input_over_the_caps_is_refused_with_413(client):
    big = '{"msg_type": "text", "content": {"text": "' + "x" * views.TEMPLATE_MAX_BYTES + '"}}'
    answer = render(client, bot="ops", sample="firing", template=big)
    assert answer.status_code == 413 and "over 65536 bytes" in answer.get_json()["error"]
    huge = {"bot": "ops", "payload": {"alerts": ["y" * views.REQUEST_MAX_BYTES]}}
    answer = client.post("/preview/render", data=json.dumps(huge), content_type="application/json")
    assert answer.status_code == 413 and answer.get_json()["kind"] == "request"


def test_an_app_bots_cards_are_shown_as_sent_cut_to_its_30_kb_with_email_mentions(tmp_path):
    app_bot = ("apps: [{name: oncall, app_id: cli_pv1, app_secret: pv-secret-Qq1, base_url: 'http://127.0.0.1:9'}]\n"
               "users: {alice: {email: alice@example.com}}")
    config = loads(config_text(tmp_path / "outbox.db", app_bot, "route: {bots: [ops, sre]}",
                               bots="  - name: sre\n    app: oncall\n    chat_id: oc_pv1\n"
                                    "    mentions: {users: [alice]}"), env={}, base_dir=tmp_path)
    client = create_app(config, logger=logging.getLogger("bridge"), start_delivery=False).test_client()
    data = render(client, bot="sre", sample="fifty").get_json()
    custom = render(client, bot="ops", sample="fifty").get_json()
    assert data["limits"]["app_bot"] is True and data["limits"]["body_bytes"] == 30 * 1024
    assert len(data["messages"]) < len(custom["messages"])
    assert all(m["bytes"] == app_size(m["body"]) <= APP_BUDGET_BYTES for m in data["messages"])
    assert "<at email=alice@example.com></at>" in json.dumps(data["messages"][0]["body"], ensure_ascii=False)
    assert "pv-secret-Qq1" not in json.dumps(data)


def test_alerts_carry_the_mentions_the_config_gives_them_on_that_bot(tmp_path):
    client = make_app(tmp_path, extra="users: {tom: ou_tom1}",
                      route="route: {bots: [ops], routes: [{matchers: [severity=critical], bots: [ops], "
                            "mentions: {all: true, users: [tom]}}]}").test_client()
    template = ('{"msg_type": "text", "content": {"text": {{ "pings: " ~ '
                '(alerts | map(attribute="mentions") | map("join", ",") | join(" ")) }}}}')
    pings = {}
    for sample in ("firing", "resolved", "fifty"):
        answer = render(client, bot="ops", sample=sample, template=template)
        pings[sample] = "".join(m["body"]["content"]["text"] for m in answer.get_json()["messages"])
    # Mention(user_id, name) joins as its repr; only firing critical alerts match the route's rule.
    assert pings["firing"].count("Mention(") == 2 and "'all'" in pings["firing"] and "'ou_tom1'" in pings["firing"]
    assert pings["resolved"] == "告警 pings: "
    assert pings["fifty"].count("'ou_tom1'") == 5  # the critical ones: node-10, 20, 30, 40, 50


# --- template sources ------------------------------------------------------------------


def test_template_sources_are_served_as_the_renderer_finds_them(tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "default.json.j2").write_text('{"msg_type": "text", "content": {"text": "override"}}')
    (templates / "mine.json.j2").write_text('{"msg_type": "text", "content": {"text": "mine"}}')
    app = make_app(tmp_path, extra="templates_dir: templates")
    client = app.test_client()
    assert client.get("/preview/templates/default").get_json()["source"].endswith('"override"}}')
    assert client.get("/preview/templates/mine").get_json()["source"].endswith('"mine"}}')
    legacy = (shipped_templates_dir() / "legacy.json.j2").read_text(encoding="utf-8")
    assert client.get("/preview/templates/legacy").get_json()["source"] == legacy
    assert "mine" in client.get("/preview/options").get_json()["templates"]
    for name in ("nothing", "..%2Fconfig", "..%2F..%2Fetc%2Fpasswd"):
        assert client.get(f"/preview/templates/{name}").status_code == 404
    # A pasted template sees the user's templates too.
    answer = render(client, bot="ops", sample="firing", template='{% include "mine.json.j2" %}')
    assert answer.get_json()["messages"][0]["body"]["content"]["text"] == "告警 mine"


# --- switched off, and behind auth ------------------------------------------------------

PREVIEW_REQUESTS = [("get", "/preview"), ("get", "/preview/assets/preview.js"), ("get", "/preview/options"),
                    ("get", "/preview/templates/default"), ("post", "/preview/render")]


def test_a_disabled_preview_is_404_everywhere_and_the_rest_still_works(tmp_path):
    app = make_app(tmp_path, preview=PreviewConfig(enabled=False))
    client = app.test_client()
    for method, path in PREVIEW_REQUESTS:
        answer = getattr(client, method)(path, json={"bot": "ops", "sample": "firing"} if method == "post" else None)
        assert answer.status_code == 404, path
        assert answer.get_json() == client.get("/no-such-page").get_json()
    assert client.get("/-/healthy").status_code == 200


def test_with_inbound_auth_on_every_preview_request_needs_credentials(tmp_path):
    auth = f"auth: {{bearer_token: {BEARER}, basic: {{username: author, password: {PASSWORD}}}}}"
    client = make_app(tmp_path, extra=auth).test_client()
    basic = basic_auth("author", PASSWORD)
    for method, path in PREVIEW_REQUESTS:
        call = getattr(client, method)
        body = {"bot": "ops", "sample": "firing"} if method == "post" else None
        refused = call(path, json=body)
        # Basic, which a browser answers with a password prompt, though a bearer token works too.
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Basic realm="bridge"', path
        assert call(path, json=body, headers={"Authorization": basic_auth("author", "x")}).status_code == 401
        for credentials in (basic, f"Bearer {BEARER}"):
            assert call(path, json=body, headers={"Authorization": credentials}).status_code == 200, path


def test_with_a_bearer_token_only_the_challenge_is_bearer(tmp_path):
    client = make_app(tmp_path, extra=f"auth: {{bearer_token: {BEARER}}}").test_client()
    refused = client.get("/preview")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert client.get("/preview", headers={"Authorization": f"Bearer {BEARER}"}).status_code == 200


def test_no_answer_holds_a_secret(tmp_path):
    auth = f"auth: {{basic: {{username: author, password: {PASSWORD}}}}}"
    client = make_app(tmp_path, extra=auth).test_client()
    headers = {"Authorization": basic_auth("author", PASSWORD)}
    answers = [client.get(path, headers=headers) for path in
               ("/preview", "/preview/assets/preview.js", "/preview/options", "/preview/templates/default")]
    tries = [{"sample": s} for s in all_samples()] + [
        {"sample": "firing", "template": t} for t in (
            '{"msg_type": "text", "content": {"text": {{ bot.webhook_url }}}}',
            '{"msg_type": "text", "content": {"text": {{ bot.secret }}}}',
            '{"msg_type": "text", "content": {"text": {{ bot | string }}}}',
            '{"msg_type": "text", "content": {"text": {{ bot.__class__ }}}}',
            '{"msg_type": "text", "content": {"text": {{ self._TemplateReference__context | string }}}}',
        )]
    for bot, asks in (("ops", tries), ("old", tries[:5]), ("nobody", tries[:1])):
        answers += [client.post("/preview/render", json={"bot": bot, **t}, headers=headers) for t in asks]
    answers.append(client.get("/preview", headers={"Authorization": basic_auth("author", "no")}))
    everything = "".join(a.get_data(as_text=True) for a in answers)
    assert "告警" in everything  # the renders did happen
    for secret in SECRETS:
        assert secret not in everything


# --- the page in a real browser ---------------------------------------------------------

PASTED_CARD = r"""{"msg_type": "interactive", "card": {
  "config": {"wide_screen_mode": true},
  "header": {"title": {"tag": "plain_text", "content": {{ "Pasted: " ~ title }}}, "template": "purple"},
  "elements": [
    {"tag": "div", "text": {"tag": "lark_md",
      "content": "**On call:** <at id=all></at> and <at id=ou_tom1></at>\n*second line*, [runbook](https://runbooks.example.com/x) <img src=x onerror='window.__xss=1'><script>window.__xss=2</script>"},
     "fields": [
       {"is_short": true, "text": {"tag": "lark_md", "content": {{ "**Severity**\n" ~ (alerts[0].labels.severity | md) }}}},
       {"is_short": true, "text": {"tag": "lark_md", "content": {{ "**Instance**\n" ~ (alerts[0].labels.instance | md) }}}}
     ]},
    {"tag": "chart", "chart_spec": {"type": "line"}},
    {"tag": "markdown", "content": "~~old~~ `code` &#42;not italic&#42; <font color='red'>red</font> <text_tag color='blue'>tag</text_tag>\n- one\n- two"},
    {"tag": "column_set", "columns": [
      {"tag": "column", "elements": [{"tag": "markdown", "content": "left"}]},
      {"tag": "column", "elements": [{"tag": "markdown", "content": "right"}]}
    ]},
    {"tag": "hr"},
    {"tag": "action", "actions": [
      {"tag": "button", "text": {"tag": "plain_text", "content": "Acknowledge"}, "type": "primary",
       "url": "https://oncall.example.com/ack"}
    ]}
  ]}}"""


def _require(path: str, package: str) -> str:
    return require_tool(path, f"the preview is tested in a real browser. Install it with `apt-get install -y {package}`.")


def _chrome(profile: Path):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is missing: pip install -e '.[test]'")
    options = webdriver.ChromeOptions()
    options.binary_location = _require(CHROMIUM, "chromium")
    # The network is closed: without these Chromium waits on its own background requests.
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1440,1800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(_require(CHROMEDRIVER, "chromium-driver")))


class Page:
    """The preview page as a user sees it."""

    def __init__(self, driver):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import Select

        self.driver, self.by, self.select_class = driver, By, Select
        self.redrawn = StaleElementReferenceException  # a render replaced what a check was reading

    def all(self, css: str, within=None) -> list:
        return (within or self.driver).find_elements(self.by.CSS_SELECTOR, css)

    def one(self, css: str, within=None):
        return (within or self.driver).find_element(self.by.CSS_SELECTOR, css)

    def until(self, check, what: str):
        def attempt():
            try:
                return check()
            except self.redrawn:
                return None      # read again, from what the render put there
        return eventually(attempt, 15, what, step=0.1)

    def choose(self, select_id: str, value: str) -> None:
        self.select_class(self.one(f"#{select_id}")).select_by_value(value)

    def shown(self, bot: str, title_part: str, messages: int = 1) -> list:
        """The drawn messages, once they are `bot`'s and the first one's title holds
        `title_part`: then no render is left on its way (each change starts one)."""
        def ready():
            drawn = self.all(".message")
            if f"for bot {bot}," not in self.one("#summary").text or len(drawn) != messages:
                return None
            # The title is read inside the messages found, not looked up anew: a render that
            # lands in between makes them stale (retried), instead of passing the check with
            # a fresh title while returning the replaced elements.
            heads = self.all(".fs-header .fs-title, .fs-text", drawn[0])
            return drawn if heads and title_part in heads[0].text else None
        return self.until(ready, f"{messages} message(s) for {bot} titled {title_part!r}")

    def paste(self, text: str) -> None:
        self.driver.execute_script(
            "const area = document.getElementById('template-text'); area.value = arguments[0];"
            "area.dispatchEvent(new Event('input'));", text)
        self.one("#render").click()


def check_drawn(page: Page, message, body: dict) -> None:
    """A drawn message against the message itself: JSON pane, size, nothing unsupported."""
    assert json.loads(page.one(".json", message).text) == body
    assert f"{len(encode_body(body)):,} bytes" in page.one(".size-text", message).text
    assert not page.all(".fs-unsupported", message)


def test_the_page_draws_each_message_in_a_real_browser(tmp_path):
    _require(CHROMIUM, "chromium")
    _require(CHROMEDRIVER, "chromium-driver")
    from procs import BridgeProcess

    config = tmp_path / "config.yaml"
    # Critical alerts reach `oncall` through a route that pings everyone and Tom.
    config.write_text(config_text(
        tmp_path / "outbox.db", extra="users: {tom: ou_tom1}", bots="  - name: oncall",
        route="route: {bots: [ops], routes: [{matchers: [severity=critical], bots: [oncall], continue: true, "
              "mentions: {all: true, users: [tom]}}]}"), encoding="utf-8")
    bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=1, threads=4)
    driver = None
    try:
        driver = _chrome(Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path)))
        page = Page(driver)
        driver.get(f"{bridge.url}/preview")
        ops = Bot(name="ops", keywords=("告警",))
        _firing_card(page, expected(ops, "firing")[0])
        driver.save_screenshot(str(tmp_path / "preview-firing.png"))
        _fifty_alerts(page, expected(ops, "fifty"))
        _legacy_and_text(page, expected(Bot(name="old", template="legacy"), "mixed")[0],
                         expected(Bot(name="plain", template="text"), "grafana")[0])
        _pasted(page)
        shot = tmp_path / "preview-pasted.png"
        driver.save_screenshot(str(shot))
        print(f"screenshots: {tmp_path / 'preview-firing.png'} {shot}")
        _template_error(page)
    except Exception:
        print(bridge.log()[-5000:])
        raise
    finally:
        if driver is not None:
            driver.quit()
        bridge.stop()


def _firing_card(page: Page, body: dict) -> None:
    title = body["card"]["header"]["title"]["content"]
    [message] = page.shown("ops", "[FIRING:1] HighCPU prod-bj")
    header = page.one(".fs-header", message)
    assert header.text == title and "fs-header-red" in header.get_attribute("class")
    assert header.value_of_css_property("background-color") == "rgba(245, 74, 69, 1)"
    assert [b.text for b in page.all("strong", message)][:2] == ["Labels:", "FIRING"]
    runbook = next(a for a in page.all("a.fs-link", message) if a.text == "Runbook")
    assert runbook.get_attribute("href") == "https://runbooks.example.com/HighCPU"
    button = page.one("a.fs-button", message)
    assert button.text == "Open in Alertmanager"
    assert button.get_attribute("href").startswith("http://alertmanager.example.com:9093/#/alerts?receiver=")
    # Entities the md filter wrote (feishu&#45;ops) read as the characters they stand for.
    assert page.one(".fs-notation", message).text == "Alertmanager · receiver feishu-ops · 1 firing · 0 resolved"
    check_drawn(page, message, body)


def _fifty_alerts(page: Page, bodies: list[dict]) -> None:
    page.choose("sample", "fifty")
    messages = page.shown("ops", "[FIRING:45] DiskWillFillIn4Hours", messages=len(bodies))
    for message, body in zip(messages, bodies):
        check_drawn(page, message, body)
    assert f"50 alerts → {len(bodies)} messages" in page.one("#summary").text


def _legacy_and_text(page: Page, legacy: dict, text: dict) -> None:
    page.choose("sample", "mixed")
    page.choose("bot", "old")
    [message] = page.shown("old", "[FIRING:1] HighCPU prod-bj (node infra)")
    assert "fs-header-orange" in page.one(".fs-header", message).get_attribute("class")
    assert [b.text for b in page.all(".fs-actions a.fs-button", message)] == [
        "Source", "Runbook", "Silence", "Source", "Runbook"]
    assert "Open in Alertmanager" in page.one(".fs-note", message).text
    check_drawn(page, message, legacy)
    page.choose("sample", "grafana")
    page.choose("bot", "plain")
    [message] = page.shown("plain", "[FIRING:2] High memory usage Infrastructure")
    assert page.one(".fs-text", message).text == text["content"]["text"].strip()
    check_drawn(page, message, text)


def _pasted(page: Page) -> None:
    page.choose("bot", "oncall")
    page.choose("sample", "firing")
    [message] = page.shown("oncall", "[FIRING:1] HighCPU")
    # The route pings everyone and Tom; the page names Tom as users: does.
    assert [a.text for a in page.all(".fs-at", message)] == ["@all", "@tom"]
    page.one("#mode-paste").click()
    page.paste(PASTED_CARD)
    [message] = page.shown("oncall", "Pasted: [FIRING:1] HighCPU")
    assert "fs-header-purple" in page.one(".fs-header", message).get_attribute("class")
    # A card's <at id=...> has no name in it: the page shows the one from users:.
    assert [a.text for a in page.all(".fs-at", message)] == ["@all", "@tom"]
    assert [f.text for f in page.all(".fs-field.short", message)] == ["Severity\ncritical", "Instance\nnode-1:9100"]
    assert page.one(".fs-div p", message).text.startswith("On call: @all and @tom\nsecond line, runbook")
    assert page.one("em", message).text == "second line"
    assert page.one("a.fs-link", message).get_attribute("href") == "https://runbooks.example.com/x"
    button = page.one(".fs-actions a.fs-button", message)
    assert button.text == "Acknowledge" and "primary" in button.get_attribute("class")
    assert [u.text for u in page.all(".fs-unsupported", message)] == ["unsupported element: chart"]
    assert [page.one(css, message).text for css in ("del", "code", ".fs-font-red", ".fs-tag.c-blue")] == [
        "old", "code", "red", "tag"]
    assert "*not italic*" in page.one(".fs-body > .fs-md", message).text and len(page.all("em", message)) == 1
    assert [li.text for li in page.all("li", message)] == ["one", "two"]
    assert [c.text for c in page.all(".fs-column", message)] == ["left", "right"]
    # Card text is text: the tags show as typed and nothing of them runs.
    assert "<img src=x onerror='window.__xss=1'><script>window.__xss=2</script>" in page.one(".fs-div", message).text
    assert not page.all("#results img, #results script")
    assert page.driver.execute_script("return window.__xss") is None
    assert json.loads(page.one(".json", message).text)["card"]["elements"][1] == {"tag": "chart", "chart_spec": {"type": "line"}}


def _template_error(page: Page) -> None:
    page.paste('{"msg_type": "text",\n "content": {"text": {{ title }}}}\n{% if %}')
    error = page.until(lambda: "<pasted>.json.j2:3" in page.one("#error").text and page.one("#error"),
                       "the template error")
    assert error.is_displayed() and error.text.startswith("Template error:")
    page.one("#error button").click()
    selected = page.driver.execute_script(
        "const a = document.getElementById('template-text'); return a.value.slice(a.selectionStart, a.selectionEnd);")
    assert selected == "{% if %}"
