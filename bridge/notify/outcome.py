"""What a channel says happened to one send: an outcome, a reason from a closed set, advice.

The channel only classifies; it decides no policy. Retrying, backoff and dead-lettering
belong to the delivery layer, which acts on `outcome` alone. The reason is for people and
metrics: it is a label value, so the set is closed (a new channel that needs a new kind of
answer adds its reason here, with advice worded for any channel).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import requests
from urllib3.exceptions import NewConnectionError


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
# App bots (issue 13; bridge.notify.feishu_app.answers words them with Feishu's settings).
MESSAGE_GONE = "message_gone"              # recalled, deleted or too old to update: post a new one
NOT_IN_CHAT = "not_in_chat"                # the bot is not in the chat (or the chat is gone)
MISSING_SCOPE = "missing_scope"            # the app lacks a permission (scope)
APP_UNAVAILABLE = "app_unavailable"        # bot capability off, app not published, disabled
BAD_CREDENTIALS = "bad_credentials"        # app_id / app_secret refused
QUOTA_EXCEEDED = "quota_exceeded"          # the tenant's monthly API quota
USERS_NOT_IN_CHAT = "users_not_in_chat"    # urgent: nobody (or not everyone) to buzz is in the chat
UNKNOWN_USERS = "unknown_users"            # urgent: an email the app cannot resolve to a person
URGENT_REFUSED = "urgent_refused"          # urgent: the group does not let the bot buzz
URGENT_UNREAD_LIMIT = "urgent_unread_limit"   # urgent: someone has 200 unread urgent messages
URGENT_QUOTA = "urgent_quota"              # urgent: the company's SMS/phone urgent quota is spent

# Advice for a result whose channel gave none of its own (a result built outside a
# channel, e.g. by delivery when a channel broke its contract). Each channel words its
# own advice, with its setting names: see notify/feishu/answers.py.
ADVICE = {
    OK: "nothing to fix: the message was accepted",
    TIMEOUT: "no answer in time: check the network or proxy, or raise read_timeout "
    "(the message may still have been delivered)",
    CONNECTION_ERROR: "could not reach the chat service: check DNS, the network, the proxy and TLS",
    SERVER_ERROR: "the chat service answered with a server error: nothing to fix here, it will be retried",
    HTTP_429: "HTTP 429 (too many requests): lower this bot's send rate",
    RATE_LIMITED: "the chat service rate-limited this bot: send less often or group more alerts "
    "per message",
    BAD_TOKEN: "the bot's credentials are invalid or the bot was removed: check the bot's settings",
    BAD_SIGNATURE: "signature mismatch: check the bot's secret and this machine's clock",
    IP_NOT_ALLOWED: "this machine's IP address is not in the bot's IP allow-list: add it in the "
    "bot's security settings",
    KEYWORD_MISSING: "the message contains none of the bot's keywords: add one to the template or "
    "to the bot's keywords setting",
    TOO_LARGE: "the message is over the size limit: shorten the template or send fewer "
    "alerts per message",
    BAD_REQUEST: "the message was refused as malformed: check the template's output and its size",
    BAD_MENTION: "the message mentions someone the chat service cannot resolve: check the mentions",
    BAD_URL: "the bot's address or proxy URL is malformed: check the bot's settings",
    CLIENT_ERROR: "the request was refused: check the bot's address",
    UNEXPECTED_ANSWER: "the answer is not one this channel understands: check the bot's address "
    "and any proxy in between",
    MESSAGE_GONE: "the message can no longer be updated (recalled, deleted or too old): a new one is sent",
    NOT_IN_CHAT: "the bot is not in the chat: add it to the group, or check the chat's id",
    MISSING_SCOPE: "the app lacks a permission: grant it and publish a new version of the app",
    APP_UNAVAILABLE: "the app or its bot is not usable: enable the bot and publish a version of the app",
    BAD_CREDENTIALS: "the app's credentials were refused: check its id and secret",
    QUOTA_EXCEEDED: "the company's monthly API quota is spent: it resets on the 1st",
    USERS_NOT_IN_CHAT: "some people to buzz are not in the chat: add them to it",
    UNKNOWN_USERS: "some people to buzz could not be looked up: check their emails and the app's contacts range",
    URGENT_REFUSED: "the group does not let the bot send urgent messages: allow it in the group's settings",
    URGENT_UNREAD_LIMIT: "someone has too many unread urgent messages to be buzzed again",
    URGENT_QUOTA: "the company's SMS/phone urgent quota is spent",
}

REASONS = frozenset(ADVICE)

# A far end's message is kept for the operator, but a card echo must not flood logs or
# labels: a channel cuts `detail` to this many characters.
DETAIL_LIMIT = 300


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    reason: str                        # one of REASONS
    code: int | None = None            # the far end's body code, when there was one
    http_status: int | None = None
    detail: str = ""                   # the far end's message or the error text, scrubbed of secrets
    retry_after: float | None = None   # seconds the far end asked for (Retry-After or its own header)
    # The far end's id of the message it accepted, for a channel that can later update the
    # message in place or reply to it; None from a channel that cannot (custom bots: their
    # answer carries no id). See bridge/notify/__init__.py.
    message_id: str | None = None
    # One sentence saying what to fix, in the channel's words; ADVICE[reason] when empty.
    advice: str = ""
    # The request went out and no answer came back (a read timeout, the connection dropped
    # after the request was written): the far end may have taken it, and may still be
    # working on it. Delivery counts such a request in the rate windows for longer and,
    # for a channel with no idempotency key, waits longer before sending it again.
    unknown: bool = False

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"{self.reason!r} is not a send reason (bridge.notify.outcome.REASONS)")
        if not self.advice:
            object.__setattr__(self, "advice", ADVICE[self.reason])


@dataclass(frozen=True)
class UrgentResult:
    """What came of a 加急 (urgent) call: Feishu's answer, and who was and was not buzzed."""

    result: SendResult
    buzzed: tuple[str, ...] = ()       # the people buzzed (open_ids)
    not_buzzed: tuple[str, ...] = ()   # not buzzed: not in the chat, or not found (open_ids or emails)


def may_have_arrived(exc: requests.RequestException) -> bool:
    """Whether a request that failed with `exc` may have reached the far end: not when
    the connection was never made (a connect timeout, a refused connection, a name that
    does not resolve, a proxy or TLS handshake that failed), else yes (a read timeout, a
    connection reset or closed after the request was written, a garbled answer)."""
    if isinstance(exc, (requests.ConnectTimeout, requests.exceptions.ProxyError, requests.exceptions.SSLError)):
        return False
    if isinstance(exc, requests.ConnectionError):
        first = exc.args[0] if exc.args else None
        # requests wraps urllib3's MaxRetryError, whose reason is the connection's own error.
        if isinstance(getattr(first, "reason", first), NewConnectionError):
            return False
    return True
