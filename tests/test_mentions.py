"""Who an alert pings on each bot, and whether its resolution is sent there.

Everything starts from config text, as a user writes it, and goes through the route tree
as the pipeline does (routing.routes_by_bot), so each test shows what a user would see.
"""

from __future__ import annotations

import logging
import textwrap
import threading

import pytest

from bridge import config as cfg
from bridge.mentions import REMEMBERED_UNKNOWN_NAMES, MentionResolver, label_names, sends_resolved
from bridge.model import FIRING, RESOLVED, Alert, Mention
from bridge.routing import routes_by_bot

ALICE, BOB, CAROL = "ou_alice1", "ou_bob2", "ou_carol3"
USERS = f"users: {{alice: {ALICE}, bob: {{open_id: {BOB}}}, carol: {CAROL}}}\n"


def load(text: str) -> cfg.Config:
    return cfg.loads(USERS + textwrap.dedent(text), env={})


def alert(status: str = FIRING, annotations: dict[str, str] | None = None, **labels: str) -> Alert:
    return Alert(status=status, labels=labels, annotations=annotations or {}, starts_at=None, ends_at=None)


def mentions(config: cfg.Config, a: Alert, resolver: MentionResolver | None = None) -> dict[str, tuple]:
    """bot -> (open_id or text name, ...) for one alert, routed as the pipeline routes it."""
    resolver = resolver or MentionResolver(config.users, logging.getLogger("test"))
    return {bot: tuple(m.user_id or f"text:{m.name}" for m in
                       resolver.for_alert(a, config.bots[bot], routes))
            for bot, routes in routes_by_bot(config.route, a.labels).items()}


# --- each source --------------------------------------------------------------------------

def test_bot_mentions_users_by_name_and_by_open_id() -> None:
    config = load("""
        bots: [{name: ops, mentions: {users: [alice, ou_direct9]}}]
        route: {bots: [ops]}
        """)
    found = MentionResolver(config.users, logging.getLogger("t")).for_alert(alert(), config.bots["ops"], ())
    assert found == (Mention(ALICE, "alice"), Mention("ou_direct9"))
    assert all(m.pings for m in found)


def test_route_mentions_apply_to_the_alerts_the_route_sends() -> None:
    config = load("""
        bots: [{name: ops}, {name: db}]
        route:
          bots: [ops]
          routes:
            - {matchers: ['team="db"'], bots: [db], mentions: {users: [bob]}}
        """)
    assert mentions(config, alert(team="db")) == {"db": (BOB,)}
    assert mentions(config, alert(team="web")) == {"ops": ()}


def test_all_pings_everyone_and_comes_first() -> None:
    config = load("""
        bots: [{name: ops, mentions: {users: [alice]}}]
        route: {bots: [ops], mentions: {all: true, users: [bob]}}
        """)
    assert mentions(config, alert()) == {"ops": ("all", ALICE, BOB)}


def test_mention_labels_map_names_through_the_users_directory() -> None:
    config = load("""
        bots: [{name: ops, mention_labels: [owner, oncall]}]
        route: {bots: [ops]}
        """)
    a = alert(owner="alice, @bob", annotations={"oncall": "carol"})
    assert mentions(config, a) == {"ops": (ALICE, BOB, CAROL)}


@pytest.mark.parametrize("value,names", [
    ("alice", ["alice"]),
    ("alice,bob", ["alice", "bob"]),
    ("alice, bob  carol", ["alice", "bob", "carol"]),
    ("@alice;@bob", ["alice", "bob"]),
    ("张三，李四、王五；赵六", ["张三", "李四", "王五", "赵六"]),
    (" , ", []),
    ("", []),
])
def test_a_label_value_may_list_several_names(value: str, names: list[str]) -> None:
    assert label_names(value) == names


def test_a_label_wins_over_an_annotation_of_the_same_name() -> None:
    config = load("bots: [{name: ops, mention_labels: [owner]}]\nroute: {bots: [ops]}")
    assert mentions(config, alert(owner="alice", annotations={"owner": "bob"})) == {"ops": (ALICE,)}
    # An empty label counts as absent, as in Prometheus.
    assert mentions(config, alert(owner="", annotations={"owner": "bob"})) == {"ops": (BOB,)}


def test_labels_never_ping_anyone_the_directory_does_not_list() -> None:
    config = load("bots: [{name: ops, mention_labels: [owner]}]\nroute: {bots: [ops]}")
    resolver = MentionResolver(config.users, logging.getLogger("t"))
    found = resolver.for_alert(alert(owner=f"all {ALICE} <at_id=all> dave"), config.bots["ops"], ())
    assert found == (Mention("", "all"), Mention("", ALICE), Mention("", "<at_id=all>"), Mention("", "dave"))
    assert not any(m.pings for m in found)


# --- conditions: matchers and mention_on ----------------------------------------------------

