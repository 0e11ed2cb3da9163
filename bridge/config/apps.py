"""`apps:` (Feishu self-built apps) and what makes a bot an app bot: `app`, `chat_id`,
`update_in_place`, `thread_replies`, `urgent`; then the checks across bots and apps.

The protocol facts behind each check are in ../shared/feishu-app-protocol.md (cited by
section); the numbers are in bridge.limits.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Callable, Mapping

from ..limits import APP_PER_MINUTE, APP_PER_SECOND, APP_RATE_PER_MINUTE, APP_RATE_PER_SECOND, MAX_CHAT_ID_CHARS
from ..model import Mention
from ..secret import Secret
from .reader import Reader, closest, join, kind
from .types import APP_DOMAINS, THREAD_REPLIES, URGENT_KINDS, App, Bot, RateLimit, Urgent

APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Every app id Feishu issues starts "cli_" (§1.1, §2.2 examples); anything else is a
# copy-paste of the wrong value (the secret, the app's name).
APP_ID = re.compile(r"^cli_[A-Za-z0-9]+$")
# A group's chat_id: "oc_" then letters and digits (§2.1, §2.2 examples).
CHAT_ID = re.compile(r"^oc_[A-Za-z0-9]+$")

_APP_KEYS = {"name", "app_id", "app_secret", "app_secret_file", "domain", "base_url"}
_APP_KEYS |= {"encrypt_key_file", "verification_token_file"}  # MERGE-SHIM: replaced by feat/actions (the chart writes them)
APP_BOT_KEYS = {"app", "chat_id", "update_in_place", "thread_replies", "urgent"}
_URGENT_KEYS = {"kind", "users", "mention_labels", "matchers"}

# Resolves one `users` entry of urgent: as mentions' users are (bridge.config.bots).
UserLookup = Callable[[Reader, str, str], "Mention | None"]


def read_apps(r: Reader, raw: Any) -> tuple[dict[str, App], dict[str, int]]:
    """The apps by name, and each one's position in the list."""
    if raw is None:
        return {}, {}
    if not isinstance(raw, list):
        r.problem("apps", f"expected a list of apps, got {kind(raw)}")
        return {}, {}
    apps: dict[str, App] = {}
    positions: dict[str, int] = {}
    for i, item in enumerate(raw):
        app = _read_app(r, item, f"apps[{i}]")
        if app is None:
            continue
        if app.name in positions:
            r.problem(f"apps[{i}].name", f"duplicate app name {app.name!r} (also apps[{positions[app.name]}])")
            continue
        apps[app.name], positions[app.name] = app, i
    return apps, positions


def _read_app(r: Reader, raw: Any, path: str) -> App | None:
    if not isinstance(raw, dict):
        r.problem(path, f"expected a mapping with name, app_id and app_secret, got {kind(raw)}")
        return None
    section = r.mapping(raw, path, _APP_KEYS)
    name = _required_string(r, section, "name", path)
    if name is not None and not APP_NAME.match(name):
        r.problem(f"{path}.name", f"{name!r} is not a valid app name (letters, digits, '_', '.', '-')")
        name = None
    app_id = _required_string(r, section, "app_id", path)
    if app_id is not None and not APP_ID.match(app_id):
        r.problem(f"{path}.app_id", f"{app_id!r} is not a Feishu app id (cli_ then letters and digits: the "
                                    "console's 凭证与基础信息 page)")
        app_id = None
    secret = r.secret_value(section, "app_secret", path)
    if not secret:
        r.problem(f"{path}.app_secret", "required (or app_secret_file): the app's App Secret")
    domain = r.string(section.get("domain", "feishu"), f"{path}.domain") or "feishu"
    if domain not in APP_DOMAINS:
        r.problem(f"{path}.domain", f"expected one of {', '.join(APP_DOMAINS)}, got {domain!r}")
    base_url = r.string(section["base_url"], f"{path}.base_url") if section.get("base_url") is not None else None
    if base_url:
        r.http_url(base_url, f"{path}.base_url", show=lambda u: u)
    if name is None or app_id is None or not secret or domain not in APP_DOMAINS:
        return None
    return App(name, app_id, Secret(secret), domain, base_url.rstrip("/") if base_url else None)


def _required_string(r: Reader, section: dict[str, Any], key: str, path: str) -> str | None:
    if section.get(key) is None:
        r.problem(join(path, key), "required")
        return None
    text = r.string(section[key], join(path, key))
    if text is not None and not text.strip():
        r.problem(join(path, key), "is empty")
        return None
    return text


# --- a bot's app settings -------------------------------------------------------------

def read_app_bot(r: Reader, section: dict[str, Any], path: str, apps: Mapping[str, App],
                 user: UserLookup) -> dict[str, Any]:
    """The Bot fields that make an app bot (none for a custom bot, whose use of them is a
    problem); `user` resolves a name in urgent.users."""
    if section.get("app") is None:
        for key in sorted(APP_BOT_KEYS & set(section)):
            r.problem(join(path, key), "only app bots have this: set app (and chat_id) instead of webhook_url")
        return {}
    for key in ("webhook_url", "webhook_url_file", "secret", "secret_file", "keywords"):
        if section.get(key) is not None:
            r.problem(join(path, key), _NOT_FOR_APP_BOTS[key.removesuffix("_file")])
    return {
        "app": _app_of(r, section["app"], f"{path}.app", apps),
        "chat_id": _chat_id(r, section.get("chat_id"), f"{path}.chat_id"),
        "update_in_place": r.boolean(section.get("update_in_place"), f"{path}.update_in_place", True),
        "thread_replies": _thread_replies(r, section.get("thread_replies"), f"{path}.thread_replies"),
        "urgent": _urgent(r, section.get("urgent"), f"{path}.urgent", user),
    }


