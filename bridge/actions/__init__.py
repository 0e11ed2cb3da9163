"""Card actions (issue 14): a tap on a Silence, Expire silence or Acknowledge button of an
app-bot card, from either channel (the HTTP callback, bridge.web.callback; the long
connection's `events` process), already decrypted and verified as Feishu's.

    value signed for this chat?      no -> "This button is not valid here" (forged)
    operator in actions.allowed_users (when set)?   no -> denied
    the group (records.group_ref) still known?      no -> unknown_group
    silence  one claim at a time (a double tap makes one silence) -> Alertmanager or
             Grafana, within actions.timeout -> recorded -> "Silenced for 1h" + the card
    expire   the group's silence expired there -> forgotten -> "Silence expired" + the card
    ack      recorded -> "Acknowledged" + the card (and no 加急 for this firing)

The answer is the callback body Feishu documents (§6.5): a toast, and the card updated
(the first part as rendered, with the action lines of what the store knows now), which
Feishu shows everyone since the card is shared. When Alertmanager cannot do it, a toast
says so in words and the card is left as it is. `tap` never raises: Feishu shows an error
of its own for a non-200 answer, which says nothing useful.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable
from zoneinfo import ZoneInfo

from ..clock import Clock
from ..config import Bot, Config
from ..metrics import Metrics
from ..render.actions import ActionView, Tapped, button_key, decorate, hhmm, verify
from ..silences import SilenceError, SilenceGone, Silences
from ..store import Outbox
from ..store.records import GroupActions, Silence

# Names looked up through the contact API (bot, open_id, timeout) -> name or None.
Names = Callable[[Bot, str, float], "str | None"]
NAME_TIMEOUT = 0.4    # of the 3 s Feishu gives the answer (§6.5)
TAP_BUDGET = 2.7      # the answer's share of those 3 s: the silence call gets what is left
CLAIM_HOLD = 10.0     # a claim outlives the silence call's deadline, never a tap's wait


@dataclass(frozen=True)
class Tap:
    """One tap as read from the callback."""

    app: str
    open_id: str
    chat: str
    message_id: str
    value: Any


class Actions:
    def __init__(self, config: Config, store: Outbox, silences: Silences, *, clock: Clock, log: logging.Logger,
                 metrics: Metrics | None = None, names: Names | None = None):
        self.config = config
        self.store = store
        self.silences = silences
        self.clock = clock
        self.log = log
        self.metrics = metrics
        self.names = names

    def tap(self, app: str, callback: dict) -> dict:
        """The answer to a card.action.trigger callback (schema 2.0) for the app named `app`."""
        action = "unknown"
        try:
            tap = _read(app, callback)
            if tap is None:
                return self._refused(action, "forged", app, None, "This tap could not be read.")
            tapped = self._verified(tap)
            if tapped is None:
                return self._refused(action, "forged", app, tap, "This button is not valid here: it is out of date "
                                                                 "or was not made by this bridge.")
            action = tapped.action
            allowed = self.config.actions.allowed_users
            if allowed and tap.open_id not in allowed:
                return self._refused(action, "denied", app, tap, "You are not among the people allowed to act "
                                                                 "on alerts from this card.")
            group = self.store.group_actions(tapped.ref)
            bot = self.config.bots.get(group.bot) if group is not None else None
            if group is None or bot is None or bot.app is None or bot.app.name != app or group.target.chat != tap.chat:
                return self._refused(action, "unknown_group", app, tap, "The bridge no longer knows this alert "
                                                                        "group.")
            if action == "silence":
                return self._silence(bot, group, tap, tapped.arg)
            if action == "expire":
                return self._expire(bot, group, tap)
            return self._ack(bot, group, tap)
        except Exception:
            self.log.exception("a card action failed", extra={"event": "card_action_failed", "app": app,
                                                              "action": action})
            self._count(action, "error")
            return toast("error", "The bridge failed to do that; nothing may have changed. See its log.")

    # -- the actions ---------------------------------------------------------------------------
    def _silence(self, bot: Bot, group: GroupActions, tap: Tap, label: str) -> dict:
        seconds = dict(self.config.actions.silence_durations).get(label)
        if seconds is None:
            return self._refused("silence", "stale", bot.app.name if bot.app else "", tap,
                                 f"Silence {label} is no longer offered; the card shows the current choices.")
        if not group.target.matchers:
            self._count("silence", "failed")
            return toast("error", "Not silenced: this group has no group labels (Alertmanager's group_by) to "
                                  "silence exactly it by.")
        if not self.store.claim_silence(group.ref, CLAIM_HOLD):
            now = self.store.group_actions(group.ref) or group
            self._count("silence", "already")
            if now.silenced(self.clock.now()):
                return self._answer(bot, now, "info", f"Already silenced by {now.silenced_by} until "
                                                      f"{self._hhmm(now.silenced_until or 0.0)}.")
            return toast("info", "Someone is silencing this group right now.")
        began = self.clock.monotonic()
        name = self._name(bot, tap.open_id)
        start = self.clock.now()
        try:
            where = self.silences.where(group.target.source, group.target.external_url)
            silence_id = self.silences.create(
                where, group.target.matchers, start, start + seconds, name,
                f"Silenced for {label} from the Feishu card of bot {bot.name} in chat {tap.chat} by {name} "
                f"({tap.open_id}), through feishu-alert-bridge",
                timeout=max(0.2, TAP_BUDGET - (self.clock.monotonic() - began)))
        except SilenceError as exc:
            self.store.settle_silence(group.ref, None)
            return self._failed("silence", group, tap, f"Not silenced: {exc}.")
        except BaseException:
            self.store.settle_silence(group.ref, None)
            raise
        self.store.settle_silence(group.ref, Silence(silence_id, name, start + seconds, where.silence_url(silence_id)))
        self._done("silence", group, tap, silence_id=silence_id, until=start + seconds)
        return self._answer(bot, self.store.group_actions(group.ref) or group, "success", f"Silenced for {label}.")

    def _expire(self, bot: Bot, group: GroupActions, tap: Tap) -> dict:
        if group.silence_id is None:
            self._count("expire", "already")
            return self._answer(bot, group, "info", "This group has no silence made from its card.")
        words = "Silence expired."
        try:
            self.silences.expire(self.silences.where(group.target.source, group.target.external_url),
                                 group.silence_id, timeout=TAP_BUDGET)
        except SilenceGone as exc:
            words = f"{exc}: the card no longer shows it."
        except SilenceError as exc:
            return self._failed("expire", group, tap, f"Silence not expired: {exc}.")
        self.store.expire_silence(group.ref, group.silence_id)
        self._done("expire", group, tap, silence_id=group.silence_id)
        return self._answer(bot, self.store.group_actions(group.ref) or group, "success", words)

    def _ack(self, bot: Bot, group: GroupActions, tap: Tap) -> dict:
        name = self._name(bot, tap.open_id)
        self.store.acknowledge(group.ref, name)
        self._done("ack", group, tap)
        return self._answer(bot, self.store.group_actions(group.ref) or group, "success",
                            "Acknowledged: the chat sees you are on it.")

    # -- helpers --------------------------------------------------------------------------------
    def _verified(self, tap: Tap) -> Tapped | None:
        app = self.config.apps.get(tap.app)
        return verify(button_key(app.app_secret.reveal()), tap.value, tap.chat) if app is not None else None

    def _name(self, bot: Bot, open_id: str) -> str:
        """The person's name for createdBy and the card; their open_id when the app may not
        read names (the contact scope, §8.3) or the lookup is slow."""
        if self.names is not None:
            try:
                name = self.names(bot, open_id, NAME_TIMEOUT)
            except Exception:   # a name is a nicety: never worth failing the tap
                self.log.exception("looking up a name failed", extra={"event": "name_lookup_failed"})
                name = None
            if name:
                return name
        return open_id

    def _answer(self, bot: Bot, group: GroupActions, kind: str, words: str) -> dict:
        """A toast and the card as it shows now."""
        now = self.clock.now()
        card = self.store.card(bot.name, group.group_key)
        silenced = group.silenced(now)
        spec = self.config.actions
        view = ActionView(button_key(bot.app.app_secret.reveal()) if bot.app else b"", group.ref, group.target.chat,
                          tuple(label for label, _ in spec.silence_durations), self._zone(),
                          card is None or not card.closed, group.acked_by, group.acked_at,
                          group.silenced_by if silenced else None, group.silenced_until if silenced else None,
                          group.silence_url if silenced else None)
        message = decorate(group.target.body, view)
        answer = toast(kind, words)
        if isinstance(message.get("card"), dict) and message["card"].get("schema") == "2.0":
            answer["card"] = {"type": "raw", "data": message["card"]}
        return answer

    def _zone(self) -> ZoneInfo:
        return self.config.timezone

    def _hhmm(self, when: float) -> str:
        return hhmm(when, self._zone())

    def _done(self, action: str, group: GroupActions, tap: Tap, **more: Any) -> None:
        self._count(action, "ok")
        self.log.info("card action %s on group %s by %s", action, group.group_key, tap.open_id,
                      extra={"event": "card_action", "action": action, "bot": group.bot, "group_key": group.group_key,
                             "open_id": tap.open_id, "chat": tap.chat, **more})

    def _failed(self, action: str, group: GroupActions, tap: Tap, words: str) -> dict:
        self._count(action, "failed")
        self.log.warning("card action %s on group %s failed: %s", action, group.group_key, words,
                         extra={"event": "card_action_failed", "action": action, "bot": group.bot,
                                "group_key": group.group_key, "open_id": tap.open_id})
        return toast("error", words)   # no card: it stays as it was

    def _refused(self, action: str, result: str, app: str, tap: Tap | None, words: str) -> dict:
        self._count(action, result)
        self.log.warning("card action refused (%s): %s", result, words,
                         extra={"event": "card_action_refused", "result": result, "app": app,
                                "open_id": tap.open_id if tap else None, "chat": tap.chat if tap else None})
        return toast("error", words)

    def _count(self, action: str, result: str) -> None:
        if self.metrics is not None:
            self.metrics.card_action(action, result)


def toast(kind: str, words: str) -> dict:
    return {"toast": {"type": kind, "content": words}}


def _read(app: str, callback: Any) -> Tap | None:
    event = callback.get("event") if isinstance(callback, dict) else None
    if not isinstance(event, dict):
        return None
    operator, action, context = (event.get(k) for k in ("operator", "action", "context"))
    if not all(isinstance(x, dict) for x in (operator, action, context)):
        return None
    open_id, chat = operator.get("open_id"), context.get("open_chat_id")   # type: ignore[union-attr]
    if not isinstance(open_id, str) or not isinstance(chat, str):
        return None
    message_id = context.get("open_message_id")   # type: ignore[union-attr]
    return Tap(app, open_id, chat, message_id if isinstance(message_id, str) else "",
               action.get("value"))   # type: ignore[union-attr]
