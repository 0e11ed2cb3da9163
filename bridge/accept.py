"""Accepting (in the HTTP handler): from a parsed notification to stored messages.

Route each alert to its bots and store one message per bot: the payload as received and
which of its alerts are the bot's. Nothing is rendered here (that is bridge.compose, at
send time), so accepting costs the same for a 1-card and a 40-card group. Once the
messages are committed, `wake()` tells this process's senders (bridge.delivery) that
there is something to send; senders in other processes notice the store change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from itertools import accumulate, cycle
from operator import mul
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from .config import Bot, Config, DeliveryConfig
from .errors import BridgeError, PayloadError, StorageError
from .mentions import sends_resolved
from .model import Alert, Notification, fingerprint
from .store import Outbox
from .store.health import WriteHealth
from .routing import Route, routes_by_bot
from .store.records import OutgoingMessage, Stored

if TYPE_CHECKING:
    from .metrics import Metrics


class UnknownBot(BridgeError):
    """A request names a bot the configuration does not have (HTTP 404, or the CLI's one line)."""

    def __init__(self, name: object, config: Config):
        super().__init__(f"unknown bot {name!r}: configured bots are {', '.join(config.bots)}")


def find_bot(config: Config, name: object) -> Bot:
    """The configured bot called `name`; UnknownBot naming the ones there are otherwise."""
    bot = config.bots.get(name) if isinstance(name, str) else None
    if bot is None:
        raise UnknownBot(name, config)
    return bot


# The deepest nesting a body may have. Alertmanager's and Grafana's bodies are 4 deep
# (body, alerts, alert, labels); json.loads itself fails with RecursionError somewhere
# below 1000 levels, at a depth that depends on the stack it runs on, and a payload stored
# here is decoded again at send time on another stack. A fixed limit far below both makes
# every depth answer the same, wherever it is decoded.
MAX_JSON_DEPTH = 64
# Values (array items, object members, arrays and objects) per byte of a body, at most.
# Decoded, each value is a Python object of 50 to 100 bytes however short its JSON, so a
# body of "[[],[],..." took 21 times its size in memory; real bodies have one value per
# 12 to 26 bytes (tests/fixtures, bench/benchlib.py). One per 6 bytes keeps what a body
# can take decoded near 12 times its size, with twice the room any real one needs.
MIN_BYTES_PER_VALUE = 6
# Bodies this small are decoded without looking at their shape: they cannot take much.
_SHAPE_FROM = 64 * 1024
# Python refuses to convert an integer of more digits (sys.get_int_max_str_digits(),
# CVE-2020-10735); json.loads then raises a plain ValueError.
_MAX_INT_DIGITS = 4300
# What the shape check keeps of a body: brackets, all made "[" and "]" (nesting does not
# depend on their kind), the separators of values, and the quotes that say which of
# them are inside strings.
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_STRUCTURE = bytes(range(256)).translate(None, b'[]{}",:')
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_RUNS = re.compile(rb"\[+|\]+")
_ROUNDS = 8


class _NotJSON(ValueError):
    """NaN, Infinity or -Infinity: json.loads takes them, JSON (RFC 8259) has none."""


def _refuse_constant(name: str) -> object:
    raise _NotJSON(name)


def decode_json(raw: bytes | str) -> object:
    """The JSON of a body as received (a webhook's, a preview request's, a payload file's);
    PayloadError saying what is wrong with it, and where."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    # A small body with too few brackets to nest too deep costs two counts.
    if len(data) > _SHAPE_FROM or data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
        _check_shape(data)
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise PayloadError("not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except _NotJSON as exc:
        raise PayloadError(f"not JSON: {exc} (JSON has no NaN or Infinity)") from None
    except RecursionError:  # _check_shape let it through: cannot happen below MAX_JSON_DEPTH
        raise PayloadError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:  # the only other one json.loads raises: an integer too long to convert
        raise PayloadError(f"a number with more than {_MAX_INT_DIGITS} digits") from None


def _check_shape(data: bytes) -> None:
    depth, values = json_shape(data)
    if depth > MAX_JSON_DEPTH:
        raise PayloadError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels (an Alertmanager or Grafana body "
                           "has 4)")
    if len(data) > _SHAPE_FROM and values * MIN_BYTES_PER_VALUE > len(data):
        raise PayloadError(f"too many JSON values for the body's size: {values} in {len(data)} bytes, more than one "
                           f"per {MIN_BYTES_PER_VALUE} bytes (a webhook body has one per 12 or more)")


def json_shape(data: bytes) -> tuple[int, int]:
    """How deeply the arrays and objects of a JSON text nest (0 for a scalar), and about how
    many values it holds (its separators and brackets), with bytes methods and C-level
    iteration: nothing is decoded.

    Strings are taken out first, since what they hold is not structure: escapes go (so
    the only quotes left delimit strings), then everything but brackets, separators and
    quotes, then the quote pairs with nothing between them, then what lies between the
    quotes still left. Of the brackets that remain, each round takes out the innermost
    pairs, one level. For text that is not JSON the figures mean little; json.loads says
    what is wrong.
    """
    # Only a backslash right before a quote can hide one (an escaped quote, or an escaped
    # backslash that ends a string): without one the escapes can stay.
    marks = _ESCAPE.sub(b"", data) if b'\\"' in data else data
    marks = marks.translate(_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in marks:
        marks = b"".join(marks.split(b'"')[::2])
    values = marks.count(b"[") + marks.count(b",") + marks.count(b":")
    marks = marks.translate(None, b",:")
    depth = 0
    # Rounds are fastest for a real body (4 rounds over a few KB); a hostile one could
    # make each round cost its whole length, so after a few it is measured run by run.
    while marks and depth < _ROUNDS:
        inner = marks.replace(b"[]", b"")
        if len(inner) == len(marks):
            break
        marks, depth = inner, depth + 1
    return depth + _deepest_run_sum(marks), values


def _deepest_run_sum(marks: bytes) -> int:
    """The highest level a string of "[" and "]" reaches: runs of each kind alternate, so
    the levels are a running sum of run lengths with alternating signs (C-level calls only)."""
    runs = _RUNS.findall(marks)
    if not runs:
        return 0
    signs = cycle((1, -1) if runs[0][:1] == b"[" else (-1, 1))
    return max(0, max(accumulate(map(mul, map(len, runs), signs))))


def notification_identity(notification: Notification, alerts: list[Alert] | tuple[Alert, ...]) -> str:
    """A digest of what makes a notification the same one again.

    It leaves out what differs between the members of an Alertmanager HA pair (receiver,
    external URL) and what templates add; it keeps the group, its status and each
    alert's fingerprint, status, start and end (a firing alert's endsAt is zeroed at
    each flush, protocols.md B.2, so it is the same on both members).
    """
    # Plain text rather than JSON: this runs for every webhook. Only the group key can
    # hold any character, so it alone is quoted; the rows are hex, words and ISO times.
    rows = sorted(f"{a.fingerprint or fingerprint(a.labels)} {a.status} {_iso(a.starts_at)} {_iso(a.ends_at)}"
                  for a in alerts)
    status = "firing" if any(a.is_firing for a in alerts) else "resolved"
    head = json.dumps([notification.source, notification.group_key, status], ensure_ascii=False)
    return hashlib.sha256("\n".join([head, *rows]).encode("utf-8", "surrogatepass")).hexdigest()


def _iso(moment) -> str:
    return moment.isoformat() if moment is not None else ""


@dataclass(frozen=True)
class Accepted:
    alerts: int
    routed: Mapping[str, int] = field(default_factory=dict)     # bot -> alerts routed to it
    duplicates: frozenset[str] = frozenset()                    # bots that had it already

    def as_json(self) -> dict:
        # messages: per bot, 1 stored (it becomes one or more Feishu requests when sent), or
        # 0 when the bot has had this very notification already (delivery.dedupe_window).
        return {"status": "accepted", "alerts": self.alerts,
                "messages": {bot: int(bot not in self.duplicates) for bot in self.routed},
                "routed": dict(self.routed)}


@dataclass(frozen=True)
class Share:
    """One bot's share of a notification: its alerts' indices and the routes that sent them."""

    alerts: list[int] = field(default_factory=list)
    routed: bool = True
    # The routes that sent each alert to the bot, when routed here and now (rendering at
    # once); None for a stored message, whose routes are found again when it is rendered.
    routes: list[tuple[Route, ...]] | None = None


def route_shares(config: Config, notification: Notification, only_bot: str | None = None) -> dict[str, Share]:
    """Each bot's share of the alerts, in the notification's order.

    With only_bot (the /alertmanager/<bot> endpoints) the route tree is skipped:
    the sender has already routed.
    """
    bots, root = config.bots, config.route
    shares: dict[str, Share] = {}
    for i, alert in enumerate(notification.alerts):
        matched = {only_bot: ()} if only_bot is not None else routes_by_bot(root, alert.labels)
        for bot, routes in matched.items():
            # send_resolved: false drops resolved alerts, not the message (as Alertmanager does).
            if not alert.is_firing and not sends_resolved(bots[bot], routes):
                continue
            share = shares.get(bot)
            if share is None:
                share = shares[bot] = Share(routed=only_bot is None, routes=[])
            share.alerts.append(i)
            share.routes.append(routes)
    return shares


def outgoing(notification: Notification, payload: bytes, shares: Mapping[str, Share]) -> list[OutgoingMessage]:
    """One message per bot: the payload as received and which of its alerts are the bot's."""
    messages = []
    for bot, share in shares.items():
        alerts = [notification.alerts[i] for i in share.alerts]
        everything = len(alerts) == len(notification.alerts)
        messages.append(OutgoingMessage(
            bot=bot, group_key=notification.group_key, source=notification.source,
            identity=f"{notification_identity(notification, alerts)}:{bot}", payload=payload,
            alerts=None if everything else tuple(share.alerts), routed=share.routed))
    return messages


