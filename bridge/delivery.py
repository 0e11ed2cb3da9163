"""Delivery: get every stored message to Feishu, in order, within each bot's rate limit.

Accepting (bridge.accept) only writes: it stores the messages in the SQLite outbox (one
transaction, committed before it returns, StorageError otherwise) and calls `wake()`.
It never waits for quota or for Feishu, and it renders nothing: a sender renders a
message (the `render` callable, bridge.compose) when it is due to be sent, keeps the
parts in the outbox, and sends them one request at a time.

Sending, per process (each gunicorn worker runs one Delivery):
- one sender thread per configured bot. A sender sends only while its process holds
  the bot's lease in the outbox (bridge.outbox), so across all processes exactly one
  sends for a bot: messages leave in the order they were committed, and one sliding
  window limiter suffices. Its send times live in the outbox, so a process taking the
  bot over keeps to the same windows (bridge.ratelimit: never a burst over the limit).
- one watcher thread: every POLL_INTERVAL it reads SQLite's `data_version`, which
  moves when any other connection commits, and wakes the senders; it renews this
  process's leases and prunes old rows. A message accepted by another process is
  therefore picked up within about POLL_INTERVAL; one accepted here, at once.

Outcomes (the client only classifies; the policy is here): SENT is done. RETRY pauses
the bot with jittered exponential backoff (honouring Retry-After); later messages wait
behind it, and after delivery.max_age the message becomes a dead letter. PERMANENT is a
dead letter at once, logged with what to fix. Dead letters stay in the outbox for
`outbox list` / `outbox retry`. A process killed mid-send leaves the message marked in
flight; the next lease holder sends it again (at least once).

A message that went out but whose outcome could not be recorded is never sent again
by this process: its bot stops (nothing more is sent for it, /-/ready answers 503, every
failed attempt is logged and counted in feishu_bridge_internal_errors_total) and only
the recording is retried, with backoff, until it succeeds. Taking the lease afresh
instead would put the message back to pending and send it again, once a second for as
long as the recording kept failing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

from .config import Bot, Config
from .errors import StorageError
from .feishu import UNEXPECTED_ANSWER, FeishuClient, Outcome, SendResult
from .outbox import LEASE_RENEW, LEASE_TTL, Head, LeaseLost, Outbox
from .ratelimit import backoff, next_allowed

if TYPE_CHECKING:
    from .metrics import Metrics

# How often a process looks for messages other processes accepted: the idle latency
# when the accepting process is not the sender. A PRAGMA is microseconds.
POLL_INTERVAL = 0.025
# A sender with nothing to do re-checks this often even without a wake-up.
IDLE_WAIT = 1.0
# After an error a sender retries this much later at first, then backs off up to
# delivery.backoff_cap (at least ERROR_PAUSE), never spinning.
ERROR_PAUSE = 1.0
PRUNE_EVERY = 60.0


class Counters:
    """Per-bot event counts of this process (sent, retries, dead_letters, duplicates,
    superseded, dry_run), for metrics and tests."""

    NAMES = ("sent", "retries", "dead_letters", "duplicates", "superseded", "dry_run")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def add(self, name: str, bot: str, n: int = 1) -> None:
        with self._lock:
            self._counts[(name, bot)] = self._counts.get((name, bot), 0) + n

    def get(self, name: str, bot: str) -> int:
        with self._lock:
            return self._counts.get((name, bot), 0)

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            out: dict[str, dict[str, int]] = {name: {} for name in self.NAMES}
            for (name, bot), n in self._counts.items():
                out.setdefault(name, {})[bot] = n
            return out


@dataclass
class _Unrecorded:
    """A send whose outcome came back from Feishu but could not be written to the outbox."""

    head: Head
    send_id: int
    result: SendResult
    last_delay: float
    fields: dict
    failures: int = 0
    error: str = ""
    pause: float = 0.0


class Delivery:
    def __init__(self, config: Config, client: FeishuClient, logger: logging.Logger, *,
                 metrics: Metrics | None = None, outbox: Outbox | None = None,
                 render: Callable[[Bot, Head], list[dict]] | None = None):
        self.config = config
        self.client = client
        # Turns a stored message into its Feishu request bodies when it is due
        # (bridge.compose); None only where every message is stored rendered.
        self.render = render
        self.log = logger
        self.metrics = metrics
        self.outbox = outbox if outbox is not None else Outbox(config.storage.path)
        # Unique per Delivery, so two in one process (tests) are two owners.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counters = Counters()
        self._rng = random.Random()
        self._cond = threading.Condition()
        self._generation = 0          # bumped on a reload or a stop: every sender looks again
        self._news = 0                # bumped when messages may have arrived: idle senders look
        self._listening = 0           # senders sleeping until news (the others ignore it)
        self._stopping = False
        self._stop_event = threading.Event()
        self._senders: dict[str, threading.Thread] = {}
        self._held: set[str] = set()  # bots whose lease this process holds (guarded by _cond)
        self._watcher: threading.Thread | None = None
        # Bots stopped because a send's outcome could not be recorded (see the module doc).
        # Each key is written only by that bot's sender; others read a copy.
        self._unrecorded: dict[str, _Unrecorded] = {}
        if metrics is not None:
            metrics.watch_outbox(self._probe)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._watcher is not None:
            return
        try:
            self.outbox.open()
            self._warn_orphans()
        except StorageError as exc:
            # Keep serving: accepting answers 503 and the senders keep trying, so a volume
            # that mounts late or a lock that clears needs no restart.
            self.log.error("%s", exc, extra={"event": "storage_error"})
        self._watcher = threading.Thread(target=self._watch, name="bridge-outbox-watch", daemon=True)
        self._watcher.start()
        with self._cond:
            for name in self.config.bots:
                self._start_sender(name)

    def _warn_orphans(self) -> None:
        for bot, count, _ in self.outbox.depths():
            if bot not in self.config.bots:
                self.log.warning("%d message(s) wait for bot %s, which is not configured; they are sent if it "
                                 "comes back (`outbox list` shows them)", count, bot,
                                 extra={"event": "unknown_bot_waiting", "bot": bot, "messages": count})

    def configure(self, config: Config) -> None:
        """Use a reloaded configuration: bots added get a sender, removed ones stop."""
        with self._cond:
            self.config = config
            if self._watcher is not None and not self._stopping:
                for name in config.bots:
                    self._start_sender(name)
            self._generation += 1
            self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Start no new send; give the ones in flight up to `timeout` (default
        delivery.shutdown_grace) to finish; leave the rest stored; release the leases."""
        grace = self.config.delivery.shutdown_grace if timeout is None else timeout
        deadline = time.monotonic() + grace
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            senders = dict(self._senders)
        self._stop_event.set()
        for thread in senders.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - time.monotonic()))
        stuck = sorted(name for name, thread in senders.items() if thread.is_alive())
        if stuck:
            # Their leases lapse in LEASE_TTL; the next holder sends the message again.
            self.log.warning("stopped with a send still in flight for %s", ", ".join(stuck),
                             extra={"event": "stop_in_flight", "bots": stuck})

    def depths(self) -> list[tuple[str, int, float]]:
        """(bot, waiting, oldest age in seconds) for every configured bot (0, 0 when idle)."""
        found = {bot: (count, age) for bot, count, age in self.outbox.depths()}
        names = list(self.config.bots) + sorted(set(found) - set(self.config.bots))
        return [(name, *found.get(name, (0, 0.0))) for name in names]

    def problems(self) -> dict[str, str]:
        """Bots this process stopped, with why: for /-/ready."""
        return {name: (f"message {p.head.id} went to Feishu but recording that failed {p.failures} time(s) "
                       f"({p.error}); nothing more is sent for this bot until it is recorded")
                for name, p in list(self._unrecorded.items())}

    def _probe(self) -> list[tuple[str, int, float]]:
        try:
            return self.depths()
        except StorageError as exc:
            # A scrape must still answer (with the other metrics) when the outbox is unreadable.
            self.log.warning("%s", exc, extra={"event": "storage_error", "where": "metrics"})
            return []

    # -- threads ------------------------------------------------------------------------
    def _start_sender(self, name: str) -> None:
        """Called with self._cond held."""
        thread = self._senders.get(name)
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=self._send_loop, args=(name,), name=f"bridge-send-{name}", daemon=True)
            self._senders[name] = thread
            thread.start()

    def wake(self) -> None:
        """New messages may be waiting: wake the senders that have nothing to do."""
        with self._cond:
            self._news += 1
            # Only a sender waiting for news is woken: one waiting for quota or a retry pause
            # ignores it, and waking it at every accept cost two thread switches per request.
            if self._listening:
                self._cond.notify_all()

    def _sleep(self, seen: tuple[int, int], seconds: float, *, on_news: bool) -> None:
        # A sender waiting for quota or a retry pause ignores news: a message accepted now
        # queues behind the head anyway, and looking again at every accept cost each
        # request three reads of the outbox under load.
        with self._cond:
            self._listening += on_news
            try:
                self._cond.wait_for(lambda: self._stopping or self._generation != seen[0]
                                    or (on_news and self._news != seen[1]), seconds)
            finally:
                self._listening -= on_news

    def _watch(self) -> None:
        version, renewed, pruned, failure = None, 0.0, 0.0, None
        while not self._stop_event.is_set():
            try:
                current = self.outbox.data_version()
                if current != version:
                    version = current
                    self.wake()
                now = time.monotonic()
                if self._held and now - renewed >= LEASE_RENEW:
                    self.outbox.renew(self.owner, LEASE_TTL)
                    renewed = now
                if now - pruned >= PRUNE_EVERY:
                    # Sent rows are kept only as long as deduplication looks back.
                    self.outbox.prune(time.time() - self.config.delivery.dedupe_window)
                    pruned = now
                failure = self._recovered(failure, "watcher")
            except Exception as exc:  # the watcher must outlive any error: it keeps the leases
                failure = self._failed(failure, exc, "watcher")
            self._stop_event.wait(POLL_INTERVAL)
        self.outbox.close()

    def _send_loop(self, name: str) -> None:
        holding, failure, pause = False, None, 0.0
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    bot = self.config.bots.get(name)
                    if bot is None:      # removed by a reload
                        if self._senders.get(name) is threading.current_thread():
                            del self._senders[name]
                        return
                    seen = (self._generation, self._news)
                idle = False
                try:
                    holding, wait, idle = self._step(bot, holding)
                    self._holds(name, holding)
                    failure, pause = self._recovered(failure, name), 0.0
                except Exception as exc:  # a sender that dies strands its bot's messages
                    pause = self._pause_after(pause)
                    failure, wait = self._failed(failure, exc, name), pause
                    # Nothing this bot sent is unrecorded (that is _record's, which keeps
                    # the lease), so taking the lease afresh resends nothing that went out.
                    holding = name in self._unrecorded
                    self._holds(name, holding)
                if wait > 0:
                    self._sleep(seen, wait, on_news=idle)
        finally:
            self._leave(name, holding)

    def _holds(self, name: str, holding: bool) -> None:
        with self._cond:
            (self._held.add if holding else self._held.discard)(name)

    def _leave(self, name: str, holding: bool) -> None:
        self._holds(name, False)
        pending = self._unrecorded.get(name)
        bot = self.config.bots.get(name)
        if pending is not None and bot is not None and holding and not self._record(bot, pending):
            self.log.error("stopping with the send of message %d unrecorded: the next holder of bot %s sends it "
                           "again", pending.head.id, name, extra={"event": "record_failed", **pending.fields})
        try:
            if holding:
                self.outbox.release(name, self.owner)
        except StorageError:
            pass  # the lease lapses by itself in LEASE_TTL
        finally:
            self.outbox.close()

    def _failed(self, previous: str | None, exc: Exception, where: str) -> str:
        """Log and count a failed step. A sender's steps are paced by backoff, so it logs
        every time (a failure repeated for hours stays visible); the watcher polls every
        POLL_INTERVAL, so it logs a failure once until it changes or clears."""
        text = str(exc)
        if where == "watcher" and text == previous:
            return text
        if isinstance(exc, StorageError):
            self.log.error("%s", text, extra={"event": "storage_error", "where": where})
        else:
            self.log.error("delivery failed unexpectedly", exc_info=text != previous,
                           extra={"event": "delivery_bug", "where": where})
        self._internal_error("watcher" if where == "watcher" else "sender")
        return text

    def _pause_after(self, previous: float) -> float:
        cap = max(ERROR_PAUSE, self.config.delivery.backoff_cap)
        return backoff(previous, ERROR_PAUSE, cap, self._rng)

    def _recovered(self, previous: str | None, where: str) -> None:
        if previous is not None:
            self.log.info("outbox usable again", extra={"event": "storage_recovered", "where": where})
        return None

    # -- one step of a sender -------------------------------------------------------------
    def _step(self, bot: Bot, holding: bool) -> tuple[bool, float, bool]:
        """Do the next thing for this bot; returns (holding the lease, seconds to wait,
        whether a new message should cut the wait short: only when there was none)."""
        if not holding:
            return *self._try_lease(bot.name), False
        pending = self._unrecorded.get(bot.name)
        if pending is not None:   # stopped: only the recording is retried, nothing is sent
            if not self._record(bot, pending):
                return True, pending.pause, False
            return True, 0.0, False
        head = self.outbox.head(bot.name)
        if head is None:
            return True, IDLE_WAIT, True
        state = self.outbox.bot_state(bot.name)
        now = time.time()
        # Dry-run bots keep the limits too: what they print is paced as the real bot's
        # messages would be, and coalescing shows as it would.
        ends = self.outbox.recent_ends(bot.name, bot.rate_limit.per_minute)
        due = max(now, state.paused_until, next_allowed(ends, bot.rate_limit, now))
        if due > now:
            return True, due - now, False
        if self._stopping:
            return True, 0.0, False
        try:
            if head.bodies is None:
                # Rendered only now that it is due: once, and never for a message that a
                # newer one of its group superseded while it waited.
                head = self._render(bot, head)
                if head is None:
                    return True, 0.0, False
            if not bot.sends:
                self._dry_run(bot, head)
                return True, 0.0, False
            send_id = self.outbox.claim(head.id, bot.name, self.owner, record=True)
        except LeaseLost:
            self.log.warning("lost the lease of bot %s; another process sends for it", bot.name,
                             extra={"event": "lease_lost", "bot": bot.name})
            return False, 0.0, False
        if send_id is not None:
            self._deliver(bot, head, send_id, state.backoff)
            pending = self._unrecorded.get(bot.name)
            if pending is not None:
                return True, pending.pause, False
        return True, 0.0, False

    def _render(self, bot: Bot, head: Head) -> Head | None:
        """The head with its parts rendered and stored; None if it is gone or dead instead."""
        try:
            if self.render is None:
                raise RuntimeError("no renderer: this Delivery takes rendered messages only")
            bodies = self.render(bot, head)
            if not bodies:
                raise ValueError("rendering produced no message")
        except Exception as exc:   # what cannot be rendered now never will be: no retry loop
            detail = f"{type(exc).__name__}: {exc}"
            if self.outbox.claim(head.id, bot.name, self.owner, record=False) is not None:
                self.outbox.dead_letter(head.id, 0, bot.name, self.owner, reason="unrenderable", code=None,
                                        detail=detail)
                self.log.exception("cannot render message %d, kept as a dead letter: the outbox holds a payload "
                                   "this version cannot read (`outbox list --dead` shows it)", head.id,
                                   extra={"event": "render_failed", "bot": bot.name, "message_id": head.id})
                self._count("dead_letters", bot.name, reason="unrenderable")
            return None
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
            self._count("dry_run", bot.name)

    def _try_lease(self, name: str) -> tuple[bool, float]:
        state = self.outbox.bot_state(name)
        now = time.time()
        if state.owner not in (None, self.owner) and state.expires > now:
            return False, state.expires - now   # or sooner, if woken by a change
        takeover = self.outbox.acquire(name, self.owner, LEASE_TTL)
        if takeover is None:
            return False, LEASE_RENEW
        if takeover.requeued:
            self.log.warning("took over bot %s; %d message(s) left in flight by %s will be sent again",
                             name, takeover.requeued, takeover.previous or "an earlier run",
                             extra={"event": "takeover", "bot": name, "requeued": takeover.requeued})
        return True, 0.0

    def _deliver(self, bot: Bot, head: Head, send_id: int, last_delay: float) -> None:
        fields = {"bot": bot.name, "group_key": head.group_key, "part": f"{head.part}/{head.parts}",
                  "message_id": head.id, "attempt": head.attempts + 1}
        started = time.monotonic()
        try:
            result = self.client.send(bot, head.bodies[head.sent])
        except Exception:
            self.log.exception("the Feishu client failed; the message will be retried",
                               extra={"event": "delivery_bug", **fields})
            result = SendResult(Outcome.RETRY, UNEXPECTED_ANSWER, detail="the client raised an error (see the log)")
        self._counting(lambda m: m.send_seconds.labels(bot.name).observe(time.monotonic() - started))
        self._record(bot, _Unrecorded(head, send_id, result, last_delay, fields))

    def _record(self, bot: Bot, pending: _Unrecorded) -> bool:
        """Write a send's outcome; on failure stop the bot (see the module doc) and say why."""
        try:
            self._settle(bot, pending.head, pending.send_id, pending.result, pending.last_delay, pending.fields)
        except Exception as exc:
            pending.failures += 1
            pending.error = f"{type(exc).__name__}: {exc}"
            pending.pause = self._pause_after(pending.pause)
            self._unrecorded[bot.name] = pending
            self.log.error("bot %s stopped: message %d went to Feishu (%s) but recording that failed (%s); "
                           "nothing more is sent for this bot until it is recorded, retrying in %.1fs",
                           bot.name, pending.head.id, pending.result.outcome.value, pending.error, pending.pause,
                           extra={"event": "record_failed", "failures": pending.failures, **pending.fields})
            self._internal_error("record_send")
            return False
        if self._unrecorded.pop(bot.name, None) is not None:
            self.log.info("recorded the send of message %d after %d failure(s); bot %s sends again",
                          pending.head.id, pending.failures, bot.name,
                          extra={"event": "record_recovered", **pending.fields})
        return True

    def _settle(self, bot: Bot, head: Head, send_id: int, result: SendResult, last_delay: float,
                fields: dict) -> None:
        """Write the outcome first, then log and count it: a failure before the write
        leaves nothing half done, and counting never raises."""
        fields = {**fields, "outcome": result.outcome.value, "reason": result.reason, "code": result.code}
        if result.outcome is Outcome.SENT:
            ours = self.outbox.mark_sent(head.id, send_id, bot.name, self.owner, result.code,
                                         last=head.part >= head.parts)
            self.log.info("sent", extra={"event": "sent", "queued_seconds": round(time.time() - head.created, 3),
                                         **fields})
            self._count("sent", bot.name)
        elif result.outcome is Outcome.PERMANENT:
            ours = self._dead(bot, head, send_id, result, result.detail, fields)
        else:
            ours = self._retry(bot, head, send_id, result, last_delay, fields)
        self._count_result(bot.name, result)
        if not ours:
            self.log.warning("the lease of bot %s lapsed during a send; the new holder may send it again",
                             bot.name, extra={"event": "lease_lost", **fields})

    def _retry(self, bot: Bot, head: Head, send_id: int, result: SendResult, last_delay: float,
               fields: dict) -> bool:
        settings = self.config.delivery
        now = time.time()
        age = now - head.created
        if age >= settings.max_age:
            detail = f"gave up after {head.attempts + 1} attempts in {age:.0f}s (delivery.max_age); {result.detail}"
            return self._dead(bot, head, send_id, result, detail, fields)
        delay = backoff(last_delay, settings.backoff_base, settings.backoff_cap, self._rng)
        # The last attempt lands at max_age, not beyond; Feishu's own "wait" wins over both.
        when = min(now + delay, head.created + settings.max_age)
        if result.retry_after is not None:
            when = max(when, now + result.retry_after)
        ours = self.outbox.reschedule(head.id, send_id, bot.name, self.owner, when=when, delay=delay,
                                      reason=result.reason, code=result.code, detail=result.detail)
        self.log.warning("not delivered yet, retrying in %.1fs: %s (%s)", when - now, result.advice, result.detail,
                         extra={"event": "retry", "retry_in": round(when - now, 3), **fields})
        self._count("retries", bot.name)
        return ours

    def _dead(self, bot: Bot, head: Head, send_id: int, result: SendResult, detail: str, fields: dict) -> bool:
        ours = self.outbox.dead_letter(head.id, send_id, bot.name, self.owner, reason=result.reason,
                                       code=result.code, detail=detail)
        self.log.error("not delivered, kept as dead letter %d: %s (%s)", head.id, result.advice, detail,
                       extra={"event": "dead_letter", **fields})
        self._count("dead_letters", bot.name, reason=result.reason)
        return ours

    # -- counting -----------------------------------------------------------------------
    def _counting(self, count: Callable[[Metrics], None]) -> None:
        """Count, if there are metrics; a failure to count is logged, never raised into the
        sender, where it would look like a failed send."""
        if self.metrics is None:
            return
        try:
            count(self.metrics)
        except Exception:
            self.log.exception("counting a metric failed", extra={"event": "metrics_failed"})

    def _internal_error(self, where: str) -> None:
        self._counting(lambda m: m.internal_errors.labels(where).inc())

    def _count(self, name: str, bot: str, reason: str = "") -> None:
        self.counters.add(name, bot)
        self._counting(lambda m: self._count_metric(m, name, bot, reason))

    @staticmethod
    def _count_metric(m: Metrics, name: str, bot: str, reason: str) -> None:
        if name == "retries":
            m.retries.labels(bot).inc()
        elif name == "dead_letters":
            m.dead_letters.labels(bot, reason).inc()
        elif name == "duplicates":
            m.duplicates.labels(bot).inc()
        elif name == "superseded":
            m.superseded.labels(bot).inc()
        elif name == "dry_run":
            m.messages.labels(bot, "dry_run").inc()

    def _count_result(self, bot: str, result: SendResult) -> None:
        def count(m: Metrics) -> None:
            m.messages.labels(bot, result.outcome.value).inc()
            if result.outcome is not Outcome.SENT:
                code = "none" if result.code is None else str(result.code)
                m.feishu_errors.labels(bot, result.reason, code).inc()

        self._counting(count)
