"""Feishu's answers to an app's Open API calls: its codes, what each means, what to fix.

`classify` turns an answer into a SendResult from a table, on both the HTTP status and the
body's `code` (a 200 is not success until the code says 0). The codes and their classes
are ../shared/feishu-app-protocol.md §10 (the retry and classification cheat-sheet), with
the messages of §1.4, §2.5, §2.6, §3.3 and §5.4. The advice names the app's settings and
Feishu's console, and for a missing scope, the scopes Feishu asked for.

Token answers (99991663 and its kin) are classified BAD_TOKEN here; the client refreshes
the token once and retries on them (`refreshes`), so delivery sees them only when a fresh
token is refused too.
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from ..feishu.answers import _body_excerpt, _retry_after
from ..outcome import (
    APP_UNAVAILABLE, BAD_CREDENTIALS, BAD_MENTION, BAD_REQUEST, BAD_TOKEN, CLIENT_ERROR, DETAIL_LIMIT, HTTP_429,
    IP_NOT_ALLOWED, MESSAGE_GONE, MISSING_SCOPE, NOT_IN_CHAT, OK, QUOTA_EXCEEDED, RATE_LIMITED, SERVER_ERROR, TOO_LARGE,
    UNEXPECTED_ANSWER, URGENT_QUOTA, URGENT_REFUSED, URGENT_UNREAD_LIMIT, USERS_NOT_IN_CHAT, Outcome, SendResult,
)

RETRY, PERMANENT = Outcome.RETRY, Outcome.PERMANENT
# "Message can only be modified within 14 days after sending" (§3.3): unlike a recalled or
# deleted card, it is still in the chat, and can be replied to (§4 names no age limit).
TOO_OLD = 230031

# code -> (outcome, reason): §10, each group with its source section.
CODES: dict[int, tuple[Outcome, str]] = {
    # rate limited (§2.4, §2.6): back off, honour x-ogw-ratelimit-reset, same uuid
    **dict.fromkeys((99991400, 230020, 11232, 11233, 11247), (RETRY, RATE_LIMITED)),
    # in flight, and transient server errors (§2.5, §2.6)
    **dict.fromkeys((230049, 18121, 1500, 2200, 5000, 10101, 1663, 1668), (RETRY, SERVER_ERROR)),
    # the token (§1.4): refreshed once by the client first
    **dict.fromkeys((99991661, 99991663, 99991664, 99991665, 99991671, 20013), (PERMANENT, BAD_TOKEN)),
    # the token endpoint's credential refusals (§1.4; which one it returns is UNCONFIRMED)
    **dict.fromkeys((10013, 10014, 10015), (PERMANENT, BAD_CREDENTIALS)),
    # the card is gone or frozen (§3.3): send a new one instead
    **dict.fromkeys((230011, TOO_OLD, 230110), (PERMANENT, MESSAGE_GONE)),
    # configuration (§1.4, §2.5, §2.6)
    99991672: (PERMANENT, MISSING_SCOPE),
    10023: (PERMANENT, MISSING_SCOPE),
    99991401: (PERMANENT, IP_NOT_ALLOWED),
    **dict.fromkeys((99991673, 230006, 11205, 11240), (PERMANENT, APP_UNAVAILABLE)),
    **dict.fromkeys((230002, 230034, 232009, 10002, 10030), (PERMANENT, NOT_IN_CHAT)),
    **dict.fromkeys((230013, 230018, 230027, 230035, 230053, 230038, 230054, 230075), (PERMANENT, CLIENT_ERROR)),
    99991403: (PERMANENT, QUOTA_EXCEEDED),
    # content (§2.5, §2.6)
    **dict.fromkeys((230001, 230022, 230028, 230012, 230015, 230017, 230019, 230071, 230072, 9499),
                    (PERMANENT, BAD_REQUEST)),
    **dict.fromkeys((230025, 19036), (PERMANENT, TOO_LARGE)),
    99992361: (PERMANENT, BAD_MENTION),
    # urgent (§5.4)
    230023: (PERMANENT, URGENT_UNREAD_LIMIT),
    230024: (PERMANENT, URGENT_QUOTA),
    **dict.fromkeys((230052, 230098, 10019), (PERMANENT, URGENT_REFUSED)),
}
# 230099 (card content) sub-codes, found in its msg (§2.5): a lock while someone clicks is
# transient; a bad <at> is a mention problem; the rest is the card's.
_CARD_LOCK = re.compile(r"11310.*lock", re.IGNORECASE | re.DOTALL)

# Advice for an app bot, by code where the code says more than its reason.
_ADVICE_BY_CODE = {
    230002: "the app's bot is not in the chat: add the bot to the group (群设置 > 群机器人), or check chat_id",
    230034: "chat_id names no chat the app can see: check the bot's chat_id",
    232009: "the chat was dissolved: point the bot at another chat_id",
    230006: "the app's bot capability is off or not released: enable 机器人 and publish a version of the app",
    99991673: "the app is disabled or not installed in the company: check it in the developer console",
    230018: "the group lets only some members speak: allow the bot to, in the group's settings",
    230027: "the app lacks permission for this chat (an external group?): check the app's permissions",
    230035: "the bot may not speak in this chat (muted, blocked or a company policy)",
    99991401: "this machine's IP address is not in the app's IP allow-list: add it in the developer console",
    230011: "the card was recalled: a new one is sent",
    230110: "the card was deleted: a new one is sent",
    230031: "the card is over 14 days old and cannot be updated: a new one is sent",
    230052: "the group does not let the bot send urgent messages: in 群设置 allow all members to, or make the "
            "bot an admin",
    230023: "someone to buzz has 200 unread urgent messages: they must read them before more reach them",
    230024: "the company's SMS/phone urgent quota is spent (admin console > 费用中心): use kind: app",
    99991403: "the company's monthly API call quota is spent (free plan): it resets on the 1st",
}
ADVICE = {
    OK: "nothing to fix: Feishu accepted the call",
    BAD_TOKEN: "Feishu refused the app's access token even after a refresh: check the app's app_id, and that "
               "no one rotated its secret",
    BAD_CREDENTIALS: "Feishu refused the app's credentials: check apps[].app_id and app_secret (the console's "
                     "凭证与基础信息 page), and that the app is not a Lark app configured with domain: feishu",
    MISSING_SCOPE: "the app lacks a permission: grant it in the developer console (权限管理) and publish a new "
                   "version (it takes effect only once an admin approves it)",
    NOT_IN_CHAT: "the app's bot is not in the chat: add it to the group, or check chat_id",
    APP_UNAVAILABLE: "the app's bot is not usable: enable 机器人 and publish a version of the app",
    MESSAGE_GONE: "the message can no longer be updated: a new one is sent",
    RATE_LIMITED: "Feishu rate-limited the app (5 messages/s per chat, 50/s and 1000/min per app): lower the "
                  "bot's rate_limit",
    USERS_NOT_IN_CHAT: "some people to buzz are not in the chat, so Feishu buzzed only the others: add them to "
                       "the group",
    URGENT_REFUSED: "Feishu refused to buzz for this message: check the group's urgent setting",
    CLIENT_ERROR: "Feishu refused the call for this chat: check the app's permissions and the group's settings",
    UNEXPECTED_ANSWER: "the answer did not come from Feishu's Open API or has an unknown code: check apps[].domain "
                       "or base_url, and any proxy in between",
}


def result(outcome: Outcome, reason: str, code: int | None = None, http_status: int | None = None,
           detail: str = "", retry_after: float | None = None, message_id: str | None = None) -> SendResult:
    """A SendResult with advice for an app bot."""
    return SendResult(outcome, reason, code, http_status, detail[:DETAIL_LIMIT], retry_after, message_id,
                      advice=_ADVICE_BY_CODE.get(code or 0) or ADVICE.get(reason, ""))


def classify(http_status: int, body: object, headers: Mapping[str, str]) -> SendResult:
    """An Open API answer as an outcome: success is HTTP 2xx with code 0."""
    code, msg = _code(body)
    retry_after = _retry_after(headers)
    if code == 0 and 200 <= http_status < 300:
        return result(Outcome.SENT, OK, 0, http_status, msg, message_id=_message_id(body))
    if code is not None and code != 0:
        outcome, reason = _classify_code(code, msg)
        found = result(outcome, reason, code, http_status, msg, retry_after)
        if reason == MISSING_SCOPE:
            found = _with_scopes(found, msg)
        return found
    if http_status == 429:
        return result(RETRY, HTTP_429, None, http_status, _body_excerpt(body), retry_after)
    if http_status >= 500 or (200 <= http_status < 300):
        # A 5xx, or a 2xx that is not an Open API answer (a captive portal, a cut body): the
        # fault is most likely in between and passes; delivery bounds the attempts.
        return result(RETRY, SERVER_ERROR if http_status >= 500 else UNEXPECTED_ANSWER, None, http_status,
                      _body_excerpt(body), retry_after)
    # 4xx without a code, or 1xx/3xx (redirects are not followed: they would carry the token).
    return result(PERMANENT, CLIENT_ERROR if 400 <= http_status < 500 else UNEXPECTED_ANSWER, None, http_status,
                  _body_excerpt(body))


def refreshes(found: SendResult) -> bool:
    """Whether the answer says the token is invalid or expired: refresh once and retry."""
    return found.reason == BAD_TOKEN


def _classify_code(code: int, msg: str) -> tuple[Outcome, str]:
    if code == 230099:
        if _CARD_LOCK.search(msg):
            return RETRY, RATE_LIMITED
        return (PERMANENT, BAD_MENTION) if "100290" in msg else (PERMANENT, BAD_REQUEST)
    if code == 230001 and "user_id_list" in msg:
        return PERMANENT, USERS_NOT_IN_CHAT      # urgent: every user invalid (§5.1)
    # An unknown code is Feishu saying no in a way we cannot read: the same call would most
    # likely get the same answer.
    return CODES.get(code, (PERMANENT, UNEXPECTED_ANSWER))


def _with_scopes(found: SendResult, msg: str) -> SendResult:
    """The advice names the scopes Feishu asked for ("…one of the following scopes is required: [a, b]")."""
    scopes = re.findall(r"[a-z]+:[A-Za-z0-9_.:]+", msg.partition("required")[2])
    if not scopes:
        return found
    return SendResult(found.outcome, found.reason, found.code, found.http_status, found.detail, found.retry_after,
                      advice=f"the app lacks a permission: grant one of {', '.join(scopes)} in the developer console "
                             "(权限管理) and publish a new version (it takes effect once an admin approves it)")


def _code(body: object) -> tuple[int | None, str]:
    if not isinstance(body, dict):
        return None, ""
    code = body.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        msg = body.get("msg")
        return code, msg if isinstance(msg, str) else json.dumps(msg)[:DETAIL_LIMIT] if msg is not None else ""
    return None, ""


def _message_id(body: object) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    found = data.get("message_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) and found else None
