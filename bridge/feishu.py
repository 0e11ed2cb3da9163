"""Feishu/Lark custom-bot client: sign, send once, classify the answer.

The client returns an outcome (sent, retry, permanent) with a reason; it decides no
policy. Retrying, backoff and dead-lettering belong to the delivery layer.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping
from urllib.parse import quote, urlsplit

import requests

from . import __version__
from .secret import mask_url

if TYPE_CHECKING:
    from .config import Bot

log = logging.getLogger(__name__)

# Feishu's msg is kept for the operator, but a card echo must not flood logs or labels.
DETAIL_LIMIT = 300


def encode_body(message: dict) -> bytes:
    """The exact bytes sent for a message: the renderer measures these, the client sends them."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def sign(secret: str, timestamp: int) -> str:
    """Feishu's signature: the HMAC-SHA256 of an EMPTY message, keyed with
    `timestamp + "\\n" + secret`, in Base64 (guide, 方式三; unlike DingTalk's scheme)."""
    key = f"{timestamp}\n{secret}".encode("utf-8")
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


def signed_body(message: dict, bot: Bot, now: float) -> bytes:
    """The bytes to POST: the message, plus `timestamp` and `sign` when the bot has a secret.

    Called at send time, not at render time: a message may wait in the outbox for longer
    than the signature window.
    """
    if not bot.secret:
        return encode_body(message)
    timestamp = int(now)
    # The guide shows the timestamp as a string; the fake Feishu insists on it.
    return encode_body(
        {**message, "timestamp": str(timestamp), "sign": sign(bot.secret.reveal(), timestamp)}
    )


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    PERMANENT = "permanent"


# Reasons: a closed set, used as a metric label.
OK = "ok"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
SERVER_ERROR = "server_error"
HTTP_429 = "http_429"
RATE_LIMITED = "rate_limited"
BAD_TOKEN = "bad_token"
BAD_SIGNATURE = "bad_signature"
IP_NOT_ALLOWED = "ip_not_allowed"
KEYWORD_MISSING = "keyword_missing"
TOO_LARGE = "too_large"
BAD_REQUEST = "bad_request"
BAD_MENTION = "bad_mention"
BAD_URL = "bad_url"
CLIENT_ERROR = "client_error"
UNEXPECTED_ANSWER = "unexpected_answer"

_ADVICE = {
    OK: "nothing to fix: Feishu accepted the message",
    TIMEOUT: "Feishu did not answer in time: check the network or proxy, or raise read_timeout "
    "(the message may still have been delivered)",
    CONNECTION_ERROR: "could not reach Feishu: check DNS, the network, the proxy (proxy_url or "
    "HTTPS_PROXY) and TLS",
    SERVER_ERROR: "Feishu answered with a server error: nothing to fix here, it will be retried",
    HTTP_429: "Feishu answered HTTP 429 (too many requests): lower this bot's send rate",
    RATE_LIMITED: "Feishu rate-limited this bot (5/s, 100/min per bot, busier at :00 and :30): "
    "send less often or group more alerts per message",
    BAD_TOKEN: "the webhook URL's token is invalid or the bot was removed: check webhook_url",
    BAD_SIGNATURE: "signature mismatch: check the bot's secret and this machine's clock",
    IP_NOT_ALLOWED: "this machine's IP address is not in the bot's IP allow-list: add it in the "
    "bot's security settings",
    KEYWORD_MISSING: "the message contains none of the bot's keywords: add one to the template or "
    "to the bot's keywords setting",
    TOO_LARGE: "the message is over Feishu's size limit: shorten the template or send fewer "
    "alerts per message",
    BAD_REQUEST: "Feishu refused the message as malformed or over 20 KB: check the template's "
    "output and its size",
    BAD_MENTION: "the message mentions someone Feishu cannot resolve: custom bots can @ only by "
    "open_id or user_id, not email",
    BAD_URL: "the webhook or proxy URL is malformed: check webhook_url and proxy_url",
    CLIENT_ERROR: "Feishu refused the request: check webhook_url (is it a Feishu bot webhook?)",
    UNEXPECTED_ANSWER: "the answer did not come from Feishu's bot API or has an unknown code: "
    "check webhook_url and any proxy in between",
}

