"""The relay: a message from a cron job, a CI step or a script, sent to a bot as alerts are.

POST /send/<bot> (bridge.web.relay) and `feishu-alert-bridge send --direct` hand a request
body to `prepare`: it is read (request.py) and checked against Feishu's shapes (shapes.py),
rendered if it names a template (in the alert templates' sandbox), given its mentions from
the users: directory, the bot's keyword, and cut into parts (parts.py). Only then does
`Relay` store it in the outbox, and the bot's sender delivers it within the bot's rate
limits, with the same retries and dead letters as an alert.

Unlike an alert's, a relayed message is stored rendered (OutgoingMessage.bodies) and the
sender sends those parts as they are. That is right here: the body is the caller's, there
is no alert payload to render again at send time with the configuration then in force,
and the caller must hear now how many requests it becomes and what is wrong with it,
which takes the rendering done now. (So a dead letter retried sends the same parts; the
signature is still made at send time, by the client.)
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

from ..accept import UnknownBot, find_bot, store_messages
from ..config import Bot, Config
from ..errors import PayloadError, TemplateError
from ..mentions import ALL
from ..model import Mention
from ..render import Renderer
from ..store import Outbox
from ..store.health import WriteHealth
from ..store.records import OutgoingMessage
from ..template_files import TEMPLATE_SUFFIX
from .parts import MAX_PARTS, ready
from .request import RelayRequest, read_request
from .shapes import MSG_TYPES, check_message

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["MAX_PARTS", "MSG_TYPES", "NotRelayed", "Prepared", "Relay", "Relayed", "prepare", "relay_bot",
           "relay_templates"]

# The source of a relayed message in the outbox (an alert's is alertmanager or grafana).
SOURCE = "relay"


class NotRelayed(UnknownBot):
    """A bot relay.bots does not list (HTTP 404, as an unknown bot)."""

    def __init__(self, name: object, config: Config):
        # Its own words, not UnknownBot's list of every configured bot.
        super(UnknownBot, self).__init__(f"bot {name!r} takes no relayed messages: relay.bots lists "
                                         f"{', '.join(config.relay.bots)}")


@dataclass(frozen=True)
class Prepared:
    """A relayed message ready to store or send: its requests in order, unsigned."""

    bot: Bot
    bodies: tuple[dict, ...]
    dedupe_key: str | None = None


@dataclass(frozen=True)
class Relayed:
    messages: int             # the Feishu requests it becomes; 0 for a duplicate
    duplicate: bool = False   # its dedupe_key was stored for the bot within delivery.dedupe_window

    def as_json(self) -> dict:
        answer: dict[str, Any] = {"status": "accepted", "messages": self.messages}
        if self.duplicate:
            answer["duplicate"] = True
        return answer


def relay_bot(config: Config, name: object) -> Bot:
    """The bot `name` if the relay may post to it; NotRelayed or UnknownBot otherwise."""
    if config.relay.bots and name not in config.relay.bots:
        raise NotRelayed(name, config)
    return find_bot(config, name)


def relay_templates(config: Config) -> frozenset[str]:
    """The templates a relayed message may name: the NAME.json.j2 files in templates_dir
    (the shipped ones are for alerts)."""
    directory = config.templates_dir
    if directory is None or not directory.is_dir():
        return frozenset()
    return frozenset(p.name[: -len(TEMPLATE_SUFFIX)] for p in directory.glob("*" + TEMPLATE_SUFFIX)
                     if p.is_file() and p.name != TEMPLATE_SUFFIX)


def prepare(config: Config, renderer: Renderer, bot: Bot, body: Any, templates: frozenset[str]) -> Prepared:
    """A request body (decoded JSON) as the requests it becomes for `bot`; PayloadError
    saying what is wrong, before anything is stored or sent."""
    try:
        request = read_request(body)
        mentions = _mentions(config, request)
        if request.template is not None:
            message, placed = _render(renderer, templates, request, bot, mentions)
            mentions = () if placed else mentions
        else:
            assert request.message is not None
            message = request.message
        return Prepared(bot, tuple(ready(message, bot, mentions)), request.dedupe_key)
    except PayloadError as exc:
        # What the caller sent may be quoted in the answer: a lone surrogate from a \ud800
        # escape would make the answer itself unwritable (a 500), so it is escaped.
        text = str(exc)
        raise PayloadError(text.encode("utf-8", "backslashreplace").decode("utf-8")) from None


def _mentions(config: Config, request: RelayRequest) -> tuple[Mention, ...]:
    """Whom the message pings: names from the users: directory only, never an id or an
    address in the request, so the relay can ping no one the configuration does not list."""
    found = [ALL] if request.mention_all else []
    for i, name in enumerate(request.mention_users):
        open_id = config.users.get(name)
        if open_id is None:
            hint = (": mentions name people in the users: directory; add this open_id there under a name"
                    if name.startswith("ou_") else f" (the directory has {len(config.users)} names)")
            raise PayloadError(f"mentions.users[{i}]: {name!r} is not in the users: directory{hint}")
        found.append(Mention(open_id, name))
    return tuple(found)


def _render(renderer: Renderer, templates: frozenset[str], request: RelayRequest, bot: Bot,
            mentions: tuple[Mention, ...]) -> tuple[dict, bool]:
    name = request.template
    assert name is not None
    if name not in templates:
        known = f"the relay's templates are {', '.join(sorted(templates))}" if templates else \
            "relay templates are NAME.json.j2 files in templates_dir, and it has none"
        raise PayloadError(f"template: no template {name!r} in templates_dir ({known})")
    try:
        output, placed = renderer.render_message(name, request.data, bot, mentions)
    except TemplateError as exc:
        # The caller is told the template's name, not where the server keeps it.
        directory = os.path.dirname(exc.template)
        raise PayloadError(str(exc).replace(directory + os.sep, "", 1) if directory else str(exc)) from None
    where = f"template {name}{TEMPLATE_SUFFIX}: the output"
    if not isinstance(output, dict):
        raise PayloadError(f"{where} is not a JSON object")
    extra = sorted(set(output) - {"msg_type", "content", "card"})
    if extra:
        raise PayloadError(f"{where} has {extra[0]!r}: a message is msg_type with content (a card: card)")
    try:
        return check_message(output), placed
    except PayloadError as exc:
        raise PayloadError(f"{where}: {exc}") from None


def _identity(dedupe_key: str | None) -> str:
    # Hashed: a key of any characters and length up to MAX_DEDUPE_KEY stores as 71 of them.
    if dedupe_key is None:
        return ""   # never matches: no deduplication
    return "relay:" + hashlib.sha256(dedupe_key.encode("utf-8", "surrogatepass")).hexdigest()


class Relay:
    """Prepare and store relayed messages for one configuration (bootstrap.Runtime)."""

    def __init__(self, config: Config, outbox: Outbox, wake: Callable[[], None], renderer: Renderer,
                 logger: logging.Logger, metrics: Metrics | None = None, health: WriteHealth | None = None):
        self.config = config
        self.outbox = outbox
        self.wake = wake
        self.renderer = renderer
        self.log = logger
        self.metrics = metrics
        self.health = health
        self.templates = relay_templates(config)   # with the renderer's: both read at load time
        self._delivery = replace(config.delivery, coalesce=False)

    def bot(self, name: object) -> Bot:
        return relay_bot(self.config, name)

    def __call__(self, name: str, body: Any) -> Relayed:
        """Prepare and store; PayloadError (400), NotRelayed/UnknownBot (404) or StorageError
        (503) when nothing was stored."""
        bot = self.bot(name)
        prepared = prepare(self.config, self.renderer, bot, body, self.templates)
        # Its own group, named after its dedupe_key if it has one (a message's identity must
        # imply its group: bridge.store.Outbox.store), and stored without coalescing: a
        # relayed message never supersedes another.
        identity = _identity(prepared.dedupe_key)
        group = identity[len("relay:"):][:32] if identity else uuid.uuid4().hex[:16]
        message = OutgoingMessage(bot=bot.name, group_key=f"{SOURCE}:{group}", source=SOURCE, identity=identity,
                                  bodies=prepared.bodies)
        stored = store_messages(self.outbox, [message], self._delivery, self.log, self.metrics, self.health)
        if stored.ids:
            self.wake()
        duplicate = bool(stored.duplicates)
        self.log.info("relayed message accepted" if not duplicate else "relayed message dropped as a duplicate",
                      extra={"event": "relayed", "bot": bot.name, "group_key": message.group_key,
                             "parts": len(prepared.bodies), "duplicate": duplicate})
        return Relayed(0 if duplicate else len(prepared.bodies), duplicate)
