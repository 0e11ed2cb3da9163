"""The one alert model every source is parsed into.

Nothing after bridge/sources/ reads a raw payload: routing, rendering and delivery
see only these frozen objects. Times are timezone-aware UTC datetimes; an alert that
has not ended (Alertmanager's and Grafana's `0001-01-01T00:00:00Z`) has `ends_at`
None.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping

FIRING = "firing"
RESOLVED = "resolved"

# FNV-1a 64 constants, as in prometheus/common model/fnv.go.
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK64 = 0xFFFFFFFFFFFFFFFF


def fingerprint(labels: Mapping[str, str]) -> str:
    """Prometheus' label-set fingerprint: 16 lowercase hex digits.

    FNV-1a 64 over the sorted pairs written as `name 0xFF value 0xFF`
    (prometheus/common model/signature.go labelSetToFingerprint), so an alert we
    build ourselves (legacy Grafana) gets the id Alertmanager would give it.
    """
    data = b"".join([b"%b\xff%b\xff" % (name.encode(), labels[name].encode()) for name in sorted(labels)])
    whole = len(data) - len(data) % 4
    quads = iter(data[:whole])
    h = _FNV_OFFSET
    # Four bytes a step, masked once: the low 64 bits of a product or an XOR depend only on
    # the low 64 bits of the operands, and one mask instead of four is a quarter faster.
    for a, b, c, d in zip(quads, quads, quads, quads):
        h = ((((h ^ a) * _FNV_PRIME ^ b) * _FNV_PRIME ^ c) * _FNV_PRIME ^ d) * _FNV_PRIME & _MASK64
    for byte in data[whole:]:
        h = (h ^ byte) * _FNV_PRIME & _MASK64
    return f"{h:016x}"


@dataclass(frozen=True)
class Mention:
    """Someone a message pings (Feishu `<at id=...>`).

    `user_id` is an open_id ("ou_..."), or "all" for everyone in the chat. An empty
    `user_id` is a name from an alert's label that the `users:` directory does not
    know: shown as text, never a ping. Only config produces a non-empty user_id.
    """

    user_id: str
    name: str = ""
    # A person the directory knows by email only (`users: {alice: {email: ...}}`): only an
    # app bot's card can ping them (<at email=...>, feishu-app-protocol.md §8.2); elsewhere
    # the mention is shown as text, as an unknown name is.
    email: str = ""

    @property
    def pings(self) -> bool:
        return bool(self.user_id or self.email)


@dataclass(frozen=True)
class Alert:
    status: str                              # FIRING or RESOLVED
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None                 # None: not ended
    generator_url: str = ""                  # source link (Prometheus graph, Grafana rule)
    fingerprint: str = ""
    # Grafana's extras; empty when the source has none.
    silence_url: str = ""
    dashboard_url: str = ""
    panel_url: str = ""
    image_url: str = ""
    values: Mapping[str, float | None] | None = None
    value_string: str = ""
    # Who this alert pings on this bot: set by the pipeline from config (bridge.mentions)
    # just before rendering; () everywhere before that.
    mentions: tuple[Mention, ...] = ()

    @property
    def is_firing(self) -> bool:
        return self.status == FIRING


def _common(maps: list[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first, *rest = maps
    shared = first.items()
    for other in rest:   # set operations on item views: in C, not a lookup per pair in Python
        shared = shared & other.items()
    return {k: v for k, v in first.items() if (k, v) in shared}


@dataclass(frozen=True)
class Notification:
    source: str                              # "alertmanager" or "grafana"
    receiver: str
    status: str                              # FIRING if any alert fires, else RESOLVED
    group_key: str
    group_labels: Mapping[str, str]
    common_labels: Mapping[str, str]
    common_annotations: Mapping[str, str]
    external_url: str
    truncated_alerts: int
    alerts: tuple[Alert, ...]
    # Free text a source adds to the whole group (Grafana's `title`/`message`).
    title: str = ""
    message: str = ""
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.is_firing]

    @property
    def resolved(self) -> list[Alert]:
        return [a for a in self.alerts if not a.is_firing]

    def subset(self, alerts: list[Alert] | tuple[Alert, ...]) -> "Notification":
        """The same group holding only `alerts` (one bot's share, or one card's part).

        Status and the common labels and annotations are recomputed over the subset,
        as Alertmanager computes them over the alerts of the message it sends.
        """
        alerts = tuple(alerts)
        return replace(
            self,
            alerts=alerts,
            status=FIRING if any(a.is_firing for a in alerts) else RESOLVED,
            common_labels=_common([a.labels for a in alerts]),
            common_annotations=_common([a.annotations for a in alerts]),
        )


@dataclass(frozen=True)
class GroupFacts:
    """What an app bot's delivery knows of one message's alerts besides its cards (made by
    bridge.compose, used by bridge.delivery.appbot): which fire, when the group started
    and ended, and whom to buzz."""

    firing: tuple[str, ...] = ()          # fingerprints of the firing alerts, in order
    firing_names: tuple[str, ...] = ()    # their alertnames, in the same order
    started: datetime | None = None       # the earliest start of the message's alerts
    ended: datetime | None = None         # the latest end, when none fires any more
    urgent: tuple[Mention, ...] = ()      # whom to buzz: a firing alert matches the bot's urgent
    # With card actions on (bridge.actions): what the card's buttons act on and show (source,
    # external_url, matchers: the group's groupLabels; durations; zone), else None.
    actions: Mapping[str, Any] | None = None
