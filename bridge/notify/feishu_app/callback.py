"""Feishu's card callbacks over HTTP (feishu-app-protocol.md §6.4): which app a request is
for, whether Feishu sent it, and what it says.

    {"encrypt": "<base64>"}    AES-256-CBC, key SHA-256(Encrypt Key), IV the first 16 bytes,
                               PKCS#7 padding; then the JSON below
    X-Lark-Signature           hex SHA-256(timestamp + nonce + Encrypt Key + raw body), with
    X-Lark-Request-Timestamp   X-Lark-Request-Nonce; checked whenever the app has an Encrypt Key
    {"type": "url_verification", "challenge", "token"}   answered with the challenge
    {"schema": "2.0", "header": {"token", "event_type": "card.action.trigger", "create_time"
     (microseconds), ...}, "event": {...}}                a tap (bridge.actions)

The Verification Token is compared in constant time; a request older or newer than
REPLAY_WINDOW (by its timestamp header and by header.create_time) is refused, since the
SDK checks no time at all and Feishu documents no tolerance (UNCONFIRMED, §6.4: 300 s is
the reference's recommendation). Refusals raise CallbackRefused with the HTTP status and
words safe to log and answer (never a key or a token).

AES with `cryptography` (a dependency for this): the web process should not import the
lark-oapi SDK (its long-connection client belongs in its own process, §6.6), and a cipher
of our own is not an option.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Mapping

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ...config import App

REPLAY_WINDOW = 300.0
CARD_ACTION = "card.action.trigger"
SIGNATURE, TIMESTAMP, NONCE = "X-Lark-Signature", "X-Lark-Request-Timestamp", "X-Lark-Request-Nonce"


class CallbackRefused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Opened:
    """A request Feishu sent for `app`: a URL check (`challenge`) or a tap (`body`)."""

    app: App
    challenge: str | None
    body: dict


def signature(timestamp: str, nonce: str, encrypt_key: str, raw: bytes) -> str:
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode("utf-8") + raw).hexdigest()


def decrypt(encrypt_key: str, encrypted: str) -> bytes:
    """Raises ValueError when it is not what Feishu encrypts with this key."""
    try:
        raw = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) < 32 or len(raw) % 16:
        raise ValueError("not AES-CBC blocks")
    key = hashlib.sha256(encrypt_key.encode("utf-8")).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()   # ValueError: bad padding, the wrong key


def open_callback(apps: Mapping[str, App], headers: Mapping[str, str], raw: bytes, now: float) -> Opened:
    outer = _json(raw)
    if "encrypt" in outer:
        app, body = _decrypted(apps, headers, raw, outer)
    else:
        app, body = _plain(apps, headers, outer)
    if body.get("type") == "url_verification":
        _token(app, body.get("token"))
        challenge = body.get("challenge")
        if not isinstance(challenge, str):
            raise CallbackRefused(400, "url_verification without a challenge")
        return Opened(app, challenge, body)
    header = body.get("header")
    if body.get("schema") != "2.0" or not isinstance(header, dict):
        raise CallbackRefused(400, "not a schema 2.0 callback: subscribe to card.action.trigger (the new card "
                                   "callback), not the old message-card request URL")
    _token(app, header.get("token"))
    if header.get("event_type") != CARD_ACTION:
        raise CallbackRefused(400, f"not a card action: {str(header.get('event_type'))[:60]!r}")
    _fresh(headers.get(TIMESTAMP), header.get("create_time"), now)
    if not isinstance(body.get("event"), dict):
        raise CallbackRefused(400, "a card action without its event")
    return Opened(app, None, body)


def _decrypted(apps: Mapping[str, App], headers: Mapping[str, str], raw: bytes, outer: dict) -> tuple[App, dict]:
    keyed = [app for app in apps.values() if app.encrypt_key is not None]
    if not keyed:
        raise CallbackRefused(400, "an encrypted callback, but no app has an encrypt_key")
    if not isinstance(outer["encrypt"], str):
        raise CallbackRefused(400, "encrypt is not a string")
    given = headers.get(SIGNATURE)
    if given:
        timestamp, nonce = headers.get(TIMESTAMP) or "", headers.get(NONCE) or ""
        signed = [app for app in keyed if hmac.compare_digest(
            signature(timestamp, nonce, app.encrypt_key.reveal(), raw), given.lower())]   # type: ignore[union-attr]
        if not signed:
            raise CallbackRefused(401, "the signature does not match any app's encrypt_key")
        keyed = signed
    for app in keyed:
        try:
            body = _json(decrypt(app.encrypt_key.reveal(), outer["encrypt"]))   # type: ignore[union-attr]
        except (ValueError, CallbackRefused):
            continue
        # Feishu signs every callback; only its URL check may come unsigned (§6.4).
        if not given and body.get("type") != "url_verification":
            raise CallbackRefused(401, "an unsigned callback (no X-Lark-Signature)")
        return app, body
    raise CallbackRefused(400 if given else 401, "the body does not decrypt with the app's encrypt_key")


def _plain(apps: Mapping[str, App], headers: Mapping[str, str], outer: dict) -> tuple[App, dict]:
    """A body Feishu did not encrypt: only for an app without an Encrypt Key, found by its
    Verification Token (schema 2.0 carries it in header.token, the URL check at the top)."""
    header = outer.get("header")
    token = header.get("token") if isinstance(header, dict) else outer.get("token")
    for app in apps.values():
        if app.encrypt_key is None and app.verification_token is not None and isinstance(token, str) \
                and hmac.compare_digest(app.verification_token.reveal().encode(), token.encode()):
            return app, outer
    if any(app.encrypt_key is not None for app in apps.values()):
        raise CallbackRefused(401, "an unencrypted callback, but the app has an encrypt_key")
    raise CallbackRefused(401, "the verification token matches no app")


def _token(app: App, token: Any) -> None:
    expected = app.verification_token
    if expected is None:
        raise CallbackRefused(401, f"app {app.name!r} has no verification_token: set it from the console")
    if not isinstance(token, str) or not hmac.compare_digest(expected.reveal().encode(), token.encode()):
        raise CallbackRefused(401, "the verification token does not match")


def _fresh(timestamp: Any, create_time: Any, now: float) -> None:
    found = False
    for value, scale in ((timestamp, 1.0), (create_time, 1e6)):
        if value is None:
            continue
        try:
            when = float(value) / scale
        except (TypeError, ValueError):
            raise CallbackRefused(400, "a timestamp that is not a number") from None
        found = True
        if abs(now - when) > REPLAY_WINDOW:
            raise CallbackRefused(401, f"outside the {REPLAY_WINDOW:g} s window: a replay, or a clock off")
    if not found:
        raise CallbackRefused(401, "no timestamp: cannot tell a replay")


def _json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise CallbackRefused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise CallbackRefused(400, "the body is not a JSON object")
    return body
