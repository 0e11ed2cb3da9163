"""Configuration: YAML parsed once into typed, frozen objects. (Loader below.)"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo

from .secret import Secret, WebhookURL


@dataclass(frozen=True)
class Bot:
    name: str
    webhook_url: WebhookURL | None = None    # None: a dry-run bot
    secret: Secret | None = None             # signature-verification secret
    keywords: tuple[str, ...] = ()
    template: str = "default"
    dry_run: bool = False
    proxy_url: Secret | None = None          # may carry proxy credentials
    connect_timeout: float = 5.0             # seconds
    read_timeout: float = 10.0               # seconds

    @property
    def sends(self) -> bool:
        """False for a dry-run bot: it logs the message instead of sending it."""
        return self.webhook_url is not None and not self.dry_run
