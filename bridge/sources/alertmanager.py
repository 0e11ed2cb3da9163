"""Alertmanager's webhook body (version "4") into a Notification.

The wire format is Alertmanager's `template.Data` plus `version`, `groupKey` and
`truncatedAlerts` (notify/webhook/webhook.go). Every field Alertmanager always sends
is required; an alert's `fingerprint` may be missing (computed from its labels), and
keys we do not know are ignored, so `notification_reason` (v0.32+, kept in
`Notification.extra`) and `routeLabels` (v0.34+) are accepted.

Grafana's unified-alerting webhook is this same structure with extras, so the field
readers below (`core`, `alert_core`, `text`, `string_map`, ...) are shared with
`grafana.py`. Each names the JSON path of what it rejects, for example
`alerts[1].labels.severity: expected a string, got number`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, NoReturn, TypeVar

from bridge.errors import PayloadError
from bridge.model import FIRING, RESOLVED, Alert, Notification, fingerprint

SOURCE = "alertmanager"
VERSION = "4"

Path = tuple[str | int, ...]
T = TypeVar("T")

# Values quoted in an error message are cut here: a message names the problem,
# it does not echo a megabyte of payload back.
MAX_SHOWN = 80

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Go's time.RFC3339Nano as Alertmanager writes it; RFC 3339 allows lower-case t/z.
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))\Z",
    re.ASCII,
)
# Go's zero time.Time, which Alertmanager writes as endsAt of alerts still firing.
_GO_ZERO_TIME = datetime(1, 1, 1)
_QUOTED_META = re.compile(r"\\(.)", re.DOTALL)


def parse(payload: object) -> Notification:
    body = obj(payload, ())
    version = optional(body, "version", (), text)
    if version is not None and version != VERSION:
        fail(("version",), f'unsupported version {show(version)} (Alertmanager sends "{VERSION}")')
    reason = optional(body, "notification_reason", (), text)
    return Notification(
        source=SOURCE,
        **core(body, alert),
        extra={} if reason is None else {"notification_reason": reason},
    )


def core(body: Mapping[str, Any], read_alert: Callable[[object, Path], Alert]) -> dict[str, Any]:
    """Notification fields of `template.Data`, shared by Alertmanager and Grafana."""
    receiver = _unquote_meta(required(body, "receiver", (), text))
    group_status = required(body, "status", (), status)
    alerts = required(body, "alerts", (), alert_array)
    return {
        "receiver": receiver,
        "status": group_status,
        "alerts": tuple(read_alert(item, ("alerts", i)) for i, item in enumerate(alerts)),
        "group_labels": required(body, "groupLabels", (), string_map),
        "common_labels": required(body, "commonLabels", (), string_map),
        "common_annotations": required(body, "commonAnnotations", (), string_map),
        "external_url": required(body, "externalURL", (), text),
        "group_key": required(body, "groupKey", (), text),
        "truncated_alerts": optional(body, "truncatedAlerts", (), count) or 0,
    }


def alert(value: object, path: Path) -> Alert:
    return Alert(**alert_core(obj(value, path), path))


def alert_core(item: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Alert fields of `template.Alert`; the fingerprint is computed when missing or empty."""
    labels = required(item, "labels", path, string_map)
    return {
        "status": required(item, "status", path, status),
        "labels": labels,
        "annotations": required(item, "annotations", path, string_map),
        "starts_at": required(item, "startsAt", path, go_time),
        "ends_at": required(item, "endsAt", path, go_time),
        "generator_url": required(item, "generatorURL", path, text),
        "fingerprint": optional(item, "fingerprint", path, text) or fingerprint(labels),
    }


def alert_array(value: object, path: Path) -> list[Any]:
    if not isinstance(value, list):
        fail(path, f"expected an array, got {kind(value)}")
    if not value:
        fail(path, "expected at least one alert, got an empty array")
    return value


# --- field readers: (value, path) -> checked value, or PayloadError naming the path ---


def fail(path: Path, problem: str) -> NoReturn:
    raise PayloadError(f"{path_text(path)}: {problem}")


def required(body: Mapping[str, Any], key: str, path: Path, read: Callable[[Any, Path], T]) -> T:
    if key not in body:
        where = f"{path_text(path)}: " if path else ""
        raise PayloadError(f"{where}missing required field {show(key)}")
    return read(body[key], path + (key,))


def optional(body: Mapping[str, Any], key: str, path: Path, read: Callable[[Any, Path], T]) -> T | None:
    """The checked value, or None when the key is absent or null."""
    value = body.get(key)
    return None if value is None else read(value, path + (key,))


def obj(value: object, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(path, f"expected a JSON object, got {kind(value)}")
    for key in value:
        if not isinstance(key, str):
            fail(path, f"expected string keys, got {kind(key)}")
    return value


def text(value: object, path: Path) -> str:
    if not isinstance(value, str):
        fail(path, f"expected a string, got {kind(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # json.loads lets "\ud800" through; Go never sends it and UTF-8 cannot carry it.
        fail(path, f"not valid Unicode text (unpaired surrogate): {show(value)}")
    return value


def string_map(value: object, path: Path) -> dict[str, str]:
    """An object of string to string (labels, annotations)."""
    mapping = obj(value, path)
    for key in mapping:
        text(key, path)
    return {key: text(item, path + (key,)) for key, item in mapping.items()}


def status(value: object, path: Path) -> str:
    word = text(value, path)
    if word not in (FIRING, RESOLVED):
        fail(path, f'expected "{FIRING}" or "{RESOLVED}", got {show(word)}')
    return word


def count(value: object, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(path, f"expected an integer, got {kind(value)}")
    if value < 0:
        fail(path, "expected an integer >= 0, got a negative number")
    return value


def go_time(value: object, path: Path) -> datetime | None:
    """A Go RFC3339Nano time as an aware UTC datetime; Go's zero time is None.

    Nanoseconds are cut to Python's microseconds.
    """
    match = _RFC3339.match(text(value, path))
    if not match:
        fail(path, f"not an RFC 3339 time: {show(value)}")
    year, month, day, hour, minute, second, frac, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0)) * (-1 if sign == "-" else 1)
        if abs(offset) >= timedelta(hours=24) or int(off_m or 0) >= 60:
            raise ValueError("offset out of range")
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                         int((frac or "").ljust(6, "0")[:6]))
        utc = local - offset
    except (ValueError, OverflowError):
        fail(path, f"not an RFC 3339 time: {show(value)}")
    return None if utc == _GO_ZERO_TIME else utc.replace(tzinfo=timezone.utc)


# --- message helpers ---


def kind(value: object) -> str:
    """The JSON name of a value's type, as a user would write it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    names = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def show(value: str) -> str:
    """A string quoted for a message: JSON-escaped, cut at MAX_SHOWN characters."""
    if len(value) > MAX_SHOWN:
        value = value[: MAX_SHOWN - 1] + "…"
    quoted = json.dumps(value, ensure_ascii=False)
    return quoted.encode("utf-8", "backslashreplace").decode("utf-8")


def path_text(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENTIFIER.match(part) and len(part) <= MAX_SHOWN:
            out += f".{part}" if out else part
        else:
            out += f"[{show(part)}]"
    return out or "payload"


def _unquote_meta(receiver: str) -> str:
    # Alertmanager sends regexp.QuoteMeta(name) (template.Data), `feishu\.ops`
    # for a receiver named `feishu.ops`; routing wants the name.
    return _QUOTED_META.sub(r"\1", receiver)
