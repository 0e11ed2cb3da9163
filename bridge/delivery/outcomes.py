"""What an attempt's outcome means for its message, and writing that down.

The client only classifies Feishu's answer (sent, retry, permanent, with a reason); the
policy is here. `decide` is that policy and nothing else: pure, so every branch can be
checked with numbers. SENT is done. RETRY pauses the bot with jittered exponential
backoff (honouring Retry-After); later messages wait behind it, and after
delivery.max_age the message becomes a dead letter. PERMANENT is a dead letter at once.
A custom bot's request with no answer (its outcome unknown) is retried only after
delivery.backoff_unknown (`retry_unknown`); an app bot's, whose repeats Feishu drops,
as any other.

`Outcomes` applies a decision to the outbox, then logs and counts it. Rendering can fail
before any send, in two ways that are told apart: a payload this version cannot read
(`UNREADABLE`) never will be, so it is a dead letter at once; any other error is a bug,
not the message's fault, so it is retried like a Feishu retry and counted as an
internal error.

`Counts` is every delivery metric, one method per event.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from ..clock import Clock
from ..config import Bot, DeliveryConfig
from ..errors import PayloadError
from ..notify.outcome import Outcome, SendResult
from ..store.records import CardChange, Head
from .pacing import backoff

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..store import Outbox

# Dead-letter and retry reasons of rendering (the others are the channel's, bridge.notify.outcome).
UNRENDERABLE = "unrenderable"     # the stored payload cannot be read by this version
RENDER_ERROR = "render_error"     # rendering failed for another reason: a bug
# What "a payload this version cannot read" looks like; anything else raised while
# rendering is a bug in the bridge (or in what it was given at start-up), not the message.
UNREADABLE = (PayloadError, json.JSONDecodeError, UnicodeDecodeError)
# The retry delays after unknown outcomes grow up to this many times delivery.backoff_unknown.
UNKNOWN_GROWTH = 4
RENDER_ADVICE = ("rendering failed in the bridge itself, not because of the message: the log has the "
                 "traceback (event delivery_bug, where render); once fixed, `outbox retry` sends it")


# -- the policy ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Sent:
    """The part went out: done, and the message with its last part."""


@dataclass(frozen=True)
class Retry:
    when: float      # no request for this bot before then
    delay: float     # the backoff drawn, kept for the next retry's jitter


@dataclass(frozen=True)
class Dead:
    detail: str      # why it was given up on, for `outbox list --dead`


Decision = Union[Sent, Retry, Dead]


def decide(result: SendResult, head: Head, settings: DeliveryConfig, now: float, *,
           last_delay: float, rng: random.Random, idempotent: bool = False) -> Decision:
    """What becomes of `head` after an attempt that ended with `result` at `now`.

    `last_delay` is the bot's previous retry delay and `rng` the jitter's source, so
    the answer depends on the arguments alone. `idempotent`: whether Feishu itself drops
    a repeat of the request (an app bot's: a uuid, or an update to the same content)."""
    if result.outcome is Outcome.SENT:
        return Sent()
    if result.outcome is Outcome.PERMANENT:
        return Dead(result.detail)
    if result.unknown and not idempotent:
        return retry_unknown(head, settings, now, result.detail, result.retry_after, last_delay=last_delay, rng=rng)
    return retry_or_give_up(head, settings, now, result.detail, result.retry_after, last_delay=last_delay, rng=rng)


def retry_or_give_up(head: Head, settings: DeliveryConfig, now: float, detail: str, retry_after: float | None, *,
                     last_delay: float, rng: random.Random) -> Retry | Dead:
    age = now - head.created
    if age >= settings.max_age:
        return Dead(f"gave up after {head.attempts + 1} attempts in {age:.0f}s (delivery.max_age); {detail}")
    delay = backoff(last_delay, settings.backoff_base, settings.backoff_cap, rng)
    # The last attempt lands at max_age, not beyond; Feishu's own "wait" wins over both.
    when = min(now + delay, head.created + settings.max_age)
    if retry_after is not None:
        when = max(when, now + retry_after)
    return Retry(when, delay)


def retry_unknown(head: Head, settings: DeliveryConfig, now: float, detail: str, retry_after: float | None, *,
                  last_delay: float, rng: random.Random) -> Retry | Dead:
    """After a custom bot's request whose outcome is unknown: a custom bot has no
    idempotency key, so the bridge must choose between a possible duplicate (send again)
    and a possible loss (give up). It sends again, but only once Feishu is assumed done
    with the first request (delivery.backoff_unknown after it gave up, growing with
    jitter up to UNKNOWN_GROWTH times that), so that a hang of Feishu shorter than that
    costs at most one extra copy. Not pulled forward to max_age, which would break that."""
    age = now - head.created
    if age >= settings.max_age:
        return Dead(f"gave up after {head.attempts + 1} attempts in {age:.0f}s (delivery.max_age); {detail}")
    cap = max(settings.backoff_cap, settings.backoff_unknown * UNKNOWN_GROWTH)
    delay = backoff(last_delay, settings.backoff_unknown, cap, rng)
    return Retry(now + max(delay, retry_after or 0.0), delay)


# -- a send and its outcome ----------------------------------------------------------------
@dataclass
class Unrecorded:
    """A send whose outcome came back from Feishu, until it is written to the outbox
    (while it cannot be, its bot stops: bridge.delivery's module doc)."""

    head: Head
    send_id: int
    result: SendResult
    last_delay: float
    fields: dict
    failures: int = 0
    error: str = ""
    pause: float = 0.0
    card: CardChange | None = None     # an app bot's request: what it changed about the group's card


class Outcomes:
    """Applies decisions: writes the message's new state, then logs and counts it."""

    def __init__(self, outbox: Outbox, owner: str, log: logging.Logger, counts: Counts, clock: Clock):
        self.outbox = outbox
        self.owner = owner
        self.log = log
        self.counts = counts
        self.clock = clock

    def settle(self, bot: Bot, sent: Unrecorded, settings: DeliveryConfig, rng: random.Random) -> None:
        """Write the outcome first, then log and count it: a failure before the write
        leaves nothing half done, and counting never raises."""
        head, result = sent.head, sent.result
        fields = {**sent.fields, "outcome": result.outcome.value, "reason": result.reason, "code": result.code}
        now = self.clock.now()
        decision = decide(result, head, settings, now, last_delay=sent.last_delay, rng=rng, idempotent=bot.is_app)
        # A request with no answer may still be in flight at Feishu, and counts in the rate
        # windows until Feishu is assumed done with it (see retry_unknown).
        in_flight = settings.backoff_unknown if result.unknown else 0.0
        if isinstance(decision, Sent):
            ours = self.outbox.mark_sent(head.id, sent.send_id, bot.name, self.owner, result.code,
                                         last=head.part >= head.parts, card=sent.card)
            self.log.info("sent", extra={"event": "sent", "queued_seconds": round(self.clock.now() - head.created, 3),
                                         **fields})
        elif isinstance(decision, Retry):
            ours = self.outbox.reschedule(head.id, sent.send_id, bot.name, self.owner, when=decision.when,
                                          delay=decision.delay, reason=result.reason, code=result.code,
                                          detail=result.detail, in_flight=in_flight)
            self.log.warning("not delivered yet, retrying in %.1fs: %s (%s)", decision.when - now, result.advice,
                             result.detail, extra={"event": "retry", "retry_in": round(decision.when - now, 3),
                                                   **fields})
            self.counts.retry(bot.name)
        else:
            ours = self._dead(bot, head, sent.send_id, result.reason, result.code, result.advice, decision.detail,
                              fields, in_flight)
        self.counts.answer(bot.name, result)
        if not ours:
            self.log.warning("the lease of bot %s lapsed during a send; the new holder may send it again",
                             bot.name, extra={"event": "lease_lost", **fields})

    def _dead(self, bot: Bot, head: Head, send_id: int, reason: str, code: int | None, advice: str, detail: str,
              fields: dict, in_flight: float = 0.0) -> bool:
        ours = self.outbox.dead_letter(head.id, send_id, bot.name, self.owner, reason=reason, code=code,
                                       detail=detail, in_flight=in_flight)
        self.log.error("not delivered, kept as dead letter %d: %s (%s)", head.id, advice, detail,
                       extra={"event": "dead_letter", **fields})
        self.counts.dead_letter(bot.name, reason)
        return ours

    # -- rendering failed -------------------------------------------------------------------
    def unrenderable(self, bot: Bot, head: Head, exc: BaseException) -> None:
        """What cannot be read now never will be: a dead letter at once, no retry loop."""
        detail = f"{type(exc).__name__}: {exc}"
        if self.outbox.claim(head.id, bot.name, self.owner, record=False) is not None:
            self.outbox.dead_letter(head.id, 0, bot.name, self.owner, reason=UNRENDERABLE, code=None, detail=detail)
            self.log.error("cannot render message %d, kept as a dead letter: the outbox holds a payload "
                           "this version cannot read (`outbox list --dead` shows it)", head.id, exc_info=exc,
                           extra={"event": "render_failed", "bot": bot.name, "message_id": head.id})
            self.counts.dead_letter(bot.name, UNRENDERABLE)

    def render_bug(self, bot: Bot, head: Head, exc: BaseException, settings: DeliveryConfig, last_delay: float,
                   rng: random.Random) -> None:
        """A bug, not the message: the bot pauses as after a Feishu retry, and the message
        is rendered again then (until delivery.max_age). Logged with its traceback every
        time: the same failure repeated for hours must stay visible."""
        self.counts.internal_error("render")
        detail = f"{type(exc).__name__}: {exc}"
        fields = {"bot": bot.name, "group_key": head.group_key, "message_id": head.id,
                  "attempt": head.attempts + 1, "reason": RENDER_ERROR}
        if self.outbox.claim(head.id, bot.name, self.owner, record=False) is None:
            self.log.error("rendering message %d failed; it is gone meanwhile", head.id, exc_info=exc,
                           extra={"event": "delivery_bug", "where": "render", **fields})
            return
        now = self.clock.now()
        decision = retry_or_give_up(head, settings, now, detail, None, last_delay=last_delay, rng=rng)
        if isinstance(decision, Dead):
            self.log.error("rendering message %d failed: %s", head.id, detail, exc_info=exc,
                           extra={"event": "delivery_bug", "where": "render", **fields})
            self._dead(bot, head, 0, RENDER_ERROR, None, RENDER_ADVICE, decision.detail, fields)
            return
        self.outbox.reschedule(head.id, 0, bot.name, self.owner, when=decision.when, delay=decision.delay,
                               reason=RENDER_ERROR, code=None, detail=detail)
        self.log.error("rendering message %d failed (a bug in the bridge, not the message), retrying in %.1fs: %s",
                       head.id, decision.when - now, detail, exc_info=exc,
                       extra={"event": "delivery_bug", "where": "render", "retry_in": round(decision.when - now, 3),
                              **fields})
        self.counts.retry(bot.name)


# -- counting ------------------------------------------------------------------------------
class Counts:
    """The delivery metrics, one method per event. With no Metrics nothing is counted; a
    failure to count is logged, never raised into the sender, where it would look like a
    failed send."""

    def __init__(self, metrics: Metrics | None, log: logging.Logger):
        self.metrics = metrics
        self.log = log

    def _count(self, count: Callable[[Metrics], object]) -> None:
        if self.metrics is None:
            return
        try:
            count(self.metrics)
        except Exception:
            self.log.exception("counting a metric failed", extra={"event": "metrics_failed"})

    def dry_run(self, bot: str) -> None:
        self._count(lambda m: m.messages.labels(bot, "dry_run").inc())

    def retry(self, bot: str) -> None:
        self._count(lambda m: m.retries.labels(bot).inc())

    def dead_letter(self, bot: str, reason: str) -> None:
        self._count(lambda m: m.dead_letters.labels(bot, reason).inc())

    def send_seconds(self, bot: str, seconds: float) -> None:
        self._count(lambda m: m.send_seconds.labels(bot).observe(seconds))

    def internal_error(self, where: str) -> None:
        self._count(lambda m: m.internal_errors.labels(where).inc())

    def app_card(self, bot: str, action: str, result: SendResult) -> None:
        self._count(lambda m: m.app_cards.labels(bot, action, result.outcome.value).inc())

    def thread_reply(self, bot: str, reason: str) -> None:
        self._count(lambda m: m.thread_replies.labels(bot, reason).inc())

    def urgent(self, bot: str, kind: str, reason: str) -> None:
        self._count(lambda m: m.urgent.labels(bot, kind, reason).inc())

    def answer(self, bot: str, result: SendResult) -> None:
        """Feishu's answer to one request (or the client's verdict when there was none)."""
        def count(m: Metrics) -> None:
            m.messages.labels(bot, result.outcome.value).inc()
            if result.outcome is not Outcome.SENT:
                code = "none" if result.code is None else str(result.code)
                m.feishu_errors.labels(bot, result.reason, code).inc()

        self._count(count)
