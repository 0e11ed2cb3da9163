"""Whatever labels and annotations hold, every template gives sendable messages that show them literally."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings, strategies as st

from bridge.config import Bot
from bridge.limits import encode_body
from bridge.limits import BODY_LIMIT_BYTES, SIGNATURE_OVERHEAD
from bridge.model import FIRING, RESOLVED, Alert, Mention, Notification, fingerprint
from bridge.render import SHORTEN_STEPS, TRUNCATED, Renderer, safe_url
from cards import shown_text, strings

TEMPLATES = ("default", "legacy", "text")
T0 = datetime(2026, 11, 29, 0, 42, 10, tzinfo=timezone.utc)

TRICKY = [
    '"', "\\", '\\"', "\n", "\r\n", "{", "}", "{{ title }}", "{% if x %}", "}}", "{#", "<at id=all></at>",
    '<at user_id="all">所有人</at>', "< AT id=ou_1>", "</at>", "<person id=ou_x>", "[x](http://evil.example)",
    "**bold**", "---", "# heading", "> quote", "`code`", "&#60;", "&amp;", "javascript:alert(1)",
    "http://example.com/a b", "\u2028", "\x00", "💥", "ﬀ", "\u2060",
]
# Any text without lone surrogates (a UTF-8 body cannot carry them), plus the awkward cases.
short_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
value = st.one_of(
    short_text,
    st.sampled_from(TRICKY),
    st.lists(st.one_of(st.sampled_from(TRICKY), short_text), max_size=6).map("".join),
    # Long values, too big for a message on their own.
    st.tuples(st.sampled_from(TRICKY + ["x", "界", "<&>"]), st.integers(1000, 12000)).map(lambda t: t[0] * t[1]),
)
# Ids that are ids (config only ever gives these) and ones that try to break out of the tag.
GOOD_IDS = ["ou_a1", "ou_B2", "all", "3f9a2c1d"]  # open_ids, @all, a user_id
BAD_IDS = ['ou_x"></at><at id=all>', "ou_y></at><at id=all", "ou z", "<at id=all></at>", "ou_\u2060", "on_union1",
           "a@example.com", "ou_" + "x" * 80]
mention = st.builds(
    Mention,
    st.one_of(st.sampled_from(GOOD_IDS + BAD_IDS + [""]),
              # with a character no id holds
              short_text.filter(lambda t: any(not (c.isascii() and (c.isalnum() or c in "_-")) for c in t))),
    st.one_of(short_text, st.sampled_from(TRICKY)),
)
label_name = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20).filter(
    lambda k: k not in ("alertname", "severity", "instance"))


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


LOG = Collect()
_logger = logging.getLogger("test.render.properties")
_logger.addHandler(LOG)
_logger.propagate = False
RENDERER = Renderer(None, ZoneInfo("Asia/Shanghai"), _logger)


def shown(messages: list[dict]) -> str:
    """The visible text of all messages (cards.shown_text)."""
    return shown_text(messages, cards=all(m["msg_type"] == "interactive" for m in messages))


# A card's <at id=ou_x></at> or a text message's <at user_id="ou_x">Name</at>.
PING = re.compile(r'<at id=([A-Za-z0-9_-]+)></at>|<at user_id="([A-Za-z0-9_-]+)">[^<>"]*</at>')


def appears(text: str, value: str) -> bool:
    """The value is shown as it is, or cut to one of the renderer's lengths with a visible mark."""
    value = value.replace("<\u2060", "<")
    return value in text or any(value[:n] + TRUNCATED in text for n in SHORTEN_STEPS if len(value) > n)


@st.composite
def notifications(draw: st.DrawFn) -> Notification:
    alerts = []
    for status in draw(st.lists(st.sampled_from([FIRING, RESOLVED]), min_size=1, max_size=2)):
        labels = {"alertname": draw(value), "severity": draw(value), "instance": draw(value),
                  draw(label_name): draw(value)}
        annotations = {"summary": draw(value), "description": draw(value), "runbook_url": draw(value),
                       draw(label_name): draw(value)}
        alerts.append(Alert(status=status, labels=labels, annotations=annotations, starts_at=T0,
                            ends_at=T0 + timedelta(minutes=3) if status == RESOLVED else None,
                            generator_url=draw(st.one_of(value, st.just("http://prometheus.example.com/graph"))),
                            fingerprint=fingerprint(labels), mentions=tuple(draw(st.lists(mention, max_size=3)))))
    empty = Notification(source="alertmanager", receiver=draw(value), status=FIRING, group_key="{}:{}",
                         group_labels={"alertname": alerts[0].labels["alertname"]}, common_labels={},
                         common_annotations={}, external_url="http://am.example.com:9093", truncated_alerts=0,
                         alerts=())
    return empty.subset(alerts)


@settings(max_examples=150, deadline=None)
@given(notifications())
def test_any_values_give_valid_messages_that_show_them_literally(notification: Notification) -> None:
    for template in TEMPLATES:
        LOG.lines.clear()
        messages = RENDERER.render(notification, Bot(name="ops", template=template))
        assert LOG.lines == [], template  # no fallback: the template coped with every value
        pinged = set()
        for message in messages:
            body = encode_body(message)
            assert len(body) + SIGNATURE_OVERHEAD <= BODY_LIMIT_BYTES
            assert json.loads(body) == message
            # Only the mention filters write tags, each a whole, well-formed one; nothing
            # else in the message could read as a tag.
            text = "\n".join(strings(message))
            pinged |= {m.group(1) or m.group(2) for m in PING.finditer(text)}
            assert not re.search(r"<\s*/?\s*(at|person)\b", PING.sub("", text), re.IGNORECASE), template
        assert pinged == {m.user_id for a in notification.alerts for m in a.mentions if m.user_id in GOOD_IDS}
        text = shown(messages)
        for alert in notification.alerts:
            for name, item in [*alert.labels.items(), *alert.annotations.items()]:
                if name == "runbook_url" and safe_url(item) and template != "text":
                    continue  # shown as a link, not as text
                assert appears(text, item), (template, name, item[:80])
