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


def start(argv: list[str], log_path: Path, ready_url: str, timeout: float = 30.0,
          env: dict[str, str] | None = None) -> subprocess.Popen:
    """Starts a server, its output to log_path, and waits until ready_url answers 200."""
    log = open(log_path, "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
                            env={**os.environ, **env} if env else None)
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
                 outbox: Path | None = None, storage: str | None = None, name: str = "bridge",
                 sync: str = "always", env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m bridge serve` under gunicorn, on the dry-run config, with the production
    defaults otherwise (log level info: the dry-run bot's lines, paced at 5/s, are written).
    outbox: where storage.path points (default: NAME-outbox.db in workdir); storage: the whole
    storage section instead (flow-style YAML, e.g. a PostgreSQL one). Its config and log
    are NAME.yaml and NAME.log in workdir. sync: storage.sync. env: added to the server's."""
    config = workdir / f"{name}.yaml"
    text = DRY_RUN_CONFIG.replace("storage: {path: outbox.db}", f"storage: {{path: {name}-outbox.db}}")
    if outbox is not None:
        text = text.replace(f"storage: {{path: {name}-outbox.db}}", f"storage: {{path: {json.dumps(str(outbox))}}}")
    if storage is not None:
        text = text.replace(f"storage: {{path: {name}-outbox.db}}", f"storage: {storage}")
    config.write_text(text.replace("storage: {", f"storage: {{sync: {sync}, "))
    return start([sys.executable, "-m", "bridge", "serve", "--config", str(config), "--host", "127.0.0.1",
                  "--port", str(port), "--workers", str(workers), "--threads", str(threads)],
                 workdir / f"{name}.log", f"http://127.0.0.1:{port}/-/ready", env=env)


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


# -- what a server's processes spent: CPU, bytes written, connections -------------------------
TICKS = os.sysconf("SC_CLK_TCK")


def server_pids(master: int) -> list[int]:
    """gunicorn's master and its workers."""
    return [master, *children(master)]


def usage(pids: list[int]) -> dict[int, tuple[float, int]]:
    """Per process: CPU seconds (user + system) and bytes it caused to be written to the
    storage layer (/proc/PID/io write_bytes: counted when a page of the page cache is dirtied,
    so a page rewritten before the kernel wrote it back counts once)."""
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except OSError:
            continue   # exited meanwhile (a recycled worker)
        found[pid] = ((int(fields[11]) + int(fields[12])) / TICKS, int(io["write_bytes"]))
    return found


def connections(pids: list[int], port: int) -> dict[int, int]:
    """How many established connections to `port` each process holds open (from /proc/net/tcp
    and the processes' file descriptors)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "01":   # local port, ESTABLISHED
                inodes.add(cols[9])
    held = {}
    for pid in pids:
        count = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    count += 1
        except OSError:
            continue
        held[pid] = count
    return held


def metric_sum(url: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus text scrape of `url` (0 if absent)."""
    text = requests.get(url, timeout=10, proxies=NO_PROXY).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total
