"""Alert storms through the service under gunicorn, to a local fake Feishu with Feishu's real limits.

    python bench/storm.py [--n 300] [--bots 3] [--groups 50] [--updates 12] [--samples 50]
                          [--only storm,multi,outage,latency]

Each scenario starts its own bridge (`python -m bridge serve`, 2 workers x 4 threads, log
level warning, a fresh outbox) and a fake Feishu (tests/fake_feishu.py) limiting each bot to
5/s and 100/min as Feishu does, both on 127.0.0.1.

- storm:   N notifications, each its own group, to one bot. Rate-limit answers received
           (target 0), and the drain time against the least that 5/s and 100/min allow
           (target ratio <= 1.05).
- multi:   N notifications, each routed to --bots bots: the same per bot, in parallel.
- outage:  --groups groups each updated --updates times while Feishu fails (503), then
           recovery: the messages sent after recovery (target <= groups: coalesced), and
           whether each group arrived in its latest state.
- latency: --samples single notifications, spaced out, on new connections (so either
           worker accepts): from the 200 answer to the fake receiving the request
           (target p99 <= 100 ms).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

import benchlib

sys.path.insert(0, str(benchlib.ROOT / "tests"))
from fake_feishu import FakeFeishu  # noqa: E402  (a test helper, not an installed module)

PER_SECOND, PER_MINUTE = 5, 100      # Feishu's per-bot limits (bridge/feishu.py)
RATIO_TARGET = 1.05
LATENCY_TARGET_MS = 100.0
CLIENTS = 8
# Faster than the default 1 s .. 60 s, so that the outage's end shows within a second or two.
BACKOFF = {"backoff_base": "200ms", "backoff_cap": "2s"}
# The outage lasts while posting; a few failures in reserve keep it from ending early.
OUTAGE_RESERVE = 3
SPACING = 0.3                        # between latency samples: well under 5/s, so never paced
GROUP = re.compile(r"\bStorm[A-Za-z]*-\d+\b")


# -- the service and its inputs --------------------------------------------------------------
class Service:
    """A bridge under gunicorn on its own config and outbox, with the fake Feishu's bots."""

    def __init__(self, workdir: Path, fake: FakeFeishu, bots: dict[str, str], route: list[str]):
        self.fake = fake
        self.tokens = bots
        config = workdir / "bridge.yaml"
        doc = {"bots": [{"name": name, "webhook_url": fake.add_bot(token)} for name, token in bots.items()],
               "route": {"bots": route}, "storage": {"path": "outbox.db"}, "delivery": BACKOFF}
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        port = benchlib.free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = benchlib.start(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "2", "--threads", "4", "--log-level", "warning"],
            workdir / "bridge.log", f"{self.url}/-/ready")

    def stop(self) -> None:
        benchlib.stop(self.proc)

    def metrics(self) -> dict[tuple, float]:
        text = requests.get(f"{self.url}/metrics", timeout=10, proxies=benchlib.NO_PROXY).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def notification(group: str, alerts: int = 1, summary: str = "") -> dict:
    """One group's notification; a different number of alerts is a different state of the group
    (the same alerts again would be the same notification, dropped as a duplicate)."""
    body = benchlib.payload(alerts, group=group)
    body["groupLabels"]["alertname"] = body["commonLabels"]["alertname"] = group
    for alert in body["alerts"]:
        alert["labels"]["alertname"] = group
        if summary:
            alert["annotations"]["summary"] = summary
    return body


def post_all(url: str, bodies: list[dict], clients: int = CLIENTS) -> None:
    local = threading.local()

    def post(body: dict) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        answer = session.post(f"{url}/alertmanager", json=body, timeout=30)
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code}: {answer.text}")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, bodies))


def group_of(message: dict) -> str:
    return GROUP.search(message["card"]["header"]["title"]["content"]).group(0)


