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
"""

from __future__ import annotations

import json
import logging
import math
import re
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone as dt_timezone
from functools import partial
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from .errors import ConfigError, TemplateError
from .feishu import BODY_LIMIT_BYTES, SIGNATURE_OVERHEAD, encode_body
from .model import FIRING, Alert, Notification

if TYPE_CHECKING:  # config.py imports this module to check template names
    from .config import Bot

TEMPLATE_SUFFIX = ".json.j2"
# The client adds timestamp and sign to every message at send time.
BUDGET_BYTES = BODY_LIMIT_BYTES - SIGNATURE_OVERHEAD
# "卡片 JSON 2.0 ... 最多支持 200 个元素或组件": card JSON 2.0 structure, 注意事项 (protocols.md
# A.4). Applied to 1.0 cards too: their limit is undocumented, and a split costs little.
MAX_COMPONENTS = 200
# header.template: the complete list for card JSON 2.0 (protocols.md A.5).
COLOURS = frozenset({"blue", "wathet", "turquoise", "green", "yellow", "orange", "red", "carmine",
                     "violet", "purple", "indigo", "grey", "default"})
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
# http or https, and a host: what Feishu opens; javascript:, data: and relative links are not.
_HTTP_URL = re.compile(r"https?://[^/?#\s]", re.IGNORECASE)
_PERCENT_ESCAPES = "".join(chr(c) for c in range(128) if not (chr(c).isalnum() or chr(c) in "_.-~"))
_GO_ESCAPES = "\\\"\n"
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_GO_META = re.compile(r"([\\.+*?()|\[\]{}^$])")
# A shortened alert's own silence link would match nothing; this one is dropped as unsafe.
_NO_LINK = "about:blank"


@dataclass(frozen=True)
class _Escaper:
    """Replaces each of some characters by its escape, fast: a render escapes thousands of
    values, and one str.replace per character present beats str.translate and re.sub
    several times over once a text has many characters to escape."""

    first: Mapping[int, str]   # characters that the escapes themselves contain: done first, in one pass
    first_chars: frozenset[str]
    rest: Mapping[str, str]

    @classmethod
    def of(cls, chars: str, escape: Callable[[str], str], first: str) -> "_Escaper":
        return cls(MappingProxyType({ord(c): escape(c) for c in first}), frozenset(first),
                   MappingProxyType({c: escape(c) for c in chars if c not in first}))

    def escape(self, text: str) -> str:
        present = set(text)
        if not self.first_chars.isdisjoint(present):
            text = text.translate(self.first)
        for char in present.intersection(self.rest):
            text = text.replace(char, self.rest[char])
        return text


_MD = _Escaper.of(_MD_ESCAPES, lambda c: f"&#{ord(c)};", first="&#")
_PERCENT = _Escaper.of(_PERCENT_ESCAPES, lambda c: f"%{ord(c):02X}", first="%")
_GO = _Escaper.of(_GO_ESCAPES, lambda c: {"\n": "\\n"}.get(c, "\\" + c), first="\\")


def shipped_templates_dir() -> Path:
    # A wheel installs the top-level templates/ as the package data bridge/templates
    # (pyproject maps bridge.templates to templates/); a source checkout, and an editable
    # install that points at one, has only the top-level directory beside bridge/.
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


def template_names(templates_dir: Path | None) -> set[str]:
    """The shipped defaults (default, legacy, text) plus every NAME.json.j2 in templates_dir."""
    dirs = [shipped_templates_dir()] + ([templates_dir] if templates_dir and templates_dir.is_dir() else [])
    return {p.name[: -len(TEMPLATE_SUFFIX)] for d in dirs for p in d.glob("*" + TEMPLATE_SUFFIX)
            if p.is_file() and p.name != TEMPLATE_SUFFIX}


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
    return value.astimezone(timezone).strftime(fmt)


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
    skip = {n for e in exclude for n in ([e] if isinstance(e, str) else e)}
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in skip)


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
    if not isinstance(url, str) or len(url) > URL_MAX_CHARS or not _HTTP_URL.match(url):
        return ""
    if _URL_ODD.search(url):  # rarely: most URLs hold only these characters
        if _URL_FORBIDDEN.search(url):
            return ""
        # Brackets, parentheses and the like would end the link early; percent-encoded
        # they mean the same to the server.
        url = quote(url, safe=_URL_KEPT, errors="replace")
    return f"[{md_escape(text)}]({url})"


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

    def __init__(self, notification: Notification):
        base = safe_url(notification.external_url) if notification.source == "alertmanager" else ""
        self._base = base.rstrip("/") + "/#/silences/new?filter=%7B" if base else ""
        self._matchers: dict[tuple[str, str], str] = {}

    def __call__(self, alert: Alert) -> str:
        if alert.silence_url:
            return safe_url(alert.silence_url)
        if not self._base:
            return ""
        url = self._base + "%2C%20".join(self._matcher(pair) for pair in _sorted_pairs(alert.labels)) + "%7D"
        return url if len(url) <= URL_MAX_CHARS else ""

    def _matcher(self, pair: tuple[str, str]) -> str:
        # `name="value"`, quoted as Alertmanager's matcher parser reads it, then URL-encoded.
        if pair not in self._matchers:
            name, value = pair
            self._matchers[pair] = _quote_all(f"{name if _LABEL_NAME.match(name) else _go_string(name)}="
                                              f"{_go_string(value)}")
        return self._matchers[pair]


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
    colours = (severity_colour(a.labels.get("severity", "")) for a in notification.firing)
    return max(colours, key=_COLOUR_RANK.__getitem__, default="grey")


# --- the sandbox -----------------------------------------------------------------------


class _Environment(SandboxedEnvironment):
    """A missing label or annotation reads as "" (as in Alertmanager's Go templates, where
    an absent label is ""), since alerts differ in which they carry; any other undefined
    name or attribute is an error (StrictUndefined), so a typo fails check-config."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Fast paths for what templates read most, thousands of times per render: the
        # model's frozen records hold only data, and a label map's keys are data too.
        kind = type(obj)
        if kind in _MAPS and not hasattr(kind, attribute):
            return obj.get(attribute, "")
        if kind in _RECORDS and not attribute.startswith("_"):
            try:
                return getattr(obj, attribute)
            except AttributeError:
                pass
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
    return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False, default=_json_default)


