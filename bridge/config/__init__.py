"""Configuration: YAML parsed once, at start-up, into typed frozen objects.

Every problem is collected and reported at once, each prefixed with its key path
(`route.routes[1].matchers[0]: ...`), so one run of `check-config` shows them all.
Nothing after this package reads a raw YAML dict.

Order of work: read YAML -> expand ${VAR} / ${VAR:-default} in every string ->
read *_file values -> build typed objects with defaults -> cross-check (bot names
used by routes, user names used by mentions, template names).

Where each part lives: types.py (the frozen objects everything else reads), reader.py
(the generic validating reader), bots.py (bots, the users directory, mention settings),
routes.py (the route tree), sections.py (the other sections, the template check); this
module reads the file and runs the sections.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping
from zoneinfo import ZoneInfo

import yaml

from ..errors import ConfigError
from .bots import _BOT_KEYS as _BOT_KEYS
from .apps import check_app_bots, read_apps
from .bots import read_bots, read_users
from .reader import Reader
from .routes import read_route
from .sections import _AUTH_KEYS as _AUTH_KEYS
from .sections import _DELIVERY_KEYS as _DELIVERY_KEYS
from .sections import _RELOAD_KEYS as _RELOAD_KEYS
from .sections import _SERVER_KEYS as _SERVER_KEYS
from .sections import _RELAY_KEYS as _RELAY_KEYS
from .sections import (check_templates, read_auth, read_delivery, read_log, read_preview, read_relay, read_reload,
                       read_server, read_templates_dir)
from .storage import read_storage
from .types import ActionsConfig  # MERGE-SHIM: replaced by feat/actions
from .types import (DEFAULT_MAX_BODY_BYTES, DEFAULT_STORAGE_PATH, NAME_SEPARATORS, THREAD_REPLIES, URGENT_KINDS, App,
                    AuthConfig, Bot, Config, DeliveryConfig, GrafanaHMAC, LogConfig, MentionRule, MentionSettings,
                    PostgresConfig, PreviewConfig, RateLimit, RelayConfig, ReloadConfig, Route, ServerConfig,
                    StorageConfig, Urgent)

__all__ = [
    "EMBEDDED_DEFAULT", "load", "loads", "file_signature",
    "DEFAULT_MAX_BODY_BYTES", "DEFAULT_STORAGE_PATH", "NAME_SEPARATORS", "THREAD_REPLIES", "URGENT_KINDS", "App",
    "AuthConfig", "Bot", "Config", "Urgent",
    "DeliveryConfig", "GrafanaHMAC", "LogConfig", "MentionRule", "MentionSettings", "PostgresConfig", "PreviewConfig",
    "RateLimit", "RelayConfig", "ReloadConfig", "Route", "ServerConfig", "StorageConfig",
]

# The configuration `feishu-alert-bridge serve` runs without --config: the example
# file, shipped inside the package (bridge/config.example.yaml links to it).
EMBEDDED_DEFAULT = Path(__file__).parent.parent / "config.example.yaml"

# The keys each section accepts; tests/test_helm.py checks the chart's values schema
# against _TOP_KEYS and the sections' sets imported above, so the chart offers every key.
_TOP_KEYS = {"bots", "route", "templates_dir", "timezone", "server", "storage", "delivery", "auth", "log",
             "reload", "preview", "users", "relay", "apps"}
_TOP_KEYS |= {"actions"}  # MERGE-SHIM: replaced by feat/actions


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
    reader = Reader(env=os.environ if env is None else env, base_dir=base_dir or Path.cwd())
    config = _config(reader, raw, source)
    if reader.problems:
        raise ConfigError(reader.problems)
    assert config is not None
    return config


def _config(r: Reader, raw: Any, source: str) -> Config | None:
    if raw is None:
        r.problem("", f"{source}: the config file is empty; it needs at least bots and route")
        return None
    top = r.mapping(raw, "", _TOP_KEYS)
    if not top and raw is not None and not isinstance(raw, dict):
        return None
    users = read_users(r, top.get("users"))
    apps, app_positions = read_apps(r, top.get("apps"))
    explicit: dict[str, set[str]] = {}
    bots, positions = read_bots(r, top.get("bots"), users, apps, explicit)
    check_app_bots(r, bots, positions, app_positions, explicit)
    route = read_route(r, top.get("route"), "route", parent=Route(), known=set(bots), users=users, root=True)
    templates_dir = read_templates_dir(r, top.get("templates_dir"))
    check_templates(r, bots, positions, templates_dir)
    config = Config(
        bots=bots,
        route=route,
        templates_dir=templates_dir,
        timezone=r.zone(top.get("timezone"), "timezone") or ZoneInfo("UTC"),
        server=read_server(r, top.get("server")),
        storage=read_storage(r, top.get("storage")),
        delivery=read_delivery(r, top.get("delivery")),
        auth=read_auth(r, top.get("auth")),
        log=read_log(r, top.get("log")),
        reload=read_reload(r, top.get("reload")),
        preview=read_preview(r, top.get("preview")),
        users=users.ids,
        user_emails=users.emails,
        apps=apps,
        source=source,
    )
    # Read last: whether the relay may be on depends on the auth section.
    return replace(config, relay=read_relay(r, top.get("relay"), bots, config.auth),
                   actions=_read_actions_shim(r, top.get("actions")))  # MERGE-SHIM: replaced by feat/actions


def _read_actions_shim(r: Reader, raw: Any) -> ActionsConfig:  # MERGE-SHIM: replaced by feat/actions
    section = r.mapping(raw, "actions", {"enabled"})  # MERGE-SHIM: replaced by feat/actions
    return ActionsConfig(r.boolean(section.get("enabled"), "actions.enabled", False))  # MERGE-SHIM: replaced by feat/actions
