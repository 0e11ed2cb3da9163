"""The app's JSON error answers, registered once for every blueprint.

A refusal on purpose says what is wrong ({"error": ...}); anything else is a 500 whose
traceback goes to the log, never to the caller.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from ..accept import UnknownBot
from ..errors import PayloadError, StorageError


def register(app: Flask, log: logging.Logger) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.description), exc.code

    @app.errorhandler(UnknownBot)
    def unknown_bot(exc: UnknownBot):
        return jsonify(error=str(exc)), 404

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
