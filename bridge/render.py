"""Feishu messages from Jinja2 templates: sandboxed, JSON by construction, cut to size.

A template is JSON text in which every `{{ expression }}` is written out as ONE JSON
literal: the environment's `finalize` JSON-encodes it. So

    "content": {{ "**Summary:** " ~ (alert.annotations.summary | md) }}

can never produce broken JSON, whatever the summary holds. A template whose own text
is not JSON is a template bug. Templates are compiled when the Renderer is built (a
syntax error is a ConfigError); at render time any failure, and any output that is not
a valid Feishu message, gives the bot a plain fallback card built here in Python, so an
alert is never lost to a template.

Every message returned fits Feishu's custom-bot limits once signed (20 KB body, 200
card components): a group too big for one message is cut into parts titled 1/N..N/N,
and an alert too big on its own has its longest values shortened, visibly.

Mentions: finalize neutralises every `<at`/`<person` an expression writes, so no label
value can ping anyone. Only the `at` and `at_text` filters ping, for the Mentions the
pipeline put on the alerts (from config): they write a placeholder holding a per-render
nonce, which is swapped for the tag once the template has rendered.

Times are shown in the bot's own zone (Bot.timezone), else the configured one; `ago`
and `now` read the Renderer's clock once per render.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import secrets
import time
import traceback
from dataclasses import dataclass, fields as dataclass_fields, replace
from datetime import datetime, timedelta, timezone as dt_timezone
from functools import lru_cache, partial
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from jinja2.filters import sync_do_join, sync_do_list, sync_do_select
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import ConfigError, TemplateError
from .feishu import encode_body
from .limits import BUDGET_BYTES, COLOURS, MAX_COMPONENTS
from .template_files import TEMPLATE_SUFFIX, shipped_templates_dir, template_names
from .model import FIRING, Alert, Mention, Notification

if TYPE_CHECKING:  # config.py imports this module to check template names
    from .config import Bot

MESSAGE_TYPES = frozenset({"text", "post", "interactive"})
TRUNCATED = "…(truncated)"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
# Over this a header title is cut: Feishu shows one line of it anyway.
TITLE_MAX_CHARS = 200
# Longer links are dropped rather than risk a message Feishu refuses.
URL_MAX_CHARS = 2048
# An alert that does not fit alone has every longer value cut to these lengths in turn.
SHORTEN_STEPS = (4096, 1024, 256, 64)
# Splitting aims below the limits, so that the estimated parts usually fit first time.
_SPLIT_FILL = 0.85
# A group of more than twice this many alerts is first sized from a sample this big.
_SAMPLE = 16

# A header colour by `severity` label (lower-cased). Resolved is green; unknown is grey;
# a group shows its most severe firing alert.
SEVERITY_COLOURS: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys(("critical", "crit", "page", "p0", "p1", "error", "err", "disaster",
                     "emergency", "emerg", "fatal", "high"), "red"),
    **dict.fromkeys(("warning", "warn", "p2", "average", "major", "medium"), "orange"),
    **dict.fromkeys(("info", "informational", "notice", "p3", "p4", "p5", "low", "minor"), "blue"),
})
_COLOUR_RANK = MappingProxyType({"red": 3, "orange": 2, "blue": 1, "grey": 0})

# Feishu markdown's special characters (card markdown doc, 特殊字符转义说明; protocols.md A.6)
# plus `&` (so the escapes cannot be forged), `|` (2.0 tables) and `=` (setext headings).
_MD_ESCAPES = "&#*~><[]():+\"'`$_-!/\\|="
# `<at ...>` mentions someone in text messages and cards; `<person>` shows a user. A
# WORD JOINER (U+2060) after the `<` stops the tag and is invisible, so the text reads the
# same. Applied to every interpolated string, so no value can mention anyone.
_MENTION = re.compile(r"<(?=\s*/?\s*(?:at|person)\b)", re.IGNORECASE)
_NO_MENTION = "<\u2060"
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>\"`\\]")
# What stays as it is in a markdown link's URL; the rest is percent-encoded.
_URL_KEPT = "!#$%&'*+,-./:;=?@_~"
_URL_ODD = re.compile(r"[^A-Za-z0-9!#$%&'*+,\-./:;=?@_~]")
# An http(s) link (as _HTTP_URL) made of those characters only.
# (Only the scheme ignores case: a case-blind character class is several times slower.)
_KEPT_HTTP_URL = re.compile(r"(?i:https?)://[A-Za-z0-9!$%&'*+,\-.:;=@_~][A-Za-z0-9!#$%&'*+,\-./:;=?@_~]*\Z")
# http or https, and a host: what Feishu opens; javascript:, data: and relative links are not.
_HTTP_URL = re.compile(r"https?://[^/?#\s]", re.IGNORECASE)
_PERCENT_ESCAPES = "".join(chr(c) for c in range(128) if not (chr(c).isalnum() or chr(c) in "_.-~"))
_GO_ESCAPES = "\\\"\n"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_GO_META = re.compile(r"([\\.+*?()|\[\]{}^$])")
# What may stand inside <at ...>: "all", an open_id (ou_...) or a user_id (protocols.md
# A.7; custom bots take no email or union_id: 11246). The pipeline takes ids from config
# only; this keeps even a bad one from opening or closing a tag, or failing the card. A
# mention whose id fails this is shown as its name, pinging nobody.
_MENTION_ID = re.compile(r"(?:all|ou_[A-Za-z0-9]+|[A-Za-z0-9][A-Za-z0-9-]*)\Z")
_MENTION_ID_MAX = 64
# Taken out of a name shown inside a text message's <at ...>Name</at>.
_MENTION_NAME_DROP = re.compile(r"[<>\"\x00-\x1f\x7f]")
ALL_NAME = "所有人"  # the guide's text for <at user_id="all">
# md remembers this many values of up to this many characters (per Renderer).
_MD_CACHE_ENTRIES = 1024
_MD_CACHE_CHARS = 200
_LINK_CACHE_ENTRIES = 256
# A shortened alert's own silence link would match nothing; this one is dropped as unsafe.
_NO_LINK = "about:blank"


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


# --- helpers for template authors (filters and globals) ------------------------------


def md_escape(value: Any) -> str:
    """A value for Feishu markdown/lark_md that shows literally: no emphasis, link, mention or rule."""
    return "" if value is None else _MD.escape(str(value))


def neutralise_mentions(text: str) -> str:
    return _MENTION.sub(_NO_MENTION, text) if "<" in text else text


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


def safe_url(value: Any) -> str:
    """The URL when it is an http(s) link Feishu can open; "" otherwise (javascript:, junk)."""
    if not isinstance(value, str) or len(value) > URL_MAX_CHARS or not _HTTP_URL.match(value):
        return ""
    return "" if _URL_FORBIDDEN.search(value) else value


def md_link(url: Any, text: Any) -> str:
    """The filter `url | md_link("Source")`: a markdown link `[Source](url)`, or "" when
    the URL is not a safe http(s) link."""
    return _md_link(md_escape, url, text)


def _md_link(md: Callable[[Any], str], url: Any, text: Any) -> str:
    if not url or not isinstance(url, str) or len(url) > URL_MAX_CHARS:
        return ""
    if _KEPT_HTTP_URL.match(url):  # the usual case, in one search: what follows would keep it as it is
        return f"[{md(text)}]({url})"
    if not _HTTP_URL.match(url):
        return ""
    if _URL_ODD.search(url):  # rarely: most URLs hold only these characters
        if _URL_FORBIDDEN.search(url):
            return ""
        # Brackets, parentheses and the like would end the link early; percent-encoded
        # they mean the same to the server.
        url = quote(url, safe=_URL_KEPT, errors="replace")
    return f"[{md(text)}]({url})"


def md_fields(fields: Mapping[Any, Any] | Iterable[tuple[Any, Any]], separator: str = "\n") -> str:
    """The filter `[("Instance", labels.instance)] | md_fields` (or a map): `**Instance:** value`
    lines, name and value escaped (md), those with an empty value left out."""
    return _md_fields(md_escape, fields, separator)


def _md_fields(md: Callable[[Any], str], fields: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
               separator: str = "\n") -> str:
    if not fields:
        return ""
    pairs = fields.items() if type(fields) is dict or isinstance(fields, Mapping) else fields
    return separator.join([f"**{md(name)}:** {md(value)}" for name, value in pairs if value])


def md_links(links: Iterable[tuple[Any, Any]], separator: str = " · ") -> str:
    """The filter `alert | links | md_links` (or `alert | md_links`): `[Source](…) · [Runbook](…)`,
    safe links only."""
    return _md_links(md_link, links, separator)


def _md_links(link: Callable[[Any, Any], str], links: Iterable[tuple[Any, Any]], separator: str = " · ") -> str:
    return separator.join(filter(None, [link(url, text) for text, url in links]))


def alert_links(alert: Alert, silence: Callable[[Alert], str],
                safe: Callable[[Any], str] = safe_url) -> list[tuple[str, str]]:
    """The filter `alert | links`: (text, url) for Source, Runbook, Dashboard and Panel, and
    Silence while the alert fires; only those that are safe http(s) links."""
    found = []
    for text, url in (("Source", alert.generator_url), ("Runbook", alert.annotations.get("runbook_url")),
                      ("Dashboard", alert.dashboard_url), ("Panel", alert.panel_url)):
        url = safe(url) if url else ""
        if url:
            found.append((text, url))
    url = silence(alert) if alert.is_firing else ""
    if url:
        found.append(("Silence", url))
    return found


def unique_mentions(alerts: Iterable[Alert]) -> tuple[Mention, ...]:
    """Everyone the alerts mention, each once, as first found; @all first."""
    seen: set[str] = set()
    found = []
    for alert in alerts:
        for mention in alert.mentions:
            key = mention.user_id if mention.user_id else "text:" + mention.name
            if key not in seen:
                seen.add(key)
                found.append(mention)
    return tuple(sorted(found, key=lambda m: m.user_id != "all"))  # stable: only @all moves


def mention_tag(mention: Mention, style: str) -> str:
    """Feishu's ping for `mention`: style "card" gives `<at id=ou_x></at>` (card markdown and
    lark_md), "text" gives `<at user_id="ou_x">Name</at>` (text messages); "" when it pings
    nobody (no user_id, or one that is not an id)."""
    if len(mention.user_id) > _MENTION_ID_MAX or not _MENTION_ID.match(mention.user_id):
        return ""
    if style == "card":
        return f"<at id={mention.user_id}></at>"
    name = _MENTION_NAME_DROP.sub("", mention.name) or (ALL_NAME if mention.user_id == "all" else "")
    return f'<at user_id="{mention.user_id}">{name}</at>'


def _mention_words(value: Any, style: str, tag: Callable[[str], str], md: Callable[[Any], str]) -> str:
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


def _sorted_pairs(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    # Alertmanager's KV.SortedPairs: alertname first, then by name.
    pairs = sorted(labels.items())
    return ([("alertname", labels["alertname"])] + [p for p in pairs if p[0] != "alertname"]
            if "alertname" in labels else pairs)


def _go_string(value: str) -> str:
    # A double-quoted matcher value, as Alertmanager's matcher parser unquotes it.
    return '"' + (_GO.escape(value) if '"' in value or "\\" in value or "\n" in value else value) + '"'


def silence_url(notification: Notification, alert: Alert) -> str:
    """Grafana's silenceURL; for Alertmanager its UI's new-silence page filled with the alert's labels."""
    return _SilenceLinks(notification)(alert)


