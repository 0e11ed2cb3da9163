"""Configuration: YAML parsed once, at start-up, into typed frozen objects.

Every problem is collected and reported at once, each prefixed with its key path
(`route.routes[1].matchers[0]: ...`), so one run of `check-config` shows them all.
Nothing after this module reads a raw YAML dict.

Order of work: read YAML -> expand ${VAR} / ${VAR:-default} in every string ->
read *_file values -> build typed objects with defaults -> cross-check (bot names
used by routes, user names used by mentions, template names).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from .errors import ConfigError
from .limits import MAX_KEYWORDS, RATE_PER_MINUTE, RATE_PER_SECOND
from .mentions import NAME_SEPARATORS, MentionSettings
from .model import FIRING, RESOLVED, Mention
from .routing import Matcher, MatcherError, MentionRule, Route, parse_matchers
from .secret import Secret, WebhookURL
from .template_files import template_names

# The configuration `feishu-alert-bridge serve` runs without --config: the example
# file, shipped inside the package (bridge/config.example.yaml links to it).
EMBEDDED_DEFAULT = Path(__file__).with_name("config.example.yaml")

BOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_STORAGE_PATH = "feishu-alert-bridge-outbox.db"
# A Feishu open_id: "ou_" then letters and digits (protocols.md A.7; the guide's examples
# are ou_18eac8 and ou_xxxxxx, real ones are longer). The length is left to Feishu; this
# catches what custom bots refuse or cannot mean: emails, union_ids (on_...), spaces.
OPEN_ID = re.compile(r"^ou_[A-Za-z0-9]+$")
# A name in the users: directory. Label values list names separated by whitespace or
# mentions.NAME_SEPARATORS, with a leading "@" dropped, so a name holds none of those.
USER_NAME = re.compile(rf"^[^\s@{NAME_SEPARATORS}][^\s{NAME_SEPARATORS}]*$")
MENTION_STATUSES = (FIRING, RESOLVED)


@dataclass(frozen=True)
class RateLimit:
    """Requests per bot; Feishu's own limits are the defaults (see bridge.feishu)."""

    per_second: int = RATE_PER_SECOND
    per_minute: int = RATE_PER_MINUTE


@dataclass(frozen=True)
class Bot:
    name: str
    webhook_url: WebhookURL | None = None    # None: a dry-run bot
    secret: Secret | None = None             # signature-verification secret
    keywords: tuple[str, ...] = ()
    template: str = "default"
    dry_run: bool = False
    proxy_url: Secret | None = None          # may carry proxy credentials
    connect_timeout: float = 5.0             # seconds
    read_timeout: float = 10.0               # seconds
    rate_limit: RateLimit = field(default_factory=RateLimit)
    timezone: ZoneInfo | None = None         # None: the top-level timezone
    # Who this bot's messages ping; the same settings as a route's (routing.Route), but
    # never inherited: they apply on top of the matched routes' (bridge.mentions).
    mentions: MentionRule = MentionRule()
    mention_labels: tuple[str, ...] = ()
    mention_on: frozenset[str] = frozenset({FIRING})
    send_resolved: bool = True

    @property
    def sends(self) -> bool:
        """False for a dry-run bot: it logs the message instead of sending it."""
        return self.webhook_url is not None and not self.dry_run


@dataclass(frozen=True)
class ServerConfig:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


@dataclass(frozen=True)
class PreviewConfig:
    enabled: bool = True                     # GET /preview, the template preview page


@dataclass(frozen=True)
class StorageConfig:
    # The SQLite outbox. Relative paths resolve against the config file's directory
    # (the working directory for the embedded default).
    path: Path = Path(DEFAULT_STORAGE_PATH)


@dataclass(frozen=True)
class DeliveryConfig:
    max_age: float = 3600.0          # retryable failures stop and dead-letter after this (seconds)
    dedupe_window: float = 600.0     # the same notification again within this is dropped
    coalesce: bool = True            # a newer message for a group supersedes a waiting older one
    backoff_base: float = 1.0        # first retry delay; doubles with jitter ...
    backoff_cap: float = 60.0        # ... up to this
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
class ReloadConfig:
    watch: bool = False              # reload when the config file changes on disk (a ConfigMap update)
    interval: float = 5.0            # how often the file is checked


