"""`bots:`, the `users:` directory, and the mention settings bots and routes share."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..limits import APP_RATE_PER_MINUTE, APP_RATE_PER_SECOND, MAX_KEYWORDS, RATE_PER_MINUTE, RATE_PER_SECOND
from ..model import FIRING, RESOLVED, Mention
from ..secret import Secret, WebhookURL
from .apps import APP_BOT_KEYS, read_app_bot
from .reader import Reader, closest, join, kind
from .types import NAME_SEPARATORS, App, Bot, MentionRule, MentionSettings, RateLimit

BOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# A Feishu open_id: "ou_" then letters and digits (protocols.md A.7; the guide's examples
# are ou_18eac8 and ou_xxxxxx, real ones are longer). The length is left to Feishu; this
# catches what custom bots refuse or cannot mean: emails, union_ids (on_...), spaces.
OPEN_ID = re.compile(r"^ou_[A-Za-z0-9]+$")
# A name in the users: directory. Label values list names separated by whitespace or
# NAME_SEPARATORS, with a leading "@" dropped, so a name holds none of those.
USER_NAME = re.compile(rf"^[^\s@{NAME_SEPARATORS}][^\s{NAME_SEPARATORS}]*$")
MENTION_STATUSES = (FIRING, RESOLVED)

# Feishu's older (v1) custom-bot webhook, which its guide still mentions: a different body
# (title and text, no msg_type) and no signing, so it cannot read what the bridge sends.
V1_HOOK = re.compile(r"/open-apis/bot/hook/[^/]+/?")
V1_ADVICE = ("is a v1 custom-bot URL (/open-apis/bot/hook/...): v1 bots take a different body and cannot be "
             "signed, so they cannot read what the bridge sends. Feishu's guide recommends v2: add a new "
             "custom bot to the group and use its webhook URL (https://open.feishu.cn/open-apis/bot/v2/hook/...)")

_BOT_KEYS = {"name", "webhook_url", "webhook_url_file", "secret", "secret_file", "keywords",
             "template", "dry_run", "proxy_url", "connect_timeout", "read_timeout", "rate_limit",
             "timezone", "mentions", "mention_labels", "mention_on", "send_resolved"} | APP_BOT_KEYS
_RATE_KEYS = {"per_second", "per_minute"}
_USER_KEYS = {"open_id", "email"}
# An email as `users:` takes it: nothing that could end an <at email=...> tag.
EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
_MENTION_KEYS = {"all", "users", "matchers"}


@dataclass(frozen=True)
class Users:
    """The `users:` directory as read: what mentions by name are resolved against."""

    ids: Mapping[str, str]                  # name -> open_id
    broken: frozenset[str] = frozenset()    # named in users: but invalid; not "unknown" again
    emails: Mapping[str, str] = field(default_factory=dict)   # name -> email, for those without an open_id


# --- bots ---------------------------------------------------------------------------

def read_bots(r: Reader, raw: Any, users: Users,
              apps: Mapping[str, App] | None = None) -> tuple[dict[str, Bot], dict[str, int]]:
    """The bots by name, and each name's position in the list (later checks name a bot
    by its position in the file)."""
    if raw is None:
        r.problem("bots", "at least one bot is required")
        return {}, {}
    if not isinstance(raw, list) or not raw:
        r.problem("bots", f"expected a non-empty list of bots, got {kind(raw)}")
        return {}, {}
    bots: dict[str, Bot] = {}
    first_seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        bot = read_bot(r, item, f"bots[{i}]", users, apps or {})
        if bot is None:
            continue
        if bot.name in first_seen:
            r.problem(f"bots[{i}].name", f"duplicate bot name {bot.name!r} (also bots[{first_seen[bot.name]}])")
            continue
        first_seen[bot.name] = i
        bots[bot.name] = bot
    return bots, first_seen


def read_bot(r: Reader, raw: Any, path: str, users: Users, apps: Mapping[str, App] | None = None) -> Bot | None:
    if not isinstance(raw, dict):
        r.problem(path, f"expected a mapping with at least a name, got {kind(raw)}")
        return None
    section = r.mapping(raw, path, _BOT_KEYS)
    name = _name(r, section, path)
    # Read even for a bot without a usable name, so that their problems show too.
    app_bot = section.get("app") is not None
    endpoint = _endpoint(r, section, path) if not app_bot else _proxy(r, section, path)
    app = read_app_bot(r, section, path, apps or {}, lambda r_, entry, where: _mention_user(
        r_, entry, where, users, app_bot=True))
    presentation = _presentation(r, section, path)
    mentions = mention_settings(r, section, path, inherited=Bot(name=""), users=users,   # the defaults
                                app_bot=app_bot)
    sending = _sending(r, section, path, app_bot)
    if name is None:
        return None
    return Bot(name=name, **endpoint, **presentation, **sending, **mentions, **app)


def _name(r: Reader, section: dict[str, Any], path: str) -> str | None:
    name = r.string(section.get("name"), f"{path}.name") if "name" in section else None
    if "name" not in section:
        r.problem(f"{path}.name", "required")
    elif name is not None and not BOT_NAME.match(name):
        r.problem(f"{path}.name", f"{name!r} is not a valid bot name (letters, digits, '_', '.', '-'; it is used in URLs)")
        name = None
    return name


def _endpoint(r: Reader, section: dict[str, Any], path: str) -> dict[str, Any]:
    """Where the bot's messages go: webhook_url (none: a dry-run bot), secret, proxy_url."""
    url = r.secret_value(section, "webhook_url", path)
    if url is not None and url != "" and r.http_url(url, f"{path}.webhook_url", show=lambda u: str(WebhookURL(u))):
        _not_v1(r, url, f"{path}.webhook_url")
    secret = r.secret_value(section, "secret", path)
    return {"webhook_url": WebhookURL(url) if url else None,
            "secret": Secret(secret) if secret else None,
            **_proxy(r, section, path)}


