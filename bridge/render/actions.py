"""The action lines and buttons of an app bot's card (issue 14): what a firing group's card
shows of what was done from it, and the buttons that call back into the bridge.

    🔕 Silenced by Alice until 15:04 · View silence      (a silence made from the card)
    👀 Alice is on it (14:03)                             (acknowledged)
    [Silence 1h] [Silence 4h] [Silence 24h] [Acknowledge]  firing, not silenced
    [Expire silence] [Acknowledge]                         firing, silenced

Added by code to the first part of the card as the template rendered it (bridge.delivery
at send time, bridge.actions in the answer to a tap), so every template gets them and the
lines show what the store knows when the card goes out. JSON 2.0 cards only: a 1.0 card
(the `legacy` template) has no callback behaviours of this shape (§7), and is left as is.

A button's value carries the group's id (records.group_ref), the action, and an HMAC over
them and the chat with a key of the bridge's own (`button_key`), so a forged or replayed
tap can neither pick other matchers nor act on another chat's card (§7: the value comes
back from the client, untrusted).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from .escape import md_escape

# The label the button key is derived with (button_key): changing it voids every button out.
KEY_LABEL = b"feishu-alert-bridge/card-actions/v1"
# A link markdown shows as written: http(s), and nothing that would end or break it.
_LINKABLE = re.compile(r"^https?://[^\s()<>\[\]]+$")
SIGNATURE_CHARS = 32     # 128 bits of HMAC-SHA256: plenty against guessing, small in the value
ACTIONS = ("silence", "ack", "expire")


def button_key(app_secret: str) -> bytes:
    """The key button values are signed with, for one app: derived from its App Secret,
    so every replica has it with nothing more to configure or store. Rotating the secret
    voids the buttons of cards already out until their next update (a tap says so)."""
    return hmac.new(app_secret.encode("utf-8"), KEY_LABEL, hashlib.sha256).digest()


def sign(key: bytes, ref: str, chat: str, action: str, arg: str) -> str:
    text = "\n".join((ref, chat, action, arg)).encode("utf-8", "surrogatepass")
    return hmac.new(key, text, hashlib.sha256).hexdigest()[:SIGNATURE_CHARS]


def button_value(key: bytes, ref: str, chat: str, action: str, arg: str = "") -> dict:
    return {"v": 1, "g": ref, "a": action, "d": arg, "s": sign(key, ref, chat, action, arg)}


@dataclass(frozen=True)
class Tapped:
    """A button value whose signature holds for the chat it was tapped in."""

    ref: str
    action: str
    arg: str


def verify(key: bytes, value: object, chat: str) -> Tapped | None:
    """The value's group, action and argument if it was signed by us for `chat`; else None."""
    if not isinstance(value, dict):
        return None
    ref, action, arg, signature = (value.get(k) for k in ("g", "a", "d", "s"))
    if not all(isinstance(x, str) for x in (ref, action, arg, signature)) or action not in ACTIONS:
        return None
    if not hmac.compare_digest(sign(key, ref, chat, action, arg), signature):   # type: ignore[arg-type]
        return None
    return Tapped(ref, action, arg)   # type: ignore[arg-type]


@dataclass(frozen=True)
class ActionView:
    """What the action lines and buttons of one card show."""

    key: bytes
    ref: str
    chat: str
    durations: tuple[str, ...]          # the Silence buttons' labels (actions.silence_durations)
    zone: ZoneInfo
    firing: bool                        # buttons only while the group fires
    acked_by: str | None = None
    acked_at: float | None = None
    silenced_by: str | None = None      # set only while the silence is in force
    silenced_until: float | None = None
    silence_url: str | None = None


def decorate(message: dict, view: ActionView) -> dict:
    """`message` (an interactive JSON 2.0 card) with the action lines and buttons at the end
    of its body; any other message unchanged. Never changes `message` itself."""
    card = message.get("card")
    if message.get("msg_type") != "interactive" or not isinstance(card, dict) or card.get("schema") != "2.0" \
            or not isinstance(card.get("body"), dict) or not isinstance(card["body"].get("elements"), list):
        return message
    added = status_lines(view)
    if view.firing:
        added.append(_buttons(view))
    if not added:
        return message
    out = copy.deepcopy(message)
    out["card"]["body"]["elements"] += [{"tag": "hr"}] + added
    return out


def status_lines(view: ActionView) -> list[dict]:
    lines = []
    if view.silenced_by and view.silenced_until:
        link = f" · [View silence]({view.silence_url})" if view.silence_url and _LINKABLE.match(view.silence_url) \
            else ""
        lines.append(f"🔕 Silenced by {md_escape(view.silenced_by)} until {hhmm(view.silenced_until, view.zone)}{link}")
    if view.acked_by and view.acked_at:
        lines.append(f"👀 {md_escape(view.acked_by)} is on it ({hhmm(view.acked_at, view.zone)})")
    return [{"tag": "markdown", "element_id": "actions_status", "content": "\n".join(lines)}] if lines else []


def hhmm(when: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(when, timezone.utc).astimezone(zone).strftime("%H:%M")


def _button(view: ActionView, element_id: str, text: str, action: str, arg: str = "", *, kind: str = "default",
            confirm: str | None = None) -> dict:
    button = {"tag": "button", "element_id": element_id, "type": kind, "size": "small",
              "text": {"tag": "plain_text", "content": text},
              "behaviors": [{"type": "callback", "value": button_value(view.key, view.ref, view.chat, action, arg)}]}
    if confirm:   # a confirm needs a title, or older clients may not react (§7)
        button["confirm"] = {"title": {"tag": "plain_text", "content": confirm},
                             "text": {"tag": "plain_text", "content": "Everyone in this chat will see who did it."}}
    return button


def _buttons(view: ActionView) -> dict:
    if view.silenced_by:
        buttons = [_button(view, "actions_expire", "Expire silence", "expire", kind="danger",
                           confirm="Expire the silence of this alert group?")]
    else:
        buttons = [_button(view, f"actions_silence_{i}", f"Silence {label}", "silence", label,
                           confirm=f"Silence this alert group for {label}?")
                   for i, label in enumerate(view.durations)]
    buttons.append(_button(view, "actions_ack", "Acknowledge", "ack", kind="primary"))
    return {"tag": "column_set", "flex_mode": "flow", "horizontal_spacing": "small",
            "columns": [{"tag": "column", "width": "auto", "elements": [b]} for b in buttons]}
