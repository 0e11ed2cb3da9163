"""Feishu's documented limits for custom bots, in one place, each with where it is written.

Config validation, rendering, the preview page and the client all read them from here, so
a limit that Feishu changes is changed once. (../shared/protocols.md has the quotes.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

# "请求体的数据大小不能超过 20 KB" (request body at most 20 KB): Feishu custom-bot guide,
# 注意事项 (notes); protocols.md A.9. Measured on the serialized body.
BODY_LIMIT_BYTES = 20 * 1024
# "单租户单机器人 100 次/分钟，5 次/秒" (per bot: 100/min and 5/s): same guide, and the
# rate-limit page 频控策略.
RATE_PER_SECOND = 5
RATE_PER_MINUTE = 100
# The signed timestamp must be within one hour (3600 s) of Feishu's clock (guide, 方式三).
SIGNATURE_WINDOW_SECONDS = 3600
# What signing adds to a body at most: ,"timestamp":"<10 digits>","sign":"<44 base64 chars>"
SIGNATURE_OVERHEAD = len(',"timestamp":"0000000000","sign":""') + 44
# What a rendered message may take, so that it still fits once signed at send time.
BUDGET_BYTES = BODY_LIMIT_BYTES - SIGNATURE_OVERHEAD
# Feishu allows at most 10 keywords per bot (custom-bot guide, 安全设置 keywords).
MAX_KEYWORDS = 10
# "卡片 JSON 2.0 ... 最多支持 200 个元素或组件": card JSON 2.0 structure, 注意事项 (protocols.md
# A.4). Applied to 1.0 cards too: their limit is undocumented, and a split costs little.
MAX_COMPONENTS = 200
# header.template: the complete list for card JSON 2.0 (protocols.md A.5).
COLOURS = frozenset({"blue", "wathet", "turquoise", "green", "yellow", "orange", "red", "carmine",
                     "violet", "purple", "indigo", "grey", "default"})


def encode_body(message: dict) -> bytes:
    """The exact bytes sent for a message, which BODY_LIMIT_BYTES is measured on: the renderer
    measures these, the client sends them."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# -- App bots (a self-built app's bot, im/v1): ../shared/feishu-app-protocol.md -------------
# "卡片消息、富文本消息请求体最大不能超过 30 KB" (card and post request bodies at most 30 KB;
# text 150 KB): D-send, §2.3 (CONFIRMED). The same 30 KB holds for an updated card (D-patch,
# §3.2). Measured on the request body, in which the card is a JSON *string* (escaped).
APP_BODY_LIMIT_BYTES = 30 * 1024
# The request's envelope around the content: {"receive_id":"<chat>","msg_type":"interactive",
# "content":"","uuid":"<uuid>"}. uuid: "最大长度 50" (D-send, §2.1, CONFIRMED); a chat_id is
# "oc_" and 32 hex digits in every example (§2.2), and the config refuses one over MAX_CHAT_ID_CHARS.
UUID_MAX_CHARS = 50
MAX_CHAT_ID_CHARS = 64
APP_ENVELOPE_BYTES = len('{"receive_id":"","msg_type":"interactive","content":"","uuid":""}') + MAX_CHAT_ID_CHARS \
    + UUID_MAX_CHARS
# What an app bot's rendered message may take, measured as its content string is sent.
APP_BUDGET_BYTES = APP_BODY_LIMIT_BYTES - APP_ENVELOPE_BYTES
# "向同一群组发送消息的限频为群内机器人共享 5 QPS" (5 QPS per group, shared by its bots): D-send,
# §2.4 (CONFIRMED). No per-minute limit per group is documented, so an app bot's minute
# allows what its second does. Every request of the bridge's app bots in a chat (sends,
# replies, updates, urgent: which of them Feishu counts there is not documented) is
# counted against it, whichever bot made it (bridge.delivery.pacing).
APP_RATE_PER_SECOND = 5
APP_RATE_PER_MINUTE = APP_RATE_PER_SECOND * 60
# "1000 次/分钟、50 次/秒" per API and app (D-send, D-patch, D-reply; §2.4, CONFIRMED): every
# request of an app's bots is counted against these (all its APIs together, which is
# stricter than Feishu), in the outbox, by every process (bridge.delivery.pacing).
APP_PER_SECOND = 50
APP_PER_MINUTE = 1000
# "仅支持更新 14 天内发送的消息" (only messages sent within 14 days can be updated): D-patch,
# §3.2 (CONFIRMED). A card older than this less a day's margin (clocks differ) is not
# patched but replaced by a new one.
APP_UPDATE_WINDOW = 14 * 86400
APP_UPDATE_MARGIN = 86400
# "持有相同 uuid 的请求，在 1 小时内至多成功发送一条消息" (one message per uuid within 1 h): D-send.
UUID_WINDOW = 3600
# urgent_*: "user_id_list ... 最多 200" (at most 200 users per call): D-sms, §5.1 (CONFIRMED).
URGENT_MAX_USERS = 200
# The token lives at most 2 h; the official SDK treats it as expired 10 minutes early
# ("提前10分钟过期", lark_oapi core/token/manager.py): D-token, §1.1 (CONFIRMED). With under
# 30 min left the endpoint hands out a fresh token, so refetching then is safe.
TOKEN_REFRESH_AHEAD = 600


def app_content(message: dict) -> tuple[str, str]:
    """(msg_type, content) of an im/v1 request for a rendered message (custom-bot shaped:
    {"msg_type", "card" | "content"}). im/v1 wants the content as a JSON string (D-send
    §2.1): a card as it is; text as {"text"}; a post as its languages, without the custom
    bot's "post" wrapper (create_json, SECONDARY)."""
    kind = message["msg_type"]
    if kind == "interactive":
        content = message["card"]
    elif kind == "post":
        content = message["content"]["post"]
    else:
        content = message["content"]
    return kind, json.dumps(content, ensure_ascii=False, separators=(",", ":"))


def app_size(message: dict) -> int:
    """The bytes an app bot's rendered message takes in its request body, its content
    written as the JSON string im/v1 wants: what APP_BUDGET_BYTES is measured on."""
    return len(json.dumps(app_content(message)[1], ensure_ascii=False).encode("utf-8"))


@dataclass(frozen=True)
class Budget:
    """What one rendered message may take, and how it is measured: a custom bot's body
    (signed at send time), or an app bot's content string (bridge.render cuts to it)."""

    bytes: int
    measure: Callable[[dict], int]
    exact: bool = False     # measure every message (an app's content grows when escaped)


CUSTOM_BOT_BUDGET = Budget(BUDGET_BYTES, lambda message: len(encode_body(message)))
APP_BOT_BUDGET = Budget(APP_BUDGET_BYTES, app_size, exact=True)
