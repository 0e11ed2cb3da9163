"""Keeping an app's secrets out of results: the app secret, the tokens a call used, the
proxy's credentials. requests and urllib3 put URLs and headers into their messages, and an
error page may echo the request (its Authorization header): `scrubbed` masks every form."""

from __future__ import annotations

import base64
import dataclasses
from typing import TYPE_CHECKING, Iterable
from urllib.parse import quote, urlsplit

from requests.utils import get_auth_from_url

from ..outcome import DETAIL_LIMIT, SendResult

if TYPE_CHECKING:
    from ...config import Bot

MASK = "<secret>"


def secrets_of(bot: Bot, tokens: Iterable[str]) -> list[str]:
    """Every string that must not leave the client, longest first."""
    found = [t for t in tokens if t]
    if bot.app is not None:
        secret = bot.app.app_secret.reveal()
        found += [secret, quote(secret, safe="")]
    if bot.proxy_url:
        proxy = bot.proxy_url.reveal()
        user, password = get_auth_from_url(proxy)
        found += [proxy, urlsplit(proxy).password or "", password]
        if password:
            found.append(base64.b64encode(f"{user}:{password}".encode("latin-1", "replace")).decode())
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrubbed(sent: SendResult, secrets: list[str]) -> SendResult:
    detail = sent.detail
    for value in secrets:
        detail = detail.replace(value, MASK)
    detail = detail[:DETAIL_LIMIT]
    return sent if detail == sent.detail else dataclasses.replace(sent, detail=detail)
