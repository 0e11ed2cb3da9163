"""A checked message made ready to store: its mentions added, cut into parts that fit
Feishu's limits (20 KB a request, 200 card components), each carrying the bot's keyword.

A text is cut between lines (a line longer than a part, anywhere), a single-language post
between paragraphs, a card between its top-level elements; the parts are numbered
"(1/3)" at the start of a text and at the end of a post's or card's title. The sizes are
added up from each unit's own encoding, not found by encoding candidate parts, and every
part is measured once more before it is returned.
"""

from __future__ import annotations

import copy
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Callable, Sequence

from ..config import Bot
from ..errors import PayloadError
from ..limits import BUDGET_BYTES, MAX_COMPONENTS, encode_body
from ..model import Mention
from ..render import count_components, mention_tag, with_keyword

# A relayed message becomes at most this many requests. They share the bot's 5/s and
# 100/min with its alerts: ten parts (some 200 KB of text) take two seconds of the bot's
# time and a tenth of its minute, and a chat does not read more at once anyway.
MAX_PARTS = 10
_WIDEST_LABEL = f"({MAX_PARTS}/{MAX_PARTS})"


def ready(message: dict, bot: Bot, mentions: Sequence[Mention] = ()) -> list[dict]:
    """The requests for a checked message (bridge.relay.shapes) to `bot`, in order, unsigned;
    PayloadError when it cannot be sent as given."""
    message = copy.deepcopy(message)
    kind = message["msg_type"]
    _encodable(message)
    if kind in ("image", "share_chat"):
        if mentions:
            raise PayloadError(f"mentions: an {kind} message has no text to mention anyone in")
        if bot.keywords:
            raise PayloadError(f"bot {bot.name!r} has keywords, and Feishu refuses a message without one in its "
                               f"text (code 19024); an {kind} message has no text: send it to a bot without keywords")
    elif mentions:
        _add_mentions(message, mentions)
    whole = copy.deepcopy(message)
    if kind != "image" and kind != "share_chat":
        with_keyword(whole, bot.keywords)
    if _fits(whole):
        return [whole]
    if kind in ("image", "share_chat"):
        raise PayloadError(f"content: over Feishu's {BUDGET_BYTES} bytes for one request")
    # The mentions, added in front, are not in the caller's numbering of elements or paragraphs.
    shift = 1 if mentions and kind != "text" else 0
    parts = _SPLITTERS[kind](message, _keyword(bot), shift)
    for part in parts:
        with_keyword(part, bot.keywords)
        if not _fits(part):   # the arithmetic above is exact; this is its check
            raise PayloadError("the message could not be cut into parts within Feishu's limits")
    return parts


# -- measuring ------------------------------------------------------------------------------
def _encodable(message: dict) -> None:
    try:
        size = len(encode_body(message))
    except UnicodeEncodeError:
        raise PayloadError("the message holds a lone surrogate (a \\ud800-\\udfff escape), which a UTF-8 "
                           "body cannot carry") from None
    if size > MAX_PARTS * BUDGET_BYTES:
        raise PayloadError(f"the message is {size} bytes: over the {MAX_PARTS} requests of {BUDGET_BYTES} bytes "
                           f"the relay sends for one message (they share the bot's rate limit with its alerts)")


def _fits(message: dict) -> bool:
    components = count_components(message["card"]) if message["msg_type"] == "interactive" else 0
    return len(encode_body(message)) <= BUDGET_BYTES and components <= MAX_COMPONENTS


def _size(text: str) -> int:
    """The bytes `text` takes inside a JSON string in a body (encode_body's encoding)."""
    return len(encode_basestring(text).encode("utf-8")) - 2


def _keyword(bot: Bot) -> str:
    """What the keyword may add in front of a title or a text: reserved in every part."""
    return f"{bot.keywords[0]} " if bot.keywords else ""


def _pack(units: Sequence[tuple[int, int]], room: tuple[int, int], separator: int,
          where: Callable[[int], str]) -> list[list[int]]:
    """Units (bytes, components) in order, in as few runs as fit `room` each, a run's units
    joined by `separator` bytes (a comma in a JSON list, nothing in a text)."""
    runs: list[list[int]] = []
    current: list[int] = []
    used = [0, 0]
    for i, (size, components) in enumerate(units):
        if size > room[0] or components > room[1]:
            raise PayloadError(f"{where(i)}: over Feishu's limits on its own ({size} bytes, {components} "
                               f"components; a request takes {BUDGET_BYTES} bytes and {MAX_COMPONENTS} components): "
                               "make it smaller")
        extra = size + (separator if current else 0)
        if current and (used[0] + extra > room[0] or used[1] + components > room[1]):
            runs.append(current)
            current, used, extra = [], [0, 0], size
        current.append(i)
        used = [used[0] + extra, used[1] + components]
    if current:
        runs.append(current)
    if len(runs) > MAX_PARTS:
        raise PayloadError(f"the message needs {len(runs)} requests within Feishu's limits; the relay sends at "
                           f"most {MAX_PARTS} for one message (they share the bot's rate limit with its alerts)")
    return runs


