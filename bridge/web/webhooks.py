"""Webhook endpoints: thin handlers. Parse at the edge, hand to the accept service, answer."""

from __future__ import annotations

import json

from flask import Blueprint, Response, request
from werkzeug.exceptions import UnsupportedMediaType

from .. import sources
from ..accept import decode_json, find_bot
from . import auth
from .body import read_body
from .state import bridge, runtime

blueprint = Blueprint("webhooks", __name__)


@blueprint.before_request
def authenticate() -> Response | None:
    grafana = request.endpoint == "webhooks.grafana"
    return auth.require(runtime().config.auth, request, bridge().log, body=read_body if grafana else None)


# The result label of feishu_bridge_notifications_received_total, by HTTP status.
_RESULTS = {200: "accepted", 400: "bad_request", 401: "unauthorized", 404: "unknown_bot", 413: "too_large",
            415: "unsupported_media_type", 503: "not_stored"}


@blueprint.after_request
def count_notification(response: Response) -> Response:
    source = (request.endpoint or "").rpartition(".")[2]
    if source in ("alertmanager", "grafana"):
        result = _RESULTS.get(response.status_code, "error")
        bridge().metrics.notification(source, result)
    return response


@blueprint.post("/alertmanager", defaults={"bot": None})
@blueprint.post("/alertmanager/<bot>")
def alertmanager(bot: str | None) -> Response:
    return _accept("alertmanager", bot)


@blueprint.post("/grafana", defaults={"bot": None})
@blueprint.post("/grafana/<bot>")
def grafana(bot: str | None) -> Response:
    return _accept("grafana", bot)


def _accept(source: str, bot: str | None) -> Response:
    current = runtime()
    if bot is not None:
        find_bot(current.config, bot)   # 404 before the body is read
    raw = _body()
    notification = sources.parse(source, decode_json(raw))
    accepted = current.accept(notification, raw, only_bot=bot)
    for name, alerts in accepted.routed.items():
        bridge().metrics.routed(name, alerts)
    return _answer(accepted.as_json())


def _answer(document: dict) -> Response:
    """The 200's JSON, byte for byte what jsonify gives (sorted keys, compact, a newline),
    without its provider lookups: a sixth of the handler's own time in a profile of one
    accept (58 of 588 us, against 8 for json.dumps)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n"
    return Response(text, mimetype="application/json")


def _body() -> bytes:
    """The body as received (stored as it is)."""
    if not request.is_json:
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    return read_body()
