"""What the fake Open API answers: Feishu's codes and messages, with their HTTP statuses.

Every code and text is from ../shared/feishu-app-protocol.md (the section is named), which
cites Feishu's pages; those pages give the im errors as HTTP 400 (§2.5). Where the
reference marks something UNCONFIRMED, the choice made here says so, so that a test
never rests on it without knowing.
"""

from __future__ import annotations

# -- success ------------------------------------------------------------------------------
OK = 0

# -- the token endpoint (§1.1, §1.4) --------------------------------------------------------
# "10013 / 10014 / 10015: get tenant access token fail / app unauthorized / wrong app
# secret": which of these the endpoint returns is UNCONFIRMED. Chosen: an unknown app_id
# 10014, a wrong secret 10015.
APP_UNAUTHORIZED = 10014
WRONG_SECRET = 10015

# -- generic platform codes (§1.4, §2.6) -------------------------------------------------------
NEED_TOKEN = 99991661
TOKEN_INVALID = 99991663
NO_SCOPE = 99991672
APP_UNUSABLE = 99991673
API_RATE = 99991400

# -- im/v1 (§2.5, §3.3, §4, §5.4) -------------------------------------------------------------
INVALID_PARAM = 230001
BOT_NOT_IN_CHAT = 230002
BOT_OFF = 230006
RECALLED = 230011
NOT_SENDER = 230012
CHAT_RATE = 230020
URGENT_UNREAD = 230023
URGENT_QUOTA = 230024
TOO_LONG = 230025
NO_PERMISSION = 230027
TOO_OLD = 230031
BAD_RECEIVE_ID = 230034
URGENT_REFUSED = 230052
NO_THREADS = 230071
CARD_CONTENT = 230099
DELETED = 230110

MESSAGES = {
    APP_UNAUTHORIZED: "app unauthorized",
    WRONG_SECRET: "app secret invalid",
    NEED_TOKEN: "Missing access token for authorization. Please make a request with token attached.",
    TOKEN_INVALID: "Invalid access token for authorization. Please make a request with token attached.",
    NO_SCOPE: "Access denied. One of the following scopes is required:",
    APP_UNUSABLE: "app is unavailable",
    API_RATE: "request trigger frequency limit",
    INVALID_PARAM: "invalid request parameter:",
    BOT_NOT_IN_CHAT: "Bot can NOT be out of the chat.",
    BOT_OFF: "Bot ability is not activated.",
    RECALLED: "The message is recalled.",
    NOT_SENDER: "Bot is NOT the sender of the message.",
    CHAT_RATE: "This operation triggers the frequency limit.",
    URGENT_UNREAD: "The user has too many unread urgent messages.",
    URGENT_QUOTA: "Reach the upper limit of urgent message.",
    TOO_LONG: "The content of the message is too long: length reaches its limit.",
    NO_PERMISSION: "Lack of necessary permissions.",
    TOO_OLD: "Message can only be modified within 14 days after sending.",
    BAD_RECEIVE_ID: "The receive_id is invalid.",
    URGENT_REFUSED: "Can not urgent this message.",
    NO_THREADS: "The group to which the message belongs does not support reply in thread.",
    CARD_CONTENT: "Failed to create card content, ext=",
    DELETED: "Action unavailable as the message has been deleted.",
}

# HTTP statuses: every im/v1 refusal is HTTP 400 (§2.5); the rate-limit answer 429
# (§2.4, "HTTP 429 ... 部分旧版 OpenAPI answer 400"). For the token endpoint and the
# generic auth codes the status is UNCONFIRMED: 400 here, like the rest.
STATUS = {API_RATE: 429}
DEFAULT_STATUS = 400

# The scopes each call needs, any one of them (§2.1, §3.2, §4, §5.3, §8.1).
SCOPES = {
    "send": ("im:message", "im:message:send_as_bot", "im:message:send"),
    "reply": ("im:message", "im:message:send_as_bot", "im:message:send"),
    "patch": ("im:message", "im:message:send_as_bot", "im:message:update"),
    "urgent_app": ("im:message.urgent", "im:message.urgent:app_send"),
    "urgent_sms": ("im:message.urgent:sms", "im:message.urgent:sms_send"),
    "urgent_phone": ("im:message.urgent:phone",),
    "contact": ("contact:user.id:readonly",),
    # A user's name (GET contact/v3/users/:id): the scope is UNCONFIRMED (§8.3, "probably a
    # contact base read scope"); the fake asks for the base one, which may be wrong.
    "user": ("contact:user.base:readonly", "contact:contact:readonly_as_app"),
}
ALL_SCOPES = frozenset(s for scopes in SCOPES.values() for s in scopes)


def body(code: int, detail: str = "") -> dict:
    """Feishu's answer for `code`: {code, msg}, the msg ending with `detail` where Feishu's
    does (the scopes wanted, the parameter, the card's sub-code)."""
    text = MESSAGES.get(code, "error")
    return {"code": code, "msg": f"{text} {detail}" if detail else text}


class Refused(Exception):
    """The fake says no: `code` (and its HTTP status), `why` for the test's eyes."""

    def __init__(self, code: int, why: str, *, detail: str = "", throttled: bool = False,
                 headers: dict[str, str] | None = None):
        super().__init__(why)
        self.code, self.why, self.throttled = code, why, throttled
        self.status = STATUS.get(code, DEFAULT_STATUS)
        self.body = body(code, detail)
        self.headers = headers or {}
