"""The Helm chart (helm/feishu-alert-bridge) in its default, SQLite mode, rendered with the
real helm binary. PostgreSQL mode: tests/test_helm_postgres.py.

Rendered twice: with the chart's default values and with ci/all-features-values.yaml
(every optional resource on, several bots with fake secrets). Each rendering is linted,
validated against the Kubernetes 1.30 schemas, and its config.yaml is run through the
bridge's own `check-config` with the pod's volumes and environment laid out on disk.

Needs helm (.ci/install-helm), kubernetes-validate (pip) and promtool (Debian's
prometheus package, which .ci/run installs); a missing tool skips the tests that need it,
or fails them under --require-tools (as CI runs).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from support import require_tool
from support.helm import (ALL_FEATURES, CHART, CRD_GROUP, FULLNAME, INSTALL_HELM, NAMESPACE, PODS_UID, RELEASE,
                          check_config, config_of, env_of, kinds, notes, one, pod_spec, refused, render, run_helm,
                          validate_kubernetes, values_file)


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm", INSTALL_HELM)


def fake_secrets() -> list[str]:
    """The secret values ci/all-features-values.yaml gives; none may reach a ConfigMap."""
    config = yaml.safe_load(ALL_FEATURES.read_text(encoding="utf-8"))["config"]
    values = [bot[key] for bot in config["bots"] for key in ("webhook_url", "secret", "proxy_url") if key in bot]
    values += [app[key] for app in config.get("apps", ()) for key in ("app_secret", "encrypt_key",
                                                                        "verification_token") if key in app]
    actions = config["actions"]
    values += [t["bearer_token"] if "bearer_token" in t else t["basic"]["password"] for t in actions["alertmanagers"]]
    values.append(actions["grafana"]["token"])
    assert len(values) >= 8, "the all-features values lost their fake secrets"
    return values


@pytest.fixture(scope="module")
def default_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm)


@pytest.fixture(scope="module")
def all_docs(helm: str) -> list[dict[str, Any]]:
    return render(helm, "-f", str(ALL_FEATURES))


@pytest.fixture(params=["default", "all-features"])
def docs(request, default_docs, all_docs) -> list[dict[str, Any]]:
    return default_docs if request.param == "default" else all_docs


# --- lint and schemas ----------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["-f", str(ALL_FEATURES)]], ids=["default", "all-features"])
def test_helm_lint_strict_passes(helm, extra):
    run_helm(helm, "lint", "--strict", str(CHART), *extra)


def test_manifests_are_valid_kubernetes_1_30_objects(docs):
    validate_kubernetes(docs)


def test_all_features_render_every_optional_object(default_docs, all_docs):
    optional = {"ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "NetworkPolicy", "Ingress"}
    assert optional.isdisjoint(d["kind"] for d in default_docs)
    assert optional <= {d["kind"] for d in all_docs}
    assert {"Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "ServiceAccount"} <= {
        d["kind"] for d in default_docs}


def test_values_schema_rejects_typos(helm, tmp_path):
    top = run_helm(helm, "template", str(CHART), "--set", "replicaCont=1", check=False)
    assert top.returncode != 0 and "replicaCont" in top.stderr
    bad_bot = values_file(tmp_path, {"config": {"bots": [{"name": "ops", "webhook_ur": "https://x"}]}})
    nested = run_helm(helm, "template", str(CHART), "-f", bad_bot, check=False)
    assert nested.returncode != 0 and "webhook_ur" in nested.stderr


def test_chart_config_schema_follows_the_loader():
    """Every key the loader accepts is offered by the chart, except those the chart manages."""
    from bridge import config as loader

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    config = schema["properties"]["config"]["properties"]
    bot = schema["definitions"]["bot"]["properties"]
    # storage and templates_dir are the chart's mounts; log comes from logFormat/logLevel,
    # whose environment variables override it; *_file are the chart's Secret files.
    assert set(config) == loader._TOP_KEYS - {"storage", "templates_dir", "log"}
    assert set(bot) == loader._BOT_KEYS - {"webhook_url_file", "secret_file"}
    assert set(config["delivery"]["properties"]) == loader._DELIVERY_KEYS
    assert set(config["server"]["properties"]) == loader._SERVER_KEYS
    assert set(config["reload"]["properties"]) == loader._RELOAD_KEYS
    # protect_operations would lock the probes and the ServiceMonitor out.
    assert set(config["auth"]["properties"]) == loader._AUTH_KEYS - {"bearer_token_file", "protect_operations"}
    # actions: every key, *_file too (a path in the container, e.g. an existingSecret key).
    from bridge.config import actions

    section = config["actions"]["properties"]
    assert set(section) == actions._ACTIONS_KEYS
    target = section["alertmanagers"]["items"]["properties"]
    assert set(target) == actions._TARGET_KEYS
    assert set(target["basic"]["properties"]) == actions._BASIC_KEYS
    assert set(section["grafana"]["properties"]) == actions._GRAFANA_KEYS


def test_readme_documents_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))
    missing = [path for path in _value_paths(values) if path not in documented]
    assert not missing, f"values not in the README's table: {missing}"
    assert "helm install alerts ./helm/feishu-alert-bridge -f my-values.yaml" in readme


def _value_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths down to leaves; free-form maps and the bridge's config stop early."""
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in ("config", "resources", "podSecurityContext",
                                                               "securityContext", "events.resources"):
            paths.extend(_value_paths(value, path + "."))
        else:
            paths.append(path)
    return paths


