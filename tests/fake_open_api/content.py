"""The content of an app's message, checked as Feishu would: the card rules are the custom
bot's (fake_feishu.shape_problem: schema 1.0/2.0, update_multi in 2.0, components, colours),
the mentions an app's card may make are wider: <at id=...> by open_id, user_id or all, and
<at email=...> (feishu-app-protocol.md §8.2; custom bots refuse email)."""

from __future__ import annotations

import re

from fake_feishu import MENTION_TAG, TAG_ATTR, _all_strings, shape_problem

from . import answers as a

MENTION_ID = re.compile(r"all|ou_[A-Za-z0-9]+|[A-Za-z0-9][A-Za-z0-9-]*")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def problem(msg_type: object, content: dict) -> tuple[int, str, str] | None:
    """(code, why, detail) when Feishu would refuse this content, else None."""
    if msg_type == "text":
        if set(content) != {"text"} or not isinstance(content["text"], str) or not content["text"]:
            return a.INVALID_PARAM, "text content must be {text: non-empty string}", "content"
        return None
    if msg_type == "post":
        found = shape_problem({"msg_type": "post", "content": {"post": content}})
        return (a.INVALID_PARAM, f"post: {found}", "content") if found else None
    if msg_type != "interactive":
        return a.INVALID_PARAM, f"msg_type {msg_type!r} is not one the bridge sends", "msg_type"
    found = _callback_problem(content)
    if found:
        return a.CARD_CONTENT, f"card: {found}", "ErrCode: 200621; ErrMsg: card content is invalid"
    found = shape_problem({"msg_type": "interactive", "card": _without_callbacks(content)})
    if found:
        return a.CARD_CONTENT, f"card: {found}", "ErrCode: 200621; ErrMsg: card content is invalid"
    found = _mention_problem(content)
    if found:
        return (a.CARD_CONTENT, f"mention: {found}",
                "ErrCode: 100290; ErrMsg: There is an invalid user resource(at/person) in your card")
    return None


ELEMENT_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,19}")


def _callback_problem(card: object) -> str | None:
    """An app's card may have buttons that call back (custom bots may not): each callback
    behaviour carries a `value`, an object (the SDKs take objects only, §6.2, §7); an
    element_id is [A-Za-z][A-Za-z0-9_]*, at most 20 characters, unique in the card (§7)."""
    ids: list[str] = []
    for node in _tagged(card):
        if "element_id" in node:
            if not isinstance(node["element_id"], str) or not ELEMENT_ID.fullmatch(node["element_id"]):
                return f"element_id {node['element_id']!r} is not [A-Za-z][A-Za-z0-9_]*, at most 20 characters"
            ids.append(node["element_id"])
        for behavior in node.get("behaviors") or () if node.get("tag") == "button" else ():
            if isinstance(behavior, dict) and behavior.get("type") == "callback" \
                    and not isinstance(behavior.get("value"), dict):
                return f"callback behavior value {behavior.get('value')!r} is not an object"
    if len(ids) != len(set(ids)):
        return "element_id repeated in the card"
    return None


def _without_callbacks(node: object) -> object:
    """The card with each callback behaviour as an open_url one, for the shape checks that
    custom bots' cards share (which refuse callbacks)."""
    if isinstance(node, dict):
        if node.get("type") == "callback" and "value" in node:
            return {"type": "open_url", "default_url": "https://callback.invalid/"}
        return {k: _without_callbacks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_without_callbacks(v) for v in node]
    return node


def _tagged(node: object):
    if isinstance(node, dict):
        if isinstance(node.get("tag"), str):
            yield node
        for value in node.values():
            yield from _tagged(value)
    elif isinstance(node, list):
        for item in node:
            yield from _tagged(item)


def _mention_problem(card: dict) -> str | None:
    for text in _all_strings(card):
        for tag, attrs in MENTION_TAG.findall(text):
            found = {m[0].lower(): m[1] or m[2] or m[3] for m in TAG_ATTR.findall(attrs)}
            if tag.lower() != "at" or not found:
                return f"<{tag}{attrs}>"
            for name, value in found.items():
                ids = [v.strip() for v in value.split(",")]
                ok = EMAIL.fullmatch if name == "email" else MENTION_ID.fullmatch if name in ("id", "ids",
                                                                                                 "user_id") else None
                if ok is None or not all(ok(i) for i in ids):
                    return f"<at {name}={value}>"
    return None
