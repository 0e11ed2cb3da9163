"""The Helm chart in PostgreSQL mode (postgres.enabled), rendered with the real helm binary.

Rendered with ci/postgres-values.yaml (the DSN built from its parts, the password and
the bots' secrets in the chart's Secret, every optional object on) and with the
production example examples/postgres-production-values.yaml (CloudNativePG's Secrets,
named keys). What a platform engineer running two replicas relies on: no secret in a
ConfigMap, no PVC, a rollout that never has zero ready pods, a PodDisruptionBudget,
pods spread over nodes, an alert for an outbox that cannot be written, and a config
that the bridge accepts.

Same tools as tests/test_helm.py: helm, kubernetes-validate, promtool.
"""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest
import yaml

from support import require_tool
from support.helm import (ALL_FEATURES, CHART, FULLNAME, INSTALL_HELM, NAMESPACE, POSTGRES_VALUES, PRODUCTION_EXAMPLE,
                          RELEASE, check_config, config_of, env_of, kinds, notes, one, pod_spec, refused, render,
                          run_check_config, run_helm, validate_kubernetes, values_file)

CA = "-----BEGIN CERTIFICATE-----\nTEST-CA\n-----END CERTIFICATE-----\n"
# What the Secrets and ConfigMaps the chart does not make would hold in the cluster.
EXTERNAL = {
    "feishu-bridge-db-ca": {"ca.crt": CA},
    "feishu-bridge-db-app": {"uri": "postgresql://bridge:TEST-CNPG-PASSWORD-0c1d@feishu-bridge-db-rw:5432/bridge"},
    "feishu-bots": {"ops-webhook-url": "https://open.feishu.cn/open-apis/bot/v2/hook/TEST-TOKEN-ex-77aa",
                    "ops-secret": "TEST-SIGN-SECRET-ex-5e3c"},
}
# The keys the PostgreSQL backend reads (issue 12's public contract).
STORAGE_POSTGRES_KEYS = {"dsn", "dsn_file", "password_file", "schema", "pool_size"}
MODES = {"ci-postgres": POSTGRES_VALUES, "production-example": PRODUCTION_EXAMPLE}


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm", INSTALL_HELM)


@pytest.fixture(scope="module")
def pg_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(POSTGRES_VALUES))


@pytest.fixture(scope="module")
def example_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(PRODUCTION_EXAMPLE))


@pytest.fixture(params=list(MODES))
def docs(request, pg_docs, example_docs) -> list[dict[str, Any]]:
    return pg_docs if request.param == "ci-postgres" else example_docs


def postgres_values() -> dict[str, Any]:
    return yaml.safe_load(POSTGRES_VALUES.read_text(encoding="utf-8"))


def with_postgres(tmp_path, **postgres: Any) -> list[str]:
    """helm arguments: the default values plus a postgres section."""
    return ["-f", values_file(tmp_path, {"postgres": {"enabled": True, **postgres}}, "postgres.yaml")]


# --- lint, schemas, the bridge's own check ----------------------------------------------


@pytest.mark.parametrize("values", list(MODES.values()), ids=list(MODES))
def test_helm_lint_strict_passes(helm, values):
    run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values))


def test_manifests_are_valid_kubernetes_1_30_objects(docs):
    validate_kubernetes(docs)


def test_storage_section_uses_only_the_backends_keys(docs):
    assert set(config_of(docs)["storage"]) == {"postgres"}
    assert set(config_of(docs)["storage"]["postgres"]) <= STORAGE_POSTGRES_KEYS


def test_check_config_objects_to_nothing_but_the_pending_backend(docs, tmp_path):
    """Until the PostgreSQL backend is merged, check-config's only objection may be the
    storage.postgres section itself: so the expected failure below fails for that reason."""
    result = run_check_config(docs, tmp_path, EXTERNAL)
    if result.returncode != 0:
        problems = [line.strip() for line in (result.stdout + result.stderr).splitlines()[1:] if line.strip()]
        assert problems and all(p.startswith("storage.postgres") for p in problems), result.stderr


# Delete this marker when the PostgreSQL backend (storage.postgres) is merged.
def test_rendered_config_passes_check_config(docs, tmp_path):
    check_config(docs, tmp_path, EXTERNAL)


# --- secrets ------------------------------------------------------------------------------


def test_no_secret_value_in_any_configmap_or_in_plain_text(helm, pg_docs):
    values = postgres_values()
    secrets = [values["postgres"]["password"]] + [
        bot[key] for bot in values["config"]["bots"] for key in ("webhook_url", "secret")]
    for doc in pg_docs:
        if doc["kind"] == "ConfigMap":
            assert not [s for s in secrets if s in json.dumps(doc, ensure_ascii=False)], doc["metadata"]["name"]
    rendered = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(POSTGRES_VALUES)).stdout
    assert not [s for s in secrets if s in rendered], "a secret appears in plain text in the manifests"
    stored = {k: base64.b64decode(v).decode() for k, v in one(pg_docs, "Secret")["data"].items()}
    assert stored["postgres-password"] == values["postgres"]["password"]


