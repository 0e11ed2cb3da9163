"""The store tests' fixtures: a stepped clock, and the backends the contract suite runs on."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from bridge.config import PostgresConfig, StorageConfig
from bridge.secret import DSN
from bridge.store import Outbox, open_store
from outbox_messages import SteppedClock
from support.postgres import new_schema

# Every backend here runs tests/store/test_contract.py. A new one adds its name and,
# in `storage` below, how to get a fresh, empty store of its kind for one test.
# sqlite-interval: the same file with storage.sync interval (accepts committed without
# waiting for the disk), which must keep every promise of the contract the same.
BACKENDS = ["sqlite", "sqlite-interval", "postgres"]


@pytest.fixture
def clock() -> SteppedClock:
    return SteppedClock()


@pytest.fixture(params=BACKENDS)
def storage(request: pytest.FixtureRequest, tmp_path) -> StorageConfig:
    if request.param == "sqlite":
        return StorageConfig(path=tmp_path / "sub" / "outbox.db")
    if request.param == "sqlite-interval":
        return StorageConfig(path=tmp_path / "sub" / "outbox.db", sync="interval", sync_interval=0.05)
    if request.param == "postgres":
        # A fresh schema in the session's server: the store creates it, as in production.
        cluster = request.getfixturevalue("postgres_cluster")
        return StorageConfig(path=None, postgres=PostgresConfig(dsn=DSN(cluster.dsn(), "the test server"),
                                                                schema=new_schema()))
    raise AssertionError(f"no storage for backend {request.param}")


@pytest.fixture
def connect(storage: StorageConfig, clock: SteppedClock) -> Iterator[Callable[[], Outbox]]:
    """Open the store once more: to the store, another process (same clock)."""
    opened: list[Outbox] = []

    def connect() -> Outbox:
        store = open_store(storage, clock=clock)
        store.open()
        opened.append(store)
        return store

    yield connect
    for store in opened:
        store.close()
        # A PostgreSQL store's pool too: hundreds of tests would use up the server's connections.
        getattr(store, "shutdown", lambda: None)()


@pytest.fixture
def outbox(connect: Callable[[], Outbox]) -> Outbox:
    return connect()
