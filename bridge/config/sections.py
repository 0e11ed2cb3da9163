"""The other sections (templates_dir, server, delivery, auth, log, reload, preview, relay;
storage has its own module) and the check that every bot's template exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..secret import Secret
from ..template_files import template_names
from .reader import Reader
from .types import (AuthConfig, Bot, DeliveryConfig, GrafanaHMAC, LogConfig, PreviewConfig,
                    RelayConfig, ReloadConfig, ServerConfig)

_SERVER_KEYS = {"max_body_bytes", "read_timeout"}
_DELIVERY_KEYS = {"max_age", "dedupe_window", "coalesce", "backoff_base", "backoff_cap", "backoff_unknown",
                  "shutdown_grace"}
_AUTH_KEYS = {"bearer_token", "bearer_token_file", "basic", "grafana_hmac", "protect_operations"}
_BASIC_KEYS = {"username", "password", "password_file"}
_HMAC_KEYS = {"secret", "secret_file", "header", "timestamp_header", "max_skew"}
_LOG_KEYS = {"format", "level"}
_LOG_FORMATS = ("json", "text")
_LOG_LEVELS = ("debug", "info", "warning", "error")
_RELOAD_KEYS = {"watch", "interval"}
_PREVIEW_KEYS = {"enabled"}
_RELAY_KEYS = {"enabled", "bots"}


def read_templates_dir(r: Reader, raw: Any) -> Path | None:
    if raw is None:
        return None
    text = r.string(raw, "templates_dir")
    if text is None:
        return None
    directory = r.base_dir / text
    if not directory.is_dir():
        r.problem("templates_dir", f"{text} is not a directory")
        return None
    return directory


def check_templates(r: Reader, bots: Mapping[str, Bot], positions: Mapping[str, int],
                    templates_dir: Path | None) -> None:
    """Every bot's template is a shipped one or one in templates_dir; `positions` are the
    bots' indexes in the file."""
    names = template_names(templates_dir)
    for bot in bots.values():
        if bot.template not in names:
            r.problem(f"bots[{positions[bot.name]}].template", f"unknown template {bot.template!r} (known: {', '.join(sorted(names))})")


def read_preview(r: Reader, raw: Any) -> PreviewConfig:
    section, default = r.mapping(raw, "preview", _PREVIEW_KEYS), PreviewConfig()
    return PreviewConfig(enabled=r.boolean(section.get("enabled"), "preview.enabled", default.enabled))


def read_relay(r: Reader, raw: Any, bots: Mapping[str, Bot], auth: AuthConfig) -> RelayConfig:
    """`relay:`; enabled only with inbound credentials, and only naming bots that exist."""
    section, default = r.mapping(raw, "relay", _RELAY_KEYS), RelayConfig()
    enabled = r.boolean(section.get("enabled"), "relay.enabled", default.enabled)
    names = []
    for where, name in r.indexed_strings(section.get("bots"), "relay.bots"):
        if name in bots:
            names.append(name)
        elif bots:   # no bots at all is its own problem already
            r.problem(where, f"unknown bot {name!r} (known: {', '.join(sorted(bots))})")
    # The relay posts whatever it is given into company chats: never open by accident.
    # grafana_hmac does not count: it is checked on /grafana only.
    if enabled and not auth.credentials_required:
        r.problem("relay.enabled", "the relay posts into your group chats, so it needs inbound authentication: "
                                   "set auth.bearer_token or auth.basic (or turn the relay off)")
    return RelayConfig(enabled=enabled, bots=tuple(dict.fromkeys(names)))


def read_delivery(r: Reader, raw: Any) -> DeliveryConfig:
    s, d = r.mapping(raw, "delivery", _DELIVERY_KEYS), DeliveryConfig()
    config = DeliveryConfig(
        max_age=r.duration(s.get("max_age"), "delivery.max_age", d.max_age),
        dedupe_window=r.duration(s.get("dedupe_window"), "delivery.dedupe_window", d.dedupe_window),
        coalesce=r.boolean(s.get("coalesce"), "delivery.coalesce", d.coalesce),
        backoff_base=r.duration(s.get("backoff_base"), "delivery.backoff_base", d.backoff_base),
        backoff_cap=r.duration(s.get("backoff_cap"), "delivery.backoff_cap", d.backoff_cap),
        backoff_unknown=r.duration(s.get("backoff_unknown"), "delivery.backoff_unknown", d.backoff_unknown),
        shutdown_grace=r.duration(s.get("shutdown_grace"), "delivery.shutdown_grace", d.shutdown_grace),
    )
    if config.backoff_cap < config.backoff_base:
        r.problem("delivery.backoff_cap", "must not be smaller than delivery.backoff_base")
    return config