REASONS = frozenset(_ADVICE)


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reason: str                        # one of REASONS
    code: int | None = None            # Feishu's body code, when there was one
    http_status: int | None = None
    detail: str = ""                   # Feishu's msg or the error text, scrubbed of secrets
    retry_after: float | None = None   # seconds, from Retry-After / x-ogw-ratelimit-reset

    @property
    def advice(self) -> str:
        """One sentence saying what to fix."""
        return _ADVICE[self.reason]


# (outcome, reason) per Feishu body code; protocols.md A.10 and D.2. 9499 is looked up in
# _classify_code, because the same code means both "bad request" and "too many request".
_CODES: dict[int, tuple[Outcome, str]] = {
    9499: (Outcome.PERMANENT, BAD_REQUEST),
    11232: (Outcome.RETRY, RATE_LIMITED),
    11246: (Outcome.PERMANENT, BAD_MENTION),
    19001: (Outcome.PERMANENT, BAD_TOKEN),
    19002: (Outcome.PERMANENT, BAD_REQUEST),
    19021: (Outcome.PERMANENT, BAD_SIGNATURE),
    19022: (Outcome.PERMANENT, IP_NOT_ALLOWED),
    19024: (Outcome.PERMANENT, KEYWORD_MISSING),
    19036: (Outcome.PERMANENT, TOO_LARGE),
    # OpenAPI throttling (FS-rate); not seen from bot/v2/hook, harmless to know.
    99991400: (Outcome.RETRY, RATE_LIMITED),
}


def classify(http_status: int, body: object, headers: Mapping[str, str]) -> SendResult:
    """Turn Feishu's answer into an outcome: the body's code first, then the HTTP status.

    Success is `code == 0` (or `StatusCode == 0` in older answers) with a 2xx status;
    a 200 alone is not success, because Feishu answers most refusals with HTTP 200.
    """
    code, msg = _feishu_code(body)
    retry_after = _retry_after(headers)
    if code == 0 and 200 <= http_status < 300:
        return SendResult(Outcome.SENT, OK, code, http_status, msg)
    if code is not None and code != 0:
        outcome, reason = _classify_code(code, msg)
        if reason != UNEXPECTED_ANSWER or 200 <= http_status < 300:
            return SendResult(outcome, reason, code, http_status, msg, retry_after)
    outcome, reason = _classify_status(http_status)
    detail = msg or _body_excerpt(body)
    return SendResult(outcome, reason, code, http_status, detail, retry_after)


def _classify_code(code: int, msg: str) -> tuple[Outcome, str]:
    if code == 9499 and "too many request" in msg.lower():
        # The burst answer actually seen (HTTP 400), unlike the documented 11232 (D.2).
        return Outcome.RETRY, RATE_LIMITED
    # An unknown non-zero code is Feishu saying no in a way we cannot read; sending the
    # same bytes again would most likely get the same answer.
    return _CODES.get(code, (Outcome.PERMANENT, UNEXPECTED_ANSWER))


def _classify_status(http_status: int) -> tuple[Outcome, str]:
    if http_status == 429:
        return Outcome.RETRY, HTTP_429
    if http_status >= 500:
        return Outcome.RETRY, SERVER_ERROR
    if 400 <= http_status < 500:
        return Outcome.PERMANENT, CLIENT_ERROR
    if 200 <= http_status < 300:
        # A 2xx without a code is not a Feishu answer (HTML from a captive proxy, a
        # truncated or empty body). It is retried: the fault is usually in between and passes, a lost
        # alert is worse than a duplicate, and delivery's attempt limit still ends a
        # misconfigured URL in the dead letters with this reason.
        return Outcome.RETRY, UNEXPECTED_ANSWER
    # 1xx/3xx (redirects are not followed: a POST would become a GET, possibly to
    # another host carrying the token), or code 0 with a non-2xx status.
    return Outcome.PERMANENT, UNEXPECTED_ANSWER


