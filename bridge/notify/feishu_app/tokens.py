"""The app's tenant_access_token: fetched once, shared by every worker and replica through
the store, refreshed ahead of expiry.

Feishu's rules (../shared/feishu-app-protocol.md §1.1, CONFIRMED): a token lives at most
2 h; asking again while 30 min or more are left returns the same token; with less left
it returns a new one and the old stays valid until it expires. So a token cached until
TOKEN_REFRESH_AHEAD (10 min, the official SDK's margin) before its expiry is always
valid when used, and any process that refetches early gets the same token back or a
new one that works beside the old: processes never invalidate each other's tokens.

Sharing through the store (`TokenStore`, which bridge.store.Outbox implements) still
matters: without it every worker of every replica fetches its own, N times the calls to
an endpoint whose rate limit is UNCONFIRMED, and a refused secret shows up N times. On
top of the store each process keeps the token in memory until it is due, so a send
costs no store read.

A call answered "token invalid" (99991663 and kin) drops the token (from memory, and from
the store if it still holds that one) and fetches afresh, once: `Tokens.refused`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from ...clock import Clock
from ...errors import StorageError
from ...limits import TOKEN_REFRESH_AHEAD


class TokenStore(Protocol):
    """Where tokens are shared between processes (bridge.store.Outbox implements it)."""

    def app_token(self, key: str) -> tuple[str, float] | None:
        """(token, expires) kept for `key`, or None."""
        ...

    def keep_app_token(self, key: str, token: str, expires: float) -> None:
        """Keep `token` for `key` until `expires`, replacing what was kept. Two processes
        refreshing at once may each keep theirs: both tokens are valid (see above)."""
        ...


class MemoryTokens:
    """A TokenStore for one process: send-test, the tests."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def app_token(self, key: str) -> tuple[str, float] | None:
        with self._lock:
            return self._tokens.get(key)

    def keep_app_token(self, key: str, token: str, expires: float) -> None:
        with self._lock:
            self._tokens[key] = (token, expires)


@dataclass(frozen=True)
class Fetched:
    token: str
    expires: float     # on the clock, not Feishu's `expire` (seconds left)


# Fetches a token for an app: a Fetched, or raises TokenRefused carrying Feishu's answer.
Fetch = Callable[[], Fetched]


class TokenRefused(Exception):
    """No token: Feishu's answer (or the network's) says why; it carries the SendResult."""

    def __init__(self, result: object):
        super().__init__(getattr(result, "reason", "token refused"))
        self.result = result


class Tokens:
    """Tokens by app (key: the Open API's base URL and the app_id), from memory, the store, or Feishu."""

    def __init__(self, store: TokenStore, clock: Clock):
        self._store = store
        self._clock = clock
        self._memo: dict[str, tuple[str, float]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def token(self, key: str, fetch: Fetch) -> str:
        """A token that stays valid for at least TOKEN_REFRESH_AHEAD; raises TokenRefused."""
        found = self._usable(self._memo.get(key))
        if found is not None:
            return found
        with self._lock(key):   # one fetch per app per process at a time
            found = self._usable(self._memo.get(key)) or self._usable(self._stored(key), remember=key)
            if found is not None:
                return found
            return self._fetch(key, fetch)

    def refused(self, key: str, bad: str, fetch: Fetch) -> str:
        """Feishu refused `bad`: a fresh token (not `bad`); raises TokenRefused."""
        with self._lock(key):
            memo = self._memo.get(key)
            if memo is not None and memo[0] != bad and self._usable(memo):
                return memo[0]   # another thread refreshed meanwhile
            self._memo.pop(key, None)
            stored = self._stored(key)
            kept = self._usable(stored)
            if stored is not None and kept is not None and kept != bad:
                self._memo[key] = stored   # another process refreshed meanwhile
                return kept
            return self._fetch(key, fetch)

    def _fetch(self, key: str, fetch: Fetch) -> str:
        fetched = fetch()
        self._memo[key] = (fetched.token, fetched.expires)
        try:
            self._store.keep_app_token(key, fetched.token, fetched.expires)
        except StorageError:
            pass   # the token works without the store; the others fetch their own meanwhile
        return fetched.token

    def _stored(self, key: str) -> tuple[str, float] | None:
        try:
            return self._store.app_token(key)
        except StorageError:
            return None   # a store that cannot be read must not stop sending: fetch instead

    def _usable(self, kept: tuple[str, float] | None, remember: str | None = None) -> str | None:
        if kept is None or kept[1] - TOKEN_REFRESH_AHEAD <= self._clock.now():
            return None
        if remember is not None:
            self._memo[remember] = kept
        return kept[0]

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())
