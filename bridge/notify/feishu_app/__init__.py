"""Feishu/Lark app bots (a self-built app's bot) over the Open API: `client` (AppClient:
send, update in place, reply in thread, urgent), `answers` (Feishu's codes), `tokens` (the
shared tenant_access_token), `people` (emails to open_ids), `scrub` (secrets out).

`AppClient` is looked up on first use, as in bridge.notify.feishu: importing this package
must not load requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import AppClient


def __getattr__(name: str) -> object:
    if name == "AppClient":
        from .client import AppClient

        return AppClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["AppClient"]
