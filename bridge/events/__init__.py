"""`feishu-alert-bridge events`: card taps over Feishu's long connection.

The second way to receive taps, for a bridge with no public URL (an on-premises
monitoring stack): the process dials out to Feishu, one long connection per app under
`apps:`, and every tap that arrives goes to `runtime.actions.tap(app, callback)`, the
same call as the HTTP route `POST /feishu/callback`. The long connection is the official
SDK's (lark-oapi): protobuf frames over a websocket, documented nowhere but in the SDK.

Its own process, beside `serve`: the SDK's client blocks and runs an event loop of its
own, which has no place in a gunicorn worker (and each worker would open a connection of
its own, while Feishu hands each tap to one connection at random). The runtime comes from
bootstrap as the server's does (the config, the store); no senders run here: whatever a
tap stores, the server's senders deliver.

    taps.py         SDK object -> Actions.tap -> SDK response
    connections.py  the SDK's clients on its one event loop; first connect, watch, stop
    sdklog.py       the SDK's log lines in the bridge's log, without credentials
    scrape.py       its own /metrics (--metrics-port): taps counted, the connections' state
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from .. import bootstrap
from ..config import load
from ..errors import ConfigError
from ..logs import configure
from ..metrics import Metrics


def run(config_path: str | None, *, log_format: str | None = None, log_level: str | None = None,
        heartbeat: Path | None = None, retry_connect: float | None = None,
        metrics_port: int | None = None, metrics_host: str = "0.0.0.0") -> int:
    """Raises ConfigError (the config is wrong, actions are off, no app) or BridgeError
    (Feishu cannot be reached or refuses; the metrics port is taken) before anything is
    running. metrics_port None: no /metrics; 0: any free port (tests)."""
    config = load(config_path)
    log = configure(log_format or config.log.format, log_level or config.log.level)
    if not config.actions.enabled:
        raise ConfigError("actions.enabled: card actions are off, so there are no taps to receive: set "
                          "actions.enabled: true (or do not run `events`)")
    if not config.apps:
        raise ConfigError("apps: no app is configured: the long connection is a Feishu app's (README, Card actions)")
    # The SDK only now: importing it takes about 2 s (all of Feishu's APIs), and a config
    # mistake should not wait for it.
    from .connections import LongConnections, domain_of
    from .scrape import MetricsEndpoint
    from .sdklog import adopt_sdk_logger
    from .taps import dispatcher

    adopt_sdk_logger(log, [app.app_secret.reveal() for app in config.apps.values()])
    metrics = Metrics() if metrics_port is not None else None
    with ExitStack() as stack:
        store = bootstrap.build_store(config)
        stack.callback(store.close)
        runtime = bootstrap.build_runtime(config, store=store, wake=_no_senders, log=log, metrics=metrics)
        actions = runtime.actions
        if actions is None:   # actions.enabled was read above; this is the runtime agreeing
            raise ConfigError("actions.enabled: card actions are off")
        log.info("starting", extra={"event": "events_starting", "config": config.source,
                                    "apps": {name: domain_of(app) for name, app in config.apps.items()}})
        connections = LongConnections(list(config.apps.values()),
                                      lambda app: dispatcher(app.name, actions, log.getChild("events")),
                                      log, heartbeat=heartbeat, retry_connect=retry_connect, metrics=metrics)
        if metrics is not None:   # once the apps' gauges exist: the first scrape shows them down
            stack.callback(MetricsEndpoint(metrics, metrics_host, metrics_port, log).close)
        code = connections.run()
        log.info("stopped", extra={"event": "events_stopped", "code": code})
        return code


def _no_senders() -> None:
    """No senders run in this process: the server's find what is stored within a second."""

