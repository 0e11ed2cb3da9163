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

`parse` runs in the HTTP handler of every webhook, so it has two paths. `fast_parse`
takes an ordinary payload with cheap type checks and C-level helpers, and returns
exactly what `precise_parse` returns, or raises on anything it does not take, valid
or not. `precise_parse` (the field readers) is the authority: it decides what is
valid and names the path of the first problem. tests/test_sources.py checks that the
two agree, on the fixtures and on generated payloads both valid and invalid.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from itertools import chain
from typing import Any, Callable, Iterable, Mapping, NoReturn, TypeVar

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
    try:
        return fast_parse(payload)
    except Exception:
        # Whatever the fast path does not take, valid or not, the precise readers decide.
        return precise_parse(payload)


def precise_parse(payload: object) -> Notification:
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


# --- the fast path: precise_parse's result for an ordinary payload, or an exception ---

# The times fast_time takes: the shapes Go's RFC3339Nano writes, each digit as 0 (no
# fraction or 1 to 9 digits; "Z" or an offset). Anything else goes to go_time.
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0000000000")
_TIME_SHAPES = frozenset(
    b"0000-00-00T00:00:00" + fraction + zone
    for fraction in (b"", *(b"." + b"0" * digits for digits in range(1, 10)))
    for zone in (b"Z", b"+00:00", b"-00:00")
)
_GO_ZERO_TEXT = "0001-01-01T00:00:00Z"
_GO_ZERO_UTC = _GO_ZERO_TIME.replace(tzinfo=timezone.utc)
_new = object.__new__
_set = object.__setattr__


class Unusual(Exception):
    """The fast path does not take this payload: the precise readers will."""


def fast_parse(payload: object) -> Notification:
    """precise_parse(payload) for an ordinary payload; raises on anything else."""
    if type(payload) is not dict:
        raise Unusual
    version = payload.get("version")
    reason = payload.get("notification_reason")
    if version is not None and version != VERSION:
        raise Unusual
    texts: list[Iterable[object]] = [] if reason is None else [(reason,)]
    return new_notification(SOURCE, *fast_core(payload, fast_alert, texts),
                            extra={} if reason is None else {"notification_reason": reason})


def fast_core(body: dict[Any, Any], read_alert: Callable[[Any, list[Iterable[object]]], Alert],
              texts: list[Iterable[object]]) -> tuple[Any, ...]:
    """core(body) for an ordinary body, as new_notification's arguments after the source.

    `texts` holds groups of what must be strings: the caller's, then the body's and
    every alert's, all checked at once at the end (one join beats a check per field).
    """
    items = body["alerts"]
    status = body["status"]
    group_labels = body["groupLabels"]
    common_labels = body["commonLabels"]
    common_annotations = body["commonAnnotations"]
    receiver = body["receiver"]
    external_url = body["externalURL"]
    group_key = body["groupKey"]
    truncated = body.get("truncatedAlerts")
    if truncated is None:
        truncated = 0
    if (type(items) is not list or not items or (status != FIRING and status != RESOLVED)
            or type(truncated) is not int or truncated < 0 or type(group_labels) is not dict
            or type(common_labels) is not dict or type(common_annotations) is not dict):
        raise Unusual
    texts += (body, (receiver, external_url, group_key), group_labels, group_labels.values(), common_labels,
              common_labels.values(), common_annotations, common_annotations.values())
    alerts = tuple([read_alert(item, texts) for item in items])
    check_texts(texts)
    return (_unquote_meta(receiver) if "\\" in receiver else receiver, status, group_key, dict(group_labels),
            dict(common_labels), dict(common_annotations), external_url, truncated, alerts)


