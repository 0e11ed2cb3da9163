"""The outbox contract with several processes at once: what SQLite gets from its single
writer, and any other backend must build (see bridge.store.Outbox). Each thread opens
the store on its own (`connect`): to the store, another process.

Runs once per backend in conftest.BACKENDS; a new backend must pass it unchanged."""

from __future__ import annotations

import threading
import time
from typing import Callable

from bridge.store import LEASE_TTL, Outbox
from bridge.store.records import SENDING, SUPERSEDED
from outbox_messages import msg, state

WINDOW = 600.0


def race(connect: Callable[[], Outbox], *actions: Callable[[Outbox], object]) -> list:
    """Run each action on its own connection, in its own thread, released together."""
    stores = [connect() for _ in actions]
    gate = threading.Barrier(len(actions))
    results: list = [None] * len(actions)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            gate.wait(timeout=10)
            results[i] = actions[i](stores[i])
        except BaseException as exc:   # reported in the test's thread
            errors.append(exc)
        finally:
            stores[i].close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(actions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


def test_two_processes_racing_for_a_lapsed_lease_one_wins_and_only_it_requeues(outbox, connect, clock):
    def take(owner: str) -> Callable[[Outbox], tuple]:
        def take(store: Outbox) -> tuple:
            takeover = store.acquire(bot, owner)
            # The winner starts sending at once: a loser that also requeued would put
            # this message back to pending, and it would be sent twice.
            claimed = takeover is not None and store.claim(message_id, bot, owner, record=True)
            return owner, takeover, claimed
        return take

    for round_ in range(15):
        bot = f"bot{round_}"
        (message_id,) = outbox.store([msg(round_, bot=bot)]).ids
        outbox.acquire(bot, "dead")
        outbox.claim(message_id, bot, "dead", record=True)
        clock.step(LEASE_TTL + 0.1)
        results = race(connect, take("x"), take("y"))
        winners = [(owner, takeover, claimed) for owner, takeover, claimed in results if takeover is not None]
        assert len(winners) == 1, results
        owner, takeover, claimed = winners[0]
        assert takeover.previous == "dead" and takeover.requeued == 1 and claimed
        assert state(outbox, message_id) == SENDING and outbox.bot_state(bot).owner == owner


def test_the_same_notification_stored_by_two_processes_at_once_is_stored_once(connect):
    def store(identity: str) -> Callable[[Outbox], int]:
        return lambda s: len(s.store([msg(1, identity=identity)], dedupe_window=WINDOW).ids)

    for round_ in range(15):
        identity = f"ha-pair:{round_}"
        assert sorted(race(connect, store(identity), store(identity))) == [0, 1]


def test_of_two_states_of_one_group_stored_at_once_only_one_stays_pending(outbox, connect):
    def new_state(s: Outbox) -> int:
        return s.store([msg(1, group="g")], coalesce=True).ids[0]

    for _ in range(15):
        ids = race(connect, new_state, new_state)
        waiting = [e.id for e in outbox.list(dead=False)]
        assert len(waiting) == 1 and waiting[0] in ids, "both states of the group would be sent"
        assert all(state(outbox, i) == SUPERSEDED for i in ids if i != waiting[0])


def test_a_bots_messages_leave_in_the_order_they_were_stored_while_others_store(outbox, connect):
    """Two processes store for one bot while a sender drains it: each process's messages
    leave in the order it stored them, and every message leaves exactly once."""
    stored: dict[str, list[int]] = {}
    sent: list[int] = []
    done = threading.Event()

    def store(tag: str) -> Callable[[Outbox], None]:
        def store(s: Outbox) -> None:
            stored[tag] = [s.store([msg(n, group=f"{tag}{n}")]).ids[0] for n in range(40)]
        return store

    def drain(s: Outbox) -> None:
        s.acquire("ops", "sender")
        while True:
            head = s.head("ops")
            if head is None:
                if done.is_set() and s.head("ops") is None:
                    return
                time.sleep(0.001)
                continue
            s.mark_sent(head.id, s.claim(head.id, "ops", "sender", record=False), "ops", "sender", 0)
            sent.append(head.id)

    sender = threading.Thread(target=lambda: race(connect, drain))
    sender.start()
    try:
        race(connect, store("x"), store("y"))
    finally:
        done.set()
        sender.join(timeout=60)
    assert sorted(sent) == sorted(stored["x"] + stored["y"])
    for ids in stored.values():
        assert [i for i in sent if i in ids] == ids
    assert outbox.list() == []


# -- noticing other processes ---------------------------------------------------------------

def test_wait_for_change_wakes_on_another_processes_commit_and_times_out_without_one(outbox, connect):
    other = connect()
    outbox.wait_for_change(0)                      # where things stand
    assert outbox.wait_for_change(0.05) is False    # nothing committed since

    other.store([msg(1)])
    assert outbox.wait_for_change(5) is True
    assert outbox.wait_for_change(0.05) is False

    def later() -> None:
        time.sleep(0.2)
        other_thread = connect()
        other_thread.store([msg(2)])
        other_thread.close()

    threading.Thread(target=later).start()
    began = time.monotonic()
    assert outbox.wait_for_change(10) is True      # while it waits
    assert time.monotonic() - began < 5
