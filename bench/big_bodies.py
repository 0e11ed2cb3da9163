"""Memory per gunicorn worker for the largest webhook bodies: the peak, and what stays after.

    python bench/big_bodies.py [--max-body 5MiB] [--cases realistic-2k,realistic-4k,limit,dense,hostile]

Each case runs twice, each time on a fresh bridge (2 workers x 4 threads, one dry-run bot,
production defaults; `server.max_body_bytes` from --max-body) that gets one body; each
worker's VmRSS and VmHWM (its peak resident memory) are read from /proc/<pid>/status. The
figures are those of the worker with the highest peak.

- accept only: the body's alerts are resolved and the bot has send_resolved: false, so the
  request is read, decoded, parsed and routed, and nothing is stored: the memory one
  request takes. Peak after the answer, and RSS after a 3 s rest (what is returned).
- stored and sent: the body as it is. Peak once the dry-run bot has logged its first card
  (the sender decodes the body again and renders all its cards before the first goes), and
  RSS 3 s later, while the other cards are still being sent at the bot's 100 a minute.

- realistic-2k: 1000 alerts of one group (Alertmanager's max_alerts unset), 14 labels,
  a 150-character summary, a 2 000-character description, runbook and dashboard URLs:
  the largest body a real Alertmanager sends in practice.
- realistic-4k: the same with 4 000-character descriptions.
- limit:        alerts like those of realistic-2k, as many as fit in max_body_bytes.
- dense:        alerts with 40 short labels each, as many as fit: the most values a
                realistic-looking body of that size holds.
- hostile:      {"alerts": [[],[],...]} up to max_body_bytes (refused: more values than
                one per 6 bytes), to show what refusing it before decoding saves.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests

import benchlib

REST_SECONDS = 3.0
SIZES = {"KiB": 2**10, "MiB": 2**20}


def alert(i: int, description: int, labels: int = 0) -> dict:
    started = datetime(2026, 3, 2, 8, 30, tzinfo=timezone.utc) - timedelta(seconds=i)
    item = benchlib.alert(i, started)
    item["labels"].update({"namespace": f"team-{i % 40}", "pod": f"api-{i:05d}-7d9f8b6c5-x2k4p",
                           "container": "api", "node": f"ip-10-0-{i % 250}-{i % 200}.ec2.internal",
                           "service": "api", "endpoint": "http-metrics", "prometheus": "monitoring/k8s",
                           "region": "cn-north-1"})
    for n in range(labels):
        item["labels"][f"l{n}"] = f"v{n}"
    sentence = f"Pod api-{i:05d} in namespace team-{i % 40} has been restarting; check its logs and events. "
    item["annotations"] = {
        "summary": (f"Container api of pod api-{i:05d} restarted more than 5 times in 10 minutes " * 3)[:150],
        "description": (sentence * (description // len(sentence) + 1))[:description],
        "runbook_url": "https://runbooks.example.com/kubernetes/KubePodCrashLooping",
        "dashboard": f"https://grafana.example.com/d/pods?var-namespace=team-{i % 40}&var-pod=api-{i:05d}",
    }
    return item


def body_of(alerts: list[dict]) -> bytes:
    payload = benchlib.payload(1, group=f"big-{time.monotonic_ns()}")
    payload["alerts"] = alerts
    return json.dumps(payload, separators=(",", ":")).encode()


def up_to(limit: int, make) -> bytes:
    """As many alerts from make(i) as fit in `limit` bytes."""
    sample = len(body_of([make(0)] * 10)) / 10
    count = int(limit / sample)
    body = body_of([make(i) for i in range(count)])
    while len(body) > limit:
        count -= max(1, count // 100)
        body = body_of([make(i) for i in range(count)])
    return body


def case_body(case: str, limit: int) -> bytes:
    if case == "realistic-2k":
        return body_of([alert(i, 2000) for i in range(1000)])
    if case == "realistic-4k":
        return body_of([alert(i, 4000) for i in range(1000)])
    if case == "limit":
        return up_to(limit, lambda i: alert(i, 2000))
    if case == "dense":
        return up_to(limit, lambda i: alert(i, 0, labels=40))
    if case == "hostile":
        return b'{"alerts":[' + b"[]," * ((limit - 20) // 3) + b"[]]}"
    raise ValueError(case)


def status(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def wait_sent(log: Path, timeout: float = 120.0) -> None:
    """Until the dry-run bot has logged the first part of the message, or a failure to render
    it. Its cards are all rendered before the first is sent (and stored); the rest follow
    at the bot's rate limit, 100 a minute, for minutes, with nothing more to render."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            event = json.loads(line)
            if event.get("event") == "dry_run":
                return
            if event.get("level") == "error":
                return
        time.sleep(0.5)
    raise TimeoutError(f"the message was not sent within {timeout} s")