class _SilenceLinks:
    """silence_url() for the alerts of one notification, made once per render: the base URL
    is checked once and each label's encoded matcher is kept, since alerts share most labels."""

    # Jinja's sandbox looks these up on every callable before each call; found here at
    # once, not by a failed lookup (a few microseconds per alert).
    unsafe_callable = False
    alters_data = False
    jinja_pass_arg = None

    def __init__(self, notification: Notification):
        base = safe_url(notification.external_url) if notification.source == "alertmanager" else ""
        self._base = base.rstrip("/") + "/#/silences/new?filter=%7B" if base else ""
        self._matchers = _Matchers()

    def __call__(self, alert: Alert) -> str:
        if alert.silence_url:
            return safe_url(alert.silence_url)
        if not self._base:
            return ""
        labels = alert.labels
        # Alertmanager's KV.SortedPairs order (_sorted_pairs): alertname first, then by name.
        pairs = sorted(labels.items())
        if "alertname" in labels and pairs[0][0] != "alertname":
            pairs.remove(("alertname", labels["alertname"]))
            pairs.insert(0, ("alertname", labels["alertname"]))
        url = self._base + "%2C%20".join(map(self._matchers.__getitem__, pairs)) + "%7D"
        return url if len(url) <= URL_MAX_CHARS else ""

    __call__.jinja_pass_arg = None  # type: ignore[attr-defined]


