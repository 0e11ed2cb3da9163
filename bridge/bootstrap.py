"""The composition root: from a Config, everything the app (bridge.web) and the CLI need.

    Services (one per process, built once)     Runtime (one per configuration, swapped whole)
      store     the outbox                        config
      channel   the Feishu client                 accept   route -> store -> wake (bridge.accept)
      metrics   optional                          compose  stored message -> cards (bridge.compose)
      delivery  the senders (bridge.delivery)       with its Renderer and MentionResolver
                                                  relay    /send/<bot> -> parts -> store -> wake
                                                           (bridge.relay), with compose's Renderer

The senders compose each message when it is due, through `Services.render_stored`: the
compose service of the runtime in force then. A reload builds a new Runtime and puts it
in force with one attribute store, so whoever reads `services.runtime` once sees the old
configuration or the new one, never half of each.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

from .accept import Accept
from .actions import Actions  # MERGE-SHIM: replaced by feat/actions
from .clock import SYSTEM_CLOCK, Clock
from .compose import Compose
from .config import Bot, Config
from .delivery import Delivery
from .model import GroupFacts
from .notify import ByKind, Channel
from .notify.feishu import FeishuClient
from .notify.feishu_app import AppClient
from .notify.feishu_app.tokens import TokenStore
from .mentions import MentionResolver
from .metrics import Metrics
from .store import Outbox, open_store
from .store.health import WriteHealth
from .relay import Relay
from .render import Renderer
from .store.records import Head


@dataclass(frozen=True)
class Runtime:
    """What depends on one configuration. Never changed: a reload builds another."""

    config: Config
    accept: Accept
    compose: Compose
    relay: Relay
    actions: Actions | None = None  # MERGE-SHIM: replaced by feat/actions


def build_store(config: Config, *, clock: Clock | None = None) -> Outbox:
    """The outbox of `storage:` (created on first use). Its times are on `clock` if given
    (tests), else on the backend's own: PostgreSQL's is the database's (bridge.store)."""
    return open_store(config.storage, clock=clock)


def build_channel(log: logging.Logger | None = None, clock: Clock = SYSTEM_CLOCK, *, tokens: TokenStore | None = None,
                  metrics: Metrics | None = None) -> ByKind:
    """What sends a rendered message to a bot and says what happened: custom bots through
    their webhooks, app bots through the Open API with their tokens kept in `tokens` (the
    outbox, shared by every process)."""
    return ByKind(FeishuClient(clock=clock, logger=log.getChild("feishu") if log is not None else None),
                  AppClient(tokens, clock=clock, logger=log.getChild("feishu_app") if log is not None else None,
                            metrics=metrics))


def build_renderer(config: Config, log: logging.Logger | None = None, metrics: Metrics | None = None) -> Renderer:
    on_error: Callable[[str], None] | None = None
    if metrics is not None:
        def on_error(template: str) -> None:
            metrics.render_errors.labels(template).inc()

    return Renderer(config.templates_dir, config.timezone, log, on_error=on_error)


def build_compose(config: Config, log: logging.Logger, metrics: Metrics | None = None) -> Compose:
    return Compose(config, build_renderer(config, log, metrics), MentionResolver(config.users, log, config.user_emails))


def build_runtime(config: Config, *, store: Outbox, wake: Callable[[], None], log: logging.Logger,
                  metrics: Metrics | None = None, health: WriteHealth | None = None) -> Runtime:
    """Raises ConfigError when a template of the configuration does not compile."""
    compose = build_compose(config, log, metrics)
    # The relay renders with compose's Renderer: one sandbox, the templates compiled once.
    return Runtime(config, Accept(config, store, wake, log, metrics, health), compose,
                   Relay(config, store, wake, compose.renderer, log, metrics, health),
                   Actions() if config.actions.enabled else None)  # MERGE-SHIM: replaced by feat/actions


class Services:
    """One process's services, built from its first configuration; `runtime` is the
    configuration in force (see the module doc)."""

    def __init__(self, config: Config, *, store: Outbox, channel: Channel, log: logging.Logger,
                 metrics: Metrics | None = None, clock: Clock = SYSTEM_CLOCK):
        self.store = store
        self.channel = channel
        self.log = log
        self.metrics = metrics
        self.clock = clock
        self.write_health = WriteHealth(clock)   # per process, across reloads
        self.delivery = Delivery(config, channel, log, outbox=store, render=self.render_stored,
                                 metrics=metrics, clock=clock, facts=self.facts_stored)
        # Set before anything can call render_stored: the senders start in start().
        self.runtime = self.runtime_for(config)

    def runtime_for(self, config: Config) -> Runtime:
        """A runtime for `config` on this process's services; raises ConfigError."""
        return build_runtime(config, store=self.store, wake=self.delivery.wake, log=self.log, metrics=self.metrics,
                             health=self.write_health)

    def use(self, runtime: Runtime) -> None:
        """Put `runtime` in force: new requests and the next message composed use it."""
        self.runtime = runtime
        self.delivery.configure(runtime.config)   # new bots get a sender; changed URLs, secrets, limits apply

    def render_stored(self, bot: Bot, message: Head) -> list[dict]:
        """The cards of a stored message, by the runtime in force (Delivery's `render`)."""
        runtime = self.runtime   # once: the bot and the templates from the same configuration
        return runtime.compose.render_stored(runtime.config.bots.get(bot.name, bot), message)

    def facts_stored(self, bot: Bot, message: Head) -> GroupFacts:
        """What an app bot's plan needs of a stored message besides its cards (Delivery's `facts`)."""
        runtime = self.runtime
        return runtime.compose.facts_stored(runtime.config.bots.get(bot.name, bot), message)

    def start(self) -> None:
        self.delivery.start()

    def stop(self, timeout: float | None = None) -> None:
        self.delivery.stop(timeout=timeout)


def build_services(config: Config, *, channel: Channel | None = None, logger: logging.Logger | None = None,
                   metrics: Metrics | None = None, clock: Clock | None = None) -> Services:
    """The senders pace on the store's clock: the times they compare "now" with (the
    last requests' ends, a retry's pause) are the store's."""
    store = build_store(config, clock=clock)
    channel = channel or build_channel(logger, clock or SYSTEM_CLOCK, tokens=store, metrics=metrics)
    return Services(config, store=store, channel=channel, log=logger or logging.getLogger("bridge"), metrics=metrics,
                    clock=store.clock)
