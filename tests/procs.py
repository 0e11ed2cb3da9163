"""Running real processes in tests: the bridge under gunicorn, as in production, and the
real Alertmanager and Prometheus binaries for the end-to-end tests.

Each process gets a free loopback port, its output goes to a file under the test's
tmp_path (shown when a test fails), and it is always stopped at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import requests

from support import free_port, require_tool, wait_http


class _Process:
    """A child process started in its own session, its output in log_path."""

    proc: subprocess.Popen
    log_path: Path
    _log: IO[bytes]

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal it, wait, and SIGKILL its whole process group if it does not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class BridgeProcess(_Process):
    """`python -m bridge serve` (gunicorn) on a free port."""

    def __init__(self, config_path: Path, log_path: Path, *, workers: int = 2, threads: int = 4,
                 env: dict[str, str] | None = None, port: int | None = None):
        self.port = port or free_port()   # a port of its own: a restart that others must find again
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config_path), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(workers), "--threads", str(threads)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:
            wait_http(f"{self.url}/-/ready", proc=self.proc)
        except Exception:
            self.stop()
            raise



# -- the real Alertmanager and Prometheus (Debian packages), for tests/e2e -----------------

ALERTMANAGER_BINARY = "prometheus-alertmanager"
PROMETHEUS_BINARY = "prometheus"
LOG_TAIL_CHARS = 20_000


def alertmanager_binary() -> str:
    """Its path; without it the test skips, or fails under --require-tools (support.require_tool)."""
    return require_tool(ALERTMANAGER_BINARY, _apt_get("prometheus-alertmanager"))


def prometheus_binary() -> str:
    return require_tool(PROMETHEUS_BINARY, _apt_get("prometheus"))


def _apt_get(package: str) -> str:
    return (f"the end-to-end tests drive the real binary. Install it with `apt-get install -y {package}` "
            "(bash .ci/run does this).")


def _without_proxies() -> dict[str, str]:
    # Go honours *_proxy variables; everything here is loopback and must stay so.
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


class DaemonProcess(_Process):
    """A server binary on a free loopback port, its files and log under one work directory.

    If it does not become ready, the exception carries the end of its log.
    """

    name = "daemon"

    def __init__(self, argv: list[str], workdir: Path, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.log_path = workdir / f"{self.name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=_without_proxies(), start_new_session=True)
        try:
            wait_http(f"{self.url}/-/ready", proc=self.proc)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n--- {self.log_path} ---\n"
                               f"{self.log()[-LOG_TAIL_CHARS:]}") from None



class AlertmanagerProcess(DaemonProcess):
    """The real Alertmanager, clustering off, its storage in workdir/data."""

    name = "alertmanager"

    def __init__(self, config_yaml: str, workdir: Path, *, binary: str | None = None):
        binary = binary or alertmanager_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "alertmanager.yml"
        config.write_text(config_yaml)
        port = free_port()
        super().__init__([
            binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
            f"--web.external-url=http://127.0.0.1:{port}", "--log.level=debug",
        ], workdir, port)

    def post_alerts(self, alerts: list[dict]) -> None:
        """POST /api/v2/alerts, as Prometheus does."""
        answer = requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=5,
                               proxies={"http": "", "https": ""})
        if answer.status_code != 200:
            raise AssertionError(f"alertmanager refused the alerts: HTTP {answer.status_code} {answer.text}")


class PrometheusProcess(DaemonProcess):
    """The real Prometheus, its TSDB in workdir/data, rule files written next to its config.

    --rules.alert.resend-delay defaults to 1m, and the first send of a rule that fires on
    its first evaluation is lost (Alertmanager not yet discovered): 1s keeps tests short.
    """

    name = "prometheus"

    def __init__(self, config_yaml: str, rules: dict[str, str], workdir: Path, *,
                 binary: str | None = None, resend_delay: str = "1s"):
        binary = binary or prometheus_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        for filename, text in rules.items():
            (workdir / filename).write_text(text)
        config = workdir / "prometheus.yml"
        config.write_text(config_yaml)
        port = free_port()
        super().__init__([
            binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", f"--web.external-url=http://127.0.0.1:{port}",
            f"--rules.alert.resend-delay={resend_delay}", "--log.level=debug",
        ], workdir, port)