class _Matchers(dict):
    """Label pair -> its matcher `name="value"`, quoted as Alertmanager's matcher parser reads
    it, then URL-encoded; each made when first asked for (most alerts differ in a label or two)."""

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[str, str] = {}

    def __missing__(self, pair: tuple[str, str]) -> str:
        name, value = pair
        prefix = self._names.get(name)
        if prefix is None:
            prefix = self._names[name] = _quote_all((name if _LABEL_NAME.match(name) else _go_string(name)) + "=")
        found = self[pair] = prefix + _quote_all(_go_string(value))
        return found


def _quote_all(text: str) -> str:
    # urllib's quote(text, safe=""), several times faster for ASCII text (a render builds
    # one of these per alert).
    return _PERCENT.escape(text) if text.isascii() else quote(text, safe="", errors="replace")


def group_url(notification: Notification) -> str:
    """The page of the group in Alertmanager's UI (as its default template links) or Grafana's."""
    base = safe_url(notification.external_url).rstrip("/")
    if not base:
        return ""
    if notification.source == "grafana":
        return base + "/alerting/groups"
    # The UI reads `receiver` as a regular expression; Alertmanager sends QuoteMeta(name).
    receiver = _GO_META.sub(r"\\\1", notification.receiver)
    return safe_url(base + "/#/alerts?receiver=" + quote(receiver, safe="", errors="replace"))


def title_for(notification: Notification) -> str:
    """Alertmanager's default title: `[FIRING:2] HighCPU prod-bj (node infra)`.

    Status upper-cased, the firing count, the group labels' values (alertname first),
    then in parentheses the values of the common labels that are not group labels.
    Group labels with empty values (Grafana's `alertname: ""`) carry nothing and are
    skipped; with no group values left, the common values stand without parentheses.
    """
    status = notification.status.upper() + (f":{len(notification.firing)}" if notification.status == FIRING else "")
    grouped = {k: v for k, v in notification.group_labels.items() if v}
    words = [v for _, v in _sorted_pairs(grouped)]
    rest = [v for k, v in _sorted_pairs(notification.common_labels) if k not in grouped and v]
    if rest:
        words.append(f"({' '.join(rest)})" if words else " ".join(rest))
    title = " ".join([f"[{status}]", *words])
    return truncate_text(" ".join(title.split()), TITLE_MAX_CHARS)


def severity_colour(severity: str) -> str:
    return SEVERITY_COLOURS.get(severity.strip().lower(), "grey")


def header_colour(notification: Notification) -> str:
    """Green when resolved; else the colour of the most severe firing alert (red, orange, blue, grey)."""
    if notification.status != FIRING:
        return "green"
    # A few severities, however many alerts.
    severities = {a.labels.get("severity", "") for a in notification.alerts if a.is_firing}
    return max(map(severity_colour, severities), key=_COLOUR_RANK.__getitem__, default="grey")


