"""What every outbox backend must do for app bots (issue 13), through bridge.store.Outbox
alone: each group's card, written with the send that changed it and fenced like it; the
apps' tokens, shared by every process; prune forgetting both when they are of no use.

Runs once per backend in conftest.BACKENDS, like test_contract.py."""

from __future__ import annotations

from bridge.store import CARDS_KEPT
from bridge.store.records import Card, CardChange, CardPart
from outbox_messages import msg


def sent_with(outbox, change: CardChange | None, *, owner: str = "me", last: bool = True, bot: str = "ops") -> bool:
    """Store a message, send it under `owner`'s lease, record it with `change`."""
    (message_id,) = outbox.store([msg(1, bot=bot, group=change.group_key if change else "g1")]).ids
    outbox.acquire(bot, owner)
    send_id = outbox.claim(message_id, bot, owner, record=True)
    return outbox.mark_sent(message_id, send_id, bot, owner, 0, last=last, card=change)


def test_a_group_has_no_card_until_one_is_sent(outbox):
    assert outbox.card("ops", "g1") is None
    assert sent_with(outbox, None)
    assert outbox.card("ops", "g1") is None, "a send without a card change leaves none"


def test_a_posted_card_is_remembered_with_the_send(outbox, clock, connect):
    assert sent_with(outbox, CardChange("g1", part=0, message_id="om_1", shown=("f1",)))
    card = connect().card("ops", "g1")   # another process sees it
    assert card == Card((CardPart("om_1", clock.now()),), ("f1",), closed=False, buzzed=False, updated=clock.now())
    assert outbox.card("other", "g1") is None and outbox.card("ops", "g2") is None


def test_changes_apply_in_turn_parts_in_order(outbox, clock):
    start = clock.now()
    sent_with(outbox, CardChange("g1", part=0, message_id="om_1"))
    clock.step(1)
    sent_with(outbox, CardChange("g1", part=1, message_id="om_2", buzzed=True))
    clock.step(1)
    sent_with(outbox, CardChange("g1", part=0, message_id="om_3", shown=("a", "b"), parts=2))
    card = outbox.card("ops", "g1")
    assert card.parts == (CardPart("om_3", start + 2), CardPart("om_2", start + 1))
    assert (card.firing, card.closed, card.buzzed) == (("a", "b"), False, True)
    sent_with(outbox, CardChange("g1", shown=(), parts=1))
    card = outbox.card("ops", "g1")
    assert (card.parts, card.closed, card.firing) == ((CardPart("om_3", start + 2),), True, ())


def test_a_new_firing_reopens_and_fresh_cards_replace_the_parts(outbox, clock):
    sent_with(outbox, CardChange("g1", part=0, message_id="om_1", buzzed=True, shown=()))
    assert outbox.card("ops", "g1").closed
    sent_with(outbox, CardChange("g1", reopen=True, fresh=True, part=0, message_id="om_9"))
    card = outbox.card("ops", "g1")
    assert [p.message_id for p in card.parts] == ["om_9"] and not card.closed and not card.buzzed


def test_a_sender_that_lost_its_lease_changes_no_card(outbox, clock):
    (message_id,) = outbox.store([msg(1)]).ids
    outbox.acquire("ops", "old")
    send_id = outbox.claim(message_id, "ops", "old", record=True)
    clock.step(60)                       # the lease lapses; another takes the bot and the message
    outbox.acquire("ops", "new")
    assert not outbox.mark_sent(message_id, send_id, "ops", "old", 0, card=CardChange("g1", part=0, message_id="om_x"))
    assert outbox.card("ops", "g1") is None


def test_cards_unchanged_for_14_days_are_pruned(outbox, clock):
    sent_with(outbox, CardChange("g1", part=0, message_id="om_1"))
    sent_with(outbox, CardChange("g2", part=0, message_id="om_2"))
    clock.step(CARDS_KEPT - 1)
    sent_with(outbox, CardChange("g2", shown=("f",)))
    clock.step(2)
    outbox.prune(clock.now())
    assert outbox.card("ops", "g1") is None and outbox.card("ops", "g2") is not None


def test_app_tokens_are_shared_replaced_and_pruned_once_expired(outbox, connect, clock):
    assert outbox.app_token("https://open.feishu.cn|cli_1") is None
    outbox.keep_app_token("https://open.feishu.cn|cli_1", "t-one", clock.now() + 7200)
    other = connect()
    assert other.app_token("https://open.feishu.cn|cli_1") == ("t-one", clock.now() + 7200)
    other.keep_app_token("https://open.feishu.cn|cli_1", "t-two", clock.now() + 7300)
    assert outbox.app_token("https://open.feishu.cn|cli_1") == ("t-two", clock.now() + 7300)
    assert outbox.app_token("https://open.larksuite.com|cli_1") is None
    clock.step(7301)
    outbox.prune(clock.now())
    assert outbox.app_token("https://open.feishu.cn|cli_1") is None


def test_tokens_are_not_listed(outbox):
    outbox.keep_app_token("k", "t-secret-token", 1e12)
    outbox.store([msg(1)])
    assert "t-secret-token" not in repr(outbox.list()) + repr(outbox.depths())


# -- emails looked up through an app's contact API ---------------------------------------------
FEISHU, LARK = "https://open.feishu.cn|cli_1", "https://open.larksuite.com|cli_1"


def test_looked_up_users_are_shared_by_every_process_per_app(outbox, connect, clock):
    assert outbox.app_users(FEISHU, ["a@example.com"]) == {}
    outbox.keep_app_users(FEISHU, {"a@example.com": ("ou_a", clock.now() + 100), "typo@example.com": (None, 50.0)})
    other = connect()
    assert other.app_users(FEISHU, ["a@example.com", "typo@example.com", "b@example.com", "a@example.com"]) == {
        "a@example.com": ("ou_a", clock.now() + 100), "typo@example.com": (None, 50.0)}
    assert other.app_users(LARK, ["a@example.com"]) == {}, "open_ids are per app"
    other.keep_app_users(FEISHU, {"typo@example.com": ("ou_t", 70.0)})
    assert outbox.app_users(FEISHU, ["typo@example.com"]) == {"typo@example.com": ("ou_t", 70.0)}
    outbox.keep_app_users(FEISHU, {})


def test_expired_users_are_returned_until_pruned(outbox, clock):
    outbox.keep_app_users(FEISHU, {"a@example.com": ("ou_a", clock.now() + 10),
                                   "b@example.com": (None, clock.now() + 1000)})
    clock.step(11)
    assert outbox.app_users(FEISHU, ["a@example.com"]) == {"a@example.com": ("ou_a", clock.now() - 1)}
    outbox.prune(clock.now())
    assert outbox.app_users(FEISHU, ["a@example.com", "b@example.com"]) == {
        "b@example.com": (None, clock.now() + 989)}


def test_many_emails_at_once(outbox):
    emails = [f"user{i}@example.com" for i in range(1200)]
    outbox.keep_app_users(FEISHU, {e: (f"ou_{i}", 1e12) for i, e in enumerate(emails)})
    assert len(outbox.app_users(FEISHU, emails)) == 1200
