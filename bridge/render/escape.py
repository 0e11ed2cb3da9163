"""Making a value show literally where it lands: Feishu markdown, a URL, a Go string
literal, a message's text (no mention, no lone surrogate).

Fast on purpose: a render escapes thousands of values, so the escapers are tables
measured against str.translate and re.sub (see _Escaper).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import quote

# Feishu markdown's special characters (card markdown doc, 特殊字符转义说明; protocols.md A.6)
# plus `&` (so the escapes cannot be forged), `|` (2.0 tables) and `=` (setext headings).
_MD_ESCAPES = "&#*~><[]():+\"'`$_-!/\\|="
# `<at ...>` mentions someone in text messages and cards; `<person>` shows a user. A
# WORD JOINER (U+2060) after the `<` stops the tag and is invisible, so the text reads the
# same. Applied to every interpolated string, so no value can mention anyone.
MENTION = re.compile(r"<(?=\s*/?\s*(?:at|person)\b)", re.IGNORECASE)
NO_MENTION = "<\u2060"
_PERCENT_ESCAPES = "".join(chr(c) for c in range(128) if not (chr(c).isalnum() or chr(c) in "_.-~"))
_GO_ESCAPES = "\\\"\n"


@dataclass(frozen=True)
class _Escaper:
    """Replaces each of some characters by its escape, fast: a render escapes thousands of
    values. A short ASCII text goes character by character through a table; in a longer
    one, one str.replace per character present beats str.translate and re.sub several
    times over once a text has many characters to escape."""

    first: Mapping[int, str]   # characters that the escapes themselves contain: done first, in one pass
    first_chars: frozenset[str]
    rest: Mapping[str, str]
    ascii: Callable[[str], str]  # every ASCII character to itself or its escape
    short: int                 # texts up to this long use the table

    @classmethod
    def of(cls, chars: str, escape: Callable[[str], str], first: str, short: int) -> "_Escaper":
        table = {c: escape(c) if c in chars else c for c in map(chr, range(128))}
        return cls(MappingProxyType({ord(c): escape(c) for c in first}), frozenset(first),
                   MappingProxyType({c: escape(c) for c in chars if c not in first}), table.__getitem__, short)

    def escape(self, text: str) -> str:
        if len(text) <= self.short and text.isascii():
            return "".join(map(self.ascii, text))
        present = set(text)
        if not self.first_chars.isdisjoint(present):
            text = text.translate(self.first)
        for char in present.intersection(self.rest):
            text = text.replace(char, self.rest[char])
        return text


# Where the table stops paying (measured): markdown values hold few characters to escape,
# matchers in a URL many.
_MD = _Escaper.of(_MD_ESCAPES, lambda c: f"&#{ord(c)};", first="&#", short=40)
_PERCENT = _Escaper.of(_PERCENT_ESCAPES, lambda c: f"%{ord(c):02X}", first="%", short=256)
_GO = _Escaper.of(_GO_ESCAPES, lambda c: {"\n": "\\n"}.get(c, "\\" + c), first="\\", short=0)


def md_escape(value: Any) -> str:
    """A value for Feishu markdown/lark_md that shows literally: no emphasis, link, mention or rule."""
    return "" if value is None else _MD.escape(str(value))


def neutralise_mentions(text: str) -> str:
    return MENTION.sub(NO_MENTION, text) if "<" in text else text


def utf8_safe(text: str) -> str:
    """The text with any lone surrogate replaced: JSON can carry one in, but UTF-8 cannot
    encode it, so a body holding one could not be sent. Callers skip ASCII text (most
    values) before calling, inline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def plain(value: Any) -> Any:
    """A value ready for a message: mentions neutralised, and no lone surrogate (utf8_safe)."""
    if isinstance(value, str):
        return neutralise_mentions(value if value.isascii() else utf8_safe(value))
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def go_string(value: str) -> str:
    """A double-quoted matcher value, as Alertmanager's matcher parser unquotes it."""
    return '"' + (_GO.escape(value) if '"' in value or "\\" in value or "\n" in value else value) + '"'


def quote_all(text: str) -> str:
    """urllib's quote(text, safe=""), several times faster for ASCII text (a render builds
    one of these per alert)."""
    return _PERCENT.escape(text) if text.isascii() else quote(text, safe="", errors="replace")