# --- the sandbox -----------------------------------------------------------------------


class _Environment(ImmutableSandboxedEnvironment):
    """A missing label or annotation reads as "" (as in Alertmanager's Go templates, where
    an absent label is ""), since alerts differ in which they carry; any other undefined
    name or attribute is an error (StrictUndefined), so a typo fails check-config.

    Immutable: a template cannot change what it is given (`alert.labels.clear()`), which
    the other bots' messages and the other parts of a split message render from too."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Fast paths for what templates read most, thousands of times per render: the
        # model's frozen records hold only data, and a label map's keys are data too.
        kind = type(obj)
        if kind is dict or kind is MappingProxyType:
            if attribute not in _MAP_ATTRIBUTES:
                return obj.get(attribute, "")
        elif attribute in (_ALERT_ATTRIBUTES if kind is Alert else _RECORD_ATTRIBUTES.get(kind, ())):
            return getattr(obj, attribute)
        value = super().getattr(obj, attribute)
        return "" if isinstance(value, jinja2.Undefined) and isinstance(obj, Mapping) else value

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        return "" if isinstance(value, jinja2.Undefined) and isinstance(obj, Mapping) else value


def _plain(value: Any) -> Any:
    """A value ready for a message: mentions neutralised, and no lone surrogate (which JSON
    can carry in but UTF-8 cannot encode, so the body could not be sent)."""
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                value = value.encode("utf-8", "replace").decode("utf-8")
        return neutralise_mentions(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises the UndefinedError naming what is missing
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    hint = "; format it with the `time` filter" if isinstance(value, datetime) else ""
    raise TypeError(f"a {type(value).__name__} cannot be written as JSON{hint}")


def _to_json(value: Any) -> str:
    """`finalize`: every {{ expression }} becomes one JSON literal, with mentions neutralised."""
    if type(value) is str:  # most values: _plain() inline, and json.dumps' own text, sooner
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                value = value.encode("utf-8", "replace").decode("utf-8")
        return encode_basestring(_MENTION.sub(_NO_MENTION, value) if "<" in value else value)
    return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False, default=_json_default)


# A map's own methods (items, keys...) stay reachable; any other name reads as a key.
_MAP_ATTRIBUTES = frozenset(dir(dict)) | frozenset(dir(MappingProxyType))


def _environment(search_path: list[Path], timezone: ZoneInfo, clock: Callable[[], float]) -> _Environment:
    env = _Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),  # first directory wins
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_to_json,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    md = _cached_md()
    md_link, safe = _cached_links(md)
    env.filters.update(
        md=md,
        # Those with the context passed find the render's own values there (_RenderState).
        time=jinja2.pass_context(partial(_time_filter, timezone)),
        ago=jinja2.pass_context(partial(_ago_filter, clock)),
        duration=format_duration,
        truncate_text=truncate_text,
        labels_compact=labels_compact,
        without=without,
        safe_url=safe,
        md_link=md_link,  # a filter, not a function: Jinja calls filters several times faster
        links=_links_filter,
        md_links=jinja2.pass_context(partial(_md_links_filter, md_link, partial(_md_link, md))),
        md_fields=partial(_md_fields, md),
        at=jinja2.pass_context(partial(_at_filter, "card", md)),
        at_text=jinja2.pass_context(partial(_at_filter, "text", md)),
        # Jinja's own, minus the switch to async templates that this environment never uses:
        # templates call them thousands of times per render.
        select=_select,
        join=_join,
        list=sync_do_list,
    )
    return env


def _cached_md() -> Callable[[Any], str]:
    """md_escape, remembering short values: a render escapes the same alertname, severity and
    link texts for every alert. Long values are escaped each time, to bound the memory."""
    cached = lru_cache(maxsize=_MD_CACHE_ENTRIES)(md_escape)

    def md(value: Any) -> str:
        return cached(value) if type(value) is str and len(value) <= _MD_CACHE_CHARS else md_escape(value)
    return md


def _cached_links(md: Callable[[Any], str]) -> tuple[Callable[[Any, Any], str], Callable[[Any], str]]:
    """md_link and safe_url, remembering recent links: a group's alerts mostly share their
    rule's source and runbook links. Only URLs up to URL_MAX_CHARS long are remembered, so
    the memory stays bounded."""
    cached_link = lru_cache(maxsize=_LINK_CACHE_ENTRIES)(partial(_md_link, md))
    cached_safe = lru_cache(maxsize=_LINK_CACHE_ENTRIES)(safe_url)

    def link(url: Any, text: Any) -> str:
        if type(url) is str and type(text) is str and len(url) <= URL_MAX_CHARS:
            return cached_link(url, text)
        return _md_link(md, url, text)

    def safe(url: Any) -> str:
        return cached_safe(url) if type(url) is str and len(url) <= URL_MAX_CHARS else safe_url(url)
    return link, safe


@jinja2.pass_context
def _select(context: Context, value: Any, *args: Any, **kwargs: Any) -> Iterable[Any]:
    if args or kwargs:
        return sync_do_select(context, value, *args, **kwargs)
    return (item for item in value if item)


@jinja2.pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    if attribute is None and not eval_ctx.autoescape:
        return str(d).join(map(str, value))
    return sync_do_join(eval_ctx, value, d, attribute)


# The filters that need the render (its bot's zone, its clock reading, its silence links,
# its mention placeholders) find it in the context under this name, which no template
# can write or read: it is not an identifier.
_STATE = "render state"


class _RenderState:
    """What one render(notification, bot) shares between its parts and its filters."""

    def __init__(self, zone: ZoneInfo, now: datetime, silence: _SilenceLinks):
        self.zone = zone
        self.now = now
        self.silence = silence
        self.times: dict[tuple[datetime, str], str] = {}
        self._urls: dict[str, str] = {}
        self._rule_links: dict[tuple[Any, ...], str] = {}
        self._nonce = secrets.token_hex(8)
        self._placeholders: dict[str, str] = {}   # mention tag -> its placeholder

    def safe_url(self, url: Any) -> str:
        # Remembered for the render: a group's alerts mostly share their rule's links.
        if not url or type(url) is not str:
            return ""
        found = self._urls.get(url)
        if found is None:
            found = self._urls[url] = safe_url(url)
        return found

    def md_links(self, alert: Alert, link: Callable[[Any, Any], str], link_once: Callable[[Any, Any], str],
                 separator: str) -> str:
        """`alert | md_links`, as `alert | links | md_links` gives it, sooner: the links of the
        alert's rule (source, runbook, dashboard, panel), which a group's alerts mostly share,
        are written once per render; only the silence link is the alert's own."""
        key = (alert.generator_url, alert.annotations.get("runbook_url"), alert.dashboard_url, alert.panel_url,
               separator)
        shared = self._rule_links.get(key)
        if shared is None:
            # Without the silence link: that one is added below.
            shared = self._rule_links[key] = _md_links(link, alert_links(alert, _no_link, self.safe_url), separator)
        # Each alert's silence link is its own: not worth remembering (link_once, not link).
        own = link_once(self.silence(alert), "Silence") if alert.is_firing else ""
        return f"{shared}{separator}{own}" if shared and own else shared or own

    def placeholder(self, tag: str) -> str:
        """Stands for a mention tag in the template's output until swap(): finalize neutralises
        every `<at` written through it, and no value can forge this without the nonce."""
        found = self._placeholders.get(tag)
        if found is None:
            found = self._placeholders[tag] = f"\ue000{self._nonce}{len(self._placeholders)}\ue001"
        return found

    def swap(self, text: str) -> str:
        """The rendered JSON text with each placeholder replaced by its tag (JSON-escaped: the
        placeholders stand inside JSON strings)."""
        for tag, placeholder in self._placeholders.items():
            if placeholder in text:
                text = text.replace(placeholder, encode_basestring(tag)[1:-1])
        return text


