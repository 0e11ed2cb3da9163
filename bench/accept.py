"""Accept-path throughput: the bridge's POST /alertmanager against a bare Flask endpoint.

    python bench/accept.py [--duration 10] [--warmup 3] [--sizes 1,10,100]

Both run under gunicorn with bridge.server.settings() (2 workers x 4 threads, gthread)
on 127.0.0.1. wrk drives them closed-loop (-t2 -c8). The bridge has one dry-run bot
with the production defaults (log level info), so it parses, routes and stores each
notification but sends nothing. Per payload size: a warm-up of each, then
bare, bridge, bare, bridge; prints requests/s and p50/p99 latency per run, their mean,
and the ratio bridge/bare (target: >= 0.7).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import benchlib

LUA = Path(__file__).resolve().parent / "post.lua"
TARGET = 0.7


@dataclass(frozen=True)
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def wrk(url: str, body_file: Path, seconds: float) -> Run:
    # A tag of its own for every run: the bodies must differ from every earlier run's too,
    # or the bridge drops them as duplicates (delivery.dedupe_window) and does less work.
    tag = uuid.uuid4().hex[:12]
    out = subprocess.run(
        ["wrk", "-t2", "-c8", f"-d{seconds:g}s", "--latency", "-s", str(LUA), url, "--", str(body_file), tag],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout
    line = next((row for row in out.splitlines() if row.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{out}")
    f = json.loads(line[4:])
    errors = f["non_2xx"] + f["connect"] + f["read"] + f["write"] + f["timeout"]
    return Run(f["requests"] / (f["duration_us"] / 1e6), f["p50_us"] / 1000, f["p99_us"] / 1000, errors)


def mean(runs: list[Run]) -> Run:
    return Run(statistics.mean(r.rps for r in runs), statistics.mean(r.p50_ms for r in runs),
               statistics.mean(r.p99_ms for r in runs), sum(r.errors for r in runs))


def show(label: str, run: Run) -> None:
    errors = f"  ERRORS {run.errors}" if run.errors else ""
    print(f"  {label:<14} {run.rps:9.0f} req/s   p50 {run.p50_ms:7.2f} ms   p99 {run.p99_ms:7.2f} ms{errors}",
          flush=True)


def bench_size(alerts: int, urls: dict[str, str], workdir: Path, args: argparse.Namespace) -> float:
    body_file = workdir / f"body-{alerts}.json"
    body_file.write_bytes(benchlib.body(alerts))
    print(f"\n{alerts} alert(s) per notification ({body_file.stat().st_size} bytes):", flush=True)
    for url in urls.values():
        wrk(url, body_file, args.warmup)
    runs: dict[str, list[Run]] = {name: [] for name in urls}
    for round_ in (1, 2):
        for name, url in urls.items():  # A B A B
            time.sleep(args.pause)       # let the bridge's delivery thread drain its queue
            run = wrk(url, body_file, args.duration)
            runs[name].append(run)
            show(f"{name} #{round_}", run)
    bare, bridge = mean(runs["bare"]), mean(runs["bridge"])
    show("bare mean", bare)
    show("bridge mean", bridge)
    ratio = bridge.rps / bare.rps
    print(f"  ratio bridge/bare: {ratio:.2f}x (target >= {TARGET}x){'' if ratio >= TARGET else '  BELOW TARGET'}")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server and size")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest before each run")
    parser.add_argument("--sizes", default="1,10,100", help="alerts per notification (default 1,10,100)")
    parser.add_argument("--outbox-dir", type=Path, default=None,
                        help="where the bridge's outbox lives (default: a temporary directory on disk); "
                             "/dev/shm (memory, where fsync costs nothing) shows what durability costs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    print(f"machine: {benchlib.machine()}")
    print("servers: gunicorn gthread 2 workers x 4 threads (bridge.server.settings); wrk -t2 -c8")
    print("bridge: one dry-run bot (keyword), production defaults (log level info)")
    if args.outbox_dir is not None:
        print(f"outbox in {args.outbox_dir} (not the default: a temporary directory on disk)")
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="bench-accept-") as tmp:
        workdir = Path(tmp)
        bare_port, bridge_port = benchlib.free_port(), benchlib.free_port()
        bare = benchlib.start_bare(workdir, bare_port)
        try:
            outbox = None
            if args.outbox_dir is not None:
                outbox = Path(tempfile.mkdtemp(prefix="bench-accept-outbox-", dir=args.outbox_dir)) / "outbox.db"
            bridge = benchlib.start_bridge(workdir, bridge_port, outbox=outbox)
            try:
                urls = {"bare": f"http://127.0.0.1:{bare_port}/alertmanager",
                        "bridge": f"http://127.0.0.1:{bridge_port}/alertmanager"}
                for size in (int(s) for s in args.sizes.split(",")):
                    ratios[size] = bench_size(size, urls, workdir, args)
            finally:
                benchlib.stop(bridge)
                if outbox is not None:
                    shutil.rmtree(outbox.parent, ignore_errors=True)
                problems = [row for row in (workdir / "bridge.log").read_text(errors="replace").splitlines()
                            if '"level": "error"' in row or "Traceback" in row]
                if problems:
                    print(f"\nbridge log has {len(problems)} error line(s); first: {problems[0][:300]}")
        finally:
            benchlib.stop(bare)
    print("\nsummary: " + ", ".join(f"{n} alert(s) {r:.2f}x" for n, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
