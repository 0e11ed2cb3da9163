"""Feishu's answers to a custom bot's POST: its codes, what each means, what to fix.

`classify` turns an answer into a SendResult from a table; the advice is worded for a
Feishu custom bot, with its setting names (webhook_url, proxy_url, keywords).
"""

from __future__ import annotations

import json
from typing import Mapping

from ..outcome import (
    BAD_MENTION,
    BAD_REQUEST,
    BAD_SIGNATURE,
    BAD_TOKEN,
    BAD_URL,
    CLIENT_ERROR,
    CONNECTION_ERROR,
    DETAIL_LIMIT,
    HTTP_429,
    IP_NOT_ALLOWED,
    KEYWORD_MISSING,
    OK,
    RATE_LIMITED,
    SERVER_ERROR,
    TIMEOUT,
    TOO_LARGE,
    UNEXPECTED_ANSWER,
    Outcome,
    SendResult,
)

ADVICE = {
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


def result(outcome: Outcome, reason: str, code: int | None = None, http_status: int | None = None,
           detail: str = "", retry_after: float | None = None) -> SendResult:
    """A SendResult with this module's advice for its reason."""
    return SendResult(outcome, reason, code, http_status, detail, retry_after, advice=ADVICE[reason])


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
        return result(Outcome.SENT, OK, code, http_status, msg)
    if code is not None and code != 0:
        outcome, reason = _classify_code(code, msg)
        if reason != UNEXPECTED_ANSWER or 200 <= http_status < 300:
            return result(outcome, reason, code, http_status, msg, retry_after)
    outcome, reason = _classify_status(http_status)
    detail = msg or _body_excerpt(body)
    return result(outcome, reason, code, http_status, detail, retry_after)


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