def _proxy(r: Reader, section: dict[str, Any], path: str) -> dict[str, Any]:
    proxy = r.string(section["proxy_url"], f"{path}.proxy_url") if section.get("proxy_url") is not None else None
    if proxy:
        r.http_url(proxy, f"{path}.proxy_url", show=lambda _: "<proxy url>")
    return {"proxy_url": Secret(proxy) if proxy else None}


def _not_v1(r: Reader, url: str, path: str) -> None:
    if V1_HOOK.fullmatch(urlsplit(url).path):
        r.problem(path, f"{WebhookURL(url)} {V1_ADVICE}")


def _presentation(r: Reader, section: dict[str, Any], path: str) -> dict[str, Any]:
    """How the bot's messages look: keywords, template, timezone."""
    keywords = r.string_list(section.get("keywords"), f"{path}.keywords")
    if len(keywords) > MAX_KEYWORDS:
        r.problem(f"{path}.keywords", f"Feishu allows at most {MAX_KEYWORDS} keywords, got {len(keywords)}")
    if any(not k for k in keywords):
        r.problem(f"{path}.keywords", "keywords must not be empty strings")
    template = r.string(section.get("template", "default"), f"{path}.template") or "default"
    return {"keywords": tuple(keywords), "template": template,
            "timezone": r.zone(section.get("timezone"), f"{path}.timezone")}


def _sending(r: Reader, section: dict[str, Any], path: str, app_bot: bool = False) -> dict[str, Any]:
    """How the bot sends: dry_run, timeouts, rate_limit. Read only for a bot with a usable
    name, unlike the rest: a bot whose name is wrong does not report these problems."""
    return {
        "dry_run": r.boolean(section.get("dry_run"), f"{path}.dry_run", False),
        "connect_timeout": r.duration(section.get("connect_timeout"), f"{path}.connect_timeout", 5.0),
        "read_timeout": r.duration(section.get("read_timeout"), f"{path}.read_timeout", 10.0),
        "rate_limit": _rate_limit(r, section.get("rate_limit"), f"{path}.rate_limit", app_bot),
    }


def _rate_limit(r: Reader, raw: Any, path: str, app_bot: bool = False) -> RateLimit:
    # A custom bot's limits are per bot (5/s, 100/min); an app bot's are its chat's (5/s,
    # no minute limit documented): bridge.limits.
    second, minute, per = ((APP_RATE_PER_SECOND, APP_RATE_PER_MINUTE, "per chat for an app bot") if app_bot
                           else (RATE_PER_SECOND, RATE_PER_MINUTE, "per bot"))
    section = r.mapping(raw, path, _RATE_KEYS)
    limit = RateLimit(
        per_second=r.positive_int(section.get("per_second"), f"{path}.per_second", second),
        per_minute=r.positive_int(section.get("per_minute"), f"{path}.per_minute", minute),
    )
    # Above Feishu's own limits every extra request would only earn a rate-limit answer.
    if limit.per_second > second:
        r.problem(f"{path}.per_second", f"Feishu allows at most {second} per second {per}")
    if limit.per_minute > minute:
        r.problem(f"{path}.per_minute", f"Feishu allows at most {minute} per minute {per}")
    return limit


# --- the users directory ------------------------------------------------------------

def read_users(r: Reader, raw: Any) -> Users:
    """`users:`: each name written `name: ou_...` or `name: {open_id: ou_..., email: ...}`.
    An email (without an open_id) serves app bots only: their cards ping by email, and
    urgent looks the open_id up through the app (feishu-app-protocol.md §8)."""
    if raw is None:
        return Users({})
    if not isinstance(raw, dict):
        r.problem("users", f"expected a mapping of names to open_ids, got {kind(raw)}")
        return Users({})
    users: dict[str, str] = {}
    emails: dict[str, str] = {}
    broken: set[str] = set()
    for key, value in raw.items():
        name = str(key)
        path = join("users", name)
        if not USER_NAME.match(name) or OPEN_ID.match(name):
            r.problem(path, f"{name!r} is not usable as a name: no spaces, commas, semicolons or leading "
                            "'@' (label values list names separated by those), and not an open_id")
            continue
        email = None
        if isinstance(value, dict):
            section = r.mapping(value, path, _USER_KEYS)
            email = _email(r, section["email"], f"{path}.email") if section.get("email") is not None else None
            value, id_path = section.get("open_id"), f"{path}.open_id"
            if value is None and section.get("email") is None:
                r.problem(id_path, "required (or email, which only app bots can use)")
        else:
            id_path = path
        open_id = _open_id(r, value, id_path) if value is not None else None
        if open_id is None and email is None:
            broken.add(name)
        if open_id is not None:
            users[name] = open_id
        if email is not None:
            emails[name] = email
    return Users(users, frozenset(broken), emails)


