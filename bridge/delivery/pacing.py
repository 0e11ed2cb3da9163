"""Send pacing: Feishu's sliding windows (a bot's own, and an app's and a chat's that
several bots share), and the backoff between retries.

Pure functions over numbers; the outbox keeps the state (send times, the last delay)
so that every process, and a process that takes over a bot, sees the same.

Why windows are measured from when a request *ended*: Feishu counts arrivals, which we
cannot see. A request arrives after it started and before its answer came back, so
spacing the start of a request one window after the *end* of the request `limit`
places back keeps the arrivals spaced by at least the window, whatever the network
delay was. Sends of one bot are sequential (one sender at a time), so this costs one
round trip per window at most. A request that got no answer may arrive (or be carried
out) later still: its end is recorded delivery.backoff_unknown after the bridge gave up
(bridge.delivery.outcomes), so it keeps its place until Feishu is assumed done with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..config import Bot, RateLimit
from ..limits import APP_PER_MINUTE, APP_PER_SECOND, APP_RATE_PER_SECOND
from ..store.records import Window

SECOND = 1.0
MINUTE = 60.0
# A shared window can be full of requests still open (other bots', in other processes),
# which end within their read_timeout but no one knows when: look again this often.
OPEN_POLL = 0.05
# Feishu's window edges are not documented and its clock is not ours; a hair of slack
# keeps an arrival that lands exactly on the edge from counting in both windows.
EDGE_SLACK = 0.01


@dataclass(frozen=True)
class Windows:
    """The lengths of Feishu's two windows, in seconds. Only tests use others (a 6-second
    "minute" makes the minute window observable in seconds instead of minutes)."""

    second: float = SECOND
    minute: float = MINUTE


FEISHU_WINDOWS = Windows()


def next_allowed(recent_ends: list[float], limit: RateLimit, now: float,
                 windows: Windows = FEISHU_WINDOWS) -> float:
    """The earliest time the next request may start.

    `recent_ends` are the end times of this bot's latest requests, newest first, at
    least `limit.per_minute` of them when there are that many.
    """
    allowed = now
    for count, window in ((limit.per_second, windows.second), (limit.per_minute, windows.minute)):
        if len(recent_ends) >= count:
            # With `count` requests already inside the window, the next one must wait until
            # the oldest of them has left it.
            allowed = max(allowed, recent_ends[count - 1] + window + EDGE_SLACK)
    return allowed


def shared_windows(bot: Bot, windows: Windows = FEISHU_WINDOWS) -> tuple[Window, ...]:
    """The windows an app bot's requests count in besides its own (Outbox.claim checks and
    fills them as one decision, across every process and replica): its app's, 50/s and
    1000/min for all its bots and APIs together, and its chat's, 5/s for every bot of
    the bridge posting into it (Feishu's per-group limit is shared by the group's bots).
    Keyed by the Open API's address too: an app or chat id means nothing across
    deployments. A custom bot has none: its limits are its own."""
    if bot.app is None or bot.chat_id is None:
        return ()
    where = bot.app.base_url
    app, chat = f"app:{where}|{bot.app.app_id}", f"chat:{where}|{bot.chat_id}"
    second, minute = windows.second + EDGE_SLACK, windows.minute + EDGE_SLACK
    return (Window(app, APP_PER_SECOND, second), Window(app, APP_PER_MINUTE, minute),
            Window(chat, APP_RATE_PER_SECOND, second))


def backoff(previous: float, base: float, cap: float, rng: random.Random) -> float:
    """The next retry delay: "decorrelated jitter" (AWS Architecture Blog, "Exponential
    Backoff And Jitter", 2015): random between base and three times the last delay,
    capped. Jitter spreads the retries of many bots after a shared outage.

    Retry policy rather than rate limiting; it lives here because it is the other
    half of "when may this bot's next request start"."""
    return min(cap, rng.uniform(base, max(base, previous * 3)))
