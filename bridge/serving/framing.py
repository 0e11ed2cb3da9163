"""How much of an HTTP/1.1 request has arrived on a connection: its head, then its body
(by Content-Length, or chunk by chunk to the last chunk and its trailers).

The worker (worker.py) keeps a connection's bytes in its event loop and hands the request
to a thread only once `RequestScan.feed` says it is all there, so that no thread ever
waits on a client. This module says *when* a request may go to a thread; gunicorn's
parser and the app still decide whether it is valid, from the bytes already buffered.
It refuses on its own only what could otherwise never be answered: bytes that are not
HTTP at all (a TLS handshake on this plain-HTTP port), a head that does not end, and a
chunked body whose framing is broken (gunicorn would wait for bytes that never come).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A request head bigger than this is refused with 431. gunicorn's own limits (a request
# line of 4094 bytes, 100 fields of 8190) allow more, but no webhook sender needs a
# fraction of it, and every byte of a head is held in memory until the head ends.
HEAD_LIMIT = 64 * 1024
# A chunk-size line (hex digits and extensions) or the trailer section past these is refused.
CHUNK_LINE_LIMIT = 4096
TRAILER_LIMIT = 64 * 1024
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# The first byte of a TLS record carrying a handshake (RFC 8446 section 5.1).
_TLS_HANDSHAKE = 0x16
# A request line starts with a method, a token (RFC 9110 section 5.6.2).
_TOKEN_START = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


@dataclass(frozen=True)
class Verdict:
    """What to do with the connection now.

    more:   wait for more bytes.
    ready:  hand the request to a thread; `complete` is False when its body is not all
            here and the app will refuse it without reading it (413), or gunicorn's parser
            will refuse its head: the connection then closes after the answer.
    refuse: answer `status` with `reason` and close, without a thread.
    """

    action: str
    complete: bool = True
    status: int = 0
    reason: str = ""


MORE = Verdict("more")
READY = Verdict("ready")
HAND_OVER = Verdict("ready", complete=False)


def refuse(status: int, reason: str) -> Verdict:
    return Verdict("refuse", status=status, reason=reason)


class RequestScan:
    """The framing of one request, scanned as its bytes arrive (each call goes on from
    where the previous one stopped)."""

    def __init__(self, max_body: int):
        self.max_body = max_body
        self.head_end = -1          # the index just past the head's blank line, once seen
        self.length: int | None = None
        self.chunked = False
        self.expects_continue = False
        self._pos = 0               # chunked: where the next chunk-size (or trailer) line starts
        self._body = 0              # chunked: body bytes in the chunks seen so far
        self._trailers = -1         # chunked: where the trailers start, once past the last chunk

    def feed(self, buf: bytearray) -> Verdict:
        if self.head_end < 0:
            verdict = self._head(buf)
            if verdict is not None:
                return verdict
        if self.chunked:
            return self._chunks(buf)
        if self.length is not None and len(buf) < self.head_end + self.length:
            return MORE
        return READY

    def _head(self, buf: bytearray) -> Verdict | None:
        """The verdict while the head is incomplete or odd; None once it is read and ordinary."""
        start = len(buf) - len(buf.lstrip(b"\r\n"))   # RFC 9112 2.2: empty lines before a request
        if start < len(buf) and buf[start] not in _TOKEN_START:
            if buf[start] == _TLS_HANDSHAKE:
                return refuse(400, "this port speaks plain HTTP, not TLS: use http://")
            return refuse(400, "not an HTTP request")
        if start == len(buf):
            return MORE if len(buf) <= HEAD_LIMIT else refuse(431, f"the request head is over {HEAD_LIMIT} bytes")
        end = buf.find(b"\r\n\r\n", start)
        if (end < 0 and len(buf) > HEAD_LIMIT) or end + 4 > HEAD_LIMIT:
            return refuse(431, f"the request head is over {HEAD_LIMIT} bytes")
        if end < 0:
            # Lines ending in a bare LF: gunicorn refuses them, from what is here.
            return HAND_OVER if b"\n\n" in buf else MORE
        self.head_end = end + 4
        fields = _fields(bytes(buf[start:end]))
        coding, lengths = fields.get(b"transfer-encoding"), fields.get(b"content-length")
        if coding is not None:
            if lengths is not None or coding[-1].rsplit(b",", 1)[-1].strip().lower() != b"chunked":
                return HAND_OVER   # gunicorn refuses a length with a coding, or a coding not ending in chunked
            self.chunked, self._pos = True, self.head_end
        elif lengths is not None:
            if len(set(lengths)) != 1 or not lengths[0].isdigit():
                return HAND_OVER   # gunicorn refuses these heads
            self.length = int(lengths[0])
            if self.length > self.max_body:
                return HAND_OVER   # the app answers 413 without reading the body
        body_coming = self.chunked or bool(self.length)
        self.expects_continue = body_coming and fields.get(b"expect", [b""])[-1].strip().lower() == b"100-continue"
        return None

    def _chunks(self, buf: bytearray) -> Verdict:
        while True:
            eol = buf.find(b"\r\n", self._pos)
            if eol < 0:
                if self._trailers >= 0 and len(buf) - self._trailers > TRAILER_LIMIT:
                    return refuse(400, f"the chunked body's trailers are over {TRAILER_LIMIT} bytes")
                if len(buf) - self._pos > CHUNK_LINE_LIMIT:
                    return refuse(400, f"malformed chunked body: a chunk-size line over {CHUNK_LINE_LIMIT} bytes")
                return MORE
            if self._trailers >= 0:
                if eol == self._pos:
                    return READY   # the blank line that ends the trailers
                self._pos = eol + 2
                continue
            size = bytes(buf[self._pos:eol]).split(b";", 1)[0].strip(b" \t")
            if not _HEX.fullmatch(size):
                return refuse(400, f"malformed chunked body: {bytes(buf[self._pos:eol])[:40]!r} is not a chunk size")
            size_int = int(size, 16)
            if size_int == 0:
                self._trailers = self._pos = eol + 2
                continue
            if self._body + size_int > self.max_body:
                return HAND_OVER   # the app reads one byte past its limit and answers 413
            end = eol + 2 + size_int
            if len(buf) < end + 2:
                return MORE
            if buf[end:end + 2] != b"\r\n":
                return refuse(400, "malformed chunked body: a chunk's data is not followed by CRLF")
            self._body += size_int
            self._pos = end + 2


def _fields(head: bytes) -> dict[bytes, list[bytes]]:
    """The head's fields (after the request line) by lower-case name, each with its values."""
    fields: dict[bytes, list[bytes]] = {}
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            fields.setdefault(name.strip().lower(), []).append(value.strip())
    return fields
