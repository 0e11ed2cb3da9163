"""The fake Open API's world: apps and their tokens, chats and who is in them, messages as
the chat shows them, and the rules each call must pass. No HTTP here (server.py).

Facts from ../shared/feishu-app-protocol.md, by section:
  tokens      at most 2 h; a fetch with >= 30 min left returns the same token, under 30 min
              a new one, and the old stays valid until it expires (§1.1)
  send        content a JSON string; uuid <= 50 chars, one message per uuid within 1 h
              (what a repeat returns is UNCONFIRMED: here, the first message again) (§2.1);
              bot must be in the chat (230002); card or post over 30 KB: 230025 (§2.3)
  patch       interactive only, the same app, not recalled (230011) or deleted (230110),
              sent within 14 days (230031), update_multi true before and after (§3.2;
              the code for a card without it is UNCONFIRMED: 230099 here)
  reply       into the card's thread (§4)
  urgent      only the bot's own message (230012), the bot in the chat (230002), the group
              allowing urgent (230052); users not in the chat come back in
              invalid_user_id_list, all of them invalid is 230001; 200 unread per user
              (230023); sms and phone spend the tenant's quota (230024) (§5)
  contact     batch_get_id by email; an unknown email's entry has no user_id (the shape is
              UNCONFIRMED) (§8.1)
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from . import answers as a

TOKEN_LIFE = 7200          # §1.1
TOKEN_RENEW_BELOW = 1800   # a fetch with less left than this gets a new token (§1.1)
UUID_WINDOW = 3600         # §2.1
PATCH_WINDOW = 14 * 86400  # §3.2
CARD_LIMIT = 30 * 1024     # §2.3
TEXT_LIMIT = 150 * 1024
URGENT_UNREAD_MAX = 200    # §5.2
URGENT_USERS_MAX = 200     # §5.1


@dataclass
class App:
    app_id: str
    secret: str
    scopes: set[str]
    bot_on: bool = True                         # the bot capability, in a published version
    tokens: dict[str, float] = field(default_factory=dict)   # token -> expires (wall clock)
    fetches: int = 0


@dataclass
class Chat:
    chat_id: str
    members: set[str] = field(default_factory=set)      # open_ids
    bots: set[str] = field(default_factory=set)         # app_ids
    urgent_allowed: bool = True                         # 群管理: who may send urgent
    threads: bool = True                                # supports reply in thread


@dataclass
class Message:
    message_id: str
    chat_id: str
    app_id: str
    msg_type: str
    content: dict                    # as last set (a card is replaced whole by a PATCH)
    created: float                   # wall clock
    uuid: str = ""
    root_id: str = ""                # a reply's thread root
    updates: int = 0
    recalled: bool = False
    deleted: bool = False
    urgent: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)   # (kind, open_ids buzzed)

    def data(self) -> dict:
        """The `data` of a create or reply answer (§2.2)."""
        ms = str(int(self.created * 1000))
        found = {"message_id": self.message_id, "msg_type": self.msg_type, "chat_id": self.chat_id,
                 "create_time": ms, "update_time": ms, "deleted": False, "updated": False,
                 "sender": {"id": self.app_id, "id_type": "app_id", "sender_type": "app"},
                 "body": {"content": json.dumps(self.content, ensure_ascii=False)}}
        if self.root_id:
            found.update(root_id=self.root_id, parent_id=self.root_id, thread_id="omt_" + self.root_id[3:15])
        return found


def new_message_id() -> str:
    return "om_" + secrets.token_hex(16)


def new_token() -> str:
    return "t-" + secrets.token_hex(20)


class World:
    """Everything the fake knows. Not thread-safe by itself: the server holds its lock."""

    def __init__(self) -> None:
        self.apps: dict[str, App] = {}
        self.chats: dict[str, Chat] = {}
        self.messages: dict[str, Message] = {}
        self.order: list[str] = []                     # message ids as created
        self.uuids: dict[tuple[str, str], tuple[str, float]] = {}   # (app, uuid) -> (message id, when)
        self.emails: dict[str, str] = {}               # email -> open_id
        self.names: dict[str, str] = {}                # open_id -> name
        self.unread_urgent: dict[str, int] = {}        # open_id -> unread urgent messages
        self.urgent_quota = 100                        # the tenant's sms/phone urgent quota

    # -- tokens -----------------------------------------------------------------------------
    def token(self, app_id: object, secret: object, now: float) -> tuple[str, int]:
        app = self.apps.get(app_id) if isinstance(app_id, str) else None
        if app is None:
            raise a.Refused(a.APP_UNAUTHORIZED, f"token: unknown app {app_id!r}")
        if secret != app.secret:
            raise a.Refused(a.WRONG_SECRET, "token: wrong app secret")
        app.fetches += 1
        live = {t: e for t, e in app.tokens.items() if e > now}
        app.tokens = live
        newest = max(live.items(), key=lambda item: item[1], default=None)
        if newest is not None and newest[1] - now >= TOKEN_RENEW_BELOW:
            return newest[0], int(newest[1] - now)
        token = new_token()
        app.tokens[token] = now + TOKEN_LIFE
        return token, TOKEN_LIFE

    def caller(self, authorization: str | None, now: float, call: str) -> App:
        """The app whose token authorises the request, if it may make `call`."""
        if not authorization or not authorization.startswith("Bearer "):
            raise a.Refused(a.NEED_TOKEN, "auth: no bearer token")
        token = authorization.removeprefix("Bearer ")
        for app in self.apps.values():
            if app.tokens.get(token, 0) > now:
                break
        else:
            raise a.Refused(a.TOKEN_INVALID, "auth: unknown or expired token")
        if not app.scopes & set(a.SCOPES[call]):
            raise a.Refused(a.NO_SCOPE, f"scope: {call} needs one of {a.SCOPES[call]}",
                            detail=f"[{', '.join(a.SCOPES[call])}].")
        return app

    # -- messages ---------------------------------------------------------------------------
    def create(self, app: App, chat_id: object, msg_type: object, content: object, uuid: object, now: float,
               root: Message | None = None) -> tuple[Message, bool]:
        """A new message in the chat (or a reply into root's thread); (message, new?)."""
        if uuid is not None and (not isinstance(uuid, str) or len(uuid) > 50):
            raise a.Refused(a.INVALID_PARAM, f"uuid {uuid!r}", detail="uuid")
        if uuid:
            seen = self.uuids.get((app.app_id, uuid))
            if seen is not None and now - seen[1] < UUID_WINDOW:
                return self.messages[seen[0]], False
        chat = self.chats.get(chat_id) if isinstance(chat_id, str) else None
        if chat is None:
            raise a.Refused(a.BAD_RECEIVE_ID, f"send: no chat {chat_id!r}")
        if not app.bot_on:
            raise a.Refused(a.BOT_OFF, "send: bot capability off")
        if app.app_id not in chat.bots:
            raise a.Refused(a.BOT_NOT_IN_CHAT, f"send: app {app.app_id} not in {chat.chat_id}")
        parsed = parse_content(msg_type, content)
        message = Message(new_message_id(), chat.chat_id, app.app_id, str(msg_type), parsed, now, uuid or "",
                          root_id=root.root_id or root.message_id if root is not None else "")
        self.messages[message.message_id] = message
        self.order.append(message.message_id)
        if uuid:
            self.uuids[(app.app_id, uuid)] = (message.message_id, now)
        return message, True

    def existing(self, app: App, message_id: str, *, own: int | None = a.NO_PERMISSION) -> Message:
        """A message the app may act on: its own (else the code `own`; None: anyone's), not
        recalled or deleted."""
        message = self.messages.get(message_id)
        if message is None:
            raise a.Refused(a.INVALID_PARAM, f"no message {message_id!r}", detail="message_id")
        if message.deleted:
            raise a.Refused(a.DELETED, f"{message_id} deleted")
        if message.recalled:
            raise a.Refused(a.RECALLED, f"{message_id} recalled")
        if own is not None and message.app_id != app.app_id:
            raise a.Refused(own, f"{message_id} was sent by {message.app_id}")
        return message

    def patch(self, app: App, message_id: str, content: object, now: float) -> Message:
        message = self.existing(app, message_id)
        if message.msg_type != "interactive":
            raise a.Refused(a.INVALID_PARAM, "patch: not a card", detail="msg_type")
        if now - message.created > PATCH_WINDOW:
            raise a.Refused(a.TOO_OLD, f"patch: {message_id} is {(now - message.created) / 86400:.1f} days old")
        card = parse_content("interactive", content)
        for which, shown in (("sent", message.content), ("new", card)):
            if not shared(shown):
                raise a.Refused(a.CARD_CONTENT, f"patch: the {which} card does not declare update_multi true",
                                detail="ErrCode: 200000; ErrMsg: update_multi must be true")
        message.content = card
        message.updates += 1
        return message

    def urgent(self, app: App, message_id: str, kind: str, users: object) -> list[str]:
        """Buzz; the users not in the chat (invalid_user_id_list)."""
        message = self.existing(app, message_id, own=a.NOT_SENDER)
        chat = self.chats[message.chat_id]
        if app.app_id not in chat.bots:
            raise a.Refused(a.BOT_NOT_IN_CHAT, "urgent: the bot left the chat")
        if not chat.urgent_allowed:
            raise a.Refused(a.URGENT_REFUSED, "urgent: the group does not let the bot buzz")
        if not isinstance(users, list) or not users or len(users) > URGENT_USERS_MAX \
                or not all(isinstance(u, str) for u in users):
            raise a.Refused(a.INVALID_PARAM, f"urgent: user_id_list {users!r}", detail="user_id_list")
        valid = [u for u in users if u in chat.members]
        if not valid:
            raise a.Refused(a.INVALID_PARAM, "urgent: no user in the chat", detail="user_id_list")
        if any(self.unread_urgent.get(u, 0) >= URGENT_UNREAD_MAX for u in valid):
            raise a.Refused(a.URGENT_UNREAD, "urgent: a user has 200 unread urgent messages")
        if kind != "app":
            if self.urgent_quota < len(valid):
                raise a.Refused(a.URGENT_QUOTA, "urgent: the tenant's quota is spent")
            self.urgent_quota -= len(valid)
        for user in valid:
            self.unread_urgent[user] = self.unread_urgent.get(user, 0) + 1
        message.urgent.append((kind, tuple(valid)))
        return [u for u in users if u not in valid]


def shared(card: dict) -> bool:
    """Whether a card is shared, so that it can be updated: update_multi true, explicitly in
    1.0; 2.0 has it on by default and cannot turn it off (§3.2)."""
    config = card.get("config") if isinstance(card.get("config"), dict) else {}
    if card.get("schema") == "2.0":
        return config.get("update_multi", True) is True
    return config.get("update_multi") is True


def parse_content(msg_type: object, content: object) -> dict:
    """The content string of a create, reply or patch, checked as Feishu would (§2.1, §2.3)."""
    if not isinstance(content, str):
        raise a.Refused(a.INVALID_PARAM, f"content is a {type(content).__name__}, not a JSON string",
                        detail="content")
    limit = TEXT_LIMIT if msg_type == "text" else CARD_LIMIT
    if len(content.encode("utf-8")) > limit:
        raise a.Refused(a.TOO_LONG, f"content of {len(content.encode())} bytes over {limit}")
    try:
        parsed = json.loads(content)
    except ValueError:
        raise a.Refused(a.INVALID_PARAM, "content is not JSON", detail="content") from None
    if not isinstance(parsed, dict):
        raise a.Refused(a.INVALID_PARAM, "content is not a JSON object", detail="content")
    from . import content as checks   # the card and mention rules

    problem = checks.problem(msg_type, parsed)
    if problem:
        code, why, detail = problem
        raise a.Refused(code, why, detail=detail)
    return parsed
