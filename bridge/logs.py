"""Logging set-up: one line per event, JSON (default) or text.

Call sites log a short message and put the facts in `extra` (event, bot, group_key,
outcome, code, ...); the formatter turns those into fields. Values are whatever the
caller passed: callers pass Secret objects or masked URLs, never raw secrets.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and v is not None}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "pid": record.process,             # which gunicorn worker
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{when} {record.levelname.lower():5} {record.getMessage()}" + (f" {fields}" if fields else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RequestContext(logging.Filter):
    """Adds the HTTP request's id to every line logged while handling it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from flask import g, has_request_context

        if has_request_context() and getattr(record, "request_id", None) is None:
            record.request_id = g.get("request_id")
        return True


def configure(fmt: str = "json", level: str = "info") -> logging.Logger:
    """Send the bridge's log to stderr in the chosen format; returns the `bridge` logger."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestContext())
    log = logging.getLogger("bridge")
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
    # urllib3 logs each request line, webhook token included, at DEBUG: keep it above that
    # whatever level the root logger is given.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    return log
