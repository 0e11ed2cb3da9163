"""Channels: the things that send a rendered message to a chat and say what happened.

Delivery needs one operation from a channel, `send(bot, body) -> SendResult`, and acts on
the result's outcome alone (sent / retry / permanent); the reason and advice are for
metrics and people (`bridge.notify.outcome`). What every channel promises, checked for
each implementation by tests/notify/test_channel_contract.py:

- it sends once (no retries of its own: retrying is delivery's policy);
- it never raises for anything the network or the far end does (a refused connection, a
  timeout, a reset, garbage instead of an answer): that is a RETRY or PERMANENT result.
  It raises only for a caller's mistake, such as a bot it has no address for;
- its reasons come from the closed set in `outcome.REASONS`;
- no secret (token, signing secret, proxy password, access token) appears in a result's
  detail or advice, or in anything it logs.

Implementations: `bridge.notify.feishu.FeishuClient` (Feishu/Lark custom-bot webhooks).
This package imports no HTTP library, so delivery can import it without loading one.

Room for app bots (issue 13), not built yet. An app bot can also update a sent card in
place, reply in its thread and send 加急 (urgent). Each is a capability of its own, a
Protocol beside `Channel` that a channel implements only if it can:

    class Updates(Protocol):
        def update(self, bot: Bot, message_id: str, body: dict) -> SendResult: ...

(`Replies.reply(bot, message_id, body)`, `Urgent.urgent(bot, message_id, users, kind)`
alike). The sender learns a sent message's id from `SendResult.message_id` (always None
from a custom bot, whose answer carries none), has the store keep it with the alert
group, and for the group's next state calls `update` when the bot's channel
`isinstance(channel, Updates)` and an id is known, `send` otherwise. Answers meaning "that
message can no longer be updated" (Feishu: recalled, deleted, older than 14 days) come
back as PERMANENT with a reason of their own, added to `outcome.REASONS`, on which the
sender posts a new message instead of dead-lettering. Token refresh stays inside the app
client: it is not an outcome. The field exists now so that the result type, which every
channel, delivery and its tests construct, does not change shape when app bots arrive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .outcome import REASONS, Outcome, SendResult

if TYPE_CHECKING:
    from ..config import Bot


class Channel(Protocol):
    def send(self, bot: Bot, body: dict) -> SendResult:
        """Send `body` (a rendered message) to `bot` once and say what happened."""
        ...


__all__ = ["REASONS", "Channel", "Outcome", "SendResult"]
