"""Rendering: what a Feishu group would show for a notification, and that it is always sendable."""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest

from bridge import samples
from bridge.config import Bot
from bridge.errors import ConfigError, TemplateError
from bridge.limits import encode_body
from bridge.notify.feishu import FeishuClient
from bridge.notify.outcome import Outcome
from bridge.limits import BODY_LIMIT_BYTES, SIGNATURE_OVERHEAD
from bridge.model import FIRING, RESOLVED, Alert, Mention, Notification, fingerprint
from bridge.render import (
    TRUNCATED,
    Renderer,
    format_duration,
    format_relative,
    format_time,
    header_colour,
    md_escape,
    title_for,
)
from bridge.secret import Secret, WebhookURL
from bridge.template_files import template_names
from cards import shown_text, strings

SHANGHAI = ZoneInfo("Asia/Shanghai")
TEMPLATES = ("default", "legacy", "text")
T0 = datetime(2026, 11, 29, 0, 42, 10, tzinfo=timezone.utc)
# The characters Feishu's markdown doc says must be escaped as &#NN; (protocols.md A.6), and `&`.
A6_CHARACTERS = "*~><[]()#:+\"'`$_-!/\\&"


# --- helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(None, SHANGHAI)


def bot(template: str = "default", keywords: tuple[str, ...] = (), zone: ZoneInfo | None = None) -> Bot:
    return Bot(name="ops", template=template, keywords=keywords, timezone=zone)


def alert(status: str = FIRING, annotations: dict | None = None, **labels: str) -> Alert:
    labels = {"alertname": "HighCPU", **labels}
    return Alert(status=status, labels=labels, annotations=annotations or {}, starts_at=T0,
                 ends_at=T0 + timedelta(minutes=5) if status == RESOLVED else None,
                 generator_url="http://prometheus.example.com:9090/graph?g0.expr=up", fingerprint=fingerprint(labels))


def group(alerts: list[Alert], group_labels: dict[str, str] | None = None, source: str = "alertmanager") -> Notification:
    empty = Notification(source=source, receiver="feishu-ops", status=FIRING, group_key="{}:{}",
                         group_labels=group_labels if group_labels is not None else {"alertname": "HighCPU"},
                         common_labels={}, common_annotations={}, external_url="http://am.example.com:9093",
                         truncated_alerts=0, alerts=())
    return empty.subset(alerts)


def many(count: int, resolved_every: int = 0) -> Notification:
    alerts = [alert(RESOLVED if resolved_every and i % resolved_every == 0 else FIRING,
                    {"summary": f"disk {i:04d} is filling up", "description": "Only 3% space left."},
                    instance=f"node-{i:04d}:9100", severity="warning", cluster="prod-sh")
              for i in range(count)]
    return group(alerts)


def visible(message: dict) -> str:
    """The text a reader sees (cards.shown_text)."""
    return shown_text(message, cards=message["msg_type"] == "interactive")


def heading(message: dict) -> str:
    if message["msg_type"] == "text":
        return message["content"]["text"].split("\n", 1)[0]
    return message["card"]["header"]["title"]["content"]


def components(message: dict) -> int:
    count = 0
    stack: list = [message.get("card")]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            count += "tag" in node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def assert_sendable(messages: list[dict]) -> None:
    assert messages
    for message in messages:
        body = encode_body(message)
        assert len(body) + SIGNATURE_OVERHEAD <= BODY_LIMIT_BYTES
        assert json.loads(body) == message
        assert message["msg_type"] in ("text", "interactive")
        assert "sign" not in message and "timestamp" not in message
        if message.get("card", {}).get("schema") == "2.0":
            assert components(message) <= 200
            assert '"tag":"note"' not in body.decode() and '"tag":"action"' not in body.decode()


def links(message: dict) -> list[str]:
    body = encode_body(message).decode()
    return (re.findall(r"\]\(([^)]*)\)", body)
            + [json.loads(f'"{u}"') for u in re.findall(r'"(?:url|default_url)":"((?:[^"\\]|\\.)*)"', body)])


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.json.j2"
    path.write_text(text, encoding="utf-8")
    return path


# --- title and colour -------------------------------------------------------------------


@pytest.mark.parametrize(("notification", "expected"), [
    (samples.mixed(), "[FIRING:1] HighCPU prod-bj (node infra)"),
    (group([alert(cluster="prod-bj", instance="a"), alert(cluster="prod-bj", instance="b")]), "[FIRING:2] HighCPU (prod-bj)"),
    (samples.resolved(), "[RESOLVED] HighCPU prod-bj (node-1:9100 node critical infra)"),
    # Grafana sends group label alertname "" when grouping by nothing: it must not swallow the name.
    (group([alert(alertname="alert1", lbl1="val1")], {"alertname": ""}, "grafana"), "[FIRING:1] alert1 val1"),
    (group([alert(team="a\nb")], {}), "[FIRING:1] HighCPU a b"),
])
def test_title_follows_alertmanagers_default(notification: Notification, expected: str, renderer: Renderer) -> None:
    assert title_for(notification) == expected
    assert heading(renderer.render(notification, bot())[0]) == expected