ACCEPT_ONLY = """\
bots:
  - name: ops
    dry_run: true
    send_resolved: false
route:
  bots: [ops]
storage: {path: outbox.db}
"""


def resolved(body: bytes) -> bytes:
    """The body with every alert resolved: with send_resolved false nothing of it is stored."""
    return body.replace(b'"status":"firing"', b'"status":"resolved"').replace(
        b'"endsAt":"0001-01-01T00:00:00Z"', b'"endsAt":"2026-03-02T09:00:00Z"')


def run_once(config: str, body: bytes, wait_for_send: bool) -> dict:
    """One bridge, one body: the worst worker's figures."""
    with tempfile.TemporaryDirectory(prefix="bench-big-") as tmp:
        workdir, port = Path(tmp), benchlib.free_port()
        (workdir / "bridge.yaml").write_text(config)
        proc = benchlib.start([sys.executable, "-m", "bridge", "serve", "--config", str(workdir / "bridge.yaml"),
                               "--host", "127.0.0.1", "--port", str(port)], workdir / "bridge.log",
                              f"http://127.0.0.1:{port}/-/ready")
        try:
            time.sleep(1.0)
            pids = benchlib.children(proc.pid)
            before = [status(pid) for pid in pids]
            began = time.monotonic()
            answer = requests.post(f"http://127.0.0.1:{port}/alertmanager", data=body, timeout=60,
                                   headers={"Content-Type": "application/json"}, proxies=benchlib.NO_PROXY)
            took = time.monotonic() - began
            if wait_for_send and answer.status_code == 200:
                wait_sent(workdir / "bridge.log")
            peaks = [status(pid) for pid in pids]
            time.sleep(REST_SECONDS)
            rest = [status(pid) for pid in pids]
        finally:
            benchlib.stop(proc)
    worst = max(range(len(pids)), key=lambda i: peaks[i][1])
    return {"status": answer.status_code, "seconds": took, "before": before[worst][0], "peak": peaks[worst][1],
            "after": rest[worst][0]}


def measure(case: str, limit: int, max_body: str) -> tuple[int, dict, dict]:
    body = case_body(case, limit)
    server = f"server: {{max_body_bytes: {max_body}}}\n"
    accept = run_once(ACCEPT_ONLY + server, resolved(body), wait_for_send=False)
    send = run_once(benchlib.DRY_RUN_CONFIG + server, body, wait_for_send=True)
    return len(body), accept, send


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-body", default="5MiB", help="server.max_body_bytes (default: the bridge's 5MiB)")
    parser.add_argument("--cases", default="realistic-2k,realistic-4k,limit,dense,hostile",
                        type=lambda text: text.split(","))
    args = parser.parse_args()
    number, unit = args.max_body[:-3], args.max_body[-3:]
    limit = int(float(number) * SIZES[unit]) if unit in SIZES else int(args.max_body)
    print(f"machine: {benchlib.machine()}; server.max_body_bytes {args.max_body}")
    print(f"{'':<13} {'':>9} {'':>6} | accept only (nothing stored)     | stored and sent")
    print(f"{'case':<13} {'body':>9} {'answer':>6} | {'took':>6} {'before':>7} {'peak':>7} {'after':>7} | "
          f"{'peak':>7} {'sending':>8}   (MiB; the worker with the highest peak)")
    for case in args.cases:
        size, a, r = measure(case, limit, args.max_body)
        print(f"{case:<13} {size / 2**20:7.2f}Mi {a['status']:>6} | {a['seconds']:5.2f}s {a['before']:7.1f} "
              f"{a['peak']:7.1f} {a['after']:7.1f} | {r['peak']:7.1f} {r['after']:8.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
