"""The rate windows several bots share (an app's, a chat's: issue 13), through Outbox.claim.

A request counts in each window it was claimed with from the claim until the window's
length after its send record ends; while open, as ending after every other. A claim that
does not fit changes nothing and says until when. Claims racing for a window's last place
from several processes: exactly as many win as there are places.

Runs once per backend in conftest.BACKENDS; a new backend must pass it unchanged."""

from __future__ import annotations

import math

import pytest

from bridge.store import SENDS_KEPT
from bridge.store.records import PENDING, SENDING, Window, WindowFull
from outbox_messages import msg, state
from test_contract_concurrent import race

CHAT = Window("chat:oc_1", 2, 1.0)
APP_SECOND, APP_MINUTE = Window("app:cli_1", 3, 1.0), Window("app:cli_1", 4, 60.0)


def bots_with_a_message(outbox, *bots: str, ttl: float = 1000.0) -> dict[str, int]:
    """One pending message per bot, each bot's lease held by an owner of its name."""
    ids = {}
    for bot in bots:
        (ids[bot],) = outbox.store([msg(1, bot=bot)]).ids
        outbox.acquire(bot, bot, ttl)
    return ids


def claim(outbox, ids: dict[str, int], bot: str, *windows: Window) -> int | None:
    return outbox.claim(ids[bot], bot, bot, record=True, ttl=1000.0, windows=windows)


def test_bots_sharing_a_window_get_its_places_and_the_next_waits_until_one_frees(outbox, clock):
    ids = bots_with_a_message(outbox, "a", "b", "c")
    sends = {bot: claim(outbox, ids, bot, CHAT) for bot in ("a", "b")}
    with pytest.raises(WindowFull) as full:
        claim(outbox, ids, "c", CHAT)
    assert full.value.key == CHAT.key and full.value.until == math.inf      # two open: no one knows
    assert state(outbox, ids["c"]) == PENDING and outbox.recent_ends("c", 5) == []   # nothing changed

    clock.step(0.2)
    outbox.mark_sent(ids["a"], sends["a"], "a", "a", 0)
    a_ended = clock.now()
    clock.step(0.3)
    outbox.mark_sent(ids["b"], sends["b"], "b", "b", 0)
    with pytest.raises(WindowFull) as full:
        claim(outbox, ids, "c", CHAT)
    assert full.value.until == pytest.approx(a_ended + 1.0)      # a leaves the window first
    clock.step(a_ended + 1.0 - clock.now() + 0.001)
    assert claim(outbox, ids, "c", CHAT)
    assert state(outbox, ids["c"]) == SENDING


def test_a_request_counts_in_every_window_it_was_claimed_with_and_only_those(outbox, clock):
    ids = bots_with_a_message(outbox, *"abcdef")
    for bot in "abc":
        outbox.mark_sent(ids[bot], claim(outbox, ids, bot, APP_SECOND, APP_MINUTE), bot, bot, 0)
    with pytest.raises(WindowFull):                  # 3 a second for the app
        claim(outbox, ids, "d", APP_SECOND, APP_MINUTE, Window("chat:oc_9", 5, 1.0))
    assert claim(outbox, ids, "d", CHAT)             # another window: not counted there
    clock.step(1.1)
    outbox.mark_sent(ids["e"], claim(outbox, ids, "e", APP_SECOND, APP_MINUTE), "e", "e", 0)
    with pytest.raises(WindowFull) as full:          # 4 a minute for the app
        claim(outbox, ids, "f", APP_SECOND, APP_MINUTE)
    assert full.value.until > clock.now() + 58


def test_an_end_in_the_future_keeps_the_place_until_then(outbox, clock):
    """A request whose outcome is unknown (reschedule's in_flight) may still arrive."""
    ids = bots_with_a_message(outbox, "a", "b", "c")
    for bot in ("a", "b"):
        send = claim(outbox, ids, bot, CHAT)
        outbox.reschedule(ids[bot], send, bot, bot, when=clock.now() + 1, delay=1, reason="timeout", code=None,
                          detail="ReadTimeout", in_flight=30.0)
    clock.step(20)
    with pytest.raises(WindowFull) as full:
        claim(outbox, ids, "c", CHAT)
    assert full.value.until == pytest.approx(clock.now() - 20 + 31)


def test_a_request_left_open_by_a_process_that_died_stops_counting_after_sends_kept(outbox, clock):
    ids = bots_with_a_message(outbox, "a", "b", "c")
    claim(outbox, ids, "a", CHAT)
    claim(outbox, ids, "b", CHAT)
    clock.step(SENDS_KEPT + 1)       # never settled, and their bots never taken over
    assert claim(outbox, ids, "c", CHAT)


def test_old_requests_leave_the_windows_as_they_leave_the_bots_records(outbox, clock):
    ids = bots_with_a_message(outbox, "a", "b")
    outbox.mark_sent(ids["a"], claim(outbox, ids, "a", CHAT), "a", "a", 0)
    outbox.mark_sent(ids["b"], claim(outbox, ids, "b", CHAT), "b", "b", 0)
    clock.step(SENDS_KEPT + 1)
    (later,) = outbox.store([msg(2, bot="a")]).ids
    send = outbox.claim(later, "a", "a", record=True, ttl=1000.0, windows=[CHAT])
    assert send
    outbox.mark_sent(later, send, "a", "a", 0)
    assert outbox.recent_ends("a", 5) == [clock.now()]      # the old one forgotten


def test_processes_racing_for_a_windows_places_get_exactly_as_many_as_it_has(outbox, connect, clock):
    bots = [f"r{i}" for i in range(8)]
    window = Window("chat:oc_race", 3, 1.0)
    for round_ in range(3):
        ids = bots_with_a_message(outbox, *[f"{b}-{round_}" for b in bots])

        def take(bot: str):
            def take(store):
                try:
                    return store.claim(ids[bot], bot, bot, record=True, ttl=1000.0, windows=[window])
                except WindowFull:
                    return None
            return take

        won = [r for r in race(connect, *[take(bot) for bot in ids]) if r]
        assert len(won) == 3, f"round {round_}: {len(won)} claims got the window's 3 places"
        clock.step(100)     # all three open ones stop counting (SENDS_KEPT), the next round starts afresh
