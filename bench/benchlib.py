"""What the benchmarks share: payloads, the machine's description, starting and measuring servers.

Everything listens on 127.0.0.1 only; every process started here is stopped by its caller.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
# A dry-run bot: the bridge does all its accept-path work (parse, route, store) and its
# delivery thread renders each message when due and writes it to the log instead of
# sending it, at the bot's rate limits (5/s), as a real bot would send.
DRY_RUN_CONFIG = """\
bots:
  - name: ops
    dry_run: true
    keywords: ["告警"]
route:
  bots: [ops]
storage: {path: outbox.db}
"""
SEQ = "@SEQ@"  # replaced per request (bench/post.lua) so that no two bodies are the same
NO_PROXY = {"http": "", "https": ""}


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, {model}, Python {sys.version.split()[0]}"


def alert(i: int, started: datetime) -> dict:
    """One alert as Alertmanager 0.25 sends it (tests/fixtures/alertmanager/am025-*.json)."""
    labels = {"alertname": "HighCPU", "cluster": "prod-bj", "instance": f"node-{i}:9100", "job": "node",
              "severity": "critical" if i % 3 == 0 else "warning", "team": "infra"}
    return {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": f"CPU usage above 90% on node-{i}",
                        "description": "CPU has been above 90% for 10 minutes.\nCheck \"top\" output.",
                        "runbook_url": "https://runbooks.example.com/HighCPU"},
        "startsAt": started.isoformat().replace("+00:00", "Z"),
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example.com:9090/graph?g0.expr=cpu%3E0.9&g0.tab=1",
        "fingerprint": f"{i:016x}",
    }


def payload(alerts: int, group: str = SEQ) -> dict:
    """An Alertmanager webhook body (version 4) with `alerts` alerts of one group."""
    started = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc)
    items = [alert(i, started - timedelta(seconds=i)) for i in range(1, alerts + 1)]
    return {
        "receiver": "feishu", "status": "firing", "alerts": items,
        "groupLabels": {"alertname": "HighCPU", "cluster": "prod-bj"},
        "commonLabels": {"alertname": "HighCPU", "cluster": "prod-bj", "job": "node", "team": "infra"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager.example.com:9093",
        "version": "4", "groupKey": '{}:{alertname="HighCPU", cluster="prod-bj"}/' + group,
        "truncatedAlerts": 0,
    }


def body(alerts: int, group: str = SEQ) -> bytes:
    return json.dumps(payload(alerts, group), separators=(",", ":")).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], log_path: Path, ready_url: str, timeout: float = 30.0) -> subprocess.Popen:
    """Starts a server, its output to log_path, and waits until ready_url answers 200."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    log.close()  # the child holds its own copy
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[2:4]} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if requests.get(ready_url, timeout=1, proxies=NO_PROXY).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop(proc)
    raise TimeoutError(f"{ready_url} not ready within {timeout}s:\n{log_path.read_text(errors='replace')}")


def start_bridge(workdir: Path, port: int, workers: int = 2, threads: int = 4,
                 outbox: Path | None = None, storage: str | None = None, name: str = "bridge") -> subprocess.Popen:
    """`python -m bridge serve` under gunicorn, on the dry-run config, with the production
    defaults otherwise (log level info: the dry-run bot's lines, paced at 5/s, are written).
    outbox: where storage.path points (default: outbox.db in workdir); storage: the whole
    storage section instead (flow-style YAML, e.g. a PostgreSQL one). Its config and log
    are NAME.yaml and NAME.log in workdir."""
    config = workdir / f"{name}.yaml"
    text = DRY_RUN_CONFIG
    if outbox is not None:
        text = text.replace("storage: {path: outbox.db}", f"storage: {{path: {json.dumps(str(outbox))}}}")
    if storage is not None:
        text = text.replace("storage: {path: outbox.db}", f"storage: {storage}")
    config.write_text(text)
    return start([sys.executable, "-m", "bridge", "serve", "--config", str(config), "--host", "127.0.0.1",
                  "--port", str(port), "--workers", str(workers), "--threads", str(threads)],
                 workdir / f"{name}.log", f"http://127.0.0.1:{port}/-/ready")


def start_bare(workdir: Path, port: int, workers: int = 2, threads: int = 4) -> subprocess.Popen:
    return start([sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", str(port),
                  "--workers", str(workers), "--threads", str(threads)],
                 workdir / "bare.log", f"http://127.0.0.1:{port}/-/ready")


def stop(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def children(pid: int) -> list[int]:
    """The processes whose parent is pid: gunicorn's workers, for its master."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name (field 2) may hold spaces; the parent pid follows the closing parenthesis.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