def test_dsn_from_parts_stays_in_the_config_without_the_password(pg_docs):
    postgres = config_of(pg_docs)["storage"]["postgres"]
    assert postgres == {
        "dsn": "postgresql://bridge@feishu-bridge-db-rw.databases.svc:5433/feishu_bridge?sslmode=verify-full",
        "password_file": "/etc/feishu-alert-bridge/secrets/postgres-password",
        "schema": "alerts_bridge", "pool_size": 3}


def test_a_whole_dsn_goes_into_the_secret(helm, tmp_path):
    dsn = "postgresql://bridge:TEST-PG-DSN-PASSWORD-19fe@db.example:5432/bridge"
    docs = render(helm, *with_postgres(tmp_path, dsn=dsn), "--set", "replicaCount=2")
    assert config_of(docs)["storage"] == {"postgres": {"dsn_file": "/etc/feishu-alert-bridge/secrets/postgres-dsn"}}
    assert dsn not in json.dumps(one(docs, "ConfigMap"))
    assert base64.b64decode(one(docs, "Secret")["data"]["postgres-dsn"]).decode() == dsn
    volume = {v["name"]: v for v in pod_spec(docs)["volumes"]}["secrets"]["secret"]
    assert {"key": "postgres-dsn", "path": "postgres-dsn"} in volume["items"]
    validate_kubernetes(docs)