def store_messages(outbox: Outbox, messages: Iterable[OutgoingMessage], settings: DeliveryConfig,
                   log: logging.Logger, metrics: Metrics | None = None, health: WriteHealth | None = None) -> Stored:
    """Store the messages (all or none); raises StorageError when they could not be.
    Logs and counts what deduplication and coalescing dropped; tells `health` (for
    /-/ready) whether the store went through."""
    messages = list(messages)
    if not messages:
        return Stored()
    try:
        stored = outbox.store(messages, dedupe_window=settings.dedupe_window, coalesce=settings.coalesce)
    except StorageError as exc:
        if health is not None:
            health.failed(str(exc))
        raise
    if health is not None:
        health.stored()
    _count(log, metrics, lambda: _count_store(metrics, stored))
    for m in stored.duplicates:
        log.info("duplicate notification dropped (already stored within delivery.dedupe_window)",
                 extra={"event": "duplicate", "bot": m.bot, "group_key": m.group_key})
        _count(log, metrics, lambda m=m: metrics.duplicates.labels(m.bot).inc())
    for message_id, bot, group_key in stored.superseded:
        log.info("waiting message superseded by a newer one of its group",
                 extra={"event": "superseded", "bot": bot, "group_key": group_key, "message_id": message_id})
        _count(log, metrics, lambda bot=bot: metrics.superseded.labels(bot).inc())
    return stored


