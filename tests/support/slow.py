"""Hostile and broken clients, held open against a server from one thread, and timed probes.

Used by tests/test_slow_clients.py and bench/slow_clients.py. Each kind is what a slow or
broken client does to a connection:

    headers   the request head one byte at a time, never finished (slowloris)
    body      a whole head announcing 64 KiB of body, then the body one byte at a time
    idle      connects and sends nothing
    tls       a TLS ClientHello on the plain-HTTP port, then waits for the server's answer
    chunked   a chunked body cut off in its first chunk, the connection left open

A connection the server closes is opened again at the next tick (as slowloris does), so
about `count` stay open all along; how long each was held, and what the server answered,
are recorded.
"""

from __future__ import annotations

import errno
import http.client
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

KINDS = ("headers", "body", "idle", "tls", "chunked")

_HEAD = (b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
         b"User-Agent: slow-client\r\n")
# A TLS 1.2 ClientHello record as a client's first flight starts: the record header
# (handshake, TLS 1.0 record version), the handshake header and a body of zeros. The
# server only has to see that it is not HTTP.
_CLIENT_HELLO = b"\x16\x03\x01\x00\x2f\x01\x00\x00\x2b\x03\x03" + bytes(32) + b"\x00\x00\x02\x00\x2f\x01\x00"


def _first_flight(kind: str) -> bytes:
    """What a connection of `kind` sends at once, before trickling."""
    if kind == "body":
        return _HEAD + b"Content-Length: 65536\r\n\r\n" + b'{"receiver": "'
    if kind == "tls":
        return _CLIENT_HELLO
    if kind == "chunked":
        return _HEAD + b"Transfer-Encoding: chunked\r\n\r\n400\r\n" + b'{"receiver": "slow'
    return b""


def _trickle(kind: str, sent: int) -> bytes:
    """The next byte a connection of `kind` sends, `sent` bytes into its trickle; b"" for none."""
    if kind == "headers":
        endless = _HEAD + b"X-Slow: " + b"a" * 4000
        return endless[sent % len(endless):][:1]
    if kind == "body":
        return b"a"
    return b""


@dataclass
class _Conn:
    sock: socket.socket
    opened: float
    sent: int = 0
    answer: bytes = b""


@dataclass
class Held:
    """What happened to the slow connections so far."""

    opened: int = 0
    refused: int = 0                                          # connections the server did not accept
    closed_by_server: int = 0
    held_seconds: list[float] = field(default_factory=list)   # open -> server closed, per closed one
    answers: Counter = field(default_factory=Counter)         # the status line the server sent, if any


class SlowClients:
    """`count` connections of one kind to 127.0.0.1:port, trickling a byte each per `interval`."""

    def __init__(self, port: int, kind: str, count: int, *, interval: float = 1.0, reconnect: bool = True):
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        self.port, self.kind, self.count, self.interval, self.reconnect = port, kind, count, interval, reconnect
        self.held = Held()
        self._selector = selectors.DefaultSelector()
        self._closed = 0          # connections to open again at the next tick
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"slow-{kind}", daemon=True)

    def __enter__(self) -> SlowClients:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, settle: float = 0.5) -> None:
        for _ in range(self.count):
            self._open()
        self._thread.start()
        time.sleep(settle)   # let the server accept them before anything is measured

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    def open_now(self) -> int:
        return len(self._selector.get_map())

    def snapshot(self) -> Held:
        with self._lock:
            return Held(self.held.opened, self.held.refused, self.held.closed_by_server,
                        list(self.held.held_seconds), Counter(self.held.answers))

    def _open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex(("127.0.0.1", self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(code, f"cannot connect to 127.0.0.1:{self.port}")
        conn = _Conn(sock, time.monotonic())
        self._selector.register(sock, selectors.EVENT_READ, conn)
        first = _first_flight(self.kind)
        if first:
            self._send(conn, first, blocking=True)
        with self._lock:
            self.held.opened += 1

    def _send(self, conn: _Conn, data: bytes, *, blocking: bool = False) -> None:
        try:
            if blocking:
                conn.sock.setblocking(True)
                conn.sock.sendall(data)
                conn.sock.setblocking(False)
            else:
                conn.sock.send(data)
        except OSError:
            pass   # the server closed it: the reader sees that

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=max(0.0, next_tick - time.monotonic())):
                self._readable(key.fileobj, key.data)
            if time.monotonic() >= next_tick:
                next_tick += self.interval
                reopen, self._closed = self._closed, 0
                for _ in range(reopen):
                    try:
                        self._open()
                    except OSError:
                        with self._lock:
                            self.held.refused += 1
                for key in list(self._selector.get_map().values()):
                    conn = key.data
                    byte = _trickle(self.kind, conn.sent)
                    if byte:
                        self._send(conn, byte)
                        conn.sent += 1

    def _readable(self, sock: socket.socket, conn: _Conn) -> None:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            conn.answer += data[:512 - len(conn.answer)]
            return
        self._selector.unregister(sock)
        sock.close()
        with self._lock:
            self.held.closed_by_server += 1
            self.held.held_seconds.append(time.monotonic() - conn.opened)
            status = conn.answer.split(b"\r\n", 1)[0].decode("latin-1") if conn.answer else "(no answer)"
            self.held.answers[status] += 1
        if self.reconnect:
            self._closed += 1


def timed_request(port: int, method: str, path: str, body: bytes | None = None, *,
                  timeout: float = 10.0) -> tuple[float, int | str]:
    """(seconds, status) of one request on a new connection; status is the error's name on failure."""
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", "Connection": "close"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        status: int | str = answer.status
    except (OSError, http.client.HTTPException) as exc:
        status = type(exc).__name__
    finally:
        conn.close()
    return time.monotonic() - began, status
