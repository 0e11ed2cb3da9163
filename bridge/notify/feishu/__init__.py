"""Feishu/Lark custom bots: `sign` (the bytes sent), `answers` (what Feishu's answers mean),
`client` (FeishuClient, the Channel).

`FeishuClient` is looked up on first use rather than imported here: the renderer and the
preview need only `sign.encode_body`, and importing this package must not load requests
for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .client import FeishuClient


def __getattr__(name: str) -> object:
    if name == "FeishuClient":
        from .client import FeishuClient

        return FeishuClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["FeishuClient"]
