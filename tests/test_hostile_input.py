"""Hostile bodies (issue 17, defects 1 to 3): every nesting depth and every huge number is a 400
with a reason, and a chunked body gets the answer its plain twin gets, 413 included.

The decoder is checked on its own (bridge.accept.decode_json, json_shape), then the service as
it runs in production: `feishu-alert-bridge serve` under gunicorn, on every endpoint that
takes a JSON body. Before the fix a body nested about 980 deep or a number of 4301 digits was
a 500 on each of them, plain or chunked, and a chunked body past server.max_body_bytes was
read as its first max_body_bytes and answered as malformed JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.accept import MAX_JSON_DEPTH, decode_json, json_shape
from bridge.errors import PayloadError
from procs import BridgeProcess
from support.hostile import exchange, request
from test_delivery_service import notification

FIXTURES = Path(__file__).parent / "fixtures"
MAX_BODY = 64 * 1024
ENDPOINTS = ("/alertmanager", "/grafana", "/alertmanager/ops", "/grafana/ops", "/preview/render")
FRAMINGS = {"plain": None, "chunked": [1000], "chunked-tiny": [1, 7, 3]}


def nested(depth: int, kind: str = "array") -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def in_payload(value: bytes) -> bytes:
    """A value where a webhook body has an alert's label (the decoder sees it before any schema)."""
    return b'{"receiver": "r", "status": "firing", "alerts": [{"labels": {"x": ' + value + b"}}]}"


