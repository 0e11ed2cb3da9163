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
  worker, held until the request is answered: so at most that many large bodies are in
  a worker's memory at once, raw or decoded. A request that does not fit waits, unread
  (TCP pushes back on its client), its read_timeout clock stopped, until earlier ones
  leave; it holds nothing of the budget meanwhile, so the budget cannot deadlock. After a
  large request the free memory goes back to the system (memory.trim).
- closing: gthread closes a connection with a blocking drain of up to 2 s in its event
  loop (gunicorn.util.close_graceful); here the drain is another event in the loop.

Requests for the operations endpoints and the preview run in small thread pools of their
own (LANES), so that neither webhooks nor previews can keep /-/healthy from answering.

A head gunicorn's parser refuses (a malformed request line or header field, a field past
gunicorn's limits) is answered with gunicorn's status and a JSON reason, as the app
answers bad input, not with gunicorn's HTML page (refusals.py).

With TLS, HTTP/2, the uwsgi protocol or the PROXY protocol configured through
GUNICORN_CMD_ARGS, requests are not buffered (gthread's own behaviour), with a warning.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from gunicorn.workers.gthread import ThreadWorker

from ..config import ServerConfig
from . import memory
from .connection import CONTINUE, Conn, Lingering, Prefilled, Reading, answer, send_quietly
from .framing import HEAD_LIMIT, TRAILER_LIMIT, RequestScan, Verdict
from .refusals import refusal

ALLOWANCE = 16 * 1024        # a small webhook, head and body: never waits for the budget
BUDGET_REQUESTS = 2          # max-size requests a worker holds at once, from first byte to answer
READ_SIZE = 256 * 1024
SWEEP_SECONDS = 0.25         # how often deadlines are checked
TRIM_FROM = 1024 * 1024      # after a request this large, free memory goes back to the system
TRIM_SECONDS = 10.0          # and at most this often otherwise (the senders' renders)
# Requests whose path starts with one of these run in threads of their own, never queued
# behind webhooks nor holding their threads: the operations endpoints (a liveness probe
# and /-/reload must answer under full load) and the template preview (a pasted template
# renders in a child process for up to 10 s), and Feishu's card callbacks (a tap gets
# 3 s, §6.5: never behind a storm's webhooks).
LANES = ((b"/-/", 2), (b"/preview", 2), (b"/feishu/", 2))
# After taking a connection a worker leaves the next ones to the other workers for this
# long. Workers share one listening socket and the kernel wakes them all for each new
# connection: the one that happens to run first took most of them, and a client's few
# kept-alive connections (an Alertmanager's, wrk's 8) could all end on one worker, one
# process and one core for everything (issue 15: the bridge halved). A new connection
# waits at most this long when every worker has just taken one.
ACCEPT_YIELD = 0.01


class BufferingWorker(ThreadWorker):
    """gthread, with requests read in the event loop before a thread takes them."""

    buffering = False

    def init_process(self) -> None:
        self.lanes = [(prefix, ThreadPoolExecutor(threads, thread_name_prefix=f"lane{prefix.decode()}"))
                      for prefix, threads in LANES]
        super().init_process()   # runs the worker, until it stops

    def run(self) -> None:
        try:
            super().run()
        finally:
            for _, pool in self.lanes:
                pool.shutdown(wait=False)

    def handle_quit(self, sig, frame) -> None:
        for _, pool in self.lanes:
            pool.shutdown(wait=False)
        super().handle_quit(sig, frame)

    def load_wsgi(self) -> None:
        super().load_wsgi()
        settings = getattr(self.app, "server_settings", None) or ServerConfig()
        self.max_body, self.read_timeout = settings.max_body_bytes, settings.read_timeout
        # A chunked body's framing (size lines, trailers) on top of its data: an eighth is
        # far more than a real sender's chunks add.
        self.max_chunked = HEAD_LIMIT + settings.max_body_bytes + TRAILER_LIMIT + settings.max_body_bytes // 8
        self.budget = BUDGET_REQUESTS * self.max_chunked
        self.held = 0                                   # budget bytes reserved
        self.reading: set[Conn] = set()
        self.paused: list[Conn] = []
        self.lingering = Lingering(self.poller)
        self.next_sweep = 0.0
        self.trim_due, self.next_trim = False, 0.0
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
        if self.cfg.workers > 1:
            self.yield_until = time.monotonic() + ACCEPT_YIELD
            super().set_accept_enabled(False)
        self.enqueue_req(Conn(self, self.cfg, sock, client, listener.getsockname()))

    yield_until = 0.0

    def set_accept_enabled(self, enabled: bool) -> None:
        """gthread's loop asks for accepting at every turn; not while this worker yields."""
        super().set_accept_enabled(enabled and time.monotonic() >= self.yield_until)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        left = self.yield_until - time.monotonic()
        if left > 0 and self.alive:
            timeout = min(timeout, left)    # take up accepting again on time
        super().wait_for_and_dispatch_events(timeout)

    def enqueue_req(self, conn: Conn) -> None:
        """Every way a request reaches gthread's thread pool (a new connection, a kept-alive
        one that became readable, one whose next request is already buffered) comes here:
        the request is read in the loop first."""
        if not self.buffering:
            super().enqueue_req(conn)
            return
        already = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.reading = Reading(RequestScan(self.max_body), bytearray(already),
                                time.monotonic() + self.read_timeout)
        conn.complete, conn.continued = True, False
        self.reading.add(conn)
        conn.sock.setblocking(False)
        if already:
            self._advance(conn)
        else:
            self._register(conn)

    def _readable(self, conn: Conn, _sock: socket.socket) -> None:
        reading = conn.reading
        room = self._room(conn)
        if room is None:
            self._pause(conn)
            return
        if room <= 0:   # only a chunked body whose framing alone goes past what it may take
            self._drop(conn, reply=answer(413, f"the chunked body is over {self.max_body} bytes "
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

    def _room(self, conn: Conn) -> int | None:
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

    def _advance(self, conn: Conn) -> None:
        verdict: Verdict = conn.reading.scan.feed(conn.reading.buf)
        if verdict.action == "more":
            if conn.reading.scan.expects_continue and not conn.continued:
                conn.continued = True
                send_quietly(conn.sock, CONTINUE)
            self._register(conn)
        elif verdict.action == "ready":
            self._hand_off(conn, complete=verdict.complete)
        else:
            self._drop(conn, reply=answer(verdict.status, verdict.reason))

    def _hand_off(self, conn: Conn, *, complete: bool) -> None:
        reading = self._stop_reading(conn)
        conn.complete, conn.reserved = complete, reading.reserved
        conn.sock.setblocking(True)
        conn.init()   # plain HTTP/1: creates the parser, no I/O
        conn.parser.unreader = Prefilled(conn.sock, reading.buf)
        pool = self._lane(reading.buf)
        if pool is None:
            super().enqueue_req(conn)
            return
        done = pool.submit(self.handle, conn)   # as gthread's enqueue_req, in the lane's threads
        done.add_done_callback(lambda future: self.method_queue.defer(self.finish_request, conn, future))

    def _lane(self, buf: bytearray) -> ThreadPoolExecutor | None:
        """The lane of the request at the start of buf, by its path; None for the main pool."""
        line = bytes(buf[:buf.find(b"\r\n", 0, HEAD_LIMIT)]).strip()
        parts = line.split(b" ")
        target = parts[1] if len(parts) == 3 else b""
        for prefix, pool in self.lanes:
            if target.startswith(prefix):
                return pool
        return None

    # -- the threads -----------------------------------------------------------------------

    def handle(self, conn: Conn):
        reserved, conn.reserved = getattr(conn, "reserved", 0), 0
        try:
            keepalive = super().handle(conn)
            reader = getattr(conn.parser, "unreader", None)
            if keepalive and isinstance(reader, Prefilled):
                reader.keep_rest()
            return keepalive
        finally:
            if reserved:   # held until the answer: what the app made of the body is gone by then
                self.method_queue.defer(self._answered, reserved)

    def _answered(self, reserved: int) -> None:
        self._release(reserved)
        if reserved >= TRIM_FROM:
            self.trim_due = True

    def handle_request(self, req, conn: Conn) -> bool:
        if getattr(conn, "continued", False) and hasattr(req, "_expected_100_continue"):
            req._expected_100_continue = False   # the loop has sent it: once is enough
        keepalive = super().handle_request(req, conn)
        # A body the loop did not buffer was not read by the app either (a 413, or a client
        # gone): where the next request would start is unknown, so the connection closes.
        return keepalive and getattr(conn, "complete", True)

    def handle_error(self, req, client, addr, exc) -> None:
        """A request gunicorn refused: its status, with a JSON reason (refusals.py); any
        other error as gunicorn handles it (logged with its traceback, a 500)."""
        refused = refusal(exc)
        if refused is None:
            super().handle_error(req, client, addr, exc)
            return
        status, reason = refused
        self.log.warning("Invalid request from ip=%s: %s", (addr or ("",))[0], exc)
        send_quietly(client, answer(status, reason))

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

    def _pause(self, conn: Conn) -> None:
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
                self._drop(conn, reply=answer(408, f"the request did not arrive within {seconds} s "
                                                     "(server.read_timeout)"))
            else:
                self._drop(conn)   # it asked nothing; a stopping worker closes idle ones at once
        self.lingering.expire(now)
        if self.trim_due or now >= self.next_trim:
            # Between requests, in the loop: malloc_trim holds the arenas' locks briefly.
            self.trim_due, self.next_trim = False, now + TRIM_SECONDS
            memory.trim()

    def _drop(self, conn: Conn, reply: bytes | None = None) -> None:
        """Close a connection that is being read: with an answer (then its unread bytes are
        drained first, so that the client sees the answer) or without."""
        self._release_reading(self._stop_reading(conn))
        self.nr_conns -= 1
        if reply is None:
            conn.sock.close()
            return
        send_quietly(conn.sock, reply)
        self.lingering.add(conn.sock)

    def _stop_reading(self, conn: Conn) -> Reading:
        reading, conn.reading = conn.reading, None
        self.reading.discard(conn)
        if conn in self.paused:
            self.paused.remove(conn)
        self._unregister(conn)
        return reading

    def _release_reading(self, reading: Reading) -> None:
        if reading.reserved:
            self._release(reading.reserved)

    def _register(self, conn: Conn) -> None:
        if not conn.registered:
            self.poller.register(conn.sock, selectors.EVENT_READ, lambda sock, conn=conn: self._readable(conn, sock))
            conn.registered = True

    def _unregister(self, conn: Conn) -> None:
        if conn.registered:
            self.poller.unregister(conn.sock)
            conn.registered = False
