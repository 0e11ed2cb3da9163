"""The application factory. All state lives in app.extensions["bridge"]; nothing at module level."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from .config import Config, load
from .delivery import Delivery
from .errors import PayloadError, StorageError
from .feishu import FeishuClient
from .pipeline import Pipeline
from .render import Renderer


@dataclass
class Bridge:
    """What the handlers need, built once per app from one Config."""

    config: Config
    pipeline: Pipeline
    delivery: Delivery
    log: logging.Logger


def create_app(config: Config | None = None, *, client: FeishuClient | None = None,
               logger: logging.Logger | None = None, start_delivery: bool = True) -> Flask:
    """Build the app from a validated Config (the embedded default when None)."""
    config = config if config is not None else load()
    log = logger or logging.getLogger("bridge")
    renderer = Renderer(config.templates_dir, config.timezone, log)
    delivery = Delivery(config.bots, client or FeishuClient(), log)
    bridge = Bridge(config=config, pipeline=Pipeline(config, renderer, delivery, log), delivery=delivery, log=log)

    app = Flask("bridge")
    # Werkzeug refuses bodies over this with 413 before the handler reads them.
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.json.ensure_ascii = False
    app.extensions["bridge"] = bridge

    from . import api, ops

    app.register_blueprint(api.blueprint)
    app.register_blueprint(ops.blueprint)
    _register_error_handlers(app, log)
    if start_delivery:
        delivery.start()
    return app


def _register_error_handlers(app: Flask, log: logging.Logger) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description), exc.code

    @app.errorhandler(PayloadError)
    def bad_payload(exc: PayloadError):
        return jsonify(error=str(exc)), 400

    @app.errorhandler(StorageError)
    def not_stored(exc: StorageError):
        # 503 makes Alertmanager (and Grafana, at its next flush) send again.
        return jsonify(error=f"not stored, retry later: {exc}"), 503

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error", extra={"event": "internal_error"})
        return jsonify(error="internal error; the bridge's log has the details"), 500
