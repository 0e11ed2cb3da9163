"""A connection as the worker (worker.py) keeps it: the request being read in its event
loop, the reader that hands those bytes to gunicorn's parser, the loop's own answers, and
closing without blocking the loop.
"""

from __future__ import annotations

import json
import selectors
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn

from .framing import RequestScan

if TYPE_CHECKING:
    from .worker import BufferingWorker

LINGER_SECONDS = 2.0         # how long a closing connection's unread bytes are drained (as gunicorn's)
DRAIN_SIZE = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES = {400: "Bad Request", 403: "Forbidden", 408: "Request Timeout", 413: "Content Too Large",
            414: "URI Too Long", 417: "Expectation Failed", 431: "Request Header Fields Too Large",
            501: "Not Implemented"}


@dataclass
class Reading:
    """A request being read in the loop."""

    scan: RequestScan
    buf: bytearray
    deadline: float
    reserved: int = 0            # bytes of the worker's budget this request holds
    left: float | None = None    # while it waits for the budget: what was left of its read_timeout


class Conn(TConn):
    """gthread's connection, with the state of the request being read."""

    reading: Reading | None = None
    registered = False
    complete = True              # the request handed to a thread was all buffered
    continued = False            # the loop sent "100 Continue" for the current request
    reserved = 0                 # budget bytes to give back once the request is answered

    def __init__(self, worker: BufferingWorker, *args):
        super().__init__(*args)
        self.worker = worker

    def close(self, graceful: bool = False) -> None:
        if graceful and self.worker.buffering:
            self.worker.lingering.add(self.sock)   # called in the loop (gthread's finish_request)
        else:
            super().close(graceful)


class Prefilled(SocketUnreader):
    """gunicorn's socket reader, serving first the bytes the loop has read, a piece at a time.

    Not gunicorn's unread(): it keeps what it is given in one buffer that every read then
    copies whole, which for a 10 MiB body sent in small chunks never finished.
    """

    def __init__(self, sock: socket.socket, data: bytearray):
        super().__init__(sock)
        self.data, self.offset = data, 0

    def keep_rest(self) -> None:
        """After a request: what is left unserved (the start of a pipelined next request) joins
        gunicorn's own buffer, behind what was read back into it, where gthread looks for it."""
        if self.data:
            self.buf.seek(0, 2)
            self.buf.write(self.data[self.offset:])
            self.data, self.offset = b"", 0

    def chunk(self, size_hint: int | None = None) -> bytes:
        if not self.data:
            return super().chunk(size_hint)
        size = max(self.mxchunk, min(size_hint or 0, self.max_body_chunk))
        piece = bytes(self.data[self.offset:self.offset + size])
        self.offset += len(piece)
        if self.offset >= len(self.data):
            self.data, self.offset = b"", 0   # all served: the buffer can go before the app decodes the body
        return piece


class Lingering:
    """Connections being closed after the peer has read what was sent (RFC 9112 section 9.6):
    half-closed, then drained of what the peer still sends until it closes, for
    LINGER_SECONDS at most. In the loop: gunicorn's close_graceful blocks for that long."""

    def __init__(self, poller: selectors.BaseSelector):
        self.poller = poller
        self.until: dict[socket.socket, float] = {}

    def add(self, sock: socket.socket) -> None:
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (OSError, ValueError, KeyError):
            sock.close()
            return
        self.until[sock] = time.monotonic() + LINGER_SECONDS

    def expire(self, now: float) -> None:
        for sock in [s for s, deadline in self.until.items() if deadline <= now]:
            self._close(sock)

    def _drain(self, sock: socket.socket) -> None:
        try:
            if sock.recv(DRAIN_SIZE):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        self.until.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()


def answer(status: int, reason: str) -> bytes:
    """A whole response the loop sends by itself, in the app's shape ({"error": reason})."""
    body = json.dumps({"error": reason}).encode()
    head = (f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what fits now (a short answer always does); a client that is gone gets nothing."""
    try:
        sock.send(data)
    except OSError:
        pass
