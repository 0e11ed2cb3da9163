"""What the handlers share: app.extensions["bridge"], and the Runtime each request reads once.

A request reads the runtime in force once, before any handler or blueprint hook runs
(`g.runtime`), and uses only that: a reload meanwhile swaps `services.runtime`, and the
request still sees the configuration it started with, whole.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

from flask import current_app, g

from ..bootstrap import Runtime, Services
from ..config import Config, load
from ..errors import ConfigError
from ..metrics import Metrics
from ..reload import Watcher, generation_path, request_reload


class Bridge:
    """The process's services (bootstrap.Services), the reload watcher, and reloading."""

    def __init__(self, services: Services):
        self.services = services
        self.log = services.log
        self.metrics: Metrics = services.metrics   # never None here: create_app always counts
        self._lock = threading.Lock()
        self._turn = threading.Lock()          # one /-/reload at a time ...
        self._queue_lock = threading.Lock()    # ... and at most one waiting for its turn
        self._queued: Future | None = None
        config = services.runtime.config
        self.watcher = Watcher(self.reload_or_keep, generation_path(config.storage.path), _config_file(config),
                               config.file_signature, self._watch_settings)

    @property
    def runtime(self) -> Runtime:
        """The runtime in force now. A request uses `runtime()` below instead: its own, read once."""
        return self.services.runtime

    def _watch_settings(self) -> tuple[bool, float]:
        """reload.watch and reload.interval of the configuration in force."""
        settings = self.runtime.config.reload
        return settings.watch, settings.interval

    def reload(self) -> Config:
        """Load the config file again; on any error raise and keep the running config."""
        with self._lock:
            running = self.runtime.config
            source = running.source
            try:
                if source == "<string>":
                    raise ConfigError("this app was built from a config in memory: there is no file to reload")
                config = load(None if source == "<embedded default>" else source)
                runtime = self.services.runtime_for(config)
            except ConfigError as exc:
                self.metrics.reload_ok.set(0)
                self.log.error("reload failed; keeping the running configuration: %s", "; ".join(exc.problems),
                               extra={"event": "reload_failed"})
                raise
            if config.storage != running.storage:
                self.log.warning("storage changed: it takes effect at the next start",
                                 extra={"event": "reload_storage_path"})
            self.services.use(runtime)
            self.watcher.acknowledge(config.file_signature)
            self.metrics.reload_ok.set(1)
            self.metrics.reload_time.set_to_current_time()
        self.log.info("configuration reloaded", extra={"event": "reloaded", "config": config.source,
                                                        "bots": list(config.bots)})
        return config

    def reload_and_spread(self) -> Config:
        """reload(), then ask the other workers to follow (what POST /-/reload does)."""
        config = self.reload()
        request_reload(generation_path(config.storage.path))
        self.watcher.acknowledge(config.file_signature)
        return config

    def reload_in_background(self) -> Future:
        """reload_and_spread() in a thread of its own: its outcome, whenever it comes.

        Requests that come while a reload runs share the one queued after it (which reads
        the file after they came), so a burst of /-/reload makes two threads, not one each.
        """
        with self._queue_lock:
            if self._queued is not None:
                return self._queued
            outcome = self._queued = Future()
        threading.Thread(target=self._reload_queued, args=(outcome,), name="bridge-reload-request",
                         daemon=True).start()
        return outcome

    def _reload_queued(self, outcome: Future) -> None:
        with self._turn:
            with self._queue_lock:
                self._queued = None   # begun: a request from now on needs a reload of its own
            outcome.set_running_or_notify_cancel()
            try:
                outcome.set_result(self.reload_and_spread())
            except BaseException as exc:   # the caller's to judge, as result() raises it
                outcome.set_exception(exc)

    def reload_or_keep(self) -> None:
        """reload() for callers with no one to answer (the watcher, SIGHUP in --dev): it has logged why."""
        try:
            self.reload()
        except ConfigError:
            pass

    def start(self) -> None:
        self.services.start()
        self.watcher.start()

    def stop(self, timeout: float | None = None) -> None:
        self.watcher.stop()
        self.services.stop(timeout=timeout)


def _config_file(config: Config) -> Path | None:
    return None if config.source.startswith("<") else Path(config.source)


def bridge() -> Bridge:
    return current_app.extensions["bridge"]


def runtime() -> Runtime:
    """This request's runtime: the one in force when it started."""
    return g.runtime


def register(app) -> None:
    @app.before_request
    def read_runtime_once() -> None:
        # App-level: it runs before every blueprint's hooks, so their checks see it too.
        g.runtime = bridge().runtime