@dataclass(frozen=True)
class LogConfig:
    format: str = "json"                           # json | text
    level: str = "info"


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
    users: Mapping[str, str] = field(default_factory=dict)   # name -> open_id
    source: str = "<embedded default>"       # where it was read from, for messages
    file_signature: tuple[int, int, int] | None = None   # the file as it was read, for reload


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file (the embedded default when path is None)."""
    path = Path(path) if path is not None else EMBEDDED_DEFAULT
    try:
        signature = file_signature(path)  # before reading: a change after this is noticed later
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    if path == EMBEDDED_DEFAULT:
        # Relative paths in the embedded default mean the working directory: the
        # package's own directory may not be writable.
        return loads(text, env=env, source="<embedded default>", base_dir=Path.cwd())
    return replace(loads(text, env=env, source=str(path), base_dir=path.parent), file_signature=signature)


def file_signature(path: Path) -> tuple[int, int, int] | None:
    """What changes when the file does; stat() follows the symlinks a ConfigMap swaps."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def loads(text: str, *, env: Mapping[str, str] | None = None, source: str = "<string>",
          base_dir: Path | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}{where}: invalid YAML: {problem}") from None
    reader = _Reader(env=os.environ if env is None else env, base_dir=base_dir or Path.cwd())
    config = reader.config(raw, source)
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