def wait_received(fake: FakeFeishu, token: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(fake.received(token)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(fake.received(token))} of {count} received in {timeout:.0f}s")
        time.sleep(0.1)


def minimum_drain(count: int, per_second: int = PER_SECOND, per_minute: int = PER_MINUTE) -> float:
    """The earliest start of the last of `count` requests, the first at 0, with at most
    `per_second` in any 1 s and `per_minute` in any 60 s, at zero round trip."""
    starts: list[float] = []
    for k in range(count):
        t = starts[k - per_second] + 1.0 if k >= per_second else 0.0
        if k >= per_minute:
            t = max(t, starts[k - per_minute] + 60.0)
        starts.append(t)
    return starts[-1] if starts else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]  # nearest rank


# -- scenarios ---------------------------------------------------------------------------------
def drain_report(fake: FakeFeishu, token: str, label: str, count: int, began: float) -> float:
    attempts = fake.attempts(token)
    received = fake.received(token)
    drained = max(a.at for a in attempts if a.code == 0) - began
    minimum = minimum_drain(count)
    duplicates = len(received) - len({group_of(m) for m in received})
    ratio = drained / minimum if minimum else float("nan")
    print(f"  {label:<8} sent {len(received):4d}  requests {len(attempts):4d}  rate-limit answers "
          f"{len(fake.throttled(token)):3d}  duplicates {duplicates:2d}  drain {drained:7.2f} s  "
          f"minimum {minimum:5.0f} s  ratio {ratio:.3f}", flush=True)
    return ratio


def storm(workdir: Path, n: int, bots: int) -> list[float]:
    names = {f"storm{b}": f"tok-storm-{b}" for b in range(bots)}
    with FakeFeishu() as fake:
        service = Service(workdir, fake, names, route=list(names))
        try:
            bodies = [notification(f"Storm-{i}") for i in range(n)]
            began = time.monotonic()
            post_all(service.url, bodies)
            print(f"  {n} notifications accepted in {time.monotonic() - began:.2f} s "
                  f"({n * bots} messages to {bots} bot(s))", flush=True)
            for token in names.values():
                wait_received(fake, token, n, timeout=minimum_drain(n) * 1.5 + 30)
            time.sleep(0.5)
            return [drain_report(fake, token, name, n, began) for name, token in names.items()]
        finally:
            service.stop()


def outage(workdir: Path, groups: int, updates: int) -> int:
    token = "tok-storm-outage"
    with FakeFeishu() as fake:
        service = Service(workdir, fake, {"outage": token}, route=["outage"])
        try:
            rounds = [[notification(f"StormOutage-{g}", alerts=u, summary=f"update {u} of {updates}")
                       for g in range(groups)] for u in range(1, updates + 1)]
            with FailingFeishu(fake, token):
                began = time.monotonic()
                for bodies in rounds:  # every group moves on, round after round, as in a real storm
                    post_all(service.url, bodies)
                posted = time.monotonic() - began
            posts_done = time.monotonic()
            depth = service.metrics().get(("feishu_bridge_outbox_depth", (("bot", "outage"),)), float("nan"))
            wait_received(fake, token, groups, timeout=groups / PER_SECOND * 2 + 30)
            time.sleep(3.0)  # anything more than one per group would arrive meanwhile
            received = fake.received(token)
            failures = sum(1 for a in fake.attempts(token) if a.why.startswith("script"))
            latest = {group_of(m) for m in received if f"update {updates} of {updates}" in json.dumps(m)}
            superseded = service.metrics().get(("feishu_bridge_messages_superseded_total", (("bot", "outage"),)))
            print(f"  {groups} groups x {updates} updates = {groups * updates} notifications posted in "
                  f"{posted:.2f} s while Feishu answered 503 ({failures} failed requests)")
            print(f"  waiting when the posts ended {depth:.0f}; superseded {superseded:.0f}; sent after recovery "
                  f"{len(received)} (target <= {groups}); groups in their latest state {len(latest)}/{groups}; "
                  f"drained {fake.attempts(token)[-1].at - posts_done:.1f} s after the posts ended", flush=True)
            return len(received)
        finally:
            service.stop()