def _no_link(alert: Alert) -> str:
    return ""


def _state(context: Context) -> _RenderState | None:
    # None in a macro imported without `with context`.
    return context.parent.get(_STATE)


def _needs_state(context: Context, name: str) -> _RenderState:
    state = _state(context)
    if state is None:
        raise RuntimeError(f"the {name} filter needs the message's context: import macros that use it `with context`")
    return state


def _time_filter(default_zone: ZoneInfo, context: Context, value: datetime | None, fmt: str = TIME_FORMAT) -> str:
    state = context.parent.get(_STATE)  # _state(), inline: templates show a time or two per alert
    if state is None:
        return format_time(value, default_zone, fmt)
    if type(value) is not datetime:
        return format_time(value, state.zone, fmt)
    key = (value, fmt)
    shown = state.times.get(key)
    if shown is None:  # alerts of one group often start at the same evaluation
        shown = state.times[key] = format_time(value, state.zone, fmt)
    return shown


def _ago_filter(clock: Callable[[], float], context: Context, value: datetime | None) -> str:
    state = _state(context)
    return format_relative(value, state.now if state else datetime.fromtimestamp(clock(), dt_timezone.utc))


@jinja2.pass_context
def _links_filter(context: Context, alert: Alert) -> list[tuple[str, str]]:
    if not isinstance(alert, Alert):
        raise TypeError(f"the links filter takes an alert, not a {type(alert).__name__}")
    state = _needs_state(context, "links")
    return alert_links(alert, state.silence, state.safe_url)


def _md_links_filter(link: Callable[[Any, Any], str], link_once: Callable[[Any, Any], str], context: Context,
                     value: Any, separator: str = " · ") -> str:
    if isinstance(value, Alert):
        return _needs_state(context, "md_links").md_links(value, link, link_once, separator)
    return _md_links(link, value, separator)


def _at_filter(style: str, md: Callable[[Any], str], context: Context, value: Any) -> str:
    state = _needs_state(context, "at" if style == "card" else "at_text")
    return _mention_words(value, style, state.placeholder, md)


@dataclass(frozen=True)
class _BotView:
    """What a template sees of a bot: never its webhook URL, secret or proxy."""

    name: str
    keywords: tuple[str, ...]


def _public_attributes(kind: type) -> frozenset[str]:
    return frozenset(n for n in [*dir(kind), *(f.name for f in dataclass_fields(kind))] if not n.startswith("_"))


# What a template may read of the model's records: their fields, properties and methods.
_RECORD_ATTRIBUTES: Mapping[type, frozenset[str]] = MappingProxyType(
    {kind: _public_attributes(kind) for kind in (Alert, Notification, Mention, _BotView)})