def test_title_stays_short_whatever_the_labels() -> None:
    assert len(title_for(group([alert(team="x" * 10_000)]))) <= 201


@pytest.mark.parametrize(("severities", "colour"), [
    (["critical"], "red"), (["P1"], "red"), (["page"], "red"), (["Warning"], "orange"),
    (["info"], "blue"), (["whatever"], "grey"), ([""], "grey"),
    (["info", "warning", "critical"], "red"), (["info", "warning"], "orange"),
])
def test_header_colour_is_the_most_severe_firing_alert(severities: list[str], colour: str, renderer: Renderer) -> None:
    notification = group([alert(severity=s, instance=str(i)) for i, s in enumerate(severities)])
    assert header_colour(notification) == colour
    for template in ("default", "legacy"):
        assert renderer.render(notification, bot(template))[0]["card"]["header"]["template"] == colour


def test_resolved_is_green_and_a_resolved_critical_does_not_colour_a_firing_warning(renderer: Renderer) -> None:
    assert header_colour(samples.resolved()) == "green"
    assert header_colour(samples.mixed()) == "orange"  # node-1 critical resolved, node-2 warning firing
    assert renderer.render(samples.resolved(), bot())[0]["card"]["header"]["template"] == "green"


# --- escaping, times, durations -----------------------------------------------------------


@pytest.mark.parametrize("char", A6_CHARACTERS)
def test_md_escapes_every_markdown_character_as_an_html_entity(char: str) -> None:
    assert md_escape(f"a{char}b") == f"a&#{ord(char)};b"


def test_md_escaped_mentions_and_links_show_literally() -> None:
    for value in ("<at id=all></at>", "[x](http://evil.example)", "**bold** &#60; ---", "&amp;#38;"):
        escaped = md_escape(value)
        assert not set("<>[]()*") & set(escaped)
        assert re.sub(r"&#(\d+);", lambda m: chr(int(m.group(1))), escaped) == value


def test_label_values_cannot_mention_anyone_or_make_links(renderer: Renderer) -> None:
    notification = group([alert(owner="<at id=all></at>", annotations={"summary": "[click](http://evil.example)"})])
    for template in TEMPLATES:
        message = renderer.render(notification, bot(template))[0]
        body = encode_body(message).decode()
        assert not re.search(r"<\s*/?\s*at\b", body, re.IGNORECASE), template
        if template != "text":  # a text message has no markdown links at all
            assert "http://evil.example" not in links(message)
        assert "owner=<at id=all></at>" in visible(message)
        assert "[click](http://evil.example)" in visible(message)


@pytest.mark.parametrize(("zone", "shown"), [
    ("Asia/Shanghai", "2026-11-29 08:42:10 CST"),
    ("UTC", "2026-11-29 00:42:10 UTC"),
    ("America/New_York", "2026-11-28 19:42:10 EST"),
])
def test_times_are_shown_in_the_configured_timezone(zone: str, shown: str) -> None:
    assert format_time(T0, ZoneInfo(zone)) == shown
    message = Renderer(None, ZoneInfo(zone)).render(samples.firing(), bot())[0]
    assert f"Started:** {shown}" in visible(message)


@pytest.mark.parametrize(("value", "shown"), [
    (0, "0s"), (45, "45s"), (timedelta(minutes=47, seconds=8), "47m 8s"),
    (timedelta(hours=3, minutes=12, seconds=5), "3h 12m"), (timedelta(hours=3, seconds=40), "3h"),
    (timedelta(days=2, hours=5), "2d 5h"), (timedelta(seconds=-3), "0s"),
])
def test_durations_read_like_a_human_wrote_them(value: timedelta | int, shown: str) -> None:
    assert format_duration(value) == shown


def test_a_resolved_alert_shows_when_it_ended_and_how_long_it_lasted(renderer: Renderer) -> None:
    for template in TEMPLATES:
        text = visible(renderer.render(samples.resolved(), bot(template))[0])
        assert "2026-11-29 09:29:18 CST (lasted 47m 8s)" in text


# --- every template, every sample -----------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("sample", sorted(samples.all_samples()))
def test_every_template_renders_every_sample(template: str, sample: str, renderer: Renderer,
                                             caplog: pytest.LogCaptureFixture) -> None:
    notification = samples.all_samples()[sample]
    messages = renderer.render_strict(notification, bot(template))
    assert_sendable(messages)
    assert not caplog.records
    shown = "\n".join(visible(m) for m in messages)
    for each in notification.alerts:
        assert shown.count(each.annotations["summary"]) == 1
        assert each.labels["alertname"] in shown
    expected = "text" if template == "text" else "interactive"
    assert {m["msg_type"] for m in messages} == {expected}
    if template == "default":
        assert {m["card"]["schema"] for m in messages} == {"2.0"}
        assert all(m["card"]["config"]["update_multi"] is True for m in messages)
        assert all(m["card"]["config"]["summary"]["content"] == heading(m) for m in messages)
    if template == "legacy":
        assert all("schema" not in m["card"] and "elements" in m["card"] for m in messages)


