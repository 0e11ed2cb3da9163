"""Parse time: bridge.sources.parse against json.loads of the same body.

    python bench/parse.py [--runs 15] [--sizes 1,10,100,1000]

In this process, no server. For each size, an Alertmanager 0.25-shaped body
(benchlib.payload) is decoded once; then json.loads(body) and
sources.parse("alertmanager", doc) take turns for --runs runs (each run a loop long
enough to last ~20 ms); the fastest run per call is shown, with the ratio parse/loads.
A second row per size drops every alert's fingerprint, so the bridge computes it. The
"precise" column is alertmanager.precise_parse alone: the field readers that parse
falls back to for anything unusual (and that were all of parse before the fast path).
Target: parse <= ~0.3x json.loads for 10 and 100 alerts.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from typing import Callable

import benchlib

from bridge import sources
from bridge.sources import alertmanager

TARGET_RATIO = 0.3
RUN_SECONDS = 0.02


def loops_for(work: Callable[[], object]) -> int:
    """How many calls make one run last RUN_SECONDS, so the clock's resolution does not matter."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            work()
        if time.perf_counter() - start >= RUN_SECONDS:
            return loops
        loops *= 2


def per_call_us(works: list[Callable[[], object]], runs: int) -> list[float]:
    """The fastest of `runs` runs of each work, per call, in microseconds.

    The works take turns run by run, so a neighbour's load slows all of them alike;
    the fastest run is the one least disturbed.
    """
    loops = [loops_for(work) for work in works]
    best = [float("inf")] * len(works)
    for _ in range(runs):
        for i, work in enumerate(works):
            start = time.perf_counter()
            for _ in range(loops[i]):
                work()
            best[i] = min(best[i], (time.perf_counter() - start) / loops[i] * 1e6)
    return best


def without_fingerprints(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    for alert in doc["alerts"]:
        del alert["fingerprint"]
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs per figure; the fastest is shown (default 15)")
    parser.add_argument("--sizes", default="1,10,100,1000", help="alerts per notification")
    args = parser.parse_args()

    print(f"machine: {benchlib.machine()}")
    print(f"per call, fastest of {args.runs} runs; parse/loads is the ratio to json.loads of the same body")
    print(f"{'alerts':>7} {'fingerprint':>12} {'loads us':>10} {'parse us':>10} {'us/alert':>9} {'parse/loads':>12}"
          f" {'precise us':>11}")
    ratios = {}
    for alerts in (int(s) for s in args.sizes.split(",")):
        body = benchlib.body(alerts, group="parse")
        sent, computed = json.loads(body), without_fingerprints(json.loads(body))
        loads, *parses = per_call_us([
            lambda: json.loads(body),
            lambda: sources.parse("alertmanager", sent),
            lambda: sources.parse("alertmanager", computed),
            lambda: alertmanager.precise_parse(sent),
            lambda: alertmanager.precise_parse(computed),
        ], args.runs)
        ratios[alerts] = parses[0] / loads
        for label, spent, precise in zip(("sent", "computed"), parses[:2], parses[2:]):
            print(f"{alerts:>7} {label:>12} {loads:>10.1f} {spent:>10.1f} {spent / alerts:>9.2f} "
                  f"{spent / loads:>11.2f}x {precise:>11.1f}", flush=True)
    for alerts in (10, 100):
        if alerts in ratios:
            verdict = "ok" if ratios[alerts] <= TARGET_RATIO else "ABOVE TARGET"
            print(f"{alerts} alerts: parse/loads {ratios[alerts]:.2f}x (target <= {TARGET_RATIO}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
