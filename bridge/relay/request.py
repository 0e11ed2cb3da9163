"""What a caller may post to /send/<bot> (and `feishu-alert-bridge send` sends), read into a
RelayRequest, or a PayloadError naming the field.

One of three forms, each with the optional `dedupe_key` and `mentions`:

    {"text": "Deploy of api v1.42 finished"}
    {"msg_type": "post" | "text" | "interactive" | "share_chat" | "image", "content": {...}}
        (a card: {"msg_type": "interactive", "card": {...}})
    {"template": "deploy", "data": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import PayloadError
from .shapes import check_message, shown_key

# A dedupe_key is the caller's name for "this message": long enough for a job name, a
# date and a run id; it is stored hashed.
MAX_DEDUPE_KEY = 256
# More than this is a list of everyone, which is what `all` is for.
MAX_MENTIONED = 50
# How deep a body may nest. A card nests containers at most 5 deep (protocols.md A.3), some
# 20 levels of JSON; a body far deeper is no message, and copying or encoding it would run
# out of Python's stack (a 500) where the JSON parser did not.
MAX_DEPTH = 64

_FORMS = ("text", "msg_type", "template")
_FIELDS = {"text": {"text"}, "msg_type": {"msg_type", "content", "card"}, "template": {"template", "data"}}
_OPTIONAL = {"dedupe_key", "mentions"}
_MENTION_KEYS = {"users", "all"}
FORMS_HELP = ('{"text": "..."}, {"msg_type": "...", "content": {...}} (a card: "card": {...}) '
              'or {"template": "...", "data": {...}}')


@dataclass(frozen=True)
class RelayRequest:
    message: dict | None = None              # a checked Feishu message (bridge.relay.shapes), or
    template: str | None = None              # the template to render it from, with
    data: Mapping[str, Any] = field(default_factory=dict)
    dedupe_key: str | None = None
    mention_users: tuple[str, ...] = ()      # names in the users: directory
    mention_all: bool = False


def read_request(body: Any) -> RelayRequest:
    """The request in a decoded JSON body; PayloadError naming the field otherwise."""
    if not isinstance(body, dict):
        raise PayloadError(f"expected a JSON object: {FORMS_HELP}")
    _shallow(body)
    forms = [name for name in _FORMS if name in body]
    if len(forms) != 1:
        given = " and ".join(forms) if forms else "none of them"
        raise PayloadError(f"expected exactly one of text, msg_type and template, got {given}: {FORMS_HELP}")
    form = forms[0]
    unknown = sorted(set(body) - _FIELDS[form] - _OPTIONAL)
    if unknown:
        hint = ("the bridge signs the message itself" if unknown[0] in ("timestamp", "sign")
                else f"this form takes {', '.join(sorted(_FIELDS[form] | _OPTIONAL))}")
        raise PayloadError(f"{shown_key(unknown[0])}: unknown field ({hint})")
    users, everyone = _mentions(body.get("mentions"))
    common = {"dedupe_key": _dedupe_key(body.get("dedupe_key")), "mention_users": users, "mention_all": everyone}
    if form == "text":
        text = body["text"]
        if not isinstance(text, str) or not text.strip():
            raise PayloadError("text: expected a non-empty string")
        return RelayRequest(message={"msg_type": "text", "content": {"text": text}}, **common)
    if form == "msg_type":
        return RelayRequest(message=check_message(body), **common)
    name, data = body["template"], body.get("data", {})
    if not isinstance(name, str) or not name:
        raise PayloadError("template: expected the name of a template in templates_dir")
    if not isinstance(data, dict):
        raise PayloadError(f"data: expected an object (the template reads it as data), got {type(data).__name__}")
    return RelayRequest(template=name, data=data, **common)


def _shallow(body: dict) -> None:
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"the body nests deeper than {MAX_DEPTH} levels: no Feishu message does")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def _dedupe_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_DEDUPE_KEY:
        raise PayloadError(f"dedupe_key: expected a string of 1 to {MAX_DEDUPE_KEY} characters")
    return value


def _mentions(value: Any) -> tuple[tuple[str, ...], bool]:
    if value is None:
        return (), False
    if not isinstance(value, dict):
        raise PayloadError('mentions: expected an object like {"users": ["alice"], "all": false}')
    unknown = sorted(set(value) - _MENTION_KEYS)
    if unknown:
        raise PayloadError(f"mentions.{shown_key(unknown[0])}: unknown field (mentions take users and all)")
    everyone = value.get("all", False)
    if not isinstance(everyone, bool):
        raise PayloadError("mentions.all: expected true or false")
    users = value.get("users", [])
    if not isinstance(users, list) or len(users) > MAX_MENTIONED:
        raise PayloadError(f"mentions.users: expected a list of at most {MAX_MENTIONED} names from users:")
    for i, name in enumerate(users):
        if not isinstance(name, str) or not name:
            raise PayloadError(f"mentions.users[{i}]: expected a name from the users: directory")
    return tuple(dict.fromkeys(users)), everyone
