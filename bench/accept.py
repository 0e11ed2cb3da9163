"""Accept-path throughput: the bridge's POST /alertmanager against a bare Flask endpoint.

    python bench/accept.py [--duration 10] [--warmup 3] [--sizes 1,10,100] [--postgres]

Both run under gunicorn with bridge.server.settings() (2 workers x 4 threads, gthread)
on 127.0.0.1. wrk drives them closed-loop (-t2 -c8). The bridge has one dry-run bot
with the production defaults (log level info), so it parses, routes and stores each
notification but sends nothing. Per payload size: a warm-up of each, then
bare, bridge, bare, bridge; prints requests/s and p50/p99 latency per run, their mean,
and the ratio bridge/bare (target: >= 0.7).

--postgres: the bridge stores in PostgreSQL instead (a throw-away server on this machine,
tests/support/postgres.py, fsync on), as one replica and as two (two servers of 2 workers
each on one database; two wrk of -t1 -c4, one per replica, their rates added, the higher
p99 shown), measured bare, 1 replica, 2 replicas, bare, 1, 2.
"""

from __future__ import annotations

import argparse
import contextlib
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


def wrk(target: str | tuple[str, ...], body_file: Path, seconds: float) -> Run:
    """One closed-loop run of 8 connections; against several URLs (replicas), one wrk each
    at the same time, the connections split between them."""
    urls = (target,) if isinstance(target, str) else target
    each = 8 // len(urls)
    runs = []
    for url in urls:
        # A tag of its own for every run: the bodies must differ from every earlier run's too,
        # or the bridge drops them as duplicates (delivery.dedupe_window) and does less work.
        tag = uuid.uuid4().hex[:12]
        runs.append(subprocess.Popen(
            ["wrk", f"-t{min(2, each)}", f"-c{each}", f"-d{seconds:g}s", "--latency", "-s", str(LUA), url, "--",
             str(body_file), tag], stdout=subprocess.PIPE, text=True))
    figures = [_figures(proc.communicate(timeout=seconds + 60)[0]) for proc in runs]
    return Run(sum(r.rps for r in figures), max(r.p50_ms for r in figures), max(r.p99_ms for r in figures),
               sum(r.errors for r in figures))


def _figures(out: str) -> Run:
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


def bench_size(alerts: int, urls: dict[str, str | tuple[str, ...]], workdir: Path, args: argparse.Namespace) -> float:
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
    means = {name: mean(found) for name, found in runs.items()}
    for name, run in means.items():
        show(f"{name} mean", run)
    bare = means.pop("bare")
    for name, run in means.items():
        ratio = run.rps / bare.rps
        print(f"  ratio {name}/bare: {ratio:.2f}x (target >= {TARGET}x){'' if ratio >= TARGET else '  BELOW TARGET'}")
    return means[next(iter(means))].rps / bare.rps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per server and size")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds of rest before each run")
    parser.add_argument("--sizes", default="1,10,100", help="alerts per notification (default 1,10,100)")
    parser.add_argument("--outbox-dir", type=Path, default=None,
                        help="where the bridge's outbox lives (default: a temporary directory on disk); "
                             "/dev/shm (memory, where fsync costs nothing) shows what durability costs")
    parser.add_argument("--postgres", action="store_true",
                        help="store in PostgreSQL (a throw-away local server), 1 and 2 replicas")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    print(f"machine: {benchlib.machine()}")
    print("servers: gunicorn gthread 2 workers x 4 threads (bridge.server.settings); wrk -t2 -c8")
    print("bridge: one dry-run bot (keyword), production defaults (log level info)")
    if args.outbox_dir is not None:
        print(f"outbox in {args.outbox_dir} (not the default: a temporary directory on disk)")
    ratios = {}
    with tempfile.TemporaryDirectory(prefix="bench-accept-") as tmp, contextlib.ExitStack() as running:
        workdir = Path(tmp)
        bare_port = benchlib.free_port()
        running.callback(benchlib.stop, benchlib.start_bare(workdir, bare_port))
        urls: dict[str, str | tuple[str, ...]] = {"bare": f"http://127.0.0.1:{bare_port}/alertmanager"}
        logs = []
        if args.postgres:
            storage = _postgres(running)
            ports = [benchlib.free_port() for _ in range(3)]
            for i, port in enumerate(ports):
                name = f"replica-{i}"
                running.callback(benchlib.stop, benchlib.start_bridge(workdir, port, storage=storage, name=name))
                logs.append(workdir / f"{name}.log")
            urls["1 replica"] = f"http://127.0.0.1:{ports[0]}/alertmanager"
            urls["2 replicas"] = tuple(f"http://127.0.0.1:{port}/alertmanager" for port in ports[1:])
        else:
            outbox = None
            if args.outbox_dir is not None:
                outbox = Path(tempfile.mkdtemp(prefix="bench-accept-outbox-", dir=args.outbox_dir)) / "outbox.db"
                running.callback(shutil.rmtree, outbox.parent, ignore_errors=True)
            bridge_port = benchlib.free_port()
            running.callback(benchlib.stop, benchlib.start_bridge(workdir, bridge_port, outbox=outbox))
            urls["bridge"] = f"http://127.0.0.1:{bridge_port}/alertmanager"
            logs.append(workdir / "bridge.log")
        try:
            for size in (int(s) for s in args.sizes.split(",")):
                ratios[size] = bench_size(size, urls, workdir, args)
        finally:
            for log in logs:
                problems = [row for row in log.read_text(errors="replace").splitlines()
                            if '"level": "error"' in row or "Traceback" in row]
                if problems:
                    print(f"\n{log.name} has {len(problems)} error line(s); first: {problems[0][:300]}")
    print("\nsummary: " + ", ".join(f"{n} alert(s) {r:.2f}x" for n, r in ratios.items()))
    return 0


def _postgres(running: contextlib.ExitStack) -> str:
    """A throw-away PostgreSQL server with fsync on (the tests' own, tests/support/postgres.py),
    stopped when `running` closes; the storage section that points the bridge at it. One
    replica (the 1-replica server) gets a database, the two others share another, so each
    measurement starts from an outbox of its own."""
    sys.path.insert(0, str(benchlib.ROOT / "tests"))
    from support.postgres import Cluster

    cluster = Cluster(settings={"fsync": "on", "full_page_writes": "on"})
    running.callback(cluster.destroy)
    print(f"PostgreSQL: {cluster.bin.parent.name} on this machine, fsync on, synchronous_commit on")
    return json.dumps({"postgres": {"dsn": cluster.dsn(cluster.new_database("bench"))}})


if __name__ == "__main__":
    sys.exit(main())
