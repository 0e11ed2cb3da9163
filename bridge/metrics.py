"""Every metric the bridge exports, defined in one place (names start with feishu_bridge_).

Labels are bot names, sources, outcomes, reasons and Feishu codes: never a webhook
URL, token or secret.

Under gunicorn several worker processes count, so prometheus_client runs in
multiprocess mode: `serve` points PROMETHEUS_MULTIPROC_DIR at an empty directory
before any worker starts, each process writes its values there, and a scrape sums
them (MultiProcessCollector). Outside gunicorn (tests, --dev) the metrics live on the
registry passed in, so two apps in one process never share counters.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Feishu answers within a few hundred ms when healthy; the top buckets catch timeouts.
SEND_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        # Longer than a function should be, on purpose: every metric the bridge exports is
        # declared here, one after the other, so that its names and labels are read in one place.
        # In multiprocess mode values go to files, and registering them with a registry
        # as well would report this process's share twice.
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = None if multiprocess() else self.registry
        self.notifications = Counter(
            "feishu_bridge_notifications_received_total",
            "Webhook requests received, by source and result (accepted, bad_request, unauthorized, "
            "unknown_bot, too_large, unsupported_media_type, not_stored, error).",
            ["source", "result"], registry=reg)
        self.relayed = Counter(
            "feishu_bridge_relay_messages_total",
            "Messages posted to /send/<bot>, by bot (empty for a bot the relay does not know) and result "
            "(accepted, duplicate, bad_request, unauthorized, unknown_bot, too_large, unsupported_media_type, "
            "not_stored, disabled, error).", ["bot", "result"], registry=reg)
        self.alerts_routed = Counter(
            "feishu_bridge_alerts_routed_total", "Alerts routed to each bot.", ["bot"], registry=reg)
        self.messages = Counter(
            "feishu_bridge_messages_total",
            "Send attempts by bot and outcome (sent, retry, permanent, dry_run).", ["bot", "outcome"], registry=reg)
        self.feishu_errors = Counter(
            "feishu_bridge_feishu_errors_total",
            "Feishu answers that were not success, by bot, reason and Feishu code (none when there was no "
            "code, e.g. a timeout).", ["bot", "reason", "code"], registry=reg)
        self.retries = Counter(
            "feishu_bridge_retries_total", "Messages scheduled for another attempt.", ["bot"], registry=reg)
        self.dead_letters = Counter(
            "feishu_bridge_dead_letters_total", "Messages given up on (permanent error or too old).",
            ["bot", "reason"], registry=reg)
        self.duplicates = Counter(
            "feishu_bridge_duplicates_dropped_total",
            "Notifications dropped as already seen within delivery.dedupe_window.", ["bot"], registry=reg)
        self.superseded = Counter(
            "feishu_bridge_messages_superseded_total",
            "Waiting messages replaced by a newer state of the same group.", ["bot"], registry=reg)
        # The pair gives the group commit's average size: stores / commits.
        self.outbox_stores = Counter(
            "feishu_bridge_outbox_stores_total",
            "Accepted notifications and relayed messages committed to the outbox.", registry=reg)
        self.outbox_commits = Counter(
            "feishu_bridge_outbox_commits_total",
            "Outbox transactions that committed them: concurrent stores of one process share one (SQLite).",
            registry=reg)
        self.send_seconds = Histogram(
            "feishu_bridge_send_duration_seconds", "Time of one request to Feishu.", ["bot"],
            buckets=SEND_BUCKETS, registry=reg)
        self.internal_errors = Counter(
            "feishu_bridge_internal_errors_total",
            "Failures of the bridge itself, by where they happened (record_send: a message went out but "
            "recording that failed, so its bot stopped sending; sender, watcher: a step that failed and "
            "is retried with backoff; render: rendering failed, not for an unreadable payload, and the "
            "message is retried with backoff). Any increase needs a look at the log.", ["where"], registry=reg)
        self.render_errors = Counter(
            "feishu_bridge_render_errors_total", "Template failures (the bot got the fallback card).",
            ["template"], registry=reg)
        # App bots (issue 13).
        self.app_cards = Counter(
            "feishu_bridge_app_cards_total",
            "App bots' card requests by bot, action (posted: a new card; updated: in place; stubbed: a part the "
            "group no longer needs) and outcome (sent, retry, permanent).", ["bot", "action", "outcome"],
            registry=reg)
        self.thread_replies = Counter(
            "feishu_bridge_thread_replies_total", "App bots' replies in a card's thread, by bot and reason (ok, or "
            "why not).", ["bot", "reason"], registry=reg)
        self.urgent = Counter(
            "feishu_bridge_urgent_total",
            "App bots' urgent (加急) calls by bot, kind (app, sms, phone) and reason (ok, users_not_in_chat, "
            "unknown_users, urgent_refused, urgent_unread_limit, urgent_quota, ...).", ["bot", "kind", "reason"],
            registry=reg)
        self.token_refreshes = Counter(
            "feishu_bridge_app_token_refreshes_total",
            "Access tokens fetched from Feishu, by app (a name from apps:) and result (ok, or the reason).",
            ["app", "result"], registry=reg)
        # Card actions (issue 14).
        self.card_actions = Counter(
            "feishu_bridge_card_actions_total",
            "Taps on app-bot cards' buttons and card callbacks, by action (silence, expire, ack; unknown when the "
            "callback was refused before its action was read) and result (ok, already, failed: Alertmanager or "
            "Grafana could not do it, denied: not allowed_users, forged: a button value not signed by the "
            "bridge, stale: a duration no longer configured, unknown_group, refused: the callback failed "
            "Feishu's verification, error).",
            ["action", "result"], registry=reg)
        # The long connection (`feishu-alert-bridge events`, issue 14): counted in that process,
        # on its own registry and its own /metrics (--metrics-port), never in the server's.
        self.long_connection_up = Gauge(
            "feishu_bridge_long_connection_up",
            "1 while the app's long connection to Feishu is open; 0 while it is down: reconnecting, or not yet "
            "open at start (Feishu unreachable, or refusing the app).", ["app"], registry=reg)
        self.long_connection_reconnects = Counter(
            "feishu_bridge_long_connection_reconnects_total",
            "Times the app's long connection was lost and the SDK set out to reconnect.", ["app"], registry=reg)
        self.reload_ok = Gauge(
            "feishu_bridge_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded in every worker.",
            registry=reg, multiprocess_mode="livemin")
        self.reload_time = Gauge(
            "feishu_bridge_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
            registry=reg, multiprocess_mode="livemax")
        # Metrics exist only once a configuration has loaded. Set at once: a booting worker's
        # gauge at its initial 0 would otherwise pull the livemin sum to 0 for a moment.
        self.reload_ok.set(1)
        self.reload_time.set_to_current_time()
        self._outbox: _OutboxCollector | None = None
        # labels() validates and locks on every call; the accept path counts twice per
        # request, so its children are kept (a dict read is atomic under the GIL).
        self._children: dict[tuple[object, tuple[str, ...]], object] = {}

    def notification(self, source: str, result: str) -> None:
        self._child(self.notifications, source, result).inc()

    def card_action(self, action: str, result: str) -> None:
        self._child(self.card_actions, action, result).inc()

    def relay(self, bot: str, result: str) -> None:
        self._child(self.relayed, bot, result).inc()

    def routed(self, bot: str, alerts: int) -> None:
        self._child(self.alerts_routed, bot).inc(alerts)

    def _child(self, metric, *labels: str):
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def watch_outbox(self, probe: Callable[[], Iterable[tuple[str, int, float]] | None]) -> None:
        """`probe()` yields (bot, depth, oldest_age_seconds), read from the outbox at scrape
        time, or returns None when the outbox could not be read."""
        self._outbox = _OutboxCollector(probe)
        if not multiprocess():
            self.registry.register(self._outbox)

    def scrape(self) -> bytes:
        if not multiprocess():
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        if self._outbox is not None:
            registry.register(self._outbox)
        return generate_latest(registry)


class _OutboxCollector:
    """Outbox depth and age come from the shared store itself, so every worker reports the
    same truth however many processes there are.

    When the outbox cannot be read there is no depth to report, and alerts on depth and
    age would go quiet exactly when storage breaks: outbox_up says so instead."""

    def __init__(self, probe: Callable[[], Iterable[tuple[str, int, float]] | None]):
        self._probe = probe

    def collect(self):
        depth = GaugeMetricFamily("feishu_bridge_outbox_depth", "Messages waiting to be sent, per bot.",
                                  labels=["bot"])
        age = GaugeMetricFamily("feishu_bridge_outbox_oldest_age_seconds",
                                "Age of the oldest message waiting, per bot (0 when none).", labels=["bot"])
        rows = self._probe()
        up = GaugeMetricFamily("feishu_bridge_outbox_up",
                               "1 if this scrape could read the outbox, 0 if not (then depth and age are "
                               "missing).", value=0 if rows is None else 1)
        for bot, count, oldest in rows or ():
            depth.add_metric([bot], count)
            age.add_metric([bot], oldest)
        yield up
        yield depth
        yield age


def mark_process_dead(pid: int) -> None:
    """gunicorn's child_exit: drop a dead worker's live gauges from the sums."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)
