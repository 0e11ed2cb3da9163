"""Feishu's documented limits for custom bots, in one place, each with where it is written.

Config validation, rendering, the preview page and the client all read them from here, so
a limit that Feishu changes is changed once. (../shared/protocols.md has the quotes.)
"""

from __future__ import annotations

import json

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
