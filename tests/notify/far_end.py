"""A far end that misbehaves: a loopback TCP server answering every request one fixed way.

The strict fake Feishu answers as Feishu does. This one answers as the network and the
things in between do when they break: resets, silence, bytes that are not HTTP, a body
cut short, an error page that echoes the request. It reads each request (head and
Content-Length body) before misbehaving, so the request is counted and can be echoed.

    with FarEnd(("answer", b"HTTP/1.1 500 ...")) as far:
        ... send to far.url ...
        assert far.requests == 1
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading

from support import free_port

# What to do once a request is read:
#   ("answer", raw bytes)    write them, then close
#   ("echo", status line)    answer with that status and the request itself as a text body
#   ("echo_headers", status) the same with only the request's header lines, sorted (as
#                            echo services such as httpbin show them)
#   ("reset",)               reset the connection (RST)
#   ("close",)               close without a word
#   ("hang", seconds)        say nothing for that long (or until stopped), then close
KINDS = frozenset({"answer", "echo", "echo_headers", "reset", "close", "hang"})


def http(status: str, body: bytes = b"", *headers: str) -> bytes:
    """A raw HTTP/1.1 answer: `http("200 OK", b"{}", "Content-Type: application/json")`."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class FarEnd:
    def __init__(self, behaviour: tuple):
        if behaviour[0] not in KINDS:
            raise ValueError(f"unknown behaviour {behaviour!r}; kinds: {sorted(KINDS)}")
        self.behaviour = behaviour
        self.requests = 0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.far_end = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> FarEnd:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def _serve(self, conn: socket.socket) -> None:
        request = _read_request(conn)
        if request is None:
            return
        with self._lock:
            self.requests += 1
        kind = self.behaviour[0]
        if kind == "answer":
            conn.sendall(self.behaviour[1])
        elif kind == "echo":
            conn.sendall(http(self.behaviour[1], request, "Content-Type: text/plain"))
        elif kind == "echo_headers":
            lines = sorted(request.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:])
            conn.sendall(http(self.behaviour[1], b"\n".join(lines), "Content-Type: text/plain"))
        elif kind == "reset":
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
            # Closed here: socketserver would send FIN (shutdown) first.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        elif kind == "hang":
            self._stopped.wait(self.behaviour[1])


def closed_port_url() -> str:
    """An address where nothing listens: the connection is refused."""
    return f"http://127.0.0.1:{free_port()}"


def _read_request(conn: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    far_end: FarEnd


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(10)
        self.server.far_end._serve(self.request)  # type: ignore[attr-defined]
