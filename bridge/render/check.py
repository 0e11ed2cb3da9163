"""Checking a rendered message: valid JSON, a message a Feishu custom bot accepts, the
bot's keyword in its visible text (added when missing), and its size and component count.
"""

from __future__ import annotations

import json
import math
import traceback
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any

import jinja2

from ..errors import TemplateError
from ..limits import COLOURS, CUSTOM_BOT_BUDGET, Budget
from ..template_files import TEMPLATE_SUFFIX
from .filters import truncate_text

MESSAGE_TYPES = frozenset({"text", "post", "interactive"})

# A message as built, with its unsigned body's size in bytes and its card's component count.
Measured = tuple[dict, tuple[int, int]]


def runtime_error(template: jinja2.Template, exc: BaseException) -> TemplateError:
    """A failure while rendering, as a TemplateError naming the template file and line."""
    where, line = template.filename or template.name or "template", None
    # Jinja rewrites the traceback so that template frames carry the template's file and line.
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(TEMPLATE_SUFFIX):
            where, line = frame.filename, frame.lineno
    return TemplateError(where, truncate_text(" ".join(f"{type(exc).__name__}: {exc}".split()), 300), line)


def checked(name: str, text: str, keywords: tuple[str, ...], budget: Budget = CUSTOM_BOT_BUDGET) -> Measured:
    """The template's output `text` as a message a Feishu custom bot accepts, with the bot's
    keyword, measured; a TemplateError naming `name` when it is not one."""
    message, growth = _parse(name, text)
    # Visible strings are searched only when a keyword is in the text at all, as a JSON
    # string holds it; else it is missing (or spelt in \u escapes: then it is added anyway).
    texts: list[str] | None = [] if any(encode_basestring(k)[1:-1] in text for k in keywords) else None
    body_tags, other_tags = survey(message, texts)
    problem = _check_message(message, body_tags)
    if problem:
        raise TemplateError(name, problem)
    return sized(name, message, len(body_tags) + len(other_tags), texts, keywords, text, growth, budget)


def parse_output(name: str, text: str) -> Any:
    """A template's output as JSON; a TemplateError naming `name` and the place when it is not."""
    return _parse(name, text)[0]


def with_keyword(message: dict, keywords: tuple[str, ...]) -> None:
    """Put the bot's first keyword into a text, post or interactive message where Feishu looks
    for it, unless a visible text holds one already (see _with_keyword)."""
    texts: list[str] = []
    survey(message, texts)
    _with_keyword(message, keywords, texts)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(name: str, text: str) -> tuple[Any, int]:
    """The template's output as JSON, and how many bytes its numbers can grow by when it is
    written out again (`1e3` becomes `1000.0`; nothing else can grow: see sized)."""
    growth = 0

    def number(literal: str) -> float:
        nonlocal growth
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"{truncate_text(literal, 40)} is out of range")
        growth += max(0, len(repr(value)) - len(literal))
        return value

    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=number), growth
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        near = truncate_text(lines[exc.lineno - 1].strip(), 80) if exc.lineno <= len(lines) else ""
        raise TemplateError(name, f"the output is not valid JSON: {exc.msg} at output line {exc.lineno} "
                                  f"column {exc.colno}, near {near!r}") from None
    except ValueError as exc:
        raise TemplateError(name, f"the output is not valid JSON: {exc}") from None


def _check_message(message: Any, body_tags: list[Any]) -> str | None:
    """What makes this not a message a Feishu custom bot accepts, or None."""
    if not isinstance(message, dict):
        return "the output is not a JSON object"
    extra = set(message) - {"msg_type", "card", "content"}
    if extra:
        return f"unexpected top-level keys {sorted(extra)} (the client adds timestamp and sign)"
    kind = message.get("msg_type")
    if kind not in MESSAGE_TYPES:
        return f"msg_type {truncate_text(kind, 40)!r} is not one of {sorted(MESSAGE_TYPES)}"
    content = message.get("content")
    if kind == "text":
        if not (isinstance(content, dict) and isinstance(content.get("text"), str) and content["text"].strip()):
            return 'a text message needs "content": {"text": "..."} with some text'
        return None
    if kind == "post":
        post = content.get("post") if isinstance(content, dict) else None
        if not (isinstance(post, dict) and post and set(post) <= {"zh_cn", "en_us"}
                and all(isinstance(p, dict) and isinstance(p.get("content"), list) for p in post.values())):
            return 'a post message needs "content": {"post": {"zh_cn" or "en_us": {"content": [...]}}}'
        return None
    return _check_card(message.get("card"), body_tags)


def _check_card(card: Any, body_tags: list[Any]) -> str | None:
    if not isinstance(card, dict):
        return 'an interactive message needs "card", an object'
    header = card.get("header", {})
    colour = header.get("template", "default") if isinstance(header, dict) else None
    if not isinstance(colour, str) or colour not in COLOURS:
        return f"header.template must be one of {sorted(COLOURS)}"
    schema = card.get("schema", "1.0")
    if schema == "1.0":
        return None if isinstance(card.get("elements", []), list) else "card elements must be a list"
    if schema != "2.0":
        return f"unknown card schema {truncate_text(schema, 20)!r}"
    body = card.get("body")
    if "elements" in card or not isinstance(body, dict) or not isinstance(body.get("elements"), list):
        return "a 2.0 card keeps its components in body.elements, a list"
    dropped = {"note", "action"} & {str(tag) for tag in body_tags}
    if dropped:
        return f"card JSON 2.0 has no {' or '.join(sorted(dropped))} component (use markdown and buttons)"
    config = card.get("config", {})
    if isinstance(config, dict) and config.get("update_multi", True) is not True:
        return "card JSON 2.0 requires config.update_multi true"
    return None


