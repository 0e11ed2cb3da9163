"""The generic validating reader: walks the raw YAML tree, collecting problems with
their key paths, so that one run reports them all.

A `Reader` turns one raw value into a typed one (a mapping with known keys, a string with
${VAR} expanded, a boolean, a duration, a size, a `*_file` secret, a URL, a time zone, a
list of matchers), or records a problem and returns a default. The sections (bots.py,
routes.py, sections.py) are functions that take a Reader.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..matchers import Matcher, MatcherError, parse_matchers

_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|h|m|s))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_SIZE = re.compile(r"^(\d+)\s*(B|KB|KiB|MB|MiB)?$")
_SIZE_UNITS = {None: 1, "B": 1, "KB": 1000, "KiB": 1024, "MB": 1000**2, "MiB": 1024**2}


class Reader:
    """Reads values out of one raw config; `problems` holds every problem found so far."""

    def __init__(self, env: Mapping[str, str], base_dir: Path):
        self.env = env
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    def mapping(self, value: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {kind(value)}")
            return {}
        for key in value:
            if key not in allowed:
                hint = closest(str(key), allowed)
                self.problem(join(path, str(key)), "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))
        return value

    def string(self, value: Any, path: str) -> str | None:
        """A string scalar with ${VAR} expanded; None (and a problem) otherwise."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.problem(path, f"expected a string, got {kind(value)}")
            return None
        return self.expand(str(value), path)

    def expand(self, text: str, path: str) -> str | None:
        ok = True

        def substitute(m: re.Match[str]) -> str:
            nonlocal ok
            if m.group(0) == "$$":
                return "$"
            name, default = m.group(1), m.group(2)
            if default is not None:  # shell's ${VAR:-default}: unset or empty takes the default
                return self.env.get(name) or default
            if name in self.env:
                return self.env[name]
            ok = False
            self.problem(path, f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
            return ""

        result = _VAR.sub(substitute, text)
        return result if ok else None

    def boolean(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, str):
            expanded = self.expand(value, path)
            if expanded is not None and expanded.lower() in ("true", "false"):
                return expanded.lower() == "true"
        if isinstance(value, bool):
            return value
        self.problem(path, f"expected true or false, got {value!r}")
        return default

    def duration(self, value: Any, path: str, default: float) -> float:
        """Seconds from `10s`, `1m30s`, `500ms` (Go/Alertmanager style) or a number of seconds."""
        if value is None:
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
        text = self.expand(value, path) if isinstance(value, str) else None
        if text is not None and _DURATION.match(text.strip()):
            seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
            if seconds > 0:
                return seconds
        self.problem(path, f"expected a positive duration like 10s, 1m or 500ms, got {value!r}")
        return default

    def size(self, value: Any, path: str, default: int) -> int:
        if value is None:
            return default
        text = str(value).strip() if not isinstance(value, bool) else ""
        m = _SIZE.match(text)
        if m and int(m.group(1)) > 0:
            return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
        self.problem(path, f"expected a size in bytes like 1048576 or 10MiB, got {value!r}")
        return default

    def string_list(self, value: Any, path: str) -> list[str]:
        return [text for _, text in self.indexed_strings(value, path)]

    def indexed_strings(self, value: Any, path: str) -> list[tuple[str, str]]:
        """(key path, string) for each item that is a string, so later problems name the
        item's real position even when an earlier one was rejected."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(path, f"expected a list, got {kind(value)}")
            return []
        items = [(f"{path}[{i}]", self.string(v, f"{path}[{i}]")) for i, v in enumerate(value)]
        return [(where, text) for where, text in items if text is not None]

    def secret_value(self, section: dict[str, Any], key: str, path: str) -> str | None:
        """`key` inline or `key_file` read from a file (Kubernetes secrets), never both."""
        inline, file_key = section.get(key), f"{key}_file"
        if inline is not None and section.get(file_key) is not None:
            self.problem(join(path, key), f"set either {key} or {file_key}, not both")
            return None
        if section.get(file_key) is not None:
            file_path = self.string(section[file_key], join(path, file_key))
            if file_path is None:
                return None
            target = self.base_dir / file_path
            try:
                return target.read_text(encoding="utf-8").strip()
            except OSError as exc:
                self.problem(join(path, file_key), f"cannot read {file_path}: {exc.strerror or exc}")
                return None
        if inline is None:
            return None
        return self.string(inline, join(path, key))

    def http_url(self, value: str, path: str, *, show: Callable[[str], str]) -> bool:
        try:
            parts = urlsplit(value)
            # .port raises for a port outside 0-65535: a URL no request could be sent to.
            ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:
            ok = False
        if not ok:
            self.problem(path, f"expected an http(s) URL with a host, got {show(value)!r}")
        return ok

    def positive_int(self, value: Any, path: str, default: int) -> int:
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        self.problem(path, f"expected a positive whole number, got {value!r}")
        return default

    def zone(self, raw: Any, path: str) -> ZoneInfo | None:
        """An IANA time zone; None when unset (or wrong, with a problem: never a silent UTC)."""
        if raw is None:
            return None
        name = self.string(raw, path)
        if name is None:
            return None
        if not name.strip():
            self.problem(path, "is empty: give an IANA name like Asia/Shanghai or UTC, or remove the key")
            return None
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory such as "Asia"
            self.problem(path, f"unknown time zone {name!r} (use an IANA name like Asia/Shanghai or UTC)")
            return None

    def matchers(self, raw: Any, path: str) -> tuple[Matcher, ...]:
        """A list of matcher strings: a value like the others here, which routes and the
        bots' and routes' `mentions:` both read."""
        found: list[Matcher] = []
        for where, text in self.indexed_strings(raw, path):
            try:
                found.extend(parse_matchers(text))
            except MatcherError as exc:
                self.problem(where, str(exc))
        return tuple(found)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


def closest(key: str, allowed: set[str]) -> str | None:
    import difflib

    matches = difflib.get_close_matches(key, sorted(allowed), n=1, cutoff=0.75)
    return matches[0] if matches else None
