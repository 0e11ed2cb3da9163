"""Grafana's webhook bodies into a Notification: unified and legacy alerting.

`parse` tells the two apart by shape: a body with `alerts` or `version` is unified
alerting, one with `ruleName`, `ruleId` or `evalMatches` is legacy alerting.

Unified alerting (Grafana 8+, `version` "1", grafana/alerting receivers/webhook/v1)
is Alertmanager's core (see alertmanager.py, receiver unquoted the same way, since
Grafana builds it with Alertmanager's `template.Data`) plus, per alert, silenceURL,
dashboardURL, panelURL, imageURL, values (a map or null; each value a number or
null) and valueString, and at the top orgId, title, state and message. `title` and
`message` become Notification.title/.message; `state` and `orgId` go to
Notification.extra as "grafana_state" and "org_id". groupKey may be any string.

Legacy alerting (the pre-8 "old alerting" notifier, one rule per body) is mapped so
that templates written for Alertmanager work unchanged:

    labels        tags (strings; missing or null is {}) plus alertname = ruleName;
                  ruleName wins over a tag named "alertname"
    annotations   summary = ruleName (the title without its "[State] " prefix);
                  description = message, when non-empty
    status        alerting, no_data, pending -> firing; ok, paused -> resolved
    values        {evalMatches[].metric: value} (value may be null); None when no match
    value_string  "[ metric='Count' labels={host=a} value=1 ], ..." like unified valueString
    generator_url ruleUrl (rule_url in Grafana 4.x); image_url imageUrl (image_url)
    group_key     "grafana-legacy/<orgId>/<ruleId>"; orgId 0 when absent (Grafana 4.x)
    group_labels  {alertname}; common labels and annotations are the alert's own
    fingerprint   model.fingerprint(labels)
    starts_at, ends_at, receiver, external_url: empty, the body carries none of them
    title, message  as sent
    extra         grafana_state (the raw state), org_id, rule_id, dashboard_id, panel_id

The raw state is deliberately not a label: labels make the fingerprint and the
route, and a rule's `alerting` and `ok` notifications must share both.

Unified bodies take alertmanager.py's fast path first (see there); legacy bodies, one
alert each, always take the precise readers.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

from bridge.errors import PayloadError
from bridge.model import FIRING, RESOLVED, Alert, Notification, fingerprint
from bridge.sources.alertmanager import (
    Path,
    Unusual,
    alert_core,
    core,
    count,
    fail,
    fast_alert,
    fast_core,
    kind,
    new_notification,
    obj,
    optional,
    required,
    show,
    string_map,
    text,
)

SOURCE = "grafana"
VERSION = "1"

LEGACY_STATES = {
    "alerting": FIRING,
    "no_data": FIRING,
    "pending": FIRING,
    "ok": RESOLVED,
    "paused": RESOLVED,
}


# The optional strings of a unified alert, in new_alert's order ("" when absent or null).
_UNIFIED_ALERT_TEXTS = ("silenceURL", "dashboardURL", "panelURL", "imageURL", "valueString")


def parse(payload: object) -> Notification:
    try:
        return fast_parse(payload)
    except Exception:
        # Whatever the fast path does not take, valid or not, the precise readers decide.
        return precise_parse(payload)


def precise_parse(payload: object) -> Notification:
    body = obj(payload, ())
    if "alerts" in body or "version" in body:
        return parse_unified(body)
    if "ruleName" in body or "ruleId" in body or "evalMatches" in body:
        return parse_legacy(body)
    raise PayloadError('missing required field "alerts" (unified alerting) or "ruleName" (legacy alerting)')


def parse_unified(body: Mapping[str, Any]) -> Notification:
    version = optional(body, "version", (), text)
    if version is not None and version != VERSION:
        fail(("version",), f'unsupported version {show(version)} (Grafana sends "{VERSION}")')
    state = optional(body, "state", (), text)
    org_id = optional(body, "orgId", (), count)
    extra = {"grafana_state": state, "org_id": None if org_id is None else str(org_id)}
    return Notification(
        source=SOURCE,
        **core(body, _unified_alert),
        title=optional(body, "title", (), text) or "",
        message=optional(body, "message", (), text) or "",
        extra={k: v for k, v in extra.items() if v is not None},
    )


def _unified_alert(value: object, path: Path) -> Alert:
    item = obj(value, path)
    return Alert(
        **alert_core(item, path),
        silence_url=optional(item, "silenceURL", path, text) or "",
        dashboard_url=optional(item, "dashboardURL", path, text) or "",
        panel_url=optional(item, "panelURL", path, text) or "",
        image_url=optional(item, "imageURL", path, text) or "",
        values=optional(item, "values", path, _values),
        value_string=optional(item, "valueString", path, text) or "",
    )


def _values(value: object, path: Path) -> dict[str, float | None]:
    return {key: _number(item, path + (key,)) for key, item in obj(value, path).items()}


def _number(value: object, path: Path) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(path, f"expected a number or null, got {kind(value)}")
    try:
        number = float(value)
    except OverflowError:
        fail(path, "expected a number or null, got an integer too large for a float")
    if not math.isfinite(number):
        # Go's encoder cannot write NaN or Inf, and a card renderer could not either.
        fail(path, f"expected a finite number, got {number}")
    return number


def fast_parse(payload: object) -> Notification:
    """precise_parse(payload) for an ordinary unified body; raises on anything else."""
    if type(payload) is not dict:
        raise Unusual
    version = payload.get("version")
    state = payload.get("state")
    org_id = payload.get("orgId")
    title = payload.get("title")
    message = payload.get("message")
    if (version is not None and version != VERSION) or (
            org_id is not None and (type(org_id) is not int or org_id < 0)):
        raise Unusual
    title = "" if title is None else title
    message = "" if message is None else message
    texts: list[Iterable[object]] = [(title, message, "" if state is None else state)]
    extra = {} if state is None else {"grafana_state": state}
    if org_id is not None:
        extra["org_id"] = str(org_id)
    return new_notification(SOURCE, *fast_core(payload, _fast_unified_alert, texts), title, message, extra=extra)


def _fast_unified_alert(item: Any, texts: list[Iterable[object]]) -> Alert:
    if type(item) is not dict:
        raise Unusual
    silence, dashboard, panel, image, value_string = strings = tuple(
        ["" if value is None else value for value in map(item.get, _UNIFIED_ALERT_TEXTS)])
    values = item.get("values")
    if values is not None:
        texts.append(values)  # its keys must be strings (a surrogate in one sends it to _values)
        values = _fast_values(values)
    texts.append(strings)
    return fast_alert(item, texts, (silence, dashboard, panel, image, values, value_string))


def _fast_values(values: object) -> dict[str, float | None]:
    """_values(values) for an object of finite numbers and nulls; raises on anything else."""
    if type(values) is not dict:
        raise Unusual
    numbers = {}
    for key, value in values.items():
        if type(value) is float or type(value) is int:
            value = float(value)  # OverflowError for an integer too large
            if not math.isfinite(value):
                raise Unusual
        elif value is not None:
            raise Unusual
        numbers[key] = value
    return numbers


def parse_legacy(body: Mapping[str, Any]) -> Notification:
    rule_id = required(body, "ruleId", (), count)
    rule_name = required(body, "ruleName", (), text)
    state = required(body, "state", (), _legacy_state)
    org_id = optional(body, "orgId", (), count) or 0
    message = optional(body, "message", (), text) or ""
    labels = {**(optional(body, "tags", (), string_map) or {}), "alertname": rule_name}
    annotations = {"summary": rule_name, **({"description": message} if message else {})}
    values, value_string = _eval_matches(optional(body, "evalMatches", (), _list) or [])
    alert = Alert(
        status=LEGACY_STATES[state],
        labels=labels,
        annotations=annotations,
        starts_at=None,
        ends_at=None,
        generator_url=_either(body, "ruleUrl", "rule_url"),
        fingerprint=fingerprint(labels),
        image_url=_either(body, "imageUrl", "image_url"),
        values=values,
        value_string=value_string,
    )
    return Notification(
        source=SOURCE,
        receiver="",
        status=alert.status,
        group_key=f"grafana-legacy/{org_id}/{rule_id}",
        group_labels={"alertname": rule_name},
        common_labels=dict(labels),
        common_annotations=dict(annotations),
        external_url="",
        truncated_alerts=0,
        alerts=(alert,),
        title=optional(body, "title", (), text) or "",
        message=message,
        extra=_legacy_extra(body, state, org_id, rule_id),
    )


def _legacy_state(value: object, path: Path) -> str:
    state = text(value, path)
    if state not in LEGACY_STATES:
        expected = ", ".join(f'"{s}"' for s in sorted(LEGACY_STATES))
        fail(path, f"expected one of {expected}, got {show(state)}")
    return state


def _legacy_extra(body: Mapping[str, Any], state: str, org_id: int, rule_id: int) -> dict[str, str]:
    extra = {"grafana_state": state, "org_id": str(org_id), "rule_id": str(rule_id)}
    for key, name in (("dashboardId", "dashboard_id"), ("panelId", "panel_id")):
        number = optional(body, key, (), count)
        if number is not None:
            extra[name] = str(number)
    return extra


def _either(body: Mapping[str, Any], key: str, old_key: str) -> str:
    """A field Grafana 4.x sent in snake_case (rule_url, image_url); "" when absent."""
    if key in body:
        return optional(body, key, (), text) or ""
    return optional(body, old_key, (), text) or ""


def _list(value: object, path: Path) -> list[Any]:
    if not isinstance(value, list):
        fail(path, f"expected an array, got {kind(value)}")
    return value


def _eval_matches(matches: list[Any]) -> tuple[dict[str, float | None] | None, str]:
    values: dict[str, float | None] = {}
    shown = []
    for i, item in enumerate(matches):
        path: Path = ("evalMatches", i)
        match = obj(item, path)
        metric = optional(match, "metric", path, text) or ""
        value = _number(match.get("value"), path + ("value",))
        tags = optional(match, "tags", path, string_map) or {}
        values[metric] = value
        pairs = ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))
        shown.append(f"[ metric='{metric}' labels={{{pairs}}} value={_format(value)} ]")
    return (values or None), ", ".join(shown)


def _format(value: float | None) -> str:
    if value is None:
        return "null"
    return str(int(value)) if value.is_integer() else repr(value)