_MAPS = (dict, MappingProxyType)


def _environment(search_path: list[Path], timezone: ZoneInfo) -> _Environment:
    env = _Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search_path]),  # first directory wins
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        finalize=_to_json,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.filters.update(
        md=md_escape,
        time=lambda value, fmt=TIME_FORMAT: format_time(value, timezone, fmt),
        duration=format_duration,
        truncate_text=truncate_text,
        labels_compact=labels_compact,
        without=without,
        safe_url=safe_url,
        md_link=md_link,  # a filter, not a function: Jinja calls filters several times faster
    )
    return env


@dataclass(frozen=True)
class _BotView:
    """What a template sees of a bot: never its webhook URL, secret or proxy."""

    name: str
    keywords: tuple[str, ...]


_RECORDS = (Alert, Notification, _BotView)


@dataclass(frozen=True)
class _Group:
    """What stays the same in every part of one notification's messages."""

    notification: Notification
    title: str
    colour: str
    bot: _BotView


# --- the renderer ----------------------------------------------------------------------


class Renderer:
    """Compiles every template once; renders a notification into the messages for one bot."""

    def __init__(self, templates_dir: Path | None, timezone: ZoneInfo, logger: logging.Logger | None = None,
                 on_error: Callable[[str], None] | None = None):
        self._on_error = on_error              # told the template's name when it fails (a metric)
        if templates_dir is not None and not templates_dir.is_dir():
            raise ConfigError(f"{templates_dir}: not a directory")
        self._timezone = timezone
        self._logger = logger or logging.getLogger(__name__)
        search_path = ([templates_dir] if templates_dir is not None else []) + [shipped_templates_dir()]
        self._env = _environment(search_path, timezone)
        self._templates = self._compile(template_names(templates_dir))

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._templates)

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

    def _group(self, notification: Notification, bot: Bot) -> _Group:
        return _Group(notification, title_for(notification), header_colour(notification),
                      _BotView(bot.name, tuple(bot.keywords)))

    def _build(self, template: jinja2.Template, group: _Group, alerts: list[Alert], part: str) -> dict:
        notification = group.notification.subset(alerts)
        context = {
            "notification": notification,
            "alerts": list(notification.alerts),
            "firing": notification.firing,
            "resolved": notification.resolved,
            "bot": group.bot,
            "title": group.title,
            "color": group.colour,
            "part": part,
            "silence_url": _SilenceLinks(group.notification),
            "alertmanager_url": group_url(group.notification),
            "source_name": {"alertmanager": "Alertmanager", "grafana": "Grafana"}.get(
                notification.source, notification.source),
        }
        try:
            text = template.render(context)
        except Exception as exc:  # whatever a template does wrong (1/0, undefined, sandbox), it is its bug
            raise _runtime_error(template, exc) from exc
        name = template.filename or template.name or "template"
        message = _parse(name, text)
        problem = _check_message(message)
        if problem:
            raise TemplateError(name, problem)
        return _with_keyword(message, group.bot.keywords)

    def _fallback_card(self, group: _Group, alerts: list[Alert], part: str) -> dict:
        heading = neutralise_mentions(f"{group.title} (template error)" + (f" {part}" if part else ""))
        lines = [self._fallback_line(a) for a in alerts] or ["No alerts."]
        card = {
            "schema": "2.0",
            "config": {"update_multi": True, "summary": {"content": heading}},
            "header": {"title": {"tag": "plain_text", "content": heading}, "template": "grey"},
            "body": {"elements": [
                {"tag": "markdown", "content": "\n".join(lines)},
                {"tag": "markdown", "text_size": "notation",
                 "content": "The card template failed, so the alerts are shown plainly; the bridge log says why."},
            ]},
        }
        return _with_keyword(_plain({"msg_type": "interactive", "card": card}), group.bot.keywords)

    def _fallback_line(self, alert: Alert) -> str:
        fields = (alert.labels.get("alertname", ""), alert.labels.get("severity", ""),
                  alert.labels.get("instance", ""), alert.annotations.get("summary", ""))
        text = " · ".join(md_escape(truncate_text(f, 200)) for f in fields if f)
        since = format_time(alert.starts_at, self._timezone)
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


