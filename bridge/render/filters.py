"""What templates call to format a value: times, durations, label lists, markdown fields
and mentions. Plain functions of their arguments; the filters that need the render (its
zone, its clock reading, its mention placeholders) wrap these in state.py.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import Any, Callable, Iterable, Mapping
from zoneinfo import ZoneInfo

from ..model import Alert, Mention

TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
# What may stand inside <at ...>: "all", an open_id (ou_...) or a user_id (protocols.md
# A.7; custom bots take no email or union_id: 11246). The pipeline takes ids from config
# only; this keeps even a bad one from opening or closing a tag, or failing the card. A
# mention whose id fails this is shown as its name, pinging nobody.
_MENTION_ID = re.compile(r"(?:all|ou_[A-Za-z0-9]+|[A-Za-z0-9][A-Za-z0-9-]*)\Z")
_MENTION_ID_MAX = 64
# Taken out of a name shown inside a text message's <at ...>Name</at>.
_MENTION_NAME_DROP = re.compile(r"[<>\"\x00-\x1f\x7f]")
ALL_NAME = "所有人"  # the guide's text for <at user_id="all">
# An email in an app bot's card mention, <at email=...></at> (feishu-app-protocol.md §8.2):
# nothing that could end the tag or open another. Config is its only source.
_MENTION_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\Z")


def format_time(value: datetime | None, timezone: ZoneInfo, fmt: str = TIME_FORMAT) -> str:
    """`2026-11-29 08:42:10 CST` in the configured zone; "" for no time."""
    if value is None or value == "":
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt_timezone.utc)
    local = value.astimezone(timezone)
    if fmt == TIME_FORMAT and 1000 <= local.year:  # strftime's own result, a few times sooner
        return "%04d-%02d-%02d %02d:%02d:%02d %s" % (local.year, local.month, local.day, local.hour,
                                                     local.minute, local.second, local.tzname() or "")
    return local.strftime(fmt)


def format_relative(value: datetime | None, now: datetime) -> str:
    """`5m ago`, `in 3m`, or `just now` (within a second): `value` seen from `now`."""
    if value is None or value == "":
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt_timezone.utc)
    seconds = (now - value).total_seconds()
    if abs(seconds) < 1:
        return "just now"
    return f"{format_duration(seconds)} ago" if seconds > 0 else f"in {format_duration(-seconds)}"


def format_duration(value: timedelta | float | None) -> str:
    """`3h 12m`, `45s`, `2d 5h`: the largest unit and the next one when not zero."""
    if value is None or value == "":
        return ""
    seconds = max(0, int(value.total_seconds() if isinstance(value, timedelta) else value))
    units = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        count, seconds = divmod(seconds, size)
        units.append(f"{count}{unit}" if count else "")
    first = next((i for i, u in enumerate(units) if u), 3)
    return " ".join(u for u in units[first:first + 2] if u) or "0s"


def truncate_text(value: Any, length: int) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= length else text[:length] + "…"


def labels_compact(labels: Mapping[str, str], *exclude: str | Iterable[str]) -> str:
    """`k=v, k=v` sorted by name, without the names given (names or lists of names)."""
    if len(exclude) == 1 and not isinstance(exclude[0], str):  # a list of names: templates' usual call
        skip = set(exclude[0])
    else:
        skip = {n for e in exclude for n in ([e] if isinstance(e, str) else e)}
    kept = [(k, v) for k, v in labels.items() if k not in skip]  # often none: sorted after
    kept.sort()
    return ", ".join([f"{k}={v}" for k, v in kept])


def without(mapping: Mapping[str, str], *names: str) -> dict[str, str]:
    """The entries with a value, sorted by name, except those named: `notes | without("summary")`."""
    return {k: v for k, v in sorted(mapping.items()) if v and k not in names}


def sorted_pairs(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """Alertmanager's KV.SortedPairs: alertname first, then by name (the title's words and
    a silence link's matchers come in this order)."""
    pairs = sorted(labels.items())
    # Moved only when it is not first already: one sort, no second list (a silence link
    # is built per alert).
    if "alertname" in labels and pairs[0][0] != "alertname":
        pairs.remove(("alertname", labels["alertname"]))
        pairs.insert(0, ("alertname", labels["alertname"]))
    return pairs


def md_fields(md: Callable[[Any], str], fields: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
              separator: str = "\n") -> str:
    """The filter `[("Instance", labels.instance)] | md_fields` (or a map), with md the
    render's markdown escaper: `**Instance:** value` lines, name and value escaped, those
    with an empty value left out."""
    if not fields:
        return ""
    pairs = fields.items() if type(fields) is dict or isinstance(fields, Mapping) else fields
    return separator.join([f"**{md(name)}:** {md(value)}" for name, value in pairs if value])


def unique_mentions(alerts: Iterable[Alert]) -> tuple[Mention, ...]:
    """Everyone the alerts mention, each once, as first found; @all first."""
    seen: set[str] = set()
    found = []
    for alert in alerts:
        for mention in alert.mentions:
            key = mention.user_id or (f"email:{mention.email}" if mention.email else "text:" + mention.name)
            if key not in seen:
                seen.add(key)
                found.append(mention)
    return tuple(sorted(found, key=lambda m: m.user_id != "all"))  # stable: only @all moves


def mention_tag(mention: Mention, style: str) -> str:
    """Feishu's ping for `mention`: style "card" gives `<at id=ou_x></at>` (card markdown and
    lark_md), "text" gives `<at user_id="ou_x">Name</at>` (text messages); "" when it pings
    nobody (no user_id, or one that is not an id). A person known by email only pings in
    a card (only app bots are given such mentions: bridge.mentions)."""
    if not mention.user_id and mention.email and style == "card" and _MENTION_EMAIL.match(mention.email):
        return f"<at email={mention.email}></at>"
    if len(mention.user_id) > _MENTION_ID_MAX or not _MENTION_ID.match(mention.user_id):
        return ""
    if style == "card":
        return f"<at id={mention.user_id}></at>"
    name = _MENTION_NAME_DROP.sub("", mention.name) or (ALL_NAME if mention.user_id == "all" else "")
    return f'<at user_id="{mention.user_id}">{name}</at>'


def mention_words(value: Any, style: str, tag: Callable[[str], str], md: Callable[[Any], str]) -> str:
    """The mentions in `value` (one or many) as words: each ping passed through `tag` (the
    render's placeholder, or as it is where no finalize runs after)."""
    # A name that pings nobody reads as "@name": escaped in markdown, and in a text
    # message neutralised by finalize like any value.
    mentions = [value] if isinstance(value, Mention) else list(value or ())
    words = []
    for mention in mentions:
        if not isinstance(mention, Mention):
            raise TypeError(f"the mention filters take alert.mentions or mentions, not a {type(mention).__name__}")
        ping = mention_tag(mention, style)
        if ping:
            words.append(tag(ping))
        elif mention.name:
            words.append("@" + (md(mention.name) if style == "card" else mention.name))
    return " ".join(words)
