"""The Helm chart's parts for card actions (issue 14), rendered with the real helm binary:
the events container's own /metrics (the Service, the ServiceMonitor, the NetworkPolicy
and FeishuBridgeLongConnectionDown), and the silence targets' credentials
(config.actions.alertmanagers[].bearer_token / basic.password, actions.grafana.token),
which go into the chart's Secret, or come from existingSecret, and reach the config as
*_file. Every rendering is validated against the Kubernetes schemas and its config run
through the bridge's check-config with the pod's volumes laid out on disk.

A file of its own beside tests/test_helm.py (over 400 lines already), with the events
container's other tests; same tools: helm, kubernetes-validate, promtool.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics
from support import require_tool
from support.helm import (ALL_FEATURES, FULLNAME, INSTALL_HELM, NAMESPACE, check_config, config_of, one, pod_spec,
                          refused, render, validate_kubernetes, values_file)

SECRETS_DIR = "/etc/feishu-alert-bridge/secrets"


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm", INSTALL_HELM)


@pytest.fixture(scope="module")
def all_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(ALL_FEATURES))


@pytest.fixture(scope="module")
def default_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm)


def containers(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec(docs)["containers"]}


def all_features() -> dict[str, Any]:
    return yaml.safe_load(ALL_FEATURES.read_text(encoding="utf-8"))


# --- the events container's /metrics ---------------------------------------------------------


def test_the_events_containers_metrics_port_is_scraped_through_the_service(all_docs):
    events, bridge = containers(all_docs)["events"], containers(all_docs)["bridge"]
    assert events["ports"] == [{"name": "events-metrics", "containerPort": 9096, "protocol": "TCP"}]
    env = {e["name"]: e for e in events["env"]}
    assert env["BRIDGE_EVENTS_METRICS_PORT"]["value"] == "9096"          # what `events` reads (tests/test_events.py)
    assert "BRIDGE_EVENTS_METRICS_PORT" not in {e["name"] for e in bridge["env"]}
    ports = {p["name"]: p for p in one(all_docs, "Service")["spec"]["ports"]}
    assert ports["events-metrics"] == {"name": "events-metrics", "port": 9096, "targetPort": "events-metrics",
                                       "protocol": "TCP"}
    endpoints = one(all_docs, "ServiceMonitor")["spec"]["endpoints"]
    assert [(e["port"], e["path"]) for e in endpoints] == [("http", "/metrics"), ("events-metrics", "/metrics")]
    assert {e["port"] for e in endpoints} <= set(ports)


def test_a_long_connection_or_events_container_down_for_10_minutes_alerts(all_docs, tmp_path):
    rules = {r["alert"]: r for group in one(all_docs, "PrometheusRule")["spec"]["groups"] for r in group["rules"]}
    down = rules["FeishuBridgeLongConnectionDown"]
    assert down["for"] == "10m" and "feishu_bridge_long_connection_up" in down["expr"]
    names = {m.name for m in Metrics(CollectorRegistry()).registry.collect()}
    assert "feishu_bridge_long_connection_up" in names                     # the metric the bridge exports
    # promtool's own rule tests: down 10 minutes fires, per app; up, or down only briefly, does not.
    promtool = require_tool("promtool", "apt-get install prometheus (.ci/run does)")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(one(all_docs, "PrometheusRule")["spec"]), encoding="utf-8")
    labels = f'job="{FULLNAME}", namespace="{NAMESPACE}", pod="p1"'
    test = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [
            {"series": f'feishu_bridge_long_connection_up{{{labels}, app="oncall"}}', "values": "1 0x20"},
            {"series": f'feishu_bridge_long_connection_up{{{labels}, app="intl"}}', "values": "1 0x5 1x20"},
            # The events container unscrapeable: its own alert, not the server's FeishuBridgeDown.
            {"series": f'up{{{labels}, endpoint="http"}}', "values": "1x20"},
            {"series": f'up{{{labels}, endpoint="events-metrics"}}', "values": "0x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "9m", "alertname": "FeishuBridgeLongConnectionDown", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "FeishuBridgeLongConnectionDown", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": NAMESPACE, "pod": "p1", "app": "oncall"},
                "exp_annotations": {k: v.replace('{{ $labels.pod }}', "p1").replace("{{ $labels.app }}", "oncall")
                                    for k, v in down["annotations"].items()}}]},
            {"eval_time": "15m", "alertname": "FeishuBridgeDown", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "FeishuBridgeEventsDown", "exp_alerts": [{
                "exp_labels": {"severity": "critical", "namespace": NAMESPACE, "pod": "p1", "job": FULLNAME,
                               "endpoint": "events-metrics"},
                "exp_annotations": {k: v.replace('{{ $labels.pod }}', "p1")
                                    for k, v in rules["FeishuBridgeEventsDown"]["annotations"].items()}}]},
        ]}]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", "test.yaml"], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_events_metrics_nothing_is_scraped_or_alerted(helm):
    docs = render(helm, "-f", str(ALL_FEATURES), "--set", "events.metrics.enabled=false")
    validate_kubernetes(docs)
    events = containers(docs)["events"]
    assert "ports" not in events and "BRIDGE_EVENTS_METRICS_PORT" not in {e["name"] for e in events["env"]}
    assert [p["name"] for p in one(docs, "Service")["spec"]["ports"]] == ["http"]
    assert [e["port"] for e in one(docs, "ServiceMonitor")["spec"]["endpoints"]] == ["http"]
    assert one(docs, "NetworkPolicy")["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    rules = [r["alert"] for g in one(docs, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    assert "FeishuBridgeLongConnectionDown" not in rules
    # Without events, metrics on (the default) change nothing either.
    plain = render(helm)
    assert [p["name"] for p in one(plain, "Service")["spec"]["ports"]] == ["http"]


def test_the_metrics_port_is_configurable_but_not_the_servers(helm):
    docs = render(helm, "-f", str(ALL_FEATURES), "--set", "events.metrics.port=9200")
    validate_kubernetes(docs)
    assert containers(docs)["events"]["ports"][0]["containerPort"] == 9200
    assert {p["name"]: p["port"] for p in one(docs, "Service")["spec"]["ports"]}["events-metrics"] == 9200
    assert "events.metrics.port" in refused(helm, "-f", str(ALL_FEATURES), "--set", "events.metrics.port=9095")


def test_values_from_before_events_metrics_still_render(helm):
    """`helm upgrade --reuse-values` from a chart without events.metrics: no port, no scrape."""
    docs = render(helm, "-f", str(ALL_FEATURES), "--set", "events.metrics=null")
    assert "ports" not in containers(docs)["events"]


# --- the silence targets' credentials ----------------------------------------------------


AM_BEARER, AM_PASSWORD, GRAFANA_TOKEN = "TEST-AM-BEARER-0-4e8b", "TEST-AM-BASIC-1-7a3c", "TEST-GRAFANA-TOKEN-5d2f"


def test_inline_credentials_move_into_the_secret_and_reach_the_config_as_files(all_docs, tmp_path):
    actions = config_of(all_docs)["actions"]
    first, second = actions["alertmanagers"]
    assert first == {"external_url": "https://alertmanager.example.com",
                     "url": "http://alertmanager-operated.monitoring:9093",
                     "bearer_token_file": f"{SECRETS_DIR}/actions-alertmanager-0-bearer-token"}
    assert second["basic"] == {"username": "bridge",
                               "password_file": f"{SECRETS_DIR}/actions-alertmanager-1-basic-password"}
    assert actions["grafana"] == {"url": "http://grafana.monitoring:3000",
                                  "token_file": f"{SECRETS_DIR}/actions-grafana-token"}
    assert actions["timeout"] == "2s" and actions["allowed_users"] == ["alice"]
    stored = {k: base64.b64decode(v).decode() for k, v in one(all_docs, "Secret")["data"].items()}
    assert stored["actions-alertmanager-0-bearer-token"] == AM_BEARER
    assert stored["actions-alertmanager-1-basic-password"] == AM_PASSWORD
    assert stored["actions-grafana-token"] == GRAFANA_TOKEN
    for doc in all_docs:
        if doc["kind"] == "ConfigMap":
            text = json.dumps(doc)
            assert not [s for s in (AM_BEARER, AM_PASSWORD, GRAFANA_TOKEN) if s in text], doc["metadata"]["name"]
    # The bridge reads them from the files the pod gets, in both containers.
    check_config(all_docs, tmp_path / "bridge")
    check_config(all_docs, tmp_path / "events", container="events")


def existing_secret_values() -> dict[str, Any]:
    return {
        "existingSecret": "feishu-bridge",
        "existingSecretKeys": ["app-oncall-secret", "actions-alertmanager-0-bearer-token",
                               "actions-alertmanager-1-basic-password", "actions-grafana-token"],
        "config": {
            "apps": [{"name": "oncall", "app_id": "cli_1"}],
            "bots": [{"name": "sre", "app": "oncall", "chat_id": "oc_1"}], "route": {"bots": ["sre"]},
            "actions": {"enabled": True, "alertmanagers": [
                {"external_url": "https://am.example.com", "url": "http://am.monitoring:9093"},
                {"external_url": "https://am-eu.example.com", "url": "http://am.eu:9093",
                 "basic": {"username": "bridge"}}],
                "grafana": {"url": "http://grafana.monitoring:3000"}}},
        "events": {"enabled": True},
    }


# What the existingSecret holds in the cluster.
EXISTING = {"feishu-bridge": {"app-oncall-secret": "TEST-APP-SECRET-7c1d",
                              "actions-alertmanager-0-bearer-token": AM_BEARER,
                              "actions-alertmanager-1-basic-password": AM_PASSWORD,
                              "actions-grafana-token": GRAFANA_TOKEN}}


def test_credentials_from_an_existing_secret(helm, tmp_path):
    docs = render(helm, "-f", values_file(tmp_path, existing_secret_values()))
    validate_kubernetes(docs)
    assert "Secret" not in {d["kind"] for d in docs}
    actions = config_of(docs)["actions"]
    assert actions["alertmanagers"][0]["bearer_token_file"] == f"{SECRETS_DIR}/actions-alertmanager-0-bearer-token"
    assert actions["alertmanagers"][1]["basic"]["password_file"] == (
        f"{SECRETS_DIR}/actions-alertmanager-1-basic-password")
    assert actions["grafana"]["token_file"] == f"{SECRETS_DIR}/actions-grafana-token"
    volume = {v["name"]: v for v in pod_spec(docs)["volumes"]}["secrets"]["secret"]
    assert volume["secretName"] == "feishu-bridge"
    assert {i["key"] for i in volume["items"]} == set(existing_secret_values()["existingSecretKeys"])
    check_config(docs, tmp_path / "bridge", EXISTING)
    check_config(docs, tmp_path / "events", EXISTING, container="events")


@pytest.mark.parametrize("change, message", [
    (lambda v: v["config"]["actions"]["alertmanagers"][0].update(bearer_token="inline"),
     "config.actions.alertmanagers[0].bearer_token is set, but existingSecret is used: put it in Secret "
     "feishu-bridge under key actions-alertmanager-0-bearer-token"),
    (lambda v: v["config"]["actions"]["grafana"].update(token="inline"),
     "config.actions.grafana.token is set, but existingSecret is used: put it in Secret feishu-bridge under key "
     "actions-grafana-token"),
    (lambda v: v["existingSecretKeys"].remove("actions-grafana-token"),
     "config.actions.grafana needs a token: config.actions.grafana.token, or key actions-grafana-token in "
     "existingSecret"),
    (lambda v: v["existingSecretKeys"].remove("actions-alertmanager-1-basic-password"),
     "config.actions.alertmanagers[1].basic needs a password: config.actions.alertmanagers[1].basic.password, "
     "or key actions-alertmanager-1-basic-password in existingSecret"),
    (lambda v: v["config"]["actions"]["alertmanagers"][0].update(bearer_token_file="/x"),
     "config.actions.alertmanagers[0]: bearer_token_file and key actions-alertmanager-0-bearer-token are both "
     "given"),
])
def test_a_missing_or_doubled_credential_is_refused_naming_its_key(helm, tmp_path, change, message):
    values = existing_secret_values()
    change(values)
    assert message in refused(helm, "-f", values_file(tmp_path, values))


def test_a_file_path_given_in_the_values_is_kept(helm, tmp_path):
    """One key of existingSecret, under a name of one's own, for two Alertmanagers."""
    values = existing_secret_values()
    values["existingSecretKeys"] = ["app-oncall-secret", "am-token", "actions-grafana-token"]
    shared = f"{SECRETS_DIR}/am-token"
    values["config"]["actions"]["alertmanagers"] = [
        {"external_url": f"https://am{i}.example.com", "url": f"http://am{i}:9093", "bearer_token_file": shared}
        for i in range(2)]
    docs = render(helm, "-f", values_file(tmp_path, values))
    assert [t["bearer_token_file"] for t in config_of(docs)["actions"]["alertmanagers"]] == [shared, shared]
    check_config(docs, tmp_path, {"feishu-bridge": {**EXISTING["feishu-bridge"], "am-token": AM_BEARER}})


