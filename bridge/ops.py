"""Operations endpoints, named as in Prometheus and Alertmanager: /-/healthy, /-/ready."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from . import auth

blueprint = Blueprint("ops", __name__)


@blueprint.before_request
def authenticate() -> Response | None:
    # Off by default, so that kubelet probes and Prometheus scrapes need no credentials.
    bridge = current_app.extensions["bridge"]
    if not bridge.config.auth.protect_operations:
        return None
    return auth.require(bridge.config.auth, request, bridge.log)


@blueprint.get("/-/healthy")
def healthy() -> Response:
    return jsonify(status="healthy")


@blueprint.get("/-/ready")
def ready() -> tuple[Response, int] | Response:
    bridge = current_app.extensions.get("bridge")
    if bridge is None:
        return jsonify(status="not ready"), 503
    return jsonify(status="ready", bots=list(bridge.config.bots))
