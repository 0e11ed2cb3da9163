"""The Helm chart as the tests see it: rendered with the real helm binary, one object
picked by kind and name, and the pod laid out on disk for the bridge's check-config.

Shared by tests/test_helm.py (the chart, SQLite mode) and tests/test_helm_postgres.py
(PostgreSQL mode).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "helm" / "feishu-alert-bridge"
ALL_FEATURES = CHART / "ci" / "all-features-values.yaml"
POSTGRES_VALUES = CHART / "ci" / "postgres-values.yaml"
PRODUCTION_EXAMPLE = CHART / "examples" / "postgres-production-values.yaml"
RELEASE, NAMESPACE = "alerts", "monitoring"
FULLNAME = f"{RELEASE}-feishu-alert-bridge"
# Oldest Kubernetes the chart is tested against; kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.30"
CRD_GROUP = "monitoring.coreos.com/v1"   # Prometheus Operator kinds: not in the core schemas
PODS_UID = 10001                         # the image's user (Dockerfile)
INSTALL_HELM = "run .ci/install-helm"

# Secrets the chart does not make (existingSecret, a CA): name -> {key: content}.
External = Mapping[str, Mapping[str, str]]


def run_helm(helm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([helm, *args], capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    out = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refused(helm: str, *args: str) -> str:
    """helm template's error output for values the chart must refuse."""
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args, check=False)
    assert result.returncode != 0, f"helm template {' '.join(args)} was not refused"
    return result.stderr


def notes(helm: str, *args: str) -> str:
    out = run_helm(helm, "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
                   *args).stdout
    return out[out.index("NOTES:"):]


def values_file(tmp_path: Path, values: dict[str, Any], name: str = "values.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return str(path)


def one(docs: list[dict[str, Any]], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {[d['kind'] for d in docs]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def config_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in pod_spec(docs)["containers"][0]["env"]}


def validate_kubernetes(docs: list[dict[str, Any]]) -> None:
    """Every core object against the Kubernetes schemas, unknown fields refused."""
    import kubernetes_validate

    for doc in docs:
        if doc["apiVersion"] == CRD_GROUP:
            continue  # CRDs: checked field by field in the Prometheus Operator tests
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.absolute_path)}")


def run_check_config(docs: list[dict[str, Any]], root: Path, external: External | None = None, *,
                     container: str = "bridge") -> subprocess.CompletedProcess[str]:
    """`feishu-alert-bridge check-config` on the rendered config, as the pod's `container` would see it."""
    config_path, env = lay_out_pod(docs, root, external or {}, container)
    # This tree's bridge, not whichever one an editable install points at: cwd is root.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "bridge", "check-config", str(config_path)],
                          capture_output=True, text=True, env={**os.environ, **env, "PYTHONPATH": path},
                          timeout=60, cwd=root)


def check_config(docs: list[dict[str, Any]], root: Path, external: External | None = None, *,
                 container: str = "bridge") -> None:
    result = run_check_config(docs, root, external, container=container)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def lay_out_pod(docs: list[dict[str, Any]], root: Path, external: External,
                container_name: str = "bridge") -> tuple[Path, dict[str, str]]:
    """Write the pod's volumes under root as the kubelet would mount them; return the config and env.

    Paths in config.yaml are absolute container paths; each mount point is mapped to its
    directory under root, so a path that no volume provides stays unreadable.
    """
    spec = pod_spec(docs)
    (container,) = [c for c in spec["containers"] if c["name"] == container_name]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mapping: dict[str, Path] = {}
    for mount in container["volumeMounts"]:
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        mapping[mount["mountPath"]] = target
        for name, content in _volume_files(docs, volumes[mount["name"]], external).items():
            (target / name).write_text(content, encoding="utf-8")

    # One pass, longest mount first, and only at the start of a path: a mapped directory
    # may itself lie under a mount point such as /tmp.
    alternatives = "|".join(re.escape(m) for m in sorted(mapping, key=len, reverse=True))
    pattern = re.compile(rf"(?<![\w./-])({alternatives})(?![\w.-])")

    def host(text: str) -> str:
        return pattern.sub(lambda m: str(mapping[m.group(1)]), text)

    env = {item["name"]: host(_env_value(docs, item)) for item in container["env"]}
    config_path = Path(env["BRIDGE_CONFIG"])
    storage = yaml.safe_load(config_path.read_text(encoding="utf-8"))["storage"]
    if "path" in storage:
        outbox_dir = Path(host(storage["path"])).parent
        writable = {mapping[m["mountPath"]] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert outbox_dir in writable, "the outbox is not on a writable volume"
    for key in ("dsn_file", "password_file"):
        if key in storage.get("postgres", {}):
            assert Path(host(storage["postgres"][key])).is_file(), f"storage.postgres.{key}: no volume provides it"
    config_path.write_text(host(config_path.read_text(encoding="utf-8")), encoding="utf-8")
    return config_path, env


def _volume_files(docs: list[dict[str, Any]], volume: dict[str, Any], external: External) -> dict[str, str]:
    if "configMap" in volume:
        source = volume["configMap"]
        data = external.get(source["name"]) or one(docs, "ConfigMap", source["name"])["data"]
    elif "secret" in volume:
        source = volume["secret"]
        data = external.get(source["secretName"]) or {
            k: base64.b64decode(v).decode() for k, v in one(docs, "Secret", source["secretName"])["data"].items()}
    else:
        return {}  # emptyDir, persistentVolumeClaim: start empty
    items = source.get("items") or [{"key": k, "path": k} for k in data]
    return {item["path"]: data[item["key"]] for item in items}


def _env_value(docs: list[dict[str, Any]], item: dict[str, Any]) -> str:
    if "value" in item:
        return str(item["value"])
    ref = item["valueFrom"]["secretKeyRef"]
    return base64.b64decode(one(docs, "Secret", ref["name"])["data"][ref["key"]]).decode()
