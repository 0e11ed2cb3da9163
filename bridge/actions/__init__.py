"""MERGE-SHIM: the stand-in for feat/actions' card actions, just enough for `events`."""  # MERGE-SHIM: replaced by feat/actions

from __future__ import annotations  # MERGE-SHIM: replaced by feat/actions


class Actions:  # MERGE-SHIM: replaced by feat/actions
    def tap(self, app: str, callback: dict) -> dict:  # MERGE-SHIM: replaced by feat/actions
        return {"toast": {"type": "info", "content": "card actions are not built yet"}}  # MERGE-SHIM: replaced by feat/actions
