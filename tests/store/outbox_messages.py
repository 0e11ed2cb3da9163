"""What the store tests store, and the clock they step (shared by the contract suite and
each backend's own tests)."""

from __future__ import annotations

from bridge.store import Outbox
from bridge.store.records import OutgoingMessage


class SteppedClock:
    """A bridge.clock.Clock that moves only when a test steps it."""

    def __init__(self, start: float = 1_000_000.0):
        self.t = start

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    def step(self, seconds: float) -> None:
        self.t += seconds


def msg(n: int, bot: str = "ops", group: str = "g1", identity: str = "", parts: int = 1) -> OutgoingMessage:
    """A message stored already rendered, in `parts` parts."""
    return OutgoingMessage(bot=bot, group_key=group, source="alertmanager", identity=identity,
                           bodies=tuple({"msg_type": "text", "content": {"text": f"m{n} {i}/{parts}"}}
                                        for i in range(1, parts + 1)))


def payload_message(bot: str, payload: bytes, group: str = "g1", identity: str = "") -> OutgoingMessage:
    """A message as accepting stores it: the webhook body, rendered when it is sent."""
    return OutgoingMessage(bot=bot, group_key=group, source="alertmanager", identity=identity, payload=payload)


def state(outbox: Outbox, message_id: int) -> str | None:
    """The message's state, in any state; None once it is pruned (or never was)."""
    entry = outbox.entry(message_id)
    return None if entry is None else entry.state
