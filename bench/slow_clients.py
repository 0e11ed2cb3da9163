"""Slow and broken clients against the bridge under gunicorn: does it still answer?

    python bench/slow_clients.py [--count 256] [--kinds headers,body,idle,tls,chunked]
                                 [--hold 12] [--servers baseline,bridge]

For each server, a bridge on 127.0.0.1 (2 workers x 4 threads, one dry-run bot):

- baseline: gunicorn's stock gthread worker (bench/stock_serve.py), as the bridge ran
  before issue 17: a handler thread reads each request from its client.
- bridge:   `python -m bridge serve`, whose worker reads each request in its event loop
  and gives it to a thread only once it is whole (bridge/serving/worker.py).

For each kind of client (tests/support/slow.py: a head a byte at a time, a body a byte
at a time, idle, a TLS handshake on the plain port, a chunked body cut short), --count
such connections are held open for --hold seconds (one that the server closes is opened
again a second later) while every 0.25 s a webhook is posted and /-/healthy asked, each
on a new connection with a 5 s timeout. It prints, per server and kind, the webhooks answered within
1 s and /-/healthy within 100 ms (the targets), their p50 and worst latency (a timeout
counts as 5 s), and what the slow connections got; then the two servers side by side
with the ratio bridge/baseline of the worst latencies.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib

sys.path.insert(0, str(benchlib.ROOT / "tests"))
from support.slow import KINDS, SlowClients, timed_request  # noqa: E402  (a test helper, not an installed module)

WEBHOOK_TARGET, HEALTHY_TARGET = 1.0, 0.1
PROBE_TIMEOUT = 5.0
SPACING = 0.25


def start(server: str, workdir: Path, port: int):
    if server == "bridge":
        return benchlib.start_bridge(workdir, port)
    config = workdir / "bridge.yaml"
    config.write_text(benchlib.DRY_RUN_CONFIG)
    return benchlib.start([sys.executable, str(benchlib.ROOT / "bench" / "stock_serve.py"), "--config", str(config),
                           "--port", str(port)], workdir / "baseline.log", f"http://127.0.0.1:{port}/-/ready")


def probe(port: int, seconds: float) -> tuple[list[float], list[float]]:
    """Webhook and /-/healthy latencies over `seconds`, a pair every SPACING seconds on a fixed
    schedule (a slow answer does not delay the next probe); a failure counts as the timeout."""
    rounds = max(1, round(seconds / SPACING))
    with ThreadPoolExecutor(2 * round(PROBE_TIMEOUT / SPACING) + 2) as pool:
        futures = []
        began = time.monotonic()
        for i in range(rounds):
            time.sleep(max(0.0, began + i * SPACING - time.monotonic()))
            body = benchlib.body(1, group=f"slow-{time.monotonic_ns()}-{i}")
            futures.append((pool.submit(timed_request, port, "POST", "/alertmanager", body, timeout=PROBE_TIMEOUT),
                            pool.submit(timed_request, port, "GET", "/-/healthy", timeout=PROBE_TIMEOUT)))
        webhooks, healthy = [], []
        for post, get in futures:
            for results, future in ((webhooks, post), (healthy, get)):
                latency, status = future.result()
                results.append(latency if status == 200 else PROBE_TIMEOUT)
    return webhooks, healthy


def figures(latencies: list[float], target: float) -> dict:
    ordered = sorted(latencies)
    return {"within": sum(s <= target for s in ordered), "n": len(ordered), "p50": statistics.median(ordered),
            "worst": ordered[-1]}


def show(label: str, hooks: dict, health: dict, held=None) -> None:
    line = (f"  {label:<9} webhooks {hooks['within']:>3}/{hooks['n']} within 1 s (p50 {hooks['p50'] * 1e3:7.1f} ms, "
            f"worst {hooks['worst'] * 1e3:7.1f} ms)   /-/healthy {health['within']:>3}/{health['n']} within 100 ms "
            f"(p50 {health['p50'] * 1e3:6.1f} ms, worst {health['worst'] * 1e3:7.1f} ms)")
    print(line, flush=True)
    if held is not None:
        answers = ", ".join(f"{n} x {status}" for status, n in held.answers.most_common(3)) or "none"
        closed = (f"closed {held.closed_by_server} after {statistics.median(held.held_seconds):.1f} s (median)"
                  if held.held_seconds else "none closed by the server")
        print(f"            slow connections: {held.opened} opened, {closed}; answers: {answers}", flush=True)


def measure(server: str, args: argparse.Namespace) -> dict[str, tuple[dict, dict]]:
    print(f"{server}: gunicorn 2 workers x 4 threads, "
          + ("bridge.serving.worker.BufferingWorker" if server == "bridge" else "stock gthread"), flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-slow-{server}-") as tmp:
        port = benchlib.free_port()
        proc = start(server, Path(tmp), port)
        try:
            hooks, health = probe(port, args.hold)
            results["quiet"] = figures(hooks, WEBHOOK_TARGET), figures(health, HEALTHY_TARGET)
            show("quiet", *results["quiet"])
            for kind in args.kinds:
                with SlowClients(port, kind, args.count) as clients:
                    hooks, health = probe(port, args.hold)
                    held = clients.snapshot()
                results[kind] = figures(hooks, WEBHOOK_TARGET), figures(health, HEALTHY_TARGET)
                show(kind, *results[kind], held)
                time.sleep(1.0)   # let the server close what is left of them
        finally:
            benchlib.stop(proc)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=256, help="slow connections held open (default 256)")
    parser.add_argument("--kinds", default=",".join(KINDS), type=lambda text: text.split(","))
    parser.add_argument("--hold", type=float, default=12.0,
                        help="seconds each kind is held and probed (default 12: past server.read_timeout)")
    parser.add_argument("--servers", default="baseline,bridge", type=lambda text: text.split(","))
    args = parser.parse_args()
    print(f"machine: {benchlib.machine()}; {args.count} slow connections per kind, held {args.hold:g} s each")
    measured = {server: measure(server, args) for server in args.servers}
    if len(measured) == 2:
        base, bridge = measured["baseline"], measured["bridge"]
        print("\nside by side: answered within target (baseline -> bridge), worst latency ratio bridge/baseline")
        for kind in ["quiet", *args.kinds]:
            (bh, bg), (h, g) = base[kind], bridge[kind]
            print(f"  {kind:<9} webhooks {bh['within']:>3} -> {h['within']:>3} of {h['n']}, worst x{h['worst'] / bh['worst']:.3f}"
                  f"   /-/healthy {bg['within']:>3} -> {g['within']:>3} of {g['n']}, worst x{g['worst'] / bg['worst']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
