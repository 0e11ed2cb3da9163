"""The gunicorn worker: gthread, except that a connection gets a thread only once its whole
request has arrived.

gunicorn's gthread worker hands a new connection to one of its threads, which then blocks
reading the request. A client that sends its head a byte at a time (slowloris), a TLS
handshake on this plain-HTTP port or a chunked body cut short each held a thread for as
long as the client liked: with the default 2 workers x 4 threads, ten such connections
silenced the webhooks and /-/healthy (issue 17). Here the worker's event loop, the selector
gthread already runs for its kept-alive connections, reads each request into a buffer and
submits it to the thread pool only when framing.RequestScan says it is all there. Threads
run the app and never wait on a client.

What a connection may cost while it is read:
- time: the whole request must arrive within server.read_timeout of the connection's
  accept (or of its first byte, on a kept-alive connection), or it is answered 408 and
  closed; a connection that sent nothing is closed without an answer.
- memory: a head may take HEAD_LIMIT bytes, and a request ALLOWANCE bytes in all; a
  larger one first reserves what its body may take (its Content-Length, or up to
  server.max_body_bytes when chunked) in a budget of BUDGET_REQUESTS such requests per
  worker, held until a thread takes the request. A request that does not fit waits,
  unread (TCP pushes back on its client), its read_timeout clock stopped, until earlier
  ones leave; it holds nothing of the budget meanwhile, so the budget cannot deadlock.
- closing: gthread closes a connection with a blocking drain of up to 2 s in its event
  loop (gunicorn.util.close_graceful); here the drain is another event in the loop.

With TLS, HTTP/2, the uwsgi protocol or the PROXY protocol configured through
GUNICORN_CMD_ARGS, requests are not buffered (gthread's own behaviour), with a warning.
"""

from __future__ import annotations

import errno
import json
import selectors
import socket
import time
from dataclasses import dataclass

from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.gthread import TConn, ThreadWorker

from ..config import ServerConfig
from .framing import HEAD_LIMIT, TRAILER_LIMIT, RequestScan, Verdict

ALLOWANCE = 16 * 1024        # a small webhook, head and body: never waits for the budget
BUDGET_REQUESTS = 2          # max-size requests a worker holds at once, buffered or waiting for a thread
READ_SIZE = 256 * 1024
LINGER_SECONDS = 2.0         # how long a closing connection's unread bytes are drained (as gunicorn's)
SWEEP_SECONDS = 0.25         # how often deadlines are checked
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_PHRASES = {400: "Bad Request", 408: "Request Timeout", 413: "Content Too Large", 431: "Request Header Fields Too Large"}


@dataclass
class _Reading:
    """A request being read in the loop."""

    scan: RequestScan
    buf: bytearray
    deadline: float
    reserved: int = 0            # bytes of the worker's budget this request holds
    left: float | None = None    # while paused: what was left of the read_timeout


class _Conn(TConn):
    """gthread's connection, with the state of the request being read."""

    reading: _Reading | None = None
    registered = False
    complete = True              # the request handed to a thread was all buffered
    continued = False            # the loop sent "100 Continue" for the current request
    reserved = 0                 # budget bytes to release when a thread takes the request

    def __init__(self, worker: BufferingWorker, *args):
        super().__init__(*args)
        self.worker = worker

    def close(self, graceful: bool = False) -> None:
        if graceful and self.worker.buffering:
            self.worker.linger(self.sock)   # called in the loop (gthread's finish_request)
        else:
            super().close(graceful)


class _Prefilled(SocketUnreader):
    """gunicorn's socket reader, serving first the bytes the loop has read, a piece at a time.

    Not gunicorn's unread(): it keeps what it is given in one buffer that every read then
    copies whole, which for a 10 MiB body sent in small chunks never finished.
    """

    def __init__(self, sock: socket.socket, data: bytearray):
        super().__init__(sock)
        self.data, self.offset = data, 0

    def chunk(self, size_hint: int | None = None) -> bytes:
        if self.offset >= len(self.data):
            self.data = b""   # the request's buffer can go now
            return super().chunk(size_hint)
        size = max(self.mxchunk, min(size_hint or 0, self.max_body_chunk))
        piece = bytes(self.data[self.offset:self.offset + size])
        self.offset += len(piece)
        return piece