@pytest.mark.parametrize("template", TEMPLATES)
def test_firing_alerts_come_before_resolved_ones(template: str, renderer: Renderer) -> None:
    notification = samples.mixed()
    assert notification.alerts[0].status == RESOLVED  # as Alertmanager sent it
    text = visible(renderer.render(notification, bot(template))[0])
    assert text.index("CPU usage above 80% on node-2") < text.index("CPU usage above 95% on node-1")


@pytest.mark.parametrize("template", TEMPLATES)
def test_links_to_source_runbook_and_silence(template: str, renderer: Renderer) -> None:
    message = renderer.render(samples.firing(), bot(template))[0]
    found = links(message) if template != "text" else re.findall(r"https?://\S+", message["content"]["text"])
    assert "https://runbooks.example.com/HighCPU" in found
    assert any(u.startswith("http://prometheus.example.com:9090/graph?g0.expr=") for u in found)
    silences = [u for u in found if "/#/silences/new?filter=" in u]
    assert [unquote(u.split("filter=", 1)[1]) for u in silences] == [
        '{alertname="HighCPU", cluster="prod-bj", instance="node-1:9100", job="node", severity="critical", team="infra"}']
    assert "http://alertmanager.example.com:9093/#/alerts?receiver=feishu-ops" in found


def test_grafana_links_use_grafanas_own_urls(renderer: Renderer) -> None:
    notification = samples.grafana()
    found = links(renderer.render(notification, bot())[0])
    for each in notification.alerts:
        assert {each.silence_url, each.dashboard_url, each.panel_url, each.generator_url} <= set(found)
    assert "https://grafana.example.com/alerting/groups" in found


@pytest.mark.parametrize("template", TEMPLATES)
def test_only_http_links_are_made(template: str, renderer: Renderer) -> None:
    bad = replace(alert(annotations={"summary": "s", "runbook_url": "javascript:alert(2)"}),
                  generator_url="javascript:alert(1)", dashboard_url="data:text/html,<b>x</b>", panel_url="ftp://x/y")
    notification = replace(group([bad]), external_url="javascript:alert(3)")
    message = renderer.render(notification, bot(template))[0]
    body = encode_body(message).decode()
    assert "javascript:alert(1)" not in body and "data:text" not in body and "ftp://" not in body
    assert "alert(3)" not in body
    for url in links(message):
        assert url.startswith(("http://", "https://"))


# --- keywords -----------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_missing_keyword_is_put_in_front_of_the_title(template: str, renderer: Renderer) -> None:
    message = renderer.render(samples.firing(), bot(template, keywords=("告警", "alarm")))[0]
    assert heading(message) == "告警 " + title_for(samples.firing())


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_keyword_already_shown_is_not_added(template: str, renderer: Renderer) -> None:
    message = renderer.render(samples.firing(), bot(template, keywords=("nothing-like-it", "CPU usage")))[0]
    assert heading(message) == title_for(samples.firing())


# --- user templates -----------------------------------------------------------------------


def test_template_names_are_the_shipped_ones_plus_the_users(tmp_path: Path) -> None:
    assert template_names(None) == {"default", "legacy", "text"}
    write(tmp_path, "short", '{"msg_type": "text", "content": {"text": {{ title }}}}')
    (tmp_path / "notes.txt").write_text("not a template")
    assert template_names(tmp_path) == {"default", "legacy", "text", "short"}


def test_a_user_template_overrides_the_default_and_adds_a_name(tmp_path: Path) -> None:
    write(tmp_path, "default", '{"msg_type": "text", "content": {"text": {{ "mine: " ~ title }}}}')
    write(tmp_path, "short", '{"msg_type": "text", "content": {"text": {{ "short: " ~ (alerts | length) }}}}')
    renderer = Renderer(tmp_path, SHANGHAI)
    assert renderer.render_strict(samples.mixed(), bot())[0]["content"]["text"].startswith("mine: [FIRING:1]")
    assert renderer.render_strict(samples.mixed(), bot("short"))[0]["content"]["text"] == "short: 2"
    assert renderer.render_strict(samples.mixed(), bot("legacy"))[0]["msg_type"] == "interactive"


def test_a_syntax_error_is_a_config_error_naming_each_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "broken", '{\n  "msg_type": "text",\n  "content": {"text": {{ title }}\n  {% endfor %}\n}')
    write(tmp_path, "also", '{"msg_type": "text", "content": {"text": {{ title | }}}}')
    with pytest.raises(ConfigError) as raised:
        Renderer(tmp_path, SHANGHAI)
    problems = raised.value.problems
    assert len(problems) == 2
    assert any(p.startswith(f"{tmp_path / 'broken.json.j2'}:4: ") and "endfor" in p for p in problems)
    assert any(p.startswith(f"{tmp_path / 'also.json.j2'}:1: ") for p in problems)


def test_a_missing_templates_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        Renderer(tmp_path / "nope", SHANGHAI)


# --- template bugs at render time -----------------------------------------------------------

NAMED = group([alert(alertname=name, instance=f"host-{i}", annotations={"summary": f"summary {name}"})
               for i, name in enumerate(["DiskFull", "HighLatency", "NodeDown"])], {})


