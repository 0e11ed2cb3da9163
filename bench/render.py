"""Route and render time: accept.route_shares, then Compose.render (route tree, Jinja2 card, keyword,
size-splitting).

    python bench/render.py [--runs 21] [--sizes 1,10,100,1000] [--template default]

In this process, no server. For each size, one Alertmanager notification with that many
alerts is parsed once, then routed and rendered --runs times; prints the median and the
fastest run in ms (wall clock), the median CPU time of this process (steadier when other
work shares the machine), how many messages (cards) it became and their total size.
Target: <= 50 ms (median) for 1000 alerts with the default template.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time

import benchlib

from bridge import bootstrap, sources
from bridge.accept import route_shares
from bridge.compose import Compose
from bridge.config import Config, loads

TARGET_MS_1000 = 50.0
# A small tree, so routing is measured too: every alert goes through two matchers.
CONFIG = """\
bots:
  - name: ops
    dry_run: true
    keywords: ["告警"]
    template: TEMPLATE
  - name: db
    dry_run: true
    template: TEMPLATE
route:
  bots: [ops]
  routes:
    - matchers: ['team="db"']
      bots: [db]
    - matchers: ['severity=~"critical|page"', 'env!="staging"']
      bots: [ops]
"""


def render(config: Config, compose: Compose, notification) -> list[tuple[str, list[dict]]]:
    """As the CLI's `render` does: route now, then compose each bot's share."""
    return [(bot, compose.render(notification, share.alerts, config.bots[bot], routes=share.routes))
            for bot, share in route_shares(config, notification).items()]


def measure(config: Config, compose: Compose, alerts: int, runs: int) -> tuple[float, float, float, int, int]:
    notification = sources.parse("alertmanager", benchlib.payload(alerts, group="render"))
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        rendered = render(config, compose, notification)
        times.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    messages = [message for _, bodies in rendered for message in bodies]
    size = sum(len(json.dumps(m, ensure_ascii=False, separators=(",", ":")).encode()) for m in messages)
    return statistics.median(times), min(times), statistics.median(cpu), len(messages), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs per size; the median is shown (default 21)")
    parser.add_argument("--sizes", default="1,10,100,1000", help="alerts per notification")
    parser.add_argument("--template", default="default", help="the bots' template (default, legacy, text)")
    args = parser.parse_args()
    config = loads(CONFIG.replace("TEMPLATE", args.template))
    log = logging.getLogger("bench.render")
    compose = bootstrap.build_compose(config, log)
    render(config, compose, sources.parse("alertmanager", benchlib.payload(3, group="warm-up")))

    print(f"machine: {benchlib.machine()}")
    print(f"route and render, {args.template} template, median of {args.runs} runs")
    print(f"{'alerts':>7} {'median ms':>10} {'min ms':>8} {'cpu ms':>8} {'messages':>9} {'bytes':>9}")
    result = {}
    for alerts in (int(s) for s in args.sizes.split(",")):
        median, fastest, cpu, messages, size = measure(config, compose, alerts, args.runs)
        result[alerts] = median
        print(f"{alerts:>7} {median:>10.2f} {fastest:>8.2f} {cpu:>8.2f} {messages:>9} {size:>9}", flush=True)
    if 1000 in result and args.template == "default":
        verdict = "ok" if result[1000] <= TARGET_MS_1000 else "ABOVE TARGET"
        print(f"1000 alerts: {result[1000]:.1f} ms (target <= {TARGET_MS_1000:g} ms): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
