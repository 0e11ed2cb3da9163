"""Inbound authentication, as Flask answers it: the checks themselves are bridge.auth's."""

from __future__ import annotations

import logging
from typing import Callable

from flask import Request, Response, jsonify

from ..auth import check_credentials, check_grafana_signature
from ..config import AuthConfig


def require(auth: AuthConfig, request: Request, log: logging.Logger, *, body: Callable[[], bytes] | None = None,
            browser: bool = False) -> Response | None:
    """A before_request body: None to go on, or the 401 answer. `body` reads the request's
    body, for the Grafana signature (webhooks.grafana only).

    The answer is the same whatever failed; the reason goes to the log. With `browser`
    (a page a person opens) the challenge is Basic whenever basic auth is configured:
    a browser asks for a user name and password only when challenged with Basic.
    """
    reason = check_credentials(auth, request.headers.get("Authorization"))
    if reason is None and body is not None and auth.grafana_hmac is not None:
        reason = check_grafana_signature(auth.grafana_hmac, request.headers, body())
    if reason is None:
        return None
    log.warning("unauthorized request refused", extra={"event": "unauthorized", "path": request.path,
                                                        "remote": request.remote_addr, "reason": reason})
    response = jsonify(error="unauthorized")
    response.status_code = 401
    if auth.credentials_required:
        response.headers["WWW-Authenticate"] = "Bearer" if auth.bearer_token is not None else 'Basic realm="bridge"'
    if browser and auth.basic_username is not None:
        response.headers["WWW-Authenticate"] = 'Basic realm="bridge"'
    return response