def _email(r: Reader, value: Any, path: str) -> str | None:
    text = r.string(value, path)
    if text is not None and not EMAIL.match(text):
        r.problem(path, f"{text!r} is not an email address")
        return None
    return text


def _open_id(r: Reader, value: Any, path: str) -> str | None:
    text = r.string(value, path)
    return text if text is not None and _valid_open_id(r, text, path) else None


def _valid_open_id(r: Reader, text: str, path: str) -> bool:
    if OPEN_ID.match(text):
        return True
    hint = ""
    if "@" in text:
        hint = ": custom bots cannot mention by email"
    elif text.startswith("on_"):
        hint = ": that is a union_id, custom bots need the open_id"
    elif text.strip() != text:
        hint = ": remove the spaces"
    r.problem(path, f"{text!r} is not a Feishu open_id (ou_ then letters and digits){hint}")
    return False


# --- the mention settings bots and routes share -------------------------------------

def mention_settings(r: Reader, section: dict[str, Any], path: str, *, inherited: MentionSettings,
                     users: Users, app_bot: bool | None = None) -> dict[str, Any]:
    """mentions, mention_labels, mention_on and send_resolved: as set here, else `inherited`'s.
    `app_bot`: whether a bot's settings are an app bot's (None for a route's, which may
    reach either kind: there a person known by email only pings where they can)."""
    def given(key: str) -> bool:
        return section.get(key) is not None

    return {
        "mentions": (_mention_rule(r, section["mentions"], f"{path}.mentions", users, app_bot) if given("mentions")
                     else inherited.mentions),
        "mention_labels": (_label_names(r, section["mention_labels"], f"{path}.mention_labels")
                           if given("mention_labels") else inherited.mention_labels),
        "mention_on": (_mention_on(r, section["mention_on"], f"{path}.mention_on") if given("mention_on")
                       else inherited.mention_on),
        "send_resolved": r.boolean(section.get("send_resolved"), f"{path}.send_resolved",
                                   inherited.send_resolved),
    }


def _mention_rule(r: Reader, raw: Any, path: str, users: Users, app_bot: bool | None = None) -> MentionRule:
    section = r.mapping(raw, path, _MENTION_KEYS)
    found = [_mention_user(r, entry, where, users, app_bot=app_bot) for where, entry in
             r.indexed_strings(section.get("users"), f"{path}.users")]
    return MentionRule(
        all=r.boolean(section.get("all"), f"{path}.all", False),
        users=tuple(dict.fromkeys(u for u in found if u is not None)),
        matchers=r.matchers(section.get("matchers"), f"{path}.matchers"),
    )


def _mention_user(r: Reader, entry: str, path: str, users: Users, *, app_bot: bool | None = None) -> Mention | None:
    """An open_id as it is, or a name looked up in users:. A name known by email only is
    for app bots (app_bot False: a custom bot's own setting, a problem; None: a route's,
    which pings by email where it can and shows the name elsewhere: bridge.mentions)."""
    if entry.startswith("ou_"):
        return Mention(entry) if _valid_open_id(r, entry, path) else None
    if entry in users.ids:
        return Mention(users.ids[entry], entry, users.emails.get(entry, ""))
    if entry in users.emails:
        if app_bot is False:
            r.problem(path, f"{entry!r} has only an email in users:, and custom bots cannot mention by email: "
                            "give their open_id too, or send through an app bot")
            return None
        return Mention("", entry, users.emails[entry])
    if entry in users.broken:
        return None  # its users: entry has its own problem
    if entry == "all":
        hint = "; to mention everyone, use all: true"
    elif "@" in entry:
        hint = "; custom bots cannot mention by email: add the person to users: with their open_id"
    else:
        close = closest(entry, set(users.ids) | set(users.emails))
        hint = f" (did you mean {close!r}?)" if close else ""
    r.problem(path, f"unknown user {entry!r}: not an open_id (ou_...) and not a name in users:{hint}")
    return None


def _label_names(r: Reader, raw: Any, path: str) -> tuple[str, ...]:
    names = []
    for where, name in r.indexed_strings(raw, path):
        if name:
            names.append(name)
        else:
            r.problem(where, "expected a label or annotation name, got an empty string")
    return tuple(dict.fromkeys(names))


def _mention_on(r: Reader, raw: Any, path: str) -> frozenset[str]:
    statuses = set()
    for where, status in r.indexed_strings(raw, path):
        if status in MENTION_STATUSES:
            statuses.add(status)
        else:
            r.problem(where, f"expected one of {', '.join(MENTION_STATUSES)}, got {status!r}")
    return frozenset(statuses)