# -- mentions -------------------------------------------------------------------------------
def _add_mentions(message: dict, mentions: Sequence[Mention]) -> None:
    """The pings in front of the message's content, so that they land in its first part."""
    kind = message["msg_type"]
    if kind == "text":
        content = message["content"]
        content["text"] = " ".join(mention_tag(m, "text") for m in mentions) + " " + content["text"]
    elif kind == "post":
        nodes = [{"tag": "at", "user_id": m.user_id, **({"user_name": m.name} if m.name else {})} for m in mentions]
        for body in message["content"]["post"].values():
            body["content"] = [list(nodes), *body.get("content", [])]
    else:
        element = {"tag": "markdown", "content": " ".join(mention_tag(m, "card") for m in mentions)}
        for elements in _element_lists(message["card"]):
            elements.insert(0, dict(element))


def _element_lists(card: dict) -> list[list]:
    if card.get("schema") == "2.0":
        return [card["body"]["elements"]]
    if "elements" not in card and isinstance(card.get("i18n_elements"), dict) and card["i18n_elements"]:
        return list(card["i18n_elements"].values())
    return [card.setdefault("elements", [])]


# -- text -----------------------------------------------------------------------------------
def _split_text(message: dict, keyword: str, shift: int) -> list[dict]:
    text = message["content"]["text"]
    empty = {"msg_type": "text", "content": {"text": ""}}
    room = BUDGET_BYTES - len(encode_body(empty)) - _size(keyword) - _size(_WIDEST_LABEL + " ")
    pieces = [piece for line in text.splitlines(keepends=True) for piece in _cut(line, room)]
    runs = _pack([(_size(p), 0) for p in pieces], (room, 0), 0, lambda i: "text")
    return [{"msg_type": "text", "content": {"text": f"({n}/{len(runs)}) " + "".join(pieces[i] for i in run)}}
            for n, run in enumerate(runs, 1)]


def _cut(line: str, room: int) -> list[str]:
    """The line in pieces of at most `room` bytes each (most lines are one piece)."""
    pieces = []
    while _size(line) > room:
        low, high = 1, len(line)          # the longest prefix that fits: sizes grow with length
        while low < high:
            middle = (low + high + 1) // 2
            low, high = (middle, high) if _size(line[:middle]) <= room else (low, middle - 1)
        pieces.append(line[:low])
        line = line[low:]
    return pieces + [line] if line else pieces


# -- post -----------------------------------------------------------------------------------
def _split_post(message: dict, keyword: str, shift: int) -> list[dict]:
    post = message["content"]["post"]
    if len(post) != 1:
        raise PayloadError(f"content.post: over Feishu's {BUDGET_BYTES} bytes, and a post in more than one language "
                           "is not cut into parts: send one language, or a shorter post")
    ((lang, body),) = post.items()
    paragraphs = body.get("content", [])
    title = body.get("title", "")

    def part(run: Sequence[int], label: str, prefix: str = "") -> dict:
        labelled = f"{prefix}{title} {label}" if title else f"{prefix}{label}"
        return {"msg_type": "post", "content": {"post": {lang: {"title": labelled,
                                                                "content": [paragraphs[i] for i in run]}}}}

    base = len(encode_body(part((), _WIDEST_LABEL, keyword)))
    units = [(len(encode_body(p)), 0) for p in paragraphs]
    runs = _pack(units, (BUDGET_BYTES - base, 0), 1, lambda i: f"content.post.{lang}.content[{i - shift}]")
    return [part(run, f"({n}/{len(runs)})") for n, run in enumerate(runs, 1)]


# -- cards ----------------------------------------------------------------------------------
def _split_card(message: dict, keyword: str, shift: int) -> list[dict]:
    card = message["card"]
    v2 = card.get("schema") == "2.0"
    if not v2 and "elements" not in card:
        raise PayloadError(f"card: over Feishu's limits ({BUDGET_BYTES} bytes, {MAX_COMPONENTS} components), and "
                           "only a card's elements are cut into parts: make it smaller")
    elements = card["body"]["elements"] if v2 else card["elements"]

    def part(run: Sequence[int], label: str, prefix: str = "") -> dict:
        shell = {k: v for k, v in card.items() if k not in ("elements", "body")}
        shell = copy.deepcopy(shell)
        chosen = [elements[i] for i in run]
        if v2:
            shell["body"] = {**{k: v for k, v in card["body"].items() if k != "elements"}, "elements": chosen}
        else:
            shell["elements"] = chosen
        _label_card(shell, label, prefix)
        return {"msg_type": "interactive", "card": shell}

    base = part((), _WIDEST_LABEL, keyword)
    room = (BUDGET_BYTES - len(encode_body(base)), MAX_COMPONENTS - count_components(base["card"]))
    units = [(len(encode_body(e)), count_components(e)) for e in elements]
    path = "card.body.elements" if v2 else "card.elements"
    runs = _pack(units, room, 1, lambda i: f"{path}[{i - shift}]")
    return [part(run, f"({n}/{len(runs)})") for n, run in enumerate(runs, 1)]


def _label_card(card: dict, label: str, prefix: str) -> None:
    """The part's number at the end of the card's title (a title made if it has none)."""
    header = card.setdefault("header", {})
    title: Any = header.get("title")
    if title is None:
        header["title"] = {"tag": "plain_text", "content": f"{prefix}{label}"}
    elif isinstance(title.get("content"), str):
        header["title"] = {**title, "content": f"{prefix}{title['content']} {label}"}


_SPLITTERS: dict[str, Callable[[dict, str, int], list[dict]]] = {
    "text": _split_text, "post": _split_post, "interactive": _split_card,
}
