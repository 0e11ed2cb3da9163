"""The application factory. All state lives in app.extensions["bridge"]; nothing at module level."""

from __future__ import annotations

import logging
import os
import re
import uuid

from flask import Flask, g, request

from .. import bootstrap
from ..config import Config, load
from ..notify.feishu import FeishuClient
from ..metrics import Metrics
from . import callback, errors, ops, relay, state, webhooks
from .preview import views as preview

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def create_app(config: Config | None = None, *, client: FeishuClient | None = None,
               logger: logging.Logger | None = None, metrics: Metrics | None = None,
               start_delivery: bool = True) -> Flask:
    """Build the app from a validated Config (the embedded default when None)."""
    config = config if config is not None else load()
    log = logger or logging.getLogger("bridge")
    services = bootstrap.build_services(config, channel=client, logger=log, metrics=metrics or Metrics())
    bridge = state.Bridge(services)

    app = Flask("bridge")
    # Werkzeug refuses bodies over this with 413 before the handler reads them.
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.json.ensure_ascii = False
    app.extensions["bridge"] = bridge

    state.register(app)
    app.register_blueprint(webhooks.blueprint)
    app.register_blueprint(relay.blueprint)
    app.register_blueprint(callback.blueprint)
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(preview.blueprint)
    errors.register(app, log)
    _register_request_id(app)
    _register_worker(app)
    if start_delivery:
        bridge.start()
    return app


def _register_request_id(app: Flask) -> None:
    """Every request gets an id (the caller's X-Request-Id if it sent a sane one), logged
    with each line about it and returned in the answer, to match a sender's log to ours."""

    @app.before_request
    def assign() -> None:
        given = request.headers.get("X-Request-Id", "")
        g.request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]

    @app.after_request
    def answer(response):
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        return response


def _register_worker(app: Flask) -> None:
    """Every answer says which process gave it (X-Bridge-Worker: its pid), so that "every
    gunicorn worker has reloaded" can be checked worker by worker, and a log line found."""

    @app.after_request
    def worker(response):
        response.headers["X-Bridge-Worker"] = str(os.getpid())
        return response
