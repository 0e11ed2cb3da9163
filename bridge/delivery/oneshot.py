"""One test card sent as every message is (`feishu-alert-bridge send-test`): stored in the
outbox and sent by whoever holds the bot's lease, within the bot's rate limit, so that a
test against a busy bot never pushes Feishu over its limit."""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Callable

from ..clock import SYSTEM_CLOCK, Clock
from ..notify.outcome import OK, Outcome, SendResult
from ..store import LEASE_RENEW, LEASE_TTL
from ..store.records import DEAD, SENDING, SENT, LeaseLost, OutgoingMessage
from .pacing import next_allowed

if TYPE_CHECKING:
    from ..config import Bot
    from ..notify import Channel
    from ..store import Outbox

# send_once looks this often whether the running service has sent its card.
TEST_CARD_POLL = 0.1


def send_once(store: Outbox, channel: Channel, bot: Bot, card: dict, *, clock: Clock = SYSTEM_CLOCK,
              on_wait: Callable[[], None] = lambda: None) -> tuple[SendResult, bool]:
    """(Feishu's answer, whether the running service sent it) for a test card sent as every
    message is: stored in the outbox and sent by whoever holds the bot's lease, within the
    bot's rate limit, so that a test against a busy bot never pushes Feishu over its limit.
    While the service holds the lease it sends the card in turn; otherwise this process
    takes the lease, sends the card once and lets go."""
    owner = f"send-test:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    test = OutgoingMessage(bot=bot.name, group_key=f"send-test:{uuid.uuid4().hex}", source="alertmanager",
                           bodies=(card,))
    try:
        (message_id,) = store.store([test]).ids
        told = False
        while True:
            result = _recorded(store, message_id)
            if result is not None:
                return result, True
            held = store.bot_state(bot.name)   # a read: taking the lease is a write, tried only when free
            free = held.owner is None or held.expires <= clock.now()
            if free and store.acquire(bot.name, owner) is not None:
                result = _send_holding(store, channel, bot, owner, message_id, card, clock)
                if result is not None:
                    return result, False
                continue   # the lease was lost, or the card sent, meanwhile: look again
            if not told:
                on_wait()
                told = True
            time.sleep(TEST_CARD_POLL)
    finally:
        store.close()


def _send_holding(store: Outbox, channel: Channel, bot: Bot, owner: str, message_id: int, card: dict,
                  clock: Clock) -> SendResult | None:
    """Send the card once under the bot's lease, when the bot's pause and Feishu's windows
    allow, as a sender does (bridge.delivery); None if the lease was lost first. A failed
    test card is a dead letter: a test is one attempt, never retried behind one's back."""
    try:
        while True:
            now = clock.now()
            ends = store.recent_ends(bot.name, bot.rate_limit.per_minute)
            due = max(now, store.bot_state(bot.name).paused_until, next_allowed(ends, bot.rate_limit, now))
            if due <= now:
                break
            time.sleep(min(due - now, LEASE_RENEW))
            if store.acquire(bot.name, owner) is None:   # renews the lease; None: it lapsed, another holds it
                return None
        # The lease outlasts the request: a new holder would otherwise send the card again.
        ttl = LEASE_TTL + bot.connect_timeout + bot.read_timeout
        send_id = store.claim(message_id, bot.name, owner, record=True, ttl=ttl)
        if send_id is None:
            return None
        result = channel.send(bot, card)
        if result.outcome is Outcome.SENT:
            store.mark_sent(message_id, send_id, bot.name, owner, result.code)
        else:
            store.dead_letter(message_id, send_id, bot.name, owner, reason=result.reason, code=result.code,
                              detail=result.detail)
        return result
    except LeaseLost:
        return None
    finally:
        store.release(bot.name, owner)


def _recorded(store: Outbox, message_id: int) -> SendResult | None:
    """The outcome of the test card's first attempt, once someone has recorded one; else None."""
    entry = store.entry(message_id)   # None once pruned: long done
    if entry is None or entry.state == SENT:
        return SendResult(Outcome.SENT, OK, entry.code if entry is not None else 0)
    if entry.attempts == 0 or entry.state == SENDING or entry.reason is None:   # not tried yet, or in flight
        return None
    outcome = Outcome.PERMANENT if entry.state == DEAD else Outcome.RETRY
    return SendResult(outcome, entry.reason, entry.code, None, entry.detail or "")


