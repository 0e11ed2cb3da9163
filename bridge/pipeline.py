"""The accept path: route each alert, render one or more messages per bot, hand them to delivery.

This is everything between a parsed notification and the outbox. It runs inside the
HTTP handler, so it does no network I/O: sending happens in the delivery layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Mapping

from .config import Config
from .model import Alert, Notification, fingerprint
from .render import Renderer
from .routing import route_alert


@dataclass(frozen=True)
class OutgoingMessage:
    """One Feishu message for one bot, rendered and unsigned (signing happens at send time)."""

    bot: str
    group_key: str
    source: str
    body: dict
    part: int = 1
    parts: int = 1
    # The same notification delivered twice (an Alertmanager retry, each member of an HA
    # pair) gets the same identity, so the outbox keeps one; "" turns deduplication off.
    identity: str = ""


def notification_identity(notification: Notification) -> str:
    """A digest of what makes a notification the same one again.

    It leaves out what differs between the members of an Alertmanager HA pair (receiver,
    external URL) and what templates add; it keeps the group, its status and each
    alert's fingerprint, status, start and end (a firing alert's endsAt is zeroed at
    each flush, protocols.md B.2, so it is the same on both members).
    """
    alerts = sorted(
        (a.fingerprint or fingerprint(a.labels), a.status,
         a.starts_at.isoformat() if a.starts_at else "", a.ends_at.isoformat() if a.ends_at else "")
        for a in notification.alerts
    )
    doc = [notification.source, notification.group_key, notification.status, alerts]
    return hashlib.sha256(json.dumps(doc, ensure_ascii=False).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Accepted:
    alerts: int
    messages: Mapping[str, int] = field(default_factory=dict)   # bot -> messages queued
    routed: Mapping[str, int] = field(default_factory=dict)     # bot -> alerts routed to it

    def as_json(self) -> dict:
        return {"status": "accepted", "alerts": self.alerts, "messages": dict(self.messages)}


class Pipeline:
    def __init__(self, config: Config, renderer: Renderer, delivery, logger: logging.Logger):
        self.config = config
        self.renderer = renderer
        self.delivery = delivery
        self.log = logger

    def route(self, notification: Notification, only_bot: str | None = None) -> dict[str, list[Alert]]:
        """Each bot's share of the alerts, in the notification's order.

        With only_bot (the /alertmanager/<bot> endpoints) the route tree is skipped:
        the sender has already routed.
        """
        if only_bot is not None:
            return {only_bot: list(notification.alerts)} if notification.alerts else {}
        shares: dict[str, list[Alert]] = {}
        for alert in notification.alerts:
            for bot in route_alert(self.config.route, alert.labels):
                shares.setdefault(bot, []).append(alert)
        return shares

    def render(self, notification: Notification, only_bot: str | None = None) -> list[OutgoingMessage]:
        return self._render_shares(notification, self.route(notification, only_bot))

    def _render_shares(self, notification: Notification, shares: dict[str, list[Alert]]) -> list[OutgoingMessage]:
        out: list[OutgoingMessage] = []
        for name, alerts in shares.items():
            bot = self.config.bots[name]
            share = notification.subset(alerts)
            bodies = self.renderer.render(share, bot)
            identity = notification_identity(share)
            out.extend(
                OutgoingMessage(bot=name, group_key=notification.group_key, source=notification.source,
                                body=body, part=i, parts=len(bodies),
                                identity=f"{identity}:{name}:{i}/{len(bodies)}")
                for i, body in enumerate(bodies, start=1)
            )
        return out

    def accept(self, notification: Notification, only_bot: str | None = None) -> Accepted:
        """Route, render and store; raises StorageError when the messages could not be stored."""
        shares = self.route(notification, only_bot)
        messages = self._render_shares(notification, shares)
        self.delivery.enqueue(messages)
        per_bot: dict[str, int] = {}
        for m in messages:
            per_bot[m.bot] = per_bot.get(m.bot, 0) + 1
        self.log.info(
            "accepted",
            extra={"event": "accepted", "source": notification.source, "group_key": notification.group_key,
                   "alerts": len(notification.alerts), "messages": per_bot},
        )
        return Accepted(alerts=len(notification.alerts), messages=per_bot,
                        routed={bot: len(alerts) for bot, alerts in shares.items()})
