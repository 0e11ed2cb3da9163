"""What only the PostgreSQL backend does (the contract suite runs on it too): its schema's
version and migrations, the database's clock, LISTEN/NOTIFY, reconnecting after a
restart, short timeouts, and errors that never carry the password."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator

import pytest

from bridge.config import PostgresConfig
from bridge.errors import StorageError
from bridge.secret import DSN, Secret
from bridge.store.postgres import PostgresOutbox
from bridge.store.postgres.clock import DatabaseClock
from bridge.store.postgres.engine import LOCK_TIMEOUT, lock_key, lock_namespace
from bridge.store.postgres.outbox import PRUNE_LOCK
from bridge.store.postgres.schema import SCHEMA_VERSION
from outbox_messages import SteppedClock, msg
from support import eventually
from support.postgres import PASSWORD, PASSWORD_USER, new_schema

WINDOW = 600.0


@pytest.fixture
def cluster(postgres_cluster):
    return postgres_cluster


@pytest.fixture
def config(cluster) -> PostgresConfig:
    return PostgresConfig(dsn=DSN(cluster.dsn(), "the test server"), schema=new_schema())


@pytest.fixture
def make(config) -> Iterator[Callable[..., PostgresOutbox]]:
    """A store on `config` (or another), opened; every one is shut down at the end."""
    made: list[PostgresOutbox] = []

    def make(cfg: PostgresConfig | None = None, *, clock=None, open_: bool = True,
             sync_commit: bool = True) -> PostgresOutbox:
        store = PostgresOutbox(cfg or config, clock=clock, sync_commit=sync_commit)
        made.append(store)
        if open_:
            store.open()
        return store

    yield make
    for store in made:
        store.shutdown()


def database_time(cluster) -> float:
    return float(cluster.sql("SELECT extract(epoch FROM clock_timestamp())")[0][0])


# -- the schema ---------------------------------------------------------------------------

def test_replicas_starting_together_create_the_schema_once(make, config, cluster):
    stores = [make(open_=False) for _ in range(6)]
    gate, errors = threading.Barrier(len(stores)), []

    def start(store: PostgresOutbox) -> None:
        try:
            gate.wait(10)
            store.open()
        except BaseException as exc:   # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert cluster.sql(f"SELECT value FROM {config.schema}.meta") == [(str(SCHEMA_VERSION),)]
    assert all(len(s.store([msg(i)]).ids) == 1 for i, s in enumerate(stores))


def test_an_older_bridge_refuses_a_newer_schema_with_a_clear_message(make, config, cluster):
    make().store([msg(1)])
    cluster.sql(f"UPDATE {config.schema}.meta SET value = '{SCHEMA_VERSION + 1}'")
    older = make(open_=False)
    with pytest.raises(StorageError) as refused:
        older.open()
    text = str(refused.value)
    assert f"version {SCHEMA_VERSION + 1}" in text and "newer" in text and config.schema in text
    assert "newer" in older.writable_problem()
    with pytest.raises(StorageError):
        older.store([msg(2)])
    # Nothing was changed by the refusing one.
    assert cluster.sql(f"SELECT count(*) FROM {config.schema}.messages") == [(1,)]


def test_a_schema_made_beforehand_by_an_administrator_is_used(make, config, cluster):
    cluster.sql(f"CREATE SCHEMA {config.schema}")
    make().store([msg(1)])
    assert cluster.sql(f"SELECT count(*) FROM {config.schema}.messages") == [(1,)]


# -- the database's clock -----------------------------------------------------------------

def test_times_come_from_the_database_not_from_the_replica(make, cluster):
    store = make()   # no clock given: the database's
    before = database_time(cluster)
    (message_id,) = store.store([msg(1)]).ids
    store.acquire("ops", "me", ttl=5)
    after = database_time(cluster)
    assert before <= store.entry(message_id).created <= after
    assert before + 5 <= store.bot_state("ops").expires <= after + 5
    assert abs(store.clock.now() - database_time(cluster)) < 0.5


def test_a_replica_with_a_skewed_clock_reads_the_databases_time(cluster):
    skewed = SteppedClock(start=0.0)          # the replica thinks it is 1970
    clock = DatabaseClock(lambda: database_time(cluster), local=skewed)
    assert abs(clock.now() - database_time(cluster)) < 0.5
    skewed.step(10)                           # carried forward on the replica's monotonic clock
    assert abs(clock.now() - database_time(cluster) - 10) < 0.5


def test_the_clock_stands_in_locally_until_the_database_answers():
    local = SteppedClock(start=123.0)

    def away() -> float:
        raise StorageError("down")

    assert DatabaseClock(away, local=local).now() == 123.0


# -- LISTEN/NOTIFY ------------------------------------------------------------------------

def test_a_commit_wakes_a_listener_at_once(make):
    listener, other = make(), make()
    listener.wait_for_change(0)
    threading.Timer(0.3, lambda: other.store([msg(1)])).start()
    began = time.monotonic()
    assert listener.wait_for_change(10) is True
    assert time.monotonic() - began < 1.0      # notified, not polled
    listener.close()


# -- failures -----------------------------------------------------------------------------

def test_a_restarted_server_is_reconnected_to_and_nothing_committed_is_lost(make, cluster):
    store, watcher = make(), make()
    ids = store.store([msg(1)]).ids
    watcher.wait_for_change(0)
    cluster.restart()
    # Every pooled connection died with the server: the pool replaces them by itself.
    ids += eventually(lambda: _stored(store, msg(2)), 15, "a store after the restart")
    assert store.writable_problem() is None
    assert [e.id for e in store.list()] == ids
    # The listener lost its connection: it says so (an error), then reconnects and,
    # since notifications may have been missed meanwhile, answers "look" at once.
    woke = eventually(lambda: _woke(watcher), 15, "the listener reconnecting")
    assert woke is True
    watcher.close()


def _stored(store: PostgresOutbox, message) -> list[int] | None:
    try:
        return store.store([message]).ids
    except StorageError:
        return None


def _woke(store: PostgresOutbox) -> bool | None:
    try:
        return store.wait_for_change(0)
    except StorageError:
        return None


def test_a_lock_held_elsewhere_fails_fast_instead_of_hanging(make, config, cluster):
    import psycopg

    store = make()
    with psycopg.connect(cluster.dsn()) as stuck:     # a transaction holding the bot's queue lock
        stuck.execute("SELECT pg_advisory_xact_lock(%s, %s)", (lock_namespace(config.schema), lock_key("ops")))
        began = time.monotonic()
        with pytest.raises(StorageError, match="lock timeout"):
            store.store([msg(1)])
        assert time.monotonic() - began < LOCK_TIMEOUT + 2
        assert store.store([msg(2, bot="other")]).ids       # other bots are not held up
    assert store.store([msg(3)]).ids


def test_only_one_replica_prunes_at_a_time(make, config, cluster):
    import psycopg

    store = make()
    store.store([msg(1)])
    with psycopg.connect(cluster.dsn(), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, %s)", (lock_namespace(config.schema), PRUNE_LOCK))
        assert store.prune(time.time() + 3600) == 0      # the other is at it: nothing done twice
    assert store.prune(time.time() + 3600) == 0         # nothing sent yet: nothing to prune, but it ran


def test_a_read_only_database_is_not_ready(make, cluster):
    database = cluster.new_database()
    config = PostgresConfig(dsn=DSN(cluster.dsn(database), "db"), schema="feishu_bridge")
    assert make(config).writable_problem() is None
    cluster.sql(f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    problem = make(config, open_=False).writable_problem()   # new sessions pick the setting up
    assert problem is not None and "read-only" in problem


# -- secrets ------------------------------------------------------------------------------

def test_a_wrong_password_in_the_dsn_never_shows(make, cluster):
    wrong = "Wr0ng-" + PASSWORD
    dsn = cluster.dsn(user=PASSWORD_USER, password=wrong)
    store = make(PostgresConfig(dsn=DSN(dsn, "shown"), schema=new_schema()), open_=False)
    with pytest.raises(StorageError) as failed:
        store.open()
    texts = [str(failed.value), repr(failed.value), store.writable_problem(), store.describe()]
    assert "password authentication failed" in texts[2]
    assert not any(wrong in t or PASSWORD in t for t in texts), texts


def test_the_password_file_is_used_and_never_shows(make, cluster):
    database = cluster.new_database()
    config = PostgresConfig(dsn=DSN(cluster.dsn(database, user=PASSWORD_USER), "shown"),
                            password=Secret(PASSWORD), schema=new_schema())
    store = make(config)
    assert store.store([msg(1)]).ids and store.writable_problem() is None
    assert PASSWORD not in repr(config) and PASSWORD not in store.describe()


def test_an_unreachable_database_is_reported_not_fatal(make, cluster):
    from support import free_port

    nowhere = PostgresConfig(dsn=DSN(f"postgresql://{PASSWORD_USER}:{PASSWORD}@127.0.0.1:{free_port()}/x",
                                     "nowhere"), schema=new_schema())
    store = make(nowhere, open_=False)
    began = time.monotonic()
    with pytest.raises(StorageError) as failed:
        store.store([msg(1)])
    assert time.monotonic() - began < 10
    problem = store.writable_problem()
    assert "no database connection" in problem and "refused" in problem.lower()
    assert PASSWORD not in str(failed.value) + problem


def test_outbox_list_reads_the_database_and_shows_no_password(tmp_path, cluster):
    import json
    import subprocess
    import sys
    from pathlib import Path

    database = cluster.new_database()
    (tmp_path / "pw").write_text(PASSWORD)
    config = tmp_path / "config.yaml"
    config.write_text("bots: [{name: ops, dry_run: true}]\nroute: {bots: [ops]}\n"
                      "storage: {postgres: {dsn: '${DSN}', password_file: pw}}\n")
    store = PostgresOutbox(PostgresConfig(dsn=DSN(cluster.dsn(database, user=PASSWORD_USER), "x"),
                                          password=Secret(PASSWORD), schema="feishu_bridge"))
    try:
        (message_id,) = store.store([msg(1)]).ids
    finally:
        store.shutdown()
    root = Path(__file__).resolve().parents[2]
    env = {"DSN": cluster.dsn(database, user=PASSWORD_USER), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}
    done = subprocess.run([sys.executable, "-m", "bridge", "outbox", "list", "--json", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=root)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [message_id]
    assert PASSWORD not in done.stdout + done.stderr


def test_sync_interval_commits_without_waiting_for_the_wal_and_always_waits(make):
    """storage.sync: interval is synchronous_commit off on the bridge's sessions (the
    commit is in the server, visible to every replica, on disk within the WAL writer's
    window); always keeps it on."""
    for n, (sync_commit, expected) in enumerate(((False, "off"), (True, "on")), 1):
        store = make(sync_commit=sync_commit)
        store.store([msg(n, group=f"g{n}")])
        assert store._engine.read("SHOW synchronous_commit") == [(expected,)]
        assert len(make().list(dead=False)) == n     # seen by another replica at once
