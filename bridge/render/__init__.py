"""Feishu messages from Jinja2 templates: sandboxed, JSON by construction, cut to size.

A template is JSON text in which every `{{ expression }}` is written out as ONE JSON
literal: the environment's `finalize` JSON-encodes it. So

    "content": {{ "**Summary:** " ~ (alert.annotations.summary | md) }}

can never produce broken JSON, whatever the summary holds. A template whose own text
is not JSON is a template bug. Templates are compiled when the Renderer is built (a
syntax error is a ConfigError); at render time any failure, and any output that is not
a valid Feishu message, gives the bot a plain fallback card built here in Python, so an
alert is never lost to a template.

Every message returned fits Feishu's limits for its bot (a custom bot's 20 KB body once
signed; an app bot's 30 KB, its card escaped into a string; 200 card components): a
group too big for one message is cut into parts titled 1/N..N/N, and an alert too big
on its own has its longest values shortened, visibly.

Mentions: finalize neutralises every `<at`/`<person` an expression writes, so no label
value can ping anyone. Only the `at` and `at_text` filters ping, for the Mentions the
pipeline put on the alerts (from config): they write a placeholder holding a per-render
nonce, which is swapped for the tag once the template has rendered.

Times are shown in the bot's own zone (Bot.timezone), else the configured one; `ago`
and `now` read the Renderer's clock once per render.

`render_message` renders a template about something other than alerts (the relay's
{"template", "data"}) in the same sandbox; its caller checks and cuts the result.

The package, in the order a render goes through it:
  environment  the sandbox, finalize (JSON), the filters and their per-Renderer caches
  state        one render's shared values, mention placeholders, the context filters
  filters      times, durations, labels, markdown fields, mention words
  escape       markdown, URL, Go-string and mention escaping (the fast escapers)
  links        safe URLs, an alert's links, Alertmanager's and Grafana's pages
  check        the output: JSON, a message Feishu accepts, keyword, size
  split        parts that fit Feishu's limits; shortening an alert too big alone
  card         title, severity colour, the fallback card
"""

from __future__ import annotations

import copy
import logging
import time
from datetime import datetime, timezone as dt_timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping
from zoneinfo import ZoneInfo

import jinja2

from ..config import Bot
from ..errors import ConfigError, TemplateError
from ..limits import APP_BOT_BUDGET, CUSTOM_BOT_BUDGET
from ..model import Alert, Mention, Notification
from ..template_files import TEMPLATE_SUFFIX, shipped_templates_dir, template_names
from .card import SOURCE_NAMES, fallback_card, header_colour, title_for
from .check import Measured, checked, count_components, parse_output, runtime_error, with_keyword
from .environment import environment
from .escape import md_escape
from .filters import format_duration, format_relative, format_time, mention_tag, unique_mentions
from .links import SilenceLinks, group_url, no_link, safe_url
from .split import SHORTEN_STEPS, TRUNCATED, cut_to_size, shortened
from .state import STATE, BotView, Group, RenderState

__all__ = [
    "SHORTEN_STEPS", "TRUNCATED", "Renderer", "count_components", "format_duration", "format_relative",
    "format_time", "header_colour", "md_escape", "mention_tag", "safe_url", "title_for", "with_keyword",
]


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
        self._env = environment(search_path, timezone, clock)
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
        return cut_to_size(
            notification.firing + notification.resolved,
            partial(self._build, template, group),
            partial(shortened, group.state.silence),
            template.filename or template.name or bot.template,
            group.budget,
        )

    def fallback(self, notification: Notification, bot: Bot) -> list[dict]:
        """The plain card sent when a template fails: built in Python, so it cannot fail itself."""
        group = self._group(notification, bot)
        return cut_to_size(
            notification.firing + notification.resolved,
            partial(fallback_card, group),
            lambda alert, cap: alert,  # each line is already cut short
            "fallback card",
            group.budget,
        )

    def render_message(self, name: str, data: Mapping[str, Any], bot: Bot,
                       mentions: tuple[Mention, ...] = ()) -> tuple[Any, bool]:
        """A message from template `name` about something other than alerts (the relay's
        {"template": ..., "data": ...}): the same sandbox, filters and JSON-encoding finalize
        as an alert's, with `data`, `bot`, `now`, `timezone` and `mentions` in the context.

        Returns the output as parsed JSON (the caller checks that it is a message) and
        whether the template wrote the mentions itself (`{{ mentions | at }}`). Raises
        TemplateError for any failure: there is no fallback, the caller is told."""
        template = self._templates.get(name)
        if template is None:
            raise TemplateError(name + TEMPLATE_SUFFIX, "no such template")
        state = RenderState(self.zone(bot), datetime.fromtimestamp(self._clock(), dt_timezone.utc), no_link)
        context = {"data": data, "bot": BotView(bot.name, tuple(bot.keywords)), "now": state.now,
                   "timezone": getattr(state.zone, "key", None) or str(state.zone), "mentions": mentions,
                   STATE: state}
        try:
            text = state.swap(template.render(context))
        except Exception as exc:  # whatever the template does wrong, as for an alert's
            raise runtime_error(template, exc) from exc
        return parse_output(template.filename or template.name or name, text), state.placed_mentions

    def zone(self, bot: Bot) -> ZoneInfo:
        """The zone times are shown in for this bot: its own, else the configured one."""
        return bot.timezone or self._timezone

    def _group(self, notification: Notification, bot: Bot) -> Group:
        now = datetime.fromtimestamp(self._clock(), dt_timezone.utc)
        state = RenderState(self.zone(bot), now, SilenceLinks(notification))
        return Group(notification, title_for(notification), header_colour(notification),
                     BotView(bot.name, tuple(bot.keywords)), group_url(notification), state,
                     APP_BOT_BUDGET if bot.is_app else CUSTOM_BOT_BUDGET)

    def _build(self, template: jinja2.Template, group: Group, alerts: list[Alert], part: str) -> Measured:
        try:
            text = group.state.swap(template.render(_context(group, alerts, part)))
        except Exception as exc:  # whatever a template does wrong (1/0, undefined, sandbox), it is its bug
            raise runtime_error(template, exc) from exc
        return checked(template.filename or template.name or "template", text, group.bot.keywords, group.budget)


def _context(group: Group, alerts: list[Alert], part: str) -> dict[str, Any]:
    """What a template sees (templates/default.json.j2 lists it for their authors)."""
    notification = group.notification.subset(alerts)
    state = group.state
    return {
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
        STATE: state,
    }
