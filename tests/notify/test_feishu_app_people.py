"""Emails looked up as open_ids through an app's contact API and kept in the outbox, so that
every worker and replica shares one answer (issue 13): found ones for a week, "not found"
for 15 minutes, a failed lookup never; per app. Against the strict fake Open API, on both
outbox backends, with two handles on one store standing for two processes."""

from __future__ import annotations

import pytest

from bridge.config import App, Bot, PostgresConfig, StorageConfig
from bridge.model import Mention
from bridge.notify import Outcome
from bridge.notify.feishu_app import AppClient
from bridge.notify.feishu_app.people import KNOWN_FOR, UNKNOWN_FOR
from bridge.notify.outcome import OK, UNKNOWN_USERS
from bridge.secret import DSN, Secret
from bridge.store import open_store
from fake_open_api import FakeOpenAPI
from fake_open_api import answers as a
from support.clock import FakeClock

pytestmark = pytest.mark.usefixtures("no_proxy_env")
APP_ID, OTHER_APP, SECRET, CHAT = "cli_people1", "cli_people2", "people-s3cret-Qw", "oc_people1"
ALICE = Mention("", "alice", "alice@example.com")
TYPO = Mention("", "alcie", "alcie@example.com")


@pytest.fixture
def clock():
    return FakeClock(1_700_000_000.0)


@pytest.fixture
def fake(clock):
    with FakeOpenAPI(clock=clock.now) as fake:
        for app in (APP_ID, OTHER_APP):
            fake.add_app(app, SECRET)
        fake.add_chat(CHAT, apps=[APP_ID, OTHER_APP], members=["ou_alice"])
        fake.add_user("ou_alice", "alice@example.com")
        yield fake


def bot_of(fake, app_id: str = APP_ID) -> Bot:
    return Bot("sre", app=App("oncall", app_id, Secret(SECRET), base_url_override=fake.base_url), chat_id=CHAT)


@pytest.fixture(params=["sqlite", "postgres"])
def processes(request, tmp_path, clock):
    """make() -> an AppClient on its own handle of one store: another process."""
    if request.param == "sqlite":
        storage = StorageConfig(path=tmp_path / "outbox.db")
    else:
        from support.postgres import new_schema

        cluster = request.getfixturevalue("postgres_cluster")
        storage = StorageConfig(path=None, postgres=PostgresConfig(dsn=DSN(cluster.dsn(), "the test server"),
                                                                   schema=new_schema()))
    stores = []

    def make() -> AppClient:
        store = open_store(storage, clock=clock)
        store.open()
        stores.append(store)
        return AppClient(store, users=store, clock=clock)

    yield make
    for store in stores:
        store.close()
        getattr(store, "shutdown", lambda: None)()


def buzz(client: AppClient, bot: Bot, *people: Mention):
    root = client.post(bot, {"msg_type": "text", "content": {"text": "critical"}}, uuid="u-" + bot.app.app_id)
    return client.urgent(bot, root.message_id, "app", list(people))


def lookups(fake) -> int:
    return len(fake.attempts("contact"))


def test_two_processes_look_an_email_up_once(fake, processes):
    one, two = processes(), processes()
    assert buzz(one, bot_of(fake), ALICE).buzzed == ("ou_alice",)
    assert buzz(two, bot_of(fake), ALICE).buzzed == ("ou_alice",)
    assert lookups(fake) == 1, "the second process found the first one's answer in the store"


def test_open_ids_are_per_app(fake, processes):
    client = processes()
    buzz(client, bot_of(fake), ALICE)
    buzz(client, bot_of(fake, OTHER_APP), ALICE)
    assert lookups(fake) == 2 and [t.app_id for t in fake.attempts("contact")] == [APP_ID, OTHER_APP]


def test_a_found_open_id_is_kept_for_a_week(fake, processes, clock):
    one, two = processes(), processes()
    buzz(one, bot_of(fake), ALICE)
    clock.advance(KNOWN_FOR - 60)
    buzz(two, bot_of(fake), ALICE)
    assert lookups(fake) == 1
    clock.advance(120)
    assert buzz(two, bot_of(fake), ALICE).buzzed == ("ou_alice",) and lookups(fake) == 2


def test_not_found_is_kept_for_a_short_while(fake, processes, clock):
    one, two = processes(), processes()
    found = buzz(one, bot_of(fake), TYPO)
    assert (found.result.outcome, found.result.reason, found.not_buzzed) == (
        Outcome.PERMANENT, UNKNOWN_USERS, ("alcie@example.com",))
    assert buzz(two, bot_of(fake), TYPO).result.reason == UNKNOWN_USERS and lookups(fake) == 1, \
        "a typo costs no lookup per urgent"
    clock.advance(UNKNOWN_FOR + 1)
    fake.add_user("ou_alcie", "alcie@example.com")   # added to the app's contacts range meanwhile
    assert buzz(two, bot_of(fake), TYPO).not_buzzed == ("ou_alcie",), "looked up again, found, not in the chat"
    assert lookups(fake) == 2


@pytest.mark.parametrize("failure", [("code", 1500), ("http", 503), ("reset",), ("code", a.NO_SCOPE)])
def test_a_failed_lookup_is_never_kept(fake, processes, failure):
    one, two = processes(), processes()
    fake.script("contact", failure)
    failed = buzz(one, bot_of(fake), ALICE)
    assert failed.result.outcome is not Outcome.SENT and failed.not_buzzed == ("alice@example.com",)
    found = buzz(two, bot_of(fake), ALICE)
    assert (found.result.reason, found.buzzed) == (OK, ("ou_alice",)) and lookups(fake) == 2
    buzz(one, bot_of(fake), ALICE)
    assert lookups(fake) == 2, "the answer that came is kept"


def test_a_store_that_cannot_be_read_or_written_still_buzzes(fake, clock):
    from bridge.errors import StorageError

    class Broken:
        def app_users(self, key, emails):
            raise StorageError("cannot read the outbox: disk I/O error")

        def keep_app_users(self, key, users):
            raise StorageError("cannot write the outbox: disk full")

    client = AppClient(users=Broken(), clock=clock)
    assert buzz(client, bot_of(fake), ALICE).buzzed == ("ou_alice",)
