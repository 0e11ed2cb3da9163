"""What the store holds and hands out: plain records, shared by the store's interface, its
backends, the accept path that writes messages and the senders that read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
    identity: str = ""
    payload: bytes | None = None              # the webhook body (JSON) as received
    alerts: tuple[int, ...] | None = None     # the bot's alerts in it (indices); None: all
    routed: bool = True                       # False: /<source>/<bot>, the route tree skipped
    bodies: tuple[dict, ...] | None = None    # already rendered instead (send-test, tests)


class LeaseLost(Exception):
    """This process no longer holds the bot's lease: another may be sending for it."""


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