def test_mentions_matchers_limit_who_is_pinged_for_which_alert() -> None:
    config = load("""
        bots: [{name: ops, mention_labels: [owner]}]
        route: {bots: [ops], mentions: {all: true, matchers: ['severity="critical"', 'env!="staging"']}}
        """)
    assert mentions(config, alert(severity="critical", env="prod")) == {"ops": ("all",)}
    assert mentions(config, alert(severity="critical", env="staging")) == {"ops": ()}
    # The matchers belong to `mentions` only: mention_labels still apply.
    assert mentions(config, alert(severity="warning", owner="bob")) == {"ops": (BOB,)}


def test_resolved_alerts_ping_nobody_by_default() -> None:
    config = load("""
        bots: [{name: ops, mentions: {users: [alice]}, mention_labels: [owner]}]
        route: {bots: [ops], mentions: {all: true}}
        """)
    assert mentions(config, alert(owner="bob")) == {"ops": ("all", ALICE, BOB)}
    assert mentions(config, alert(RESOLVED, owner="bob")) == {"ops": ()}


@pytest.mark.parametrize("mention_on,firing,resolved", [
    ("[firing]", (ALICE, BOB), ()),
    ("[resolved]", (), (ALICE, BOB)),
    ("[firing, resolved]", (ALICE, BOB), (ALICE, BOB)),
    ("[]", (), ()),
])
def test_mention_on_chooses_the_statuses_that_mention(mention_on: str, firing: tuple, resolved: tuple) -> None:
    config = load(f"""
        bots: [{{name: ops, mentions: {{users: [alice]}}, mention_labels: [owner], mention_on: {mention_on}}}]
        route: {{bots: [ops]}}
        """)
    assert mentions(config, alert(FIRING, owner="bob")) == {"ops": firing}
    assert mentions(config, alert(RESOLVED, owner="bob")) == {"ops": resolved}


def test_bot_and_route_conditions_are_separate() -> None:
    config = load("""
        bots: [{name: ops, mentions: {users: [alice]}, mention_on: [resolved]}]
        route: {bots: [ops], mentions: {users: [bob]}}
        """)
    assert mentions(config, alert(FIRING)) == {"ops": (BOB,)}
    assert mentions(config, alert(RESOLVED)) == {"ops": (ALICE,)}


# --- duplicates, order, several routes ------------------------------------------------------

def test_each_person_is_pinged_once_in_the_order_found() -> None:
    config = load(f"""
        bots: [{{name: ops, mentions: {{users: [bob, {ALICE}]}}, mention_labels: [owner]}}]
        route:
          bots: [ops]
          routes:
            - {{matchers: ['a="1"'], continue: true, mentions: {{users: [alice, carol]}}}}
            - {{matchers: ['b="1"'], mentions: {{all: true, users: [carol]}}}}
        """)
    found = mentions(config, alert(a="1", b="1", owner="carol bob dave dave"))
    assert found == {"ops": ("all", BOB, ALICE, CAROL, "text:dave")}


def test_only_the_routes_that_send_the_alert_to_a_bot_count_for_it() -> None:
    config = load("""
        bots: [{name: ops}, {name: db}]
        route:
          bots: [ops]
          routes:
            - {matchers: ['team="db"'], bots: [db], continue: true, mentions: {users: [bob]}}
            - {matchers: ['severity="critical"'], bots: [ops, db], mentions: {users: [alice]}}
        """)
    assert mentions(config, alert(team="db", severity="critical")) == {"db": (BOB, ALICE), "ops": (ALICE,)}


def test_without_routes_only_the_bot_counts() -> None:
    """The /alertmanager/<bot> endpoints skip routing: the bot's own settings remain."""
    config = load("""
        bots: [{name: ops, mentions: {users: [alice]}}]
        route: {bots: [ops], mentions: {all: true}}
        """)
    resolver = MentionResolver(config.users, logging.getLogger("t"))
    assert resolver.for_alert(alert(), config.bots["ops"], ()) == (Mention(ALICE, "alice"),)


# --- inheritance ----------------------------------------------------------------------------

INHERITING = """
    bots: [{name: ops}, {name: db}]
    route:
      bots: [ops]
      mentions: {users: [alice]}
      mention_labels: [owner]
      mention_on: [firing, resolved]
      send_resolved: false
      routes:
        - matchers: ['team="db"']
          bots: [db]
          routes:
            - {matchers: ['severity="critical"'], mentions: {all: true}}
            - {matchers: ['severity="info"'], mentions: {}, mention_labels: [], send_resolved: true}
            - {matchers: ['severity="page"'], mention_on: [firing]}
"""


