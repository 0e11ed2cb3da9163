"""Feishu/Lark app bots over the Open API: send, update in place, reply in thread, urgent.

Each call is made once (a refused token is refreshed and the call made again, once: the
first was not carried out) and its answer classified (answers.py); the policy (what to
update, when to fall back to a new card, retries) is delivery's. Nothing here raises for
what the network or Feishu does; no secret (the app's secret, a token, proxy
credentials) leaves in a result or a log line.

Requests (../shared/feishu-app-protocol.md): the token §1.1; send §2.1 with `uuid` so a
retry after a lost answer is de-duplicated by Feishu within the hour; PATCH §3.1 (the
whole card); reply §4 (reply_in_thread); urgent §5.1 (at most 200 users a call, open_ids;
people known by email are looked up first, §8.1, and remembered in the store: people.py).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid as uuids
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import quote

import requests

from ..._version import __version__
from ...clock import SYSTEM_CLOCK, Clock
from ...limits import URGENT_MAX_USERS, app_content, encode_body
from ..outcome import (BAD_REQUEST, BAD_URL, CONNECTION_ERROR, OK, TIMEOUT, UNEXPECTED_ANSWER, UNKNOWN_USERS,
                       USERS_NOT_IN_CHAT, Outcome, SendResult, UrgentResult, may_have_arrived)
from .answers import classify, refreshes, result
from .people import MemoryUsers, People, UserStore
from .scrub import scrubbed, secrets_of
from .tokens import Fetched, MemoryTokens, TokenRefused, Tokens, TokenStore

if TYPE_CHECKING:
    from ...config import App, Bot
    from ...model import Mention

TOKEN_PATH = "/open-apis/auth/v3/tenant_access_token/internal"


class AppClient:
    """One process's client for every app bot; `store` shares the apps' tokens between
    processes and `users` the emails looked up (both bridge.store.Outbox); without them
    they are kept in memory."""

    def __init__(self, store: TokenStore | None = None, *, users: UserStore | None = None,
                 session: requests.Session | None = None, clock: Clock = SYSTEM_CLOCK,
                 logger: logging.Logger | None = None, metrics: Any = None):
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        self._log = logger if logger is not None else logging.getLogger("bridge.notify.feishu_app")
        self._metrics = metrics
        self.tokens = Tokens(store if store is not None else MemoryTokens(), clock)
        self.people = People(users if users is not None else MemoryUsers(), clock)

    # -- what a channel does ---------------------------------------------------------------
    def send(self, bot: Bot, body: dict) -> SendResult:
        """Post `body` as a new message (bridge.notify.Channel): a fresh uuid, since a caller of
        plain `send` has no identity to give (delivery calls `post`)."""
        return self.post(bot, body, uuid=uuids.uuid4().hex)

    # -- what an app bot can do besides -----------------------------------------------------
    def post(self, bot: Bot, body: dict, *, uuid: str) -> SendResult:
        msg_type, content = app_content(body)
        request = {"receive_id": _chat(bot), "msg_type": msg_type, "content": content, "uuid": uuid}
        return self._call(bot, "send", "POST", "/open-apis/im/v1/messages?receive_id_type=chat_id", request)

    def update(self, bot: Bot, message_id: str, body: dict) -> SendResult:
        msg_type, content = app_content(body)
        if msg_type != "interactive":
            return result(Outcome.PERMANENT, BAD_REQUEST, detail=f"only cards can be updated, not {msg_type}")
        return self._call(bot, "update", "PATCH", f"/open-apis/im/v1/messages/{quote(message_id)}", {"content": content})

    def reply(self, bot: Bot, message_id: str, body: dict, *, uuid: str) -> SendResult:
        msg_type, content = app_content(body)
        request = {"msg_type": msg_type, "content": content, "reply_in_thread": True, "uuid": uuid}
        return self._call(bot, "reply", "POST", f"/open-apis/im/v1/messages/{quote(message_id)}/reply", request)

    def urgent(self, bot: Bot, message_id: str, kind: str, people: Sequence[Mention]) -> UrgentResult:
        """Buzz `people` (open_ids, or emails looked up through the app) for the message."""
        ids, unknown, failed = self._open_ids(bot, people)
        if failed is not None:
            return UrgentResult(failed, not_buzzed=tuple(unknown))
        if not ids:
            return UrgentResult(result(Outcome.PERMANENT, UNKNOWN_USERS, detail=f"not found: {', '.join(unknown)}"),
                                not_buzzed=tuple(unknown))
        buzzed, missed, last = [], list(unknown), None
        for start in range(0, len(ids), URGENT_MAX_USERS):
            chunk = ids[start:start + URGENT_MAX_USERS]
            last, data = self._call_data(bot, f"urgent_{kind}", "PATCH", f"/open-apis/im/v1/messages/"
                                         f"{quote(message_id)}/urgent_{kind}?user_id_type=open_id",
                                         {"user_id_list": chunk})
            if last.outcome is not Outcome.SENT:
                return UrgentResult(last, tuple(buzzed), tuple(missed + chunk))
            invalid = [u for u in (data.get("invalid_user_id_list") or []) if isinstance(u, str)]
            buzzed += [u for u in chunk if u not in invalid]
            missed += invalid
        if missed:
            last = result(Outcome.SENT, USERS_NOT_IN_CHAT if len(missed) > len(unknown) else UNKNOWN_USERS, 0,
                          last.http_status, f"not buzzed: {', '.join(missed)}")
        return UrgentResult(last, tuple(buzzed), tuple(missed))

    def user_name(self, bot: Bot, open_id: str, timeout: float) -> str | None:
        """The person's name (contact API, §8.3), or None: the app lacks the scope, the
        person is outside its contacts range, or no answer within `timeout` seconds."""
        quick = dataclasses.replace(bot, connect_timeout=timeout, read_timeout=timeout)
        found, data = self._call_data(quick, "user", "GET", f"/open-apis/contact/v3/users/{quote(open_id, safe='')}"
                                      "?user_id_type=open_id", None)
        user = data.get("user") if found.outcome is Outcome.SENT else None
        name = user.get("name") if isinstance(user, dict) else None
        return name if isinstance(name, str) and name.strip() else None

    # -- internals --------------------------------------------------------------------------
    def _open_ids(self, bot: Bot, people: Sequence[Mention]) -> tuple[list[str], list[str], SendResult | None]:
        ids = [m.user_id for m in people if m.user_id.startswith("ou_")]
        emails = [m.email for m in people if not m.user_id and m.email]
        found, unknown, failed = self.people.open_ids(_key(_app(bot)), emails, lambda wanted: self._lookup(bot, wanted))
        return list(dict.fromkeys(ids + found)), unknown, failed

    def _lookup(self, bot: Bot, emails: list[str]) -> tuple[SendResult, dict]:
        return self._call_data(bot, "contact", "POST", "/open-apis/contact/v3/users/batch_get_id?user_id_type=open_id",
                               {"emails": emails, "include_resigned": False})

    def _call(self, bot: Bot, call: str, method: str, path: str, request: dict) -> SendResult:
        return self._call_data(bot, call, method, path, request)[0]

    def _call_data(self, bot: Bot, call: str, method: str, path: str, request: dict | None) -> tuple[SendResult, dict]:
        """The call's classified answer and its `data`; with a refused token, refreshed once."""
        app = _app(bot)
        key = _key(app)
        used: list[str] = []
        try:
            token = self.tokens.token(key, lambda: self._fetch(bot))
            used.append(token)
            found, data, logid = self._request(bot, method, path, request, token)
            if refreshes(found):
                token = self.tokens.refused(key, token, lambda: self._fetch(bot))
                used.append(token)
                found, data, logid = self._request(bot, method, path, request, token)
        except TokenRefused as refused:
            # The call itself was not sent: whatever became of the token's request.
            found, data, logid = replace(refused.result, unknown=False), {}, ""
        found = scrubbed(found, secrets_of(bot, used))
        self._log.debug("feishu app bot=%s app=%s call=%s outcome=%s reason=%s code=%s status=%s logid=%s",
                        bot.name, app.name, call, found.outcome.value, found.reason, found.code, found.http_status,
                        logid)
        return found, data

    def _fetch(self, bot: Bot) -> Fetched:
        app = _app(bot)
        request = {"app_id": app.app_id, "app_secret": app.app_secret.reveal()}
        found, answer, _ = self._request(bot, "POST", TOKEN_PATH, request, None, whole=True)
        token, expire = answer.get("tenant_access_token"), answer.get("expire")
        if found.outcome is Outcome.SENT and isinstance(token, str) and token and isinstance(expire, (int, float)):
            self._count_fetch(app, OK)
            return Fetched(token, self._clock.now() + float(expire))
        if found.outcome is Outcome.SENT:
            found = result(Outcome.RETRY, UNEXPECTED_ANSWER, 0, found.http_status, "a token answer without a token")
        self._count_fetch(app, found.reason)
        raise TokenRefused(scrubbed(found, secrets_of(bot, [])))

    def _request(self, bot: Bot, method: str, path: str, request: dict | None, token: str | None, *,
                 whole: bool = False) -> tuple[SendResult, dict, str]:
        """One HTTP request: (its answer classified, the body's data (or the whole body), its log id)."""
        headers = {"User-Agent": f"feishu-alert-bridge/{__version__}"}
        if request is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        proxy = bot.proxy_url.reveal() if bot.proxy_url else None
        try:
            response = self._session.request(
                method, _app(bot).base_url + path, data=encode_body(request) if request is not None else None,
                headers=headers,
                timeout=(bot.connect_timeout, bot.read_timeout), allow_redirects=False,
                proxies={"http": proxy, "https": proxy} if proxy else None)
        except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            return replace(result(Outcome.RETRY, TIMEOUT, detail=_describe(exc)),
                           unknown=may_have_arrived(exc)), {}, ""
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema, ValueError) as exc:
            # ValueError: what urllib3 refuses only when a request is made (a port over
            # 65535, a label over 63 characters, a proxy password Basic cannot carry).
            return result(Outcome.PERMANENT, BAD_URL, detail=_describe(exc)), {}, ""
        except requests.RequestException as exc:
            return replace(result(Outcome.RETRY, CONNECTION_ERROR, detail=_describe(exc)),
                           unknown=may_have_arrived(exc)), {}, ""
        body = _parse(response)
        found = classify(response.status_code, body, response.headers)
        data = body if whole else body.get("data") if isinstance(body, dict) else None
        return found, data if isinstance(data, dict) else {}, response.headers.get("X-Tt-Logid", "")

    def _count_fetch(self, app: App, outcome: str) -> None:
        if self._metrics is not None:
            try:
                self._metrics.token_refreshes.labels(app.name, outcome).inc()
            except Exception:   # a metric must never fail a send
                self._log.exception("counting a metric failed", extra={"event": "metrics_failed"})


def _app(bot: Bot) -> App:
    if bot.app is None:
        raise ValueError(f"bot {bot.name!r} is not an app bot (it has no app:)")
    return bot.app


def _key(app: App) -> str:
    """What the app's token and looked-up users are kept under: an app_id is unique only
    within its Open API (Feishu or Lark)."""
    return f"{app.base_url}|{app.app_id}"


def _chat(bot: Bot) -> str:
    if not bot.chat_id:
        raise ValueError(f"bot {bot.name!r} has no chat_id")
    return bot.chat_id


def _parse(response: requests.Response) -> object:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return response.text[:300]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


__all__ = ["AppClient", "OK"]
