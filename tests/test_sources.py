"""bridge.sources: every real payload parses into the model; every bad one is a PayloadError naming its path.

The am025-* fixtures are raw captures from Alertmanager 0.25 (tests/fixtures/capture_alertmanager.py);
re-capturing changes their timestamps, which the expectations below pin.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import PayloadError
from bridge.model import FIRING, RESOLVED, Alert, Notification, fingerprint
from bridge.sources import SOURCES, alertmanager, grafana, parse

FIXTURES = Path(__file__).parent / "fixtures"
UTC = timezone.utc
DELETE = object()


def raw(source: str, name: str) -> bytes:
    return (FIXTURES / source / name).read_bytes()


def load(source: str, name: str) -> Any:
    return json.loads(raw(source, name))


def am(name: str) -> Notification:
    return parse("alertmanager", load("alertmanager", f"am025-{name}.json"))


def gf(name: str) -> Notification:
    return parse("grafana", load("grafana", f"grafana-{name}.json"))


def capture_script() -> Any:
    spec = importlib.util.spec_from_file_location("capture_alertmanager", FIXTURES / "capture_alertmanager.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- Alertmanager 0.25 captures ---


def test_captured_bodies_are_kept_byte_for_byte() -> None:
    body = raw("alertmanager", "am025-firing-single.json")
    assert body.endswith(b"}\n")                      # json.Encoder's newline
    assert b"\\u0026" in body                         # Go's HTML escaping of &
    assert b'"receiver":"feishu\\\\.ops"' in body     # regexp.QuoteMeta on the wire


def test_single_firing_alert() -> None:
    n = am("firing-single")
    assert (n.source, n.receiver, n.status) == ("alertmanager", "feishu.ops", FIRING)
    assert n.group_key == '{}:{alertname="MySQLReplicationLag", cluster="prod-sh"}'
    assert n.group_labels == {"alertname": "MySQLReplicationLag", "cluster": "prod-sh"}
    assert n.external_url == "http://alertmanager.test:9093"
    assert (n.truncated_alerts, n.extra, n.title, n.message) == (0, {}, "", "")
    (a,) = n.alerts
    # Sent as 2026-03-02T08:30:00.123456789+08:00: UTC, nanoseconds cut to microseconds.
    assert a.starts_at == at(2026, 3, 2, 0, 30, 0, 123456)
    assert a.starts_at.tzinfo == UTC
    assert a.ends_at is None                          # Go's zero time
    assert a.fingerprint == "7419bc0db6f7099a"
    assert a.annotations["summary"] == "复制延迟超过 300 秒"
    assert a.generator_url == "http://prometheus.test:9090/graph?g0.expr=mysql_slave_lag&g0.tab=1"
    assert (a.values, a.silence_url, a.value_string) == (None, "", "")


def test_group_of_two() -> None:
    n = am("firing-group2")
    assert [a.labels["instance"] for a in n.alerts] == ["node-1:9100", "node-2:9100"]
    assert [a.fingerprint for a in n.alerts] == ["3dca66ccb1e32b51", "1203a346fa1a43c7"]
    assert n.common_labels == {"alertname": "HighCPU", "cluster": "prod-bj", "job": "node", "team": "infra"}
    assert n.common_annotations == {}
    assert all(a.starts_at == at(2026, 11, 29, 3, 41, 32, 647137) and a.ends_at is None for a in n.alerts)


def test_resolved_single() -> None:
    n = am("resolved-single")
    assert n.status == RESOLVED
    (a,) = n.alerts
    assert a.status == RESOLVED
    assert a.ends_at == at(2026, 11, 29, 3, 41, 36, 149691)


def test_mixed_group_keeps_top_status_and_per_alert_status() -> None:
    n = am("mixed-resolved-firing")
    assert n.status == FIRING
    assert [a.status for a in n.alerts] == [RESOLVED, FIRING]
    assert n.alerts[0].ends_at == at(2026, 11, 29, 3, 41, 39, 650433)
    assert n.alerts[1].ends_at is None
    assert [a.labels["instance"] for a in n.resolved] == ["node-1:9100"]


def test_nasty_values_arrive_exactly_as_posted() -> None:
    posted = capture_script().NASTY
    (a,) = am("nasty").alerts
    assert a.labels == posted["labels"]
    assert a.annotations == posted["annotations"]
    assert "<at id=all></at>" in a.labels["note"] and "&b=2" in a.labels["note"]


@pytest.mark.parametrize("name", ["firing-single", "firing-group2", "resolved-single", "mixed-resolved-firing", "nasty"])
def test_our_fingerprint_matches_alertmanagers(name: str) -> None:
    payload = load("alertmanager", f"am025-{name}.json")
    for alert in payload["alerts"]:
        del alert["fingerprint"]
    computed = [a.fingerprint for a in parse("alertmanager", payload).alerts]
    assert computed == [a.fingerprint for a in am(name).alerts]


def test_newer_alertmanager_fields_are_accepted() -> None:
    n = parse("alertmanager", load("alertmanager", "alertmanager-resolved-transcribed.json"))
    assert n.extra == {"notification_reason": "unknown"}  # v0.32+; routeLabels (v0.34+) ignored
    assert (n.receiver, n.status, n.group_labels) == ("test_receiver", RESOLVED, {})
    assert n.alerts[0].ends_at == at(2020, 1, 1, 1, 0)


@pytest.mark.parametrize(("sent", "name"), [
    ("feishu\\.ops", "feishu.ops"),
    ("a\\+b\\(c\\)\\[d\\]\\{e\\}\\^\\$\\|\\*\\?", "a+b(c)[d]{e}^$|*?"),
    ("C:\\\\tmp", "C:\\tmp"),
    ("plain name", "plain name"),
])
def test_receiver_is_unquoted(sent: str, name: str) -> None:
    payload = load("alertmanager", "am025-firing-single.json")
    assert parse("alertmanager", {**payload, "receiver": sent}).receiver == name


def test_optional_alertmanager_fields() -> None:
    payload = load("alertmanager", "am025-firing-single.json")
    for key in ("version", "truncatedAlerts"):
        del payload[key]
    payload["alerts"][0]["fingerprint"] = ""
    payload["futureField"] = {"anything": [1, None]}
    n = parse("alertmanager", payload)
    assert n.truncated_alerts == 0
    assert n.alerts[0].fingerprint == "7419bc0db6f7099a"
    assert parse("alertmanager", {**payload, "truncatedAlerts": 3}).truncated_alerts == 3


@pytest.mark.parametrize(("sent", "expected"), [
    ("2026-03-02T08:30:00Z", at(2026, 3, 2, 8, 30)),
    ("2026-03-02t08:30:00.5z", at(2026, 3, 2, 8, 30, 0, 500000)),
    ("2026-03-02T08:30:00.000000001Z", at(2026, 3, 2, 8, 30)),
    ("2026-03-02T08:30:00.999999999-05:30", at(2026, 3, 2, 14, 0, 0, 999999)),
    ("2026-01-01T02:00:00+08:00", at(2025, 12, 31, 18, 0)),
    ("0001-01-01T00:00:00Z", None),
    ("0001-01-01T08:00:00+08:00", None),           # the same instant: Go's IsZero is true
])
def test_times(sent: str, expected: datetime | None) -> None:
    payload = load("alertmanager", "am025-firing-single.json")
    payload["alerts"][0]["startsAt"] = sent
    assert parse("alertmanager", payload).alerts[0].starts_at == expected


@pytest.mark.parametrize("sent", [
    "yesterday", "", "2026-03-02", "2026-03-02T08:30:00", "2026-03-02 08:30:00Z", "2026-02-30T00:00:00Z",
    "2026-03-02T24:00:00Z", "2026-03-02T23:59:60Z", "2026-03-02T08:30:00.1234567891Z", "2026-03-02T08:30:00.Z",
    "2026-03-02T08:30:00+24:00", "2026-03-02T08:30:00+08:60", "2026-03-02T08:30:00+0800", "0000-01-01T00:00:00Z",
    "0001-01-01T00:00:00+00:01", "9999-12-31T23:59:59-00:01", "２０２６-03-02T08:30:00Z", " 2026-03-02T08:30:00Z",
])
def test_bad_times(sent: str) -> None:
    payload = load("alertmanager", "am025-firing-single.json")
    payload["alerts"][0]["endsAt"] = sent
    with pytest.raises(PayloadError) as err:
        parse("alertmanager", payload)
    assert str(err.value) == f"alerts[0].endsAt: not an RFC 3339 time: {json.dumps(sent, ensure_ascii=False)}"


# --- Grafana unified alerting ---


def test_grafana_unified_docs_sample() -> None:
    n = gf("unified-firing-docs")
    assert (n.source, n.receiver, n.status, n.group_key) == ("grafana", "My Super Webhook", FIRING, "{}:{}")
    assert n.title == "[FIRING:2]  (blue)"
    assert n.message.startswith("**Firing**\n\nLabels:\n - alertname = T2")
    assert n.extra == {"grafana_state": "alerting", "org_id": "1"}
    a = n.alerts[0]
    assert a.starts_at == at(2021, 10, 12, 7, 51, 3, 157076)   # +02:00 in the body
    assert a.ends_at is None
    assert a.values == {"B": 44.23943737541908, "C": 1.0}
    assert a.silence_url.endswith("matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1")
    assert (a.dashboard_url, a.panel_url, a.value_string, a.image_url) == ("", "", "", "")


def test_grafana_unified_from_grafanas_test() -> None:
    n = gf("unified-firing")
    (a,) = n.alerts
    assert (n.group_key, n.title, n.message) == ("alertname", "[FIRING:1]  (val1)", "Custom message")
    assert n.group_labels == {"alertname": ""}
    assert (a.starts_at, a.ends_at, a.values) == (None, None, None)
    assert a.dashboard_url == "http://localhost/d/abcd?orgId=1"
    assert a.panel_url == "http://localhost/d/abcd?orgId=1&viewPanel=efgh"
    assert a.fingerprint == "fac0861a85de433a" == fingerprint(a.labels)


def test_grafana_unified_truncated() -> None:
    n = gf("unified-firing-truncated-transcribed")
    assert (n.truncated_alerts, len(n.alerts)) == (1, 2)


def test_grafana_unified_extras() -> None:
    payload = load("grafana", "grafana-unified-firing.json")
    payload["receiver"] = "team\\.db"
    payload["alerts"][0].update(imageURL="https://img.test/a.png", values={"A": None, "B": 3},
                                valueString="[ var='B' labels={} value=3 ]", ruleUID="abc")
    for key in ("version", "orgId", "state", "title", "message", "truncatedAlerts"):
        del payload[key]
    n = parse("grafana", payload)
    a = n.alerts[0]
    assert n.receiver == "team.db"
    assert (a.image_url, a.values, a.value_string) == ("https://img.test/a.png", {"A": None, "B": 3.0},
                                                       "[ var='B' labels={} value=3 ]")
    assert (n.title, n.message, n.extra, n.truncated_alerts) == ("", "", {}, 0)


# --- Grafana legacy alerting ---


def test_grafana_legacy_docs_sample() -> None:
    n = gf("legacy")
    (a,) = n.alerts
    assert (n.source, n.status, a.status) == ("grafana", FIRING, FIRING)
    assert a.labels == {"tag name": "tag value", "alertname": "Panel Title alert"}
    assert a.annotations == {"summary": "Panel Title alert", "description": "Notification Message"}
    assert a.fingerprint == fingerprint(a.labels)
    assert a.generator_url == ("http://localhost:3000/d/hZ7BuVbWz/test-dashboard?fullscreen&edit&tab=alert"
                               "&panelId=2&orgId=1")
    assert a.image_url == "https://grafana.com/assets/img/blog/mixed_styles.png"
    assert (a.values, a.value_string) == ({"Count": 1.0}, "[ metric='Count' labels={} value=1 ]")
    assert (a.starts_at, a.ends_at) == (None, None)
    assert n.group_key == "grafana-legacy/1/1"
    assert n.group_labels == {"alertname": "Panel Title alert"}
    assert (n.common_labels, n.common_annotations) == (a.labels, a.annotations)
    assert (n.title, n.message) == ("[Alerting] Panel Title alert", "Notification Message")
    assert n.extra == {"grafana_state": "alerting", "org_id": "1", "rule_id": "1", "dashboard_id": "1",
                       "panel_id": "2"}


def test_grafana_legacy_test_button() -> None:
    (a,) = gf("legacy-test-notification").alerts
    assert a.labels == {"alertname": "Test notification"}
    assert a.values == {"High value": 100.0, "Higher Value": 200.0}


@pytest.mark.parametrize(("state", "status"), [
    ("alerting", FIRING), ("no_data", FIRING), ("pending", FIRING), ("ok", RESOLVED), ("paused", RESOLVED),
])
def test_grafana_legacy_states(state: str, status: str) -> None:
    alerting = gf("legacy")
    n = parse("grafana", {**load("grafana", "grafana-legacy.json"), "state": state})
    assert (n.status, n.alerts[0].status, n.extra["grafana_state"]) == (status, status, state)
    # A rule's firing and resolved notifications must land on the same alert and route.
    assert n.alerts[0].fingerprint == alerting.alerts[0].fingerprint
    assert n.alerts[0].labels == alerting.alerts[0].labels


def test_grafana_4x_legacy_body() -> None:
    body = {"title": "[OK] Disk", "ruleId": 7, "ruleName": "Disk", "state": "ok", "message": "",
            "evalMatches": [{"metric": "sda", "value": None, "tags": {"host": "a", "dc": "bj"}}],
            "rule_url": "http://g.test/dashboard/db/x", "image_url": "http://g.test/render.png"}
    n = parse("grafana", body)
    (a,) = n.alerts
    assert (n.group_key, n.status) == ("grafana-legacy/0/7", RESOLVED)
    assert a.labels == {"alertname": "Disk"}
    assert a.annotations == {"summary": "Disk"}
    assert (a.generator_url, a.image_url) == ("http://g.test/dashboard/db/x", "http://g.test/render.png")
    assert a.values == {"sda": None}
    assert a.value_string == "[ metric='sda' labels={dc=bj, host=a} value=null ]"


def test_grafana_legacy_minimal_body() -> None:
    n = parse("grafana", {"ruleId": 3, "ruleName": "r", "state": "alerting", "tags": None, "evalMatches": None,
                          "tags2": "ignored"})
    assert (n.alerts[0].labels, n.alerts[0].values, n.title, n.message) == ({"alertname": "r"}, None, "", "")


# --- bad payloads ---


def holder(payload: Any, path: tuple) -> Any:
    """The object or array in payload that holds the value at `path` (under key path[-1])."""
    for key in path[:-1]:
        payload = payload[key]
    return payload


def mutated(source: str, name: str, path: tuple, value: object) -> Any:
    """The fixture with `value` set at `path` (DELETE removes the key)."""
    payload = load(source, name)
    target, last = holder(payload, path), path[-1]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return payload


AM_BASE = ("alertmanager", "am025-firing-group2.json")
GF_BASE = ("grafana", "grafana-unified-firing.json")
LEGACY_BASE = ("grafana", "grafana-legacy.json")
NOT_OBJECTS = [([], "array"), ("x", "string"), (None, "null"), (3, "number"), (True, "boolean"), (1.5, "number")]

BAD = [
    *[(AM_BASE, (), v, f"payload: expected a JSON object, got {k}") for v, k in NOT_OBJECTS],
    *[(AM_BASE, (key,), DELETE, f'missing required field "{key}"') for key in (
        "receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
        "groupKey")],
    (AM_BASE, ("receiver",), 1, "receiver: expected a string, got number"),
    (AM_BASE, ("status",), "pending", 'status: expected "firing" or "resolved", got "pending"'),
    (AM_BASE, ("status",), None, "status: expected a string, got null"),
    (AM_BASE, ("alerts",), {}, "alerts: expected an array, got object"),
    (AM_BASE, ("alerts",), [], "alerts: expected at least one alert, got an empty array"),
    (AM_BASE, ("alerts", 1), "x", "alerts[1]: expected a JSON object, got string"),
    (AM_BASE, ("groupLabels",), [], "groupLabels: expected a JSON object, got array"),
    (AM_BASE, ("commonLabels", "team"), 1, "commonLabels.team: expected a string, got number"),
    (AM_BASE, ("commonAnnotations",), None, "commonAnnotations: expected a JSON object, got null"),
    (AM_BASE, ("externalURL",), False, "externalURL: expected a string, got boolean"),
    (AM_BASE, ("groupKey",), ["k"], "groupKey: expected a string, got array"),
    (AM_BASE, ("version",), "5", 'version: unsupported version "5" (Alertmanager sends "4")'),
    (AM_BASE, ("version",), "1", 'version: unsupported version "1" (Alertmanager sends "4")'),
    (AM_BASE, ("version",), 4, "version: expected a string, got number"),
    (AM_BASE, ("truncatedAlerts",), -1, "truncatedAlerts: expected an integer >= 0, got a negative number"),
    (AM_BASE, ("truncatedAlerts",), "0", "truncatedAlerts: expected an integer, got string"),
    (AM_BASE, ("truncatedAlerts",), True, "truncatedAlerts: expected an integer, got boolean"),
    (AM_BASE, ("truncatedAlerts",), 1.5, "truncatedAlerts: expected an integer, got number"),
    (AM_BASE, ("notification_reason",), 3, "notification_reason: expected a string, got number"),
    *[(AM_BASE, ("alerts", 0, key), DELETE, f'alerts[0]: missing required field "{key}"') for key in (
        "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL")],
    (AM_BASE, ("alerts", 0, "status"), "silenced", 'alerts[0].status: expected "firing" or "resolved", got "silenced"'),
    (AM_BASE, ("alerts", 1, "labels", "severity"), 2, "alerts[1].labels.severity: expected a string, got number"),
    (AM_BASE, ("alerts", 0, "labels"), "a=b", "alerts[0].labels: expected a JSON object, got string"),
    (AM_BASE, ("alerts", 0, "labels", "a b"), None, 'alerts[0].labels["a b"]: expected a string, got null'),
    (AM_BASE, ("alerts", 0, "annotations", "summary"), ["x"], "alerts[0].annotations.summary: expected a string, "
                                                             "got array"),
    (AM_BASE, ("alerts", 0, "startsAt"), "yesterday", 'alerts[0].startsAt: not an RFC 3339 time: "yesterday"'),
    (AM_BASE, ("alerts", 0, "endsAt"), 0, "alerts[0].endsAt: expected a string, got number"),
    (AM_BASE, ("alerts", 0, "generatorURL"), {}, "alerts[0].generatorURL: expected a string, got object"),
    (AM_BASE, ("alerts", 0, "fingerprint"), 123, "alerts[0].fingerprint: expected a string, got number"),
    (AM_BASE, ("alerts", 0, "labels", "x"), "\ud800", 'alerts[0].labels.x: not valid Unicode text (unpaired '
                                                      'surrogate): "\\ud800"'),
    *[(GF_BASE, (), v, f"payload: expected a JSON object, got {k}") for v, k in NOT_OBJECTS],
    (GF_BASE, ("version",), "4", 'version: unsupported version "4" (Grafana sends "1")'),
    (GF_BASE, ("alerts",), DELETE, 'missing required field "alerts"'),
    (GF_BASE, ("groupKey",), DELETE, 'missing required field "groupKey"'),
    (GF_BASE, ("alerts", 0, "values"), "x", "alerts[0].values: expected a JSON object, got string"),
    (GF_BASE, ("alerts", 0, "values"), {"B": "1"}, "alerts[0].values.B: expected a number or null, got string"),
    (GF_BASE, ("alerts", 0, "values"), {"B": True}, "alerts[0].values.B: expected a number or null, got boolean"),
    (GF_BASE, ("alerts", 0, "values"), {"B": math.nan}, "alerts[0].values.B: expected a finite number, got nan"),
    (GF_BASE, ("alerts", 0, "values"), {"B": 10**400}, "alerts[0].values.B: expected a number or null, got an "
                                                       "integer too large for a float"),
    (GF_BASE, ("alerts", 0, "silenceURL"), 1, "alerts[0].silenceURL: expected a string, got number"),
    (GF_BASE, ("alerts", 0, "valueString"), [], "alerts[0].valueString: expected a string, got array"),
    (GF_BASE, ("alerts", 0, "startsAt"), "soon", 'alerts[0].startsAt: not an RFC 3339 time: "soon"'),
    (GF_BASE, ("orgId",), "1", "orgId: expected an integer, got string"),
    (GF_BASE, ("title",), 1, "title: expected a string, got number"),
    (GF_BASE, ("message",), [], "message: expected a string, got array"),
    (GF_BASE, ("state",), {}, "state: expected a string, got object"),
    (LEGACY_BASE, ("ruleName",), DELETE, 'missing required field "ruleName"'),
    (LEGACY_BASE, ("ruleId",), DELETE, 'missing required field "ruleId"'),
    (LEGACY_BASE, ("state",), DELETE, 'missing required field "state"'),
    (LEGACY_BASE, ("state",), "firing", 'state: expected one of "alerting", "no_data", "ok", "paused", '
                                        '"pending", got "firing"'),
    (LEGACY_BASE, ("ruleId",), "1", "ruleId: expected an integer, got string"),
    (LEGACY_BASE, ("ruleName",), None, "ruleName: expected a string, got null"),
    (LEGACY_BASE, ("orgId",), -1, "orgId: expected an integer >= 0, got a negative number"),
    (LEGACY_BASE, ("tags",), ["a"], "tags: expected a JSON object, got array"),
    (LEGACY_BASE, ("tags", "tag name"), 2, 'tags["tag name"]: expected a string, got number'),
    (LEGACY_BASE, ("evalMatches",), {}, "evalMatches: expected an array, got object"),
    (LEGACY_BASE, ("evalMatches", 0), "x", "evalMatches[0]: expected a JSON object, got string"),
    (LEGACY_BASE, ("evalMatches", 0, "value"), "1", "evalMatches[0].value: expected a number or null, got string"),
    (LEGACY_BASE, ("evalMatches", 0, "metric"), 1, "evalMatches[0].metric: expected a string, got number"),
    (LEGACY_BASE, ("evalMatches", 0, "tags"), {"host": 1}, "evalMatches[0].tags.host: expected a string, "
                                                            "got number"),
    (LEGACY_BASE, ("ruleUrl",), 1, "ruleUrl: expected a string, got number"),
    (LEGACY_BASE, ("imageUrl",), False, "imageUrl: expected a string, got boolean"),
    (LEGACY_BASE, ("dashboardId",), "1", "dashboardId: expected an integer, got string"),
]


@pytest.mark.parametrize(("base", "path", "value", "message"), BAD,
                         ids=[f"{b[1]}:{'.'.join(map(str, p)) or 'top'}={v!r:.20}" for b, p, v, _ in BAD])
def test_bad_payloads_name_the_field(base: tuple[str, str], path: tuple, value: object, message: str) -> None:
    payload = value if not path else mutated(*base, path, value)
    with pytest.raises(PayloadError) as err:
        parse(base[0], payload)
    assert str(err.value) == message


def test_grafana_body_of_neither_kind() -> None:
    with pytest.raises(PayloadError, match=r'^missing required field "alerts" \(unified alerting\) or '
                                           r'"ruleName" \(legacy alerting\)$'):
        parse("grafana", {"title": "hello"})


def test_huge_values_are_cut_in_messages() -> None:
    payload = mutated(*AM_BASE, ("alerts", 0, "startsAt"), "x" * 100_000)
    with pytest.raises(PayloadError) as err:
        parse("alertmanager", payload)
    assert len(str(err.value)) < 150
    assert str(err.value).endswith('"' + "x" * 79 + '…"')


def test_huge_keys_are_cut_in_paths() -> None:
    payload = mutated(*AM_BASE, ("alerts", 0, "labels", "k" * 10_000), 1)
    with pytest.raises(PayloadError) as err:
        parse("alertmanager", payload)
    assert len(str(err.value)) < 150


def test_each_source_rejects_the_others_body() -> None:
    with pytest.raises(PayloadError, match='^version: unsupported version "1"'):
        parse("alertmanager", load("grafana", "grafana-unified-firing.json"))
    with pytest.raises(PayloadError, match='^missing required field "receiver"$'):
        parse("alertmanager", load("grafana", "grafana-legacy.json"))
    with pytest.raises(PayloadError, match='^version: unsupported version "4"'):
        parse("grafana", load("alertmanager", "am025-firing-single.json"))


def test_dispatch() -> None:
    assert SOURCES == ("alertmanager", "grafana")
    body = load("alertmanager", "am025-firing-single.json")
    assert parse("alertmanager", body) == alertmanager.parse(body)
    assert parse("grafana", load("grafana", "grafana-legacy.json")).source == "grafana"
    with pytest.raises(PayloadError, match="unknown source 'nagios'"):
        parse("nagios", body)


# --- nothing but PayloadError, whatever arrives ---

TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\ud800", "\\", '"', "\n"]), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=16,
)
FIXTURE_BODIES = [
    (source, load(source, path.name))
    for source in SOURCES
    for path in sorted((FIXTURES / source).glob("*.json"))
    if not path.name.endswith("-headers.json")
]


def paths_in(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        found += paths_in(item, prefix + (key,))
    return found


def parses_or_refuses(parser: Any, payload: object) -> None:
    try:
        n = parser(payload)
    except PayloadError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert n.status in (FIRING, RESOLVED) and n.alerts
    for a in n.alerts:
        assert isinstance(a, Alert) and a.status in (FIRING, RESOLVED)
        assert isinstance(a.fingerprint, str) and a.fingerprint
        assert all(t is None or t.tzinfo == UTC for t in (a.starts_at, a.ends_at))


@settings(max_examples=300)
@given(JSON)
def test_arbitrary_json_is_parsed_or_refused(payload: object) -> None:
    parses_or_refuses(alertmanager.parse, payload)
    parses_or_refuses(grafana.parse, payload)


@settings(max_examples=400)
@given(st.data())
def test_fixtures_with_one_part_replaced_are_parsed_or_refused(data: st.DataObject) -> None:
    source, body = data.draw(st.sampled_from(FIXTURE_BODIES))
    payload = copy.deepcopy(body)
    path = data.draw(st.sampled_from(paths_in(payload)[1:]))
    target = holder(payload, path)
    if isinstance(target, dict) and data.draw(st.booleans()):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(JSON)
    parses_or_refuses(alertmanager.parse if source == "alertmanager" else grafana.parse, payload)


# --- the fast path agrees with the precise readers ---
# parse() tries fast_parse and falls back to precise_parse on any exception, so the fast
# path may refuse anything, but what it returns must be exactly what precise_parse returns.

PARSERS = {"alertmanager": alertmanager, "grafana": grafana}
UNIFIED_FIXTURES = {
    path.name: (source, load(source, path.name))
    for source in SOURCES
    for path in sorted((FIXTURES / source).glob("*.json"))
    if "alerts" in json.loads(path.read_bytes())
}
DIGIT = st.sampled_from("0123456789")


def two_digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map("{:02d}".format)


ZONES = st.sampled_from(["Z", "z", "", "+08:00"]) | st.builds(
    "{}{}:{}".format, st.sampled_from("+-"), two_digits(0, 25), two_digits(0, 61))
TIMES = st.builds(
    "{}-{}-{}{}{}:{}:{}{}{}".format,
    st.sampled_from(["0001", "2026", "9999", "0000"]) | st.text(DIGIT, min_size=4, max_size=4),
    two_digits(0, 13), two_digits(0, 32), st.sampled_from("TTTt _"),
    two_digits(0, 25), two_digits(0, 61), two_digits(0, 61),
    st.just("") | st.text(DIGIT, max_size=11).map(".{}".format), ZONES,
) | st.sampled_from([
    "0001-01-01T00:00:00Z", "0001-01-01T08:00:00+08:00", "0001-01-01T00:00:00.000Z", "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-00:01", "9999-12-31T23:59:59.999999999Z", "２０２６-03-02T08:30:00Z",
    "2026-03-02T08:30:00.Z", "2026-03-02T08:30:00,5Z", "+026-03-02T08:30:00Z", "2026-W10-1T08:30:00Z",
    "2026-03-02T08:30:00+08:00:00", "2026-03-02T08:30Z", "2026-03-02T08:30:00-00:00", "2026-03-02T08:30:00\nZ",
]) | TEXT
# Times as Go writes them: valid, any number of fraction digits, "Z" or an offset.
GO_TIMES = st.just("0001-01-01T00:00:00Z") | st.builds(
    "{}{}{}".format,
    st.datetimes(datetime(1, 1, 2), datetime(9999, 12, 30)).map(lambda moment: moment.isoformat(timespec="seconds")),
    st.just("") | st.text(DIGIT, min_size=1, max_size=9).map(".{}".format),
    st.just("Z") | st.builds("{}{}:{}".format, st.sampled_from("+-"), two_digits(0, 23), two_digits(0, 59)),
)
ODD_VALUES = [None, 0, 1, -1, False, True, 1.5, math.nan, 10**400, "", "x", "\ud800", "firing", "4", "1",
              "2026-03-02T08:30:00Z", [], ["x"], {}, {"x": 1}, DELETE]
REPLACEMENTS = JSON | TIMES | TEXT | st.sampled_from(ODD_VALUES[:-1])


def outcome(parser: Any, payload: object) -> tuple[str, str]:
    try:
        return "parsed", repr(parser(payload))
    except PayloadError as err:
        return "refused", str(err)


def agree(source: str, payload: object) -> None:
    module = PARSERS[source]
    expected = outcome(module.precise_parse, payload)
    assert outcome(module.parse, payload) == expected
    try:
        fast = module.fast_parse(payload)
    except Exception:
        return
    assert ("parsed", repr(fast)) == expected


@pytest.mark.parametrize(("source", "body"), UNIFIED_FIXTURES.values(), ids=UNIFIED_FIXTURES.keys())
def test_fast_path_takes_every_real_body(source: str, body: Any) -> None:
    # Were the fast path to refuse these, parse would still be right, only slow again.
    assert repr(PARSERS[source].fast_parse(body)) == repr(PARSERS[source].precise_parse(body))


def test_fast_constructors_build_what_init_builds() -> None:
    # Every field set, none to its default: a field added to the model fails here first.
    times = (at(2026, 1, 2), at(2026, 1, 3))
    args = (RESOLVED, {"a": "1"}, {"s": "x"}, *times, "g", "f", "s", "d", "p", "i", {"A": 1.0}, "vs")
    fast, slow = alertmanager.new_alert(*args), Alert(*args)
    assert (fast, repr(fast)) == (slow, repr(slow))
    assert list(vars(fast).items()) == list(vars(slow).items())
    args = ("grafana", "r", FIRING, "k", {"g": "1"}, {"c": "2"}, {"a": "3"}, "u", 2, (slow,), "t", "m")
    fast, slow = alertmanager.new_notification(*args, extra={"e": "4"}), Notification(*args, extra={"e": "4"})
    assert (fast, repr(fast)) == (slow, repr(slow))
    assert list(vars(fast).items()) == list(vars(slow).items())


def replaced(body: Any, path: tuple, value: object) -> Any:
    """A copy of body with `value` at `path` (DELETE removes the key)."""
    payload = copy.deepcopy(body)
    target, last = holder(payload, path), path[-1]
    if value is DELETE:
        if isinstance(target, dict):
            del target[last]
    else:
        target[last] = copy.deepcopy(value)
    return payload


@pytest.mark.parametrize("name", ["am025-firing-group2.json", "alertmanager-resolved-transcribed.json",
                                  "grafana-unified-firing-docs.json", "grafana-unified-firing.json"])
def test_fast_path_agrees_with_any_odd_value_anywhere(name: str) -> None:
    source, body = UNIFIED_FIXTURES[name]
    for path in paths_in(body)[1:]:
        for value in ODD_VALUES:
            agree(source, replaced(body, path, value))


@settings(max_examples=500)
@given(TIMES)
def test_fast_times_are_go_times(sent: str) -> None:
    try:
        expected = ("parsed", repr(alertmanager.go_time(sent, ("t",))))
    except PayloadError:
        expected = ("refused", "")
    try:
        fast = alertmanager.fast_time(sent)
    except Exception:
        return
    assert ("parsed", repr(fast)) == expected


@settings(max_examples=300)
@given(st.data())
def test_fast_path_agrees_on_fixtures_with_parts_replaced(data: st.DataObject) -> None:
    source, body = data.draw(st.sampled_from(FIXTURE_BODIES))
    payload = copy.deepcopy(body)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths_in(payload)[1:]))
        target = holder(payload, path)
        if isinstance(target, dict) and data.draw(st.booleans()):
            del target[path[-1]]
        elif isinstance(target, dict) and data.draw(st.booleans()):
            target[data.draw(TEXT)] = copy.deepcopy(data.draw(REPLACEMENTS))  # a key added
        else:
            # A copy: ODD_VALUES' lists and dicts must not change when a later step edits inside them.
            target[path[-1]] = copy.deepcopy(data.draw(REPLACEMENTS))
    agree(source, payload)


# Mostly valid bodies: what is wrong in them is rare, so the fast path gets to answer.
BODY_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from(["\\", '"', "\n"]), max_size=12)
LABELS = st.dictionaries(BODY_TEXT, BODY_TEXT, max_size=3)
OPTIONAL_TEXT = st.none() | BODY_TEXT
NUMBERS = st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [True, math.inf, math.nan, 10**400])
COUNTS = st.none() | st.integers(-1, 20)


ALERT = {
    "status": st.sampled_from([FIRING, RESOLVED]), "labels": LABELS, "annotations": LABELS,
    "startsAt": GO_TIMES, "endsAt": GO_TIMES, "generatorURL": BODY_TEXT,
}
GRAFANA_ALERT_EXTRAS = {
    "silenceURL": OPTIONAL_TEXT, "dashboardURL": OPTIONAL_TEXT, "panelURL": OPTIONAL_TEXT, "imageURL": OPTIONAL_TEXT,
    "valueString": OPTIONAL_TEXT, "values": st.none() | st.dictionaries(TEXT, NUMBERS, max_size=3),
}
CORE = {
    "receiver": BODY_TEXT | st.sampled_from(["feishu\\.ops", "a\\\\b\\"]),
    "status": st.sampled_from([FIRING, RESOLVED]),
    "groupLabels": LABELS, "commonLabels": LABELS, "commonAnnotations": LABELS, "externalURL": BODY_TEXT,
    "groupKey": BODY_TEXT,
}
AM_ALERTS = st.fixed_dictionaries(ALERT, optional={"fingerprint": OPTIONAL_TEXT})
GRAFANA_ALERTS = st.fixed_dictionaries(ALERT, optional={"fingerprint": OPTIONAL_TEXT, **GRAFANA_ALERT_EXTRAS})
AM_BODIES = st.fixed_dictionaries(
    {**CORE, "alerts": st.lists(AM_ALERTS, min_size=1, max_size=2)},
    optional={"version": st.sampled_from(["4", "4", "4", "1"]), "truncatedAlerts": COUNTS,
              "notification_reason": OPTIONAL_TEXT},
)
GRAFANA_BODIES = st.fixed_dictionaries(
    {**CORE, "alerts": st.lists(GRAFANA_ALERTS, min_size=1, max_size=2)},
    optional={"version": st.sampled_from(["1", "1", "1", "4"]), "truncatedAlerts": COUNTS,
              "orgId": COUNTS | st.just(True), "state": OPTIONAL_TEXT, "title": OPTIONAL_TEXT,
              "message": OPTIONAL_TEXT},
)


@settings(max_examples=100)
@given(st.tuples(st.just("alertmanager"), AM_BODIES) | st.tuples(st.just("grafana"), GRAFANA_BODIES))
def test_fast_path_agrees_on_generated_bodies(case: tuple[str, dict[str, Any]]) -> None:
    agree(*case)