# --- the reader: walks the raw tree, collecting problems with their key paths ----------

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|h|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_SIZE = re.compile(r"^(\d+)\s*(B|KB|KiB|MB|MiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2}

_TOP_KEYS = {"bots", "route", "templates_dir", "timezone", "server", "storage", "delivery", "auth", "log",
             "reload", "preview", "users"}
_PREVIEW_KEYS = {"enabled"}
_USER_KEYS = {"open_id"}
_MENTION_KEYS = {"all", "users", "matchers"}
_RELOAD_KEYS = {"watch", "interval"}
_AUTH_KEYS = {"bearer_token", "bearer_token_file", "basic", "grafana_hmac", "protect_operations"}
_BASIC_KEYS = {"username", "password", "password_file"}
_HMAC_KEYS = {"secret", "secret_file", "header", "timestamp_header", "max_skew"}
_LOG_KEYS = {"format", "level"}
_LOG_FORMATS = ("json", "text")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_BOT_KEYS = {"name", "webhook_url", "webhook_url_file", "secret", "secret_file", "keywords",
             "template", "dry_run", "proxy_url", "connect_timeout", "read_timeout", "rate_limit",
             "timezone", "mentions", "mention_labels", "mention_on", "send_resolved"}
_ROUTE_KEYS = {"bots", "matchers", "continue", "routes", "mentions", "mention_labels", "mention_on",
               "send_resolved"}
_SERVER_KEYS = {"max_body_bytes"}
_RATE_KEYS = {"per_second", "per_minute"}
_STORAGE_KEYS = {"path"}
_DELIVERY_KEYS = {"max_age", "dedupe_window", "coalesce", "backoff_base", "backoff_cap", "shutdown_grace"}


class _Reader:
    def __init__(self, env: Mapping[str, str], base_dir: Path):
        self.env = env
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.bot_index: dict[str, int] = {}
        self.users: dict[str, str] = {}
        self.broken_users: set[str] = set()     # named in users: but invalid; not "unknown" again

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    # -- generic pieces --

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = _closest(str(key), allowed)
                self.problem(_join(path, str(key)), "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))
        return value

    def string(self, value: Any, path: str) -> str | None:
        """A string scalar with ${VAR} expanded; None (and a problem) otherwise."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problem(path, f"expected a string, got {_kind(value)}")
            return None
        return self.expand(str(value), path)

    def expand(self, text: str, path: str) -> str | None:
        ok = True

        def substitute(m: re.Match[str]) -> str:
            nonlocal ok
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if default is not None:  # shell's ${VAR:-default}: unset or empty takes the default
                return self.env.get(name) or default
            if name in self.env:
                return self.env[name]
            ok = False
            self.problem(path, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
            return ""

        result = _VAR.sub(substitute, text)
        return result if ok else None

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, str):
            expanded = self.expand(value, path)
            if expanded is not None and expanded.lower() in ("true", "false"):
                return expanded.lower() == "true"
        if isinstance(value, bool):
            return value
        self.problem(path, f"expected true or false, got {value!r}")
        return default

    def duration(self, value: Any, path: str, default: float) -> float:
        """Seconds from `10s`, `1m30s`, `500ms` (Go/Alertmanager style) or a number of seconds."""
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        text = self.expand(value, path) if isinstance(value, str) else None
        if text is not None and _DURATION.match(text.strip()):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
            if seconds > 0:
                return seconds
        self.problem(path, f"expected a positive duration like 10s, 1m or 500ms, got {value!r}")
        return default

    def size(self, value: Any, path: str, default: int) -> int:
        if value is None:
            return default
        text = str(value).strip() if not isinstance(value, bool) else ""
        m = _SIZE.match(text)
        if m and int(m.group(1)) > 0:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
        self.problem(path, f"expected a size in bytes like 1048576 or 10MiB, got {value!r}")
        return default

    def string_list(self, value: Any, path: str) -> list[str]:
        return [text for _, text in self.indexed_strings(value, path)]

    def indexed_strings(self, value: Any, path: str) -> list[tuple[str, str]]:
        """(key path, string) for each item that is a string, so later problems name the
        item's real position even when an earlier one was rejected."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {_kind(value)}")
            return []
        items = [(f"{path}[{i}]", self.string(v, f"{path}[{i}]")) for i, v in enumerate(value)]
        return [(where, text) for where, text in items if text is not None]

    def secret_value(self, section: dict[str, Any], key: str, path: str) -> str | None:
        """`key` inline or `key_file` read from a file (Kubernetes secrets), never both."""
        inline, file_key = section.get(key), f"{key}_file"
        if inline is not None and section.get(file_key) is not None:
            self.problem(_join(path, key), f"set either {key} or {file_key}, not both")
            return None
        if section.get(file_key) is not None:
            file_path = self.string(section[file_key], _join(path, file_key))
            if file_path is None:
                return None
            target = self.base_dir / file_path
            try:
                return target.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problem(_join(path, file_key), f"cannot read {file_path}: {exc.strerror or exc}")
                return None
        if inline is None:
            return None
        return self.string(inline, _join(path, key))

    def http_url(self, value: str, path: str, *, show: Callable[[str], str]) -> bool:
        try:
            parts = urlsplit(value)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            ok = False
        if not ok:
            self.problem(path, f"expected an http(s) URL with a host, got {show(value)!r}")
        return ok

    # -- sections --

    def config(self, raw: Any, source: str) -> Config | None:
        if raw is None:
            self.problem("", f"{source}: the config file is empty; it needs at least bots and route")
            return None
        top = self.mapping(raw, "", _TOP_KEYS)
        if not top and raw is not None and not isinstance(raw, dict):
            return None
        self.users = self.user_directory(top.get("users"))
        bots = self.bots(top.get("bots"))
        route = self.route(top.get("route"), "route", parent=Route(), known=set(bots), root=True)
        templates_dir = self.templates_dir(top.get("templates_dir"))
        self.check_templates(bots, templates_dir)
        return Config(
            bots=bots,
            route=route,
            templates_dir=templates_dir,
            timezone=self.zone(top.get("timezone"), "timezone") or ZoneInfo("UTC"),
            server=self.server(top.get("server")),
            storage=self.storage(top.get("storage")),
            delivery=self.delivery(top.get("delivery")),
            auth=self.auth(top.get("auth")),
            log=self.log(top.get("log")),
            reload=self.reload(top.get("reload")),
            preview=self.preview(top.get("preview")),
            users=self.users,
            source=source,
        )

    def bots(self, raw: Any) -> dict[str, Bot]:
        if raw is None:
            self.problem("bots", "at least one bot is required")
            return {}
        if not isinstance(raw, list) or not raw:
            self.problem("bots", f"expected a non-empty list of bots, got {_kind(raw)}")
            return {}
        bots: dict[str, Bot] = {}
        first_seen: dict[str, int] = {}
        for i, item in enumerate(raw):
            bot = self.bot(item, f"bots[{i}]")
            if bot is None:
                continue
            if bot.name in first_seen:
                self.problem(f"bots[{i}].name", f"duplicate bot name {bot.name!r} (also bots[{first_seen[bot.name]}])")
                continue
            first_seen[bot.name] = i
            bots[bot.name] = bot
        self.bot_index = first_seen  # later checks name a bot by its position in the file
        return bots

    def bot(self, raw: Any, path: str) -> Bot | None:
        if not isinstance(raw, dict):
            self.problem(path, f"expected a mapping with at least a name, got {_kind(raw)}")
            return None
        section = self.mapping(raw, path, _BOT_KEYS)
        name = self.string(section.get("name"), f"{path}.name") if "name" in section else None
        if "name" not in section:
            self.problem(f"{path}.name", "required")
        elif name is not None and not BOT_NAME.match(name):
            self.problem(f"{path}.name", f"{name!r} is not a valid bot name (letters, digits, '_', '.', '-'; it is used in URLs)")
            name = None
        url = self.secret_value(section, "webhook_url", path)
        if url is not None and url != "":
            self.http_url(url, f"{path}.webhook_url", show=lambda u: str(WebhookURL(u)))
        secret = self.secret_value(section, "secret", path)
        proxy = self.string(section["proxy_url"], f"{path}.proxy_url") if section.get("proxy_url") is not None else None
        if proxy:
            self.http_url(proxy, f"{path}.proxy_url", show=lambda _: "<proxy url>")
        keywords = self.string_list(section.get("keywords"), f"{path}.keywords")
        if len(keywords) > MAX_KEYWORDS:
            self.problem(f"{path}.keywords", f"Feishu allows at most {MAX_KEYWORDS} keywords, got {len(keywords)}")
        if any(not k for k in keywords):
            self.problem(f"{path}.keywords", "keywords must not be empty strings")
        template = self.string(section.get("template", "default"), f"{path}.template") or "default"
        # Read even for a bot without a usable name, so that their problems show too.
        zone = self.zone(section.get("timezone"), f"{path}.timezone")
        mention_settings = self.mention_settings(section, path, inherited=Bot(name=""))  # the defaults
        if name is None:
            return None
        return Bot(
            name=name,
            webhook_url=WebhookURL(url) if url else None,
            secret=Secret(secret) if secret else None,
            keywords=tuple(keywords),
            template=template,
            dry_run=self.boolean(section.get("dry_run"), f"{path}.dry_run", False),
            proxy_url=Secret(proxy) if proxy else None,
            connect_timeout=self.duration(section.get("connect_timeout"), f"{path}.connect_timeout", 5.0),
            read_timeout=self.duration(section.get("read_timeout"), f"{path}.read_timeout", 10.0),
            rate_limit=self.rate_limit(section.get("rate_limit"), f"{path}.rate_limit"),
            timezone=zone,
            **mention_settings,
        )

    def rate_limit(self, raw: Any, path: str) -> RateLimit:
        section = self.mapping(raw, path, _RATE_KEYS)
        limit = RateLimit(
            per_second=self.positive_int(section.get("per_second"), f"{path}.per_second", RATE_PER_SECOND),
            per_minute=self.positive_int(section.get("per_minute"), f"{path}.per_minute", RATE_PER_MINUTE),
        )
        # Above Feishu's own limits every extra request would only earn a rate-limit answer.
        if limit.per_second > RATE_PER_SECOND:
            self.problem(f"{path}.per_second", f"Feishu allows at most {RATE_PER_SECOND} per second per bot")
        if limit.per_minute > RATE_PER_MINUTE:
            self.problem(f"{path}.per_minute", f"Feishu allows at most {RATE_PER_MINUTE} per minute per bot")
        return limit

    def route(self, raw: Any, path: str, *, parent: Route, known: set[str], root: bool = False) -> Route:
        if raw is None and root:
            self.problem(path, "required: the route tree's root names the bots alerts go to by default")
            return Route()
        section = self.mapping(raw, path, _ROUTE_KEYS)
        if root:
            for key in ("matchers", "continue"):
                if key in section:
                    self.problem(f"{path}.{key}", "not allowed on the root route (every alert enters at the root)")
        bots = parent.bots
        if section.get("bots") is not None:
            bots = tuple(self.string_list(section["bots"], f"{path}.bots"))
            for i, bot in enumerate(bots):
                if bot not in known and known:
                    self.problem(f"{path}.bots[{i}]", f"unknown bot {bot!r} (known: {', '.join(sorted(known))})")
        if root and not bots:
            self.problem(f"{path}.bots", "required on the root route: where alerts go when no child route matches")
        # Built before its children, which inherit from it; they are added afterwards.
        here = Route(
            matchers=self.matchers(section.get("matchers"), f"{path}.matchers"),
            bots=bots,
            continue_=False if root else self.boolean(section.get("continue"), f"{path}.continue", False),
            **self.mention_settings(section, path, inherited=parent),
        )
        children_raw = section.get("routes")
        if children_raw is not None and not isinstance(children_raw, list):
            self.problem(f"{path}.routes", f"expected a list of routes, got {_kind(children_raw)}")
        elif children_raw:
            children = tuple(self.route(child, f"{path}.routes[{i}]", parent=here, known=known)
                             for i, child in enumerate(children_raw))
            here = replace(here, routes=children)
        return here

    def matchers(self, raw: Any, path: str) -> tuple[Matcher, ...]:
        found: list[Matcher] = []
        for where, text in self.indexed_strings(raw, path):
            try:
                found.extend(parse_matchers(text))
            except MatcherError as exc:
                self.problem(where, str(exc))
        return tuple(found)

    # -- mentions: the users directory, and the settings bots and routes share --

    def user_directory(self, raw: Any) -> dict[str, str]:
        """`users:`: name -> open_id, each written `name: ou_...` or `name: {open_id: ou_...}`."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem("users", f"expected a mapping of names to open_ids, got {_kind(raw)}")
            return {}
        users: dict[str, str] = {}
        for key, value in raw.items():
            name = str(key)
            path = _join("users", name)
            if not USER_NAME.match(name) or OPEN_ID.match(name):
                self.problem(path, f"{name!r} is not usable as a name: no spaces, commas, semicolons or leading "
                                   "'@' (label values list names separated by those), and not an open_id")
                continue
            if isinstance(value, dict):
                section = self.mapping(value, path, _USER_KEYS)
                value, path = section.get("open_id"), f"{path}.open_id"
                if value is None:
                    self.problem(path, "required")
            open_id = self.open_id(value, path) if value is not None else None
            if open_id is None:
                self.broken_users.add(name)
            else:
                users[name] = open_id
        return users

    def open_id(self, value: Any, path: str) -> str | None:
        text = self.string(value, path)
        return text if text is not None and self.valid_open_id(text, path) else None

    def valid_open_id(self, text: str, path: str) -> bool:
        if OPEN_ID.match(text):
            return True
        hint = ""
        if "@" in text:
            hint = ": custom bots cannot mention by email"
        elif text.startswith("on_"):
            hint = ": that is a union_id, custom bots need the open_id"
        elif text.strip() != text:
            hint = ": remove the spaces"
        self.problem(path, f"{text!r} is not a Feishu open_id (ou_ then letters and digits){hint}")
        return False

    def mention_settings(self, section: dict[str, Any], path: str, inherited: MentionSettings) -> dict[str, Any]:
        """mentions, mention_labels, mention_on and send_resolved: as set here, else `inherited`'s."""
        def given(key: str) -> bool:
            return section.get(key) is not None

        return {
            "mentions": (self.mention_rule(section["mentions"], f"{path}.mentions") if given("mentions")
                         else inherited.mentions),
            "mention_labels": (self.label_names(section["mention_labels"], f"{path}.mention_labels")
                               if given("mention_labels") else inherited.mention_labels),
            "mention_on": (self.mention_on(section["mention_on"], f"{path}.mention_on") if given("mention_on")
                           else inherited.mention_on),
            "send_resolved": self.boolean(section.get("send_resolved"), f"{path}.send_resolved",
                                          inherited.send_resolved),
        }

    def mention_rule(self, raw: Any, path: str) -> MentionRule:
        section = self.mapping(raw, path, _MENTION_KEYS)
        users = [self.mention_user(entry, where) for where, entry in
                 self.indexed_strings(section.get("users"), f"{path}.users")]
        return MentionRule(
            all=self.boolean(section.get("all"), f"{path}.all", False),
            users=tuple(dict.fromkeys(u for u in users if u is not None)),
            matchers=self.matchers(section.get("matchers"), f"{path}.matchers"),
        )

    def mention_user(self, entry: str, path: str) -> Mention | None:
        """An open_id as it is, or a name looked up in users:."""
        if entry.startswith("ou_"):
            return Mention(entry) if self.valid_open_id(entry, path) else None
        if entry in self.users:
            return Mention(self.users[entry], entry)
        if entry in self.broken_users:
            return None  # its users: entry has its own problem
        if entry == "all":
            hint = "; to mention everyone, use all: true"
        elif "@" in entry:
            hint = "; custom bots cannot mention by email: add the person to users: with their open_id"
        else:
            close = _closest(entry, set(self.users))
            hint = f" (did you mean {close!r}?)" if close else ""
        self.problem(path, f"unknown user {entry!r}: not an open_id (ou_...) and not a name in users:{hint}")
        return None

    def label_names(self, raw: Any, path: str) -> tuple[str, ...]:
        names = []
        for where, name in self.indexed_strings(raw, path):
            if name:
                names.append(name)
            else:
                self.problem(where, "expected a label or annotation name, got an empty string")
        return tuple(dict.fromkeys(names))

    def mention_on(self, raw: Any, path: str) -> frozenset[str]:
        statuses = set()
        for where, status in self.indexed_strings(raw, path):
            if status in MENTION_STATUSES:
                statuses.add(status)
            else:
                self.problem(where, f"expected one of {', '.join(MENTION_STATUSES)}, got {status!r}")
        return frozenset(statuses)

    def templates_dir(self, raw: Any) -> Path | None:
        if raw is None:
            return None
        text = self.string(raw, "templates_dir")
        if text is None:
            return None
        directory = self.base_dir / text
        if not directory.is_dir():
            self.problem("templates_dir", f"{text} is not a directory")
            return None
        return directory

    def check_templates(self, bots: Mapping[str, Bot], templates_dir: Path | None) -> None:
        names = template_names(templates_dir)
        for bot in bots.values():
            if bot.template not in names:
                self.problem(f"bots[{self.bot_index[bot.name]}].template", f"unknown template {bot.template!r} (known: {', '.join(sorted(names))})")

    def zone(self, raw: Any, path: str) -> ZoneInfo | None:
        """An IANA time zone; None when unset (or wrong, with a problem: never a silent UTC)."""
        if raw is None:
            return None
        name = self.string(raw, path)
        if name is None:
            return None
        if not name.strip():
            self.problem(path, "is empty: give an IANA name like Asia/Shanghai or UTC, or remove the key")
            return None
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "Asia"
            self.problem(path, f"unknown time zone {name!r} (use an IANA name like Asia/Shanghai or UTC)")
            return None

    def preview(self, raw: Any) -> PreviewConfig:
        section, default = self.mapping(raw, "preview", _PREVIEW_KEYS), PreviewConfig()
        return PreviewConfig(enabled=self.boolean(section.get("enabled"), "preview.enabled", default.enabled))

    def storage(self, raw: Any) -> StorageConfig:
        section = self.mapping(raw, "storage", _STORAGE_KEYS)
        text = self.string(section["path"], "storage.path") if section.get("path") is not None else None
        return StorageConfig(path=self.base_dir / (text or DEFAULT_STORAGE_PATH))

    def delivery(self, raw: Any) -> DeliveryConfig:
        s, d = self.mapping(raw, "delivery", _DELIVERY_KEYS), DeliveryConfig()
        config = DeliveryConfig(
            max_age=self.duration(s.get("max_age"), "delivery.max_age", d.max_age),
            dedupe_window=self.duration(s.get("dedupe_window"), "delivery.dedupe_window", d.dedupe_window),
            coalesce=self.boolean(s.get("coalesce"), "delivery.coalesce", d.coalesce),
            backoff_base=self.duration(s.get("backoff_base"), "delivery.backoff_base", d.backoff_base),
            backoff_cap=self.duration(s.get("backoff_cap"), "delivery.backoff_cap", d.backoff_cap),
            shutdown_grace=self.duration(s.get("shutdown_grace"), "delivery.shutdown_grace", d.shutdown_grace),
        )
        if config.backoff_cap < config.backoff_base:
            self.problem("delivery.backoff_cap", "must not be smaller than delivery.backoff_base")
        return config

    def auth(self, raw: Any) -> AuthConfig:
        section = self.mapping(raw, "auth", _AUTH_KEYS)
        token = self.secret_value(section, "bearer_token", "auth")
        if token == "":
            self.problem("auth.bearer_token", "is empty; remove the key to turn bearer auth off")
        username = password = None
        if section.get("basic") is not None:
            basic = self.mapping(section["basic"], "auth.basic", _BASIC_KEYS)
            username = self.string(basic.get("username"), "auth.basic.username") if "username" in basic else None
            password = self.secret_value(basic, "password", "auth.basic")
            if not username:
                self.problem("auth.basic.username", "required when auth.basic is set")
            if not password:
                self.problem("auth.basic.password", "required when auth.basic is set (or password_file)")
        return AuthConfig(
            bearer_token=Secret(token) if token else None,
            basic_username=username or None,
            basic_password=Secret(password) if password else None,
            grafana_hmac=self.grafana_hmac(section.get("grafana_hmac")),
            protect_operations=self.boolean(section.get("protect_operations"), "auth.protect_operations", False),
        )

    def grafana_hmac(self, raw: Any) -> GrafanaHMAC | None:
        if raw is None:
            return None
        section = self.mapping(raw, "auth.grafana_hmac", _HMAC_KEYS)
        secret = self.secret_value(section, "secret", "auth.grafana_hmac")
        if not secret:
            self.problem("auth.grafana_hmac.secret", "required when auth.grafana_hmac is set (or secret_file)")
            return None
        default = GrafanaHMAC(secret=Secret(secret))
        header = self.string(section["header"], "auth.grafana_hmac.header") if "header" in section else None
        ts_header = (self.string(section["timestamp_header"], "auth.grafana_hmac.timestamp_header")
                     if section.get("timestamp_header") is not None else None)
        return GrafanaHMAC(
            secret=default.secret,
            header=header or default.header,
            timestamp_header=ts_header or None,
            max_skew=self.duration(section.get("max_skew"), "auth.grafana_hmac.max_skew", default.max_skew),
        )

    def reload(self, raw: Any) -> ReloadConfig:
        section, default = self.mapping(raw, "reload", _RELOAD_KEYS), ReloadConfig()
        return ReloadConfig(
            watch=self.boolean(section.get("watch"), "reload.watch", default.watch),
            interval=self.duration(section.get("interval"), "reload.interval", default.interval),
        )

    def log(self, raw: Any) -> LogConfig:
        section = self.mapping(raw, "log", _LOG_KEYS)
        config = LogConfig()
        fmt = self.string(section["format"], "log.format") if section.get("format") is not None else config.format
        level = self.string(section["level"], "log.level") if section.get("level") is not None else config.level
        if fmt is not None and fmt not in _LOG_FORMATS:
            self.problem("log.format", f"expected one of {', '.join(_LOG_FORMATS)}, got {fmt!r}")
        if level is not None and level.lower() not in _LOG_LEVELS:
            self.problem("log.level", f"expected one of {', '.join(_LOG_LEVELS)}, got {level!r}")
        return LogConfig(format=fmt if fmt in _LOG_FORMATS else config.format,
                         level=level.lower() if level and level.lower() in _LOG_LEVELS else config.level)

    def positive_int(self, value: Any, path: str, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        self.problem(path, f"expected a positive whole number, got {value!r}")
        return default

    def server(self, raw: Any) -> ServerConfig:
        section = self.mapping(raw, "server", _SERVER_KEYS)
        return ServerConfig(
            max_body_bytes=self.size(section.get("max_body_bytes"), "server.max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def _closest(key: str, allowed: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return matches[0] if matches else None
