"""The action lines and buttons of an app-bot card (bridge.render.actions): what they show,
the signed button values (good only for their group, action and chat), and cards they leave
alone."""

from __future__ import annotations

import json
from zoneinfo import ZoneInfo

from bridge.render.actions import ActionView, button_key, button_value, decorate, verify

KEY = button_key("app-S3cret")
CARD = {"msg_type": "interactive", "card": {"schema": "2.0", "config": {"update_multi": True},
                                             "header": {"title": {"tag": "plain_text", "content": "t"}},
                                             "body": {"elements": [{"tag": "markdown", "content": "x"}]}}}
ZONE = ZoneInfo("Asia/Shanghai")
T_1404 = 1796450640.0    # 2026-12-05 14:04 in Shanghai


def view(**changes) -> ActionView:
    fields = dict(key=KEY, ref="r" * 24, chat="oc_1", durations=("1h", "4h"), zone=ZONE, firing=True)
    return ActionView(**{**fields, **changes})


def texts(message: dict) -> list[str]:
    found = []
    for element in message["card"]["body"]["elements"]:
        if element["tag"] == "markdown":
            found.append(element["content"])
        for column in element.get("columns", ()):
            found += [b["text"]["content"] for b in column["elements"]]
    return found


def test_a_firing_card_gets_silence_and_acknowledge_buttons():
    decorated = decorate(CARD, view())
    assert texts(decorated) == ["x", "Silence 1h", "Silence 4h", "Acknowledge"]
    assert CARD["card"]["body"]["elements"] == [{"tag": "markdown", "content": "x"}], "the original is untouched"


def test_the_lines_say_who_did_what_in_the_bots_zone():
    decorated = decorate(CARD, view(acked_by="Alice", acked_at=T_1404 - 60, silenced_by="Bob *b*",
                                    silenced_until=T_1404 + 3600, silence_url="https://am.example/#/silences/s1"))
    assert texts(decorated) == ["x", "🔕 Silenced by Bob &#42;b&#42; until 15:04 · [View silence](https://am.example/"
                                     "#/silences/s1)\n👀 Alice is on it (14:03)", "Expire silence", "Acknowledge"]
    odd = decorate(CARD, view(silenced_by="Bob", silenced_until=T_1404, silence_url="javascript:alert(1)"))
    assert "View silence" not in json.dumps(odd)


def test_a_resolved_card_keeps_its_lines_without_buttons_and_other_cards_are_left_alone():
    assert texts(decorate(CARD, view(firing=False, acked_by="Alice", acked_at=T_1404))) == [
        "x", "👀 Alice is on it (14:04)"]
    assert decorate(CARD, view(firing=False)) is CARD
    legacy = {"msg_type": "interactive", "card": {"elements": [], "config": {"update_multi": True}}}
    assert decorate(legacy, view()) is legacy
    text = {"msg_type": "text", "content": {"text": "x"}}
    assert decorate(text, view()) is text


def test_a_value_is_good_only_as_signed():
    value = button_value(KEY, "g1", "oc_1", "silence", "1h")
    assert set(value) == {"v", "g", "a", "d", "s"} and len(json.dumps(value)) < 120
    tapped = verify(KEY, value, "oc_1")
    assert (tapped.ref, tapped.action, tapped.arg) == ("g1", "silence", "1h")
    assert verify(KEY, value, "oc_2") is None, "another chat"
    assert verify(button_key("rotated"), value, "oc_1") is None, "another app secret"
    for changed in ({"g": "g2"}, {"a": "expire"}, {"d": "24h"}, {"s": "0" * 32}, {"a": "delete"}, {"s": 1}):
        assert verify(KEY, {**value, **changed}, "oc_1") is None, changed
    assert verify(KEY, "silence", "oc_1") is None and verify(KEY, None, "oc_1") is None
