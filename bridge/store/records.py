"""What the store holds and hands out: plain records, shared by the store's interface, its
backends, the accept path that writes messages and the senders that read them."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

# A message's states. pending -> sending -> sent | pending (retry) | dead; a pending one
# can be superseded by a newer state of its group.
PENDING, SENDING, SENT, DEAD, SUPERSEDED = "pending", "sending", "sent", "dead", "superseded"
WAITING = (PENDING, SENDING)


@dataclass(frozen=True)
class OutgoingMessage:
    """One message for one bot: its share of one notification, stored as received.

    It is rendered when it is sent (`Pipeline.render_stored`), once, into one or more
    Feishu requests (parts): the accept path only parses, routes and stores, and a
    message superseded while it waits is never rendered at all.
    """

    bot: str
    group_key: str
    source: str
    # The same notification delivered twice (an Alertmanager retry, each member of an HA
    # pair) gets the same identity, so the outbox keeps one; "" turns deduplication off.
    # Two messages of one identity always have the same bot and group_key.
    identity: str = ""
    payload: bytes | None = None              # the webhook body (JSON) as received
    alerts: tuple[int, ...] | None = None     # the bot's alerts in it (indices); None: all
    routed: bool = True                       # False: /<source>/<bot>, the route tree skipped
    bodies: tuple[dict, ...] | None = None    # already rendered instead (send-test, tests)


class LeaseLost(Exception):
    """This process no longer holds the bot's lease: another may be sending for it."""


@dataclass(frozen=True)
class Window:
    """A rate window that several bots' requests count in (an app's, a chat's: Outbox.claim):
    at most `limit` requests in any `seconds`. A request counts from when it was claimed
    until `seconds` after it ended; while open, as ending later than any other (it may
    arrive at Feishu at any moment until its answer comes)."""

    key: str
    limit: int
    seconds: float

    def opens(self, ends: list[float | None], now: float) -> float | None:
        """None if one more request may start at `now` beside requests that ended at
        `ends` (None: still open); else the earliest time it may (inf: when an open
        request ends, which no one knows yet)."""
        inside = sorted((math.inf if e is None else e for e in ends if e is None or e > now - self.seconds),
                        reverse=True)
        if len(inside) < self.limit:
            return None
        return inside[self.limit - 1] + self.seconds


class WindowFull(Exception):
    """A shared window has no room now (Outbox.claim): nothing was changed."""

    def __init__(self, key: str, until: float):
        super().__init__(f"rate window {key} is full until {until}")
        self.key, self.until = key, until


def check_windows(windows: Sequence[Window], now: float, ends_of: Callable[[str, float], list[float | None]]) -> None:
    """Raise WindowFull unless one more request fits in each of `windows` now: the rule
    every backend applies, each reading the requests with its own query. `ends_of(key,
    since)` answers the ends (None: still open) of the requests of `key` that ended after
    `since` or are still open; a request left open longer than SENDS_KEPT (its process
    died, and no takeover closed it: its bot is gone from the config) is left out there."""
    for key in dict.fromkeys(w.key for w in windows):
        ends = ends_of(key, now - max(w.seconds for w in windows if w.key == key))
        untils = [u for w in windows if w.key == key and (u := w.opens(ends, now)) is not None]
        if untils:
            raise WindowFull(key, max(untils))


@dataclass(frozen=True)
class Entry:
    """One stored message as `outbox list` shows it: no body, no URL, no secret."""

    id: int
    bot: str
    group_key: str
    state: str
    part: int                 # the part being sent next (or last), 1-based
    parts: int                # 0 until rendered (at its first send)
    attempts: int
    created: float
    next_attempt: float
    reason: str | None
    code: int | None
    detail: str | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Head:
    """The next message a bot's sender should send."""

    id: int
    group_key: str
    source: str
    payload: bytes | None     # the notification as received; None for a message stored rendered
    alerts: tuple[int, ...] | None   # the bot's alerts in it (indices); None: all
    routed: bool              # False: posted to /<source>/<bot>, the route tree was skipped
    bodies: list[dict] | None # the rendered parts (unsigned); None until rendered
    sent: int                 # parts already sent
    attempts: int
    created: float

    @property
    def part(self) -> int:
        return self.sent + 1

    @property
    def parts(self) -> int:
        return len(self.bodies) if self.bodies is not None else 0


@dataclass(frozen=True)
class BotState:
    owner: str | None = None
    expires: float = 0.0
    paused_until: float = 0.0  # no request before this (a retry's backoff)
    backoff: float = 0.0       # the last retry delay, for the next one's jitter


@dataclass(frozen=True)
class Takeover:
    previous: str | None       # the owner whose lease lapsed, None if it was free
    requeued: int              # its in-flight messages, pending again


@dataclass
class Stored:
    ids: list[int] = field(default_factory=list)
    duplicates: list[OutgoingMessage] = field(default_factory=list)
    superseded: list[tuple[int, str, str]] = field(default_factory=list)   # (id, bot, group_key)
    # 1 for the store that made the commit, 0 for one that shared another's (group commit):
    # summed, the number of commits.
    commits: int = 1


