"""A request's body, read once, whole and within its limit, whatever its framing.

A body with a Content-Length over the limit is refused before a byte of it is read; a
chunked one (no Content-Length) is read up to one byte past the limit, so that both get
the same 413. Werkzeug alone would not: for a chunked body it stops reading at the limit
and hands over the first part as if it were the whole, and it lets the server's errors
about broken chunk framing through as exceptions (a 500).
"""

from __future__ import annotations

from flask import current_app, g, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, UnsupportedMediaType

from ..errors import PayloadError

_IDENTITY = ("", "identity")


def body_limit() -> int:
    """server.max_body_bytes, as the app was built with (a reload does not change it)."""
    return current_app.config["MAX_CONTENT_LENGTH"]


def read_body(limit: int | None = None) -> bytes:
    """The request's body as received, read once per request (a Grafana signature check and
    the handler share it). 413 past `limit` (default: server.max_body_bytes), 415 for a
    compressed body, 400 when it ends before its Content-Length or cannot be read."""
    if "body" in g:
        return g.body
    limit = body_limit() if limit is None else limit
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in _IDENTITY:
        # RFC 7694: 415 names what is wrong. Neither Alertmanager nor Grafana compresses a webhook.
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported: send the body uncompressed")
    announced = request.content_length
    if announced is not None and announced > limit:
        raise _too_large(limit)
    raw = _read(announced, limit)
    if len(raw) > limit:
        raise _too_large(limit)
    if announced is not None and len(raw) != announced:
        # The client closed before the end (gunicorn marks its input terminated, so Werkzeug
        # does not check): what arrived may be valid JSON, yet it is not what was sent.
        raise PayloadError(f"the body ended after {len(raw)} of the {announced} bytes its Content-Length "
                           "announced (the client closed the connection early)")
    g.body = raw
    return raw


def _read(announced: int | None, limit: int) -> bytes:
    try:
        if announced is None and request.environ.get("wsgi.input_terminated"):
            # Chunked: the server ends the stream at the body's end. One byte past the
            # limit tells a body over it from one exactly at it.
            return request.environ["wsgi.input"].read(limit + 1)
        return request.stream.read()
    except HTTPException:
        raise
    except Exception as exc:
        # The server's reader raises on framing it cannot follow (a chunk size that is not
        # hex, a missing CRLF) or on a connection that fails: the client's doing either way.
        raise PayloadError(f"the body could not be read: {exc or type(exc).__name__}") from None


def _too_large(limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"the body is over {limit} bytes (server.max_body_bytes)")