# --- secrets, checksums, security ----------------------------------------------------


def test_no_secret_value_in_any_configmap_or_in_plain_text(all_docs, helm):
    secrets = fake_secrets()
    for doc in all_docs:
        if doc["kind"] == "ConfigMap":
            text = json.dumps(doc, ensure_ascii=False)
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"ConfigMap {doc['metadata']['name']} holds secret values"
    rendered = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(ALL_FEATURES)).stdout
    assert not [s for s in secrets if s in rendered], "a secret appears in plain text in the manifests"
    stored = {base64.b64decode(v).decode() for v in one(all_docs, "Secret")["data"].values()}
    assert set(secrets) == stored


def test_bots_read_their_secrets_from_files_and_env(all_docs):
    bots = {bot["name"]: bot for bot in config_of(all_docs)["bots"]}
    assert bots["ops"]["webhook_url_file"] == "/etc/feishu-alert-bridge/secrets/ops-webhook-url"
    assert bots["ops"]["secret_file"] == "/etc/feishu-alert-bridge/secrets/ops-secret"
    assert bots["ops"]["proxy_url"] == "${BRIDGE_BOT_0_PROXY_URL}"
    assert not {"webhook_url", "secret"} & set(bots["ops"])
    assert "webhook_url_file" not in bots["staging"]  # a dry-run bot without a URL stays without one
    (app,) = config_of(all_docs)["apps"]
    assert app == {"name": "oncall", "app_id": "cli_a1b2c3d4e5", "domain": "feishu",
                   "app_secret_file": "/etc/feishu-alert-bridge/secrets/app-oncall-secret",
                   "encrypt_key_file": "/etc/feishu-alert-bridge/secrets/app-oncall-encrypt-key",
                   "verification_token_file": "/etc/feishu-alert-bridge/secrets/app-oncall-verification-token"}


def test_an_apps_secret_comes_from_an_existing_secret(helm, tmp_path):
    values = {"existingSecret": "feishu-apps", "existingSecretKeys": ["app-oncall-secret"],
              "config": {"apps": [{"name": "oncall", "app_id": "cli_1"}],
                         "bots": [{"name": "sre", "app": "oncall", "chat_id": "oc_1"}], "route": {"bots": ["sre"]}}}
    docs = render(helm, "-f", values_file(tmp_path, values))
    assert config_of(docs)["apps"][0]["app_secret_file"] == "/etc/feishu-alert-bridge/secrets/app-oncall-secret"
    volume = {v["name"]: v for v in pod_spec(docs)["volumes"]}["secrets"]["secret"]
    assert volume["secretName"] == "feishu-apps" and [i["key"] for i in volume["items"]] == ["app-oncall-secret"]
    values["existingSecretKeys"] = []
    assert "key app-oncall-secret in existingSecret" in refused(helm, "-f", values_file(tmp_path, values))


def test_config_checksum_changes_with_the_config_only(helm, tmp_path):
    def checksums(*args: str) -> dict[str, str]:
        annotations = one(render(helm, *args), "Deployment")["spec"]["template"]["metadata"]["annotations"]
        return {k: v for k, v in annotations.items() if k.startswith("checksum/")}

    base = checksums("-f", str(ALL_FEATURES))
    assert checksums("-f", str(ALL_FEATURES), "--set", "config.timezone=UTC")["checksum/config"] != base["checksum/config"]
    assert checksums("-f", str(ALL_FEATURES), "--set", "customTemplates.brief=x")["checksum/config"] != base["checksum/config"]
    values = yaml.safe_load(ALL_FEATURES.read_text(encoding="utf-8"))
    values["config"]["bots"][0]["secret"] = "another-signing-secret"
    changed = checksums("-f", values_file(tmp_path, values))
    assert changed["checksum/secret"] != base["checksum/secret"]
    assert changed["checksum/config"] == base["checksum/config"]
    assert checksums("-f", str(ALL_FEATURES), "--set", "resources.limits.memory=1Gi") == base