class FailingFeishu:
    """Keeps the fake answering 503 to `token` while the block runs: a few failures stay
    scripted ahead of the sender, topped up as it uses them, and the last ones run out after."""

    def __init__(self, fake: FakeFeishu, token: str):
        self.fake, self.token = fake, token
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._top_up, daemon=True)

    def _top_up(self) -> None:
        scripted = 0
        while not self.done.is_set():
            used = sum(1 for a in self.fake.attempts(self.token) if a.why.startswith("script"))
            if scripted - used < OUTAGE_RESERVE:
                self.fake.script(self.token, ("http", 503))
                scripted += 1
            time.sleep(0.01)

    def __enter__(self) -> "FailingFeishu":
        self.fake.script(self.token, *[("http", 503)] * OUTAGE_RESERVE)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def latency(workdir: Path, samples: int) -> float:
    token = "tok-storm-latency"
    with FakeFeishu() as fake:
        service = Service(workdir, fake, {"latency": token}, route=["latency"])
        try:
            from_answer, from_request = [], []
            for i in range(samples):
                start = time.monotonic()
                answer = requests.post(f"{service.url}/alertmanager", json=notification(f"StormLatency-{i}"),
                                       headers={"Connection": "close"}, timeout=10, proxies=benchlib.NO_PROXY)
                answered = time.monotonic()
                if answer.status_code != 200:
                    raise RuntimeError(f"HTTP {answer.status_code}: {answer.text}")
                wait_received(fake, token, i + 1, timeout=10)
                arrived = fake.attempts(token)[-1].at
                from_answer.append((arrived - answered) * 1000)
                from_request.append((arrived - start) * 1000)
                time.sleep(SPACING)
            for label, values in (("200 answer -> Feishu", from_answer), ("request sent -> Feishu", from_request)):
                print(f"  {label:<24} p50 {percentile(values, 50):7.2f} ms   p99 {percentile(values, 99):7.2f} ms"
                      f"   max {max(values):7.2f} ms   (n={len(values)})")
            negative = sum(1 for v in from_answer if v < 0)
            print(f"  {negative} of {samples} arrived before the client had read the 200 (the accepting worker "
                  f"was the sender)", flush=True)
            return percentile(from_answer, 99)
        finally:
            service.stop()


# -- main --------------------------------------------------------------------------------------
def scenarios(args: argparse.Namespace) -> Iterator[tuple[str, Callable[[Path], str]]]:
    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    def run_storm(workdir: Path) -> str:
        ratios = storm(workdir, args.n, 1)
        return f"worst ratio {max(ratios):.3f} (target <= {RATIO_TARGET}): {verdict(max(ratios) <= RATIO_TARGET)}"

    def run_multi(workdir: Path) -> str:
        ratios = storm(workdir, args.n, args.bots)
        return f"worst ratio {max(ratios):.3f} (target <= {RATIO_TARGET}): {verdict(max(ratios) <= RATIO_TARGET)}"

    def run_outage(workdir: Path) -> str:
        sent = outage(workdir, args.groups, args.updates)
        return f"{sent} sent after recovery (target <= {args.groups}): {verdict(sent <= args.groups)}"

    def run_latency(workdir: Path) -> str:
        p99 = latency(workdir, args.samples)
        return f"p99 {p99:.1f} ms (target <= {LATENCY_TARGET_MS:.0f}): {verdict(p99 <= LATENCY_TARGET_MS)}"

    table = {"storm": (f"storm: {args.n} notifications to one bot", run_storm),
             "multi": (f"multi: {args.n} notifications to each of {args.bots} bots", run_multi),
             "outage": (f"outage: {args.groups} groups x {args.updates} updates, then recovery", run_outage),
             "latency": (f"latency: {args.samples} single notifications, idle", run_latency)}
    for name in args.only.split(","):
        yield table[name.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="notifications per storm (default 300)")
    parser.add_argument("--bots", type=int, default=3, help="bots in the multi scenario (default 3)")
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--updates", type=int, default=12)
    parser.add_argument("--samples", type=int, default=50, help="latency samples (default 50)")
    parser.add_argument("--only", default="storm,multi,outage,latency", help="scenarios to run, comma-separated")
    args = parser.parse_args()
    print(benchlib.machine(), flush=True)
    summary = []
    for title, run in scenarios(args):
        print(f"\n{title}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bridge-storm-") as tmp:
            summary.append(f"  {title.split(':')[0]:<8} {run(Path(tmp))}")
    print("\nsummary\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
