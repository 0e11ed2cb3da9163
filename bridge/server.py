"""Production serving: gunicorn with the project's settings.

Each worker builds its own app from the config file after the fork (no preload):
the delivery thread must start in the process that runs it, and threads do not
survive fork(). The master has already validated the config, so a worker failing
to load it is not expected.
"""

from __future__ import annotations

import os

import logging
import shutil
import sys
import tempfile

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from .config import load
from .errors import ConfigError
from .reload import RELOAD_FILE_ENV, generation_path, request_reload
from .serving.memory import tune_malloc

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"   # the same name as bridge.metrics', not imported from there


def _worker_exit(server, worker) -> None:
    # Let the delivery thread finish what it holds before the worker goes away.
    app = getattr(worker, "wsgi", None)
    bridge = getattr(app, "extensions", {}).get("bridge") if app is not None else None
    if bridge is not None:
        bridge.stop()  # waits up to delivery.shutdown_grace for the send in flight


def _child_exit(server, worker) -> None:
    from .metrics import mark_process_dead

    mark_process_dead(worker.pid)


def prepare_metrics_dir() -> str | None:
    """Point prometheus_client's multiprocess mode at an empty directory, before any worker
    starts (its files from a previous run would be summed into this one's).

    prometheus_client picks its storage when first imported, so nothing in this
    process may import it (bridge.metrics included) before this has run.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        created = tempfile.mkdtemp(prefix="feishu-alert-bridge-metrics-")
        os.environ[MULTIPROC_ENV] = created
        return created                     # ours: removed at exit
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))
    return None


class _Arbiter(Arbiter):
    """gunicorn's master, with SIGHUP meaning "reload the config in place".

    gunicorn's own HUP restarts every worker; with a broken config file the new
    workers fail to boot and gunicorn stops. Here the master validates the file
    first and, if it is good, asks each worker to reload (bridge/reload.py).
    """

    def handle_hup(self) -> None:
        log = logging.getLogger("bridge")
        try:
            load(self.app.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: reload refused; keeping the running configuration: %s", "; ".join(exc.problems),
                      extra={"event": "reload_failed"})
            return
        request_reload(generation_path(self.app.storage_path))
        log.info("SIGHUP: workers asked to reload", extra={"event": "reload_requested"})


# Set by serve's own flags (--host/--port, --workers, --threads) or fixed by the bridge.
_OWN_SETTINGS = {"bind", "workers", "threads", "worker_class", "worker_exit", "child_exit"}


class _Server(BaseApplication):
    def __init__(self, config_path: str | None, storage_path, options: dict):
        self.config_path = config_path
        self.storage_path = storage_path       # where the reload counter lives, fixed at start
        self.options = options
        super().__init__()

    def run(self) -> None:
        try:
            _Arbiter(self).run()
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(1)

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        # gunicorn's own way to pass settings (its docs, "Settings"): e.g. --timeout or
        # --max-requests. serve's flags own where and how many: those are not overridden.
        extra = self.cfg.get_cmd_args_from_env()
        if extra:
            parsed = self.cfg.parser().parse_args(extra)
            for key, value in vars(parsed).items():
                if value is None or key == "args" or key in _OWN_SETTINGS:
                    continue
                self.cfg.set(key.lower(), value)

    def load(self):
        from .web import create_app

        config = load(self.config_path)
        # What the worker (serving.worker) reads requests with: as at start, like the app's limit.
        self.server_settings = config.server
        return create_app(config, logger=logging.getLogger("bridge"))


# gthread, with each request read whole in the worker's event loop before a thread takes it.
# Why threads in a few processes (issue 15, measured with bench/accept.py on 2 cores): a
# request is CPU in Python (one GIL per process) and then a wait for the outbox's commit;
# threads fill the wait with other requests' CPU, and concurrent webhooks of one process
# share one commit (store/sqlite/group.py GroupCommit), so a process needs several
# threads; processes put both cores to work. 2 x 4 is the default: on 2 cores (2026-12-05,
# webhooks/s with storage.sync always / interval) 2 x 4 took 1465 / 1858, 4 x 2 1071 / 1564
# (1.1 webhooks per commit: nothing left to group), 3 x 3 1196 / 1466, 2 x 8 1478 / 1832
# (no better, more threads to switch between). Connections are spread over the workers
# (serving.worker ACCEPT_YIELD): without that a client's few kept-alive connections
# often all sat on one worker, which halved the rate.
WORKER_CLASS = "bridge.serving.worker.BufferingWorker"


def settings(host: str, port: int, workers: int, threads: int, log_level: str,
             worker_class: str = WORKER_CLASS) -> dict:
    return {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": worker_class,
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
        "child_exit": _child_exit,
        # gunicorn's control socket lives under $HOME, which is read-only in the container
        # and which nobody here uses.
        "control_socket_disable": True,
    }


def prepare_reload_file(storage_path) -> str | None:
    """With no outbox file (PostgreSQL), a directory of this server's own for the reload
    counter (bridge.reload), named to the workers through the environment they inherit;
    the directory, removed at exit. Per server, so two servers on one host (two
    replicas) never reload each other."""
    if storage_path is not None or os.environ.get(RELOAD_FILE_ENV):
        return None
    created = tempfile.mkdtemp(prefix="feishu-alert-bridge-reload-")
    os.environ[RELOAD_FILE_ENV] = os.path.join(created, "generation")
    return created


def run(config_path: str | None, storage_path, *, host: str, port: int, workers: int, threads: int,
        log_level: str, worker_class: str = WORKER_CLASS) -> int:
    created = prepare_metrics_dir()
    reload_dir = prepare_reload_file(storage_path)
    master = os.getpid()
    tune_malloc()              # before any worker (or thread) exists
    try:
        _Server(config_path, storage_path, settings(host, port, workers, threads, log_level, worker_class)).run()
    finally:
        # gunicorn forks its workers deep inside run(), and a worker leaves by raising
        # SystemExit up through this very frame: without the pid check every exiting
        # worker (a TTOU, a timeout, a plain SIGTERM to one worker) deleted the directory
        # all the others write their metrics to, and the replacement failed to boot.
        if os.getpid() == master:
            for directory in (created, reload_dir):
                if directory:
                    shutil.rmtree(directory, ignore_errors=True)
    return 0
