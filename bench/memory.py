"""Resident memory per gunicorn worker: after start-up and while 10 000 notifications are posted.

    python bench/memory.py [--notifications 10000] [--clients 8]

Starts the bridge (2 workers x 4 threads, one dry-run bot, production defaults) on
127.0.0.1 and reads each worker's VmRSS from /proc/<pid>/status: after start-up, at
every tenth of the notifications, and after a short rest at the end. Each notification
is a distinct group (its own groupKey and alertname) of 1 to 10 alerts, so that any
per-group state the bridge keeps grows as it would in production. Then the same for
the bare Flask app of accept.py (bare_app.py) under the same gunicorn settings: the
baseline, which is what Python, Flask and gunicorn cost on this machine by themselves.
Target: <= 45 MB per worker, and flat. Figures are MiB (2^20 bytes, as ps and kubectl
show them); the verdict reads the target as 45 * 10^6 bytes, the stricter reading.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

import benchlib

TARGET_MIB = 45e6 / 2**20     # 45 MB = 42.9 MiB
REST_SECONDS = 3.0


def notification(i: int) -> bytes:
    body = benchlib.payload(1 + i % 10, group=f"mem-{i}")
    name = f"MemoryBench{i}"
    body["groupLabels"]["alertname"] = body["commonLabels"]["alertname"] = name
    for alert in body["alerts"]:
        alert["labels"]["alertname"] = name
    return json.dumps(body, separators=(",", ":")).encode()


def workers(master: int, expected: int, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = benchlib.children(master)
        if len(pids) == expected:
            return pids
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn has {len(benchlib.children(master))} workers, expected {expected}")


def sample(label: str, pids: list[int]) -> list[float]:
    rss = [benchlib.rss_mib(pid) for pid in pids]
    print(f"  {label:<22} " + "  ".join(f"worker {pid}: {mib:6.1f} MiB" for pid, mib in zip(pids, rss)),
          flush=True)
    return rss


def post_all(url: str, count: int, clients: int, pids: list[int]) -> list[list[float]]:
    local = threading.local()
    failures: list[str] = []
    samples = []

    def post(i: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False  # loopback only, whatever the proxy variables say
        answer = session.post(url, data=notification(i), headers={"Content-Type": "application/json"}, timeout=30)
        if answer.status_code != 200:
            failures.append(f"#{i}: HTTP {answer.status_code} {answer.text[:200]}")

    step = max(1, count // 10)
    with ThreadPoolExecutor(clients) as pool:
        for start in range(0, count, step):
            list(pool.map(post, range(start, min(start + step, count))))
            samples.append(sample(f"after {min(start + step, count)}", pids))
    if failures:
        raise RuntimeError(f"{len(failures)} notification(s) refused; first: {failures[0]}")
    return samples


def measure(name: str, start, args: argparse.Namespace) -> tuple[list[int], list[float], list[float]]:
    print(f"{name}: gunicorn gthread 2 workers x 4 threads" +
          (", one dry-run bot, production defaults" if name == "bridge" else ", parses the JSON and answers 200"))
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        port = benchlib.free_port()
        server = start(Path(tmp), port)
        try:
            pids = workers(server.pid, 2)
            time.sleep(1.0)  # both workers have loaded the app by now
            first = sample("after start-up", pids)
            began = time.monotonic()
            post_all(f"http://127.0.0.1:{port}/alertmanager", args.notifications, args.clients, pids)
            took = time.monotonic() - began
            time.sleep(REST_SECONDS)
            last = sample(f"after {REST_SECONDS:g} s rest", pids)
        finally:
            benchlib.stop(server)
    print(f"  {args.notifications} notifications in {took:.1f} s ({args.notifications / took:.0f}/s)")
    return pids, first, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent posting threads (default 8)")
    args = parser.parse_args()
    print(f"machine: {benchlib.machine()}")
    pids, first, last = measure("bridge", benchlib.start_bridge, args)
    _, bare_first, bare_last = measure("bare", benchlib.start_bare, args)
    bare = max(bare_last)
    print(f"bare Flask worker: {min(bare_first):.1f} -> {bare:.1f} MiB")
    for pid, a, b in zip(pids, first, last):
        verdict = "ok" if b <= TARGET_MIB else "ABOVE TARGET"
        print(f"bridge worker {pid}: {a:.1f} -> {b:.1f} MiB ({b - a:+.1f}) = {b * 2**20 / 1e6:.1f} MB, "
              f"{b / bare:.2f}x the bare worker, {b - bare:+.1f} MiB; target <= 45 MB: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
