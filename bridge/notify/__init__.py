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

Implementations: `bridge.notify.feishu.FeishuClient` (Feishu/Lark custom-bot webhooks) and
`bridge.notify.feishu_app.AppClient` (app bots, over the Open API); `ByKind` hands each bot
to the one for its kind. This package imports no HTTP library, so delivery can import it
without loading one.

App bots (issue 13) can do more than post: update a sent card in place, reply in its
thread, send 加急 (urgent). That is the capability `AppMessages`, a Protocol beside
`Channel`. Two changes from the sketch first written here (one Protocol per operation,
checked with isinstance on the channel), and why:

- One Protocol for the four operations: they come together (an app bot can do all of
  them), and `post` is among them because an app bot's send needs an idempotency key
  (`uuid`) that `Channel.send` has no room for: Feishu de-duplicates a retry after a
  lost answer by it.
- The capability is asked of the bot as much as of the channel: one channel object
  serves every bot of a process (ByKind), so `isinstance(channel, AppMessages)` alone
  cannot tell a custom bot from an app bot. The sender uses the capability when the bot
  is an app bot (`bot.is_app`) and the channel has it.

A sent message's id comes back in `SendResult.message_id`; the store keeps it with the
alert group (bridge.delivery.appbot). Answers meaning "that message can no longer be
updated" (recalled, deleted, older than 14 days) are PERMANENT with reason
MESSAGE_GONE, on which delivery posts a new card instead of dead-lettering. Token
refresh stays inside the app client: it is not an outcome.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

from .outcome import REASONS, Outcome, SendResult, UrgentResult

if TYPE_CHECKING:
    from ..config import Bot
    from ..model import Mention


class Channel(Protocol):
    def send(self, bot: Bot, body: dict) -> SendResult:
        """Send `body` (a rendered message) to `bot` once and say what happened."""
        ...


@runtime_checkable
class AppMessages(Protocol):
    """What an app bot can do (see the module doc). Each call is made once and never raises
    for what the network or Feishu does, as `Channel.send`."""

    def post(self, bot: Bot, body: dict, *, uuid: str) -> SendResult:
        """Post `body` as a new message; a repeat with the same `uuid` within Feishu's hour
        posts nothing more."""
        ...

    def update(self, bot: Bot, message_id: str, body: dict) -> SendResult:
        """Replace the card `message_id` with `body` (a card) in place."""
        ...

    def reply(self, bot: Bot, message_id: str, body: dict, *, uuid: str) -> SendResult:
        """Reply to `message_id` in its thread."""
        ...

    def urgent(self, bot: Bot, message_id: str, kind: str, people: Sequence[Mention]) -> UrgentResult:
        """Buzz `people` (kind app, sms or phone) for the message `message_id`."""
        ...


class ByKind:
    """The channel of a process: each bot's message goes to the client for its kind."""

    def __init__(self, custom: Channel, app: AppMessages):
        self.custom = custom
        self.app = app

    def send(self, bot: Bot, body: dict) -> SendResult:
        return self.app.send(bot, body) if bot.is_app else self.custom.send(bot, body)   # type: ignore[attr-defined]

    def post(self, bot: Bot, body: dict, *, uuid: str) -> SendResult:
        return self.app.post(bot, body, uuid=uuid)

    def update(self, bot: Bot, message_id: str, body: dict) -> SendResult:
        return self.app.update(bot, message_id, body)

    def reply(self, bot: Bot, message_id: str, body: dict, *, uuid: str) -> SendResult:
        return self.app.reply(bot, message_id, body, uuid=uuid)

    def urgent(self, bot: Bot, message_id: str, kind: str, people: Sequence[Mention]) -> UrgentResult:
        return self.app.urgent(bot, message_id, kind, people)


__all__ = ["REASONS", "AppMessages", "ByKind", "Channel", "Outcome", "SendResult", "UrgentResult"]