def _feishu_code(body: object) -> tuple[int | None, str]:
    if not isinstance(body, dict):
        return None, ""
    for code_key, msg_key in (("code", "msg"), ("StatusCode", "StatusMessage")):
        code = body.get(code_key)
        if isinstance(code, int) and not isinstance(code, bool):
            msg = body.get(msg_key)
            return code, msg if isinstance(msg, str) else ""
    return None, ""


def _body_excerpt(body: object) -> str:
    if body is None or body == "":
        return ""
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    return text[:DETAIL_LIMIT]


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from Retry-After (RFC 9110, delta-seconds only: an HTTP-date needs a
    clock, and Feishu documents seconds) or Feishu's x-ogw-ratelimit-reset (FS-rate)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in ("retry-after", "x-ogw-ratelimit-reset"):
        try:
            seconds = float(lowered[name])
        except (KeyError, TypeError, ValueError):
            continue
        if seconds >= 0 and seconds != float("inf"):
            return seconds
    return None


class FeishuClient:
    """Sends one message to one bot, once; never raises for a network or Feishu failure."""

    def __init__(
        self,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._session = session if session is not None else requests.Session()
        self._clock = clock

    def send(self, bot: Bot, message: dict) -> SendResult:
        if bot.webhook_url is None:
            raise ValueError(f"bot {bot.name!r} has no webhook_url (a dry-run bot is not sent)")
        result = _scrubbed(self._post(bot, message), _secrets_of(bot))
        log.debug(
            "feishu bot=%s url=%s outcome=%s reason=%s code=%s status=%s",
            bot.name, bot.webhook_url, result.outcome.value, result.reason,
            result.code, result.http_status,
        )
        return result

    def _post(self, bot: Bot, message: dict) -> SendResult:
        assert bot.webhook_url is not None
        proxies = None
        if bot.proxy_url:
            proxy = bot.proxy_url.reveal()
            proxies = {"http": proxy, "https": proxy}
        try:
            response = self._session.post(
                bot.webhook_url.reveal(),
                data=signed_body(message, bot, self._clock()),
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": f"feishu-alert-bridge/{__version__}",
                },
                timeout=(bot.connect_timeout, bot.read_timeout),
                proxies=proxies,
                allow_redirects=False,
            )
        except requests.Timeout as exc:  # before ConnectionError: ConnectTimeout is both
            return SendResult(Outcome.RETRY, TIMEOUT, detail=_describe(exc))
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            return SendResult(Outcome.PERMANENT, BAD_URL, detail=_describe(exc))
        except requests.RequestException as exc:
            return SendResult(Outcome.RETRY, CONNECTION_ERROR, detail=_describe(exc))
        return classify(response.status_code, _parse(response), response.headers)


def _parse(response: requests.Response) -> object:
    try:
        return response.json()
    except ValueError:
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
        found += [proxy, urlsplit(proxy).password or ""]
    return sorted({s for s in found if s}, key=len, reverse=True)


# requests and urllib3 put the request URL (and so the token) into their messages.
_HOOK_PATH = re.compile(r"(/hook/)[^\s'\"()<>]+")


def _scrubbed(result: SendResult, secrets: list[str]) -> SendResult:
    detail = result.detail
    for value in secrets:
        detail = detail.replace(value, mask_url(value) if "://" in value else "<secret>")
    detail = _HOOK_PATH.sub(r"\1<token>", detail)[:DETAIL_LIMIT]
    if detail == result.detail:
        return result
    return SendResult(result.outcome, result.reason, result.code, result.http_status,
                      detail, result.retry_after)
