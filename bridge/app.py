"""The application factory. All state lives in app.extensions["bridge"]; nothing at module level."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from pathlib import Path

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException

from .config import Config, load
from .delivery import Delivery
from .errors import ConfigError, PayloadError, StorageError
from .feishu import FeishuClient
from .metrics import Metrics
from .outbox import Outbox   # MERGE-SHIM: with the Delivery call below
from .pipeline import Pipeline
from .reload import Watcher, generation_path
from .render import Renderer


_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Bridge:
    """What the handlers need, built from one Config and swapped whole on reload.

    Handlers read `config` and `pipeline` as attributes; a reload replaces both
    under a lock, so a request sees either the old or the new configuration.
    """

    def __init__(self, config: Config, delivery: Delivery, log: logging.Logger, metrics: Metrics):
        self.delivery = delivery
        self.log = log
        self.metrics = metrics
        self._lock = threading.Lock()
        self.config = config
        self.pipeline = self._pipeline(config)
        self.watcher = Watcher(self.reload_or_keep, generation_path(config.storage.path), self._config_file(),
                               config.file_signature, lambda: (self.config.reload.watch, self.config.reload.interval))

    def _pipeline(self, config: Config) -> Pipeline:
        def count_error(template: str) -> None:
            self.metrics.render_errors.labels(template).inc()

        renderer = Renderer(config.templates_dir, config.timezone, self.log, on_error=count_error)
        return Pipeline(config, renderer, self.delivery, self.log)

    def _config_file(self) -> Path | None:
        source = self.config.source
        return None if source.startswith("<") else Path(source)

    def reload(self) -> Config:
        """Load the config file again; on any error raise and keep the running config."""
        with self._lock:
            source = self.config.source
            try:
                if source == "<string>":
                    raise ConfigError("this app was built from a config in memory: there is no file to reload")
                config = load(None if source == "<embedded default>" else source)
                pipeline = self._pipeline(config)
            except ConfigError as exc:
                self.metrics.reload_ok.set(0)
                self.log.error("reload failed; keeping the running configuration: %s", "; ".join(exc.problems),
                               extra={"event": "reload_failed"})
                raise
            if config.storage.path != self.config.storage.path:
                self.log.warning("storage.path changed: it takes effect at the next start",
                                 extra={"event": "reload_storage_path"})
            self.config, self.pipeline = config, pipeline
            self.delivery.configure(config)   # new bots get a sender; changed URLs, secrets, limits apply
            self.watcher.acknowledge(config.file_signature)
            self.metrics.reload_ok.set(1)
            self.metrics.reload_time.set_to_current_time()
        self.log.info("configuration reloaded", extra={"event": "reloaded", "config": config.source,
                                                        "bots": list(config.bots)})
        return config

    def reload_or_keep(self) -> None:
        """reload() for callers with no one to answer (the watcher, SIGHUP in --dev): it has logged why."""
        try:
            self.reload()
        except ConfigError:
            pass

    def start(self) -> None:
        self.delivery.start()
        self.watcher.start()

    def stop(self, timeout: float | None = None) -> None:
        self.watcher.stop()
        self.delivery.stop(timeout=timeout)


def create_app(config: Config | None = None, *, client: FeishuClient | None = None,
               logger: logging.Logger | None = None, metrics: Metrics | None = None,
               start_delivery: bool = True) -> Flask:
    """Build the app from a validated Config (the embedded default when None)."""
    config = config if config is not None else load()
    log = logger or logging.getLogger("bridge")
    metrics = metrics or Metrics()
    # The delivery thread renders each message when it is due, with the pipeline of the
    # configuration in force then (a reload swaps bridge.pipeline).
    delivery = Delivery(config, client or FeishuClient(), log, metrics=metrics,
                        outbox=Outbox(config.storage.path),   # MERGE-SHIM: bootstrap builds the store
                        render=lambda bot, message: bridge.pipeline.render_stored(bot, message))
    bridge = Bridge(config, delivery, log, metrics)

    app = Flask("bridge")
    # Werkzeug refuses bodies over this with 413 before the handler reads them.
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    app.json.ensure_ascii = False
    app.extensions["bridge"] = bridge

    from . import api, ops, preview

    app.register_blueprint(api.blueprint)
    app.register_blueprint(ops.blueprint)
    app.register_blueprint(preview.blueprint)
    _register_error_handlers(app, log)
    _register_request_id(app)
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
