"""The storage section: the SQLite file or a PostgreSQL database, never both, and the
DSN's password never in a message."""

from __future__ import annotations

import pytest

from bridge import config as cfg
from bridge.errors import ConfigError

BOTS = "bots: [{name: ops, dry_run: true}]\nroute: {bots: [ops]}\n"
SECRET = "pa55-in-the-dsn"


def problems(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as failed:
        cfg.loads(BOTS + text, env=env)
    return failed.value.problems


def test_postgres_is_read_with_its_defaults_and_the_dsn_shown_without_its_password(tmp_path):
    (tmp_path / "pw").write_text("from-the-file\n")
    config = cfg.loads(BOTS + "storage: {postgres: {dsn: '${DSN}', password_file: pw}}\n",
                       env={"DSN": "postgresql://bridge@db.example:5432/bridge?sslmode=verify-full"},
                       base_dir=tmp_path)
    pg = config.storage.postgres
    assert config.storage.path is None
    assert (pg.schema, pg.pool_size, pg.password.reveal()) == ("feishu_bridge", 4, "from-the-file")
    assert str(pg.dsn) == "host=db.example port=5432 dbname=bridge user=bridge sslmode=verify-full"
    with_password = cfg.loads(BOTS + f"storage: {{postgres: {{dsn: 'postgresql://u:{SECRET}@h/db'}}}}\n")
    assert SECRET not in repr(with_password.storage) and with_password.storage.postgres.dsn.reveal().count(SECRET)


def test_path_and_postgres_together_are_refused_naming_the_key():
    assert problems("storage: {path: x.db, postgres: {dsn: 'postgresql://h/db'}}\n") == [
        "storage.postgres: set either storage.path (a SQLite file) or storage.postgres (a shared database), not both"]


@pytest.mark.parametrize("dsn", [f"host=h password {SECRET}", f"postgresql://u:{SECRET}@[h", "nokey=1",
                                 "postgresql://h:99999/db"])
def test_an_unparsable_dsn_is_an_error_naming_the_key_and_not_the_password(dsn):
    (problem,) = problems(f"storage: {{postgres: {{dsn: '{dsn}'}}}}\n")
    assert problem.startswith("storage.postgres.dsn: ") and SECRET not in problem


def test_the_other_postgres_keys_are_checked():
    found = problems("storage: {postgres: {dsn: 'postgresql://u:p@h/db', password_file: /nonexistent/pw,"
                     " schema: Bad-Name, pool_size: 0, pool: 3}}\n")
    assert [p.split(":")[0] for p in found] == ["storage.postgres.pool", "storage.postgres.password_file",
                                                "storage.postgres.schema", "storage.postgres.pool_size"]
    assert problems("storage: {postgres: {schema: x}}\n") == [
        "storage.postgres.dsn: required (or dsn_file): postgresql://USER@HOST:5432/DBNAME"]


def test_a_password_in_both_the_dsn_and_password_file_is_refused(tmp_path):
    (tmp_path / "pw").write_text("other")
    with pytest.raises(ConfigError) as failed:
        cfg.loads(BOTS + f"storage: {{postgres: {{dsn: 'postgresql://u:{SECRET}@h/db', password_file: pw}}}}\n",
                  base_dir=tmp_path)
    assert failed.value.problems == ["storage.postgres.password_file: the DSN has a password too: keep it in one place"]


# -- storage.sync ------------------------------------------------------------------------------
def test_sync_is_always_by_default_and_interval_takes_its_window(tmp_path):
    default = cfg.loads(BOTS).storage
    assert (default.sync, default.sync_interval) == ("always", 0.2)
    chosen = cfg.loads(BOTS + "storage: {path: x.db, sync: interval, sync_interval: 50ms}\n").storage
    assert (chosen.sync, chosen.sync_interval) == ("interval", 0.05)
    pg = cfg.loads(BOTS + "storage: {sync: interval, postgres: {dsn: 'postgresql://h/db'}}\n").storage
    assert pg.sync == "interval" and pg.postgres is not None


def test_a_wrong_sync_mode_or_window_is_an_error_naming_the_key():
    assert problems("storage: {sync: sometimes}\n") == [
        "storage.sync: expected one of always, interval, got 'sometimes'"]
    assert problems("storage: {sync: interval, sync_interval: 0s}\n") == [
        "storage.sync_interval: expected a positive duration like 10s, 1m or 500ms, got '0s'"]
    assert problems("storage: {sync: interval, sync_interval: 1m}\n") == [
        "storage.sync_interval: at most 10s (a power loss loses up to this window of accepted webhooks), got '1m'"]
    assert problems("storage: {sync: interval, sync_interval: 1s, postgres: {dsn: 'postgresql://h/db'}}\n") == [
        "storage.sync_interval: applies to the SQLite file only: with storage.postgres the server writes its WAL "
        "to disk within 3 x its wal_writer_delay"]
