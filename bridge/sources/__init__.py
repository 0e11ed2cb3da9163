"""Webhook sources: each turns its sender's JSON into the one alert model.

    parse("alertmanager", body) -> Notification      sources/alertmanager.py
    parse("grafana", body)      -> Notification      sources/grafana.py (unified and legacy)

The parsers are pure: the decoded JSON in, a Notification out, or a PayloadError whose
message names the JSON path of the first problem. Nothing after this package sees a
raw payload.
"""

from __future__ import annotations

from bridge.errors import PayloadError
from bridge.model import Notification
from bridge.sources import alertmanager, grafana

SOURCES = ("alertmanager", "grafana")


def guess(payload: object) -> str:
    """Which source sent `payload`, for tools given a body without its endpoint (the CLI's
    `render`, the preview): Grafana's unified body says version "1" (Alertmanager's says
    "4"), and its legacy one has ruleName and evalMatches."""
    if isinstance(payload, dict) and (payload.get("version") == "1" or "ruleName" in payload
                                      or "evalMatches" in payload):
        return "grafana"
    return "alertmanager"


def parse(source: str, payload: object) -> Notification:
    """Parse `payload` as sent by `source`, one of SOURCES."""
    if source == "alertmanager":
        return alertmanager.parse(payload)
    if source == "grafana":
        return grafana.parse(payload)
    raise PayloadError(f"unknown source {source!r} (expected one of {', '.join(SOURCES)})")
