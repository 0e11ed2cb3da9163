"""bridge.serving.framing: when has a request arrived whole? Pure, without a server.

The worker hands a request to a thread exactly when RequestScan says it is complete, so the
verdict must turn "ready" at the request's last byte, not before (a thread would then wait
on the client) and not after (the request would wait for bytes that never come), however
the bytes are split on the way.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.serving.framing import HEAD_LIMIT, RequestScan
from support.hostile import chunked

MAX_BODY = 4096
HEAD = b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
BODY = b'{"receiver": "r", "alerts": ["[]{}\\r\\n0\\r\\n\\r\\n"]}'
REQUESTS = {
    "content-length": HEAD + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY,
    "chunked": HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY, [5, 1, 17]),
    "chunked-with-trailers": HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(BODY, [64])[:-2]
    + b"X-Checksum: abc\r\nX-Other: 1\r\n\r\n",
    "chunked-extensions": HEAD + b"Transfer-Encoding: chunked\r\n\r\n5;name=value\r\n" + BODY[:5] + b"\r\n"
    + b"%x\r\n" % (len(BODY) - 5) + BODY[5:] + b"\r\n0\r\n\r\n",
    "no-body": b"GET /-/healthy HTTP/1.1\r\nHost: bridge\r\n\r\n",
    "empty-lines-first": b"\r\n\r\nGET /-/ready HTTP/1.1\r\nHost: bridge\r\n\r\n",
    "lower-case-fields": b"POST /grafana HTTP/1.1\r\nhost: b\r\ncontent-length: 2\r\n\r\n{}",
}


def verdicts(raw: bytes, cuts: list[int]) -> list[str]:
    """The scan's verdict after each piece arrives, cut at `cuts`."""
    scan, buf, seen, start = RequestScan(MAX_BODY), bytearray(), [], 0
    for end in [*sorted(set(cuts)), len(raw)]:
        if end <= start:
            continue
        buf += raw[start:end]
        start = end
        seen.append(scan.feed(buf).action)
        if seen[-1] != "more":
            break
    return seen


@pytest.mark.parametrize("name", list(REQUESTS))
def test_a_request_is_ready_at_its_last_byte_and_not_before(name):
    raw = REQUESTS[name]
    seen = verdicts(raw, list(range(1, len(raw))))   # one byte at a time
    assert seen == ["more"] * (len(raw) - 1) + ["ready"], name


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.sampled_from(sorted(REQUESTS)), st.lists(st.integers(1, 400), max_size=12))
def test_however_the_bytes_are_split(name, cuts):
    raw = REQUESTS[name]
    seen = verdicts(raw, [c for c in cuts if c < len(raw)])
    assert seen[-1] == "ready" and set(seen[:-1]) <= {"more"}


def test_bytes_after_the_request_do_not_change_the_verdict():
    raw = REQUESTS["chunked"] + REQUESTS["content-length"]   # pipelined
    assert RequestScan(MAX_BODY).feed(bytearray(raw)).action == "ready"


@pytest.mark.parametrize("raw, status, reason", [
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "not TLS"),
    (b"\x00\x01binary", 400, "not an HTTP request"),
    (b"GET / HTTP/1.1\r\nX-Long: " + b"a" * HEAD_LIMIT, 431, "request head"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "not a chunk size"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n", 400, "not followed by CRLF"),
    (HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 5000, 400, "chunk-size line"),
])
def test_what_could_never_be_answered_is_refused_by_the_scan(raw, status, reason):
    verdict = RequestScan(MAX_BODY).feed(bytearray(raw))
    assert (verdict.action, verdict.status) == ("refuse", status) and reason in verdict.reason


@pytest.mark.parametrize("raw", [
    HEAD + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1),                 # the app answers 413 unread
    HEAD + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % (MAX_BODY + 1),    # the same, chunked
    HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n",               # gunicorn refuses these heads
    HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
    HEAD + b"Transfer-Encoding: gzip\r\n\r\n",
    b"GET / HTTP/1.1\nHost: bare-lf\n\n",
])
def test_what_gunicorn_or_the_app_refuses_unread_goes_to_them_at_once(raw):
    verdict = RequestScan(MAX_BODY).feed(bytearray(raw))
    assert (verdict.action, verdict.complete) == ("ready", False)


def test_expect_100_continue_is_noticed_only_when_a_body_is_coming():
    scan = RequestScan(MAX_BODY)
    assert scan.feed(bytearray(HEAD + b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n")).action == "more"
    assert scan.expects_continue
    scan = RequestScan(MAX_BODY)
    assert scan.feed(bytearray(HEAD + b"Expect: 100-continue\r\nContent-Length: 0\r\n\r\n")).action == "ready"
    assert not scan.expects_continue
