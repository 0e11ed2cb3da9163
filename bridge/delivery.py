"""Delivery: take rendered messages and get them to Feishu, acting on the client's outcome.

This first version sends each message once, in a background thread, so the HTTP
handler never waits on Feishu. (The durable outbox with rate limits and retries
replaces the in-memory queue; see the delivery issue.)
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Iterable, Mapping

from .config import Bot
from .feishu import FeishuClient, Outcome
from .pipeline import OutgoingMessage

_STOP = object()


class Delivery:
    def __init__(self, bots: Mapping[str, Bot], client: FeishuClient, logger: logging.Logger):
        self.bots = bots
        self.client = client
        self.log = logger
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

    def enqueue(self, messages: Iterable[OutgoingMessage]) -> None:
        for message in messages:
            self._queue.put(message)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bridge-delivery", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Send what is queued (up to timeout), then stop the worker."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self.deliver(item)
            except Exception:  # a bug here must not kill the worker and strand the queue
                self.log.exception("delivery failed", extra={"event": "delivery_bug", "bot": item.bot})

    def deliver(self, message: OutgoingMessage) -> None:
        bot = self.bots[message.bot]
        fields = {"bot": bot.name, "group_key": message.group_key, "part": f"{message.part}/{message.parts}"}
        if not bot.sends:
            # Dry-run bots print what they would send, so the service is useful with no Feishu account.
            self.log.info("dry run: would send %s", json.dumps(message.body, ensure_ascii=False),
                          extra={"event": "dry_run", **fields})
            return
        result = self.client.send(bot, message.body)
        fields.update(outcome=result.outcome.name.lower(), reason=result.reason, code=result.code)
        if result.outcome is Outcome.SENT:
            self.log.info("sent", extra={"event": "sent", **fields})
        else:
            self.log.error("not delivered: %s (%s)", result.advice, result.detail,
                           extra={"event": "send_failed", **fields})
