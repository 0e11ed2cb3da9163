"""The web entry point: the Flask app over the services that bridge.bootstrap builds.

    factory.py    create_app: the app, its blueprints, request ids, the worker header
    state.py      app.extensions["bridge"] (services, reload) and the Runtime a request reads once
    webhooks.py   POST /alertmanager[/<bot>], /grafana[/<bot>]
    relay.py      POST /send/<bot> (bridge.relay), when relay.enabled
    ops.py        /-/healthy, /-/ready, /-/reload, /metrics
    preview/      /preview: the template preview page (views.py) and its sandbox (sandbox.py)
    auth.py       inbound authentication as Flask answers it (the checks: bridge.auth)
    errors.py     the JSON error answers, registered once

Nothing is imported here at module level: the preview's sandbox runs in a fresh
interpreter for each pasted template and imports bridge.web.preview.sandbox, which must
not pay for Flask and the whole app (about 150 ms a render).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Config
    from ..notify.feishu import FeishuClient
    from ..metrics import Metrics


def create_app(config: Config | None = None, *, client: FeishuClient | None = None,
               logger: logging.Logger | None = None, metrics: Metrics | None = None,
               start_delivery: bool = True) -> Flask:
    """Build the app from a validated Config (the embedded default when None)."""
    from .factory import create_app as build

    return build(config, client=client, logger=logger, metrics=metrics, start_delivery=start_delivery)


__all__ = ["create_app"]
