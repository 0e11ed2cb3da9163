"""Composing (in a sender thread, when a stored message is due): from a message to Feishu cards.

Parse the stored payload again, take the bot's alerts, give each the mentions its bot and
routes ask for, render the bot's template, split to Feishu's limits. The delivery layer
keeps the result, so retries send the same parts. The CLI's `render` and the benchmarks
compose a notification routed just now the same way.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Sequence

from . import sources
from .config import Bot, Config
from .errors import PayloadError
from .mentions import MentionResolver
from .model import GroupFacts, Notification, fingerprint
from .render import Renderer
from .routing import Route
from .store.records import Head


class Compose:
    """Cards for one configuration (bootstrap.Runtime): its renderer, directory and route tree."""

    def __init__(self, config: Config, renderer: Renderer, mentions: MentionResolver):
        self.config = config
        self.renderer = renderer
        self.mentions = mentions

    def facts_stored(self, bot: Bot, message: Head) -> GroupFacts:
        """What an app bot's delivery needs of a stored message besides its cards; raises as
        render_stored does."""
        if message.payload is None:
            raise PayloadError("the message has neither a payload nor rendered parts")
        notification = sources.parse(message.source, json.loads(message.payload))
        indices = range(len(notification.alerts)) if message.alerts is None else message.alerts
        return self.facts(notification.subset([notification.alerts[i] for i in indices]), bot)

    def facts(self, notification: Notification, bot: Bot) -> GroupFacts:
        """Which alerts fire, when the group started and ended, and whom `bot.urgent` buzzes:
        its users and the people its mention_labels name, once a firing alert matches."""
        firing = notification.firing
        starts = [a.starts_at for a in notification.alerts if a.starts_at is not None]
        ends = [a.ends_at for a in notification.alerts if a.ends_at is not None]
        urgent = bot.urgent
        people: list = []
        if urgent is not None:
            for alert in (a for a in firing if urgent.applies(a.labels)):
                people += list(urgent.users) + [m for m in self.mentions.from_labels(alert, urgent.mention_labels)
                                                if m.user_id.startswith("ou_") or m.email]
        return GroupFacts(
            firing=tuple(a.fingerprint or fingerprint(a.labels) for a in firing),
            firing_names=tuple(a.labels.get("alertname", "") for a in firing),
            started=min(starts, default=None),
            ended=max(ends, default=None) if not firing else None,
            urgent=tuple(dict.fromkeys(people)),
            actions=self._actions(notification) if bot.is_app and self.config.actions.enabled else None,
        )

    def _actions(self, notification: Notification) -> dict:
        """What an app bot's card needs for its buttons (bridge.render.actions), kept with the
        plan: a tap silences exactly the group Alertmanager grouped (its groupLabels)."""
        return {"source": notification.source, "external_url": notification.external_url,
                "matchers": dict(notification.group_labels), "firing": bool(notification.firing),
                "durations": [label for label, _ in self.config.actions.silence_durations],
                "zone": self.config.timezone.key}

    def render_stored(self, bot: Bot, message: Head) -> list[dict]:
        """Render a stored message (bridge.delivery calls this when it is due to be sent).

        The payload was parsed when it was accepted, so it parses again; raises
        PayloadError (or ValueError) only if the outbox holds something this version
        cannot read.
        """
        if message.payload is None:
            raise PayloadError("the message has neither a payload nor rendered parts")
        notification = sources.parse(message.source, json.loads(message.payload))
        indices = range(len(notification.alerts)) if message.alerts is None else message.alerts
        return self.render(notification, indices, bot, routed=message.routed)

    def render(self, notification: Notification, alerts: Sequence[int], bot: Bot, *,
               routes: Sequence[tuple[Route, ...]] | None = None, routed: bool = True) -> list[dict]:
        """The bot's cards for these alerts of the notification (indices).

        Each alert gets whom it pings on this bot: the bot's settings and those of the
        routes that sent it there, given in `routes` (one tuple per alert) when routed
        just now, else found again in the route tree in force (not when posted to the
        bot directly: routed False).
        """
        chosen = []
        for n, i in enumerate(alerts):
            alert = notification.alerts[i]
            if routes is not None:
                mentions = self.mentions.for_alert(alert, bot, routes[n])
            else:   # a stored message: its routes are config, found with the config in force now
                mentions = self.mentions.for_routed(alert, bot, self.config.route if routed else None)
            chosen.append(replace(alert, mentions=mentions) if mentions else alert)
        return self.renderer.render(notification.subset(chosen), bot)