def read_auth(r: Reader, raw: Any) -> AuthConfig:
    section = r.mapping(raw, "auth", _AUTH_KEYS)
    token = r.secret_value(section, "bearer_token", "auth")
    if token == "":
        r.problem("auth.bearer_token", "is empty; remove the key to turn bearer auth off")
    username = password = None
    if section.get("basic") is not None:
        basic = r.mapping(section["basic"], "auth.basic", _BASIC_KEYS)
        username = r.string(basic.get("username"), "auth.basic.username") if "username" in basic else None
        password = r.secret_value(basic, "password", "auth.basic")
        if not username:
            r.problem("auth.basic.username", "required when auth.basic is set")
        if not password:
            r.problem("auth.basic.password", "required when auth.basic is set (or password_file)")
    return AuthConfig(
        bearer_token=Secret(token) if token else None,
        basic_username=username or None,
        basic_password=Secret(password) if password else None,
        grafana_hmac=_grafana_hmac(r, section.get("grafana_hmac")),
        protect_operations=r.boolean(section.get("protect_operations"), "auth.protect_operations", False),
    )


def _grafana_hmac(r: Reader, raw: Any) -> GrafanaHMAC | None:
    if raw is None:
        return None
    section = r.mapping(raw, "auth.grafana_hmac", _HMAC_KEYS)
    secret = r.secret_value(section, "secret", "auth.grafana_hmac")
    if not secret:
        r.problem("auth.grafana_hmac.secret", "required when auth.grafana_hmac is set (or secret_file)")
        return None
    default = GrafanaHMAC(secret=Secret(secret))
    header = r.string(section["header"], "auth.grafana_hmac.header") if "header" in section else None
    ts_header = (r.string(section["timestamp_header"], "auth.grafana_hmac.timestamp_header")
                 if section.get("timestamp_header") is not None else None)
    return GrafanaHMAC(
        secret=default.secret,
        header=header or default.header,
        timestamp_header=ts_header or None,
        max_skew=r.duration(section.get("max_skew"), "auth.grafana_hmac.max_skew", default.max_skew),
    )


def read_reload(r: Reader, raw: Any) -> ReloadConfig:
    section, default = r.mapping(raw, "reload", _RELOAD_KEYS), ReloadConfig()
    return ReloadConfig(
        watch=r.boolean(section.get("watch"), "reload.watch", default.watch),
        interval=r.duration(section.get("interval"), "reload.interval", default.interval),
    )


def read_log(r: Reader, raw: Any) -> LogConfig:
    section = r.mapping(raw, "log", _LOG_KEYS)
    config = LogConfig()
    fmt = r.string(section["format"], "log.format") if section.get("format") is not None else config.format
    level = r.string(section["level"], "log.level") if section.get("level") is not None else config.level
    if fmt is not None and fmt not in _LOG_FORMATS:
        r.problem("log.format", f"expected one of {', '.join(_LOG_FORMATS)}, got {fmt!r}")
    if level is not None and level.lower() not in _LOG_LEVELS:
        r.problem("log.level", f"expected one of {', '.join(_LOG_LEVELS)}, got {level!r}")
    return LogConfig(format=fmt if fmt in _LOG_FORMATS else config.format,
                     level=level.lower() if level and level.lower() in _LOG_LEVELS else config.level)


def read_server(r: Reader, raw: Any) -> ServerConfig:
    section, default = r.mapping(raw, "server", _SERVER_KEYS), ServerConfig()
    return ServerConfig(
        max_body_bytes=r.size(section.get("max_body_bytes"), "server.max_body_bytes", default.max_body_bytes),
        read_timeout=r.duration(section.get("read_timeout"), "server.read_timeout", default.read_timeout),
    )
