"""One bot's sender: each step does the next thing for the bot and says when to look again.

A step, in order: take the bot's lease if this process does not hold it; while a send's
outcome is unrecorded, only retry recording it; find the head of the bot's queue; wait
for the bot's retry pause and Feishu's windows; render the head if it is not yet; then
either log it (a dry-run bot) or mark it in flight, send it and settle the outcome. An
app bot's claim also takes a place in its app's and its chat's windows, shared with
other bots in any process; when one is full, the step waits until it frees.

An app bot's message is rendered into a plan of requests (appbot.py: its card updated in
place or posted, stubs, a thread reply, urgent), one request a step, each counted like a
custom bot's part.

A step never sleeps: it returns a `Next`, and the caller waits (bridge.delivery's
threads, or a test stepping the sender with a fake clock).
"""

from __future__ import annotations

import json
import logging
import math
import random
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from ..clock import Clock
from ..config import Bot, DeliveryConfig
from ..errors import StorageError
from ..model import GroupFacts
from ..notify import AppMessages, Channel
from ..notify.outcome import UNEXPECTED_ANSWER, Outcome, SendResult
from ..store import LEASE_RENEW, LEASE_TTL
from ..store.records import CardChange, Head, LeaseLost, WindowFull
from .appbot import AppSteps, plan
from .outcomes import UNREADABLE, Counts, Outcomes, Unrecorded
from .pacing import FEISHU_WINDOWS, OPEN_POLL, Windows, backoff, next_allowed, shared_windows

if TYPE_CHECKING:
    from ..store import Outbox

# A sender with nothing to do re-checks this often even without a wake-up.
IDLE_WAIT = 1.0
# After an error a sender retries this much later at first, then backs off up to
# delivery.backoff_cap (at least ERROR_PAUSE), never spinning.
ERROR_PAUSE = 1.0

# Turns a stored message into its Feishu request bodies when it is due (bridge.pipeline's
# Pipeline.render_stored).
Render = Callable[[Bot, Head], list[dict]]
# What an app bot's delivery needs of a stored message besides its cards (Compose.facts_stored).
Facts = Callable[[Bot, Head], GroupFacts]


def error_pause(previous: float, settings: DeliveryConfig, rng: random.Random) -> float:
    """How long to wait after a failed step (or a failed recording), given the last such wait."""
    return backoff(previous, ERROR_PAUSE, max(ERROR_PAUSE, settings.backoff_cap), rng)


@dataclass(frozen=True)
class Next:
    """What follows a step."""

    wait: float              # seconds until the next step (0: at once)
    holding: bool            # whether this process holds the bot's lease now
    on_news: bool = False    # whether a newly accepted message cuts the wait short: only when there was none


