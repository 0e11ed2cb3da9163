"""The bytes a Feishu custom bot is sent: the message's encoding and its signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING

from ...limits import encode_body  # noqa: F401 (the client and its tests read it here too)

if TYPE_CHECKING:
    from ...config import Bot


def sign(secret: str, timestamp: int) -> str:
    """Feishu's signature: the HMAC-SHA256 of an EMPTY message, keyed with
    `timestamp + "\\n" + secret`, in Base64 (guide, 方式三; unlike DingTalk's scheme)."""
    key = f"{timestamp}\n{secret}".encode("utf-8")
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def signed_body(message: dict, bot: Bot, now: float) -> bytes:
    """The bytes to POST: the message, plus `timestamp` and `sign` when the bot has a secret.

    Called at send time, not at render time: a message may wait in the outbox for longer
    than the signature window.
    """
    if not bot.secret:
        return encode_body(message)
    timestamp = int(now)
    # The guide shows the timestamp as a string; the fake Feishu insists on it.
    return encode_body(
        {**message, "timestamp": str(timestamp), "sign": sign(bot.secret.reveal(), timestamp)}
    )
