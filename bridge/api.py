"""Webhook endpoints: thin handlers. Parse at the edge, hand to the pipeline, answer."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import NotFound, UnsupportedMediaType

from . import auth, sources
from .errors import PayloadError

blueprint = Blueprint("webhooks", __name__)


@blueprint.before_request
def authenticate() -> Response | None:
    bridge = current_app.extensions["bridge"]
    return auth.require(bridge.config.auth, request, bridge.log, grafana=request.endpoint == "webhooks.grafana")


# The result label of feishu_bridge_notifications_received_total, by HTTP status.
_RESULTS = {200: "accepted", 400: "bad_request", 401: "unauthorized", 404: "unknown_bot", 413: "too_large",
            415: "unsupported_media_type", 503: "not_stored"}


@blueprint.after_request
def count_notification(response: Response) -> Response:
    source = (request.endpoint or "").rpartition(".")[2]
    if source in ("alertmanager", "grafana"):
        result = _RESULTS.get(response.status_code, "error")
        current_app.extensions["bridge"].metrics.notification(source, result)
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
    bridge = current_app.extensions["bridge"]
    if bot is not None and bot not in bridge.config.bots:
        raise NotFound(f"unknown bot {bot!r}: configured bots are {', '.join(bridge.config.bots)}")
    raw, document = _json_body()
    notification = sources.parse(source, document)
    accepted = bridge.pipeline.accept(notification, raw, only_bot=bot)
    for name, alerts in accepted.routed.items():
        bridge.metrics.routed(name, alerts)
    return jsonify(accepted.as_json())


def _json_body() -> tuple[bytes, object]:
    """The body as received (stored as it is) and its JSON."""
    if not request.is_json:
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    raw = request.get_data(cache=False)  # raises 413 over server.max_body_bytes
    announced = request.content_length
    if announced is not None and len(raw) != announced:
        # The client closed before the end (gunicorn marks its input terminated, so Werkzeug
        # does not check): what arrived may be valid JSON, yet it is not what was sent.
        raise PayloadError(f"the body ended after {len(raw)} of the {announced} bytes its Content-Length "
                           "announced (the client closed the connection early)")
    try:
        return raw, json.loads(raw)
    except UnicodeDecodeError:
        raise PayloadError("body is not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