_NOT_FOR_APP_BOTS = {
    "webhook_url": "a bot has webhook_url (a custom bot) or app (an app bot), not both",
    "secret": "app bots are not signed: the app's secret is app_secret under apps:",
    "keywords": "app bots have no keywords (a custom bot's security setting): remove it",
}


def _app_of(r: Reader, raw: Any, path: str, apps: Mapping[str, App]) -> App | None:
    name = r.string(raw, path)
    if name is None:
        return None
    if name not in apps:
        close = closest(name, set(apps))
        known = f"configured apps: {', '.join(apps)}" if apps else "apps: lists none"
        r.problem(path, f"unknown app {name!r} ({known})" + (f"; did you mean {close!r}?" if close else ""))
        return None
    return apps[name]


def _chat_id(r: Reader, raw: Any, path: str) -> str | None:
    if raw is None:
        r.problem(path, "required for an app bot: the group's chat_id (oc_...), which the app's bot must be in")
        return None
    text = r.string(raw, path)
    if text is not None and (not CHAT_ID.match(text) or len(text) > MAX_CHAT_ID_CHARS):
        r.problem(path, f"{text!r} is not a Feishu group chat_id (oc_ then letters and digits)")
        return None
    return text


def _thread_replies(r: Reader, raw: Any, path: str) -> frozenset[str]:
    if raw is None:
        return frozenset({"firing", "resolved"})
    chosen = set()
    for where, name in r.indexed_strings(raw, path):
        if name in THREAD_REPLIES:
            chosen.add(name)
        else:
            r.problem(where, f"expected one of {', '.join(THREAD_REPLIES)}, got {name!r}")
    return frozenset(chosen)


def _urgent(r: Reader, raw: Any, path: str, user: UserLookup) -> Urgent | None:
    if raw is None:
        return None
    section = r.mapping(raw, path, _URGENT_KEYS)
    urgent_kind = r.string(section.get("kind", "app"), f"{path}.kind") or "app"
    if urgent_kind not in URGENT_KINDS:
        r.problem(f"{path}.kind", f"expected one of {', '.join(URGENT_KINDS)} (sms and phone spend the "
                                  f"company's paid urgent quota), got {urgent_kind!r}")
    users = [user(r, entry, where) for where, entry in r.indexed_strings(section.get("users"), f"{path}.users")]
    labels = tuple(dict.fromkeys(n for _, n in r.indexed_strings(section.get("mention_labels"),
                                                                  f"{path}.mention_labels") if n))
    if not section.get("users") and not labels:
        r.problem(path, "names nobody to buzz: give users or mention_labels")
    return Urgent(kind=urgent_kind, users=tuple(dict.fromkeys(u for u in users if u is not None)),
                  mention_labels=labels, matchers=r.matchers(section.get("matchers"), f"{path}.matchers"))


# --- across bots and apps --------------------------------------------------------------

def check_app_bots(r: Reader, bots: dict[str, Bot], positions: Mapping[str, int],
                   app_positions: Mapping[str, int], explicit: Mapping[str, set[str]]) -> None:
    """One app bot per chat and app, and each app's bots within the app's limits.

    Feishu's 5 messages a second per group are shared by every bot in it (§2.4), and one
    sender per bot keeps to a bot's limit: two bots of one app in one chat could not
    know of each other's requests. An app's limits (50/s, 1000/min per API) are kept by
    sharing them out: a bot that does not set rate_limit gets its share, and the sum of
    what its bots may send must stay within them. `explicit` names the rate_limit keys
    each bot set itself. Rewrites `bots` with the shares."""
    by_app: dict[str, list[Bot]] = {}
    chats: dict[tuple[str, str], str] = {}
    for bot in bots.values():
        if bot.app is None or bot.chat_id is None:
            continue
        where = (bot.app.app_id, bot.chat_id)
        if where in chats:
            r.problem(f"bots[{positions[bot.name]}].chat_id",
                      f"bot {chats[where]!r} already sends to this chat as app {bot.app.name!r}: one app bot "
                      "per chat (Feishu's 5 messages a second per chat are shared; route both to one bot)")
        chats[where] = bot.name
        by_app.setdefault(bot.app.name, []).append(bot)
    for app, members in by_app.items():
        shared = RateLimit(max(1, min(APP_RATE_PER_SECOND, APP_PER_SECOND // len(members))),
                           max(1, min(APP_RATE_PER_MINUTE, APP_PER_MINUTE // len(members))))
        for bot in members:
            own = explicit.get(bot.name, set())
            bots[bot.name] = replace(bot, rate_limit=RateLimit(
                bot.rate_limit.per_second if "per_second" in own else shared.per_second,
                bot.rate_limit.per_minute if "per_minute" in own else shared.per_minute))
        limits = [bots[b.name].rate_limit for b in members]
        second, minute = sum(x.per_second for x in limits), sum(x.per_minute for x in limits)
        if second > APP_PER_SECOND or minute > APP_PER_MINUTE:
            r.problem(f"apps[{app_positions[app]}]",
                      f"its {len(members)} bots may send {second}/s and {minute}/min together, over Feishu's "
                      f"{APP_PER_SECOND}/s and {APP_PER_MINUTE}/min per app: lower their rate_limit")