def count_components(card: Any) -> int:
    """The components Feishu counts in a card: every object with a tag, a plain_text too
    (protocols.md A.4)."""
    return len(_walk(card, None))


def _walk(root: Any, texts: list[str] | None) -> list[Any]:
    """The `tag` of every component under root (parsed JSON: plain dicts and lists); root's
    visible strings are added to texts."""
    tags = []
    stack = [root]
    pop, push = stack.pop, stack.extend
    while stack:
        node = pop()
        kind = type(node)
        if kind is dict:
            if "tag" in node:
                tags.append(node["tag"])
            if texts is not None:
                texts.extend(v for v in (node.get("content"), node.get("text"), node.get("title")) if type(v) is str)
            push(node.values())
        elif kind is list:
            push(node)
    return tags


def survey(message: Any, texts: list[str] | None) -> tuple[list[Any], list[Any]]:
    """One walk over a message: the tags of its card's body and of the rest of its card (the
    components Feishu counts) and, unless texts is None, its visible strings: what Feishu
    searches for a bot's keywords (the content, text and title values; guide, 自定义关键词)."""
    if not isinstance(message, dict):
        return [], []
    card = message.get("card")
    if texts is not None:
        _walk({k: v for k, v in message.items() if k != "card"}, texts)
    if not isinstance(card, dict):
        return [], _walk(card, texts)
    body = card.get("body")
    return _walk(body, texts), _walk({k: v for k, v in card.items() if k != "body"}, texts)


def _with_keyword(message: dict, keywords: tuple[str, ...], texts: list[str] | None) -> int | None:
    """Puts the bot's first keyword in front of the message's title when no visible text
    holds one (Feishu refuses such a message, 19024); texts None: none does. The bytes
    that added to the body at most, or None when it made a new title (so the components
    must be counted again)."""
    if not keywords or (texts is not None and _holds_keyword(texts, keywords)):
        return 0
    keyword = keywords[0]
    prefix = len(encode_basestring(keyword + " ").encode("utf-8")) - 2  # quotes aside
    if message["msg_type"] == "text":
        message["content"]["text"] = f"{keyword} {message['content']['text']}"
        return prefix
    if message["msg_type"] == "post":
        added: int | None = 0
        for post in message["content"]["post"].values():
            title = post.get("title")
            added = added + prefix if isinstance(title, str) and added is not None else None
            post["title"] = f"{keyword} {title or ''}".rstrip()
        return added
    header = message["card"].setdefault("header", {})
    title = header.get("title")
    if isinstance(title, dict) and isinstance(title.get("content"), str):
        title["content"] = f"{keyword} {title['content']}"
        return prefix
    header["title"] = {"tag": "plain_text", "content": keyword}
    return None


def _holds_keyword(texts: list[str], keywords: tuple[str, ...]) -> bool:
    if any("\0" in k for k in keywords):
        return any(k in s for s in texts for k in keywords)
    # One search of all the texts at once: a NUL between them cannot be part of a match.
    joined = "\0".join(texts)
    return any(k in joined for k in keywords)


def sized(name: str, message: dict, components: int, texts: list[str] | None, keywords: tuple[str, ...],
          text: str | None = None, growth: int = 0, budget: Budget = CUSTOM_BOT_BUDGET) -> Measured:
    r"""The checked message with its keyword, its size and its card's component count.

    The size is the unsigned body's, or, when the template's own text shows that the body
    is within the budget, that text's size: a bound that saves writing the body out again.
    Written out compactly, parsed JSON is never longer than its text, except for numbers
    (`growth`, from _parse): whitespace goes, escapes are kept or get shorter (`\u00e9` is
    written `é`, `\/` is `/`), a repeated key is dropped. Any text with a `\ud...` escape,
    which could be a lone surrogate that UTF-8 cannot carry, is measured in full. An
    `exact` budget (an app bot's, whose content is escaped into a string) measures always.
    """
    added = _with_keyword(message, keywords, texts)
    if added is None:
        components = count_components(message["card"])
    if message["msg_type"] != "interactive":
        components = 0
    if text is not None and added is not None and not budget.exact and "\\ud" not in text and "\\uD" not in text:
        try:
            bound = len(text.encode("utf-8")) + growth + added
        except UnicodeEncodeError:
            bound = budget.bytes + 1
        if bound <= budget.bytes:
            return message, (bound, components)
    return message, (body_size(message, name, budget), components)


def body_size(message: dict, name: str = "template", budget: Budget = CUSTOM_BOT_BUDGET) -> int:
    """The message's size as its budget measures it."""
    try:
        return budget.measure(message)
    except UnicodeEncodeError as exc:
        raise TemplateError(name, "the output holds a lone surrogate (a \\ud800-\\udfff escape), "
                                        "which a UTF-8 body cannot carry") from exc
