"""The events process's own `GET /metrics` (`--metrics-port`).

Its own registry, served by prometheus_client's HTTP server on a thread of its own: the
SDK's event loop holds the main thread, and this process is not gunicorn's. It never
uses the server's multiprocess directory (PROMETHEUS_MULTIPROC_DIR): `events` drops that
variable before prometheus_client is first imported (bridge.cli), because in the chart
both containers share /tmp, and the server empties its directory when it starts.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from ..errors import BridgeError
from ..metrics import Metrics, multiprocess


class MetricsEndpoint:
    """`metrics`' registry on host:port; `close()` stops it."""

    def __init__(self, metrics: Metrics, host: str, port: int, log: logging.Logger):
        if multiprocess():   # the values would go to the server's files; bridge.cli prevents it
            raise BridgeError("events: PROMETHEUS_MULTIPROC_DIR is set; the events process counts on its own "
                              "registry: unset it")
        try:
            self.server, self.thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise BridgeError(f"--metrics-port: cannot listen on {_where(host, port)} for /metrics: "
                              f"{exc.strerror or exc}") from None
        log.info("serving /metrics", extra={"event": "events_metrics", "address": _where(host, self.port)})

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
