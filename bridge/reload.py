"""Reloading the configuration while running, in every process.

Three triggers, one mechanism. `POST /-/reload` reloads the worker that got the
request (so it can answer with the outcome) and then asks the others; SIGHUP to
gunicorn's master validates the file and asks every worker; with `reload.watch`
each worker also notices the file changing on disk (a Kubernetes ConfigMap update).
"Asking" is a counter in a small file: each worker's watcher thread checks it every
second and reloads when it moves. The file is one server's (one pod's): beside the
SQLite outbox, or, with PostgreSQL (no file of the bridge's on the pod), in a
directory gunicorn's master makes for itself and its workers at start (server.py) and
names to them in BRIDGE_RELOAD_FILE. Reloading is per pod either way: each pod's
watch (or its SIGHUP, or its /-/reload) reloads that pod; the replicas share the
database, not their configuration files. A reload that fails keeps
the running configuration; the error is logged (and answered, for /-/reload).

Why not gunicorn's own HUP (restart every worker)? A broken file would make the new
workers fail to boot, and gunicorn then stops altogether: the opposite of "keep
serving the old config".
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable

from .config import file_signature

GENERATION_SUFFIX = ".reload"
POLL_SECONDS = 1.0


# Set by the server's master for its workers when there is no outbox file to sit beside.
RELOAD_FILE_ENV = "BRIDGE_RELOAD_FILE"


def generation_path(storage_path: Path | None) -> Path:
    """This server's reload counter: the file its master named, else beside the SQLite
    outbox, else one of this process's own (a server of one process: --dev, tests)."""
    named = os.environ.get(RELOAD_FILE_ENV)
    if named:
        return Path(named)
    if storage_path is not None:
        return storage_path.with_name(storage_path.name + GENERATION_SUFFIX)
    return Path(tempfile.gettempdir()) / f"feishu-alert-bridge-{os.getpid()}{GENERATION_SUFFIX}"


def read_generation(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def request_reload(path: Path) -> None:
    """Ask every process to reload: bump the counter, atomically (write, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(str(read_generation(path) + 1))
    os.replace(tmp, path)


class Watcher:
    """One per process: calls `reload()` when asked through the counter file or, with
    watch on, when the config file changes."""

    def __init__(self, reload: Callable[[], object], generation: Path, config_path: Path | None,
                 loaded: tuple | None, watch: Callable[[], tuple[bool, float]]):
        self._reload = reload
        self._generation = generation
        self._config_path = config_path
        self._watch = watch                    # (enabled, interval) from the *current* config
        self._seen = read_generation(generation)
        # The file as it was when this process loaded it. A change between that load and
        # now (a SIGHUP while this worker was booting) is caught at the first check.
        self._file = loaded
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acknowledge(self, loaded: tuple | None) -> None:
        """This process has just reloaded by itself: don't reload again for the same request."""
        self._seen = read_generation(self._generation)
        self._file = loaded

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bridge-reload", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        since_file_check, first = 0.0, True
        while not self._stop.wait(POLL_SECONDS):
            generation = read_generation(self._generation)
            changed = self._config_path is not None and file_signature(self._config_path) != self._file
            if generation != self._seen or (first and changed):
                self._seen = generation
                self._reload()                 # on success it acknowledges the file it read
            first = False
            enabled, interval = self._watch()
            since_file_check += POLL_SECONDS
            if enabled and since_file_check >= interval:
                since_file_check = 0.0
                current = file_signature(self._config_path) if self._config_path is not None else None
                if current != self._file:
                    self._file = current       # a broken file is reported once, not every interval
                    self._reload()
