"""Built-in sample notifications, for `check-config` (every template is rendered
against each) and for previewing a template.

Pure functions: each call builds a new Notification with fixed times, so a preview is
the same every time. Values are modelled on what Alertmanager 0.25 and Grafana's
unified alerting really send (shared payloads am025-*.json and grafana-unified-*.json).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from .model import FIRING, RESOLVED, Alert, Notification, fingerprint

_AM_URL = "http://alertmanager.example.com:9093"
_PROM_URL = "http://prometheus.example.com:9090"
_GRAFANA_URL = "https://grafana.example.com"
_T0 = datetime(2026, 11, 29, 0, 42, 10, tzinfo=timezone.utc)


def _alert(status: str, labels: dict[str, str], annotations: dict[str, str], *,
           started: timedelta = timedelta(0), ended: timedelta | None = None,
           expr: str = "", generator_url: str = "", **extra: object) -> Alert:
    return Alert(
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=_T0 + started,
        ends_at=_T0 + ended if ended is not None else None,
        generator_url=generator_url or (f"{_PROM_URL}/graph?g0.expr={expr}&g0.tab=1" if expr else ""),
        fingerprint=fingerprint(labels),
        **extra,  # type: ignore[arg-type]
    )


def _cpu(node: str, severity: str, status: str) -> Alert:
    return _alert(
        status,
        {"alertname": "HighCPU", "cluster": "prod-bj", "instance": f"{node}:9100",
         "job": "node", "severity": severity, "team": "infra"},
        {"summary": f"CPU usage above {95 if severity == 'critical' else 80}% on {node}",
         "description": "CPU has been above the threshold for 10 minutes.\nCheck \"top\" output.",
         "runbook_url": "https://runbooks.example.com/HighCPU"},
        ended=timedelta(minutes=47, seconds=8) if status == RESOLVED else None,
        expr="100%20-%20avg%20by%28instance%29%28rate%28node_cpu_seconds_total%7Bmode%3D%22idle%22%7D%5B5m%5D%29%29%20%2A%20100%20%3E%2080",
    )


def _group(alerts: list[Alert], group_labels: dict[str, str], receiver: str = "feishu-ops") -> Notification:
    template = Notification(
        source="alertmanager", receiver=receiver, status=FIRING,
        group_key="{}:{" + ", ".join(f'{k}="{v}"' for k, v in group_labels.items()) + "}",
        group_labels=group_labels, common_labels={}, common_annotations={},
        external_url=_AM_URL, truncated_alerts=0, alerts=(),
    )
    return template.subset(alerts)


def firing() -> Notification:
    """One critical HighCPU alert, firing."""
    return _group([_cpu("node-1", "critical", FIRING)], {"alertname": "HighCPU", "cluster": "prod-bj"})


def resolved() -> Notification:
    """The same alert, resolved 47 minutes later."""
    return _group([_cpu("node-1", "critical", RESOLVED)], {"alertname": "HighCPU", "cluster": "prod-bj"})


def mixed() -> Notification:
    """A firing group holding one resolved and one firing alert, resolved first as Alertmanager sent it."""
    return _group(
        [_cpu("node-1", "critical", RESOLVED), _cpu("node-2", "warning", FIRING)],
        {"alertname": "HighCPU", "cluster": "prod-bj"},
    )


def fifty() -> Notification:
    """Fifty DiskWillFillIn4Hours alerts of one group: 45 firing, 5 resolved."""
    alerts = []
    for i in range(1, 51):
        node = f"node-{i:02d}"
        labels = {"alertname": "DiskWillFillIn4Hours", "cluster": "prod-sh", "device": "/dev/nvme0n1p1",
                  "instance": f"{node}:9100", "job": "node", "mountpoint": "/var/lib/docker",
                  "severity": "critical" if i % 10 == 0 else "warning", "team": "storage"}
        annotations = {"summary": f"Filesystem /var/lib/docker on {node} will be full within 4 hours",
                       "description": f"Only {30 - i % 25}% space left and falling at the current write rate.",
                       "runbook_url": "https://runbooks.example.com/node/NodeFilesystemSpaceFillingUp"}
        status = RESOLVED if i % 10 == 5 else FIRING
        alerts.append(_alert(status, labels, annotations, started=timedelta(minutes=-i),
                             ended=timedelta(minutes=3) if status == RESOLVED else None,
                             expr=f"predict_linear%28node_filesystem_avail_bytes%7Binstance%3D%22{node}%3A9100%22%7D%5B6h%5D%2C4%2A3600%29%3C0"))
    return _group(alerts, {"alertname": "DiskWillFillIn4Hours"}, receiver="feishu-storage")


def grafana() -> Notification:
    """A Grafana unified-alerting group with its extras: silence, dashboard and panel links, values."""
    def one(zone: str, value: float) -> Alert:
        labels = {"alertname": "High memory usage", "grafana_folder": "Infrastructure", "severity": "warning",
                  "team": "blue", "zone": zone}
        return _alert(
            FIRING, labels,
            {"summary": f"Memory usage is {value:.1f}% in zone {zone}",
             "description": "The system has high memory usage",
             "runbook_url": "https://runbooks.example.com/memory"},
            started=timedelta(minutes=-5),
            generator_url=f"{_GRAFANA_URL}/alerting/grafana/cdx8ta4pp1c00f/view?orgId=1",
            silence_url=(f"{_GRAFANA_URL}/alerting/silence/new?alertmanager=grafana"
                         f"&matcher=__alert_rule_uid__%3Dcdx8ta4pp1c00f&matcher=zone%3D{zone}&orgId=1"),
            dashboard_url=f"{_GRAFANA_URL}/d/rYdddlPWk?orgId=1&from=1795990930000&to=1795998130000",
            panel_url=f"{_GRAFANA_URL}/d/rYdddlPWk?orgId=1&from=1795990930000&to=1795998130000&viewPanel=12",
            values={"B": value, "C": 1.0},
            value_string=f"[ var='B' labels={{zone={zone}}} value={value} ], [ var='C' labels={{zone={zone}}} value=1 ]",
        )

    template = Notification(
        source="grafana", receiver="feishu-infra", status=FIRING,
        group_key='{}/{__grafana_receiver__="feishu-infra"}:{alertname="High memory usage", grafana_folder="Infrastructure"}',
        group_labels={"alertname": "High memory usage", "grafana_folder": "Infrastructure"},
        common_labels={}, common_annotations={}, external_url=f"{_GRAFANA_URL}/",
        truncated_alerts=0, alerts=(), title="[FIRING:2] High memory usage Infrastructure (warning blue)",
    )
    return template.subset([one("us-1", 91.37), one("eu-1", 88.02)])


def all_samples() -> dict[str, Notification]:
    """Every sample by name, in the order a preview lists them (built afresh on each call)."""
    return {f.__name__: f() for f in (firing, resolved, mixed, fifty, grafana)}