def fast_alert(item: Any, texts: list[Iterable[object]], extras: tuple[Any, ...] = ()) -> Alert:
    """alert(item) for an ordinary alert, its strings put in `texts`.

    `extras` are new_alert's arguments after the fingerprint (Grafana's).
    """
    if type(item) is not dict:
        raise Unusual
    status = item["status"]
    labels = item["labels"]
    annotations = item["annotations"]
    url = item["generatorURL"]
    sent = item.get("fingerprint")
    ends = item["endsAt"]
    if (status != FIRING and status != RESOLVED) or type(labels) is not dict or type(annotations) is not dict:
        raise Unusual
    if sent is None:
        sent = ""
    texts += (item, labels, labels.values(), annotations, annotations.values(), (url, sent))
    return new_alert(status, dict(labels), dict(annotations), fast_time(item["startsAt"]),
                     None if ends == _GO_ZERO_TEXT else fast_time(ends), url, sent or fingerprint(labels), *extras)


def fast_time(value: str) -> datetime | None:
    """go_time(value) for a time of one of _TIME_SHAPES; raises on anything else."""
    if value == _GO_ZERO_TEXT:
        return None
    if value.encode("ascii").translate(_DIGITS_TO_ZERO) not in _TIME_SHAPES:
        raise Unusual
    # In these shapes fromisoformat refuses what the regex's datetime() refuses (month 13,
    # hour 24, second 60, an offset of 24 h) and cuts nanoseconds the same way; "Z" gives
    # timezone.utc itself.
    moment = datetime.fromisoformat(value)
    if value[-1] != "Z":
        if value[-2] > "5":
            raise Unusual  # an offset of 60 minutes or more, which fromisoformat adds to the hours
        moment = moment.astimezone(timezone.utc)
    return None if moment == _GO_ZERO_UTC else moment


def check_texts(groups: list[Iterable[object]]) -> None:
    """Raises unless every item of every group is a str that UTF-8 can carry, as text() wants."""
    # One join is cheaper than a call per string (str.isascii), and raises TypeError for
    # anything not a str; isascii on the result is O(1), CPython keeps the flag.
    joined = "".join(chain.from_iterable(groups))
    if not joined.isascii():
        # UnicodeEncodeError for an unpaired surrogate. UTF-32 refuses exactly the code
        # points UTF-8 refuses (the 2048 surrogates), at twice the speed.
        joined.encode("utf-32")


def new_alert(status: str, labels: dict[str, str], annotations: dict[str, str], starts_at: datetime | None,
              ends_at: datetime | None, generator_url: str, fingerprint: str, silence_url: str = "",
              dashboard_url: str = "", panel_url: str = "", image_url: str = "",
              values: dict[str, float | None] | None = None, value_string: str = "") -> Alert:
    """Alert(...) without the frozen dataclass's __init__, whose object.__setattr__ per field
    is two thirds of the cost: the same instance, the same __dict__ in the same order.

    test_sources.py::test_fast_constructors_build_what_init_builds keeps this in step with model.Alert.
    """
    alert = _new(Alert)
    _set(alert, "__dict__", {
        "status": status, "labels": labels, "annotations": annotations, "starts_at": starts_at,
        "ends_at": ends_at, "generator_url": generator_url, "fingerprint": fingerprint,
        "silence_url": silence_url, "dashboard_url": dashboard_url, "panel_url": panel_url,
        "image_url": image_url, "values": values, "value_string": value_string, "mentions": (),
    })
    return alert


def new_notification(source: str, receiver: str, status: str, group_key: str, group_labels: dict[str, str],
                     common_labels: dict[str, str], common_annotations: dict[str, str], external_url: str,
                     truncated_alerts: int, alerts: tuple[Alert, ...], title: str = "", message: str = "", *,
                     extra: dict[str, str]) -> Notification:
    """Notification(...) the way new_alert makes an Alert, and for the same reason."""
    notification = _new(Notification)
    _set(notification, "__dict__", {
        "source": source, "receiver": receiver, "status": status, "group_key": group_key,
        "group_labels": group_labels, "common_labels": common_labels, "common_annotations": common_annotations,
        "external_url": external_url, "truncated_alerts": truncated_alerts, "alerts": alerts, "title": title,
        "message": message, "extra": extra,
    })
    return notification
