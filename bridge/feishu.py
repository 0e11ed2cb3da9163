"""The old import path of the Feishu client, kept while the split lands."""
# MERGE-SHIM: replaced by bridge.notify.outcome and bridge.notify.feishu.{sign,answers,client}.

from __future__ import annotations

from .notify.feishu.answers import classify
from .notify.feishu.client import FeishuClient
from .notify.feishu.sign import encode_body, sign, signed_body
from .notify.outcome import (
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
    REASONS,
    SERVER_ERROR,
    TIMEOUT,
    TOO_LARGE,
    UNEXPECTED_ANSWER,
    Outcome,
    SendResult,
)

__all__ = [
    "BAD_MENTION", "BAD_REQUEST", "BAD_SIGNATURE", "BAD_TOKEN", "BAD_URL", "CLIENT_ERROR",
    "CONNECTION_ERROR", "DETAIL_LIMIT", "HTTP_429", "IP_NOT_ALLOWED", "KEYWORD_MISSING", "OK",
    "RATE_LIMITED", "REASONS", "SERVER_ERROR", "TIMEOUT", "TOO_LARGE", "UNEXPECTED_ANSWER",
    "FeishuClient", "Outcome", "SendResult", "classify", "encode_body", "sign", "signed_body",
]
