"""What a card says about its group whatever the template: the title, the header colour by
severity, the source's name, and the plain fallback card sent when a template fails.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping
from zoneinfo import ZoneInfo

from ..model import FIRING, Alert, Notification
from .check import Measured, sized, survey
from .escape import md_escape, neutralise_mentions, plain
from .filters import format_time, mention_words, sorted_pairs, truncate_text, unique_mentions
from .state import Group

# Over this a header title is cut: Feishu shows one line of it anyway.
TITLE_MAX_CHARS = 200

# A header colour by `severity` label (lower-cased). Resolved is green; unknown is grey;
# a group shows its most severe firing alert.
SEVERITY_COLOURS: Mapping[str, str] = MappingProxyType({
    **dict.fromkeys(("critical", "crit", "page", "p0", "p1", "error", "err", "disaster",
                     "emergency", "emerg", "fatal", "high"), "red"),
    **dict.fromkeys(("warning", "warn", "p2", "average", "major", "medium"), "orange"),
    **dict.fromkeys(("info", "informational", "notice", "p3", "p4", "p5", "low", "minor"), "blue"),
})
_COLOUR_RANK = MappingProxyType({"red": 3, "orange": 2, "blue": 1, "grey": 0})

SOURCE_NAMES = MappingProxyType({"alertmanager": "Alertmanager", "grafana": "Grafana"})


def title_for(notification: Notification) -> str:
    """Alertmanager's default title: `[FIRING:2] HighCPU prod-bj (node infra)`.

    Status upper-cased, the firing count, the group labels' values (alertname first),
    then in parentheses the values of the common labels that are not group labels.
    Group labels with empty values (Grafana's `alertname: ""`) carry nothing and are
    skipped; with no group values left, the common values stand without parentheses.
    """
    status = notification.status.upper() + (f":{len(notification.firing)}" if notification.status == FIRING else "")
    grouped = {k: v for k, v in notification.group_labels.items() if v}
    words = [v for _, v in sorted_pairs(grouped)]
    rest = [v for k, v in sorted_pairs(notification.common_labels) if k not in grouped and v]
    if rest:
        words.append(f"({' '.join(rest)})" if words else " ".join(rest))
    title = " ".join([f"[{status}]", *words])
    return truncate_text(" ".join(title.split()), TITLE_MAX_CHARS)


def severity_colour(severity: str) -> str:
    return SEVERITY_COLOURS.get(severity.strip().lower(), "grey")


def header_colour(notification: Notification) -> str:
    """Green when resolved; else the colour of the most severe firing alert (red, orange, blue, grey)."""
    if notification.status != FIRING:
        return "green"
    # A few severities, however many alerts.
    severities = {a.labels.get("severity", "") for a in notification.alerts if a.is_firing}
    return max(map(severity_colour, severities), key=_COLOUR_RANK.__getitem__, default="grey")


def fallback_card(group: Group, alerts: list[Alert], part: str) -> Measured:
    """The plain card sent when a template fails: built here, so it cannot fail itself."""
    heading = neutralise_mentions(f"{group.title} (template error)" + (f" {part}" if part else ""))
    lines = [_fallback_line(a, group.state.zone) for a in alerts] or ["No alerts."]
    elements = [
        {"tag": "markdown", "content": "\n".join(lines)},
        {"tag": "markdown", "text_size": "notation",
         "content": "The card template failed, so the alerts are shown plainly; the bridge log says why."},
    ]
    card = plain({
        "schema": "2.0",
        "config": {"update_multi": True, "summary": {"content": heading}},
        "header": {"title": {"tag": "plain_text", "content": heading}, "template": "grey"},
        "body": {"elements": elements},
    })
    # Built here, after plain() neutralised every value's mentions: on-call is still pinged.
    pings = mention_words(unique_mentions(alerts), "card", str, md_escape)
    if pings:
        card["body"]["elements"].insert(1, {"tag": "markdown", "content": pings})
    message = {"msg_type": "interactive", "card": card}
    texts: list[str] | None = [] if group.bot.keywords else None
    body_tags, other_tags = survey(message, texts)
    return sized("fallback card", message, len(body_tags) + len(other_tags), texts, group.bot.keywords,
                 budget=group.budget)


def _fallback_line(alert: Alert, zone: ZoneInfo) -> str:
    shown = (alert.labels.get("alertname", ""), alert.labels.get("severity", ""),
             alert.labels.get("instance", ""), alert.annotations.get("summary", ""))
    text = " · ".join(md_escape(truncate_text(f, 200)) for f in shown if f)
    since = format_time(alert.starts_at, zone)
    icon = "🔴" if alert.is_firing else "✅"
    return f"{icon} **{'FIRING' if alert.is_firing else 'RESOLVED'}** {text}" + (f" · since {since}" if since else "")