@pytest.mark.parametrize(("text", "line", "why"), [
    ('{"msg_type": "text",\n "content": {"text": {{ 1/0 }}}}', 2, "ZeroDivisionError"),
    ('{"msg_type": "text",\n\n "content": {"text": {{ alerts[0].nosuch }}}}', 3, "nosuch"),
    ('{"msg_type": "text", "content": {"text": {{ bot.webhook_url }}}}', 1, "webhook_url"),
    ('{"msg_type": "text", "content": {"text": {{ alerts[0].starts_at }}}}', 1, "time"),
    ('{"msg_type": "text", "content": {"text": "x" {{ title }} }}', None, "not valid JSON"),
    ('{"msg_type": "bogus", "content": {"text": {{ title }}}}', None, "msg_type"),
    ('{"msg_type": "text", "content": {"text": ""}, "sign": "x"}', None, "sign"),
    ('{"msg_type": "interactive", "card": {"schema": "2.0", "body": {"elements": [{"tag": "note", "elements": []}]}}}',
     None, "note"),
    ('{"msg_type": "interactive", "card": {"header": {"template": "pink"}, "elements": []}}', None, "header.template"),
])
def test_a_template_bug_gives_the_fallback_card_and_one_log_line(tmp_path: Path, text: str, line: int | None, why: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "buggy", text)
    renderer = Renderer(tmp_path, SHANGHAI, logging.getLogger("test.render"))
    secret_bot = replace(bot("buggy"), webhook_url=WebhookURL("https://open.feishu.cn/open-apis/bot/v2/hook/tok-123"),
                         secret=Secret("s3cr3t"))
    with caplog.at_level(logging.ERROR):
        messages = renderer.render(NAMED, secret_bot)
    assert_sendable(messages)
    card = messages[0]["card"]
    assert card["header"]["template"] == "grey"
    assert card["header"]["title"]["content"].endswith("(template error)")
    shown = visible(messages[0])
    for each in NAMED.alerts:
        assert each.labels["alertname"] in shown and each.annotations["summary"] in shown
    [record] = caplog.records
    where = f"{tmp_path / 'buggy.json.j2'}:{line}" if line else f"{tmp_path / 'buggy.json.j2'}:"
    assert where in record.getMessage() and why in record.getMessage()
    assert "tok-123" not in record.getMessage() and "s3cr3t" not in record.getMessage()
    with pytest.raises(TemplateError):
        renderer.render_strict(NAMED, secret_bot)


def test_an_unknown_template_name_gives_the_fallback_card(renderer: Renderer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR):
        messages = renderer.render(NAMED, bot("nope"))
    assert messages[0]["card"]["header"]["title"]["content"].endswith("(template error)")
    assert "nope.json.j2" in caplog.records[0].getMessage()


def test_the_fallback_card_carries_the_keyword(tmp_path: Path) -> None:
    write(tmp_path, "buggy", "{{ 1/0 }}")
    messages = Renderer(tmp_path, SHANGHAI).render(NAMED, bot("buggy", keywords=("告警",)))
    assert heading(messages[0]).startswith("告警 ")


def test_a_template_cannot_change_the_alerts_it_is_given(tmp_path: Path) -> None:
    # The same alert objects render every bot's message and every part of a split one.
    write(tmp_path, "meddling", '{% set _ = alerts[0].labels.clear() %}{"msg_type": "text", "content": {"text": "x"}}')
    notification = group([alert(alertname="HighCPU", team="infra")])
    messages = Renderer(tmp_path, SHANGHAI).render(notification, bot("meddling"))
    assert heading(messages[0]).endswith("(template error)")        # refused: the fallback card
    assert dict(notification.alerts[0].labels) == {"alertname": "HighCPU", "team": "infra"}


# --- sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_big_group_is_split_into_numbered_parts_holding_every_alert_once(template: str, renderer: Renderer) -> None:
    notification = many(500, resolved_every=7)
    messages = renderer.render(notification, bot(template))
    assert_sendable(messages)
    count = len(messages)
    assert count > 2
    title = title_for(notification)
    assert [heading(m) for m in messages] == [f"{title} {i}/{count}" for i in range(1, count + 1)]
    shown = [visible(m) for m in messages]
    for each in notification.alerts:
        assert sum(each.annotations["summary"] in text for text in shown) == 1
    everything = "\n".join(shown)
    firing = [everything.index(a.annotations["summary"]) for a in notification.firing]
    resolved = [everything.index(a.annotations["summary"]) for a in notification.resolved]
    assert firing == sorted(firing) and resolved == sorted(resolved) and max(firing) < min(resolved)


def test_a_card_over_200_components_is_split(tmp_path: Path) -> None:
    write(tmp_path, "busy", """{"msg_type": "interactive", "card": {"schema": "2.0", "body": {"elements": [
{% for alert in alerts %}{"tag": "hr"}, {"tag": "hr"}, {"tag": "hr"}, {"tag": "hr"},
{"tag": "markdown", "content": {{ alert.labels.instance }}}{% if not loop.last %},{% endif %}{% endfor %}]}}}""")
    notification = many(100)
    messages = Renderer(tmp_path, SHANGHAI).render_strict(notification, bot("busy"))
    assert_sendable(messages)
    assert len(messages) >= 3
    shown = "\n".join(visible(m) for m in messages)
    assert all(shown.count(a.labels["instance"]) == 1 for a in notification.alerts)


