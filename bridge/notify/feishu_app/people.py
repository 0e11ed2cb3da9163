"""People known by email, as open_ids: looked up through the app's contact API, remembered
in the store, so that every worker and replica shares one answer.

`POST /open-apis/contact/v3/users/batch_get_id?user_id_type=open_id` with the emails
(../shared/feishu-app-protocol.md §8.1, CONFIRMED): each found entry's `user_id` is the
open_id. An open_id is per app (§8.1: "open_id cross app"), so answers are kept per app
(the key tokens use: the Open API's base URL and the app_id). An email not found (its
entry without a user_id, or no entry: the shape is UNCONFIRMED, both are handled) is kept
as unknown. How long each answer holds:

- found, KNOWN_FOR (7 days): an employee's open_id for an app never changes, so asking
  again only matters for an email that changes hands, or a person who left (with
  `include_resigned: false` they stop resolving; until then an urgent names them as not
  buzzed, as Feishu no longer finds them in the chat). A week bounds both at one lookup
  per email, app and week.
- not found, UNKNOWN_FOR (15 minutes): a typo in users: costs four lookups an hour, not
  one per urgent, and a person just added to the app's contacts range is found within
  15 minutes.
- a lookup that failed (the network, a rate limit, a missing scope) is not kept: the next
  urgent asks again, so a transient failure never stands for "not found".

The store (`UserStore`, which bridge.store.Outbox implements) may fail: then the lookup
is made anyway and its answer used once, as the tokens do.
"""

from __future__ import annotations

import threading
from typing import Callable, Mapping, Protocol, Sequence

from ...clock import Clock
from ...errors import StorageError
from ..outcome import Outcome, SendResult

KNOWN_FOR = 7 * 86400.0
UNKNOWN_FOR = 900.0
BATCH = 50               # "最多 50 条" per list in the v1 API; the v3 maximum is UNCONFIRMED (§8.1)

# Looks emails up: (the call's answer, its data).
Lookup = Callable[[list[str]], tuple[SendResult, dict]]


class UserStore(Protocol):
    """Where looked-up emails are shared between processes (bridge.store.Outbox)."""

    def app_users(self, key: str, emails: Sequence[str]) -> dict[str, tuple[str | None, float]]:
        ...

    def keep_app_users(self, key: str, users: Mapping[str, tuple[str | None, float]]) -> None:
        ...


class MemoryUsers:
    """A UserStore for one process: send-test, the tests."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, str], tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def app_users(self, key: str, emails: Sequence[str]) -> dict[str, tuple[str | None, float]]:
        with self._lock:
            return {e: self._kept[(key, e)] for e in emails if (key, e) in self._kept}

    def keep_app_users(self, key: str, users: Mapping[str, tuple[str | None, float]]) -> None:
        with self._lock:
            self._kept.update(((key, e), kept) for e, kept in users.items())


class People:
    def __init__(self, store: UserStore, clock: Clock):
        self._store = store
        self._clock = clock
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def open_ids(self, key: str, emails: list[str], lookup: Lookup) -> tuple[list[str], list[str], SendResult | None]:
        """(open_ids found, emails not found, the failed lookup's answer or None) for the
        app `key`. One lookup per app and process at a time: a second thread asking for
        the same emails meanwhile finds the first one's answer in the store."""
        with self._lock(key):
            found, unknown, wanted = self._kept(key, list(dict.fromkeys(emails)))
            for start in range(0, len(wanted), BATCH):
                batch = wanted[start:start + BATCH]
                answer, data = lookup(batch)
                if answer.outcome is not Outcome.SENT:
                    return found, unknown + wanted[start:], answer
                ids = _ids(data)
                now = self._clock.now()
                self._keep(key, {e: (ids.get(e), now + (KNOWN_FOR if e in ids else UNKNOWN_FOR)) for e in batch})
                for email in batch:
                    (found if email in ids else unknown).append(ids.get(email, email))
            return found, unknown, None

    def _kept(self, key: str, emails: list[str]) -> tuple[list[str], list[str], list[str]]:
        """(open_ids kept, emails kept as not found, emails to look up)."""
        try:
            kept = self._store.app_users(key, emails) if emails else {}
        except StorageError:
            kept = {}   # a store that cannot be read must not stop an urgent: look them up
        now = self._clock.now()
        found, unknown, wanted = [], [], []
        for email in emails:
            open_id, until = kept.get(email, (None, 0.0))
            if until <= now:
                wanted.append(email)
            elif open_id is None:
                unknown.append(email)
            else:
                found.append(open_id)
        return found, unknown, wanted

    def _keep(self, key: str, users: dict[str, tuple[str | None, float]]) -> None:
        try:
            self._store.keep_app_users(key, users)
        except StorageError:
            pass   # used this once; the next urgent looks them up again

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def _ids(data: dict) -> dict[str, str]:
    users = data.get("user_list")
    found = {}
    for entry in users if isinstance(users, list) else ():
        if isinstance(entry, dict) and isinstance(entry.get("email"), str) and isinstance(entry.get("user_id"), str) \
                and entry["user_id"]:
            found[entry["email"]] = entry["user_id"]
    return found
