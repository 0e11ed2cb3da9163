"""Hypothesis strategies for hostile webhook requests (tests/test_fuzz.py), and the regression
corpus of bodies that once got a wrong answer (tests/hostile_corpus.json).

A generated case is a whole request: an endpoint, a body, its framing (Content-Length or
chunks of any size), its Content-Type and Content-Encoding. Bodies start from the real
fixtures and are broken the ways issue 17 lists: deep nesting, huge numbers, NaN and
Infinity, invalid UTF-8, lone surrogates, duplicate keys, a wrong type anywhere, an empty
body, bytes that are not JSON at all.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

from .hostile import JSON, request

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CORPUS = Path(__file__).resolve().parents[1] / "hostile_corpus.json"
WEBHOOKS = ("/alertmanager", "/grafana", "/alertmanager/ops", "/grafana/ops")
PREVIEW = "/preview/render"


@dataclass(frozen=True)
class Case:
    path: str
    body: bytes
    chunks: tuple[int, ...] | None = None
    content_type: str | None = JSON
    encoding: str | None = None

    def raw(self) -> bytes:
        return request(self.path, self.body, content_type=self.content_type, encoding=self.encoding,
                       chunks=None if self.chunks is None else list(self.chunks))

    def __repr__(self) -> str:   # what hypothesis prints for a failing example
        shown = self.body if len(self.body) <= 300 else self.body[:300] + b"...(%d bytes)" % len(self.body)
        return (f"Case({self.path!r}, {shown!r}, chunks={self.chunks}, content_type={self.content_type!r}, "
                f"encoding={self.encoding!r})")


def _fixtures() -> list[object]:
    """The real bodies (not the captured request heads)."""
    paths = sorted(FIXTURES.glob("alertmanager/*.json")) + sorted(FIXTURES.glob("grafana/*.json"))
    return [json.loads(p.read_bytes()) for p in paths if "headers" not in p.name]


SEEDS = _fixtures()
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                    st.text(max_size=20), st.just(""), st.just("firing"), st.just("0001-01-01T00:00:00Z"))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=3), max_leaves=8)


def _paths(value: object, here: tuple = ()) -> list[tuple]:
    """Every path to a value inside `value`, the root included."""
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, here + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, here + (i,))
    return found


def _replace(value: object, path: tuple, new: object) -> object:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(copy[path[0]], path[1:], new)
    return copy


@st.composite
def wrong_type(draw) -> bytes:
    """A real body with one value anywhere swapped for a value of any type."""
    seed = draw(st.sampled_from(SEEDS))
    path = draw(st.sampled_from(_paths(seed)))
    return json.dumps(_replace(seed, path, draw(VALUES))).encode()


# Mostly depths past the point where json.loads itself gave up (about 980).
DEPTHS = st.sampled_from([982, 1000, 3000, 981, 65, 64, 63, 500]) | st.integers(900, 5000) | st.integers(1, 900)
_PLACEHOLDER = "\u2063fuzz\u2063"


@st.composite
def raw_value(draw) -> bytes:
    """What a JSON value's place can hold that json.dumps never writes: deep nesting, a number
    Python will not convert, NaN and Infinity, strings that are not Unicode or not UTF-8."""
    depth = draw(DEPTHS)
    return draw(st.sampled_from([
        b"[" * depth + b"]" * depth, b'{"a":' * depth + b"0" + b"}" * depth, b"[1," * depth + b"]" * depth,
        b"9" * draw(st.integers(4000, 6000)), b"-" + b"1" * 4301, b"1" * 4300, b"NaN", b"Infinity", b"-Infinity",
        b"1e999", b"-1e-999", b'"\\ud800"', b'"\\udfff\\ud800"', b'"\xff"', b'"\xc3\x28"', b'"\xed\xa0\x80"',
        b'"\x00"', b'"a\\u0000b"',
    ]))


@st.composite
def placed(draw) -> bytes:
    """A real body with one value (or key) anywhere replaced by a raw_value()."""
    seed = draw(st.sampled_from(SEEDS))
    path = draw(st.sampled_from(_paths(seed)))
    text = json.dumps(_replace(seed, path, _PLACEHOLDER), ensure_ascii=False).encode()
    return text.replace(json.dumps(_PLACEHOLDER, ensure_ascii=False).encode(), draw(raw_value()), 1)


@st.composite
def spliced(draw) -> bytes:
    """A real body with something spliced in at any byte: a fragment of structure, bytes that are not UTF-8."""
    text = json.dumps(draw(st.sampled_from(SEEDS))).encode()
    at = draw(st.integers(0, len(text)))
    piece = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b'"a": 1, "a": 2', b"}", b"]",
                                  b",", b'"', b"\\", b"\\u", b"\\ud800"]) | raw_value())
    return text[:at] + piece + text[at:]


@st.composite
def duplicated(draw) -> bytes:
    """A real body whose keys come twice, the second time with a wrong value."""
    seed = draw(st.sampled_from(SEEDS))
    key = draw(st.sampled_from(sorted(seed)))
    text = json.dumps(seed).encode()
    return text[:-1] + b", " + json.dumps(key).encode() + b": " + json.dumps(draw(VALUES)).encode() + b"}"


# A strategy named twice is drawn twice as often: the raw values are what broke the service.
BODIES = st.one_of(placed(), placed(), placed(), wrong_type(), spliced(), duplicated(), st.binary(max_size=200), st.just(b""),
                   st.builds(lambda v: json.dumps(v).encode(), VALUES))


@st.composite
def preview_body(draw) -> bytes:
    """A preview request: a hostile payload (as JSON or as pasted text), the other keys any type."""
    request_body: dict = {"bot": draw(st.sampled_from(["ops", "nobody", 7, None]))}
    payload = draw(BODIES)
    if draw(st.booleans()):
        request_body["payload"] = payload.decode("utf-8", "surrogateescape").encode("utf-8", "replace").decode()
    else:
        try:
            request_body["payload"] = json.loads(payload)
        except (ValueError, RecursionError):
            request_body["payload"] = None
    if draw(st.booleans()):
        request_body["source"] = draw(st.sampled_from(["auto", "alertmanager", "grafana", "other", 3]))
    if draw(st.booleans()):   # a pasted template: short, so that its child process ends quickly
        request_body["template"] = draw(st.sampled_from(['{"msg_type": "text"}', "{{ x", "{% for %}", "", "null"]))
    return json.dumps(request_body).encode()


@st.composite
def cases(draw) -> Case:
    path = draw(st.sampled_from(WEBHOOKS + (PREVIEW,)))
    body = draw(preview_body()) if path == PREVIEW else draw(BODIES)
    chunks = draw(st.none() | st.lists(st.integers(1, 4096), min_size=1, max_size=4).map(tuple))
    # Mostly what a webhook sends, so that the body is what gets refused.
    content_type = draw(st.sampled_from([JSON] * 6 + ["application/json; charset=utf-8", "text/plain", None,
                                                      "application/x-www-form-urlencoded"]))
    encoding = draw(st.sampled_from([None] * 6 + ["gzip", "identity", "deflate", "x-unknown"]))
    return Case(path, body, chunks, content_type, encoding)


# -- the corpus ------------------------------------------------------------------------------


def corpus() -> list[dict]:
    return json.loads(CORPUS.read_text(encoding="utf-8"))


def corpus_case(entry: dict) -> Case:
    """An entry's request. Its body is "text", "base64", or "parts": [[text, times], ...]."""
    if "text" in entry:
        body = entry["text"].encode("utf-8", "surrogatepass")
    elif "base64" in entry:
        body = base64.b64decode(entry["base64"])
    else:
        body = b"".join(text.encode("utf-8") * times for text, times in entry["parts"])
    chunks = tuple(entry["chunks"]) if "chunks" in entry else None
    return Case(entry["path"], body, chunks, entry.get("content_type", JSON), entry.get("encoding"))


def many_labels(count: int) -> bytes:
    """An Alertmanager body whose one alert has `count` labels."""
    seed = json.loads((FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes())
    rng = random.Random(count)
    seed["alerts"][0]["labels"].update({f"label_{i}": f"value-{rng.randrange(10**6)}" for i in range(count)})
    return json.dumps(seed).encode()
