"""Every error the bridge raises on purpose.

    BridgeError
     ├── ConfigError     the configuration (or a template it names) is wrong;
     │                   carries every problem found, each with its key path
     ├── PayloadError    an inbound webhook body is not what its source sends
     │                   (answered with HTTP 400 and the message)
     ├── TemplateError   a template failed to render or produced an invalid
     │                   message (the bot gets the fallback card instead)
     └── StorageError    the outbox could not store an accepted message
                         (answered with HTTP 503 so the sender retries)

Messages never contain a secret: callers pass Secret objects or masked URLs.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of the bridge's own errors."""


class ConfigError(BridgeError):
    """One or more configuration problems, each `key.path: message`."""

    def __init__(self, problems: list[str] | str):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class PayloadError(BridgeError):
    """A webhook body that can never be accepted; the message says what is wrong."""


class TemplateError(BridgeError):
    """A template failed; the message names the template and, where known, the line."""

    def __init__(self, template: str, message: str, line: int | None = None):
        self.template = template
        self.line = line
        where = f"{template}:{line}" if line else template
        super().__init__(f"template {where}: {message}")


class StorageError(BridgeError):
    """The outbox could not store a message; nothing was accepted."""
