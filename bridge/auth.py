"""Inbound authentication: who may post alerts (and, optionally, read /metrics and /-/*).

Matches what senders can send: Alertmanager's http_config (bearer `authorization` or
`basic_auth`) and Grafana's contact point (basic auth, an Authorization header, and
its optional HMAC signature of the body). Every comparison is constant-time, and a
refusal says nothing about which check failed: the reason goes to the log only.

The checks here know nothing of HTTP frameworks; bridge.web.auth answers with them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from typing import Callable, Mapping

from .config import AuthConfig, GrafanaHMAC


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def check_credentials(auth: AuthConfig, authorization: str | None) -> str | None:
    """None when the Authorization header is acceptable, else the reason (for the log)."""
    if not auth.credentials_required:
        return None
    if not authorization:
        return "no Authorization header"
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and auth.bearer_token is not None:
        return None if _same(value, auth.bearer_token.reveal()) else "wrong bearer token"
    if scheme.lower() == "basic" and auth.basic_username is not None and auth.basic_password is not None:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "malformed basic credentials"
        # Both compared, always, so the time taken does not tell a right user name apart.
        user_ok = _same(user, auth.basic_username)
        password_ok = _same(password, auth.basic_password.reveal())
        return None if user_ok and password_ok else "wrong basic credentials"
    return f"unsupported Authorization scheme {scheme[:20]!r}"


def check_grafana_signature(config: GrafanaHMAC, headers: Mapping[str, str], body: bytes,
                            clock: Callable[[], float] = time.time) -> str | None:
    """Grafana's hmacConfig: hex(HMAC-SHA256(secret, [timestamp ":"] body)) in `header`.

    With a timestamp header (Grafana has no default name for it), the signed message
    is `timestamp + ":" + body`, and a timestamp further than max_skew from our clock
    is refused as a replay.
    """
    signature = headers.get(config.header)
    if not signature:
        return f"no {config.header} header"
    message = body
    if config.timestamp_header:
        stamp = headers.get(config.timestamp_header, "")
        if not stamp.isdigit():
            return f"no valid {config.timestamp_header} header"
        if abs(clock() - int(stamp)) > config.max_skew:
            return "signature timestamp outside auth.grafana_hmac.max_skew (replay?)"
        message = stamp.encode() + b":" + body
    expected = hmac.new(config.secret.reveal().encode(), message, hashlib.sha256).hexdigest()
    return None if _same(signature.strip().lower(), expected) else "wrong Grafana HMAC signature"
