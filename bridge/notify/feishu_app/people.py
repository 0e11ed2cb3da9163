"""People known by email, as open_ids: looked up through the app's contact API, remembered.

`POST /open-apis/contact/v3/users/batch_get_id?user_id_type=open_id` with the emails
(../shared/feishu-app-protocol.md §8.1, CONFIRMED): each found entry's `user_id` is the
open_id. An open_id is per app (§8.1: "open_id cross app"), so they are remembered per
app. An email not found (its entry without a user_id, or no entry: the shape is
UNCONFIRMED, both are handled) is remembered as unknown for a shorter while, so a typo
costs one lookup an hour, not one per urgent.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from ...clock import Clock
from ..outcome import Outcome, SendResult

if TYPE_CHECKING:
    from ...config import App

KNOWN_FOR = 86400.0      # an open_id does not change; a day bounds a person who left
UNKNOWN_FOR = 3600.0
BATCH = 50               # "最多 50 条" per list in the v1 API; the v3 maximum is UNCONFIRMED (§8.1)

# Looks emails up: (the call's answer, its data).
Lookup = Callable[[list[str]], tuple[SendResult, dict]]


class People:
    def __init__(self, clock: Clock):
        self._clock = clock
        self._known: dict[tuple[str, str], tuple[str | None, float]] = {}   # (app, email) -> (open_id, until)
        self._lock = threading.Lock()

    def open_ids(self, app: App, emails: list[str], lookup: Lookup) -> tuple[list[str], list[str], SendResult | None]:
        """(open_ids found, emails not found, the failed lookup's answer or None)."""
        now = self._clock.now()
        found: list[str] = []
        unknown: list[str] = []
        wanted: list[str] = []
        with self._lock:
            for email in dict.fromkeys(emails):
                kept = self._known.get((app.app_id, email))
                if kept is None or kept[1] <= now:
                    wanted.append(email)
                elif kept[0] is None:
                    unknown.append(email)
                else:
                    found.append(kept[0])
        for start in range(0, len(wanted), BATCH):
            batch = wanted[start:start + BATCH]
            answer, data = lookup(batch)
            if answer.outcome is not Outcome.SENT:
                return found, unknown + wanted[start:], answer
            ids = _ids(data)
            with self._lock:
                for email in batch:
                    open_id = ids.get(email)
                    self._known[(app.app_id, email)] = (open_id, now + (KNOWN_FOR if open_id else UNKNOWN_FOR))
                    (found if open_id else unknown).append(open_id or email)
        return found, unknown, None


def _ids(data: dict) -> dict[str, str]:
    users = data.get("user_list")
    found = {}
    for entry in users if isinstance(users, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("email"), str) and isinstance(entry.get("user_id"), str) \
                and entry["user_id"]:
            found[entry["email"]] = entry["user_id"]
    return found
