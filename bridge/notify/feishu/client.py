"""Feishu/Lark custom-bot client: sign, send once, classify the answer.

The client returns an outcome (sent, retry, permanent) with a reason; it decides no
policy. Retrying, backoff and dead-lettering belong to the delivery layer.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

import requests
from requests.utils import get_auth_from_url

from ..._version import __version__
from ...clock import SYSTEM_CLOCK, Clock
from ...secret import mask_url
from ..outcome import BAD_URL, CONNECTION_ERROR, DETAIL_LIMIT, TIMEOUT, Outcome, SendResult, may_have_arrived
from .answers import classify, result
from .sign import signed_body

if TYPE_CHECKING:
    from ...config import Bot


class FeishuClient:
    """Sends one message to one bot, once; never raises for a network or Feishu failure."""

    def __init__(
        self,
        session: requests.Session | None = None,
        clock: Clock = SYSTEM_CLOCK,
        logger: logging.Logger | None = None,
    ):
        self._session = session if session is not None else requests.Session()
        self._clock = clock
        # A child of the service's `bridge` logger, so its handlers and level apply.
        self._log = logger if logger is not None else logging.getLogger("bridge.notify.feishu")

    def send(self, bot: Bot, body: dict) -> SendResult:
        if bot.webhook_url is None:
            raise ValueError(f"bot {bot.name!r} has no webhook_url (a dry-run bot is not sent)")
        sent = _scrubbed(self._post(bot, body), _secrets_of(bot))
        self._log.debug(
            "feishu bot=%s url=%s outcome=%s reason=%s code=%s status=%s",
            bot.name, _masked(bot.webhook_url.reveal()), sent.outcome.value, sent.reason,
            sent.code, sent.http_status,
        )
        return sent

    def _post(self, bot: Bot, message: dict) -> SendResult:
        assert bot.webhook_url is not None
        proxies = None
        if bot.proxy_url:
            proxy = bot.proxy_url.reveal()
            proxies = {"http": proxy, "https": proxy}
        data = signed_body(message, bot, self._clock.now())  # outside the try: not a URL problem
        try:
            response = self._session.post(
                bot.webhook_url.reveal(),
                data=data,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": f"feishu-alert-bridge/{__version__}",
                },
                timeout=(bot.connect_timeout, bot.read_timeout),
                proxies=proxies,
                allow_redirects=False,
            )
        except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            return dataclasses.replace(result(Outcome.RETRY, TIMEOUT, detail=_describe(exc)), unknown=may_have_arrived(exc))
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            return result(Outcome.PERMANENT, BAD_URL, detail=_describe(exc))
        except requests.RequestException as exc:
            return dataclasses.replace(result(Outcome.RETRY, CONNECTION_ERROR, detail=_describe(exc)),
                                       unknown=may_have_arrived(exc))
        except ValueError as exc:
            # URLs that urllib3 and the standard library refuse only when a request is made,
            # and not as requests' exceptions: a port over 65535, a host name label over 63
            # characters, a proxy password HTTP Basic cannot carry (not Latin-1).
            return result(Outcome.PERMANENT, BAD_URL, detail=_describe(exc))
        return classify(response.status_code, _parse(response), response.headers)


def _parse(response: requests.Response) -> object:
    try:
        return response.json()
    # json raises RecursionError, not ValueError, for arrays nested deeper than the
    # interpreter's recursion limit: still garbage, not a reason to raise.
    except (ValueError, RecursionError):
        return response.text[:DETAIL_LIMIT]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _secrets_of(bot: Bot) -> list[str]:
    """Every string that must not leave the client, longest first."""
    found: list[str] = []
    if bot.webhook_url:
        url = bot.webhook_url.reveal()
        token = urlsplit(url).path.rpartition("/")[2]
        found += [url, token, quote(token, safe="")]
    if bot.secret:
        found.append(bot.secret.reveal())
    if bot.proxy_url:
        proxy = bot.proxy_url.reveal()
        user, password = get_auth_from_url(proxy)
        found += [proxy, urlsplit(proxy).password or "", password]
        if password:
            # The Proxy-Authorization value requests sends, which an error page may echo.
            found.append(base64.b64encode(f"{user}:{password}".encode("latin-1", "replace")).decode())
    return sorted({s for s in found if s}, key=len, reverse=True)


# requests and urllib3 put the request URL (and so the token) into their messages.
_HOOK_PATH = re.compile(r"(/hook/)[^\s'\"()<>]+")


def _scrubbed(sent: SendResult, secrets: list[str]) -> SendResult:
    detail = sent.detail
    for value in secrets:
        detail = detail.replace(value, _masked(value))
    detail = _HOOK_PATH.sub(r"\1<token>", detail)[:DETAIL_LIMIT]
    if detail == sent.detail:
        return sent
    return dataclasses.replace(sent, detail=detail)


def _masked(value: str) -> str:
    """How a secret is shown: a URL with its token masked, anything else as <secret>."""
    if "://" not in value:
        return "<secret>"
    try:
        return mask_url(value)
    except ValueError:  # a port over 65535, which urlsplit reads only when asked
        return "<secret>"
