"""Feishu sending a card callback (card.action.trigger, schema 2.0) to a bridge over HTTP,
as feishu-app-protocol.md §6.2-§6.5 describe it (copied here: tests do not read
../shared): the body encrypted with AES-256-CBC (key SHA-256(Encrypt Key), a random IV
before the ciphertext, PKCS#7, base64) as {"encrypt": ...}; X-Lark-Request-Timestamp
(seconds), X-Lark-Request-Nonce and X-Lark-Signature = hex SHA-256(timestamp + nonce +
Encrypt Key + body); header.token the Verification Token; header.create_time in
microseconds. Then what Feishu does with the answer: 200 within 3 s (else 200341/200671),
a JSON object (else 200672), a toast of info|success|error|warning, a card of type raw in
the card's own schema (a 2.0 card answered with 1.0: 200830), which replaces the shared
card for everyone.

Forms besides the real one, for the tests that the bridge refuses them:
    forged     signed with another key
    unsigned   no signature headers
    replayed   a real request made 10 minutes ago (its timestamp and create_time)
    bad_token  the right key, a wrong Verification Token
This encryption is written from the protocol, not taken from the bridge, so a mistake in
one is not hidden by the other.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

FORMS = ("signed", "forged", "unsigned", "replayed", "bad_token")
ANSWER_DEADLINE = 3.0
TOAST_TYPES = frozenset({"info", "success", "error", "warning"})


@dataclass(frozen=True)
class TapResult:
    status: int
    answer: Any                   # the JSON answer (or text)
    client_error: int | None      # the code the tapping user's client shows (§6.5), None when fine
    seconds: float


def encrypt(encrypt_key: str, plaintext: bytes) -> str:
    key = hashlib.sha256(encrypt_key.encode("utf-8")).digest()
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def card_action(app_id: str, token: str, *, open_id: str, chat: str, message_id: str, value: Any,
                when: float) -> dict:
    return {"schema": "2.0",
            "header": {"event_id": secrets.token_hex(16), "token": token, "create_time": str(int(when * 1e6)),
                       "event_type": "card.action.trigger", "tenant_key": "tenant-1", "app_id": app_id},
            "event": {"operator": {"tenant_key": "tenant-1", "open_id": open_id, "union_id": "on_" + open_id[3:]},
                      "token": "c-" + secrets.token_hex(16),
                      "action": {"value": value, "tag": "button"}, "host": "im_message",
                      "context": {"open_message_id": message_id, "open_chat_id": chat}}}


def request_for(body: dict, encrypt_key: str, *, form: str = "signed", now: float | None = None) -> tuple[bytes, dict]:
    """The HTTP body and headers Feishu sends for `body` (the callback's plaintext)."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; forms: {FORMS}")
    now = time.time() if now is None else now
    raw = json.dumps({"encrypt": encrypt(encrypt_key, json.dumps(body).encode("utf-8"))}).encode("utf-8")
    timestamp, nonce = str(int(now)), secrets.token_hex(8)
    key = "not-the-key" if form == "forged" else encrypt_key
    signature = hashlib.sha256((timestamp + nonce + key).encode("utf-8") + raw).hexdigest()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    if form != "unsigned":
        headers.update({"X-Lark-Request-Timestamp": timestamp, "X-Lark-Request-Nonce": nonce,
                        "X-Lark-Signature": signature})
    return raw, headers


def post(url: str, raw: bytes, headers: dict, original: dict | None) -> TapResult:
    """POST as Feishu does and judge the answer as Feishu's client would."""
    started = time.monotonic()
    try:
        answer = requests.post(url, data=raw, headers=headers, timeout=ANSWER_DEADLINE + 2, allow_redirects=False)
    except requests.RequestException:
        return TapResult(0, None, 200342, time.monotonic() - started)
    seconds = time.monotonic() - started
    try:
        body = answer.json()
    except ValueError:
        body = answer.text
    if seconds > ANSWER_DEADLINE:
        return TapResult(answer.status_code, body, 200341, seconds)
    if answer.status_code != 200:
        return TapResult(answer.status_code, body, 200671, seconds)
    return TapResult(200, body, answer_problem(body, original), seconds)


def answer_problem(body: Any, original: dict | None) -> int | None:
    """The client's code for a 200 answer Feishu cannot use, else None (§6.5)."""
    if not isinstance(body, dict):
        return 200672
    toast = body.get("toast")
    if toast is not None and (not isinstance(toast, dict) or toast.get("type") not in TOAST_TYPES
                              or not isinstance(toast.get("content"), str)):
        return 200672
    card = body.get("card")
    if card is None:
        return None
    if not isinstance(card, dict) or card.get("type") != "raw" or not isinstance(card.get("data"), dict):
        return 200673
    if original is not None and original.get("schema") == "2.0" and card["data"].get("schema") != "2.0":
        return 200830
    return None


def find_button(card: dict, text: str) -> dict | None:
    """The callback value of the button whose text is `text`, in a card as shown."""
    stack: list[Any] = [card]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("tag") == "button" and (node.get("text") or {}).get("content") == text:
                for behavior in node.get("behaviors") or ():
                    if behavior.get("type") == "callback":
                        return behavior.get("value")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return None


def button_texts(card: dict) -> list[str]:
    found: list[str] = []
    stack: list[Any] = [card]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("tag") == "button":
                found.append((node.get("text") or {}).get("content", ""))
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
    return found