@pytest.mark.parametrize("labels,status,expected", [
    ({"team": "db"}, FIRING, (ALICE, BOB)),                            # all four inherited from the root
    ({"team": "db"}, RESOLVED, (ALICE, BOB)),                          # mention_on inherited
    ({"team": "db", "severity": "critical"}, FIRING, ("all", BOB)),     # mentions replaced, labels kept
    ({"team": "db", "severity": "info"}, FIRING, ()),                  # both turned off explicitly
    ({"team": "db", "severity": "page"}, RESOLVED, ()),                # mention_on replaced
    ({"team": "db", "severity": "page"}, FIRING, (ALICE, BOB)),
])
def test_a_child_route_inherits_what_it_does_not_set(labels: dict, status: str, expected: tuple) -> None:
    config = load(INHERITING)
    assert mentions(config, alert(status, owner="bob", **labels)) == {"db": expected}


def test_send_resolved_is_inherited_and_overridable() -> None:
    config = load(INHERITING)
    sends = {tuple(sorted(labels.items())): sends_resolved(config.bots[bot], routes)
             for labels in ({"team": "web"}, {"team": "db"}, {"team": "db", "severity": "info"})
             for bot, routes in routes_by_bot(config.route, labels).items()}
    assert sends == {(("team", "web"),): False, (("team", "db"),): False,
                     (("severity", "info"), ("team", "db")): True}


# --- send_resolved ------------------------------------------------------------------------

def test_send_resolved_per_bot_and_per_route() -> None:
    config = load("""
        bots: [{name: ops}, {name: quiet, send_resolved: false}]
        route:
          bots: [ops, quiet]
          routes:
            - {matchers: ['a="1"'], send_resolved: false, continue: true}
            - {matchers: ['b="1"']}
        """)

    def verdict(**labels: str) -> dict[str, bool]:
        return {bot: sends_resolved(config.bots[bot], routes)
                for bot, routes in routes_by_bot(config.route, labels).items()}

    assert verdict() == {"ops": True, "quiet": False}
    assert verdict(a="1") == {"ops": False, "quiet": False}
    # Two routes send it; the one that allows resolved notifications is enough.
    assert verdict(a="1", b="1") == {"ops": True, "quiet": False}
    # /alertmanager/<bot>: no routes, the bot decides.
    assert sends_resolved(config.bots["ops"], ()) and not sends_resolved(config.bots["quiet"], ())


# --- unknown names are logged once ------------------------------------------------------------

def unknown_warnings(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.user, r.label) for r in caplog.records if getattr(r, "event", "") == "unknown_mention"]


def test_an_unknown_name_is_shown_as_text_and_logged_once_per_resolver(caplog: pytest.LogCaptureFixture) -> None:
    config = load("bots: [{name: ops, mention_labels: [owner, oncall]}]\nroute: {bots: [ops]}")
    log = logging.getLogger("test.mentions")
    resolver = MentionResolver(config.users, log)
    with caplog.at_level(logging.WARNING, logger="test.mentions"):
        for _ in range(3):
            found = resolver.for_alert(alert(owner="dave, alice", oncall="erin dave"), config.bots["ops"], ())
        assert found == (Mention("", "dave"), Mention(ALICE, "alice"), Mention("", "erin"))
        assert unknown_warnings(caplog) == [("dave", "owner"), ("erin", "oncall")]
        assert "dave" in caplog.records[0].getMessage() and "owner" in caplog.records[0].getMessage()
        MentionResolver(config.users, log).for_alert(alert(owner="dave"), config.bots["ops"], ())
    assert unknown_warnings(caplog)[-1] == ("dave", "owner")   # a new resolver (a reload) says it again


def test_logged_once_even_from_many_threads(caplog: pytest.LogCaptureFixture) -> None:
    config = load("bots: [{name: ops, mention_labels: [owner]}]\nroute: {bots: [ops]}")
    resolver = MentionResolver(config.users, logging.getLogger("test.threads"))

    def work() -> None:
        for _ in range(50):
            resolver.for_alert(alert(owner="dave"), config.bots["ops"], ())

    with caplog.at_level(logging.WARNING, logger="test.threads"):
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert unknown_warnings(caplog) == [("dave", "owner")]


def test_memory_of_unknown_names_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    config = load("bots: [{name: ops, mention_labels: [owner]}]\nroute: {bots: [ops]}")
    resolver = MentionResolver(config.users, logging.getLogger("test.bounded"))
    bot = config.bots["ops"]
    with caplog.at_level(logging.WARNING, logger="test.bounded"):
        resolver.for_alert(alert(owner="first"), bot, ())
        resolver.for_alert(alert(owner=" ".join(f"n{i}" for i in range(REMEMBERED_UNKNOWN_NAMES))), bot, ())
        resolver.for_alert(alert(owner="first"), bot, ())
    warned = [user for user, _ in unknown_warnings(caplog)]
    assert warned.count("first") == 2 and len(warned) == REMEMBERED_UNKNOWN_NAMES + 2
