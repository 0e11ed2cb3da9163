"""A strict fake of Feishu's Open API for app bots, served over real HTTP on 127.0.0.1.

    with FakeOpenAPI() as fake:
        fake.add_app("cli_a1", "secret")
        fake.add_chat("oc_1", apps=["cli_a1"], members=["ou_alice"])
        ...  # an app bot configured with base_url = fake.base_url
        fake.cards("oc_1")       # the chat's live cards, each in its latest state
        fake.thread(message_id)  # the replies in a card's thread

It keeps the chat as Feishu would show it, and refuses what Feishu refuses with Feishu's
code (model.py lists each rule and its source; answers.py the codes). Calls:

    POST  /open-apis/auth/v3/tenant_access_token/internal          a token (expiring)
    POST  /open-apis/im/v1/messages?receive_id_type=chat_id        send (uuid de-duplicates)
    PATCH /open-apis/im/v1/messages/{id}                           update a card in place
    POST  /open-apis/im/v1/messages/{id}/reply                     reply (in its thread)
    PATCH /open-apis/im/v1/messages/{id}/urgent_app|sms|phone      加急
    POST  /open-apis/contact/v3/users/batch_get_id                 email -> open_id
    GET   /open-apis/contact/v3/users/{open_id}?user_id_type=open_id  a user's name

Card taps (issue 14): `tap(...)` sends a card.action.trigger callback to a bridge the way
Feishu does over HTTP (encrypted, signed, with the verification token): callbacks.py.

Rate limits (every request that reaches them counts, refused or not): 5 messages a second
per chat, sends and replies of every app together (230020); 5 updates a second per
message (230020); per app and API 50 a second and 1000 a minute (99991400, HTTP 429, with
x-ogw-ratelimit-reset) (§2.4, §3.2). Windows use the monotonic clock; `clock` (plus
`advance`) is Feishu's wall clock: it expires tokens and ages messages.

`script(call, *steps)` makes the next requests of a call ("token", "send", "patch",
"reply", "urgent", "contact") answer otherwise; a scripted request skips the checks,
except for a lost answer:
    ("code", code)        Feishu's answer for that code, with its status
    ("http", status[, body[, headers]])
    ("reset",)            read the request, reset the connection
    ("lost_answer",)      check and carry it out as usual, then reset instead of answering
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, urlsplit

from fake_feishu import _drop, _Handler, _read_body, _reply, _Server

from . import answers as a
from . import callbacks
from .model import App, Chat, Message, World

CALLS = ("token", "send", "patch", "reply", "urgent", "contact", "user")
SCRIPT_KINDS = frozenset({"code", "http", "reset", "lost_answer"})


@dataclass(frozen=True)
class Attempt:
    """One request as the fake saw it."""

    call: str
    app_id: str | None
    http_status: int | None          # None: the connection was reset
    code: int | None
    why: str                         # "ok", the rule that refused it, or "script: ..."
    throttled: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    at: float = 0.0                  # time.monotonic() when it was answered


class FakeOpenAPI:
    def __init__(self, *, clock: Callable[[], float] = time.time, chat_per_second: int = 5,
                 message_per_second: int = 5, app_per_second: int = 50, app_per_minute: int = 1000,
                 minute: float = 60.0):
        self._clock = clock
        self._shift = 0.0
        self.world = World()
        self._cond = threading.Condition()
        self._attempts: list[Attempt] = []
        self._scripts: dict[str, deque] = {call: deque() for call in CALLS}
        self._limits = (chat_per_second, message_per_second, app_per_second, app_per_minute, minute)
        self._arrivals: dict[tuple[str, str], deque] = {}
        self._callback_keys: dict[str, tuple[str, str]] = {}   # app_id -> (encrypt key, verification token)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "FakeOpenAPI":
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fake-open-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeOpenAPI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- setting the world up ---------------------------------------------------------------
    def now(self) -> float:
        return self._clock() + self._shift

    def advance(self, seconds: float) -> None:
        """Move Feishu's wall clock on: tokens expire, messages age."""
        with self._cond:
            self._shift += seconds

    def add_app(self, app_id: str, secret: str, *, scopes: Iterable[str] = a.ALL_SCOPES, bot_on: bool = True) -> None:
        with self._cond:
            self.world.apps[app_id] = App(app_id, secret, set(scopes), bot_on)

    def add_chat(self, chat_id: str, *, apps: Iterable[str] = (), members: Iterable[str] = (),
                 urgent_allowed: bool = True, threads: bool = True) -> None:
        with self._cond:
            self.world.chats[chat_id] = Chat(chat_id, set(members), set(apps), urgent_allowed, threads)

    def add_user(self, open_id: str, email: str, name: str | None = None) -> None:
        with self._cond:
            self.world.emails[email] = open_id
            if name is not None:
                self.world.names[open_id] = name

    def set_callback_keys(self, app_id: str, encrypt_key: str, verification_token: str) -> None:
        """The app's Encrypt Key and Verification Token (the console's 事件与回调 page)."""
        with self._cond:
            self._callback_keys[app_id] = (encrypt_key, verification_token)

    def tap(self, url: str, message_id: str, value: Any, *, open_id: str, form: str = "signed",
            chat: str | None = None) -> "callbacks.TapResult":
        """`open_id` taps a button with `value` on the card `message_id`: Feishu posts the
        callback to `url` (in `form`, callbacks.FORMS) and, for a good answer with a card,
        shows that card to everyone in place of the old one (a shared card, §3.2, §6.5)."""
        with self._cond:
            message = self.world.messages[message_id]
            app_id, original = message.app_id, message.content
            encrypt_key, token = self._callback_keys[app_id]
        when = self.now() - (600 if form == "replayed" else 0)
        body = callbacks.card_action(app_id, "not-the-token" if form == "bad_token" else token, open_id=open_id,
                                     chat=chat or message.chat_id, message_id=message_id, value=value, when=when)
        raw, headers = callbacks.request_for(body, encrypt_key, form=form, now=when)
        found = callbacks.post(url, raw, headers, original)
        if found.client_error is None and isinstance(found.answer, dict) and "card" in found.answer:
            with self._cond:
                message.content = found.answer["card"]["data"]
                message.updates += 1
                self._cond.notify_all()
        return found

    def set_urgent_quota(self, count: int) -> None:
        with self._cond:
            self.world.urgent_quota = count

    def set_unread_urgent(self, open_id: str, count: int) -> None:
        """How many urgent messages the user has not read yet (200 is Feishu's limit)."""
        with self._cond:
            self.world.unread_urgent[open_id] = count

    def expire_tokens(self, app_id: str) -> None:
        """Every token of the app expires now (as 2 h later): the next call with one is 99991663."""
        with self._cond:
            self.world.apps[app_id].tokens.clear()

    def recall(self, message_id: str) -> None:
        with self._cond:
            self.world.messages[message_id].recalled = True

    def delete(self, message_id: str) -> None:
        with self._cond:
            self.world.messages[message_id].deleted = True

    def script(self, call: str, *steps: tuple) -> None:
        if call not in CALLS:
            raise ValueError(f"unknown call {call!r}; calls: {CALLS}")
        for step in steps:
            if not step or step[0] not in SCRIPT_KINDS:
                raise ValueError(f"unknown script step {step!r}; kinds: {sorted(SCRIPT_KINDS)}")
        with self._cond:
            self._scripts[call].extend(steps)

    # -- what the chat shows ----------------------------------------------------------------
    def chat(self, chat_id: str) -> list[Message]:
        """The chat's messages as a member sees them: top level, in order, none deleted or recalled."""
        with self._cond:
            found = [self.world.messages[i] for i in self.world.order]
            return [m for m in found if m.chat_id == chat_id and not m.root_id and not m.deleted and not m.recalled]

    def cards(self, chat_id: str) -> list[dict]:
        """The chat's cards, each as it shows now."""
        return [m.content for m in self.chat(chat_id) if m.msg_type == "interactive"]

    def thread(self, message_id: str) -> list[Message]:
        with self._cond:
            return [self.world.messages[i] for i in self.world.order if self.world.messages[i].root_id == message_id]

    def message(self, message_id: str) -> Message:
        with self._cond:
            return self.world.messages[message_id]

    def token_fetches(self, app_id: str) -> int:
        with self._cond:
            return self.world.apps[app_id].fetches

    def attempts(self, call: str | None = None) -> list[Attempt]:
        with self._cond:
            return [t for t in self._attempts if call is None or t.call == call]

    def throttled(self) -> list[Attempt]:
        return [t for t in self.attempts() if t.throttled]

    def wait_for(self, check: Callable[[], Any], timeout: float = 10.0, what: str = "the chat") -> Any:
        """Block until `check()` (called under no lock) is truthy; fail the test saying what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            found = check()
            if found:
                return found
            with self._cond:
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(t.call, t.http_status, t.code, t.why) for t in self._attempts[-20:]]
                    raise AssertionError(f"fake Open API: {what} not within {timeout}s; last attempts: {seen}")
                self._cond.wait(min(left, 0.05))

    # -- serving ------------------------------------------------------------------------------
    def _serve(self, handler: "_Handler") -> None:
        target = urlsplit(handler.path)
        route = _route(handler.command, target.path)
        if route is None:
            return _reply(handler, 404, "404 page not found", close=True)
        call, message_id, kind = route
        query = {k: v[-1] for k, v in parse_qs(target.query).items()}
        raw = _read_body(handler)
        with self._cond:
            step = self._scripts[call].popleft() if self._scripts[call] else ("",)
        if step[0] in ("code", "http", "reset"):
            return self._scripted(handler, call, step)
        headers = {"X-Tt-Logid": secrets.token_hex(8)}
        try:
            with self._cond:
                app, answer = self._carry_out(call, message_id, kind, query, handler, raw)
            attempt = Attempt(call, app, 200, 0, "ok")
            status = 200
        except a.Refused as refusal:
            attempt = Attempt(call, getattr(refusal, "app_id", None), refusal.status, refusal.code, refusal.why,
                              refusal.throttled)
            status, answer = refusal.status, refusal.body
            headers.update(refusal.headers)
        self._record(attempt, handler)
        _reply(handler, status, answer, headers=headers, lost=step[0] == "lost_answer")

    def _scripted(self, handler: "_Handler", call: str, step: tuple) -> None:
        why = f"script: {step!r}"
        if step[0] == "reset":
            self._record(Attempt(call, None, None, None, why), handler)
            return _drop(handler, reset=True)
        if step[0] == "code":
            code = step[1]
            status, answer, headers = a.STATUS.get(code, a.DEFAULT_STATUS), a.body(code), {}
        else:
            status, answer, headers = (list(step[1:]) + ["", {}])[:3]
            answer = answer or f"{status} error"
            code = answer.get("code") if isinstance(answer, dict) else None
        self._record(Attempt(call, None, status, code, why), handler)
        _reply(handler, status, answer, headers=headers)

    def _record(self, attempt: Attempt, handler: "_Handler") -> None:
        with self._cond:
            self._attempts.append(replace(attempt, headers=tuple(handler.headers.items()), at=time.monotonic()))
            self._cond.notify_all()

    def _carry_out(self, call: str, message_id: str, kind: str, query: dict, handler: "_Handler",
                   raw: bytes) -> tuple[str | None, dict]:
        """(the calling app, the answer) of a request that passes every check; raises Refused."""
        request = _json(handler, raw) if call != "user" else {}
        now = self.now()
        if call == "token":
            token, expire = self.world.token(request.get("app_id"), request.get("app_secret"), now)
            return request.get("app_id"), {"code": 0, "msg": "ok", "tenant_access_token": token, "expire": expire}
        app = self.world.caller(handler.headers.get("Authorization"), now, f"urgent_{kind}" if call == "urgent" else call)
        try:
            return app.app_id, {"code": 0, "msg": "success", "data": self._call(app, call, message_id, kind, query,
                                                                                request, now)}
        except a.Refused as refusal:
            refusal.app_id = app.app_id
            raise

    def _call(self, app: App, call: str, message_id: str, kind: str, query: dict, request: dict, now: float) -> dict:
        world = self.world
        if call == "send":
            if query.get("receive_id_type") != "chat_id":
                raise a.Refused(a.INVALID_PARAM, f"receive_id_type {query.get('receive_id_type')!r}",
                                detail="receive_id_type")
            self._count(app, "send", chat=request.get("receive_id"))
            message, _ = world.create(app, request.get("receive_id"), request.get("msg_type"),
                                      request.get("content"), request.get("uuid"), now)
            return message.data()
        if call == "reply":
            root = world.existing(app, message_id, own=None)
            self._count(app, "reply", chat=root.chat_id)
            if request.get("reply_in_thread") and not world.chats[root.chat_id].threads:
                raise a.Refused(a.NO_THREADS, "reply: the group has no threads")
            message, _ = world.create(app, root.chat_id, request.get("msg_type"), request.get("content"),
                                      request.get("uuid"), now, root=root)
            return message.data()
        if call == "patch":
            self._count(app, "patch", message=message_id)
            world.patch(app, message_id, request.get("content"), now)
            return {}
        if call == "urgent":
            if query.get("user_id_type", "open_id") != "open_id":
                raise a.Refused(a.INVALID_PARAM, "user_id_type", detail="user_id_type")
            self._count(app, f"urgent_{kind}")
            return {"invalid_user_id_list": world.urgent(app, message_id, kind, request.get("user_id_list"))}
        if call == "user":
            if query.get("user_id_type", "open_id") != "open_id":
                raise a.Refused(a.INVALID_PARAM, "user_id_type", detail="user_id_type")
            self._count(app, "user")
            if message_id not in world.names:
                raise a.Refused(a.INVALID_PARAM, f"user {message_id!r} unknown", detail="user_id")
            return {"user": {"open_id": message_id, "name": world.names[message_id]}}
        self._count(app, "contact")
        emails = request.get("emails") or []
        return {"user_list": [{"email": e, **({"user_id": world.emails[e]} if e in world.emails else {})}
                              for e in emails]}

    def _count(self, app: App, api: str, *, chat: object = None, message: str | None = None) -> None:
        """Count the request in its windows; refuse it when one is full."""
        chat_rate, message_rate, app_second, app_minute, minute = self._limits
        now = time.monotonic()
        windows = [(("app", f"{app.app_id}:{api}"), app_second, 1.0, a.API_RATE),
                   (("app", f"{app.app_id}:{api}"), app_minute, minute, a.API_RATE)]
        if isinstance(chat, str):
            windows.append((("chat", chat), chat_rate, 1.0, a.CHAT_RATE))
        if message:
            windows.append((("message", message), message_rate, 1.0, a.CHAT_RATE))
        full = None
        for key in dict.fromkeys(w[0] for w in windows):
            arrivals = self._arrivals.setdefault(key, deque())
            while arrivals and arrivals[0] <= now - minute:
                arrivals.popleft()
        for key, limit, span, code in windows:
            seen = sum(1 for t in self._arrivals[key] if t > now - span)
            if seen >= limit and full is None:
                full = (code, f"rate: {seen + 1} in {span:g} s for {key[0]} {key[1]}")
        for key in dict.fromkeys(w[0] for w in windows):
            self._arrivals[key].append(now)
        if full is not None:
            headers = {"x-ogw-ratelimit-limit": str(app_second), "x-ogw-ratelimit-reset": "1"} \
                if full[0] == a.API_RATE else {}
            raise a.Refused(full[0], full[1], throttled=True, headers=headers)


def _route(method: str, path: str) -> tuple[str, str, str] | None:
    """(call, message id, urgent kind) for a request line the fake serves."""
    parts = path.strip("/").split("/")
    if method == "POST" and path == "/open-apis/auth/v3/tenant_access_token/internal":
        return "token", "", ""
    if method == "POST" and path == "/open-apis/contact/v3/users/batch_get_id":
        return "contact", "", ""
    if method == "GET" and parts[:4] == ["open-apis", "contact", "v3", "users"] and len(parts) == 5:
        return "user", parts[4], ""
    if parts[:3] != ["open-apis", "im", "v1"] or len(parts) < 4 or parts[3] != "messages":
        return None
    if method == "POST" and len(parts) == 4:
        return "send", "", ""
    if method == "PATCH" and len(parts) == 5:
        return "patch", parts[4], ""
    if method == "POST" and len(parts) == 6 and parts[5] == "reply":
        return "reply", parts[4], ""
    if method == "PATCH" and len(parts) == 6 and parts[5] in ("urgent_app", "urgent_sms", "urgent_phone"):
        return "urgent", parts[4], parts[5].removeprefix("urgent_")
    return None


def _json(handler: "_Handler", raw: bytes) -> dict:
    if handler.headers.get_content_type() != "application/json":
        raise a.Refused(a.INVALID_PARAM, f"content type {handler.headers.get('Content-Type')!r}",
                        detail="Content-Type")
    try:
        request = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise a.Refused(a.INVALID_PARAM, "the body is not JSON", detail="body") from None
    if not isinstance(request, dict):
        raise a.Refused(a.INVALID_PARAM, "the body is not a JSON object", detail="body")
    return request
