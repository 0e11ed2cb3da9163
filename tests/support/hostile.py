"""Hostile requests, written byte by byte, and an exchange that tells a dropped connection
from an answer. Used by test_hostile_input.py, test_fuzz.py and test_slow_clients.py.

A request is built here rather than by an HTTP client so that its framing (a Content-Length,
chunks of any size, a lying Content-Encoding) is exactly what the test says.
"""

from __future__ import annotations

import gzip
import json
import socket
import threading
from dataclasses import dataclass

JSON = "application/json"


def request(path: str, body: bytes, *, content_type: str | None = JSON, chunks: list[int] | None = None,
            encoding: str | None = None, method: str = "POST", extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The bytes of one HTTP/1.1 request that closes its connection after the answer.

    chunks: None for a Content-Length body; else the body goes chunked, cut into pieces of
    these sizes in turn (the last size repeats), then the last chunk.
    encoding: a Content-Encoding header; "gzip" also compresses the body.
    """
    headers = [("Host", "bridge"), ("Connection", "close"), *extra]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    if encoding is not None:
        headers.append(("Content-Encoding", encoding))
        if encoding == "gzip":
            body = gzip.compress(body)
    if chunks is None:
        headers.append(("Content-Length", str(len(body))))
        framed = body
    else:
        headers.append(("Transfer-Encoding", "chunked"))
        framed = chunked(body, chunks)
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    return head.encode("latin-1") + framed


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, start, i = [], 0, 0
    while start < len(body):
        size = max(1, sizes[min(i, len(sizes) - 1)])
        piece = body[start:start + size]
        out.append(b"%x\r\n%s\r\n" % (len(piece), piece))
        start, i = start + size, i + 1
    return b"".join(out) + b"0\r\n\r\n"


@dataclass(frozen=True)
class Exchange:
    """What came back: a status and body, or no answer at all (`dropped` says how it ended)."""

    status: int | None
    body: bytes
    dropped: str | None = None

    def json(self) -> object:
        return json.loads(self.body)

    def __str__(self) -> str:
        if self.status is None:
            return f"no answer ({self.dropped})"
        return f"HTTP {self.status} {self.body[:300]!r}"


def exchange(port: int, raw: bytes, *, timeout: float = 15.0) -> Exchange:
    """Send `raw` on a new connection while reading the answer (a server may answer 413 before
    the body is all sent), until the server closes the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    failed: list[str] = []

    def send() -> None:
        try:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            failed.append(type(exc).__name__)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer, dropped = b"", None
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError as exc:
        dropped = type(exc).__name__
    finally:
        sender.join(timeout)
        sock.close()
    head, sep, body = answer.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if not sep or len(parts) < 2 or not parts[1].isdigit():
        return Exchange(None, answer, dropped or (f"send failed: {failed[0]}" if failed else "closed without answer"))
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return Exchange(int(parts[1]), body, dropped)


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out, data = out + rest[:size], rest[size + 2:]
    return out