@pytest.mark.parametrize("template", TEMPLATES)
def test_one_huge_annotation_is_cut_visibly_to_fit_one_message(template: str, renderer: Renderer) -> None:
    huge = "0123456789abcdef" * 6400  # 100 KB
    notification = group([alert(annotations={"summary": "disk full", "description": huge}, instance="db-1")])
    messages = renderer.render(notification, bot(template))
    assert_sendable(messages)
    assert len(messages) == 1
    shown = visible(messages[0])
    [kept] = re.findall(r"([0-9a-f]*)" + re.escape(TRUNCATED), shown)
    assert len(kept) >= 64 and huge.startswith(kept)
    assert "disk full" in shown and "db-1" in shown


def test_a_shortened_alert_keeps_the_silence_link_of_its_real_labels(renderer: Renderer) -> None:
    # Six 100 KB notes do not fit even at 4096 characters each, so every value is cut to
    # 1024: the 1500-character label too, while its silence link stays short enough to send.
    tier = "z" * 1500
    notes = {f"note{i}": "y" * 100_000 for i in range(6)}
    messages = renderer.render(group([alert(annotations=notes, tier=tier)]), bot())
    assert_sendable(messages)
    assert len(messages) == 1 and TRUNCATED in visible(messages[0])
    silences = [u for u in links(messages[0]) if "/#/silences/new?filter=" in u]
    assert [unquote(u.split("filter=", 1)[1]) for u in silences] == [f'{{alertname="HighCPU", tier="{tier}"}}']


def test_the_fallback_card_is_split_too(tmp_path: Path) -> None:
    write(tmp_path, "buggy", "{{ 1/0 }}")
    notification = many(500)
    messages = Renderer(tmp_path, SHANGHAI).render(notification, bot("buggy"))
    assert_sendable(messages)
    assert len(messages) > 1
    assert heading(messages[-1]).endswith(f"(template error) {len(messages)}/{len(messages)}")
    shown = [visible(m) for m in messages]
    for each in notification.alerts:
        assert sum(each.labels["instance"] in text for text in shown) == 1


def test_a_thousand_alerts_render_quickly(renderer: Renderer) -> None:
    notification = many(1000)
    started = time.perf_counter()
    messages = renderer.render_strict(notification, bot())
    elapsed = time.perf_counter() - started
    assert_sendable(messages)
    assert elapsed < 1.0, f"1000 alerts took {elapsed * 1000:.0f} ms"


# --- mentions ---------------------------------------------------------------------------

ALICE, BOB, ALL = Mention("ou_alice1", "alice"), Mention("ou_bob2", "bob"), Mention("all")
STRANGER = Mention("", "carol")  # a name from a label that users: does not know
PINGS = re.compile(r"<at\b[^>]*>(?:[^<]*</at>)?", re.IGNORECASE)


def mentioning(*mentions: Mention, **labels: str) -> Alert:
    return replace(alert(**labels), mentions=mentions)


def pings(message: dict) -> list[str]:
    """Every mention tag Feishu would act on, in order, as its text holds it (JSON decoded)."""
    return [tag for text in strings(message) for tag in PINGS.findall(text)]


@pytest.mark.parametrize(("template", "expected"), [
    ("default", ["<at id=all></at>", "<at id=ou_alice1></at>", "<at id=ou_bob2></at>"]),
    ("legacy", ["<at id=all></at>", "<at id=ou_alice1></at>", "<at id=ou_bob2></at>"]),
    ("text", ['<at user_id="all">所有人</at>', '<at user_id="ou_alice1">alice</at>', '<at user_id="ou_bob2">bob</at>']),
])
def test_a_message_pings_everyone_its_alerts_mention_once(template: str, expected: list[str], renderer: Renderer) -> None:
    notification = group([mentioning(ALICE, STRANGER, instance="a"), mentioning(ALL, BOB, ALICE, instance="b")])
    [message] = renderer.render_strict(notification, bot(template))
    assert_sendable([message])
    assert pings(message) == expected  # @all first, then as found, each once
    assert visible(message).count("@carol") == 1  # shown, but pings nobody


def test_the_mentions_line_is_markdown_in_cards(renderer: Renderer) -> None:
    for template in ("default", "legacy"):
        message = renderer.render_strict(group([mentioning(ALICE, instance="a")]), bot(template))[0]
        body = encode_body(message).decode()
        tag = "markdown" if template == "default" else "lark_md"
        assert f'"tag":"{tag}","content":"<at id=ou_alice1></at>"' in body, template


