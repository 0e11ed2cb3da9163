"""MERGE-SHIM: the old names for tests owned by other branches; the merge deletes this module.

bridge.pipeline was split into bridge.accept (route, store, wake) and bridge.compose
(a stored message -> cards); OutgoingMessage lives in bridge.store.records.
tests/test_outbox.py builds messages through `Pipeline(...).accept`, and
tests/test_delivery.py stores through `Delivery.enqueue`, which the accept service
replaced; both keep working through the stand-ins below until they are updated.
"""

from __future__ import annotations

import logging

from .accept import outgoing, route_shares, store_messages
from .config import Config
from .delivery import Delivery as _Delivery
from .model import Notification
from .store.records import OutgoingMessage

__all__ = ["Delivery", "OutgoingMessage", "Pipeline"]


class Pipeline:
    """MERGE-SHIM: accept's messages handed to `delivery.enqueue`, as the old Pipeline did."""

    def __init__(self, config: Config, renderer, delivery, logger: logging.Logger):
        self.config, self.delivery = config, delivery

    def accept(self, notification: Notification, payload: bytes, only_bot: str | None = None) -> None:
        self.delivery.enqueue(outgoing(notification, payload, route_shares(self.config, notification, only_bot)))


class Delivery(_Delivery):
    """MERGE-SHIM: a Delivery that stores as the accept service does, then wakes its senders."""

    def enqueue(self, messages) -> set[str]:
        stored = store_messages(self.outbox, messages, self.config.delivery, self.log, self.metrics)
        for m in stored.duplicates:
            self.counters.add("duplicates", m.bot)
        for _, bot, _ in stored.superseded:
            self.counters.add("superseded", bot)
        if stored.ids:
            self.wake()
        return {m.bot for m in stored.duplicates}