class Sender:
    """Steps one bot's delivery. A Delivery keeps one per bot for as long as it runs
    (across reloads), so a send left unrecorded stays known to the next thread."""

    def __init__(self, name: str, *, outbox: Outbox, channel: Channel, render: Render, owner: str,
                 log: logging.Logger, clock: Clock, counts: Counts, outcomes: Outcomes,
                 stopping: Callable[[], bool] = lambda: False, windows: Windows = FEISHU_WINDOWS,
                 rng: random.Random | None = None, facts: Facts | None = None):
        self.name = name
        self.outbox = outbox
        self.channel = channel
        self.render = render
        self.owner = owner
        self.log = log
        self.clock = clock
        self.counts = counts
        self.outcomes = outcomes
        self.stopping = stopping
        self.windows = windows
        self.rng = rng or random.Random()
        self.facts = facts
        # App bots' plans need both a channel that can update, reply and buzz, and the facts.
        self.app = AppSteps(channel, outbox, log, counts, clock) \
            if facts is not None and isinstance(channel, AppMessages) else None
        # A send that went out but whose outcome could not be recorded (see bridge.delivery's
        # module doc): written only by the thread stepping this sender; others read it.
        self.unrecorded: Unrecorded | None = None

    def step(self, bot: Bot, settings: DeliveryConfig, holding: bool) -> Next:
        """Do the next thing for this bot."""
        if not holding:
            return self._try_lease()
        pending = self.unrecorded
        if pending is not None:   # stopped: only the recording is retried, nothing is sent
            return Next(0.0 if self.record(bot, settings, pending) else pending.pause, True)
        head = self.outbox.head(bot.name)
        if head is None:
            return Next(IDLE_WAIT, True, on_news=True)
        state = self.outbox.bot_state(bot.name)
        now = self.clock.now()
        # Dry-run bots keep the limits too: what they print is paced as the real bot's
        # messages would be, and coalescing shows as it would.
        ends = self.outbox.recent_ends(bot.name, bot.rate_limit.per_minute)
        due = max(now, state.paused_until, next_allowed(ends, bot.rate_limit, now, self.windows))
        if due > now:
            return Next(due - now, True)
        if self.stopping():
            return Next(0.0, True)
        try:
            if head.bodies is None:
                # Rendered only now that it is due: once, and never for a message that a
                # newer one of its group superseded while it waited.
                head = self._render(bot, settings, head, state.backoff)
                if head is None:
                    return Next(0.0, True)
            if not bot.sends:
                self._dry_run(bot, head)
                return Next(0.0, True)
            send_id = self.outbox.claim(head.id, bot.name, self.owner, record=True,
                                        windows=shared_windows(bot, self.windows))
        except WindowFull as full:
            # Another bot of the app or the chat, in any process, took the place first.
            wait = OPEN_POLL if full.until == math.inf else full.until - self.clock.now()
            return Next(max(wait, 0.001), True)
        except LeaseLost:
            self.log.warning("lost the lease of bot %s; another process sends for it", bot.name,
                             extra={"event": "lease_lost", "bot": bot.name})
            return Next(0.0, False)
        if send_id is not None:
            self._deliver(bot, settings, head, send_id, state.backoff)
            if self.unrecorded is not None:
                return Next(self.unrecorded.pause, True)
        return Next(0.0, True)

    def _try_lease(self) -> Next:
        state = self.outbox.bot_state(self.name)
        now = self.clock.now()
        if state.owner not in (None, self.owner) and state.expires > now:
            return Next(state.expires - now, False)   # or sooner, if woken by a change
        takeover = self.outbox.acquire(self.name, self.owner, LEASE_TTL)
        if takeover is None:
            return Next(LEASE_RENEW, False)
        if takeover.requeued:
            self.log.warning("took over bot %s; %d message(s) left in flight by %s will be sent again",
                             self.name, takeover.requeued, takeover.previous or "an earlier run",
                             extra={"event": "takeover", "bot": self.name, "requeued": takeover.requeued})
        return Next(0.0, True)

    def _render(self, bot: Bot, settings: DeliveryConfig, head: Head, last_delay: float) -> Head | None:
        """The head with its parts rendered and stored; None if it is gone, dead or paused instead."""
        facts = None
        try:
            bodies = self.render(bot, head)
            if not bodies:
                raise ValueError("rendering produced no message")
            if self._plans(bot):
                facts = self.facts(bot, head)
        except UNREADABLE as exc:
            self.outcomes.unrenderable(bot, head, exc)
            return None
        except Exception as exc:
            self.outcomes.render_bug(bot, head, exc, settings, last_delay, self.rng)
            return None
        if facts is not None:
            bodies = plan(bot, bodies, facts, self.outbox.card(bot.name, head.group_key))
        if not self.outbox.set_bodies(head.id, bot.name, self.owner, bodies):
            return None
        return replace(head, bodies=bodies, payload=None)

    def _dry_run(self, bot: Bot, head: Head) -> None:
        """Dry-run bots print what they would send, so the service is useful with no Feishu account."""
        body = head.bodies[head.sent]
        last = head.sent + 1 >= len(head.bodies)
        if self.outbox.mark_logged(head.id, bot.name, self.owner, last=last, record=True):
            self.log.info("dry run: would send %s", json.dumps(body, ensure_ascii=False, separators=(",", ":")),
                          extra={"event": "dry_run", "bot": bot.name, "group_key": head.group_key,
                                 "part": f"{head.part}/{head.parts}", "message_id": head.id})
            self.counts.dry_run(bot.name)

    def _deliver(self, bot: Bot, settings: DeliveryConfig, head: Head, send_id: int, last_delay: float) -> None:
        fields = {"bot": bot.name, "group_key": head.group_key, "part": f"{head.part}/{head.parts}",
                  "message_id": head.id, "attempt": head.attempts + 1}
        started = self.clock.monotonic()
        card: CardChange | None = None
        try:
            if self._plans(bot):
                result, card = self.app.run(bot, head)
            else:
                result = self.channel.send(bot, head.bodies[head.sent])
        except Exception:
            self.log.exception("the Feishu client failed; the message will be retried",
                               extra={"event": "delivery_bug", **fields})
            result = SendResult(Outcome.RETRY, UNEXPECTED_ANSWER, detail="the client raised an error (see the log)")
        self.counts.send_seconds(bot.name, self.clock.monotonic() - started)
        self.record(bot, settings, Unrecorded(head, send_id, result, last_delay, fields, card=card))

    def _plans(self, bot: Bot) -> bool:
        """Whether the bot's messages are sent as an app bot's plan (appbot.py)."""
        return bot.is_app and bot.sends and self.app is not None

    def record(self, bot: Bot, settings: DeliveryConfig, pending: Unrecorded) -> bool:
        """Write a send's outcome; on failure stop the bot (see the module doc) and say why."""
        try:
            self.outcomes.settle(bot, pending, settings, self.rng)
        except Exception as exc:
            pending.failures += 1
            pending.error = f"{type(exc).__name__}: {exc}"
            pending.pause = error_pause(pending.pause, settings, self.rng)
            self.unrecorded = pending
            self.log.error("bot %s stopped: message %d went to Feishu (%s) but recording that failed (%s); "
                           "nothing more is sent for this bot until it is recorded, retrying in %.1fs",
                           bot.name, pending.head.id, pending.result.outcome.value, pending.error, pending.pause,
                           extra={"event": "record_failed", "failures": pending.failures, **pending.fields})
            self.counts.internal_error("record_send")
            return False
        if self.unrecorded is not None:
            self.unrecorded = None
            self.log.info("recorded the send of message %d after %d failure(s); bot %s sends again",
                          pending.head.id, pending.failures, bot.name,
                          extra={"event": "record_recovered", **pending.fields})
        return True

    def leave(self, bot: Bot | None, settings: DeliveryConfig, holding: bool) -> None:
        """The thread stepping this sender ends: record what it can, release the lease, close."""
        pending = self.unrecorded
        if pending is not None and bot is not None and holding and not self.record(bot, settings, pending):
            self.log.error("stopping with the send of message %d unrecorded: the next holder of bot %s sends it "
                           "again", pending.head.id, self.name, extra={"event": "record_failed", **pending.fields})
        try:
            if holding:
                self.outbox.release(self.name, self.owner)
        except StorageError:
            pass  # the lease lapses by itself in LEASE_TTL
        finally:
            self.outbox.close()
