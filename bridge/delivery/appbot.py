"""App bots: one living card per alert group, updated in place, with thread replies and 加急.

A message of an app bot is sent as a plan of requests, one per sender step, each paced,
claimed, retried and recorded like a custom bot's part (so a storm keeps to Feishu's
windows and a crash repeats at most the request in flight). `plan` makes it when the
message is rendered, from the cards, the message's facts (bridge.compose) and the
group's card as the store knows it; `AppSteps.run` carries out one request when due.

    card    part i of the group's card: updated in place (PATCH) when the group has a
            card with that part that Feishu still updates (14 days, a card, not gone),
            else posted anew (uuid: a retry after a lost answer posts nothing more).
            A card too old to update (by its age, or Feishu's answer), or deleted or
            recalled, is replaced by a new card in the same step: the store forgets the
            old message id with the send, one log line says so (`card_gone`), and a
            too-old card, still in the chat, gets one reply in its thread pointing at the
            new one. A new firing after a resolved card, or `update_in_place: false`,
            posts new cards.
    stub    a part the group no longer needs (it fits in fewer now) becomes a grey
            note pointing at the card above: the chat never shows two live cards.
    reply   a short line in the card's thread when the state changed in a way the bot's
            `thread_replies` names, because an in-place update notifies no one.
    urgent  加急 for the people of `urgent`, once per group firing, when a firing alert
            matches its matchers; its failure is logged with advice and never blocks
            the card (it comes after it, and a refusal is not retried). SMS or phone
            urgent refused for the company's spent quota is sent in the app instead.
            Not sent once someone acknowledged the group from its card.

With card actions on, the first part gets its action lines and buttons when it is sent
(bridge.render.actions), from what the store knows of the group then.

What a request changed about the group's card (a message id, buzzed, what the card shows)
is written with its outcome (Outbox.mark_sent(card=...)).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ..clock import Clock
from ..config import Bot
from ..limits import APP_BUDGET_BYTES, APP_UPDATE_MARGIN, APP_UPDATE_WINDOW, app_size
from ..model import GroupFacts, Mention
from ..notify import AppMessages
from ..notify.feishu_app.answers import TOO_OLD
from ..notify.outcome import MESSAGE_GONE, OK, URGENT_QUOTA, Outcome, SendResult
from ..render.actions import ActionView, button_key, decorate
from ..render.filters import format_duration
from ..store.records import Card, CardChange, CardPart, GroupActions, GroupTarget, Head, group_ref

if TYPE_CHECKING:
    from ..store import Outbox
    from .outcomes import Counts

NAMES_SHOWN = 5     # a reply names this many new alerts, then "…"


# -- the plan (pure) ------------------------------------------------------------------------
def plan(bot: Bot, bodies: list[dict], facts: GroupFacts, card: Card | None) -> list[dict]:
    """The requests that bring the chat to this message: cards, stubs, a reply, urgent.
    The last carries what the card shows afterwards (`shown`, `parts`)."""
    new_firing = card is None or (card.closed and bool(facts.firing))
    fresh = new_firing or not bot.update_in_place
    steps: list[dict[str, Any]] = [{"op": "card", "part": i, "message": body} for i, body in enumerate(bodies)]
    if fresh:
        steps[0].update(fresh=True, reopen=new_firing and card is not None)
    elif card is not None and len(card.parts) > len(bodies):
        steps += [{"op": "stub", "part": j, "message": stub(bodies[0], j + 1, len(bodies))}
                  for j in range(len(bodies), len(card.parts))]
    text = None if fresh else reply_text(bot, facts, card)
    if text:
        steps.append({"op": "reply", "message": {"msg_type": "text", "content": {"text": text}}})
    buzzed = card is not None and card.buzzed and not new_firing
    if bot.urgent is not None and facts.urgent and facts.firing and not buzzed:
        steps.append({"op": "urgent", "kind": bot.urgent.kind,
                      "people": [[m.user_id, m.name, m.email] for m in facts.urgent]})
    if facts.actions is not None:   # the first part's buttons and lines are added when it is sent
        steps[0]["actions"] = dict(facts.actions)
    steps[-1].update(shown=list(facts.firing), parts=len(bodies))
    return steps


def reply_text(bot: Bot, facts: GroupFacts, card: Card | None) -> str | None:
    """The thread reply for the change from what the card shows to `facts`, if the bot
    wants one for it; none for a new card (posting it notifies already)."""
    if card is None or card.closed or not card.parts:
        return None
    before, now = set(card.firing), set(facts.firing)
    if not now:
        if "resolved" not in bot.thread_replies:
            return None
        took = format_duration(facts.ended - facts.started) if facts.started and facts.ended else ""
        return f"✅ Resolved after {took}" if took else "✅ Resolved"
    new = [name or "alert" for fp, name in zip(facts.firing, facts.firing_names) if fp not in before]
    if new and "firing" in bot.thread_replies:
        names = ", ".join(dict.fromkeys(new[:NAMES_SHOWN])) + ("…" if len(new) > NAMES_SHOWN else "")
        return f"🔴 {len(new)} more firing: {names}"
    gone = before - now
    if gone and "partly_resolved" in bot.thread_replies:
        return f"✅ {len(gone)} resolved, {len(now)} still firing"
    return None


def stub(first: dict, part: int, parts: int) -> dict:
    """What a part the group no longer needs shows: a grey note, in the card's own schema
    (whether an update may change a card's schema is UNCONFIRMED, feishu-app-protocol.md §3.2)."""
    title = {"tag": "plain_text", "content": f"Part {part} merged into the card above"}
    note = {"tag": "markdown", "content": f"The alert group now fits in {parts} part(s): see the card above."}
    header = {"title": title, "template": "grey"}
    if first.get("card", {}).get("schema") == "2.0":
        card = {"schema": "2.0", "config": {"update_multi": True}, "header": header, "body": {"elements": [note]}}
    else:
        card = {"config": {"update_multi": True}, "header": header, "elements": [note]}
    return {"msg_type": "interactive", "card": card}


def moved() -> dict:
    """The reply in the thread of a card Feishu no longer updates (14 days): where the group went."""
    return {"msg_type": "text", "content": {"text": "⤵️ This card is no longer updated (Feishu updates a card for "
                                                    "14 days): the alert group continues in a new card below."}}


def uuid_for(bot: str, head: Head, index: int, what: str = "") -> str:
    """The idempotency key of a message's request: the same for every retry of it (and
    after a restart), different for any other request, at most 50 characters. The row's
    creation time joins its id, so a row id reused after a prune is not the same message.
    `what` tells apart a second request of the same step (the reply of a card replaced)."""
    key = f"{bot}\n{head.group_key}\n{head.id}\n{head.created!r}\n{index}" + (f"\n{what}" if what else "")
    return "fab-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]


# -- carrying a request out -------------------------------------------------------------------
class AppSteps:
    """Carries out one request of an app bot's plan; answers (result, what it changed)."""

    def __init__(self, channel: AppMessages, outbox: Outbox, log: logging.Logger, counts: Counts, clock: Clock):
        self.channel = channel
        self.outbox = outbox
        self.log = log
        self.counts = counts
        self.clock = clock

    def run(self, bot: Bot, head: Head) -> tuple[SendResult, CardChange | None]:
        index = head.sent
        step = head.bodies[index]
        uuid = uuid_for(bot.name, head, index)
        if "op" not in step:   # stored already rendered (send-test): a plain post
            return self.channel.post(bot, step, uuid=uuid), None
        card = self.outbox.card(bot.name, head.group_key)
        root = card.parts[0] if card is not None and card.parts else None
        fields: dict[str, Any] = {}
        if step["op"] == "card":
            found = self._card(bot, head, step, card, uuid, fields)
        elif step["op"] == "stub":
            found = self._stub(bot, step, card)
        elif step["op"] == "reply":
            found = self._reply(bot, head, step, root, uuid)
        else:
            found = self._urgent(bot, head, step, root, fields)
        if found.outcome is not Outcome.SENT:
            return found, None
        if index + 1 >= len(head.bodies):
            fields.update(shown=tuple(step.get("shown", ())), parts=step.get("parts"))
        return found, CardChange(head.group_key, **fields) if fields else None

    def _card(self, bot: Bot, head: Head, step: dict, card: Card | None, uuid: str, fields: dict) -> SendResult:
        done = None
        if step.get("actions") is not None and step["part"] == 0 and bot.app is not None and bot.chat_id is not None:
            done = self._remember(bot, head, step, new=bool(step.get("reopen")) or card is None)
        message = step["message"] if done is None else self._with_actions(bot, head, step, done)
        found, message_id = self._card_part(bot, head, step, card, uuid, fields, message)
        if done is not None and found.outcome is Outcome.SENT and message_id:
            self._catch_up(bot, head, step, done, message_id)
        return found

    def _card_part(self, bot: Bot, head: Head, step: dict, card: Card | None, uuid: str, fields: dict,
                   message: dict) -> tuple[SendResult, str | None]:
        """Update the part's card in place, or post it: the answer and the message id it is in."""
        part = step["part"]
        kept = None if step.get("fresh") or card is None or part >= len(card.parts) else card.parts[part]
        replaced: tuple[CardPart, bool, str] | None = None   # the part given up on: (it, still in the chat, why)
        if kept is not None and message.get("msg_type") == "interactive":
            age = self.clock.now() - kept.sent
            if age >= APP_UPDATE_WINDOW - APP_UPDATE_MARGIN:
                replaced = (kept, True, f"sent {age / 86400:.1f} days ago; Feishu updates a card for 14 days")
            else:
                found = self.channel.update(bot, kept.message_id, message)
                self.counts.app_card(bot.name, "updated", found)
                if found.reason != MESSAGE_GONE:
                    return found, kept.message_id
                replaced = (kept, found.code == TOO_OLD, f"{found.detail} ({found.code})")
        found = self.channel.post(bot, message, uuid=uuid)
        self.counts.app_card(bot.name, "posted", found)
        if found.outcome is Outcome.SENT and found.message_id:
            fields.update(part=part, message_id=found.message_id, fresh=bool(step.get("fresh")),
                          reopen=bool(step.get("reopen")))
            if replaced is not None:
                self._replaced(bot, head, part, replaced, found.message_id, uuid)
        return found, found.message_id

    def _replaced(self, bot: Bot, head: Head, part: int, replaced: tuple[CardPart, bool, str], new: str,
                  uuid: str) -> None:
        """The card (part) `old` could not be updated and `new` was posted instead; the store
        forgets `old` with this send. One log line; and when `old` is still in the chat (too
        old, not deleted or recalled) and is the card's first part, one reply in its thread
        pointing at the new card, so that a reader of the stale card knows where the group
        went. The reply is worth one try: its failure is logged, never retried."""
        old, in_chat, why = replaced
        pointed = ""
        if in_chat and part == 0:
            answer = self.channel.reply(bot, old.message_id, moved(), uuid=uuid_for(bot.name, head, head.sent, "moved"))
            self.counts.thread_reply(bot.name, answer.reason)
            pointed = "; its thread points to the new one" if answer.outcome is Outcome.SENT else \
                f"; its thread could not point to the new one: {answer.advice} ({answer.detail})"
        self.log.info("the card of group %s (part %d, %s) can no longer be updated: %s; posted a new one (%s)%s",
                      head.group_key, part + 1, old.message_id, why, new, pointed,
                      extra={"event": "card_gone", "bot": bot.name, "group_key": head.group_key, "part": part + 1,
                             "old_message_id": old.message_id, "message_id": new})

    def _remember(self, bot: Bot, head: Head, step: dict, *, new: bool) -> GroupActions:
        """Keep the group's target for the taps to come (the first part, as rendered) and
        answer what was done from its card so far, as the store knows it now: read when the
        card is sent, so a card sent after a tap keeps what the tap did."""
        spec = step["actions"]
        target = GroupTarget(bot.chat_id, spec["source"], spec["external_url"], spec["matchers"], step["message"])
        return self.outbox.remember_group(bot.name, head.group_key, target, fresh=new)

    def _with_actions(self, bot: Bot, head: Head, step: dict, done: GroupActions) -> dict:
        """The first part with its action lines and buttons for `done`; undecorated if that
        would not fit Feishu's limit."""
        spec, message = step["actions"], step["message"]
        silenced = done.silenced(self.clock.now())
        view = ActionView(button_key(bot.app.app_secret.reveal()), done.ref, bot.chat_id, tuple(spec["durations"]),
                          ZoneInfo(spec["zone"]), bool(spec["firing"]), done.acked_by, done.acked_at,
                          done.silenced_by if silenced else None, done.silenced_until if silenced else None,
                          done.silence_url if silenced else None)
        decorated = decorate(message, view)
        if app_size(decorated) > APP_BUDGET_BYTES:
            self.log.warning("the card of group %s is sent without its action buttons: with them it would be over "
                             "Feishu's size limit", head.group_key,
                             extra={"event": "actions_left_out", "bot": bot.name, "group_key": head.group_key})
            return message
        return decorated

    def _catch_up(self, bot: Bot, head: Head, step: dict, done: GroupActions, message_id: str) -> None:
        """A tap answered while this card was on its way put its line on the card Feishu
        holds, and this request, decorated before the tap, has just replaced that card with
        one without it; once silenced, Alertmanager sends no update that would bring the line
        back. So read once more, after the request, and if a tap came in between, update the
        card again. Once is enough: a tap after this read is written before it is answered,
        and its answer's card reaches Feishu after this request did."""
        now = self.outbox.group_actions(done.ref)
        if now is None or _shown_by(now) == _shown_by(done):
            return
        found = self.channel.update(bot, message_id, self._with_actions(bot, head, step, now))
        self.counts.app_card(bot.name, "updated", found)
        if found.outcome is not Outcome.SENT:   # the card is out; the next update shows the line
            self.log.warning("the card of group %s may not show the latest tap until its next update: %s (%s)",
                             head.group_key, found.advice, found.detail,
                             extra={"event": "actions_catch_up_failed", "bot": bot.name, "group_key": head.group_key})

    def _stub(self, bot: Bot, step: dict, card: Card | None) -> SendResult:
        if card is None or step["part"] >= len(card.parts):
            return _done("the part is no longer remembered")
        found = self.channel.update(bot, card.parts[step["part"]].message_id, step["message"])
        self.counts.app_card(bot.name, "stubbed", found)
        return _done(found.detail) if found.reason == MESSAGE_GONE else found

    def _reply(self, bot: Bot, head: Head, step: dict, root: CardPart | None, uuid: str) -> SendResult:
        if root is None:
            return _done("no card to reply to")
        found = self.channel.reply(bot, root.message_id, step["message"], uuid=uuid)
        self.counts.thread_reply(bot.name, found.reason)
        if found.outcome is Outcome.PERMANENT:
            # The card is out and up to date; a missing reply is not worth a dead letter.
            self.log.warning("thread reply not sent: %s (%s)", found.advice, found.detail,
                             extra={"event": "reply_failed", "bot": bot.name, "group_key": head.group_key,
                                    "reason": found.reason, "code": found.code})
            return dataclasses.replace(found, outcome=Outcome.SENT)
        return found

    def _urgent(self, bot: Bot, head: Head, step: dict, root: CardPart | None, fields: dict) -> SendResult:
        if root is None:
            return _done("no card to buzz for")
        acked = self.outbox.group_actions(group_ref(bot.name, head.group_key))
        if acked is not None and acked.acked_by:
            fields["buzzed"] = True   # someone is on it: 加急 for this firing is over
            self.log.info("urgent not sent: %s acknowledged the group", acked.acked_by,
                          extra={"event": "urgent_acknowledged", "bot": bot.name, "group_key": head.group_key})
            return _done("acknowledged")
        people = [Mention(*person) for person in step["people"]]
        kind = step["kind"]
        found = self.channel.urgent(bot, root.message_id, kind, people)
        self.counts.urgent(bot.name, kind, found.result.reason)
        if found.result.reason == URGENT_QUOTA and kind != "app":
            # The company's SMS/phone quota is spent: an in-app urgent still reaches them (§5.4).
            self.log.warning("urgent by %s not sent: %s; buzzing in the app instead", kind, found.result.advice,
                             extra={"event": "urgent_degraded", "bot": bot.name, "group_key": head.group_key})
            kind = "app"
            found = self.channel.urgent(bot, root.message_id, kind, people)
            self.counts.urgent(bot.name, kind, found.result.reason)
        result = found.result
        where = {"bot": bot.name, "group_key": head.group_key, "kind": kind, "reason": result.reason,
                 "code": result.code, "buzzed": len(found.buzzed), "not_buzzed": list(found.not_buzzed)}
        if result.outcome is Outcome.RETRY:
            return result
        fields["buzzed"] = True   # sent, or refused for good: not tried again this firing
        if result.outcome is Outcome.PERMANENT:
            self.log.error("urgent not sent: %s (%s)", result.advice, result.detail,
                           extra={"event": "urgent_failed", **where})
            return dataclasses.replace(result, outcome=Outcome.SENT)
        if found.not_buzzed:
            self.log.warning("urgent sent to %d, not to %s: %s", len(found.buzzed), ", ".join(found.not_buzzed),
                             result.advice, extra={"event": "urgent_sent", **where})
        else:
            self.log.info("urgent sent to %d", len(found.buzzed), extra={"event": "urgent_sent", **where})
        return result


def _done(why: str) -> SendResult:
    """A request there was nothing (more) to do for."""
    return SendResult(Outcome.SENT, OK, detail=why)


def _shown_by(done: GroupActions) -> tuple:
    """What of a group's actions its card shows (what a tap changes)."""
    return done.acked_by, done.acked_at, done.silence_id, done.silenced_by, done.silenced_until
