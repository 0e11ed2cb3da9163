"""What a request head gunicorn's parser refuses is answered: the status gunicorn would give,
and a reason in the app's shape (`{"error": ...}`, JSON) instead of gunicorn's HTML page.

gunicorn decides in Worker.handle_error (gunicorn/workers/base.py) and writes its page with
util.write_error; the worker (worker.py) asks `refusal` first and answers itself when it
knows the error. The statuses are gunicorn's (27.0.1): 400 for a malformed head, 414 for a
request line past limit_request_line, 431 for header fields past their limits, 501 for a
transfer coding it does not support, 417 for an Expect it cannot meet. Anything else (a
response header the app got wrong is the app's fault, a 500) stays with gunicorn.
"""

from __future__ import annotations

from gunicorn.http import errors

# Longer reasons are cut: gunicorn's message repeats what the client sent (a request line
# may be 4 KB of it), and the reason is for a person reading one line.
REASON_LIMIT = 300

# (gunicorn's exception, status, what it means); the first that matches wins.
_REFUSED: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int, str], ...] = (
    (errors.LimitRequestLine, 414, "the request line is too long"),
    (errors.LimitRequestHeaders, 431, "the request's header fields are too many or too large"),
    (errors.InvalidRequestLine, 400, "the request line is malformed"),
    (errors.InvalidRequestMethod, 400, "the request method is invalid"),
    (errors.InvalidHTTPVersion, 400, "the HTTP version is not 1.0 or 1.1"),
    (errors.InvalidHeaderName, 400, "a header field name is invalid"),
    (errors.ObsoleteFolding, 400, "a header field is folded over several lines (obsolete, RFC 9112 §5.2)"),
    (errors.InvalidHeader, 400, "a header field is invalid or repeated"),
    (errors.InvalidSchemeHeaders, 400, "the header fields disagree on the request's scheme"),
    (errors.UnsupportedTransferCoding, 501, "the transfer coding is not supported"),
    (errors.ExpectationFailed, 417, "the Expect header field asks for something other than 100-continue"),
    ((errors.InvalidChunkSize, errors.ChunkMissingTerminator, errors.InvalidChunkExtension), 400,
     "the chunked body's framing is broken"),
    ((errors.InvalidProxyLine, errors.InvalidProxyHeader), 400, "the PROXY protocol header is invalid"),
    (errors.ForbiddenProxyRequest, 403, "the PROXY protocol is not allowed from this address"),
)
# What the app sent wrong, not the client: gunicorn's 500.
_NOT_THE_CLIENTS = (errors.InvalidResponseHeader, errors.InvalidResponseHeaderName)


def refusal(exc: BaseException) -> tuple[int, str] | None:
    """(status, reason) for a request gunicorn's parser refused; None for any other error."""
    if isinstance(exc, _NOT_THE_CLIENTS):
        return None
    for kinds, status, what in _REFUSED:
        if isinstance(exc, kinds):
            detail = str(exc)
            reason = f"{what}: {detail}" if detail else what
            return status, reason if len(reason) <= REASON_LIMIT else reason[:REASON_LIMIT - 1] + "…"
    return None
