"""Secrets as a type, so that printing one can never leak it.

A Secret shows as `<secret>` in str(), repr(), f-strings, logs and error messages;
only `.reveal()` gives the value, and only the Feishu client and the auth check call
it. A webhook URL is a secret too (its last path segment is the bot's token); it
shows with the token masked, which is enough to tell two bots apart in a log.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return "<secret>"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def mask_url(url: str) -> str:
    """`https://open.feishu.cn/open-apis/bot/v2/hook/abcd…` for a webhook URL.

    Keeps the scheme, host and path up to the last segment, then the token's first
    four characters. Credentials in the authority and any query are dropped.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    # The authority without its credentials; as written when the port is out of range
    # (`.port` raises), so the message about it shows what is wrong.
    host = parts.netloc.rpartition("@")[2]
    head, _, token = parts.path.rpartition("/")
    shown = f"{head}/{token[:4]}…" if token else parts.path
    return urlunsplit((parts.scheme, host, shown, "", ""))


class WebhookURL(Secret):
    """A Feishu webhook URL: secret, shown with its token masked."""

    __slots__ = ()

    def __str__(self) -> str:
        return mask_url(self._value)

    __repr__ = __str__


class DSN(Secret):
    """A database connection string: secret (it may hold the password), shown as `shown`,
    which the config loader builds from the parsed DSN without its password."""

    __slots__ = ("_shown",)

    def __init__(self, value: str, shown: str):
        super().__init__(value)
        self._shown = shown

    def __str__(self) -> str:
        return self._shown

    __repr__ = __str__