class BufferingWorker(ThreadWorker):
    """gthread, with requests read in the event loop before a thread takes them."""

    buffering = False

    def load_wsgi(self) -> None:
        super().load_wsgi()
        settings = getattr(self.app, "server_settings", None) or ServerConfig()
        self.max_body, self.read_timeout = settings.max_body_bytes, settings.read_timeout
        # A chunked body's framing (size lines, trailers) on top of its data: an eighth is
        # far more than a real sender's chunks add.
        self.max_chunked = HEAD_LIMIT + settings.max_body_bytes + TRAILER_LIMIT + settings.max_body_bytes // 8
        self.budget = BUDGET_REQUESTS * self.max_chunked
        self.held = 0                                   # budget bytes reserved
        self.reading: set[_Conn] = set()
        self.paused: list[_Conn] = []
        self.lingering: dict[socket.socket, float] = {}   # socket -> when to give up draining it
        self.next_sweep = 0.0
        cfg = self.cfg
        self.buffering = (not cfg.is_ssl and getattr(cfg, "protocol", "http") == "http"
                          and getattr(cfg, "http2_cleartext", "off") == "off"
                          and getattr(cfg, "proxy_protocol", "off") in ("off", False, None))
        if not self.buffering:
            self.log.warning("TLS, HTTP/2, uwsgi or the PROXY protocol is on: requests are read by the "
                             "handler threads (gthread's way), so slow clients can hold them")

    # -- connections in --------------------------------------------------------------------

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self.enqueue_req(_Conn(self, self.cfg, sock, client, listener.getsockname()))

    def enqueue_req(self, conn: _Conn) -> None:
        """Every way a request reaches gthread's thread pool (a new connection, a kept-alive
        one that became readable, one whose next request is already buffered) comes here:
        the request is read in the loop first."""
        if not self.buffering:
            super().enqueue_req(conn)
            return
        already = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.reading = _Reading(RequestScan(self.max_body), bytearray(already),
                                time.monotonic() + self.read_timeout)
        conn.complete, conn.continued = True, False
        self.reading.add(conn)
        conn.sock.setblocking(False)
        if already:
            self._advance(conn)
        else:
            self._register(conn)

    def _readable(self, conn: _Conn, _sock: socket.socket) -> None:
        reading = conn.reading
        room = self._room(conn)
        if room is None:
            self._pause(conn)
            return
        if room <= 0:   # a chunked body whose framing alone goes past what it may take
            self._drop(conn, answer=_answer(413, f"the chunked body is over {self.max_body} bytes "
                                                 "(server.max_body_bytes) with its framing"))
            return
        try:
            data = conn.sock.recv(min(READ_SIZE, room))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = None   # reset: nobody is left to answer
        if not data:
            # The client closed its side. What it sent may still deserve an answer (a body
            # shorter than its Content-Length is a 400): gunicorn and the app read to the end.
            if data is not None and reading.buf:
                self._hand_off(conn, complete=False)
            else:
                self._drop(conn)
            return
        reading.buf += data
        self._advance(conn)

    def _room(self, conn: _Conn) -> int | None:
        """How many more bytes the request may buffer now; None when it must wait for the budget."""
        reading = conn.reading
        scan = reading.scan
        if scan.head_end < 0:
            return HEAD_LIMIT + 1 - len(reading.buf)   # the scan refuses a head any longer
        if scan.chunked:
            total = self.max_chunked
        else:
            total = scan.head_end + (scan.length or 0)
        need = max(0, total - ALLOWANCE)
        if need > reading.reserved:
            if self.held - reading.reserved + need > self.budget:
                return None
            self.held += need - reading.reserved
            reading.reserved = need
        return max(total, ALLOWANCE) - len(reading.buf)

    def _advance(self, conn: _Conn) -> None:
        verdict: Verdict = conn.reading.scan.feed(conn.reading.buf)
        if verdict.action == "more":
            if conn.reading.scan.expects_continue and not conn.continued:
                conn.continued = True
                _send_quietly(conn.sock, _CONTINUE)
            self._register(conn)
        elif verdict.action == "ready":
            self._hand_off(conn, complete=verdict.complete)
        else:
            self._drop(conn, answer=_answer(verdict.status, verdict.reason))

    def _hand_off(self, conn: _Conn, *, complete: bool) -> None:
        reading = self._stop_reading(conn)
        conn.complete, conn.reserved = complete, reading.reserved
        conn.sock.setblocking(True)
        conn.init()   # plain HTTP/1: creates the parser, no I/O
        conn.parser.unreader = _Prefilled(conn.sock, reading.buf)
        super().enqueue_req(conn)

    # -- the threads -----------------------------------------------------------------------

    def handle(self, conn: _Conn):
        reserved = getattr(conn, "reserved", 0)
        if reserved:
            conn.reserved = 0
            self.method_queue.defer(self._release, reserved)
        return super().handle(conn)

    def handle_request(self, req, conn: _Conn) -> bool:
        if getattr(conn, "continued", False) and hasattr(req, "_expected_100_continue"):
            req._expected_100_continue = False   # the loop has sent it: once is enough
        keepalive = super().handle_request(req, conn)
        # A body the loop did not buffer was not read by the app either (a 413, or a client
        # gone): where the next request would start is unknown, so the connection closes.
        return keepalive and getattr(conn, "complete", True)

    # -- budget, deadlines, closing ----------------------------------------------------------

    def _release(self, reserved: int) -> None:
        """Give back a request's reservation, and let the waiting requests that now fit go on,
        in the order they began to wait."""
        self.held -= reserved
        now = time.monotonic()
        while self.paused:
            conn = self.paused[0]
            reading = conn.reading
            if self._room(conn) is None:
                break
            self.paused.pop(0)
            reading.deadline, reading.left = now + reading.left, None
            self._register(conn)

    def _pause(self, conn: _Conn) -> None:
        reading = conn.reading
        reading.left = max(0.0, reading.deadline - time.monotonic())
        reading.deadline = float("inf")
        self._unregister(conn)
        self.paused.append(conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        if not self.buffering or now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_SECONDS
        for conn in [c for c in self.reading if c.reading.deadline <= now or not (self.alive or c.reading.buf)]:
            if conn.reading.buf:
                seconds = f"{self.read_timeout:g}"
                self._drop(conn, answer=_answer(408, f"the request did not arrive within {seconds} s "
                                                     "(server.read_timeout)"))
            else:
                self._drop(conn)   # it asked nothing; a stopping worker closes idle ones at once
        for sock in [s for s, deadline in self.lingering.items() if deadline <= now]:
            self._close_lingering(sock)

    def _drop(self, conn: _Conn, answer: bytes | None = None) -> None:
        """Close a connection that is being read: with an answer (then its unread bytes are
        drained first, so that the client sees the answer) or without."""
        self._release_reading(self._stop_reading(conn))
        self.nr_conns -= 1
        if answer is None:
            conn.sock.close()
            return
        _send_quietly(conn.sock, answer)
        self.linger(conn.sock)

    def linger(self, sock: socket.socket) -> None:
        """Close after the peer has read what was sent (RFC 9112 section 9.6): half-close,
        then drain what it still sends until it closes, for LINGER_SECONDS at most."""
        try:
            sock.setblocking(False)
            sock.shutdown(socket.SHUT_WR)
            self.poller.register(sock, selectors.EVENT_READ, self._drain)
        except (OSError, ValueError, KeyError):
            sock.close()
            return
        self.lingering[sock] = time.monotonic() + LINGER_SECONDS

    def _drain(self, sock: socket.socket) -> None:
        try:
            if sock.recv(READ_SIZE):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._close_lingering(sock)

    def _close_lingering(self, sock: socket.socket) -> None:
        self.lingering.pop(sock, None)
        try:
            self.poller.unregister(sock)
        except (KeyError, ValueError, OSError):
            pass
        sock.close()

    def _stop_reading(self, conn: _Conn) -> _Reading:
        reading, conn.reading = conn.reading, None
        self.reading.discard(conn)
        if conn in self.paused:
            self.paused.remove(conn)
        self._unregister(conn)
        return reading

    def _release_reading(self, reading: _Reading) -> None:
        if reading.reserved:
            self._release(reading.reserved)

    def _register(self, conn: _Conn) -> None:
        if not conn.registered:
            self.poller.register(conn.sock, selectors.EVENT_READ, lambda sock, conn=conn: self._readable(conn, sock))
            conn.registered = True

    def _unregister(self, conn: _Conn) -> None:
        if conn.registered:
            self.poller.unregister(conn.sock)
            conn.registered = False


def _answer(status: int, reason: str) -> bytes:
    body = json.dumps({"error": reason}).encode()
    head = (f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send what fits now (a short answer always does); a client that is gone gets nothing."""
    try:
        sock.send(data)
    except OSError:
        pass
