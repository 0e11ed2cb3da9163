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
    found = shape_problem({"msg_type": "interactive", "card": content})
    if found:
        return a.CARD_CONTENT, f"card: {found}", "ErrCode: 200621; ErrMsg: card content is invalid"
    found = _mention_problem(content)
    if found:
        return (a.CARD_CONTENT, f"mention: {found}",
                "ErrCode: 100290; ErrMsg: There is an invalid user resource(at/person) in your card")
    return None


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
