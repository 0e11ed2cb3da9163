"""/metrics: Prometheus text, feishu_bridge_* names, right after known traffic, across gunicorn workers."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from bridge import create_app
from bridge.config import load
from procs import BridgeProcess

FIXTURES = Path(__file__).parent / "fixtures"
BODY = (FIXTURES / "alertmanager" / "am025-firing-group2.json").read_bytes()


def samples(text: str) -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counts_after_known_traffic_in_process(tmp_path, fake_feishu):
    url = fake_feishu.add_bot("tok-metrics-9931", secret="metrics-secret-1")
    path = tmp_path / "config.yaml"
    good = (f"bots: [{{name: ops, webhook_url: '{url}', secret: metrics-secret-1}}]\n"
            f"route: {{bots: [ops]}}\nstorage: {{path: outbox.db}}\ntemplates_dir: .\n")
    path.write_text(good)
    app = create_app(load(path), logger=logging.getLogger("bridge.metrics-test"))
    client = app.test_client()
    try:
        for i in range(3):  # three different groups: the same one again would be a duplicate
            body = json.dumps({**json.loads(BODY), "groupKey": f"{{}}:{{alertname=\"A{i}\"}}"})
            assert client.post("/alertmanager", data=body, content_type="application/json").status_code == 200
        assert client.post("/alertmanager", data=b"{", content_type="application/json").status_code == 400
        assert client.post("/grafana/nobody", data=BODY, content_type="application/json").status_code == 404
        assert client.post("/alertmanager", data=b"{}", content_type="text/plain").status_code == 415
        fake_feishu.wait_for("tok-metrics-9931", 3)

        response = client.get("/metrics")
        assert response.status_code == 200 and response.content_type.startswith("text/plain")
        text = response.get_data(as_text=True)
        values = samples(text)
        received = "feishu_bridge_notifications_received_total"
        assert values[(received, (("result", "accepted"), ("source", "alertmanager")))] == 3
        assert values[(received, (("result", "bad_request"), ("source", "alertmanager")))] == 1
        assert values[(received, (("result", "unknown_bot"), ("source", "grafana")))] == 1
        assert values[(received, (("result", "unsupported_media_type"), ("source", "alertmanager")))] == 1
        assert values[("feishu_bridge_alerts_routed_total", (("bot", "ops"),))] == 6
        assert values[("feishu_bridge_config_last_reload_successful", ())] == 1
        assert all(f.name.startswith("feishu_bridge_") for f in text_string_to_metric_families(text))
        assert "tok-metrics-9931" not in text and "metrics-secret-1" not in text

        # A template that fails at render time is counted by name; the bot got the fallback card.
        (tmp_path / "default.json.j2").write_text('{"msg_type": "text", "content": {"text": {{ 1 / 0 }}}}')
        assert client.post("/-/reload").status_code == 200
        body = json.dumps({**json.loads(BODY), "groupKey": "{}:{alertname=\"A3\"}"})
        assert client.post("/alertmanager", data=body, content_type="application/json").status_code == 200
        fake_feishu.wait_for("tok-metrics-9931", 4)
        values = samples(client.get("/metrics").get_data(as_text=True))
        assert values[("feishu_bridge_render_errors_total", (("template", "default"),))] == 1

        # A reload that fails shows as 0 until one succeeds.
        path.write_text(good + "nonsense: 1\n")
        assert client.post("/-/reload").status_code == 500
        assert samples(client.get("/metrics").get_data(as_text=True))[
            ("feishu_bridge_config_last_reload_successful", ())] == 0
        path.write_text(good)
        assert client.post("/-/reload").status_code == 200
        assert samples(client.get("/metrics").get_data(as_text=True))[
            ("feishu_bridge_config_last_reload_successful", ())] == 1
    finally:
        app.extensions["bridge"].stop(timeout=5)


def test_metrics_are_summed_over_gunicorn_workers(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("bots: [{name: ops, dry_run: true}]\nroute: {bots: [ops]}\nstorage: {path: outbox.db}\n"
                      "log: {level: debug}\n")      # the "accepted" lines say which worker took each
    bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=3, threads=1)

    def accepting_pids() -> set[int]:
        return {json.loads(line)["pid"] for line in bridge.log().splitlines()
                if line.startswith("{") and json.loads(line).get("event") == "accepted"}

    def post(_):
        return requests.post(f"{bridge.url}/alertmanager", data=BODY,
                             headers={"Content-Type": "application/json", "Connection": "close"}, timeout=10)

    try:
        # Concurrent new connections until several workers have accepted some: the sums
        # below mean something only then. (The kernel decides which worker accepts.)
        requests_sent = 0
        with ThreadPoolExecutor(16) as pool:
            while requests_sent < 400 and len(accepting_pids()) < 2:
                assert {r.status_code for r in pool.map(post, range(40))} == {200}
                requests_sent += 40
        assert len(accepting_pids()) >= 2
        for _ in range(5):  # whichever worker answers the scrape, it reports every worker's counts
            values = samples(requests.get(f"{bridge.url}/metrics", headers={"Connection": "close"}, timeout=10).text)
            assert values[("feishu_bridge_notifications_received_total",
                           (("result", "accepted"), ("source", "alertmanager")))] == requests_sent
            assert values[("feishu_bridge_alerts_routed_total", (("bot", "ops"),))] == 2 * requests_sent
            assert values[("feishu_bridge_config_last_reload_successful", ())] == 1
    finally:
        bridge.stop()


def test_every_metric_is_in_the_readmes_table():
    """Each family Metrics declares has its row in the README's metrics table (the outbox's
    three come from a collector at scrape time and are rows too)."""
    import re

    from prometheus_client import CollectorRegistry

    from bridge.metrics import Metrics

    declared = {f.name + ("_total" if f.type == "counter" else "") for f in Metrics(CollectorRegistry()).registry.collect()}
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(feishu_bridge_[a-z_]+)` \|", readme, flags=re.M))
    assert declared - documented == set()
    assert "feishu_bridge_long_connection_up" in declared
