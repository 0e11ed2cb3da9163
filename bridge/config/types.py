"""The typed configuration: frozen objects, built once by the loader (bridge.config),
read by everything else. Nothing here reads YAML or reports problems.

`Route`, `MentionRule` and `MentionSettings` live here, not in routing or mentions,
because they carry settings the loader builds: routing (which walks the route tree) and
mentions (which resolves who is pinged) sit one layer up and import them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol
from zoneinfo import ZoneInfo

from ..limits import RATE_PER_MINUTE, RATE_PER_SECOND
from ..matchers import Matcher
from ..model import FIRING, Mention
from ..secret import DSN, Secret, WebhookURL

# The largest body a real sender needs is about 3 MiB (1000 alerts of one group with long
# annotations; bench/big_bodies.py): 5 MiB leaves room, and every MiB of body costs the
# worker several MiB to decode and, at send time, to render (README, "Memory").
DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_STORAGE_PATH = "feishu-alert-bridge-outbox.db"
DEFAULT_PG_SCHEMA = "feishu_bridge"
DEFAULT_PG_POOL = 4
# storage.sync: "always" (every accepted webhook on disk before its 200) or "interval" (in
# the operating system before its 200, on disk within storage.sync_interval).
SYNC_MODES = ("always", "interval")
DEFAULT_SYNC_INTERVAL = 0.2
# Between names in a label value, besides whitespace: ASCII and full-width commas and
# semicolons, and the ideographic enumeration comma that Chinese lists use (张三、李四).
# config.bots.USER_NAME keeps them out of the names in users:.
NAME_SEPARATORS = ",;，、；"


@dataclass(frozen=True)
class MentionRule:
    """A bot's or route's `mentions:`: who is pinged, and for which alerts.

    `users` were resolved through the `users:` directory when the config loaded: each is
    an open_id, with the directory name when it was given by name. `matchers` (all must
    match the alert's labels) limit this rule only, not `mention_labels`.
    """

    all: bool = False
    users: tuple[Mention, ...] = ()
    matchers: tuple[Matcher, ...] = ()

    def applies(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


class MentionSettings(Protocol):
    """What a bot (Bot) and a route (Route) both carry."""

    mentions: MentionRule
    mention_labels: tuple[str, ...]
    mention_on: frozenset[str]
    send_resolved: bool


@dataclass(frozen=True)
class Route:
    """One node of the route tree (Alertmanager's dispatch/route.go; bridge.routing walks it).

    Inheritance is Alertmanager's: a setting a route does not set is its parent's. The
    loader (bridge.config.routes) applies it, so every node holds its effective values:
    `bots`, `mentions`, `mention_labels`, `mention_on` and `send_resolved` are each
    inherited on their own; `matchers`, `continue_` and `routes` never are. A set value
    replaces the parent's, it is not merged with it (`mentions: {}` turns the parent's
    mentions off below this node). The root's unset values are the defaults below.
    """

    matchers: tuple[Matcher, ...] = ()
    bots: tuple[str, ...] = ()
    continue_: bool = False
    routes: tuple["Route", ...] = ()
    mentions: MentionRule = MentionRule()
    mention_labels: tuple[str, ...] = ()          # label/annotation names holding user names
    mention_on: frozenset[str] = frozenset({FIRING})   # alert statuses that mention at all
    send_resolved: bool = True


@dataclass(frozen=True)
class RateLimit:
    """Requests per bot; Feishu's own limits are the defaults (see bridge.limits)."""

    per_second: int = RATE_PER_SECOND
    per_minute: int = RATE_PER_MINUTE


# Feishu's Open API hosts by `apps[].domain` (feishu-app-protocol.md §1.2).
APP_DOMAINS: Mapping[str, str] = {"feishu": "https://open.feishu.cn", "lark": "https://open.larksuite.com"}
# What an app bot may buzz with (§5): in-app, SMS and phone urgent.
URGENT_KINDS = ("app", "sms", "phone")
# The state changes `thread_replies` may name (bridge.delivery.appbot words the replies).
THREAD_REPLIES = ("firing", "partly_resolved", "resolved")


@dataclass(frozen=True)
class App:
    """`apps:`: a Feishu self-built app (企业自建应用) whose bot app bots send as."""

    name: str
    app_id: str
    app_secret: Secret
    domain: str = "feishu"                   # feishu | lark
    base_url_override: str | None = None     # `base_url`: a private deployment, or a test's fake
    # Card callbacks over HTTP (POST /feishu/callback, feishu-app-protocol.md §6.4): the
    # console's Encrypt Key (decrypts and signs the body) and Verification Token.
    encrypt_key: Secret | None = None
    verification_token: Secret | None = None

    @property
    def base_url(self) -> str:
        return self.base_url_override or APP_DOMAINS[self.domain]


@dataclass(frozen=True)
class Urgent:
    """A bot's `urgent:`: 加急 for firing alerts matching all `matchers`, once per group firing.

    `users` are open_ids or emails (Mention.email), from the config; `mention_labels` name
    labels whose values list names from `users:`, as for mentions."""

    kind: str = "app"
    users: tuple[Mention, ...] = ()
    mention_labels: tuple[str, ...] = ()
    matchers: tuple[Matcher, ...] = ()

    def applies(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True)
class Bot:
    name: str
    webhook_url: WebhookURL | None = None    # None (and no app): a dry-run bot
    secret: Secret | None = None             # signature-verification secret
    keywords: tuple[str, ...] = ()
    template: str = "default"
    dry_run: bool = False
    proxy_url: Secret | None = None          # may carry proxy credentials
    connect_timeout: float = 5.0             # seconds
    read_timeout: float = 10.0               # seconds
    rate_limit: RateLimit = field(default_factory=RateLimit)
    timezone: ZoneInfo | None = None         # None: the top-level timezone
    # Who this bot's messages ping; the same settings as a route's (Route), but
    # never inherited: they apply on top of the matched routes' (bridge.mentions).
    mentions: MentionRule = MentionRule()
    mention_labels: tuple[str, ...] = ()
    mention_on: frozenset[str] = frozenset({FIRING})
    send_resolved: bool = True
    # An app bot (`app:` instead of webhook_url): it posts to `chat_id` as the app's bot,
    # and can update its card in place, reply in its thread and send urgent.
    app: App | None = None
    chat_id: str | None = None
    update_in_place: bool = True
    thread_replies: frozenset[str] = frozenset()
    urgent: Urgent | None = None

    @property
    def sends(self) -> bool:
        """False for a dry-run bot: it logs the message instead of sending it."""
        return (self.webhook_url is not None or self.app is not None) and not self.dry_run

    @property
    def is_app(self) -> bool:
        return self.app is not None
@dataclass(frozen=True)
class ServerConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # The most a client may take to send a whole request (head and body). Clients wait in
    # the worker's event loop, never in a handler thread (bridge/serving/worker.py); this
    # only bounds how long their bytes are kept. A webhook body arrives in milliseconds.
    read_timeout: float = DEFAULT_READ_TIMEOUT


@dataclass(frozen=True)
class PreviewConfig:
    enabled: bool = True                     # GET /preview, the template preview page


@dataclass(frozen=True)
class PostgresConfig:
    """`storage.postgres`: one database shared by every replica."""

    dsn: DSN                             # secret; shows without its password
    password: Secret | None = None       # from password_file, kept out of the DSN
    schema: str = DEFAULT_PG_SCHEMA      # created if missing; every table lives in it
    pool_size: int = DEFAULT_PG_POOL     # connections per worker process (plus one that listens)


@dataclass(frozen=True)
class StorageConfig:
    # The SQLite outbox. Relative paths resolve against the config file's directory
    # (the working directory for the embedded default). None with postgres.
    path: Path | None = Path(DEFAULT_STORAGE_PATH)
    postgres: PostgresConfig | None = None
    # "always": each 200 after its commit is on disk. "interval": after its commit reached
    # the operating system (it survives the bridge's crash, not the host's power loss),
    # on disk at most sync_interval later (SQLite; PostgreSQL's window is the server's).
    sync: str = "always"
    sync_interval: float = DEFAULT_SYNC_INTERVAL


@dataclass(frozen=True)
class DeliveryConfig:
    max_age: float = 3600.0          # retryable failures stop and dead-letter after this (seconds)
    dedupe_window: float = 600.0     # the same notification again within this is dropped
    coalesce: bool = True            # a newer message for a group supersedes a waiting older one
    backoff_base: float = 1.0        # first retry delay; doubles with jitter ...
    backoff_cap: float = 60.0        # ... up to this
    # After a request whose outcome is unknown (no answer: Feishu may have taken it, and may
    # still be working on it), the bridge assumes Feishu is done with it this much later: it
    # counts in the rate windows until then, and a custom bot (no idempotency key) sends it
    # again no sooner (bridge.delivery.outcomes).
    backoff_unknown: float = 60.0
    shutdown_grace: float = 10.0     # on SIGTERM, in-flight sends get this long


@dataclass(frozen=True)
class GrafanaHMAC:
    """Grafana's webhook HMAC (contact point "HMAC signature" settings)."""

    secret: Secret
    header: str = "X-Grafana-Alerting-Signature"   # Grafana's default header name
    timestamp_header: str | None = None            # Grafana has no default: set both sides alike
    max_skew: float = 300.0                        # older signed timestamps are refused as replays


@dataclass(frozen=True)
class AuthConfig:
    """Inbound authentication; everything None means off."""

    bearer_token: Secret | None = None
    basic_username: str | None = None
    basic_password: Secret | None = None
    grafana_hmac: GrafanaHMAC | None = None
    protect_operations: bool = False               # also guard /metrics and /-/* (off: probes work)

    @property
    def credentials_required(self) -> bool:
        return self.bearer_token is not None or self.basic_username is not None


@dataclass(frozen=True)
class RelayConfig:
    """`relay:`, POST /send/<bot> for cron jobs, CI and scripts. Off unless enabled, and the
    loader refuses it enabled without inbound auth: it posts into company chats."""

    enabled: bool = False
    bots: tuple[str, ...] = ()       # the bots it may post to; none listed: every bot

    def allows(self, bot: str) -> bool:
        return not self.bots or bot in self.bots


@dataclass(frozen=True)
class ReloadConfig:
    watch: bool = False              # reload when the config file changes on disk (a ConfigMap update)
    interval: float = 5.0            # how often the file is checked


@dataclass(frozen=True)
class LogConfig:
    format: str = "json"                           # json | text
    level: str = "info"


@dataclass(frozen=True)
class SilenceTarget:
    """`actions.alertmanagers[]`: where the bridge sends a silence for the notifications
    whose externalURL is `external_url` (often a public name it cannot reach), and how it
    authenticates there. `actions.grafana` is one too, for Grafana-managed alerts."""

    external_url: str
    url: str
    bearer_token: Secret | None = None
    basic_username: str | None = None
    basic_password: Secret | None = None


@dataclass(frozen=True)
class ActionsConfig:
    """`actions:`: Silence and Acknowledge buttons on app-bot cards (bridge.actions)."""

    enabled: bool = False
    silence_durations: tuple[tuple[str, float], ...] = (("1h", 3600.0), ("4h", 14400.0), ("24h", 86400.0))
    allowed_users: tuple[str, ...] = ()          # open_ids; empty: anyone in the chat
    alertmanagers: tuple[SilenceTarget, ...] = ()
    grafana: SilenceTarget | None = None
    timeout: float = 2.0                         # the Alertmanager call's deadline: Feishu waits 3 s


@dataclass(frozen=True)
class Config:
    bots: Mapping[str, Bot]
    route: Route
    templates_dir: Path | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    log: LogConfig = field(default_factory=LogConfig)
    reload: ReloadConfig = field(default_factory=ReloadConfig)
    preview: PreviewConfig = field(default_factory=PreviewConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    users: Mapping[str, str] = field(default_factory=dict)   # name -> open_id
    user_emails: Mapping[str, str] = field(default_factory=dict)   # name -> email (app bots resolve it)
    apps: Mapping[str, App] = field(default_factory=dict)
    actions: ActionsConfig = field(default_factory=ActionsConfig)
    source: str = "<embedded default>"       # where it was read from, for messages
    file_signature: tuple[int, int, int] | None = None   # the file as it was read, for reload

