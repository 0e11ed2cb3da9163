"""A strict fake of Feishu's custom-bot webhook, served over real HTTP on 127.0.0.1.

    with FakeFeishu() as fake:
        url = fake.add_bot("tok", secret="s3cr3t", keywords=["alert"])
        ...  # POST to url, from this process or from others (gunicorn workers)
        fake.wait_for("tok", 1)          # the messages accepted, in order
        assert not fake.throttled("tok")

It refuses what the real one refuses (shared protocols.md A.2-A.10), answering with the
bodies and HTTP statuses seen in the sources, so a test passing here means something.
Checks, in order, for a POST to /open-apis/bot/v2/hook/<token>:

    unknown token                                  19001, HTTP 200
    rate: > rate_per_second in any 1 s window,
          > rate_per_minute in any 60 s window     9499 "too many request", HTTP 400
    body over BODY_LIMIT_BYTES (raw bytes)         9499 "Bad Request", HTTP 400
    not application/json, not UTF-8, not a JSON
          object                                   9499 "Bad Request", HTTP 400
    signature (bot with a secret)                  19021, HTTP 200
    shape by msg_type, card 1.0/2.0 rules          9499 "Bad Request", HTTP 400
    card mention not by open_id/user_id/all        11246, HTTP 200
    none of the bot's keywords in a text value     19024, HTTP 200
    otherwise                                      success, HTTP 200

Every request that reaches the rate check counts against the windows, refused or not.
Rate windows use the monotonic clock; `clock` is Feishu's wall clock and only decides
whether a signature's timestamp is stale, so a test can move it.

`script(token, *steps)` makes the next requests for a bot answer differently (fault
injection); scripted requests skip the checks, except after a hang or for a lost answer:
    ("http", status[, body[, headers]])   that status; body a dict (JSON) or str
    ("code", code[, http_status[, msg]])  Feishu's body for that code (HTTP 200 by default)
    ("reset",)                            read the request, then reset the connection
    ("close",)                            read the request, close without answering
    ("hang", seconds)                     wait, then check and answer as usual
    ("lost_answer",)                      check (and maybe accept) as usual, then reset
                                          instead of answering: delivered, but the sender
                                          cannot know

`hang(token, seconds)` makes Feishu hang for a while (issue 17 item 7): every request for
the bot that arrives in the next `seconds` is held until they have passed, then checked,
counted in the rate windows, delivered and answered, as a backend that stalled and
recovers would (whether the client is still waiting or not). A request held by a hang is
counted when it is carried out, not when it arrived: what matters to a sender is that
a request it gave up on can still take its place in the windows later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import struct
import threading
import time
from base64 import b64encode
from collections import deque
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlsplit

from bridge.limits import BODY_LIMIT_BYTES, RATE_PER_MINUTE, RATE_PER_SECOND, SIGNATURE_WINDOW_SECONDS

HOOK_PATH = re.compile(r"/open-apis/bot/v2/hook/([^/]+)")

# Answer bodies, copied from shared/payloads/feishu-response-*.json; sources in
# tests/fixtures/SOURCES.md, "## Feishu answers".
SUCCESS = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
BAD_REQUEST = {"code": 9499, "msg": "Bad Request", "data": {}}
TOO_MANY_REQUEST = {"code": 9499, "msg": "too many request", "data": {}}
TOKEN_INVALID = {"code": 19001, "data": {}, "msg": "param invalid: incoming webhook access token invalid"}
SIGN_FAILED = {"code": 19021, "msg": "sign match fail or timestamp is not within one hour from current time"}
IP_NOT_ALLOWED = {"code": 19022, "msg": "Ip Not Allowed"}
KEYWORDS_NOT_FOUND = {"code": 19024, "msg": "Key Words Not Found"}
FREQUENCY_LIMITED = {
    "code": 11232, "data": {},
    "msg": "frequency limited psm[lark.oapi.app_platform_runtime]appID[1500]",
}
INVALID_AT = {
    "code": 11246, "data": {},
    "msg": "ErrCode: 100290; ErrMsg: there is an invalid user resource (at/person) in your card; "
    "ErrorValue: x**********@******; ",
}
# Seen only as a log line "code: 19036, err: The message exceeds the size limit of 30KB"
# (XUJiahua/alertmanager-webhook-feishu#3); the body around it is our guess. The fake's
# own size check answers 9499 as the guide documents; this is for script().
SIZE_LIMIT = {"code": 19036, "msg": "The message exceeds the size limit of 30KB", "data": {}}

ANSWERS = {b["code"]: b for b in (
    BAD_REQUEST, TOKEN_INVALID, SIGN_FAILED, IP_NOT_ALLOWED, KEYWORDS_NOT_FOUND,
    FREQUENCY_LIMITED, INVALID_AT, SIZE_LIMIT,
)}

# The guide does not say which HTTP status comes with 9499 "Bad Request"; the only 9499
# seen with a status ("too many request") had 400, so the gateway's 9499s get 400 here.
BAD_REQUEST_STATUS = 400
# 11246 was seen without its status; Feishu's other business refusals come with 200.
BUSINESS_STATUS = 200

MSG_TYPES = ("text", "post", "image", "share_chat", "interactive")
# protocols.md A.5: the complete list for card 2.0, assumed for 1.0 (D.8).
COLOURS = frozenset({
    "blue", "wathet", "turquoise", "green", "yellow", "orange", "red", "carmine", "violet",
    "purple", "indigo", "grey", "default",
})
# Card 2.0 drops these (FS-card2-changes); unsupported attributes are errors in 2.0.
DROPPED_IN_V2 = frozenset({"note", "action"})
V2_CARD_KEYS = frozenset({"schema", "config", "card_link", "header", "body"})
V2_MAX_COMPONENTS = 200
POST_LANGUAGES = frozenset({"zh_cn", "en_us"})
POST_NODES = {"text": ("text",), "a": ("text", "href"), "at": ("user_id",), "img": ("image_key",)}
# Keys whose string values Feishu searches for keywords (A.8: text and title, not href).
TEXT_KEYS = frozenset({"text", "content", "title", "user_name"})
I18N_KEYS = frozenset({"i18n", "i18n_content"})
# Custom bots mention by open_id or user_id only; email and union_id (on_…) are refused.
MENTION_ID = re.compile(r"all|ou_[A-Za-z0-9]+|[A-Za-z0-9][A-Za-z0-9-]*")
MENTION_TAG = re.compile(r"<(at|person)\b([^>]*)>", re.IGNORECASE)
TAG_ATTR = re.compile(r"""([A-Za-z_]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")

SCRIPT_KINDS = frozenset({"http", "code", "reset", "close", "hang", "lost_answer"})


@dataclass(frozen=True)
class Attempt:
    """One request as the fake saw it."""

    token: str
    at: float                  # time.monotonic() on arrival (the list is in answer order)
    body: dict | None          # the parsed JSON object, None when there was none
    http_status: int | None    # None when the connection was reset or closed unanswered
    code: int | None           # Feishu code answered, None for a non-JSON answer
    why: str                   # the check that refused it, "accepted", or "script: …"
    headers: dict[str, str] = field(default_factory=dict)
    proxied: bool = False      # the request line carried an absolute URL (a proxy's form)
    throttled: bool = False    # refused by the fake's own rate limit


@dataclass
class _Bot:
    token: str
    secret: str | None
    keywords: tuple[str, ...]
    rate_per_second: int
    rate_per_minute: int
    lark: bool
    minute: float = 60.0      # the "minute" window's length: shorter only in a test that says so
    hang_until: float = 0.0   # monotonic: requests arriving before then are held until then
    arrivals: deque = field(default_factory=deque)
    received: list = field(default_factory=list)
    script: deque = field(default_factory=deque)


@dataclass(frozen=True)
class _Request:
    token: str
    raw: bytes
    headers: Message
    proxied: bool
    arrived: float = field(default_factory=time.monotonic)

    def attempt(self, status: int | None, code: int | None, why: str, *,
                body: dict | None = None, throttled: bool = False) -> Attempt:
        return Attempt(self.token, self.arrived, body or _loads(self.raw), status, code,
                       why, dict(self.headers.items()), self.proxied, throttled)


class _Refused(Exception):
    def __init__(self, status: int, body: dict, why: str, throttled: bool = False):
        super().__init__(why)
        self.status, self.body, self.why, self.throttled = status, body, why, throttled


class FakeFeishu:
    def __init__(self, *, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._cond = threading.Condition()
        self._bots: dict[str, _Bot] = {}
        self._attempts: dict[str, list[Attempt]] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> "FakeFeishu":
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        # stop() waits up to one poll interval; tests start and stop a fake each.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01},
            name="fake-feishu", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeFeishu":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test API ---------------------------------------------------------------------
    def add_bot(
        self, token: str, *, secret: str | None = None, keywords: Sequence[str] = (),
        rate_per_second: int = RATE_PER_SECOND, rate_per_minute: int = RATE_PER_MINUTE,
        lark: bool = False, minute: float = 60.0,
    ) -> str:
        """Registers a bot and returns its webhook URL.

        `minute` shortens the per-minute window, for a test whose bridge uses as short a
        one (tests/support/short_minute).

        `lark` marks a Lark (larksuite.com) bot; Lark uses the same path and protocol
        (protocols.md A.1, D.7), so it changes no check.
        """
        with self._cond:
            if token in self._bots:
                raise ValueError(f"bot {token!r} already added")
            self._bots[token] = _Bot(token, secret, tuple(keywords), rate_per_second,
                                     rate_per_minute, lark, minute)
        return f"{self.base_url}/open-apis/bot/v2/hook/{token}"

    def received(self, token: str) -> list[dict]:
        """Messages accepted (code 0), in order, without the transport keys timestamp/sign."""
        with self._cond:
            return list(self._bots[token].received)

    def attempts(self, token: str) -> list[Attempt]:
        with self._cond:
            return list(self._attempts.get(token, ()))

    def throttled(self, token: str) -> list[Attempt]:
        """Requests refused by the rate limit (not scripted refusals)."""
        return [a for a in self.attempts(token) if a.throttled]

    def hang(self, token: str, seconds: float) -> None:
        """Hold every request for the bot arriving in the next `seconds` until then."""
        with self._cond:
            self._bots[token].hang_until = time.monotonic() + seconds

    def script(self, token: str, *steps: tuple) -> None:
        for step in steps:
            if not step or step[0] not in SCRIPT_KINDS:
                raise ValueError(f"unknown script step {step!r}; kinds: {sorted(SCRIPT_KINDS)}")
        with self._cond:
            self._bots[token].script.extend(steps)

    def wait_for(self, token: str, count: int, timeout: float = 10) -> list[dict]:
        """Blocks until `count` messages were accepted; fails the test if they were not."""
        with self._cond:
            bot = self._bots[token]
            if not self._cond.wait_for(lambda: len(bot.received) >= count, timeout):
                seen = [(a.http_status, a.code, a.why) for a in self._attempts.get(token, ())]
                raise AssertionError(
                    f"fake Feishu: {len(bot.received)} of {count} messages accepted "
                    f"in {timeout}s; attempts (status, code, why): {seen}"
                )
            return list(bot.received)

    # -- serving ----------------------------------------------------------------------
    def _serve(self, handler: "_Handler") -> None:
        target = urlsplit(handler.path)
        match = HOOK_PATH.fullmatch(target.path)
        if match is None:
            return _reply(handler, 404, "404 page not found", close=True)
        if handler.command != "POST":
            return _reply(handler, 405, "405 method not allowed", close=True)
        request = _Request(match.group(1), _read_body(handler), handler.headers,
                           proxied=bool(target.scheme))
        with self._cond:
            bot = self._bots.get(request.token)
            step = bot.script.popleft() if bot is not None and bot.script else ("",)
            held = bot.hang_until - request.arrived if bot is not None else 0.0
        if held > 0 and self._stopping.wait(held):
            self._record(request.attempt(None, None, "hang, ended by stop()"))
            return _drop(handler, reset=True)
        if step[0] in ("http", "code", "reset", "close"):
            return self._scripted(handler, request, step)
        if step[0] == "hang" and self._stopping.wait(float(step[1])):
            self._record(request.attempt(None, None, "script: hang, ended by stop()"))
            return _drop(handler, reset=True)
        try:
            message = self._judge(bot, request)
        except _Refused as refusal:
            self._record(request.attempt(refusal.status, refusal.body["code"], refusal.why,
                                         throttled=refusal.throttled))
            return _reply(handler, refusal.status, refusal.body, lost=step[0] == "lost_answer")
        self._record(request.attempt(200, 0, "accepted", body=message), message)
        _reply(handler, 200, SUCCESS, lost=step[0] == "lost_answer")

    def _scripted(self, handler: "_Handler", request: "_Request", step: tuple) -> None:
        kind, args = step[0], step[1:]
        why = f"script: {step!r}"
        if kind in ("reset", "close"):
            self._record(request.attempt(None, None, why))
            return _drop(handler, reset=kind == "reset")
        if kind == "http":
            status, answer, headers = (list(args) + ["", {}])[:3]
            answer = answer or f"{status} {handler.responses.get(status, ('',))[0]}"
            code = answer.get("code") if isinstance(answer, dict) else None
        else:  # "code"
            code, status = args[0], (args[1] if len(args) > 1 else 200)
            answer = dict(ANSWERS.get(code, {"code": code, "msg": "error", "data": {}}))
            if len(args) > 2:
                answer["msg"] = args[2]
            headers = {}
        self._record(request.attempt(status, code, why))
        _reply(handler, status, answer, headers=headers)

    def _record(self, attempt: Attempt, message: dict | None = None) -> None:
        with self._cond:
            self._attempts.setdefault(attempt.token, []).append(attempt)
            if message is not None:
                self._bots[attempt.token].received.append(
                    {k: v for k, v in message.items() if k not in ("timestamp", "sign")})
            self._cond.notify_all()

    # -- the checks -------------------------------------------------------------------
    def _judge(self, bot: _Bot | None, request: "_Request") -> dict:
        """The parsed message if the real Feishu would accept it; raises _Refused."""
        if bot is None:
            raise _Refused(200, TOKEN_INVALID, "unknown token")
        self._count(bot)
        size = len(request.raw)
        if size > BODY_LIMIT_BYTES:
            # Real Feishu was also seen answering 19036 "exceeds the size limit of 30KB".
            raise _Refused(BAD_REQUEST_STATUS, BAD_REQUEST, f"body of {size} bytes")
        message = _parse(request.headers, request.raw)
        if bot.secret is not None:
            _check_signature(message, bot.secret, self._clock())
        # A bot without a secret ignores timestamp/sign: the guide checks them only once
        # signing is on, and a secret can be removed while senders still sign.
        problem = shape_problem(message)
        if problem:
            raise _Refused(BAD_REQUEST_STATUS, BAD_REQUEST, f"shape: {problem}")
        problem = mention_problem(message)
        if problem:
            raise _Refused(BUSINESS_STATUS, INVALID_AT, f"mention: {problem}")
        if bot.keywords and not _has_keyword(message, bot.keywords):
            raise _Refused(200, KEYWORDS_NOT_FOUND, f"no keyword of {list(bot.keywords)}")
        return message

    def _count(self, bot: _Bot) -> None:
        now = time.monotonic()
        with self._cond:
            while bot.arrivals and bot.arrivals[0] <= now - bot.minute:
                bot.arrivals.popleft()
            last_second = sum(1 for t in bot.arrivals if t > now - 1)
            last_minute = len(bot.arrivals)
            bot.arrivals.append(now)
        if last_second >= bot.rate_per_second or last_minute >= bot.rate_per_minute:
            # What a burst really got (nightingale#1437), not the guide's 11232 (D.2).
            raise _Refused(400, TOO_MANY_REQUEST,
                           f"rate: {last_second + 1} in 1 s, {last_minute + 1} in {bot.minute:g} s",
                           throttled=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True      # a hung request must not keep stop() waiting
    request_queue_size = 128   # the default 5 drops bursts from several worker processes
    fake: FakeFeishu


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as requests' pooled connections expect

    def _any(self) -> None:
        self.server.fake._serve(self)  # type: ignore[attr-defined]  # server is a _Server

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass  # its lines carry the token, and tests assert no token reaches the logs


# -- HTTP plumbing ------------------------------------------------------------------------
def _read_body(handler: _Handler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        return _read_chunked(handler.rfile)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def _read_chunked(rfile: Any) -> bytes:
    parts = []
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(parts)
        parts.append(rfile.read(size))
        rfile.readline()


def _reply(handler: _Handler, status: int, body: dict | str, *, close: bool = False,
           headers: dict[str, str] | None = None, lost: bool = False) -> None:
    if lost:
        return _drop(handler, reset=True)
    if isinstance(body, dict):
        data, kind = json.dumps(body, ensure_ascii=False).encode(), "application/json; charset=utf-8"
    else:
        data, kind = body.encode(), "text/plain; charset=utf-8"
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        if close:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()
        handler.wfile.write(data)
    except OSError:
        handler.close_connection = True  # the sender gave up (timed out) first


def _drop(handler: _Handler, *, reset: bool) -> None:
    if reset:  # linger 0: close() sends RST instead of FIN
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
    handler.connection.close()


def _loads(raw: bytes) -> dict | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _parse(headers: Message, raw: bytes) -> dict:
    if headers.get_content_type() != "application/json":
        raise _Refused(BAD_REQUEST_STATUS, BAD_REQUEST,
                       f"content type {headers.get('Content-Type')!r}")
    charset = headers.get_content_charset()
    if charset not in (None, "utf-8", "utf8"):
        raise _Refused(BAD_REQUEST_STATUS, BAD_REQUEST, f"charset {charset!r}")
    try:
        message = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Refused(BAD_REQUEST_STATUS, BAD_REQUEST, f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise _Refused(BAD_REQUEST_STATUS, BAD_REQUEST, "JSON is not an object")
    return message


# -- signature and keywords ---------------------------------------------------------------
def _check_signature(message: dict, secret: str, now: float) -> None:
    timestamp, signature = message.get("timestamp"), message.get("sign")
    if not isinstance(timestamp, str) or not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise _Refused(200, SIGN_FAILED, f"timestamp {timestamp!r} is not a string of digits")
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        raise _Refused(200, SIGN_FAILED, f"timestamp {timestamp} is {now - int(timestamp):.0f} s old")
    # Computed here from the guide's recipe, not with bridge.notify.feishu.sign, so that a bug in
    # the client's signing cannot be agreed with. The key uses the timestamp as sent.
    key = f"{timestamp}\n{secret}".encode()
    expected = b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
        raise _Refused(200, SIGN_FAILED, "sign does not match")


def text_values(node: object, key: str = "") -> Iterator[str]:
    """The strings Feishu treats as message text: under text/content/title/user_name and
    i18n maps, never hrefs, urls, tags or keys (A.8)."""
    if isinstance(node, str):
        if key in TEXT_KEYS:
            yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            if k in I18N_KEYS and isinstance(v, dict):
                yield from (s for s in v.values() if isinstance(s, str))
            elif k not in ("timestamp", "sign"):
                yield from text_values(v, k)
    elif isinstance(node, list):
        for item in node:
            yield from text_values(item, key)


def _has_keyword(message: dict, keywords: Sequence[str]) -> bool:
    return any(k in text for text in text_values(message) for k in keywords)


# -- shapes (A.2-A.4) ---------------------------------------------------------------------
def shape_problem(message: dict) -> str | None:
    """What makes this body unacceptable to Feishu, or None."""
    msg_type = message.get("msg_type")
    if msg_type not in MSG_TYPES:
        return f"msg_type {msg_type!r} is not one of {MSG_TYPES}"
    payload_key = "card" if msg_type == "interactive" else "content"
    unknown = set(message) - {"msg_type", "timestamp", "sign", payload_key}
    if unknown:
        return f"unknown top-level keys {sorted(unknown)}"
    payload = message.get(payload_key)
    if not isinstance(payload, dict):
        return f"{payload_key} must be an object, not {type(payload).__name__}"
    return _SHAPES[msg_type](payload)


def _only_strings(content: dict, *keys: str) -> str | None:
    if set(content) != set(keys) or not all(isinstance(content[k], str) for k in keys):
        return f"content must be exactly {{{', '.join(keys)}: string}}"
    return None


def _post(content: dict) -> str | None:
    post = content.get("post")
    if set(content) != {"post"} or not isinstance(post, dict) or not post:
        return "post content must be {post: {zh_cn|en_us: ...}}"
    if set(post) - POST_LANGUAGES:
        return f"post languages {sorted(set(post) - POST_LANGUAGES)} are not zh_cn/en_us"
    for lang, body in post.items():
        if not isinstance(body, dict) or set(body) - {"title", "content"}:
            return f"post.{lang} must be {{title, content}}"
        if not isinstance(body.get("title", ""), str):
            return f"post.{lang}.title must be a string"
        paragraphs = body.get("content", [])
        if not isinstance(paragraphs, list) or not all(isinstance(p, list) for p in paragraphs):
            return f"post.{lang}.content must be a list of lists"
        for node in (n for p in paragraphs for n in p):
            problem = _post_node(node)
            if problem:
                return f"post.{lang}: {problem}"
    return None


def _post_node(node: object) -> str | None:
    if not isinstance(node, dict) or node.get("tag") not in POST_NODES:
        return f"node {node!r} needs a tag in {sorted(POST_NODES)}"
    for key in POST_NODES[node["tag"]]:
        if not isinstance(node.get(key), str):
            return f"{node['tag']} node needs a string {key}"
    if node["tag"] == "a" and not _is_web_url(node["href"]):
        return f"a.href {node['href']!r} is not an http(s) URL"
    return None


def _interactive(card: dict) -> str | None:
    schema = card.get("schema", "1.0")
    if schema == "2.0":
        return _card_v2(card)
    if schema != "1.0":
        return f"card schema {schema!r} is neither 1.0 nor 2.0"
    elements = card.get("elements", [])
    if not isinstance(elements, list) or not all(_is_component(e) for e in elements):
        return "card.elements must be a list of components (objects with a tag)"
    # 1.0 ignores attributes it does not know (FS-card2-changes), so nothing more here.
    return _header_problem(card)


def _card_v2(card: dict) -> str | None:
    if set(card) - V2_CARD_KEYS:
        return f"card 2.0 does not support {sorted(set(card) - V2_CARD_KEYS)}"
    body = card.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
        return "card 2.0 needs body.elements, a list"
    if not all(_is_component(e) for e in body["elements"]):
        return "card 2.0 body.elements must hold components (objects with a tag)"
    config = card.get("config", {})
    if not isinstance(config, dict) or config.get("update_multi", True) is not True:
        return "card 2.0 config.update_multi must be true"
    components = list(_components(body["elements"]))
    if len(components) > V2_MAX_COMPONENTS:
        return f"card 2.0 has {len(components)} components, over {V2_MAX_COMPONENTS}"
    for component in components:
        if component["tag"] in DROPPED_IN_V2:
            return f"card 2.0 has no {component['tag']!r} component"
        if component["tag"] == "button":
            problem = _button_v2(component)
            if problem:
                return problem
    return _header_problem(card)


def _button_v2(button: dict) -> str | None:
    behaviors = button.get("behaviors")
    if not isinstance(behaviors, list) or not behaviors:
        return "card 2.0 button needs behaviors (custom bots: open_url only)"
    for behavior in behaviors:
        if not isinstance(behavior, dict) or behavior.get("type") != "open_url":
            return f"button behavior {behavior!r}: custom bots support only open_url"
        if not _is_web_url(behavior.get("default_url")):
            return f"button default_url {behavior.get('default_url')!r} is not an http(s) URL"
        for key in ("pc_url", "ios_url", "android_url"):
            if behavior.get(key) and not _is_web_url(behavior[key]):
                return f"button {key} {behavior[key]!r} is not an http(s) URL"
    return None


def _header_problem(card: dict) -> str | None:
    header = card.get("header", {})
    if not isinstance(header, dict):
        return "card.header must be an object"
    if "template" in header and header["template"] not in COLOURS:
        return f"header.template {header['template']!r} is not one of the 13 colours"
    return None


def _components(node: object) -> Iterator[dict]:
    """Every object with a tag, recursively: Feishu counts a plain_text too (A.4)."""
    if isinstance(node, dict):
        if isinstance(node.get("tag"), str):
            yield node
        for value in node.values():
            yield from _components(value)
    elif isinstance(node, list):
        for item in node:
            yield from _components(item)


def _is_component(node: object) -> bool:
    return isinstance(node, dict) and isinstance(node.get("tag"), str)


def _is_web_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


_SHAPES: dict[str, Callable[[dict], str | None]] = {
    "text": lambda c: _only_strings(c, "text"),
    "post": _post,
    "image": lambda c: _only_strings(c, "image_key"),
    "share_chat": lambda c: _only_strings(c, "share_chat_id"),
    "interactive": _interactive,
}


# -- mentions (A.7) -----------------------------------------------------------------------
def mention_problem(message: dict) -> str | None:
    """A card mention Feishu would refuse with 11246.

    Only cards are checked: the observed 11246 was for a card, and in text and post
    messages the guide says an unknown id just shows the name and notifies nobody.
    """
    if message.get("msg_type") != "interactive":
        return None
    for text in _all_strings(message["card"]):
        for tag, attrs in MENTION_TAG.findall(text):
            problem = _mention_attrs(tag.lower(), dict(
                (m[0].lower(), m[1] or m[2] or m[3]) for m in TAG_ATTR.findall(attrs)))
            if problem:
                return problem
    return None


def _mention_attrs(tag: str, attrs: dict[str, str]) -> str | None:
    names = {"at": ("id", "ids", "user_id"), "person": ("id",)}[tag]
    others = set(attrs) - set(names)
    if others:
        return f"<{tag}> by {sorted(others)}: custom bots mention by open_id or user_id only"
    ids = [i.strip() for name in names for i in attrs.get(name, "").split(",") if name in attrs]
    if not ids:
        return f"<{tag}> without an id"
    for value in ids:
        if not MENTION_ID.fullmatch(value) or (tag == "person" and value == "all"):
            return f"<{tag}> id {value!r} is neither all, an open_id (ou_…) nor a user_id"
    return None


def _all_strings(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _all_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _all_strings(item)
