"""From a parsed notification to stored messages, and from a stored message to Feishu cards.

Accepting (in the HTTP handler): route each alert to its bots and store one message per
bot: the payload as received and which of its alerts are the bot's. Nothing is rendered
here, so accepting costs the same for a 1-card and a 40-card group.

Rendering (in the delivery thread, when a message is due to be sent): parse the stored
payload again, take the bot's alerts, render the bot's template, split to Feishu's
limits. The delivery layer keeps the result, so retries send the same parts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace
from typing import Mapping

from . import sources
from .config import Bot, Config
from .errors import PayloadError
from .model import Alert, Notification, fingerprint
from .mentions import MentionResolver, sends_resolved
from .store.records import Head, OutgoingMessage  # noqa: F401 (OutgoingMessage re-exported)
from .render import Renderer
from .routing import Route, routes_by_bot


def notification_identity(notification: Notification, alerts: list[Alert] | tuple[Alert, ...]) -> str:
    """A digest of what makes a notification the same one again.

    It leaves out what differs between the members of an Alertmanager HA pair (receiver,
    external URL) and what templates add; it keeps the group, its status and each
    alert's fingerprint, status, start and end (a firing alert's endsAt is zeroed at
    each flush, protocols.md B.2, so it is the same on both members).
    """
    # Plain text rather than JSON: this runs for every webhook. Only the group key can
    # hold any character, so it alone is quoted; the rows are hex, words and ISO times.
    rows = sorted(f"{a.fingerprint or fingerprint(a.labels)} {a.status} {_iso(a.starts_at)} {_iso(a.ends_at)}"
                  for a in alerts)
    status = "firing" if any(a.is_firing for a in alerts) else "resolved"
    head = json.dumps([notification.source, notification.group_key, status], ensure_ascii=False)
    return hashlib.sha256("\n".join([head, *rows]).encode("utf-8", "surrogatepass")).hexdigest()


def _iso(moment) -> str:
    return moment.isoformat() if moment is not None else ""


@dataclass(frozen=True)
class Accepted:
    alerts: int
    routed: Mapping[str, int] = field(default_factory=dict)     # bot -> alerts routed to it
    duplicates: frozenset[str] = frozenset()                    # bots that had it already

    def as_json(self) -> dict:
        # messages: per bot, 1 stored (it becomes one or more Feishu requests when sent), or
        # 0 when the bot has had this very notification already (delivery.dedupe_window).
        return {"status": "accepted", "alerts": self.alerts,
                "messages": {bot: int(bot not in self.duplicates) for bot in self.routed},
                "routed": dict(self.routed)}


@dataclass(frozen=True)
class Share:
    """One bot's share of a notification: its alerts' indices and the routes that sent them."""

    alerts: list[int] = field(default_factory=list)
    routed: bool = True
    # The routes that sent each alert to the bot, when routed here and now (rendering at
    # once); None for a stored message, whose routes are found again when it is rendered.
    routes: list[tuple[Route, ...]] | None = None


class Pipeline:
    def __init__(self, config: Config, renderer: Renderer, delivery, logger: logging.Logger):
        self.config = config
        self.renderer = renderer
        self.delivery = delivery
        self.log = logger
        self.mentions = MentionResolver(config.users, logger)

    def route(self, notification: Notification, only_bot: str | None = None) -> dict[str, Share]:
        """Each bot's share of the alerts, in the notification's order.

        With only_bot (the /alertmanager/<bot> endpoints) the route tree is skipped:
        the sender has already routed.
        """
        bots, root = self.config.bots, self.config.route
        shares: dict[str, Share] = {}
        for i, alert in enumerate(notification.alerts):
            matched = {only_bot: ()} if only_bot is not None else routes_by_bot(root, alert.labels)
            for bot, routes in matched.items():
                # send_resolved: false drops resolved alerts, not the message (as Alertmanager does).
                if not alert.is_firing and not sends_resolved(bots[bot], routes):
                    continue
                share = shares.get(bot)
                if share is None:
                    share = shares[bot] = Share(routed=only_bot is None, routes=[])
                share.alerts.append(i)
                share.routes.append(routes)
        return shares

    def accept(self, notification: Notification, payload: bytes, only_bot: str | None = None) -> Accepted:
        """Route and store (no rendering: that happens at send time, once per message);
        raises StorageError when the messages could not be stored."""
        shares = self.route(notification, only_bot)
        messages = []
        for bot, share in shares.items():
            alerts = [notification.alerts[i] for i in share.alerts]
            everything = len(alerts) == len(notification.alerts)
            messages.append(OutgoingMessage(
                bot=bot, group_key=notification.group_key, source=notification.source,
                identity=f"{notification_identity(notification, alerts)}:{bot}", payload=payload,
                alerts=None if everything else tuple(share.alerts), routed=share.routed))
        duplicates = self.delivery.enqueue(messages)
        routed = {bot: len(share.alerts) for bot, share in shares.items()}
        # Debug, not info: one line per webhook is the busiest line there would be, and what
        # an operator follows is the message's own ("sent", "dry_run", "retry").
        self.log.debug("accepted", extra={"event": "accepted", "source": notification.source,
                                         "group_key": notification.group_key,
                                         "alerts": len(notification.alerts), "bots": routed})
        return Accepted(alerts=len(notification.alerts), routed=routed, duplicates=frozenset(duplicates))

    # -- rendering (the delivery thread, at send time; the CLI and the preview, at once) --
    def render(self, notification: Notification, only_bot: str | None = None) -> list[tuple[str, list[dict]]]:
        """Route and render now: (bot, its messages) for every bot the notification goes to."""
        return [(bot, self._render_share(notification, share, self.config.bots[bot]))
                for bot, share in self.route(notification, only_bot).items()]

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
        return self._render_share(notification, Share(list(indices), message.routed), bot)

    def _render_share(self, notification: Notification, share: Share, bot: Bot) -> list[dict]:
        """Each alert gets whom it pings on this bot (the bot's settings and those of the
        routes that send it there), then the bot's template renders them."""
        alerts = []
        for n, i in enumerate(share.alerts):
            alert = notification.alerts[i]
            if share.routes is not None:
                mentions = self.mentions.for_alert(alert, bot, share.routes[n])
            else:   # a stored message: its routes are config, found with the config in force now
                mentions = self.mentions.for_routed(alert, bot, self.config.route if share.routed else None)
            alerts.append(replace(alert, mentions=mentions) if mentions else alert)
        return self.renderer.render(notification.subset(alerts), bot)