def test_the_schema_refuses_a_mistyped_credential_key(helm, tmp_path):
    values = all_features()
    values["config"]["actions"]["alertmanagers"][0]["bearer_tokn"] = "x"
    assert "bearer_tokn" in refused(helm, "-f", values_file(tmp_path, values))
    values = all_features()
    values["config"]["actions"]["timeout"] = "2 seconds"
    assert "timeout" in refused(helm, "-f", values_file(tmp_path, values))


# --- the events container (card taps over the long connection) -----------------------


def test_events_are_off_by_default(default_docs):
    assert list(containers(default_docs)) == ["bridge"]


def test_the_events_container_shares_the_servers_config_secrets_and_outbox(all_docs):
    by_name = containers(all_docs)
    bridge, events = by_name["bridge"], by_name["events"]
    assert events["args"] == ["events"] and events["image"] == bridge["image"]
    assert events["volumeMounts"] == bridge["volumeMounts"]          # the SQLite file: one volume, one pod
    env = {e["name"]: e for e in events["env"]}
    bridge_env = {e["name"]: e for e in bridge["env"]}
    for name in ("BRIDGE_CONFIG", "BRIDGE_STORAGE_PATH", "BRIDGE_LOG_FORMAT", "BRIDGE_LOG_LEVEL",
                 "BRIDGE_BOT_0_PROXY_URL", "NO_PROXY"):
        assert env[name] == bridge_env[name], name
    assert env["BRIDGE_EVENTS_RETRY_CONNECT"]["value"] == "20"
    assert env["BRIDGE_EVENTS_HEARTBEAT"]["value"].startswith("/tmp/")
    assert "readinessProbe" not in events                            # it never makes the pod unready
    assert [p["name"] for p in events["ports"]] == ["events-metrics"]  # its /metrics only
    probe = events["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["python", "-c"] and env["BRIDGE_EVENTS_HEARTBEAT"]["value"] in probe[2]
    assert events["resources"]["limits"]["memory"]
    assert events["securityContext"] == bridge["securityContext"]


def test_the_events_liveness_probe_reads_the_heartbeats_age(all_docs, tmp_path):
    """The probe's own command, run here against a fresh and a stale heartbeat file."""
    events = containers(all_docs)["events"]
    heartbeat = {e["name"]: e for e in events["env"]}["BRIDGE_EVENTS_HEARTBEAT"]["value"]
    code = events["livenessProbe"]["exec"]["command"][2].replace(heartbeat, str(tmp_path / "alive"))
    probe = [sys.executable, "-c", code]
    assert subprocess.run(probe, capture_output=True).returncode != 0          # no heartbeat yet
    (tmp_path / "alive").touch()
    assert subprocess.run(probe, capture_output=True).returncode == 0
    old = time.time() - 120
    os.utime(tmp_path / "alive", (old, old))
    assert subprocess.run(probe, capture_output=True).returncode != 0


def test_the_events_containers_config_loads_with_its_own_env_and_mounts(all_docs, tmp_path):
    check_config(all_docs, tmp_path, container="events")


@pytest.mark.parametrize("change, reason", [
    ({"config": {"actions": {"enabled": False}}}, "config.actions.enabled is not true"),
    ({"config": {"apps": []}}, "events.enabled needs a Feishu app under config.apps"),
])
def test_events_without_actions_or_an_app_are_refused(helm, tmp_path, change, reason):
    values = yaml.safe_load(ALL_FEATURES.read_text(encoding="utf-8"))
    values["config"].update(change["config"])
    if not values["config"]["apps"]:
        values["config"]["bots"] = [b for b in values["config"]["bots"] if "app" not in b]
        values["config"]["route"] = {"bots": ["ops"]}
    assert reason in refused(helm, "-f", values_file(tmp_path, values))


def test_the_apps_callback_keys_come_from_an_existing_secret(helm, tmp_path):
    keys = ["app-oncall-secret", "app-oncall-encrypt-key", "app-oncall-verification-token"]
    values = {"existingSecret": "feishu-apps", "existingSecretKeys": keys,
              "config": {"apps": [{"name": "oncall", "app_id": "cli_1"}], "actions": {"enabled": True},
                         "bots": [{"name": "sre", "app": "oncall", "chat_id": "oc_1"}], "route": {"bots": ["sre"]}},
              "events": {"enabled": True}}
    docs = render(helm, "-f", values_file(tmp_path, values))
    app = config_of(docs)["apps"][0]
    assert app["encrypt_key_file"] == "/etc/feishu-alert-bridge/secrets/app-oncall-encrypt-key"
    assert app["verification_token_file"] == "/etc/feishu-alert-bridge/secrets/app-oncall-verification-token"
    volume = {v["name"]: v for v in pod_spec(docs)["volumes"]}["secrets"]["secret"]
    assert sorted(i["key"] for i in volume["items"]) == sorted(keys)
    values["config"]["apps"][0]["encrypt_key"] = "inline"
    assert "config.apps[0].encrypt_key is set, but existingSecret is used" in refused(
        helm, "-f", values_file(tmp_path, values))
