"""Who an alert pings on a bot, and whether a resolved alert is sent to it at all.

Sources, for one alert on one bot: the bot's settings, then those of each matched
route that sent the alert there (routing.route_matches). Each source counts only when
the alert's status is in its `mention_on`; its `mentions` (@all, users) also only when
the rule's matchers match. Its `mention_labels` name labels (or, when the alert has no
such label, annotations) whose values list user names, separated by whitespace, commas
or semicolons (also the full-width ，、；), a leading "@" ignored: `owner: "alice, @bob"`.
A name is looked up in the `users:` directory (exactly, case included); a name it does
not know is kept as text (Mention with an empty user_id), never a ping, and logged once.
So a label can only ever ping someone the config's directory lists: no label value
becomes an open_id or "all" by itself. A person the directory knows by email only pings
on an app bot (its cards take <at email=...>); on a custom bot they are shown as text.

Order: @all first, then everyone else in the order found (bot, then routes; within a
source, `mentions.users` before labels), each once.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Mapping, Sequence

from .config import NAME_SEPARATORS, Bot, MentionSettings, Route
from .model import Alert, Mention
from .routing import routes_by_bot

ALL = Mention("all")
_SEPARATOR = re.compile(rf"[\s{NAME_SEPARATORS}]+")
# Unknown names already warned about, per resolver; older ones are forgotten past this
# so that label values from outside cannot grow memory without bound.
REMEMBERED_UNKNOWN_NAMES = 1024


def sends_resolved(bot: MentionSettings, routes: Sequence[Route]) -> bool:
    """Whether a resolved alert goes to `bot`.

    The bot must allow it, and so must at least one of the routes that sent the alert
    there (as in Alertmanager, where each matched route notifies on its own). `routes`
    is empty when routing was skipped (/alertmanager/<bot>): then the bot decides.
    """
    return bot.send_resolved and (not routes or any(route.send_resolved for route in routes))


def label_names(value: str) -> list[str]:
    """The user names in one label value: `"alice, @bob carol"` -> alice, bob, carol."""
    names = (part.removeprefix("@") for part in _SEPARATOR.split(value))
    return [name for name in names if name]


class MentionResolver:
    """Turns config (bot and route settings, the users directory) into an alert's mentions.

    Safe to share between threads; create one per loaded config.
    """

    def __init__(self, users: Mapping[str, str], logger: logging.Logger, emails: Mapping[str, str] | None = None):
        self._users = users
        self._emails = emails or {}
        self._log = logger
        self._warned: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def for_alert(self, alert: Alert, bot: MentionSettings, routes: Sequence[Route] = ()) -> tuple[Mention, ...]:
        found: list[Mention] = []
        for source in (bot, *routes):
            if alert.status not in source.mention_on:
                continue
            rule = source.mentions
            if rule.applies(alert.labels):
                found.extend(([ALL] if rule.all else []) + list(rule.users))
            found.extend(self.from_labels(alert, source.mention_labels))
        if getattr(bot, "app", None) is None:   # a custom bot cannot ping by email
            found = [replace(m, email="") if m.email else m for m in found]
        return tuple(sorted(_unique(found), key=lambda m: m != ALL))   # stable: only @all moves

    def for_routed(self, alert: Alert, bot: Bot, root: Route | None) -> tuple[Mention, ...]:
        """for_alert with the routes that send the alert to the bot, found in the tree at
        `root` (None: the alert was posted to the bot directly and skipped the tree)."""
        routes = routes_by_bot(root, alert.labels).get(bot.name, ()) if root is not None else ()
        return self.for_alert(alert, bot, routes)

    def from_labels(self, alert: Alert, names: Sequence[str]) -> list[Mention]:
        """The people the alert's labels (or annotations) `names` name, as the directory
        knows them; a name it does not know is text (and logged once)."""
        found = []
        for label in names:
            # An empty label is an absent one (Prometheus): the annotation may hold the names.
            value = alert.labels.get(label) or alert.annotations.get(label, "")
            for name in label_names(value):
                user_id, email = self._users.get(name), self._emails.get(name, "")
                if user_id is None and not email:
                    self._warn_unknown(name, label)
                found.append(Mention(user_id or "", name, email))
        return found

    def _warn_unknown(self, name: str, label: str) -> None:
        with self._lock:
            if name in self._warned:
                return
            self._warned[name] = None
            if len(self._warned) > REMEMBERED_UNKNOWN_NAMES:
                self._warned.popitem(last=False)
        self._log.warning(
            "mention: %r (from label %s) is not in users:, so it is shown as text and pings nobody",
            name, label, extra={"event": "unknown_mention", "user": name, "label": label})


def _unique(mentions: list[Mention]) -> list[Mention]:
    """Each person once, as first found: an open_id given by name and by id pings once."""
    seen: set[str] = set()
    unique = []
    for mention in mentions:
        key = mention.user_id or (f"email:{mention.email}" if mention.email else f"text:{mention.name}")
        if key not in seen:
            seen.add(key)
            unique.append(mention)
    return unique