def _count_store(metrics: Metrics, stored: Stored) -> None:
    metrics.outbox_stores.inc()
    if stored.commits:
        metrics.outbox_commits.inc(stored.commits)


def _count(log: logging.Logger, metrics: Metrics | None, count: Callable[[], None]) -> None:
    """Count, if there are metrics. The messages are stored by now: a failure to count is
    logged, never answered as a failure to store (the sender would send it again)."""
    if metrics is None:
        return
    try:
        count()
    except Exception:
        log.exception("counting a metric failed", extra={"event": "metrics_failed"})


class Accept:
    """Route and store a parsed notification for one configuration (bootstrap.Runtime)."""

    def __init__(self, config: Config, outbox: Outbox, wake: Callable[[], None], logger: logging.Logger,
                 metrics: Metrics | None = None, health: WriteHealth | None = None):
        self.config = config
        self.outbox = outbox
        self.wake = wake
        self.health = health
        self.log = logger
        self.metrics = metrics

    def __call__(self, notification: Notification, payload: bytes, only_bot: str | None = None) -> Accepted:
        """Route and store (no rendering: that happens at send time, once per message);
        raises StorageError when the messages could not be stored."""
        shares = route_shares(self.config, notification, only_bot)
        stored = store_messages(self.outbox, outgoing(notification, payload, shares), self.config.delivery,
                                self.log, self.metrics, self.health)
        if stored.ids:
            self.wake()
        routed = {bot: len(share.alerts) for bot, share in shares.items()}
        # Debug, not info: one line per webhook is the busiest line there would be, and what
        # an operator follows is the message's own ("sent", "dry_run", "retry").
        self.log.debug("accepted", extra={"event": "accepted", "source": notification.source,
                                         "group_key": notification.group_key,
                                         "alerts": len(notification.alerts), "bots": routed})
        return Accepted(alerts=len(notification.alerts), routed=routed,
                        duplicates=frozenset(m.bot for m in stored.duplicates))