def test_existing_secret_keys_are_named_and_mounted(example_docs):
    assert "Secret" not in kinds(example_docs)  # the bots' and the database's Secrets exist already
    assert config_of(example_docs)["storage"]["postgres"] == {
        "dsn_file": "/etc/feishu-alert-bridge/postgres/uri", "pool_size": 4}
    spec = pod_spec(example_docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["postgres-secret"]["secret"]["secretName"] == "feishu-bridge-db-app"
    assert volumes["postgres-secret"]["secret"]["items"] == [{"key": "uri", "path": "uri"}]
    assert volumes["postgres-ca"]["secret"] == {"secretName": "feishu-bridge-db-ca", "defaultMode": 0o444,
                                                "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["postgres-secret"]["readOnly"] and mounts["postgres-ca"]["readOnly"]
    env = env_of(example_docs)
    assert env["PGSSLMODE"]["value"] == "verify-full"
    assert env["PGSSLROOTCERT"]["value"] == mounts["postgres-ca"]["mountPath"] + "/ca.crt"


def test_the_bots_existing_secret_may_hold_the_database_keys(helm, tmp_path):
    docs = render(helm, *with_postgres(tmp_path), "--set", "existingSecret=bridge",
                  "--set", "existingSecretKeys={postgres-dsn,postgres-password}")
    assert config_of(docs)["storage"]["postgres"] == {
        "dsn_file": "/etc/feishu-alert-bridge/secrets/postgres-dsn",
        "password_file": "/etc/feishu-alert-bridge/secrets/postgres-password"}


@pytest.mark.parametrize("postgres, extra, reason", [
    ({}, [], "postgres.enabled needs a database"),
    ({"host": "db", "dsn": "postgresql://db/bridge"}, [], "postgres.host and a DSN"),
    ({"existingSecret": "db-app", "password": "TEST-X"}, [], "postgres.password is set, but postgres.existingSecret"),
    ({"existingSecret": "db-app", "host": "db"}, [], "no key of it is named"),
    ({"host": "db", "caCert": {"secret": "a", "configMap": "b"}}, [], "caCert.secret and postgres.caCert.configMap"),
    ({"host": "db", "password": "TEST-X"}, ["--set", "existingSecret=bots"], "put it in Secret bots under key "
                                                                              "postgres-password"),
], ids=["no-database", "host-and-dsn", "value-and-existing-secret", "no-key", "two-cas", "bots-existing-secret"])
def test_contradictory_database_values_are_refused_with_the_reason(helm, tmp_path, postgres, extra, reason):
    stderr = refused(helm, *with_postgres(tmp_path, **postgres), *extra)
    assert reason in stderr
    assert "TEST-X" not in stderr


# --- no volume, several replicas, rollouts and disruptions -----------------------------------


def test_no_pvc_and_no_outbox_volume(docs):
    assert "PersistentVolumeClaim" not in kinds(docs)
    container = pod_spec(docs)["containers"][0]
    assert [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")] == ["/tmp"]
    assert "outbox" not in {v["name"] for v in pod_spec(docs)["volumes"]}
    assert "BRIDGE_STORAGE_PATH" not in env_of(docs)


def test_two_replicas_roll_without_a_moment_of_none_ready(docs):
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    spec = pod_spec(docs)
    sleep = spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert sleep == ["sleep", "5"] and spec["terminationGracePeriodSeconds"] > 5


def test_a_disruption_budget_keeps_one_pod(docs):
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= pod_labels.items()


def test_pods_spread_over_nodes_without_blocking_scheduling(docs):
    [constraint] = pod_spec(docs)["topologySpreadConstraints"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert constraint["topologyKey"] == "kubernetes.io/hostname" and constraint["maxSkew"] == 1
    assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
    assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert constraint["matchLabelKeys"] == ["pod-template-hash"]  # a rollout's new pods spread among themselves


def test_spread_budget_and_strategy_can_be_overridden(helm, tmp_path):
    zone = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": RELEASE}}}
    values = {**postgres_values(), "topologySpreadConstraints": [zone], "strategy": {"type": "Recreate"},
              "podDisruptionBudget": {"maxUnavailable": 1}, "preStopSleepSeconds": 0}
    docs = render(helm, "-f", values_file(tmp_path, values))
    assert pod_spec(docs)["topologySpreadConstraints"] == [zone]
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "lifecycle" not in pod_spec(docs)["containers"][0]
    values.update(topologySpreadConstraints=[], podDisruptionBudget={"enabled": False})
    docs = render(helm, "-f", values_file(tmp_path, values))
    assert "topologySpreadConstraints" not in pod_spec(docs) and "PodDisruptionBudget" not in kinds(docs)


def test_one_postgres_replica_gets_no_budget_that_would_block_drains(helm, tmp_path):
    args = [*with_postgres(tmp_path, host="db"), "--set", "replicaCount=1"]
    assert "PodDisruptionBudget" not in kinds(render(helm, *args))
    assert "WARNING: PostgreSQL mode with 1 replica" in notes(helm, *args)


def test_network_policy_lets_the_pods_reach_the_database(pg_docs):
    egress = one(pg_docs, "NetworkPolicy")["spec"]["egress"]
    [rule] = [r for r in egress if r["ports"] == [{"port": 5433, "protocol": "TCP"}]]
    assert rule["to"] == postgres_values()["networkPolicy"]["postgresTo"]


# --- operating it ------------------------------------------------------------------------------


def test_prometheus_rule_alerts_on_an_outbox_that_cannot_be_written(pg_docs, tmp_path):
    rule = one(pg_docs, "PrometheusRule")
    rules = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    # Keyed on /-/ready, as kube-state-metrics sees the Deployment: fires without traffic,
    # and for a database that can be read but not written, where outbox_up stays 1.
    not_ready = rules["FeishuBridgeNotReady"]
    assert not_ready["expr"] == (
        "max by (namespace, deployment) (kube_deployment_status_replicas_unavailable"
        f'{{namespace="{NAMESPACE}", deployment="{FULLNAME}"}}) > 0')
    for name in ("FeishuBridgeNotReady", "FeishuBridgeOutboxDown", "FeishuBridgeWebhooksNotStored"):
        assert "the PostgreSQL database" in rules[name]["annotations"]["description"], name
    promtool = require_tool("promtool", "apt-get install prometheus (.ci/run does)")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readiness_alert_follows_kube_state_metrics_settings(helm):
    base = ["-f", str(ALL_FEATURES)]
    off = one(render(helm, *base, "--set", "prometheusRule.kubeStateMetrics.enabled=false"), "PrometheusRule")
    assert "FeishuBridgeNotReady" not in json.dumps(off)
    custom = one(render(helm, *base, "--set", 'prometheusRule.kubeStateMetrics.selector=deployment="x"'),
                 "PrometheusRule")
    exprs = [r["expr"] for group in custom["spec"]["groups"] for r in group["rules"]]
    assert any('kube_deployment_status_replicas_unavailable{deployment="x"}' in e for e in exprs)


def test_secret_checksum_follows_the_database_password(helm, tmp_path):
    def checksum(values: dict[str, Any]) -> str:
        docs = render(helm, "-f", values_file(tmp_path, values))
        return one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/secret"]

    values = postgres_values()
    before = checksum(values)
    values["postgres"]["password"] = "TEST-PG-PASSWORD-rotated"
    assert checksum(values) != before


def test_notes_print_the_postgres_mode(helm):
    text = notes(helm, "-f", str(POSTGRES_VALUES))
    assert "Storage mode: PostgreSQL, database postgresql://bridge@feishu-bridge-db-rw.databases.svc:5433/" in text
    assert "2 replicas share the outbox" in text and "Storage mode: SQLite" not in text
    assert postgres_values()["postgres"]["password"] not in text
    assert "WARNING" not in text


def test_each_replica_runs_an_events_container_on_the_database(pg_docs, tmp_path):
    """PostgreSQL mode: one long connection per replica (Feishu hands each tap to one of
    them), with the server's database settings and no outbox volume."""
    by_name = {c["name"]: c for c in pod_spec(pg_docs)["containers"]}
    events = by_name["events"]
    env = {e["name"]: e for e in events["env"]}
    assert "BRIDGE_STORAGE_PATH" not in env
    assert env["PGSSLMODE"] == env_of(pg_docs)["PGSSLMODE"] and env["PGSSLROOTCERT"] == env_of(pg_docs)["PGSSLROOTCERT"]
    assert events["volumeMounts"] == by_name["bridge"]["volumeMounts"]
    assert "/var/lib/feishu-alert-bridge" not in {m["mountPath"] for m in events["volumeMounts"]}
    check_config(pg_docs, tmp_path, EXTERNAL, container="events")
