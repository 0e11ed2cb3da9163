"""The SDK's log ("Lark" logger) in the bridge's, without what must not be logged.

The SDK prints to stdout in a format of its own. Its INFO line "connected to wss://…"
carries the websocket URL, whose query holds the connection's credentials (a ticket, an
access key); its DEBUG line of every frame carries the payload, whose `token` is the
card's update credential for 30 minutes (§6.7). Both are cut here; the app secrets are
masked too, should the SDK ever print one.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable

SDK_LOGGER = "Lark"

_URL_QUERY = re.compile(r"(wss?://[^\s?'\"]+)\?[^\s'\"]*")
_TOKEN = re.compile(r'("token"\s*:\s*")[^"]*(")')


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1<redacted>\2", _URL_QUERY.sub(r"\1?<redacted>", text))


class _Redact(logging.Filter):
    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        text = redact(record.getMessage())
        for secret in self.secrets:
            text = text.replace(secret, "<secret>")
        record.msg, record.args = text, ()
        record.event = "sdk"
        return True


def adopt_sdk_logger(bridge_log: logging.Logger, secrets: Iterable[str]) -> logging.Logger:
    """Send the SDK's records through the bridge's handlers (JSON by default), redacted.
    The SDK's clients set its level when they are made (from the bridge's level)."""
    sdk = logging.getLogger(SDK_LOGGER)
    sdk.handlers[:] = list(bridge_log.handlers)
    sdk.filters[:] = [_Redact(secrets)]
    sdk.propagate = False
    return sdk
