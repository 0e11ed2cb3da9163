"""One long connection per app, all on the SDK's event loop, in this one thread.

Why one loop and not a thread or a process per app: lark-oapi keeps its event loop in a
module-level variable made at import (lark_oapi/ws/client.py `loop`), and `Client.start()`
runs it with `run_until_complete`; clients started in several threads would all drive that
one loop, which only one thread may run (larksuite/oapi-sdk-python#119). A process per app
would work but costs the SDK's import each time: about 180 MB and 2 s (measured here). On
one loop the clients are independent (each its own socket, lock and reconnect state).
Taps are handled one at a time whatever the layout: the SDK calls the handler
synchronously from the loop, so the handler's own deadline keeps each answer within
Feishu's 3 s.

What of the SDK is used besides its constructor, and why (tests/test_events*.py run
against the real SDK, pinned to its 1.7 series in pyproject):
- `Client._connect()` for the first connection, instead of `start()`: `start()` retries a
  failed first connection forever (every 120 s, silently to anyone not reading its log),
  where this process must exit with a message so that a wrong secret or an unreachable
  Feishu shows at once. After it, the SDK's own reconnects apply (`auto_reconnect`, with
  the counts and intervals Feishu's endpoint sends it).
- `Client._ping_loop()`, as `start()` schedules it; `Client._disconnect()` at shutdown.
- `Client._get_conn_url()`, wrapped so that its `requests.post` gets a timeout.
- `Client._handle_data_frame()`, wrapped so that a tap Feishu sends as a `type=card`
  frame, which the SDK drops without an answer (§6.6 caveat 2), is dispatched like an
  `event` frame and logged once as a warning.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
from pathlib import Path
from typing import Callable, Sequence

import lark_oapi as lark
import requests
from lark_oapi.ws import client as ws_client
from lark_oapi.ws.exception import ClientException, ServerException

from ..clock import SYSTEM_CLOCK, Clock
from ..config import App
from ..errors import BridgeError
from ..metrics import Metrics
from .sdklog import redact

DOMAINS = {"feishu": lark.FEISHU_DOMAIN, "lark": lark.LARK_DOMAIN}
# How often the liveness file is touched (the chart's probe allows several misses).
HEARTBEAT_EVERY = 10.0
# Beyond this without a connection the process exits 1 and is restarted by whoever runs
# it: a few of the SDK's own tries (jitter up to 30 s, then one every 120 s by default),
# and the only way out when the SDK has given up (its reconnect count runs out in a task
# nobody awaits, and the client stays down silently).
MAX_DISCONNECTED = 600.0
# The endpoint call's connect and read timeout (the SDK sets none).
ENDPOINT_TIMEOUT = 15.0
_ERRNO = re.compile(r"\[Errno -?\d+\][^'\")]*")


class _TimedRequests:
    """What the SDK's client module calls `requests` (it calls only `requests.post`), with
    a timeout: the SDK's endpoint call has none, so a host that accepts and never answers
    would hold the first connection, or a reconnect inside the event loop, for ever."""

    def __init__(self, timeout: float):
        self.timeout = timeout

    def post(self, url, **kwargs):
        kwargs.setdefault("timeout", self.timeout)
        return requests.post(url, **kwargs)


class _Client(ws_client.Client):
    """The SDK's client, with a timeout on its endpoint call and `type=card` data frames
    dispatched like `type=event` ones."""

    def __init__(self, *args, on_card_frame: Callable[[], None], endpoint_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._on_card_frame = on_card_frame
        self._timed_requests = _TimedRequests(endpoint_timeout)

    def _get_conn_url(self) -> str:
        # Swapped for the call only: synchronous, on the one thread that runs the SDK's loop.
        saved, ws_client.requests = ws_client.requests, self._timed_requests
        try:
            return super()._get_conn_url()
        finally:
            ws_client.requests = saved

    async def _handle_data_frame(self, frame) -> None:
        for header in frame.headers:
            if header.key == ws_client.HEADER_TYPE and header.value == ws_client.MessageType.CARD.value:
                self._on_card_frame()
                header.value = ws_client.MessageType.EVENT.value
        await super()._handle_data_frame(frame)


class LongConnections:
    """`apps`' long connections. `run()` blocks until `stop()` or a signal; raises
    BridgeError, with what went wrong in words, when a first connection fails, or with
    `retry_connect` logs that and tries again that many seconds later (a container beside
    the server: its restarts would make the pod unready, and take the webhooks with it)."""

    def __init__(self, apps: Sequence[App], handler_for: Callable[[App], lark.EventDispatcherHandler],
                 log: logging.Logger, *, heartbeat: Path | None = None, clock: Clock = SYSTEM_CLOCK,
                 max_disconnected: float = MAX_DISCONNECTED, heartbeat_every: float = HEARTBEAT_EVERY,
                 retry_connect: float | None = None, endpoint_timeout: float = ENDPOINT_TIMEOUT,
                 metrics: Metrics | None = None):
        self.log = log
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.clock = clock
        self.max_disconnected = max_disconnected
        self.heartbeat_every = heartbeat_every
        self.retry_connect = retry_connect   # None: a failed first connection raises
        self.connected: list[_Client] = []
        self.endpoint_timeout = endpoint_timeout
        self.loop = ws_client.loop       # the SDK's: its clients schedule their tasks on it
        self.down_since: dict[str, float] = {}
        self.failure: str | None = None
        self._card_frames_seen = False
        self._stop = asyncio.Event()
        level = lark.LogLevel.DEBUG if log.isEnabledFor(logging.DEBUG) else lark.LogLevel.INFO
        self.clients = {app.name: self._client(app, handler_for(app), level) for app in apps}
        self.apps = {app.name: app for app in apps}
        for name in self.apps:
            self._gauge(name, 0)     # down until its first connection opens: a scrape shows the app at once

    def _client(self, app: App, handler: lark.EventDispatcherHandler, level) -> _Client:
        client = _Client(app.app_id, app.app_secret.reveal(), log_level=level, event_handler=handler,
                         domain=domain_of(app), auto_reconnect=True, on_card_frame=self._card_frame,
                         endpoint_timeout=self.endpoint_timeout)
        client.on_reconnecting = lambda: self._down(app.name)
        client.on_reconnected = lambda: self._up(app.name)
        return client

    def run(self, *, signals: bool = True) -> int:
        """0 after a stop; 1 when a connection stayed down past max_disconnected."""
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.loop.add_signal_handler(sig, self._stop.set)
        try:
            return self.loop.run_until_complete(self._main())
        finally:
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self.loop.remove_signal_handler(sig)
            self.loop.run_until_complete(self._shutdown())

    async def _main(self) -> int:
        self.loop.create_task(self._watch())      # the heartbeat, from the start
        for name, client in self.clients.items():
            if not await self._connect_first(name, client):
                return 0                          # stopped while waiting for Feishu
            self.connected.append(client)
            self.loop.create_task(client._ping_loop())
        await self._stop.wait()
        return 1 if self.failure else 0

    async def _connect_first(self, name: str, client: _Client) -> bool:
        """False when stopped before the connection opened; raises BridgeError unless
        retry_connect is set, in which case it logs and tries again."""
        while True:
            try:
                await self._first_connect(name, client)
                return True
            except BridgeError as exc:
                if self.retry_connect is None:
                    raise
                self.log.error(str(exc), extra={"event": "events_connect_failed", "app": name,
                                                "retry_in": self.retry_connect})
            try:
                await asyncio.wait_for(self._stop.wait(), self.retry_connect)
                return False
            except asyncio.TimeoutError:
                pass

    def stop(self) -> None:
        """From any thread."""
        self.loop.call_soon_threadsafe(self._stop.set)

    async def _first_connect(self, name: str, client: _Client) -> None:
        app = self.apps[name]
        where = domain_of(app)
        try:
            await client._connect()
        except requests.RequestException as exc:
            raise BridgeError(f"app {name}: cannot reach Feishu's long-connection endpoint at {where}: "
                              f"{_reason(exc)}") from None
        except ClientException as exc:
            raise BridgeError(f"app {name}: Feishu refused the long connection (code {exc.code}: "
                              f"{redact(str(exc.args[0] if exc.args else ''))}); check apps[].app_id and "
                              "app_secret, and that the app is a self-built app whose callbacks are set to "
                              "the long connection (README: Card taps over the long connection)") from None
        except ServerException as exc:
            raise BridgeError(f"app {name}: Feishu's long-connection endpoint at {where} failed (code {exc.code}: "
                              f"{redact(str(exc.args[0] if exc.args else ''))})") from None
        except Exception as exc:   # the websocket's own errors are many; each one is this
            raise BridgeError(f"app {name}: cannot open the long connection that {where} offered: "
                              f"{type(exc).__name__}: {redact(str(exc))}") from None
        self._gauge(name, 1)
        self.log.info("long connection open", extra={"event": "events_connected", "app": name, "domain": where})

    def _gauge(self, name: str, value: int) -> None:
        if self.metrics is not None:
            self.metrics.long_connection_up.labels(name).set(value)

    def _down(self, name: str) -> None:
        self.down_since.setdefault(name, self.clock.monotonic())
        self._gauge(name, 0)
        if self.metrics is not None:
            self.metrics.long_connection_reconnects.labels(name).inc()
        self.log.warning("long connection lost; the SDK reconnects", extra={"event": "events_disconnected",
                                                                          "app": name})

    def _up(self, name: str) -> None:
        self.down_since.pop(name, None)
        self._gauge(name, 1)
        self.log.info("long connection open again", extra={"event": "events_reconnected", "app": name})

    def _card_frame(self) -> None:
        if not self._card_frames_seen:
            self._card_frames_seen = True
            self.log.warning("Feishu sent a tap as a card frame, which the SDK would drop; dispatched like an "
                             "event frame (README: what to check on a real tenant)",
                             extra={"event": "events_card_frame"})

    async def _watch(self) -> None:
        while not self._stop.is_set():
            now = self.clock.monotonic()
            for name, since in list(self.down_since.items()):
                if now - since > self.max_disconnected:
                    self.failure = f"app {name}: no long connection for {now - since:.0f}s"
                    self.log.error("long connection down too long; exiting so that it is restarted",
                                   extra={"event": "events_down", "app": name, "seconds": round(now - since)})
                    self._stop.set()
                    return
            if self.heartbeat is not None:
                self.heartbeat.touch()   # its mtime: the chart's liveness probe reads it
            try:
                await asyncio.wait_for(self._stop.wait(), self.heartbeat_every)
            except asyncio.TimeoutError:
                pass

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        # The receive loops too: cancelled, they end without reconnecting (the SDK catches
        # Exception, not the CancelledError it gets).
        tasks = [t for t in asyncio.all_tasks(self.loop) if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close(self.connected)

    async def _close(self, clients: list[_Client]) -> None:
        for client in clients:
            try:
                await client._disconnect()
            except Exception as exc:   # closing at exit; say so and go on
                self.log.warning("closing a long connection failed", extra={"event": "events_close_failed",
                                                                           "error": redact(str(exc))})


def domain_of(app: App) -> str:
    """Where the SDK asks for its websocket: the app's base_url (a private deployment, or a
    test's fake) or its domain's Open API host."""
    return app.base_url_override or DOMAINS[app.domain]


def _reason(exc: requests.RequestException) -> str:
    """The socket's own words ("[Errno 111] Connection refused"), not urllib3's nesting."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    found = _ERRNO.search(str(exc))
    return redact(found.group(0).strip()) if found else f"{type(exc).__name__}: {redact(str(exc))[:200]}"
