"""Delivery: get every stored message to Feishu, in order, within each bot's rate limit.

Accepting (bridge.accept) only writes the messages to the outbox and calls `wake()`: it
never waits for quota or for Feishu, and it renders nothing. A sender renders a message
(the injected `render` callable: bridge.compose, through bootstrap) when it is due to be
sent, keeps the parts in the outbox, and sends them one request at a time.

Sending, per process (each gunicorn worker runs one Delivery):
- one sender thread per configured bot, stepping that bot's Sender (sender.py). A
  sender sends only while its process holds the bot's lease in the outbox, so across
  all processes exactly one sends for a bot: messages leave in the order they were
  committed, and one sliding window limiter suffices. Its send times live in the
  outbox, so a process taking the bot over keeps to the same windows (pacing.py: never
  a burst over the limit). The windows an app bot shares with other bots (its app's,
  its chat's) are checked and filled by the claim itself, in the outbox, as one
  decision across every process (pacing.shared_windows, Outbox.claim).
- one watcher thread (watcher.py): it wakes the senders when another process has
  committed, renews this process's leases and prunes old rows.

Outcomes (outcomes.py; the client only classifies, the policy is there): SENT is done.
RETRY pauses the bot with jittered exponential backoff (honouring Retry-After); later
messages wait behind it, and after delivery.max_age the message becomes a dead letter.
PERMANENT is a dead letter at once, logged with what to fix. Dead letters stay in the
outbox for `outbox list` / `outbox retry`. A process killed mid-send leaves the message
marked in flight; the next lease holder sends it again (at least once).

A message that went out but whose outcome could not be recorded is never sent again
by this process: its bot stops (nothing more is sent for it, /-/ready answers 503, every
failed attempt is logged and counted in feishu_bridge_internal_errors_total) and only
the recording is retried, with backoff, until it succeeds. Taking the lease afresh
instead would put the message back to pending and send it again, once a second for as
long as the recording kept failing.

Every reading of the time goes through the injected Clock, so a test can step a Sender
(`Delivery.sender(name).step(...)`) through pacing, backoff, max_age and lease takeover
without a thread or a sleep.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import uuid
from typing import TYPE_CHECKING

from ..clock import SYSTEM_CLOCK, Clock
from ..config import Config
from ..errors import StorageError
from . import pacing
from .outcomes import Counts, Outcomes
from .sender import Channel, Facts, Next, Render, Sender, error_pause
from .watcher import POLL_INTERVAL, Watcher

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..store import Outbox

__all__ = ["Delivery", "Next", "Sender", "POLL_INTERVAL"]


class Delivery:
    def __init__(self, config: Config, channel: Channel, logger: logging.Logger, *, outbox: Outbox,
                 render: Render, metrics: Metrics | None = None, clock: Clock = SYSTEM_CLOCK,
                 facts: Facts | None = None):
        self.config = config
        self.channel = channel
        self.render = render
        self.facts = facts            # app bots: what a message's plan needs besides its cards
        self.log = logger
        self.metrics = metrics
        self.outbox = outbox
        self.clock = clock
        # Unique per Delivery, so two in one process (tests) are two owners.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.counts = Counts(metrics, logger)
        self._outcomes = Outcomes(outbox, self.owner, logger, self.counts, clock)
        # Read from the module when built, not bound at import: the one real-time burst test
        # shortens Feishu's minute in the bridge processes it starts (tests/support/short_minute).
        self._windows = pacing.FEISHU_WINDOWS
        self._rng = random.Random()
        self._cond = threading.Condition()
        self._generation = 0          # bumped on a reload or a stop: every sender looks again
        self._news = 0                # bumped when messages may have arrived: idle senders look
        self._listening = 0           # senders sleeping until news (the others ignore it)
        self._stopping = False
        self._stop_event = threading.Event()
        self._senders: dict[str, Sender] = {}           # every bot's, kept across reloads
        self._threads: dict[str, threading.Thread] = {}
        self._held: set[str] = set()  # bots whose lease this process holds (guarded by _cond)
        self._watcher: threading.Thread | None = None
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
        watcher = Watcher(self.outbox, self.owner, clock=self.clock, wake=self.wake,
                          holding=lambda: bool(self._held), kept=lambda: self.config.delivery.dedupe_window,
                          failed=self._failed, recovered=self._recovered)
        self._watcher = threading.Thread(target=watcher.run, args=(self._stop_event,), name="bridge-outbox-watch",
                                         daemon=True)
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
        deadline = self.clock.monotonic() + grace
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads = dict(self._threads)
        self._stop_event.set()
        for thread in threads.values():
            thread.join(max(0.0, deadline - self.clock.monotonic()))
        if self._watcher is not None:
            self._watcher.join(max(0.0, deadline - self.clock.monotonic()))
        stuck = sorted(name for name, thread in threads.items() if thread.is_alive())
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
        with self._cond:
            senders = list(self._senders.values())
        return {s.name: (f"message {p.head.id} went to Feishu but recording that failed {p.failures} time(s) "
                         f"({p.error}); nothing more is sent for this bot until it is recorded")
                for s in senders if (p := s.unrecorded) is not None}

    def _probe(self) -> list[tuple[str, int, float]] | None:
        try:
            return self.depths()
        except StorageError as exc:
            # A scrape must still answer (with the other metrics, and outbox_up 0) when the
            # outbox is unreadable.
            self.log.warning("%s", exc, extra={"event": "storage_error", "where": "metrics"})
            return None

    # -- the senders --------------------------------------------------------------------
    def sender(self, name: str) -> Sender:
        """The bot's Sender, made on first use. The threads step it; a test may step it
        itself, without starting any thread."""
        with self._cond:
            sender = self._senders.get(name)
            if sender is None:
                sender = self._senders[name] = Sender(
                    name, outbox=self.outbox, channel=self.channel, render=self.render, owner=self.owner,
                    log=self.log, clock=self.clock, counts=self.counts, outcomes=self._outcomes,
                    stopping=lambda: self._stopping, windows=self._windows, facts=self.facts)
            return sender

    # -- threads ------------------------------------------------------------------------
    def _start_sender(self, name: str) -> None:
        """Called with self._cond held."""
        thread = self._threads.get(name)
        if thread is None or not thread.is_alive():
            thread = threading.Thread(target=self._send_loop, args=(name,), name=f"bridge-send-{name}", daemon=True)
            self._threads[name] = thread
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

    def _send_loop(self, name: str) -> None:
        sender = self.sender(name)
        holding, failure, pause = False, None, 0.0
        try:
            while True:
                with self._cond:
                    if self._stopping:
                        return
                    bot = self.config.bots.get(name)
                    if bot is None:      # removed by a reload
                        if self._threads.get(name) is threading.current_thread():
                            del self._threads[name]
                        return
                    settings = self.config.delivery
                    seen = (self._generation, self._news)
                try:
                    step = sender.step(bot, settings, holding)
                    holding, wait, on_news = step.holding, step.wait, step.on_news
                    self._holds(name, holding)
                    failure, pause = self._recovered(failure, name), 0.0
                except Exception as exc:  # a sender that dies strands its bot's messages
                    pause = error_pause(pause, settings, self._rng)
                    failure, wait, on_news = self._failed(failure, exc, name), pause, False
                    # Nothing this bot sent is unrecorded (that is Sender.record's, which keeps
                    # the lease), so taking the lease afresh resends nothing that went out.
                    holding = sender.unrecorded is not None
                    self._holds(name, holding)
                if wait > 0:
                    self._sleep(seen, wait, on_news=on_news)
        finally:
            self._holds(name, False)
            sender.leave(self.config.bots.get(name), self.config.delivery, holding)

    def _holds(self, name: str, holding: bool) -> None:
        with self._cond:
            (self._held.add if holding else self._held.discard)(name)

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
        self.counts.internal_error("watcher" if where == "watcher" else "sender")
        return text

    def _recovered(self, previous: str | None, where: str) -> None:
        if previous is not None:
            self.log.info("outbox usable again", extra={"event": "storage_recovered", "where": where})
        return None