_ALERT_ATTRIBUTES = _RECORD_ATTRIBUTES[Alert]  # read most, so found without a lookup


@dataclass(frozen=True)
class _Group:
    """What stays the same in every part of one notification's messages."""

    notification: Notification
    title: str
    colour: str
    bot: _BotView
    url: str               # the group's page (alertmanager_url)
    state: _RenderState


SOURCE_NAMES = MappingProxyType({"alertmanager": "Alertmanager", "grafana": "Grafana"})

# A message as built, with its unsigned body's size in bytes and its card's component count.
Built = tuple[dict, tuple[int, int]]


# --- the renderer ----------------------------------------------------------------------


class Renderer:
    """Compiles every template once; renders a notification into the messages for one bot."""

    def __init__(self, templates_dir: Path | None, timezone: ZoneInfo, logger: logging.Logger | None = None,
                 on_error: Callable[[str], None] | None = None, *, clock: Callable[[], float] = time.time):
        self._on_error = on_error              # told the template's name when it fails (a metric)
        if templates_dir is not None and not templates_dir.is_dir():
            raise ConfigError(f"{templates_dir}: not a directory")
        self._timezone = timezone
        self._clock = clock                    # what `ago` and `now` count from (seconds, as time.time)
        self._logger = logger or logging.getLogger(__name__)
        search_path = ([templates_dir] if templates_dir is not None else []) + [shipped_templates_dir()]
        self._env = _environment(search_path, timezone, clock)
        self._templates = self._compile(template_names(templates_dir))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._templates)

    def with_template(self, name: str, text: str) -> "Renderer":
        """This renderer plus `text` as the template `name` (the preview's pasted template):
        compiled in the same sandbox, with the same filters and JSON-encoding finalize, and
        able to include the other templates. Raises TemplateError on a syntax error."""
        filename = name + TEMPLATE_SUFFIX
        env = self._env.overlay(loader=jinja2.ChoiceLoader([
            jinja2.FunctionLoader(lambda wanted: (text, filename, lambda: True) if wanted == filename else None),
            self._env.loader,
        ]))
        try:
            template = env.get_template(filename)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(filename, exc.message or "syntax error", exc.lineno) from None
        other = copy.copy(self)
        other._templates = {**self._templates, name: template}
        return other

    def _compile(self, names: set[str]) -> dict[str, jinja2.Template]:
        templates, problems = {}, []
        for name in sorted(names):
            try:
                templates[name] = self._env.get_template(name + TEMPLATE_SUFFIX)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(f"{exc.filename or exc.name}:{exc.lineno}: {exc.message}")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{name}{TEMPLATE_SUFFIX}: cannot be read: {exc}")
        if problems:
            raise ConfigError(problems)
        return templates

    def render(self, notification: Notification, bot: Bot) -> list[dict]:
        """The messages for this bot, each within Feishu's limits. Never raises for a template
        bug: that is logged in one line and the bot gets the plain fallback card."""
        try:
            return self.render_strict(notification, bot)
        except TemplateError as exc:
            self._logger.error("%s; bot %s gets the plain fallback card", exc, bot.name,
                               extra={"event": "template_error", "bot": bot.name, "template": bot.template})
            if self._on_error is not None:
                self._on_error(bot.template)
            return self.fallback(notification, bot)

    def render_strict(self, notification: Notification, bot: Bot) -> list[dict]:
        """As render(), but a template bug raises TemplateError (for check-config and previews)."""
        template = self._templates.get(bot.template)
        if template is None:
            raise TemplateError(bot.template + TEMPLATE_SUFFIX, "no such template")
        group = self._group(notification, bot)
        return _cut_to_size(
            notification.firing + notification.resolved,
            partial(self._build, template, group),
            partial(_shortened, notification),
            template.filename or template.name or bot.template,
        )

    def fallback(self, notification: Notification, bot: Bot) -> list[dict]:
        """The plain card sent when a template fails: built here, so it cannot fail itself."""
        group = self._group(notification, bot)
        return _cut_to_size(
            notification.firing + notification.resolved,
            partial(self._fallback_card, group),
            lambda alert, cap: alert,  # each line is already cut short
            "fallback card",
        )

    def zone(self, bot: Bot) -> ZoneInfo:
        """The zone times are shown in for this bot: its own, else the configured one."""
        return bot.timezone or self._timezone

    def _group(self, notification: Notification, bot: Bot) -> _Group:
        now = datetime.fromtimestamp(self._clock(), dt_timezone.utc)
        state = _RenderState(self.zone(bot), now, _SilenceLinks(notification))
        return _Group(notification, title_for(notification), header_colour(notification),
                      _BotView(bot.name, tuple(bot.keywords)), group_url(notification), state)

    def _build(self, template: jinja2.Template, group: _Group, alerts: list[Alert], part: str) -> Built:
        notification = group.notification.subset(alerts)
        state = group.state
        context = {
            "notification": notification,
            "alerts": list(notification.alerts),
            "firing": notification.firing,
            "resolved": notification.resolved,
            "mentions": unique_mentions(notification.alerts),
            "bot": group.bot,
            "title": group.title,
            "color": group.colour,
            "part": part,
            "silence_url": state.silence,
            "alertmanager_url": group.url,
            "source_name": SOURCE_NAMES.get(notification.source, notification.source),
            "now": state.now,
            "timezone": getattr(state.zone, "key", None) or str(state.zone),
            _STATE: state,
        }
        try:
            text = state.swap(template.render(context))
        except Exception as exc:  # whatever a template does wrong (1/0, undefined, sandbox), it is its bug
            raise _runtime_error(template, exc) from exc
        name = template.filename or template.name or "template"
        message, growth = _parse(name, text)
        # Visible strings are searched only when a keyword is in the text at all, as a JSON
        # string holds it; else it is missing (or spelt in \u escapes: then it is added anyway).
        keywords = group.bot.keywords
        texts: list[str] | None = [] if any(encode_basestring(k)[1:-1] in text for k in keywords) else None
        body_tags, other_tags = _survey(message, texts)
        problem = _check_message(message, body_tags)
        if problem:
            raise TemplateError(name, problem)
        return _sized(name, message, len(body_tags) + len(other_tags), texts, keywords, text, growth)

    def _fallback_card(self, group: _Group, alerts: list[Alert], part: str) -> Built:
        heading = neutralise_mentions(f"{group.title} (template error)" + (f" {part}" if part else ""))
        lines = [self._fallback_line(a, group.state.zone) for a in alerts] or ["No alerts."]
        elements = [
            {"tag": "markdown", "content": "\n".join(lines)},
            {"tag": "markdown", "text_size": "notation",
             "content": "The card template failed, so the alerts are shown plainly; the bridge log says why."},
        ]
        card = _plain({
            "schema": "2.0",
            "config": {"update_multi": True, "summary": {"content": heading}},
            "header": {"title": {"tag": "plain_text", "content": heading}, "template": "grey"},
            "body": {"elements": elements},
        })
        # Built here, after _plain neutralised every value's mentions: on-call is still pinged.
        pings = _mention_words(unique_mentions(alerts), "card", str, md_escape)
        if pings:
            card["body"]["elements"].insert(1, {"tag": "markdown", "content": pings})
        message = {"msg_type": "interactive", "card": card}
        texts: list[str] | None = [] if group.bot.keywords else None
        body_tags, other_tags = _survey(message, texts)
        return _sized("fallback card", message, len(body_tags) + len(other_tags), texts, group.bot.keywords)

    @staticmethod
    def _fallback_line(alert: Alert, zone: ZoneInfo) -> str:
        shown = (alert.labels.get("alertname", ""), alert.labels.get("severity", ""),
                 alert.labels.get("instance", ""), alert.annotations.get("summary", ""))
        text = " · ".join(md_escape(truncate_text(f, 200)) for f in shown if f)
        since = format_time(alert.starts_at, zone)
        icon = "🔴" if alert.is_firing else "✅"
        return f"{icon} **{'FIRING' if alert.is_firing else 'RESOLVED'}** {text}" + (f" · since {since}" if since else "")


