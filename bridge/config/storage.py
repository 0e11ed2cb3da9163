"""The `storage` section: the SQLite file (`path`) or one PostgreSQL database shared by
every replica (`postgres`), never both.

A DSN is parsed here, with libpq's own parser (through psycopg), so that a DSN libpq
cannot read is a configuration error naming the key, at start-up and in check-config.
A database that cannot be reached is not: that is checked by connecting, which the
service keeps trying (not ready meanwhile). The password, in the DSN or in
password_file, is a secret: the DSN is kept as a `DSN`, shown without it.
"""

from __future__ import annotations

import re
from typing import Any

from ..secret import DSN, Secret
from .reader import Reader
from .types import (DEFAULT_PG_POOL, DEFAULT_PG_SCHEMA, DEFAULT_STORAGE_PATH, DEFAULT_SYNC_INTERVAL, SYNC_MODES,
                    PostgresConfig, StorageConfig)

STORAGE_KEYS = {"path", "postgres", "sync", "sync_interval"}
# A longer window than this is a typo rather than a choice: Redis syncs every second.
MAX_SYNC_INTERVAL = 10.0
POSTGRES_KEYS = {"dsn", "dsn_file", "password_file", "schema", "pool_size"}
# Unquoted PostgreSQL identifiers only: the schema's name is written into SQL and into
# the LISTEN channel's name, so it must need no quoting.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# What the description of a DSN shows: where it points, never how it authenticates.
_SHOWN_KEYS = ("host", "hostaddr", "port", "dbname", "user", "sslmode")
MAX_POOL = 100
DRIVER_MISSING = ("the PostgreSQL driver (psycopg) is not installed: "
                  "pip install 'feishu-alert-bridge[postgres]' (the container image has it)")


def read_storage(r: Reader, raw: Any) -> StorageConfig:
    section = r.mapping(raw, "storage", STORAGE_KEYS)
    text = r.string(section["path"], "storage.path") if section.get("path") is not None else None
    sync, interval = _sync(r, section)
    if section.get("postgres") is None:
        return StorageConfig(path=r.base_dir / (text or DEFAULT_STORAGE_PATH), sync=sync, sync_interval=interval)
    if section.get("path") is not None:
        r.problem("storage.postgres", "set either storage.path (a SQLite file) or storage.postgres "
                                      "(a shared database), not both")
    if section.get("sync_interval") is not None:
        r.problem("storage.sync_interval", "applies to the SQLite file only: with storage.postgres the server "
                                           "writes its WAL to disk within 3 x its wal_writer_delay")
    return StorageConfig(path=None, postgres=read_postgres(r, section["postgres"]), sync=sync)


def _sync(r: Reader, section: dict[str, Any]) -> tuple[str, float]:
    sync = "always"
    if section.get("sync") is not None:
        text = r.string(section["sync"], "storage.sync")
        if text in SYNC_MODES:
            sync = text
        elif text is not None:
            r.problem("storage.sync", f"expected one of {', '.join(SYNC_MODES)}, got {section['sync']!r}")
    interval = r.duration(section.get("sync_interval"), "storage.sync_interval", DEFAULT_SYNC_INTERVAL)
    if interval > MAX_SYNC_INTERVAL:
        r.problem("storage.sync_interval", f"at most {MAX_SYNC_INTERVAL:g}s (a power loss loses up to this "
                                           f"window of accepted webhooks), got {section['sync_interval']!r}")
    return sync, interval


def read_postgres(r: Reader, raw: Any) -> PostgresConfig | None:
    path = "storage.postgres"
    section = r.mapping(raw, path, POSTGRES_KEYS)
    if not isinstance(raw, dict):
        return None
    dsn = r.secret_value(section, "dsn", path)
    if dsn is None and section.get("dsn") is None and section.get("dsn_file") is None:
        r.problem(f"{path}.dsn", "required (or dsn_file): postgresql://USER@HOST:5432/DBNAME")
    password = None
    if section.get("password_file") is not None:
        password = r.secret_value({"password_file": section["password_file"]}, "password", path)
    schema = DEFAULT_PG_SCHEMA
    if section.get("schema") is not None:
        schema = r.string(section["schema"], f"{path}.schema") or DEFAULT_PG_SCHEMA
        if not _SCHEMA_NAME.fullmatch(schema):
            r.problem(f"{path}.schema", f"expected a lower-case name of letters, digits and _ (at most 63), "
                                        f"got {schema!r}")
    pool_size = _pool_size(r, section.get("pool_size"), f"{path}.pool_size")
    if not dsn:
        return None
    shown = describe_dsn(r, dsn, has_password_file=password is not None)
    if shown is None:
        return None
    return PostgresConfig(dsn=DSN(dsn, shown), password=Secret(password) if password else None, schema=schema,
                          pool_size=pool_size)


def describe_dsn(r: Reader, dsn: str, *, has_password_file: bool) -> str | None:
    """The DSN as an operator may see it (where it points, no password); None, and a
    problem naming the key, when libpq cannot parse it."""
    try:
        from psycopg import Error
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        r.problem("storage.postgres", DRIVER_MISSING)
        return None
    try:
        parts = conninfo_to_dict(dsn)
    except Error as exc:
        # libpq quotes the text it stumbled on, which may be the password.
        reason = re.sub(r'"[^"]*"', '"…"', str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        r.problem("storage.postgres.dsn", f"not a PostgreSQL connection string ({reason}); expected "
                                          "postgresql://USER@HOST:5432/DBNAME?sslmode=... or host=... dbname=...")
        return None
    for port in str(parts.get("port", "5432")).split(","):
        if not (port.isdigit() and 0 < int(port) < 65536):
            r.problem("storage.postgres.dsn", f"port {port!r} is not a port number")
            return None
    if has_password_file and parts.get("password"):
        r.problem("storage.postgres.password_file", "the DSN has a password too: keep it in one place")
        return None
    return " ".join(f"{key}={parts[key]}" for key in _SHOWN_KEYS if parts.get(key)) or "(libpq defaults)"


def _pool_size(r: Reader, value: Any, path: str) -> int:
    if value is None:
        return DEFAULT_PG_POOL
    text = r.string(value, path) if isinstance(value, str) else value
    try:
        size = int(text) if not isinstance(text, bool) else 0
    except (TypeError, ValueError):
        size = 0
    if not 0 < size <= MAX_POOL or (isinstance(text, float) and not text.is_integer()):
        r.problem(path, f"expected a whole number of connections from 1 to {MAX_POOL}, got {value!r}")
        return DEFAULT_PG_POOL
    return size