# -- the decoder -------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 100, 981, 982, 1000, 5000, 100_000])
@pytest.mark.parametrize("kind", ["array", "object"])
def test_every_depth_past_the_limit_is_refused_with_a_reason(depth, kind):
    for raw in (nested(depth, kind), nested(depth, kind).decode(), in_payload(nested(depth, kind))):
        with pytest.raises(PayloadError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
            decode_json(raw)


@pytest.mark.parametrize("kind", ["array", "object"])
def test_the_limit_itself_decodes(kind):
    assert decode_json(nested(MAX_JSON_DEPTH, kind)) is not None


@pytest.mark.parametrize("number", [b"1" * 4301, b"-" + b"9" * 4301, b"1" * 100_000])
def test_a_number_python_will_not_convert_is_refused_with_a_reason(number):
    for raw in (number, in_payload(number), b"[" + number + b"]"):
        with pytest.raises(PayloadError, match="a number with more than 4300 digits"):
            decode_json(raw)
    assert decode_json(b"1" * 4300) == int("1" * 4300)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(constant):
    with pytest.raises(PayloadError, match="JSON has no NaN or Infinity"):
        decode_json(in_payload(constant))


def test_a_body_of_more_values_than_bytes_allow_is_refused_before_decoding():
    # Decoded, each empty array is a 56-byte list: 21 times the 3 bytes it takes here.
    with pytest.raises(PayloadError, match="too many JSON values"):
        decode_json(b"[" + b"[]," * 100_000 + b"[]]")
    with pytest.raises(PayloadError, match="too many JSON values"):
        decode_json(b'{"alerts": [' + b"0," * 100_000 + b"0]}")


def test_real_bodies_are_far_from_every_limit():
    bodies = [p.read_bytes() for p in FIXTURES.glob("*/*.json")]
    bodies += [json.dumps(notification(f"Real-{n:03d}", firing=n)).encode() for n in (1, 100, 2000)]
    for body in bodies:
        depth, values = json_shape(body)
        assert depth <= 6 and values * 10 < len(body), (depth, values, len(body))
        assert decode_json(body) == json.loads(body)


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


# Strings full of what could be mistaken for structure: brackets, quotes, backslashes.
_TRICKY = st.text(alphabet=st.sampled_from('[]{}",:\\/ab\u00e9\u4e2d\n'), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TRICKY, inner, max_size=4),
    max_leaves=40,
)


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(_JSON, st.booleans())
def test_json_shape_measures_the_depth_json_loads_sees(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert json_shape(text.encode("utf-8"))[0] == _depth(value)


# -- the service under gunicorn ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    config = tmp / "config.yaml"
    config.write_text("bots:\n  - name: ops\n    dry_run: true\nroute:\n  bots: [ops]\nstorage:\n  path: outbox.db\n"
                      f"server:\n  max_body_bytes: {MAX_BODY}\n")
    process = BridgeProcess(config, tmp / "bridge.log")
    yield process
    log = process.log()
    process.stop()
    assert "internal_error" not in log, "an unhandled error was logged"


def post(bridge: BridgeProcess, path: str, body: bytes, framing: str = "plain", **kw):
    return exchange(bridge.port, request(path, body, chunks=FRAMINGS[framing], **kw))


def error_of(answer) -> str:
    return answer.json()["error"]


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("path", ENDPOINTS)
def test_deep_nesting_is_a_400_on_every_endpoint_plain_or_chunked(bridge, path, framing):
    for depth in (982, 1000, 5000, 10_000):
        for body in (nested(depth), nested(depth, "object"), in_payload(nested(depth))):
            answer = post(bridge, path, body, framing)
            assert answer.status == 400, f"depth {depth}: {answer}"
            assert f"nested deeper than {MAX_JSON_DEPTH} levels" in error_of(answer)


@pytest.mark.parametrize("framing", list(FRAMINGS))
@pytest.mark.parametrize("path", ENDPOINTS)
def test_huge_numbers_are_a_400_on_every_endpoint_plain_or_chunked(bridge, path, framing):
    for body in (b"1" * 4301, in_payload(b"7" * 5000), b'{"bot": "ops", "payload": ' + b"1" * 4400 + b"}"):
        answer = post(bridge, path, body, framing)
        assert answer.status == 400, answer
        assert "a number with more than 4300 digits" in error_of(answer)


def _comparable(answer) -> tuple:
    body = answer.json()
    if answer.status == 200:   # the same notification twice is a duplicate the second time
        body = {key: body[key] for key in ("status", "alerts", "routed") if key in body}
    return answer.status, body


@pytest.mark.parametrize("path", ENDPOINTS[:4])
def test_a_chunked_body_gets_the_answer_its_plain_twin_gets(bridge, path):
    fixture = (FIXTURES / ("alertmanager/am025-firing-group2.json" if "alertmanager" in path
                           else "grafana/grafana-unified-firing.json")).read_bytes()
    bodies = [fixture, fixture[:-20], b"", b"\xff\xfe{}", b'{"alerts": "no"}', nested(3000), b"1" * 5000,
              b'{"alerts": [{"labels": {"a": "\\ud800"}}]}', b"[" + b"[]," * 20_000 + b"[]]", b"x" * (MAX_BODY + 1)]
    for body in bodies:
        plain = post(bridge, path, body)
        for framing in ("chunked", "chunked-tiny"):
            answer = post(bridge, path, body, framing)
            assert _comparable(answer) == _comparable(plain), f"{body[:40]!r} {framing}: {answer} vs {plain}"
        assert plain.status in (200, 400, 413), f"{body[:40]!r}: {plain}"


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_a_body_past_max_body_bytes_is_413_however_it_is_framed(bridge, framing):
    over = b'{"pad": "' + b"x" * MAX_BODY + b'"}'
    answer = post(bridge, "/alertmanager", over, framing)
    assert answer.status == 413, answer
    assert error_of(answer) == f"the body is over {MAX_BODY} bytes (server.max_body_bytes)"
    # Exactly at the limit is not past it: read whole, then refused as the JSON it is.
    at = b'{"pad": "' + b"x" * (MAX_BODY - 11) + b'"}'
    assert len(at) == MAX_BODY
    answer = post(bridge, "/alertmanager", at, framing)
    assert answer.status == 400 and "missing required field" in error_of(answer), answer


def test_a_compressed_body_is_415_with_a_reason(bridge):
    body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
    for coding in ("gzip", "deflate", "br"):
        answer = post(bridge, "/alertmanager", body, encoding=coding)
        assert answer.status == 415, answer
        assert f"Content-Encoding {coding!r} is not supported" in error_of(answer)
    assert post(bridge, "/alertmanager", body, encoding="identity").status == 200


@pytest.mark.parametrize("framing", [b"zz\r\nabc\r\n0\r\n\r\n",              # a size that is not hex
                                     b"3\r\nabcdef\r\n0\r\n\r\n",             # more data than the size says
                                     b"3;a=\x01\r\nabc\r\n0\r\n\r\n"])        # a control byte in an extension
def test_broken_chunk_framing_is_a_400(bridge, framing):
    head = (b"POST /alertmanager HTTP/1.1\r\nHost: b\r\nConnection: close\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    answer = exchange(bridge.port, head + framing)
    assert answer.status == 400, answer
    assert "chunk" in answer.body.decode("utf-8", "replace").lower()


def test_a_body_in_chunks_of_a_byte_is_refused_for_its_framing(bridge):
    # Chunk sizes and CRLFs take 5 bytes of every 6 here: the buffer would be 6 times the
    # body. Up to an eighth of max_body_bytes of framing is taken (real chunks add far less).
    body = b'{"pad": "' + b"x" * (MAX_BODY * 2 // 3) + b'"}'
    answer = exchange(bridge.port, request("/alertmanager", body, chunks=[1]))
    assert answer.status == 413 and "with its framing" in error_of(answer), answer


# -- a malformed request head: gunicorn's parser refuses it, the answer is the app's shape -----
GOOD_HEAD = b"Host: b\r\nConnection: close\r\n"


@pytest.mark.parametrize("raw, status, words", [
    (b"GET /\r\n" + GOOD_HEAD + b"\r\n", 400, "the request line is malformed"),
    (b"G(T / HTTP/1.1\r\n" + GOOD_HEAD + b"\r\n", 400, "the request method is invalid: Invalid HTTP method: 'G(T'"),
    (b"GET / HTTP/1.1 extra\r\n" + GOOD_HEAD + b"\r\n", 400, "the HTTP version is not 1.0 or 1.1"),
    (b"GET / HTTP/7.1\r\n" + GOOD_HEAD + b"\r\n", 400, "the HTTP version is not 1.0 or 1.1"),
    (b"GET / HTTP/1.1\r\n" + GOOD_HEAD + b"Bad Name: x\r\n\r\n", 400, "header field name is invalid"),
    (b"GET / HTTP/1.1\r\n" + GOOD_HEAD + b"X-Ctl: a\x01b\r\n\r\n", 400, "header field is invalid"),
    (b"GET / HTTP/1.1\r\n" + GOOD_HEAD + b"X-Fold: a\r\n  b\r\n\r\n", 400, "folded over several lines"),
    (b"POST / HTTP/1.1\r\n" + GOOD_HEAD + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", 400,
     "invalid or repeated: Invalid HTTP Header: 'CONTENT-LENGTH'"),
    (b"POST / HTTP/1.1\r\n" + GOOD_HEAD + b"Transfer-Encoding: gzip\r\n\r\n", 400, "TRANSFER-ENCODING"),
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n" + GOOD_HEAD + b"\r\n", 414, "request line is too long"),
    (b"GET / HTTP/1.1\r\n" + GOOD_HEAD + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "too many or too large"),
    (b"GET / HTTP/1.1\r\n" + GOOD_HEAD + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n", 431,
     "too many or too large"),
], ids=["request line", "method", "version text", "version", "header name", "header value", "folding",
        "two lengths", "transfer coding", "long request line", "long header", "many headers"])
def test_a_malformed_head_is_answered_in_json_with_a_reason(bridge, raw, status, words):
    # Before: gunicorn's HTML page ("<h1><p>Bad Request</p></h1>"), the same statuses.
    answer = exchange(bridge.port, raw)
    assert answer.status == status, answer
    assert words in error_of(answer), answer
    assert len(error_of(answer)) <= 300
