"""Production serving: gunicorn with the project's settings.

Each worker builds its own app from the config file after the fork (no preload):
the delivery thread must start in the process that runs it, and threads do not
survive fork(). The master has already validated the config, so a worker failing
to load it is not expected.
"""

from __future__ import annotations

import os

from gunicorn.app.base import BaseApplication


def _worker_exit(server, worker) -> None:
    # Let the delivery thread finish what it holds before the worker goes away.
    app = getattr(worker, "wsgi", None)
    bridge = getattr(app, "extensions", {}).get("bridge") if app is not None else None
    if bridge is not None:
        bridge.delivery.stop(timeout=10.0)


class _Server(BaseApplication):
    def __init__(self, config_path: str | None, options: dict):
        self.config_path = config_path
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        import logging

        from .app import create_app
        from .config import load

        return create_app(load(self.config_path), logger=logging.getLogger("bridge"))


def settings(host: str, port: int, workers: int, threads: int, log_level: str) -> dict:
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 20,
        # Alertmanager reuses connections; Grafana does not. Keep idle ones briefly.
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": log_level,
        # The heartbeat file: /dev/shm works with a read-only root filesystem.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "worker_exit": _worker_exit,
        # gunicorn's control socket lives under $HOME, which is read-only in the container
        # and which nobody here uses.
        "control_socket_disable": True,
    }


def run(config_path: str | None, *, host: str, port: int, workers: int, threads: int, log_level: str) -> int:
    _Server(config_path, settings(host, port, workers, threads, log_level)).run()
    return 0
