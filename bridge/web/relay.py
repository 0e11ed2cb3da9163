"""POST /send/<bot>: the relay (bridge.relay), for cron jobs, CI and scripts.

Off unless relay.enabled (404 until then), and then behind the same credentials as the
webhooks, which the configuration refuses to leave out. It answers as the webhooks do,
400, 401, 404, 413, 415 or 503 and never a 500, and 200 only once the message is stored.
"""

from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import NotFound, UnsupportedMediaType

from ..accept import decode_json
from ..errors import PayloadError
from . import auth
from .state import bridge, runtime

blueprint = Blueprint("relay", __name__)

# The result label of feishu_bridge_relay_messages_total, by HTTP status, unless the
# request said otherwise (g.relay_result: duplicate, disabled).
_RESULTS = {200: "accepted", 400: "bad_request", 401: "unauthorized", 404: "unknown_bot", 413: "too_large",
            415: "unsupported_media_type", 503: "not_stored"}


@blueprint.before_request
def gate() -> Response | None:
    config = runtime().config
    if not config.relay.enabled:
        g.relay_result = "disabled"
        raise NotFound("the relay is off: set relay.enabled: true (it needs auth) to post to /send/<bot>")
    return auth.require(config.auth, request, bridge().log)


@blueprint.after_request
def count(response: Response) -> Response:
    name = (request.view_args or {}).get("bot")
    # Only a configured bot's name is a label: any other would let callers add labels.
    bot = name if isinstance(name, str) and name in runtime().config.bots else ""
    bridge().metrics.relay(bot, g.get("relay_result") or _RESULTS.get(response.status_code, "error"))
    return response


@blueprint.post("/send/<bot>")
def send(bot: str) -> Response:
    relay = runtime().relay
    relay.bot(bot)   # 404 before the body is read
    raw = _body()
    try:
        body = decode_json(raw)
    except RecursionError:   # JSON nested past the parser's stack: hostile, and a 400, not a 500
        raise PayloadError(f"the body nests too deep to read ({len(raw)} bytes)") from None
    relayed = relay(bot, body)
    if relayed.duplicate:
        g.relay_result = "duplicate"
    return jsonify(relayed.as_json())


def _body() -> bytes:
    """The body, whole: JSON only, within server.max_body_bytes (413), and as long as its
    Content-Length said (as bridge.web.webhooks reads a webhook's)."""
    if not request.is_json:
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    raw = request.get_data(cache=False)  # raises 413 over server.max_body_bytes
    announced = request.content_length
    if announced is not None and len(raw) != announced:
        raise PayloadError(f"the body ended after {len(raw)} of the {announced} bytes its Content-Length "
                           "announced (the client closed the connection early)")
    return raw
