"""The durable outbox: what was accepted, waiting for (or done with) its send.

records.py holds the records every layer above uses. `Outbox` below is what delivery,
the accept path, the CLI and the tests may ask of a store; a backend implements it
(store/sqlite/ today) and passes the contract suite, tests/store/test_contract*.py,
unchanged. `open_store` picks the backend from the configuration: sqlite/ (one file, the
processes of one host) or postgres/ (one database, any number of replicas).

A message's life: pending -> sending -> sent, or -> pending again (its next part, or a
retry), or -> dead (a dead letter, kept until `outbox retry`); a pending message can be
superseded by a newer state of its group. Times are seconds since the epoch, from the
store's clock.

What a backend must hold that SQLite gives for free, because it runs one write
transaction at a time for all processes (each is named again where it applies):

- the send order is the commit order, per bot (`store`, `retry`);
- dedupe and coalescing are atomic per bot (`store`);
- taking a lease is one conditional write (`acquire`);
- every write a sender makes after taking a message is fenced by its lease (`claim`,
  `set_bodies`, `mark_logged`, `mark_sent`, `reschedule`, `dead_letter`);
- prune never deletes what a kept row still refers to (`prune`);
- a send and what it changed about its group's card are written together (`mark_sent`).

App bots (issue 13) need a few things more, each as small as it could be: each group's
card (`card`, written by `mark_sent`), the app's access token shared by every process
(`app_token`, `keep_app_token`), the open_ids its contact API gave for emails, shared
the same way (`app_users`, `keep_app_users`), and rate windows shared by several bots
(`claim`'s windows: an app's, a chat's), checked and filled as one decision. A second backend implements them as below and
applies a CardChange with `CardChange.applied`, so that the backends agree.

Card actions (issue 14) keep per group what a tap needs and what was done from the card
(`remember_group`, `group_actions`, `claim_silence`, `settle_silence`, `expire_silence`,
`acknowledge`), and the callbacks' event ids (`first_event`); any process writes them,
with no lease. Making one silence at a time is
`claim_silence`: one conditional write, as `acquire` is.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol, Sequence, runtime_checkable

from ..clock import SYSTEM_CLOCK, Clock
from ..config import StorageConfig
from .records import (BotState, Card, CardChange, Entry, GroupActions, GroupTarget, Head, OutgoingMessage, Silence,
                      Stored, Takeover, Window)

# A dead process's lease lapses after this; renewed every LEASE_RENEW seconds while alive.
LEASE_TTL = 5.0
LEASE_RENEW = 1.0
# Send records needed: Feishu's longest window (60 s) plus slack.
SENDS_KEPT = 65.0
# A card unchanged this long is forgotten by prune. Feishu updates a card for 14 days
# (APP_UPDATE_WINDOW); a card past that is still worth knowing for a while: the group's
# next message then replaces it with a new card and points the old one's thread to it,
# and does not buzz again for the same firing, instead of starting over as a new group.
CARDS_KEPT = 30 * 86400.0
# A callback's event id is remembered this long: well past the window its time must be in
# (bridge.notify.feishu_app.callback.REPLAY_WINDOW, 5 minutes), so a replay is always caught.
EVENTS_KEPT = 3600.0


@runtime_checkable
class Outbox(Protocol):
    """The store of accepted messages, shared by every process that accepts or sends.

    Every method is one transaction: it happens entirely or not at all, and is visible
    to every other process once it returns. Failures raise StorageError with the reason
    (never the store's password); LeaseLost where said.
    """

    # The clock the store's times are on (leases, send windows, dedupe windows, ages):
    # whoever compares a stored time with "now" (a sender's pacing, the watcher's prune)
    # reads this one, so that every process sharing the store agrees.
    clock: Clock

    # -- lifecycle --------------------------------------------------------------------
    def open(self) -> None:
        """Connect (and create or migrate the schema) now, so a bad location shows at start-up."""
        ...

    def close(self) -> None:
        """Let go of what the calling thread holds (each thread closes its own)."""
        ...

    def describe(self) -> str:
        """Where the store is, for messages to an operator (a path; a DSN without its password)."""
        ...

    def writable_problem(self) -> str | None:
        """None when a write can be committed now (for /-/ready), else why not."""
        ...

    def wait_for_change(self, timeout: float) -> bool:
        """True as soon as another connection or process has committed since this thread's
        previous call; False after `timeout` seconds without one. A commit that does not
        matter to the caller may count (the caller looks again); one that does is never
        missed. The first call on a thread reports only commits made during the call."""
        ...

    # -- accepting --------------------------------------------------------------------
    def store(self, messages: Iterable[OutgoingMessage], *, dedupe_window: float = 0.0,
              coalesce: bool = False) -> Stored:
        """Store one notification's messages, all or none, durably committed on return
        (the webhook is answered 200 only after this).

        - Order: a bot's messages are sent (`head`) in the order their stores committed.
          A backend with concurrent writers must serialise stores per bot (SQLite's
          `MAX(seq) + 1` is only safe under its single writer): otherwise an earlier
          sequence number can commit after a later one was sent, and an older state of
          a group goes out after the newer one.
        - Dedupe (dedupe_window > 0): a message whose (bot, identity) was stored within
          the window is not stored again but returned in `duplicates`; "" never matches.
          An identity implies its bot and group_key (the callers make it so), so a
          backend may look for it among the rows of the message's group (SQLite does).
          Atomic per bot: the same identity stored at the same instant by two processes
          (an Alertmanager HA pair posting to two replicas) is stored exactly once.
        - Coalescing (coalesce): storing a message supersedes its group's pending
          messages for that bot (never one in flight), returned in `superseded`. Atomic
          per bot: of concurrent states of one group, exactly one stays pending.
        - A StorageError after a timeout may hide a commit that succeeds after all; the
          sender's retry of that 503 is then dropped as a duplicate, which is why a
          dedupe window of 0 is not a configuration the bridge accepts.
        """
        ...

    # -- the lease --------------------------------------------------------------------
    def bot_state(self, bot: str) -> BotState:
        """The bot's lease and retry pause (a BotState of defaults for a bot never seen)."""
        ...

    def acquire(self, bot: str, owner: str, ttl: float = LEASE_TTL) -> Takeover | None:
        """Take the bot's lease for `ttl` seconds if it is free, lapsed or already `owner`'s;
        None if another owner holds it. Taking it puts the bot's in-flight messages back
        to pending (their outcome is unknown: sent again, at least once) and ends the
        bot's open send records now.

        One conditional write: of two processes racing for a lapsed lease exactly one
        wins, and only the winner requeues. (Read-then-write is not enough with
        concurrent writers: both would win, and the second would put back a message
        the first had just claimed, which is then sent twice.)"""
        ...

    def renew(self, owner: str, ttl: float = LEASE_TTL) -> int:
        """Extend every lease `owner` holds to now + ttl; how many it holds."""
        ...

    def release(self, bot: str, owner: str) -> None:
        """Give the bot's lease up, if `owner` holds it."""
        ...

    # -- sending: every write is fenced by the lease -----------------------------------
    # A sender that lost its lease (it stalled; another process took the bot) must change
    # nothing of the new holder's: each write below is conditional on `owner` holding
    # the lease (claim, set_bodies, mark_logged) or the message (the settle writes, which
    # also touch the bot's pause and backoff only while `owner` holds the bot).

    def head(self, bot: str) -> Head | None:
        """The bot's next pending message in send order, or None."""
        ...

    def set_bodies(self, message_id: int, bot: str, owner: str, bodies: list[dict],
                   *, ttl: float = LEASE_TTL) -> bool:
        """Keep a message's rendered parts, so that every retry sends the same ones.
        False if it is no longer pending (superseded meanwhile); raises LeaseLost."""
        ...

    def recent_ends(self, bot: str, count: int) -> list[float]:
        """End times of the bot's `count` latest-ending requests (among at least the last
        SENDS_KEPT seconds of them), latest first; a request still open counts from its
        start. An end may lie in the future: a request whose outcome is unknown
        (`reschedule`'s in_flight)."""
        ...

    def claim(self, message_id: int, bot: str, owner: str, *, record: bool, ttl: float = LEASE_TTL,
              windows: Sequence[Window] = ()) -> int | None:
        """Mark the message in flight (and open a send record when `record`), checking and
        extending the lease in the same transaction. Returns the send record's id (0 when
        not recorded), None when the message is no longer pending; raises LeaseLost.

        `windows`: rate windows shared with other bots, in any process (an app's, a
        chat's: bridge.delivery.pacing). The request counts in each of them, from now
        until `seconds` after its send record ends (while open, as ending after all
        others). If one more request does not fit in one of them now, nothing changes and
        WindowFull says until when. Checking and counting are one decision across every
        process: two claims racing for a window's last place cannot both get it (a backend
        with concurrent writers serialises the claims of a window)."""
        ...

    def mark_logged(self, message_id: int, bot: str, owner: str, *, last: bool, record: bool,
                    ttl: float = LEASE_TTL) -> bool:
        """A dry-run bot's part is done, without an in-flight step; with `record` it counts
        against the rate limit like a request. False if no longer pending; raises LeaseLost."""
        ...

    def mark_sent(self, message_id: int, send_id: int, bot: str, owner: str, code: int | None, *,
                  last: bool = True, card: CardChange | None = None) -> bool:
        """A part went out: the message is sent with its `last` part, else pending for the
        next; the bot's backoff is reset. With `card`, what the part changed about its
        group's card (`CardChange.applied`) is written in the same transaction: a card
        posted but not remembered would be posted again, not updated. False (and nothing
        changed, the card neither) if `owner` no longer holds the message."""
        ...

    def reschedule(self, message_id: int, send_id: int, bot: str, owner: str, *, when: float, delay: float,
                   reason: str, code: int | None, detail: str, in_flight: float = 0.0) -> bool:
        """Back to pending; the whole bot pauses until `when` (later messages keep their
        place) and remembers `delay` for the next backoff. False (and nothing changed) if
        `owner` no longer holds the message.

        The send record ends `in_flight` seconds from now (on the store's clock), not now:
        a request whose outcome is unknown may still be in flight at Feishu, and counts in
        the rate windows (`recent_ends`) until then."""
        ...

    def dead_letter(self, message_id: int, send_id: int, bot: str, owner: str, *, reason: str,
                    code: int | None, detail: str, in_flight: float = 0.0) -> bool:
        """A dead letter, kept (with what it needs to be rendered again) until retried.
        False if `owner` no longer holds the message. `in_flight` as for `reschedule`."""
        ...

    # -- app bots ---------------------------------------------------------------------
    def card(self, bot: str, group_key: str) -> Card | None:
        """The group's card on the bot, or None (none sent yet, or forgotten by prune).
        Written only through mark_sent, so only by the bot's lease holder."""
        ...

    def app_token(self, key: str) -> tuple[str, float] | None:
        """The access token kept for an app (`key`: its Open API base URL and app_id) and
        when it expires, or None. Any process reads and writes it, with no lease: a token
        is valid for every process, and two kept at once are both valid (Feishu hands out
        a new one beside the old: bridge.notify.feishu_app.tokens)."""
        ...

    def keep_app_token(self, key: str, token: str, expires: float) -> None:
        """Keep `token` for the app until `expires`, replacing what was kept. It is a secret:
        never listed, logged or shown by `outbox list`."""
        ...

    def app_users(self, key: str, emails: Sequence[str]) -> dict[str, tuple[str | None, float]]:
        """What is kept for those of `emails` the app (`key`, as for tokens) looked up:
        email -> (open_id, or None for "not found", until when), expired ones included
        until prune (the caller compares with its clock). Any process, no lease."""
        ...

    def keep_app_users(self, key: str, users: Mapping[str, tuple[str | None, float]]) -> None:
        """Keep each email's (open_id or None, until when) for the app, replacing what was
        kept; one transaction. Two processes keeping the same email at once: either wins
        (both asked Feishu the same question)."""
        ...

    # -- card actions (bridge.actions; any process, no lease) ------------------------
    def remember_group(self, bot: str, group_key: str, target: GroupTarget, *, fresh: bool) -> GroupActions:
        """Keep `target` for the group's card (its first part is being sent) and answer
        what was done from it; `fresh` (a new card for a new firing) forgets that first."""
        ...

    def group_actions(self, ref: str) -> GroupActions | None:
        """The group whose buttons carry `ref` (records.group_ref), or None (forgotten)."""
        ...

    def claim_silence(self, ref: str, hold: float) -> bool:
        """True for the one caller that may make a silence for the group now: none is in
        force, and no other claim is younger than `hold` seconds. Atomic across processes
        (a double tap makes one silence). The claim ends with settle_silence."""
        ...

    def settle_silence(self, ref: str, silence: Silence | None) -> None:
        """End a claim: with the silence made, or None when none was."""
        ...

    def expire_silence(self, ref: str, silence_id: str) -> None:
        """The group's silence `silence_id` was expired: forget it (no other one)."""
        ...

    def acknowledge(self, ref: str, by: str) -> None:
        """`by` is on it, as of now (the latest acknowledgement wins)."""
        ...

    def first_event(self, event_id: str) -> bool:
        """True the first time a Feishu callback's event id is noted, by any process; False
        for a replay. Kept EVENTS_KEPT (longer than the callbacks' time window)."""
        ...

    # -- operating (the CLI's `outbox list` and `outbox retry`, metrics, the watcher) ---
    def list(self, dead: bool | None = None) -> list[Entry]:
        """Messages still in the store, in send order: dead letters (dead=True), waiting
        ones (False), or both."""
        ...

    def entry(self, message_id: int) -> Entry | None:
        """One message in whatever state it is (sent and superseded too, until pruned)."""
        ...

    def retry(self, message_id: int) -> int:
        """Queue a dead letter again, as if just accepted (a fresh age, the back of its bot's
        queue in the same order as `store`), rendered afresh from its payload; 1, or 0 if
        there is no such dead letter."""
        ...

    def retry_all_dead(self) -> int:
        """`retry` every dead letter, oldest first; how many."""
        ...

    def depths(self) -> list[tuple[str, int, float]]:
        """(bot, messages waiting, age of the oldest in seconds) for bots with any waiting."""
        ...

    def prune(self, before: float) -> int:
        """Forget sent and superseded messages that ended before `before` (dead letters
        stay), payloads no message needs any more, cards (and their groups' actions)
        unchanged for CARDS_KEPT, and expired app tokens and looked-up users; how many
        messages went.

        It must never delete what a kept row refers to: a pending, in-flight or dead
        message keeps its payload (a retried dead letter is rendered from it), and a row
        kept only for dedupe lets go of its payload when it is done. Every process may
        prune at the same time; it must be safe to."""
        ...


def open_store(storage: StorageConfig, *, clock: Clock | None = None) -> Outbox:
    """The store the configuration names: the PostgreSQL database of storage.postgres, or
    the SQLite file at storage.path. Its times are on `clock` when one is given (tests
    step one), else on the backend's own: the database's clock for PostgreSQL (replicas
    on several machines must agree), this host's for SQLite (one host)."""
    # Imported when chosen, not with this module: a backend imports this module (for the
    # lease constants), and a backend's driver need not be installed unless it is used.
    if storage.postgres is not None:
        from .postgres import PostgresOutbox

        return PostgresOutbox(storage.postgres, clock=clock, sync_commit=storage.sync == "always")
    from .sqlite import SqliteOutbox

    assert storage.path is not None
    return SqliteOutbox(storage.path, clock=clock or SYSTEM_CLOCK,
                        sync_interval=storage.sync_interval if storage.sync == "interval" else None)