def test_pod_runs_locked_down(docs):
    spec = pod_spec(docs)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == PODS_UID and pod["fsGroup"] == PODS_UID
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    container = spec["containers"][0]["securityContext"]
    assert container["runAsNonRoot"] is True and container["runAsUser"] == PODS_UID
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert container["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_probes_resources_and_outbox_volume(docs):
    spec = pod_spec(docs)
    container = spec["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/-/healthy", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/-/ready", "port": "http"}
    assert {"name": "http", "containerPort": 9095, "protocol": "TCP"} in container["ports"]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    outbox = {v["name"]: v for v in spec["volumes"]}[mounts["/var/lib/feishu-alert-bridge"]]
    assert outbox["persistentVolumeClaim"]["claimName"] == one(docs, "PersistentVolumeClaim", f"{FULLNAME}-outbox")[
        "metadata"]["name"]
    assert config_of(docs)["storage"]["path"] == "/var/lib/feishu-alert-bridge/outbox.db"
    assert one(docs, "Deployment")["spec"]["strategy"]["type"] == "Recreate"


def test_without_persistence_the_outbox_is_an_emptydir_and_updates_roll(helm):
    docs = render(helm, "--set", "persistence.enabled=false")
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}
    volumes = {v["name"]: v for v in pod_spec(docs)["volumes"]}
    assert "emptyDir" in volumes["outbox"]
    assert one(docs, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"


def test_several_replicas_sharing_one_outbox_are_refused(helm):
    # The schema refuses first, naming both ways out; a helm run that skips the schema
    # meets the template's reason.
    schema = refused(helm, "--set", "replicaCount=2")
    assert "replicaCount" in schema and "postgres" in schema
    template = refused(helm, "--set", "replicaCount=2", "--skip-schema-validation")
    assert "replicaCount > 1 needs postgres.enabled: true" in template and "SQLite" in template


def test_several_replicas_without_persistence_stay_allowed(helm):
    """As before the PostgreSQL mode: each pod has its own emptyDir outbox (NOTES warn)."""
    docs = render(helm, "--set", "replicaCount=2", "--set", "persistence.enabled=false")
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    assert "PodDisruptionBudget" not in kinds(docs)


def test_values_from_before_postgres_still_render(helm):
    """`helm upgrade --reuse-values` from chart 0.1 brings values without postgres.* and
    prometheusRule.kubeStateMetrics (null removes a key, as if it never existed)."""
    docs = render(helm, "-f", str(ALL_FEATURES), "--set", "postgres=null",
                  "--set", "prometheusRule.kubeStateMetrics=null")
    assert set(config_of(docs)["storage"]) == {"path"}
    assert "PersistentVolumeClaim" in kinds(docs)


def test_sqlite_mode_keeps_one_pod_and_no_postgres_parts(default_docs, all_docs):
    for docs in (default_docs, all_docs):
        deployment = one(docs, "Deployment")
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        spec = pod_spec(docs)
        assert "topologySpreadConstraints" not in spec and "lifecycle" not in spec["containers"][0]
        assert env_of(docs)["BRIDGE_STORAGE_PATH"]["value"] == "/var/lib/feishu-alert-bridge/outbox.db"
        assert not {"PGSSLMODE", "PGSSLROOTCERT"} & set(env_of(docs))
        assert set(config_of(docs)["storage"]) == {"path"}
    # all-features turns the PDB on by hand: it keeps maxUnavailable 1, as before.
    assert one(all_docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "PodDisruptionBudget" not in kinds(default_docs)


def test_objects_select_the_bridge_pods(all_docs):
    pod_labels = one(all_docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(all_docs, "Service")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        doc = one(all_docs, kind)
        selector = doc["spec"].get("selector") or doc["spec"]["podSelector"]
        assert selector["matchLabels"].items() <= pod_labels.items(), kind
    monitor = one(all_docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    policy = one(all_docs, "NetworkPolicy")["spec"]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP")} <= egress_ports
    # events-metrics: the events container's /metrics (events.enabled in all-features).
    assert policy["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"},
                                             {"port": "events-metrics", "protocol": "TCP"}]


# --- Prometheus Operator objects -------------------------------------------------------


def test_prometheus_operator_objects(all_docs, tmp_path):
    monitor = one(all_docs, "ServiceMonitor")
    assert monitor["apiVersion"] == CRD_GROUP and monitor["metadata"]["namespace"] == NAMESPACE
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    rule = one(all_docs, "PrometheusRule")
    assert rule["apiVersion"] == CRD_GROUP
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert all(r.get("alert") and r.get("expr") for r in rules)
    exprs = " ".join(r["expr"] for r in rules)
    for metric in ("feishu_bridge_dead_letters_total", "feishu_bridge_outbox_depth",
                   "feishu_bridge_outbox_oldest_age_seconds", "feishu_bridge_config_last_reload_successful",
                   "feishu_bridge_outbox_up", 'result="not_stored"'):
        assert metric in exprs
    # /-/ready (503 while the outbox cannot be written) as kube-state-metrics sees it.
    not_ready = {r["alert"]: r for r in rules}["FeishuBridgeNotReady"]
    assert f'kube_deployment_status_replicas_unavailable{{namespace="{NAMESPACE}", deployment="{FULLNAME}"}}' in (
        not_ready["expr"])
    assert "SQLite" in not_ready["annotations"]["description"]
    promtool = require_tool("promtool", "apt-get install prometheus (.ci/run does)")
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]), encoding="utf-8")
    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the rendered config, run through the bridge's validator ------------------------------


def test_rendered_config_passes_check_config(docs, tmp_path):
    check_config(docs, tmp_path)


def test_inbound_auth_is_rendered_only_when_set(helm, tmp_path, default_docs, all_docs):
    assert "auth" not in config_of(default_docs) and "auth" not in config_of(all_docs)
    values = {"config": {"auth": {"bearer_token": "TEST-BEARER-1b7c",
                                  "basic": {"username": "alertmanager", "password": "TEST-BASIC-2d8e"}}}}
    docs = render(helm, "-f", values_file(tmp_path, values))
    auth = config_of(docs)["auth"]
    assert auth == {"bearer_token_file": "/etc/feishu-alert-bridge/secrets/auth-bearer-token",
                    "basic": {"username": "alertmanager",
                              "password_file": "/etc/feishu-alert-bridge/secrets/auth-basic-password"}}
    assert "TEST-BEARER-1b7c" not in json.dumps(one(docs, "ConfigMap"))
    check_config(docs, tmp_path / "pod")


def test_existing_secret_is_referenced_by_the_listed_keys(helm, tmp_path):
    values = {"existingSecret": "feishu-bots", "existingSecretKeys": ["ops-webhook-url", "ops-secret"],
              "config": {"bots": [{"name": "ops"}], "route": {"bots": ["ops"]}}}
    docs = render(helm, "-f", values_file(tmp_path, values))
    assert "Secret" not in {d["kind"] for d in docs}
    assert config_of(docs)["bots"] == [{"name": "ops", "webhook_url_file": "/etc/feishu-alert-bridge/secrets/ops-webhook-url",
                                        "secret_file": "/etc/feishu-alert-bridge/secrets/ops-secret"}]
    volume = {v["name"]: v for v in pod_spec(docs)["volumes"]}["secrets"]["secret"]
    assert volume["secretName"] == "feishu-bots"
    assert {i["key"] for i in volume["items"]} == {"ops-webhook-url", "ops-secret"}
    values["config"]["bots"][0]["webhook_url"] = "https://open.feishu.cn/open-apis/bot/v2/hook/x"
    refused = run_helm(helm, "template", str(CHART), "-f", values_file(tmp_path, values), check=False)
    assert refused.returncode != 0 and "existingSecret" in refused.stderr


def test_notes_print_the_alertmanager_receiver(helm, tmp_path):
    plain = notes(helm)
    assert "Storage mode: SQLite" in plain and "Grafana does not" in plain
    assert f"url: http://{FULLNAME}.{NAMESPACE}.svc:9095/alertmanager" in plain
    assert "send_resolved: true" in plain and "http_config" not in plain
    assert "bot default has no webhook_url" in plain
    with_auth = notes(helm, "-f", values_file(tmp_path, {"config": {"auth": {"bearer_token": "TEST-BEARER-3f9a"}}}))
    assert "http_config:" in with_auth and "credentials_file:" in with_auth
    assert "TEST-BEARER-3f9a" not in with_auth


def test_storage_sync_is_passed_on_only_when_interval(helm, default_docs):
    assert "sync" not in config_of(default_docs)["storage"]      # always: the bridge's default, as before
    docs = render(helm, "--set", "storage.sync=interval", "--set", "storage.syncInterval=50ms")
    assert config_of(docs)["storage"] == {"path": "/var/lib/feishu-alert-bridge/outbox.db", "sync": "interval",
                                          "sync_interval": "50ms"}
    pg = render(helm, "--set", "storage.sync=interval", "--set", "postgres.enabled=true",
                "--set", "postgres.host=db.example")
    # PostgreSQL's window is the server's: storage.sync_interval would be refused.
    assert config_of(pg)["storage"]["sync"] == "interval" and "sync_interval" not in config_of(pg)["storage"]
    assert "/storage/sync" in refused(helm, "--set", "storage.sync=sometimes")
