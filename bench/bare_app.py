"""The baseline for bench/accept.py: a bare Flask endpoint that parses the JSON body and answers 200.

It runs under gunicorn with bridge.server.settings(), the bridge's own settings, so the
only difference from the bridge is the work the bridge does per request.

    python bench/bare_app.py --port 9096 [--workers 2 --threads 4]
"""

from __future__ import annotations

import argparse
import json

from flask import Flask, Response, jsonify, request
from gunicorn.app.base import BaseApplication

from bridge.server import settings


def create_app() -> Flask:
    app = Flask("bare")

    @app.post("/alertmanager")
    def alertmanager() -> Response:
        payload = json.loads(request.get_data(cache=False))
        return jsonify(status="accepted", alerts=len(payload["alerts"]))

    @app.get("/-/ready")
    def ready() -> Response:
        return jsonify(status="ready")

    return app


class _Server(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return create_app()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    _Server(settings("127.0.0.1", args.port, args.workers, args.threads, "warning")).run()


if __name__ == "__main__":
    main()