@pytest.mark.parametrize("template", TEMPLATES)
def test_no_mentions_no_mentions_line(template: str, renderer: Renderer) -> None:
    plain = renderer.render_strict(samples.firing(), bot(template))[0]
    assert pings(plain) == []
    assert "@" not in visible(plain)


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_part_of_a_split_message_pings_the_people_of_its_own_alerts(template: str, renderer: Renderer) -> None:
    people = [Mention(f"ou_user{i}", f"user{i}") for i in range(40)]
    alerts = [replace(a, mentions=(people[i // 10], ALICE) if i % 10 == 0 else (people[i // 10],))
              for i, a in enumerate(many(400).alerts)]
    messages = renderer.render_strict(group(alerts), bot(template))
    assert_sendable(messages)
    assert len(messages) > 2
    for message in messages:
        text = visible(message)
        inside = [a for a in alerts if a.annotations["summary"] in text]
        wanted = {m.user_id for a in inside for m in a.mentions}
        found = {re.search(r'(?:id=|user_id=")([^>"]+)', tag).group(1) for tag in pings(message)}
        assert found == wanted


INJECTIONS = ["<at id=all></at>", '<at user_id="all">所有人</at>', "< AT id=ou_evil></at>", "<person id=ou_x>",
              "x</at><at id=all>"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_label_values_still_cannot_mention_anyone_when_mentions_are_on(template: str, renderer: Renderer) -> None:
    evil = Mention("", "<at id=all></at>")                     # a label's unknown "name"
    bad_ids = [Mention('ou_x"></at><at id=all>', "x"), Mention("ou_y></at><at id=all", "y"),
               Mention("ou_z", 'z"></at><at user_id="all">')]  # only config sets these; still contained
    notification = group([mentioning(ALICE, evil, *bad_ids, owner=INJECTIONS[0],
                                     annotations={"summary": " ".join(INJECTIONS)})])
    [message] = renderer.render_strict(notification, bot(template))
    assert_sendable([message])
    found = pings(message)
    if template == "text":  # the name is kept, minus what could close the tag or open another
        assert found == ['<at user_id="ou_alice1">alice</at>', '<at user_id="ou_z">z/atat user_id=all</at>']
    else:
        assert found == ["<at id=ou_alice1></at>", "<at id=ou_z></at>"]
    rest = "\n".join(PINGS.sub("", text) for text in strings(message))
    assert not re.search(r"<\s*/?\s*(at|person)\b", rest, re.IGNORECASE)  # nothing else Feishu could read as a tag
    shown = visible(message)
    for injection in INJECTIONS:
        assert injection in shown  # shown literally instead
    assert "@x" in shown and "@y" in shown  # a bad id pings nobody; the name is shown


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_card_with_mentions_is_accepted_by_feishu(template: str, renderer: Renderer, fake_feishu, no_proxy_env,
                                                    update_golden: bool) -> None:
    """What the strict fake Feishu receives (it refuses a card mention it would answer 11246
    to); tests/golden/render-mentions-TEMPLATE.json, rewritten by `pytest --update-golden`."""
    url = fake_feishu.add_bot("tok-mentions", keywords=["告警"])
    ops = replace(bot(template, keywords=("告警",), zone=ZoneInfo("Europe/Berlin")), webhook_url=WebhookURL(url))
    notification = group([mentioning(ALL, ALICE, STRANGER, owner="<at id=all></at>", instance="a"),
                          replace(mentioning(BOB, ALICE, instance="b"), status=RESOLVED, ends_at=T0 + timedelta(hours=2))])
    for message in renderer.render_strict(notification, ops):
        result = FeishuClient().send(ops, message)
        assert result.outcome is Outcome.SENT, result
    received = fake_feishu.received("tok-mentions")
    path = GOLDEN / f"render-mentions-{template}.json"
    text = json.dumps(received, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    if update_golden or not path.exists():
        path.write_text(text, encoding="utf-8")
        assert update_golden, f"golden file {path.name} was missing and has been written; check it"
    assert text == path.read_text(encoding="utf-8"), f"differs from {path.name} (pytest --update-golden)"


def test_a_template_author_can_ping_per_alert(tmp_path: Path) -> None:
    write(tmp_path, "each", '{"msg_type": "text", "content": {"text": {{ alerts | map(attribute="mentions") '
                            '| map("at_text") | join("\\n") }}}}')
    write(tmp_path, "card", '{"msg_type": "interactive", "card": {"elements": [{"tag": "div", "text": {"tag": '
                            '"lark_md", "content": {{ "On call: " ~ (alerts[0].mentions | at) }}}}]}}')
    renderer = Renderer(tmp_path, SHANGHAI)
    notification = group([mentioning(ALICE, instance="a"), mentioning(BOB, STRANGER, instance="b")])
    text = renderer.render_strict(notification, bot("each"))[0]["content"]["text"]
    assert text == '<at user_id="ou_alice1">alice</at>\n<at user_id="ou_bob2">bob</at> @carol'
    card = renderer.render_strict(notification, bot("card"))[0]["card"]
    assert card["elements"][0]["text"]["content"] == "On call: <at id=ou_alice1></at>"


def test_the_fallback_card_still_pings(tmp_path: Path) -> None:
    write(tmp_path, "buggy", "{{ 1/0 }}")
    evil = replace(mentioning(ALL, ALICE), annotations={"summary": "<at id=ou_evil></at>"})
    messages = Renderer(tmp_path, SHANGHAI).render(group([evil]), bot("buggy"))
    assert pings(messages[0]) == ["<at id=all></at>", "<at id=ou_alice1></at>"]
    assert "<at id=ou_evil></at>" in visible(messages[0])  # shown, not pinged


def test_a_mention_filter_in_a_macro_imported_without_context_is_a_clear_template_error(tmp_path: Path) -> None:
    write(tmp_path, "macros", "{% macro who(alert) %}{{ alert.mentions | at }}{% endmacro %}")
    write(tmp_path, "uses", '{% import "macros.json.j2" as m %}'
                            '{"msg_type": "text", "content": {"text": "{{ m.who(alerts[0]) }}"}}')
    with pytest.raises(TemplateError, match="with context"):
        Renderer(tmp_path, SHANGHAI).render_strict(group([mentioning(ALICE)]), bot("uses"))


# --- times, zones and the clock --------------------------------------------------------------

SUMMER = datetime(2026, 7, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("zone", "when", "shown"), [
    ("America/New_York", T0, "2026-11-28 19:42:10 EST"),        # DST zone, winter
    ("America/New_York", SUMMER, "2026-07-01 08:00:00 EDT"),    # DST zone, summer: an hour less behind
    ("Europe/Berlin", SUMMER, "2026-07-01 14:00:00 CEST"),
    ("Asia/Shanghai", T0, "2026-11-29 08:42:10 CST"),           # no DST: +08:00 all year
    ("Asia/Shanghai", SUMMER, "2026-07-01 20:00:00 CST"),
    ("Asia/Kolkata", SUMMER, "2026-07-01 17:30:00 IST"),         # a half-hour offset
    ("UTC", SUMMER, "2026-07-01 12:00:00 UTC"),
])
def test_times_follow_the_zone_and_its_daylight_saving(zone: str, when: datetime, shown: str) -> None:
    assert format_time(when, ZoneInfo(zone)) == shown
    notification = group([replace(alert(), starts_at=when)])
    for template in TEMPLATES:
        text = visible(Renderer(None, ZoneInfo(zone)).render_strict(notification, bot(template))[0])
        assert f"Started:{'** ' if template != 'text' else ' '}{shown}" in text, template


def test_the_clock_change_itself_is_shown_right() -> None:
    new_york = ZoneInfo("America/New_York")
    # 2026-03-08: clocks go from 02:00 EST to 03:00 EDT, so these are one second apart.
    before, after = datetime(2026, 3, 8, 6, 59, 59, tzinfo=timezone.utc), datetime(2026, 3, 8, 7, 0, 0, tzinfo=timezone.utc)
    assert format_time(before, new_york) == "2026-03-08 01:59:59 EST"
    assert format_time(after, new_york) == "2026-03-08 03:00:00 EDT"
    assert format_time(after, new_york, "%H:%M %z") == "03:00 -0400"


def test_a_naive_time_is_taken_as_utc_and_none_shows_nothing() -> None:
    assert format_time(datetime(2026, 7, 1, 12, 0), SHANGHAI) == "2026-07-01 20:00:00 CST"
    assert format_time(None, SHANGHAI) == "" and format_relative(None, SUMMER) == ""


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_bots_own_timezone_overrides_the_configured_one(template: str) -> None:
    renderer = Renderer(None, SHANGHAI)
    notification = samples.resolved()
    own = visible(renderer.render_strict(notification, bot(template, zone=ZoneInfo("America/New_York")))[0])
    assert "2026-11-28 19:42:10 EST" in own and "CST" not in own
    default = visible(renderer.render_strict(notification, bot(template))[0])
    assert "2026-11-29 08:42:10 CST" in default and "EST" not in default


def test_the_fallback_card_uses_the_bots_timezone(tmp_path: Path) -> None:
    write(tmp_path, "buggy", "{{ 1/0 }}")
    message = Renderer(tmp_path, SHANGHAI).render(samples.firing(), bot("buggy", zone=ZoneInfo("UTC")))[0]
    assert "since 2026-11-29 00:42:10 UTC" in visible(message)


@pytest.mark.parametrize(("seconds_after", "shown"), [
    (300, "5m ago"), (3 * 3600 + 12 * 60 + 5, "3h 12m ago"), (45, "45s ago"), (0.4, "just now"),
    (-180, "in 3m"), (2 * 86400 + 5 * 3600, "2d 5h ago"),
])
def test_relative_times_count_from_the_renderers_clock(tmp_path: Path, seconds_after: float, shown: str) -> None:
    assert format_relative(T0, T0 + timedelta(seconds=seconds_after)) == shown
    write(tmp_path, "ago", '{"msg_type": "text", "content": {"text": {{ alerts[0].starts_at | ago }}}}')
    renderer = Renderer(tmp_path, SHANGHAI, clock=lambda: T0.timestamp() + seconds_after)
    assert renderer.render_strict(group([alert()]), bot("ago"))[0]["content"]["text"] == shown


def test_templates_see_the_render_time_and_the_bots_zone(tmp_path: Path) -> None:
    write(tmp_path, "now", '{"msg_type": "text", "content": {"text": {{ timezone ~ " " ~ (now | time) ~ " "'
                           ' ~ ((now - alerts[0].starts_at) | duration) }}}}')
    renderer = Renderer(tmp_path, SHANGHAI, clock=lambda: T0.timestamp() + 600)
    text = renderer.render_strict(group([alert()]), bot("now", zone=ZoneInfo("Europe/Berlin")))[0]["content"]["text"]
    assert text == "Europe/Berlin 2026-11-29 01:52:10 CET 10m"


# --- link and field helpers ------------------------------------------------------------------


def test_md_fields_writes_named_lines_escaped_and_skips_empty_values(tmp_path: Path) -> None:
    write(tmp_path, "fields", '{"msg_type": "text", "content": {"text": {{ ([("Instance", "db-1:9100"), ("Empty", ""),'
                              ' ("a*b", "[x](y)")] | md_fields) ~ "|" ~ ({"k": "v", "none": ""} | md_fields(" · ")) }}}}')
    text = Renderer(tmp_path, SHANGHAI).render_strict(group([alert()]), bot("fields"))[0]["content"]["text"]
    assert text == "**Instance:** db&#45;1&#58;9100\n**a&#42;b:** &#91;x&#93;&#40;y&#41;|**k:** v"


@pytest.mark.parametrize("status", [FIRING, RESOLVED])
def test_alert_md_links_is_links_then_md_links(tmp_path: Path, status: str) -> None:
    write(tmp_path, "both", '{"msg_type": "text", "content": {"text": {{ alerts | map("md_links") | join("\\n") ~ "\\n--\\n"'
                            ' ~ (alerts | map("links") | map("md_links") | join("\\n")) }}}}')
    odd = [replace(alert(status, {"runbook_url": url}, instance=str(i)), generator_url=url, panel_url=url)
           for i, url in enumerate(["https://r.example/a b", "https://r.example/(x)|{y}^界", "javascript:x()",
                                    "https://r.example/ok", "http://[::1]:9/x", ""])]
    notification = replace(group(odd), external_url="http://am.example.com:9093/(a)")
    fast, slow = Renderer(tmp_path, SHANGHAI).render_strict(notification, bot("both"))[0]["content"]["text"].split("\n--\n")
    assert fast == slow
    assert "[Source](https://r.example/%28x%29%7C%7By%7D%5E%E7%95%8C)" in fast
    assert ("[Silence](" in fast) == (status == FIRING)


def test_alert_links_are_the_safe_ones_in_order(renderer: Renderer, tmp_path: Path) -> None:
    write(tmp_path, "pairs", '{"msg_type": "text", "content": {"text": {{ alerts[0] | links | map("join", "=") | join(" ") }}}}')
    firing = replace(alert(annotations={"runbook_url": "javascript:alert(1)"}), dashboard_url="https://g.example/d",
                     panel_url="ftp://x")
    text = Renderer(tmp_path, SHANGHAI).render_strict(group([firing]), bot("pairs"))[0]["content"]["text"]
    names = [pair.split("=", 1)[0] for pair in text.split(" ")]
    assert names == ["Source", "Dashboard", "Silence"]


# --- measuring sizes ---------------------------------------------------------------------------


def test_numbers_that_grow_when_written_out_are_still_measured_right(tmp_path: Path) -> None:
    # `1e15` is written back as `1000000000000000.0`: 4 characters become 18.
    write(tmp_path, "numbers", '{"msg_type": "text", "content": {"text": {{ part ~ " " ~ (alerts | map(attribute="labels")'
                               ' | map(attribute="instance") | join(" ")) }}, "pad": [{% for a in alerts %}'
                               '{% for i in range(60) %}1e15,{% endfor %}{% endfor %}1]}}')
    notification = many(20)  # one message by the template's text (about 6 KB), but over 20 KB written out
    messages = Renderer(tmp_path, SHANGHAI).render_strict(notification, bot("numbers"))
    assert_sendable(messages)
    assert len(messages) > 1
    shown = " ".join(m["content"]["text"] for m in messages)
    assert all(shown.count(a.labels["instance"]) == 1 for a in notification.alerts)


@pytest.mark.parametrize(("text", "why"), [
    ('{"msg_type": "text", "content": {"text": "x\\ud800"}}', "surrogate"),
    ('{"msg_type": "text", "content": {"text": {{ title }}, "n": 1e999}}', "out of range"),
])
def test_output_a_body_cannot_carry_is_a_template_error(tmp_path: Path, text: str, why: str) -> None:
    write(tmp_path, "bad", text)
    with pytest.raises(TemplateError, match=why):
        Renderer(tmp_path, SHANGHAI).render_strict(group([alert()]), bot("bad"))
    assert_sendable(Renderer(tmp_path, SHANGHAI).render(group([alert()]), bot("bad")))  # the fallback card


def test_a_keyword_put_in_front_is_counted_in_the_size(tmp_path: Path) -> None:
    write(tmp_path, "plain", '{"msg_type": "text", "content": {"text": {{ alerts[0].annotations.description }}}}')
    budget = BODY_LIMIT_BYTES - SIGNATURE_OVERHEAD
    just_fits = "x" * (budget - len('{"msg_type":"text","content":{"text":""}}') - 10)
    messages = Renderer(tmp_path, SHANGHAI).render_strict(group([alert(annotations={"description": just_fits})]),
                                                          bot("plain", keywords=("告警" * 100,)))
    assert_sendable(messages)
    assert messages[0]["content"]["text"].startswith("告警" * 100 + " x")