def _parse(name: str, text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        lines = text.splitlines()
        near = truncate_text(lines[exc.lineno - 1].strip(), 80) if exc.lineno <= len(lines) else ""
        raise TemplateError(name, f"the output is not valid JSON: {exc.msg} at output line {exc.lineno} "
                                  f"column {exc.colno}, near {near!r}") from None
    except ValueError as exc:
        raise TemplateError(name, f"the output is not valid JSON: {exc}") from None


def _check_message(message: Any) -> str | None:
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
    return _check_card(message.get("card"))


def _check_card(card: Any) -> str | None:
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
    dropped = {"note", "action"} & _tags(body)
    if dropped:
        return f"card JSON 2.0 has no {' or '.join(sorted(dropped))} component (use markdown and buttons)"
    config = card.get("config", {})
    if isinstance(config, dict) and config.get("update_multi", True) is not True:
        return "card JSON 2.0 requires config.update_multi true"
    return None


def _nodes(value: Any) -> Iterable[dict]:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _tags(value: Any) -> set[str]:
    return {str(n["tag"]) for n in _nodes(value) if "tag" in n}


def _visible_strings(message: dict) -> Iterable[str]:
    # What Feishu searches for a bot's keywords: text-like values (guide, 自定义关键词).
    for node in _nodes(message):
        for key in ("content", "text", "title"):
            if isinstance(node.get(key), str):
                yield node[key]


def _with_keyword(message: dict, keywords: tuple[str, ...]) -> dict:
    """The message with the bot's first keyword in front of its title, when it holds none:
    Feishu refuses (19024) a message without one of the bot's keywords."""
    if not keywords or any(k in s for s in _visible_strings(message) for k in keywords):
        return message
    keyword = keywords[0]
    if message["msg_type"] == "text":
        message["content"]["text"] = f"{keyword} {message['content']['text']}"
    elif message["msg_type"] == "post":
        for post in message["content"]["post"].values():
            post["title"] = f"{keyword} {post.get('title') or ''}".rstrip()
    else:
        header = message["card"].setdefault("header", {})
        title = header.get("title")
        if isinstance(title, dict) and isinstance(title.get("content"), str):
            title["content"] = f"{keyword} {title['content']}"
        else:
            header["title"] = {"tag": "plain_text", "content": keyword}
    return message


def _measure(message: dict) -> tuple[int, int]:
    """The unsigned body's size in bytes and the card's component count."""
    components = sum(1 for n in _nodes(message.get("card")) if "tag" in n) if message["msg_type"] == "interactive" else 0
    return len(encode_body(message)), components


def _fits(measured: tuple[float, float]) -> bool:
    return measured[0] <= BUDGET_BYTES and measured[1] <= MAX_COMPONENTS


# --- cutting to size -------------------------------------------------------------------

Build = Callable[[list[Alert], str], dict]
Shorten = Callable[[Alert, int], Alert]


def _cut_to_size(alerts: list[Alert], build: Build, shorten: Shorten, name: str) -> list[dict]:
    """Messages for `alerts` in order, each within the limits, every alert in exactly one.

    Starts from the whole group, or from the parts a sample says it needs (_first_cut),
    and renders each with part "i/k". A message still too big is cut again by its measured
    size and, since that changes every title's "/N", all parts are rendered once more. So
    a group is rendered about once or twice in all, never once per alert.
    """
    groups = _first_cut(list(alerts), build)
    while True:
        count = len(groups)
        messages, regrouped = [], []
        for i, group in enumerate(groups, 1):
            part = f"{i}/{count}" if count > 1 else ""
            message = build(group, part)
            measured = _measure(message)
            if _fits(measured):
                regrouped.append(group)
                messages.append(message)
            elif len(group) > 1:
                regrouped.extend(_partition(group, _pieces(measured, len(group))))
            else:
                alert, message = _fit_alone(group, part, build, shorten, name)
                regrouped.append([alert])
                messages.append(message)
        if len(regrouped) == count:
            return messages
        groups = regrouped


def _first_cut(alerts: list[Alert], build: Build) -> list[list[Alert]]:
    """The whole group; or, when a rendered sample shows it is too big for one message, the
    parts its estimated size asks for, so that a big group is not rendered whole in vain."""
    if len(alerts) <= 2 * _SAMPLE:
        return [alerts]
    sample = alerts[:: len(alerts) // _SAMPLE][:_SAMPLE]
    # Two renders tell a message's own size from what each alert adds to it.
    size_one, components_one = _measure(build(sample[:1], ""))
    size_all, components_all = _measure(build(sample, ""))
    weight_one, weight_all = _weight(sample[0]), sum(map(_weight, sample))
    per_weight = max(0, size_all - size_one) / max(1, weight_all - weight_one)
    per_alert = max(0, components_all - components_one) / (len(sample) - 1)
    estimated = (size_one + per_weight * (sum(map(_weight, alerts)) - weight_one),
                 components_one + per_alert * (len(alerts) - 1))
    return [alerts] if _fits(estimated) else _partition(alerts, _pieces(estimated, len(alerts)))


def _pieces(measured: tuple[float, float], alerts: int) -> int:
    size, components = measured
    wanted = max(2, math.ceil(size / (BUDGET_BYTES * _SPLIT_FILL)),
                 math.ceil(components / (MAX_COMPONENTS * _SPLIT_FILL)))
    return min(alerts, wanted)


def _weight(alert: Alert) -> int:
    # Roughly what an alert adds to a message, to cut a group where its parts weigh the same.
    return (200 + sum(len(k) + len(v) for k, v in alert.labels.items())
            + sum(len(k) + len(v) for k, v in alert.annotations.items())
            + len(alert.value_string) + len(alert.generator_url) + len(alert.silence_url)
            + len(alert.dashboard_url) + len(alert.panel_url))


def _partition(group: list[Alert], pieces: int) -> list[list[Alert]]:
    """`group` cut into at most `pieces` runs of about equal weight, order kept."""
    weights = [_weight(a) for a in group]
    total = sum(weights)
    runs: list[list[Alert]] = [[] for _ in range(pieces)]
    done = 0
    for alert, weight in zip(group, weights):
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
        message = build([alert], part)
        measured = _measure(message)
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