# -- app bots: an alert group's living card (bridge.delivery.appbot) ----------------------
@dataclass(frozen=True)
class CardPart:
    message_id: str           # Feishu's id of the message (om_...)
    sent: float               # when it was posted: Feishu updates it for 14 days from then


@dataclass(frozen=True)
class Card:
    """An alert group's card on one app bot, as the chat shows it: one message per part.

    `firing` are the fingerprints of the alerts the card shows firing; `closed` that it
    shows the group resolved (the group's next firing gets a new card); `buzzed` that
    urgent went out (or was refused for good) for the group's current firing."""

    parts: tuple[CardPart, ...] = ()
    firing: tuple[str, ...] = ()
    closed: bool = False
    buzzed: bool = False
    updated: float = 0.0      # when it last changed: prune forgets it CARDS_KEPT on

    # The row every backend keeps (parts, firing, closed, buzzed, updated; the first two as
    # JSON text): one encoding, so that a row means the same in each backend.
    def stored(self) -> tuple[str, str, bool, bool, float]:
        return (json.dumps([[p.message_id, p.sent] for p in self.parts]), json.dumps(list(self.firing)),
                self.closed, self.buzzed, self.updated)

    @classmethod
    def from_stored(cls, row: tuple) -> Card:
        parts, firing, closed, buzzed, updated = row
        return cls(tuple(CardPart(m, t) for m, t in json.loads(parts)), tuple(json.loads(firing)), bool(closed),
                   bool(buzzed), updated)


@dataclass(frozen=True)
class CardChange:
    """What one request of an app bot's message changed about its group's card, written
    with the request's outcome (`Outbox.mark_sent`), so that neither is kept without the
    other. Applied in this order: reopen, fresh, the part, buzzed, shown, parts."""

    group_key: str
    reopen: bool = False                 # a new firing after a resolved card: forget firing, closed, buzzed
    fresh: bool = False                  # this message's cards are new ones: forget the earlier parts
    part: int | None = None              # this part's message is now `message_id`, posted just now
    message_id: str | None = None
    buzzed: bool = False                 # urgent went out (or was refused for good) for this firing
    shown: tuple[str, ...] | None = None  # the firing alerts the card shows now (empty: resolved, closed)
    parts: int | None = None             # the card now has this many parts (later ones were stubbed)

    def applied(self, card: Card | None, now: float) -> Card:
        """`card` (None: the group has none yet) with this change made at `now`: the one
        rule every backend applies, so that they agree."""
        card = card or Card()
        parts, firing, closed, buzzed = list(card.parts), card.firing, card.closed, card.buzzed
        if self.reopen:
            firing, closed, buzzed = (), False, False
        if self.fresh:
            parts = []
        if self.part is not None and self.message_id is not None:
            posted = CardPart(self.message_id, now)
            if self.part < len(parts):
                parts[self.part] = posted
            else:   # parts are sent in order: this is the next one
                parts.append(posted)
        buzzed = buzzed or self.buzzed
        if self.shown is not None:
            firing, closed = self.shown, not self.shown
        if self.parts is not None:
            parts = parts[:self.parts]
        return Card(tuple(parts), tuple(firing), closed, buzzed, now)


# -- card actions: what was done from a group's card (bridge.actions) ------------------------
def group_ref(bot: str, group_key: str) -> str:
    """The short id a card's buttons carry for its group (bot and group key, hashed: a
    group key can be long, and a button value should stay small, §7)."""
    return hashlib.sha256(f"{bot}\n{group_key}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


@dataclass(frozen=True)
class GroupTarget:
    """What a tap on a group's card needs, written when its first part is sent: the chat,
    where and how to silence the group (its source, externalURL and groupLabels), and the
    card as rendered (without the action lines), to answer a tap with."""

    chat: str
    source: str                          # alertmanager | grafana
    external_url: str
    matchers: dict[str, str]             # the group's groupLabels: one equality matcher each
    body: dict                           # the first part's message as rendered


@dataclass(frozen=True)
class GroupActions:
    """A group's target and what people did from its card: who acknowledged it, and the
    silence made from it (id, by whom, until when, its page). Forgotten with its card."""

    ref: str
    bot: str
    group_key: str
    target: GroupTarget
    acked_by: str | None = None
    acked_at: float | None = None
    silence_id: str | None = None
    silenced_by: str | None = None
    silenced_until: float | None = None
    silence_url: str | None = None

    def silenced(self, now: float) -> bool:
        return self.silence_id is not None and (self.silenced_until or 0.0) > now

    # The columns every backend keeps, in this order (matchers and body as JSON text), and
    # their decoding: one encoding, as for Card.
    COLUMNS = ("ref, bot, group_key, chat, source, external_url, matchers, body, acked_by, acked_at, silence_id,"
               " silenced_by, silenced_until, silence_url")

    @classmethod
    def from_stored(cls, row: tuple) -> GroupActions:
        ref, bot, group_key, chat, source, external_url, matchers, body, *rest = row
        return cls(ref, bot, group_key, GroupTarget(chat, source, external_url, json.loads(matchers), json.loads(body)),
                   *rest)


@dataclass(frozen=True)
class Silence:
    """A silence made from a card (GroupActions' fields)."""

    silence_id: str
    by: str
    until: float
    url: str
