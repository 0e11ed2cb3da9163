"""Feishu's message shapes, checked before anything is stored: every msg_type a custom bot
takes, as its guide defines it (protocols.md A.2 to A.4, A.7). A message the bridge stores
is one Feishu can read, or the caller hears which field is wrong (HTTP 400), instead of a
dead letter an hour later.

What is checked is what Feishu documents it refuses: a wrong type or a missing field, an
unknown msg_type, a link that is not http(s) (a post's `a.href`: "否则消息会发送失败"), the
rules card JSON 2.0 added (unknown top-level keys, `update_multi`, no `note` or `action`,
buttons that open URLs), and card mentions by anything but an open_id, user_id or `all`
(code 11246). What Feishu ignores (1.0 card attributes it does not know) is left alone.
Sizes and the 200 components are not refusals here: bridge.relay.parts splits for them.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

from ..errors import PayloadError
from ..limits import COLOURS

MSG_TYPES = ("text", "post", "image", "share_chat", "interactive")
POST_LANGUAGES = ("zh_cn", "en_us")
# The node tags of a post and the string fields each needs (A.2).
POST_NODES: Mapping[str, tuple[str, ...]] = {"text": ("text",), "a": ("text", "href"), "at": ("user_id",),
                                             "img": ("image_key",)}
V2_CARD_KEYS = frozenset({"schema", "config", "card_link", "header", "body"})
# Card JSON 2.0 dropped these components (A.4).
DROPPED_IN_V2 = frozenset({"note", "action"})
# Custom bots mention by open_id (ou_...) or user_id, or everyone (all); email and union_id
# are refused with 11246 (A.7).
MENTION_ID = re.compile(r"all|ou_[A-Za-z0-9]+|[A-Za-z0-9][A-Za-z0-9-]*")
_MENTION_TAG = re.compile(r"<\s*(at|person)\b([^>]*)>", re.IGNORECASE)
_TAG_ATTR = re.compile(r"""([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
_MENTION_ATTRS = {"at": ("id", "ids", "user_id"), "person": ("id",)}


def check_message(body: Mapping[str, Any]) -> dict:
    """The Feishu message in `body` ({"msg_type", "content"} or, for a card, {"msg_type",
    "card"}), as a custom bot's request takes it; PayloadError naming the field otherwise.

    A card may also come as `content` (the field other message types use): it is moved
    to `card`, where a custom bot reads it."""
    kind = body.get("msg_type")
    if kind not in MSG_TYPES:
        raise PayloadError(f"msg_type: expected one of {', '.join(MSG_TYPES)}, got {_show(kind)}")
    if kind == "interactive":
        if "card" in body and "content" in body:
            raise PayloadError("card: give the card once, as card (a custom bot's form) or as content, not both")
        where = "card" if "card" in body else "content"
        card = body.get(where)
        if isinstance(card, str):
            raise PayloadError(f"{where}: a custom bot takes the card as a JSON object, not as a string "
                               "(Feishu's guide: replace the content string with a card object)")
        check_card(card, where)
        return {"msg_type": kind, "card": card}
    if "card" in body:
        raise PayloadError(f"card: only an interactive message has a card; a {kind} message has content")
    content = body.get("content")
    _CONTENT[kind](content, "content")
    return {"msg_type": kind, "content": content}


# -- text, image, share_chat --------------------------------------------------------------
def _exactly(content: Any, path: str, key: str, example: str) -> str:
    if not isinstance(content, dict):
        raise PayloadError(f"{path}: expected an object like {{\"{key}\": \"{example}\"}}, got {_kind(content)}")
    extra = sorted(set(content) - {key})
    if extra:
        raise PayloadError(f"{path}.{shown_key(extra[0])}: unknown field (this message's content is {{\"{key}\": ...}} only)")
    value = content.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PayloadError(f"{path}.{key}: expected a non-empty string, got {_kind(value)}")
    return value


def _text(content: Any, path: str) -> None:
    _exactly(content, path, "text", "...")


def _image(content: Any, path: str) -> None:
    # The image_key comes from the app API's image upload, which a custom bot cannot call.
    _exactly(content, path, "image_key", "img_...")


def _share_chat(content: Any, path: str) -> None:
    _exactly(content, path, "share_chat_id", "oc_...")


# -- post ----------------------------------------------------------------------------------
def _post(content: Any, path: str) -> None:
    if not isinstance(content, dict) or set(content) != {"post"}:
        raise PayloadError(f"{path}: expected {{\"post\": {{\"zh_cn\": {{\"title\": ..., \"content\": [[...]]}}}}}}, "
                           f"got {_kind(content) if not isinstance(content, dict) else sorted(content)}")
    post = content["post"]
    if not isinstance(post, dict) or not post:
        raise PayloadError(f"{path}.post: expected an object with zh_cn and/or en_us, got {_kind(post)}")
    for lang, body in post.items():
        where = f"{path}.post.{shown_key(lang)}"
        if lang not in POST_LANGUAGES:
            raise PayloadError(f"{where}: Feishu takes only {' and '.join(POST_LANGUAGES)}")
        if not isinstance(body, dict):
            raise PayloadError(f"{where}: expected an object with title and content, got {_kind(body)}")
        extra = sorted(set(body) - {"title", "content"})
        if extra:
            raise PayloadError(f"{where}.{shown_key(extra[0])}: unknown field (a post language has title and content)")
        if not isinstance(body.get("title", ""), str):
            raise PayloadError(f"{where}.title: expected a string, got {_kind(body['title'])}")
        paragraphs = body.get("content")
        if not isinstance(paragraphs, list):
            raise PayloadError(f"{where}.content: expected a list of paragraphs (lists of nodes), "
                               f"got {_kind(paragraphs)}")
        for i, paragraph in enumerate(paragraphs):
            if not isinstance(paragraph, list):
                raise PayloadError(f"{where}.content[{i}]: expected a paragraph (a list of nodes), "
                                   f"got {_kind(paragraph)}")
            for j, node in enumerate(paragraph):
                _post_node(node, f"{where}.content[{i}][{j}]")


def _post_node(node: Any, path: str) -> None:
    tag = node.get("tag") if isinstance(node, dict) else None
    if tag not in POST_NODES:
        raise PayloadError(f"{path}.tag: expected one of {', '.join(POST_NODES)}, got {_show(tag)}")
    for key in POST_NODES[tag]:
        if not isinstance(node.get(key), str):
            raise PayloadError(f"{path}.{key}: a {tag} node needs a string {key}, got {_kind(node.get(key))}")
    if tag == "a" and not _web_url(node["href"]):
        raise PayloadError(f"{path}.href: expected an http(s) URL (Feishu refuses the message otherwise), "
                           f"got {_show(node['href'])}")
    if tag == "text" and not isinstance(node.get("un_escape", False), bool):
        raise PayloadError(f"{path}.un_escape: expected true or false, got {_kind(node['un_escape'])}")
    if tag == "at" and not isinstance(node.get("user_name", ""), str):
        raise PayloadError(f"{path}.user_name: expected a string, got {_kind(node['user_name'])}")


# -- interactive (cards) -------------------------------------------------------------------
def check_card(card: Any, path: str) -> None:
    if not isinstance(card, dict):
        raise PayloadError(f"{path}: expected a card object, got {_kind(card)}")
    schema = card.get("schema", "1.0")
    if schema not in ("1.0", "2.0"):
        raise PayloadError(f"{path}.schema: expected \"1.0\" or \"2.0\", got {_show(schema)}")
    _header(card.get("header", {}), f"{path}.header")
    if schema == "2.0":
        _card_v2(card, path)
    else:
        _components(card.get("elements", []), f"{path}.elements")
        i18n = card.get("i18n_elements", {})
        if not isinstance(i18n, dict):
            raise PayloadError(f"{path}.i18n_elements: expected an object of languages, got {_kind(i18n)}")
        for lang, elements in i18n.items():
            _components(elements, f"{path}.i18n_elements.{shown_key(lang)}")
    _mentions(card, path)


def _header(header: Any, path: str) -> None:
    if not isinstance(header, dict):
        raise PayloadError(f"{path}: expected an object, got {_kind(header)}")
    colour = header.get("template", "default")
    if not isinstance(colour, str) or colour not in COLOURS:
        raise PayloadError(f"{path}.template: expected one of {', '.join(sorted(COLOURS))}, got {_show(colour)}")
    if not isinstance(header.get("title", {}), dict):
        raise PayloadError(f"{path}.title: expected an object like {{\"tag\": \"plain_text\", \"content\": ...}}, "
                           f"got {_kind(header['title'])}")


def _components(elements: Any, path: str) -> None:
    if not isinstance(elements, list):
        raise PayloadError(f"{path}: expected a list of components, got {_kind(elements)}")
    for i, element in enumerate(elements):
        if not isinstance(element, dict) or not isinstance(element.get("tag"), str):
            raise PayloadError(f"{path}[{i}]: expected a component (an object with a tag), got {_kind(element)}")


def _card_v2(card: dict, path: str) -> None:
    extra = sorted(set(card) - V2_CARD_KEYS)
    if extra:
        raise PayloadError(f"{path}.{shown_key(extra[0])}: card JSON 2.0 has no such field (it refuses what it does not "
                           f"support; elements go in body.elements)")
    body = card.get("body")
    if not isinstance(body, dict):
        raise PayloadError(f"{path}.body: card JSON 2.0 needs body, an object with elements, got {_kind(body)}")
    _components(body.get("elements"), f"{path}.body.elements")
    config = card.get("config", {})
    if not isinstance(config, dict):
        raise PayloadError(f"{path}.config: expected an object, got {_kind(config)}")
    if config.get("update_multi", True) is not True:
        raise PayloadError(f"{path}.config.update_multi: card JSON 2.0 requires true")
    for where, component in _tagged(body["elements"], f"{path}.body.elements"):
        if component["tag"] in DROPPED_IN_V2:
            raise PayloadError(f"{where}: card JSON 2.0 has no {component['tag']} component "
                               "(use markdown, and buttons directly in elements)")
        if component["tag"] == "button":
            _button_v2(component, where)


def _button_v2(button: dict, path: str) -> None:
    behaviors = button.get("behaviors")
    if not isinstance(behaviors, list) or not behaviors:
        raise PayloadError(f"{path}.behaviors: a 2.0 button needs behaviors; custom bots can only open URLs: "
                           '[{"type": "open_url", "default_url": "https://..."}]')
    for i, behavior in enumerate(behaviors):
        where = f"{path}.behaviors[{i}]"
        if not isinstance(behavior, dict) or behavior.get("type") != "open_url":
            raise PayloadError(f"{where}.type: custom bots support only open_url (no callbacks)")
        if not _web_url(behavior.get("default_url")):
            raise PayloadError(f"{where}.default_url: expected an http(s) URL, got {_show(behavior.get('default_url'))}")
        for key in ("pc_url", "ios_url", "android_url"):
            if behavior.get(key) and not _web_url(behavior[key]):
                raise PayloadError(f"{where}.{key}: expected an http(s) URL or nothing, got {_show(behavior[key])}")


def _mentions(card: dict, path: str) -> None:
    """`<at>` and `<person>` in a card's text name people by open_id or user_id only."""
    for where, text in _strings(card, path):
        for tag, attrs in _MENTION_TAG.findall(text):
            tag = tag.lower()
            given = {m[0].lower(): m[1] or m[2] or m[3] for m in _TAG_ATTR.findall(attrs)}
            names = _MENTION_ATTRS[tag]
            others = sorted(set(given) - set(names))
            if others:
                raise PayloadError(f"{where}: <{tag} {others[0]}=...>: custom bots mention only by open_id or "
                                   "user_id (Feishu refuses the card with code 11246)")
            ids = [i.strip() for name in names if name in given for i in given[name].split(",")]
            bad = [i for i in ids if not MENTION_ID.fullmatch(i) or (tag == "person" and i == "all")]
            if not ids or bad:
                raise PayloadError(f"{where}: <{tag}> needs an open_id (ou_...), a user_id or all, got "
                                   f"{_show(bad[0] if bad else '')} (Feishu refuses the card with code 11246)")


# -- walking ---------------------------------------------------------------------------------
def _tagged(node: Any, path: str) -> Iterator[tuple[str, dict]]:
    """Every component under node (an object with a string tag), with its path."""
    for where, value in _walk(node, path):
        if isinstance(value, dict) and isinstance(value.get("tag"), str):
            yield where, value


def _strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    for where, value in _walk(node, path):
        if isinstance(value, str) and "<" in value:
            yield where, value


def _walk(root: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every value under root with its path, depth first, without recursion (a card from
    a caller may nest as deep as its JSON parser allowed)."""
    stack = [(path, root)]
    while stack:
        where, value = stack.pop()
        yield where, value
        if isinstance(value, dict):
            stack.extend((f"{where}.{shown_key(k)}", v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", v) for i, v in reversed(list(enumerate(value))))


def shown_key(key: Any) -> str:
    """A key from the request as it is shown in a field path: anything UTF-8 cannot carry
    (a lone surrogate from a \\ud800 escape) escaped, and cut short, so the answer that
    names it can always be written."""
    text = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= 60 else text[:57] + "..."


def _web_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


_CONTENT: Mapping[str, Callable[[Any, str], None]] = {
    "text": _text, "post": _post, "image": _image, "share_chat": _share_chat,
}