# --- checking a rendered message -------------------------------------------------------


def _runtime_error(template: jinja2.Template, exc: BaseException) -> TemplateError:
    where, line = template.filename or template.name or "template", None
    # Jinja rewrites the traceback so that template frames carry the template's file and line.
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(TEMPLATE_SUFFIX):
            where, line = frame.filename, frame.lineno
    return TemplateError(where, truncate_text(" ".join(f"{type(exc).__name__}: {exc}".split()), 300), line)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse(name: str, text: str) -> tuple[Any, int]:
    """The template's output as JSON, and how many bytes its numbers can grow by when it is
    written out again (`1e3` becomes `1000.0`; nothing else can grow: see _sized)."""
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


def _survey(message: Any, texts: list[str] | None) -> tuple[list[Any], list[Any]]:
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


def _sized(name: str, message: dict, components: int, texts: list[str] | None, keywords: tuple[str, ...],
           text: str | None = None, growth: int = 0) -> Built:
    r"""The checked message with its keyword, its size and its card's component count.

    The size is the unsigned body's, or, when the template's own text shows that the body
    is within the budget, that text's size: a bound that saves writing the body out again.
    Written out compactly, parsed JSON is never longer than its text, except for numbers
    (`growth`, from _parse): whitespace goes, escapes are kept or get shorter (`\u00e9` is
    written `é`, `\/` is `/`), a repeated key is dropped. Any text with a `\ud...` escape,
    which could be a lone surrogate that UTF-8 cannot carry, is measured in full.
    """
    added = _with_keyword(message, keywords, texts)
    if added is None:
        components = count_components(message["card"])
    if message["msg_type"] != "interactive":
        components = 0
    if text is not None and added is not None and "\\ud" not in text and "\\uD" not in text:
        try:
            bound = len(text.encode("utf-8")) + growth + added
        except UnicodeEncodeError:
            bound = BUDGET_BYTES + 1
        if bound <= BUDGET_BYTES:
            return message, (bound, components)
    return message, (_body_size(message, name), components)


def _body_size(message: dict, name: str = "template") -> int:
    try:
        return len(encode_body(message))
    except UnicodeEncodeError as exc:
        raise TemplateError(name, "the output holds a lone surrogate (a \\ud800-\\udfff escape), "
                                        "which a UTF-8 body cannot carry") from exc


def _fits(measured: tuple[float, float]) -> bool:
    return measured[0] <= BUDGET_BYTES and measured[1] <= MAX_COMPONENTS


# --- cutting to size -------------------------------------------------------------------

