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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import requests
from prometheus_client.parser import text_string_to_metric_families

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
        """`port`: a given one (a replica started again where it was, as a pod behind the
        same Service); its log is then appended to, so one file tells the whole story."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._started_with = dict(config_path=config_path, log_path=log_path, workers=workers, threads=threads,
                                  env=env)
        self._log = open(log_path, "ab" if port else "wb")
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

    def again(self) -> BridgeProcess:
        """The same server started anew on its port, once this one has exited; returns
        when it is ready."""
        assert self.proc.poll() is not None, "started again only once it has stopped"
        return BridgeProcess(**self._started_with, port=self.port)



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



@dataclass(frozen=True)
class Gossip:
    """An Alertmanager's place in an HA cluster: its own gossip port on loopback (TCP and
    UDP, as memberlist uses both), its peers', and Alertmanager's cluster flags to pass."""

    port: int
    peers: tuple[int, ...]
    flags: tuple[str, ...] = ()

    def argv(self) -> list[str]:
        address = f"127.0.0.1:{self.port}"
        return [f"--cluster.listen-address={address}", f"--cluster.advertise-address={address}",
                *(f"--cluster.peer=127.0.0.1:{peer}" for peer in self.peers), *self.flags]


def gossip_pair(*flags: str) -> tuple[Gossip, Gossip]:
    """The two members of an HA pair, each the other's peer."""
    one, two = free_port(), free_port()
    return Gossip(one, (two,), flags), Gossip(two, (one,), flags)


class AlertmanagerProcess(DaemonProcess):
    """The real Alertmanager, its storage in workdir/data; clustering off unless `gossip`
    places it in an HA cluster."""

    name = "alertmanager"

    def __init__(self, config_yaml: str, workdir: Path, *, binary: str | None = None, gossip: Gossip | None = None):
        binary = binary or alertmanager_binary()
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "alertmanager.yml"
        config.write_text(config_yaml)
        port = free_port()
        super().__init__([
            binary, f"--config.file={config}", f"--storage.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", *(gossip.argv() if gossip else ["--cluster.listen-address="]),
            f"--web.external-url=http://127.0.0.1:{port}", "--log.level=debug",
        ], workdir, port)

    def post_alerts(self, alerts: list[dict]) -> None:
        """POST /api/v2/alerts, as Prometheus does."""
        answer = requests.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=5,
                               proxies={"http": "", "https": ""})
        if answer.status_code != 200:
            raise AssertionError(f"alertmanager refused the alerts: HTTP {answer.status_code} {answer.text}")

    def cluster(self) -> dict:
        """GET /api/v2/status's `cluster`: {"status": "ready"|"settling"|"disabled", "peers": [...]}."""
        return requests.get(f"{self.url}/api/v2/status", timeout=5, proxies={"http": "", "https": ""}).json()["cluster"]

    def notifications(self, integration: str = "webhook") -> float:
        """How many notifications it sent (alertmanager_notifications_total), failed ones included."""
        text = requests.get(f"{self.url}/metrics", timeout=5, proxies={"http": "", "https": ""}).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "alertmanager_notifications_total" and sample.labels.get("integration") == integration:
                    total += sample.value
        return total


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
