"""Links in a message: which URLs a card may carry (http(s) only, nothing that breaks a
markdown link), the links of an alert, and the pages the bridge builds itself in
Alertmanager's and Grafana's UIs (the group page, a new silence).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable
from urllib.parse import quote

from ..model import Alert, Notification
from .escape import go_string, quote_all
from .filters import sorted_pairs

# Longer links are dropped rather than risk a message Feishu refuses.
URL_MAX_CHARS = 2048
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f<>\"`\\]")
# What stays as it is in a markdown link's URL; the rest is percent-encoded.
_URL_KEPT = "!#$%&'*+,-./:;=?@_~"
_URL_ODD = re.compile(r"[^A-Za-z0-9!#$%&'*+,\-./:;=?@_~]")
# An http(s) link (as _HTTP_URL) made of those characters only.
# (Only the scheme ignores case: a case-blind character class is several times slower.)
_KEPT_HTTP_URL = re.compile(r"(?i:https?)://[A-Za-z0-9!$%&'*+,\-.:;=@_~][A-Za-z0-9!#$%&'*+,\-./:;=?@_~]*\Z")
# http or https, and a host: what Feishu opens; javascript:, data: and relative links are not.
_HTTP_URL = re.compile(r"https?://[^/?#\s]", re.IGNORECASE)
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
_GO_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def safe_url(value: Any) -> str:
    """The URL when it is an http(s) link Feishu can open; "" otherwise (javascript:, junk).
    Uncached: the environment registers a cached one as the filter (environment.py)."""
    if not isinstance(value, str) or len(value) > URL_MAX_CHARS or not _HTTP_URL.match(value):
        return ""
    return "" if _URL_FORBIDDEN.search(value) else value


def md_link(md: Callable[[Any], str], url: Any, text: Any) -> str:
    """The filter `url | md_link("Source")`, with md the render's markdown escaper: a
    markdown link `[Source](url)`, or "" when the URL is not a safe http(s) link."""
    if not url or not isinstance(url, str) or len(url) > URL_MAX_CHARS:
        return ""
    if _KEPT_HTTP_URL.match(url):  # the usual case, in one search: what follows would keep it as it is
        return f"[{md(text)}]({url})"
    if not _HTTP_URL.match(url):
        return ""
    if _URL_ODD.search(url):  # rarely: most URLs hold only these characters
        if _URL_FORBIDDEN.search(url):
            return ""
        # Brackets, parentheses and the like would end the link early; percent-encoded
        # they mean the same to the server.
        url = quote(url, safe=_URL_KEPT, errors="replace")
    return f"[{md(text)}]({url})"


def md_links(link: Callable[[Any, Any], str], links: Iterable[tuple[Any, Any]], separator: str = " · ") -> str:
    """The filter `alert | links | md_links`, with link the render's md_link:
    `[Source](…) · [Runbook](…)`, safe links only."""
    return separator.join(filter(None, [link(url, text) for text, url in links]))


def alert_links(alert: Alert, silence: Callable[[Alert], str], safe: Callable[[Any], str]) -> list[tuple[str, str]]:
    """The filter `alert | links`: (text, url) for Source, Runbook, Dashboard and Panel, and
    Silence while the alert fires; only those that are safe http(s) links."""
    found = []
    for text, url in (("Source", alert.generator_url), ("Runbook", alert.annotations.get("runbook_url")),
                      ("Dashboard", alert.dashboard_url), ("Panel", alert.panel_url)):
        url = safe(url) if url else ""
        if url:
            found.append((text, url))
    url = silence(alert) if alert.is_firing else ""
    if url:
        found.append(("Silence", url))
    return found


def no_link(alert: Alert) -> str:
    return ""


class SilenceLinks:
    """Grafana's silenceURL; for Alertmanager its UI's new-silence page filled with the
    alert's labels. Made once per render, for the alerts of one notification: the base URL
    is checked once and each label's encoded matcher is kept, since alerts share most labels."""

    # Jinja's sandbox looks these up on every callable before each call; found here at
    # once, not by a failed lookup (a few microseconds per alert). Sandbox internals:
    # pyproject bounds Jinja2 below 4 for them.
    unsafe_callable = False
    alters_data = False
    jinja_pass_arg = None

    def __init__(self, notification: Notification):
        base = safe_url(notification.external_url) if notification.source == "alertmanager" else ""
        self._base = base.rstrip("/") + "/#/silences/new?filter=%7B" if base else ""
        self._matchers = _Matchers()

    def __call__(self, alert: Alert) -> str:
        if alert.silence_url:
            return safe_url(alert.silence_url)
        if not self._base:
            return ""
        pairs = sorted_pairs(alert.labels)
        url = self._base + "%2C%20".join(map(self._matchers.__getitem__, pairs)) + "%7D"
        return url if len(url) <= URL_MAX_CHARS else ""

    __call__.jinja_pass_arg = None  # type: ignore[attr-defined]


class _Matchers(dict):
    """Label pair -> its matcher `name="value"`, quoted as Alertmanager's matcher parser reads
    it, then URL-encoded; each made when first asked for (most alerts differ in a label or two)."""

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[str, str] = {}

    def __missing__(self, pair: tuple[str, str]) -> str:
        name, value = pair
        prefix = self._names.get(name)
        if prefix is None:
            prefix = self._names[name] = quote_all((name if _LABEL_NAME.match(name) else go_string(name)) + "=")
        found = self[pair] = prefix + quote_all(go_string(value))
        return found


def group_url(notification: Notification) -> str:
    """The page of the group in Alertmanager's UI (as its default template links) or Grafana's."""
    base = safe_url(notification.external_url).rstrip("/")
    if not base:
        return ""
    if notification.source == "grafana":
        return base + "/alerting/groups"
    # The UI reads `receiver` as a regular expression; Alertmanager sends QuoteMeta(name).
    receiver = _GO_META.sub(r"\\\1", notification.receiver)
    return safe_url(base + "/#/alerts?receiver=" + quote(receiver, safe="", errors="replace"))
