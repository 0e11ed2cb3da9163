"""`actions:`: the Silence and Acknowledge buttons of app-bot cards (bridge.actions).

    actions:
      enabled: true
      silence_durations: [1h, 4h, 24h]
      allowed_users: []            # open_ids or names from users:; empty: anyone in the chat
      alertmanagers:               # externalURL -> where the bridge reaches it, and how
        - {external_url: https://am.example.com, url: http://am:9093, bearer_token_file: ...}
      grafana: {url: http://grafana:3000, token_file: ...}
      timeout: 2s                  # the silence call's deadline (Feishu waits 3 s for the answer)
"""

from __future__ import annotations

from typing import Any, Mapping

from ..secret import Secret
from .reader import Reader, join
from .types import ActionsConfig, App, SilenceTarget

_ACTIONS_KEYS = {"enabled", "silence_durations", "allowed_users", "alertmanagers", "grafana", "timeout"}
_TARGET_KEYS = {"external_url", "url", "bearer_token", "bearer_token_file", "basic"}
_BASIC_KEYS = {"username", "password", "password_file"}
_GRAFANA_KEYS = {"url", "token", "token_file"}
# Feishu gives a callback 3 s (feishu-app-protocol.md §6.5); the answer needs some of them.
MAX_TIMEOUT = 2.5
MAX_DURATIONS = 5   # buttons in one row of a phone's card


def read_actions(r: Reader, raw: Any, ids: Mapping[str, str], apps: Mapping[str, App]) -> ActionsConfig:
    """`ids` are the users directory's open_ids by name (allowed_users may name them)."""
    section, default = r.mapping(raw, "actions", _ACTIONS_KEYS), ActionsConfig()
    enabled = r.boolean(section.get("enabled"), "actions.enabled", default.enabled)
    durations = default.silence_durations
    if section.get("silence_durations") is not None:
        durations = tuple((text, r.duration(text, where, 3600.0))
                          for where, text in r.indexed_strings(section["silence_durations"],
                                                               "actions.silence_durations"))
        if not durations:
            r.problem("actions.silence_durations", "lists no duration: give at least one, like [1h]")
        elif len(durations) > MAX_DURATIONS:
            r.problem("actions.silence_durations", f"at most {MAX_DURATIONS} durations (one row of buttons)")
    timeout = r.duration(section.get("timeout"), "actions.timeout", default.timeout)
    if timeout > MAX_TIMEOUT:
        r.problem("actions.timeout", f"at most {MAX_TIMEOUT:g}s: Feishu waits 3 s for the answer to a tap")
    if enabled and not apps:
        r.problem("actions.enabled", "card actions need an app bot: configure apps: and a bot with app:")
    return ActionsConfig(
        enabled=enabled, silence_durations=durations, timeout=timeout,
        allowed_users=_allowed(r, section.get("allowed_users"), ids),
        alertmanagers=tuple(t for t in (_target(r, item, f"actions.alertmanagers[{i}]") for i, item in
                                        enumerate(_list(r, section.get("alertmanagers"), "actions.alertmanagers")))
                            if t is not None),
        grafana=_grafana(r, section.get("grafana")),
    )


def _list(r: Reader, raw: Any, path: str) -> list:
    if raw is None:
        return []
    if not isinstance(raw, list):
        r.problem(path, "expected a list")
        return []
    return raw


def _allowed(r: Reader, raw: Any, ids: Mapping[str, str]) -> tuple[str, ...]:
    found = []
    for where, name in r.indexed_strings(raw, "actions.allowed_users"):
        if name.startswith("ou_"):
            found.append(name)
        elif ids.get(name, "").startswith("ou_"):
            found.append(ids[name])
        else:
            r.problem(where, f"{name!r} is neither an open_id (ou_...) nor a name in users: with an open_id "
                             "(the tap tells the bridge the person's open_id only)")
    return tuple(dict.fromkeys(found))


def _url(r: Reader, section: dict, key: str, path: str) -> str | None:
    if section.get(key) is None:
        r.problem(join(path, key), "required")
        return None
    text = r.string(section[key], join(path, key))
    if text is None or not r.http_url(text, join(path, key), show=lambda u: u):
        return None
    return text.rstrip("/")


def _target(r: Reader, raw: Any, path: str) -> SilenceTarget | None:
    section = r.mapping(raw, path, _TARGET_KEYS) if isinstance(raw, dict) else None
    if section is None:
        r.problem(path, "expected a mapping with external_url and url")
        return None
    external, url = _url(r, section, "external_url", path), _url(r, section, "url", path)
    token = r.secret_value(section, "bearer_token", path)
    username = password = None
    if section.get("basic") is not None:
        basic = r.mapping(section["basic"], f"{path}.basic", _BASIC_KEYS)
        username = r.string(basic.get("username"), f"{path}.basic.username") if "username" in basic else None
        password = r.secret_value(basic, "password", f"{path}.basic")
        if not username or not password:
            r.problem(f"{path}.basic", "needs username and password (or password_file)")
    if token is not None and username:
        r.problem(path, "set bearer_token or basic, not both")
    if external is None or url is None:
        return None
    return SilenceTarget(external, url, Secret(token) if token else None, username or None,
                         Secret(password) if password else None)


def _grafana(r: Reader, raw: Any) -> SilenceTarget | None:
    if raw is None:
        return None
    section = r.mapping(raw, "actions.grafana", _GRAFANA_KEYS)
    url = _url(r, section, "url", "actions.grafana")
    token = r.secret_value(section, "token", "actions.grafana")
    if not token:
        r.problem("actions.grafana.token", "required (or token_file): a Grafana service-account token that may "
                                           "create silences")
    if url is None or not token:
        return None
    return SilenceTarget(url, url, Secret(token))
