"""What one render(notification, bot) shares between its parts and its filters: the group
(title, colour, bot, group page), the bot's zone and the clock reading, the silence links,
per-render caches, and the mention placeholders with their nonce. The filters that need
it (time, ago, links, md_links, at, at_text) are here too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone as dt_timezone
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import Any, Callable
from zoneinfo import ZoneInfo

from jinja2.runtime import Context

from ..limits import CUSTOM_BOT_BUDGET, Budget
from ..model import Alert, Notification
from .filters import TIME_FORMAT, format_relative, format_time, mention_words
from .links import SilenceLinks, alert_links, md_links, no_link

# The filters that need the render (its bot's zone, its clock reading, its silence links,
# its mention placeholders) find it in the context under this name, which no template
# can write or read: it is not an identifier.
STATE = "render state"


@dataclass(frozen=True)
class BotView:
    """What a template sees of a bot: never its webhook URL, secret or proxy."""

    name: str
    keywords: tuple[str, ...]


class RenderState:
    """What one render(notification, bot) shares between its parts and its filters."""

    def __init__(self, zone: ZoneInfo, now: datetime, silence: SilenceLinks | Callable[[Alert], str]):
        self.zone = zone
        self.now = now
        self.silence = silence
        self.times: dict[tuple[datetime, str], str] = {}
        self._rule_links: dict[tuple[Any, ...], str] = {}
        self._nonce = secrets.token_hex(8)
        self._placeholders: dict[str, str] = {}   # mention tag -> its placeholder

    def md_links(self, alert: Alert, link: Callable[[Any, Any], str], link_once: Callable[[Any, Any], str],
                 safe: Callable[[Any], str], separator: str) -> str:
        """`alert | md_links`, as `alert | links | md_links` gives it, sooner: the links of the
        alert's rule (source, runbook, dashboard, panel), which a group's alerts mostly share,
        are written once per render; only the silence link is the alert's own."""
        key = (alert.generator_url, alert.annotations.get("runbook_url"), alert.dashboard_url, alert.panel_url,
               separator)
        shared = self._rule_links.get(key)
        if shared is None:
            # Without the silence link: that one is added below.
            shared = self._rule_links[key] = md_links(link, alert_links(alert, no_link, safe), separator)
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

    @property
    def placed_mentions(self) -> bool:
        """Whether the template wrote any ping (the at and at_text filters)."""
        return bool(self._placeholders)

    def swap(self, text: str) -> str:
        """The rendered JSON text with each placeholder replaced by its tag (JSON-escaped: the
        placeholders stand inside JSON strings)."""
        for tag, placeholder in self._placeholders.items():
            if placeholder in text:
                text = text.replace(placeholder, encode_basestring(tag)[1:-1])
        return text


@dataclass(frozen=True)
class Group:
    """What stays the same in every part of one notification's messages."""

    notification: Notification
    title: str
    colour: str
    bot: BotView
    url: str               # the group's page (alertmanager_url)
    state: RenderState
    budget: Budget = CUSTOM_BOT_BUDGET   # what a message may take: a custom bot's or an app bot's


def _state(context: Context) -> RenderState | None:
    # None in a macro imported without `with context`.
    return context.parent.get(STATE)


def _needs_state(context: Context, name: str) -> RenderState:
    state = _state(context)
    if state is None:
        raise RuntimeError(f"the {name} filter needs the message's context: import macros that use it `with context`")
    return state


def time_filter(default_zone: ZoneInfo, context: Context, value: datetime | None, fmt: str = TIME_FORMAT) -> str:
    state = context.parent.get(STATE)  # _state(), inline: templates show a time or two per alert
    if state is None:
        return format_time(value, default_zone, fmt)
    if type(value) is not datetime:
        return format_time(value, state.zone, fmt)
    key = (value, fmt)
    shown = state.times.get(key)
    if shown is None:  # alerts of one group often start at the same evaluation
        shown = state.times[key] = format_time(value, state.zone, fmt)
    return shown


def ago_filter(clock: Callable[[], float], context: Context, value: datetime | None) -> str:
    state = _state(context)
    return format_relative(value, state.now if state else datetime.fromtimestamp(clock(), dt_timezone.utc))


def links_filter(safe: Callable[[Any], str], context: Context, alert: Alert) -> list[tuple[str, str]]:
    if not isinstance(alert, Alert):
        raise TypeError(f"the links filter takes an alert, not a {type(alert).__name__}")
    state = _needs_state(context, "links")
    return alert_links(alert, state.silence, safe)


def md_links_filter(link: Callable[[Any, Any], str], link_once: Callable[[Any, Any], str], safe: Callable[[Any], str],
                    context: Context, value: Any, separator: str = " · ") -> str:
    if isinstance(value, Alert):
        return _needs_state(context, "md_links").md_links(value, link, link_once, safe, separator)
    return md_links(link, value, separator)


def at_filter(style: str, md: Callable[[Any], str], context: Context, value: Any) -> str:
    state = _needs_state(context, "at" if style == "card" else "at_text")
    return mention_words(value, style, state.placeholder, md)