Build = Callable[[list[Alert], str], Built]
Shorten = Callable[[Alert, int], Alert]


def _cut_to_size(alerts: list[Alert], build: Build, shorten: Shorten, name: str) -> list[dict]:
    """Messages for `alerts` in order, each within the limits, every alert in exactly one.

    Starts from the whole group, or from the parts a sample says it needs (_first_cut),
    and renders each with part "i/k". A message still too big is cut again by its measured
    size and, since that changes every title's "/N", all parts are rendered once more. So
    a group is rendered about once or twice in all, never once per alert.
    """
    weights = {id(alert): _weight(alert) for alert in alerts}
    groups = _first_cut(list(alerts), build, weights)
    while True:
        count = len(groups)
        messages, regrouped = [], []
        for i, group in enumerate(groups, 1):
            part = f"{i}/{count}" if count > 1 else ""
            message, measured = build(group, part)
            if _fits(measured):
                regrouped.append(group)
                messages.append(message)
            elif len(group) > 1:
                regrouped.extend(_partition(group, _pieces(measured, len(group)), weights))
            else:
                alert, message = _fit_alone(group, part, build, shorten, name)
                regrouped.append([alert])
                messages.append(message)
        if len(regrouped) == count:
            return messages
        groups = regrouped


def _first_cut(alerts: list[Alert], build: Build, weights: Mapping[int, int]) -> list[list[Alert]]:
    """The whole group; or, when a rendered sample shows it is too big for one message, the
    parts its estimated size asks for, so that a big group is not rendered whole in vain."""
    if len(alerts) <= 2 * _SAMPLE:
        return [alerts]
    sample = alerts[:: len(alerts) // _SAMPLE][:_SAMPLE]
    # Two renders tell a message's own size from what each alert adds to it.
    # Exact sizes: a bound (see _sized) would skew the estimate.
    (one, (_, components_one)), (every, (_, components_all)) = build(sample[:1], ""), build(sample, "")
    size_one, size_all = _body_size(one), _body_size(every)
    weight_one, weight_all = weights[id(sample[0])], sum(weights[id(a)] for a in sample)
    per_weight = max(0, size_all - size_one) / max(1, weight_all - weight_one)
    per_alert = max(0, components_all - components_one) / (len(sample) - 1)
    estimated = (size_one + per_weight * (sum(weights[id(a)] for a in alerts) - weight_one),
                 components_one + per_alert * (len(alerts) - 1))
    return [alerts] if _fits(estimated) else _partition(alerts, _pieces(estimated, len(alerts)), weights)


def _pieces(measured: tuple[float, float], alerts: int) -> int:
    size, components = measured
    wanted = max(2, math.ceil(size / (BUDGET_BYTES * _SPLIT_FILL)),
                 math.ceil(components / (MAX_COMPONENTS * _SPLIT_FILL)))
    return min(alerts, wanted)


def _weight(alert: Alert) -> int:
    # Roughly what an alert adds to a message, to cut a group where its parts weigh the same:
    # the length of its names, values and links (joined: one call instead of one per string).
    labels, notes = alert.labels, alert.annotations
    return 200 + len("".join([*labels, *labels.values(), *notes, *notes.values(), alert.value_string,
                              alert.generator_url, alert.silence_url, alert.dashboard_url, alert.panel_url]))


def _partition(group: list[Alert], pieces: int, weights: Mapping[int, int]) -> list[list[Alert]]:
    """`group` cut into at most `pieces` runs of about equal weight, order kept."""
    total = sum(weights[id(a)] for a in group)
    runs: list[list[Alert]] = [[] for _ in range(pieces)]
    done = 0
    for alert in group:
        weight = weights[id(alert)]
        runs[min(pieces - 1, int((done + weight / 2) * pieces / total))].append(alert)
        done += weight
    runs = [r for r in runs if r]
    if len(runs) == 1:  # one alert outweighs the rest: halve by count instead
        half = len(group) // 2
        runs = [group[:half], group[half:]]
    return runs


def _fit_alone(group: list[Alert], part: str, build: Build, shorten: Shorten, name: str) -> tuple[Alert, dict]:
    """An alert too big for a message on its own, with its longest values cut until it fits."""
    if not group:
        raise TemplateError(name, "the message is over Feishu's limits with no alert in it")
    measured = (0, 0)
    for length in SHORTEN_STEPS:
        alert = shorten(group[0], length)
        message, measured = build([alert], part)
        if _fits(measured):
            return alert, message
    raise TemplateError(name, f"one alert needs {measured[0]} bytes and {measured[1]} components even with its "
                              f"values cut to {SHORTEN_STEPS[-1]} characters (limits: {BUDGET_BYTES}, {MAX_COMPONENTS})")


def _shortened(notification: Notification, alert: Alert, length: int) -> Alert:
    """The alert with every label and annotation value over `length` characters cut, visibly."""
    def cut(value: str) -> str:
        return value if len(value) <= length else value[:length] + TRUNCATED

    return replace(
        alert,
        labels={k: cut(v) for k, v in alert.labels.items()},
        annotations={k: cut(v) for k, v in alert.annotations.items()},
        value_string=cut(alert.value_string),
        # The cut labels would make a silence that matches nothing: keep the real one.
        silence_url=silence_url(notification, alert) or _NO_LINK,
    )
