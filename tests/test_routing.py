"""Matchers and the route tree behave as Alertmanager's do.

Expected results were worked out from Alertmanager's source (matcher/oldparse/parse.go,
matcher/parse/{lexer,parse,token}.go, matcher/compat/parse.go FallbackMatchersParser,
matcher/matcher.go, dispatch/route.go Route.Match); several parse cases are taken from
matcher/parse/parse_test.go.
"""

from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.config import Route
from bridge.matchers import Matcher, MatcherError, parse_matchers
from bridge.routing import match, route_matches, routes_by_bot


def one(text: str) -> Matcher:
    matchers = parse_matchers(text)
    assert len(matchers) == 1, matchers
    return matchers[0]


# --- operators, anchoring, absent labels ---------------------------------------------

@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ('severity="critical"', {"severity": "critical"}, True),
        ('severity="critical"', {"severity": "Critical"}, False),
        ('severity="critical"', {"severity": "critical "}, False),
        ('severity!="critical"', {"severity": "warning"}, True),
        ('severity!="critical"', {"severity": "critical"}, False),
        ('severity=~"critical|page"', {"severity": "page"}, True),
        ('severity=~"critical|page"', {"severity": "warning"}, False),
        ('severity!~"critical|page"', {"severity": "warning"}, True),
        ('severity!~"critical|page"', {"severity": "critical"}, False),
        # fully anchored, like Go's "^(?:" + v + ")$"
        ('severity=~"crit"', {"severity": "critical"}, False),
        ('severity=~"crit.*"', {"severity": "critical"}, True),
        ('severity=~"ical"', {"severity": "critical"}, False),
        ('x=~"a|b"', {"x": "ab"}, False),
        ('x=~"a|b"', {"x": "b"}, True),
        ('severity!~"crit"', {"severity": "critical"}, True),
        ('x=~"a"', {"x": "a\n"}, False),
        # an absent label matches as ""
        ('foo!="bar"', {}, True),
        ('foo=""', {}, True),
        ('foo=""', {"foo": "x"}, False),
        ('foo=~".*"', {}, True),
        ('foo=~".*"', {"foo": "anything at all"}, True),
        ('foo=~".+"', {}, False),
        ('foo!~".+"', {}, True),
        ('foo!~"bar"', {}, True),
        ('foo="bar"', {}, False),
        ('foo!=""', {}, False),
        # RE2 specifics that Python's re would read differently
        ('severity=~"(?i)critical"', {"severity": "CRITICAL"}, True),
        ('severity=~"(?i)crit|page"', {"severity": "PAGE"}, True),
        ('severity=~"critical"', {"severity": "CRITICAL"}, False),
        ('code=~"5\\d\\d"', {"code": "503"}, True),
        ('code=~"\\d+"', {"code": "\u0665\u0660\u0663"}, False),   # Arabic-Indic digits: RE2's \d is ASCII
        ('team=~"\\w+"', {"team": "数据库"}, False),
        ('team="数据库"', {"team": "数据库"}, True),
    ],
)
def test_matcher_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert one(text).matches(labels) is expected


def test_all_matchers_of_a_route_must_match() -> None:
    route = Route(matchers=tuple(parse_matchers('team="db", severity=~"critical|page"')), bots=("db",))
    assert match(route, {"team": "db", "severity": "page"}) == [route]
    assert match(route, {"team": "db", "severity": "info"}) == []
    assert match(route, {"severity": "page"}) == []


def test_regex_is_compiled_once_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    matcher = one('instance=~"db-[0-9]+"')

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("regex compiled while matching")

    for compiling in ("compile", "match", "fullmatch", "search"):
        monkeypatch.setattr(re, compiling, refuse)
    assert matcher.matches({"instance": "db-12"})
    assert not matcher.matches({"instance": "db-x"})


# --- parsing -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        # quoted and bare values, whitespace
        ('severity="critical"', [("severity", "=", "critical")]),
        ("severity=critical", [("severity", "=", "critical")]),
        ("alertname = Watchdog", [("alertname", "=", "Watchdog")]),
        ('  severity  =~  "warning|critical"  ', [("severity", "=~", "warning|critical")]),
        ("severity=~critical|page", [("severity", "=~", "critical|page")]),
        ("statuscode=~5..", [("statuscode", "=~", "5..")]),
        ('foo!~"bar"', [("foo", "!~", "bar")]),
        ("foo=🙂bar", [("foo", "=", "🙂bar")]),
        ('foo=""', [("foo", "=", "")]),
        ("foo=", [("foo", "=", "")]),
        ("foo=bar baz", [("foo", "=", "bar baz")]),                 # classic: a bare value may hold spaces
        # escapes inside quotes
        (r'quote="She said: \"Hi, ladies!\""', [("quote", "=", 'She said: "Hi, ladies!"')]),
        (r'path="C:\\temp"', [("path", "=", "C:\\temp")]),
        (r'msg="line\nbreak"', [("msg", "=", "line\nbreak")]),
        (r'code=~"5\d\d"', [("code", "=~", r"5\d\d")]),            # unknown escape kept, as Alertmanager does
        (r'x="a\tb"', [("x", "=", r"a\tb")]),                       # the classic reading wins over Go's
        # commas, braces and operators inside quotes
        ('foo="a,b"', [("foo", "=", "a,b")]),
        ('foo="{a}"', [("foo", "=", "{a}")]),
        ('{foo="}"}', [("foo", "=", "}")]),
        ('url="a=b!=c"', [("url", "=", "a=b!=c")]),
        # several matchers, braces, one trailing comma
        ("foo=bar,dings!=bums", [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        ('{foo = "bar", dings != "bums", }', [("foo", "=", "bar"), ("dings", "!=", "bums")]),
        ('{foo="bar",dings=~"a|b"}', [("foo", "=", "bar"), ("dings", "=~", "a|b")]),
        ('foo="a,b", bar="c",', [("foo", "=", "a,b"), ("bar", "=", "c")]),
        ("{foo=bar,}", [("foo", "=", "bar")]),
        ('  {foo="bar"}  ', [("foo", "=", "bar")]),
        ('foo="bar"}', [("foo", "=", "bar")]),                      # the classic parser trims either brace alone
        ('{foo="bar"', [("foo", "=", "bar")]),
        # names only the UTF-8 parser reads: quoted, or with characters outside [a-zA-Z0-9_:]
        ('"service name"="api"', [("service name", "=", "api")]),
        ('{"foo"!~"[a-z]+",}', [("foo", "!~", "[a-z]+")]),
        ("service.name=api", [("service.name", "=", "api")]),
        ("k8s-app=~dns.*", [("k8s-app", "=~", "dns.*")]),
        (r'"foo"="\U0001f642"', [("foo", "=", "🙂")]),
        (r'"foo"="\xf0\x9f\x99\x82"', [("foo", "=", "🙂")]),
        (r'"a b"="x\ty"', [("a b", "=", "x\ty")]),
        ('{"a b"="x", c=~"y|z"}', [("a b", "=", "x"), ("c", "=~", "y|z")]),
        # Alertmanager's classic parser reads everything after the operator as the value
        ("foo==bar", [("foo", "=", "=bar")]),
        ("foo=!bar", [("foo", "=", "!bar")]),
    ],
)
def test_parse_matchers(text: str, expected: list[tuple[str, str, str]]) -> None:
    assert [(m.name, m.op, m.value) for m in parse_matchers(text)] == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty matcher string"),
        ("   ", "empty matcher string"),
        ("{}", "no matchers in `{}`"),
        ("foo", "missing operator after label name `foo`"),
        ("foo ", "missing operator after label name `foo`"),
        ("foo~=bar", "unknown operator `~=` at column 4"),
        ("foo!bar", "unknown operator `!` at column 4"),
        ('foo ~ "bar"', "unknown operator `~` at column 5"),
        ('foo="bar', 'unterminated quoted string `"bar` at column 5'),
        ('"foo=bar', 'unterminated quoted string `"foo=bar` at column 1'),
        (r'"a\qb"="x"', r"invalid escape sequence `\q` in quoted label name"),
        (r'service.name="\d+"', r"invalid escape sequence `\d` in quoted value"),
        (r'"\xff"="x"', "invalid UTF-8 in quoted label name"),
        ('"a\nb"="x"', "newline in quoted label name"),
        ("=bar", "missing label name before `=` at column 1"),
        ('""="x"', "empty label name at column 1"),
        ("'foo'=bar", "unexpected `'` at column 1, expected a label name"),
        ('foo bar="x"', "unexpected `bar` at column 5, expected an operator (=, !=, =~, !~) after label name `foo`"),
        ('"a b"=', "unexpected end of input, expected a value"),
        ('foo="bar" baz', "unexpected `baz` at column 11, expected `,` or `}` after a matcher"),
        ('foo="bar"x', "unexpected `x` at column 10, expected `,` or `}` after a matcher"),
        ('foo="bar",,', "unexpected `,` at column 11, expected a label name"),
        (",", "unexpected `,` at column 1, expected a label name"),
        ("{,}", "unexpected `,` at column 2, expected a label name"),
        ('"a b"="x"}', "`}` at column 10 has no opening `{`"),
        ('{"a b"="x"', "missing closing `}`"),
        ('{"a b"="x"}}', "unexpected `}` at column 12, expected end of input"),
    ],
)
def test_parse_errors_say_what_is_wrong_and_where(text: str, message: str) -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matchers(text)
    assert message in str(caught.value)
    if text.strip() and text != "{}":
        assert f"`{text}`" in str(caught.value), "the message shows the offending input"


@pytest.mark.parametrize(
    "text, message",
    [
        ('foo=~"("', 'invalid regex "(": missing ), unterminated subpattern'),
        ("foo=~(", 'invalid regex "(": missing ), unterminated subpattern'),
        (r"foo=~\d(", r'invalid regex "\d(": missing ), unterminated subpattern'),
        ('foo!~"[a-"', 'invalid regex "[a-": unterminated character set'),
        ('{bar="x", foo=~"*"}', 'invalid regex "*": nothing to repeat'),
        ('foo=~"[[:digit:]]+"', "POSIX classes like [[:digit:]] are not supported"),
        ('foo=~"a(?i)b"', "inline flags such as (?i) are only supported at the start of the regex"),
    ],
)
def test_invalid_regex_is_rejected_when_parsed(text: str, message: str) -> None:
    with pytest.raises(MatcherError) as caught:
        parse_matchers(text)
    assert message in str(caught.value)


def test_matcher_validates_what_it_is_built_from() -> None:
    with pytest.raises(MatcherError, match=r'^invalid regex "\(": missing \), unterminated subpattern$'):
        Matcher("foo", "=~", "(")
    with pytest.raises(MatcherError, match="unknown operator '=='"):
        Matcher("foo", "==", "x")
    with pytest.raises(MatcherError, match="empty label name"):
        Matcher("", "=", "x")
    assert isinstance(MatcherError("x"), ValueError)


# --- str(): Alertmanager's canonical form, and it parses back ---------------------------

@pytest.mark.parametrize(
    "matcher, text",
    [
        (Matcher("severity", "=~", "critical|page"), 'severity=~"critical|page"'),
        (Matcher("severity", "=", "critical"), 'severity="critical"'),
        (Matcher("foo", "!=", ""), 'foo!=""'),
        (Matcher("foo", "!~", "a.*"), 'foo!~"a.*"'),
        (Matcher("q", "=", 'say "hi"'), r'q="say \"hi\""'),
        (Matcher("p", "=", "C:\\temp"), r'p="C:\\temp"'),
        (Matcher("m", "=", "a\nb"), r'm="a\nb"'),
        (Matcher("m", "=", "a,b{c}"), 'm="a,b{c}"'),
        (Matcher("service.name", "=", "api"), 'service.name="api"'),
        (Matcher("a b", "=", "x\ty"), r'"a b"="x\ty"'),
        (Matcher("a=b", "=~", 'x"y'), r'"a=b"=~"x\"y"'),
        (Matcher("\x1fa", "=", "x"), '\x1fa="x"'),               # \x1f is not space to Go
    ],
)
def test_str_is_alertmanagers_form(matcher: Matcher, text: str) -> None:
    assert str(matcher) == text
    assert parse_matchers(text) == [matcher]


def test_matchers_joined_as_alertmanager_prints_them_parse_back() -> None:
    matchers = [Matcher("a", "=", "1,2"), Matcher("b b", "!~", "x|y"), Matcher("c", "!=", "}")]
    assert parse_matchers("{" + ",".join(str(m) for m in matchers) + "}") == matchers


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(min_size=1, max_size=12),
    op=st.sampled_from(["=", "!="]),
    value=st.text(max_size=20),
)
def test_str_round_trips_any_name_and_value(name: str, op: str, value: str) -> None:
    matcher = Matcher(name, op, value)
    assert parse_matchers(str(matcher)) == [matcher]


@settings(max_examples=100, deadline=None)
@given(
    name=st.text(min_size=1, max_size=12),
    op=st.sampled_from(["=~", "!~"]),
    value=st.sampled_from([r"\d+", "a|b", ".*", "(?i)crit.*", r'say "hi"\\', "[a-z]{2,3}", "x\ny"]),
)
def test_str_round_trips_regex_matchers(name: str, op: str, value: str) -> None:
    matcher = Matcher(name, op, value)
    assert parse_matchers(str(matcher)) == [matcher]


# --- the route tree ------------------------------------------------------------------

CONTRACT_YAML = """
route:
  bots: [ops]
  routes:
    - matchers: ['team="db"']
      bots: [db]
    - matchers: ['severity=~"critical|page"', 'env!="staging"']
      bots: [oncall]
      continue: true
      routes: []
"""


def build(section: dict, inherited: tuple[str, ...] = ()) -> Route:
    """The tree the loader builds: unset bots inherited from the parent."""
    bots = tuple(section.get("bots") or inherited)
    return Route(
        matchers=tuple(m for text in section.get("matchers", []) for m in parse_matchers(text)),
        bots=bots,
        continue_=bool(section.get("continue", False)),
        routes=tuple(build(child, bots) for child in section.get("routes") or []),
    )


def route_alert(root: Route, labels: dict[str, str]) -> tuple[str, ...]:
    """The bots an alert goes to: every matched route's bots, in order, each once."""
    return tuple(dict.fromkeys(bot for bot, _ in route_matches(root, labels)))


@pytest.fixture
def contract_tree() -> Route:
    return build(yaml.safe_load(CONTRACT_YAML)["route"])


@pytest.mark.parametrize(
    "labels, bots",
    [
        # the db route matches first and does not continue
        ({"team": "db", "severity": "critical"}, ("db",)),
        ({"team": "db", "severity": "critical", "env": "prod"}, ("db",)),
        # oncall continues, nothing after it matches; a child matched, so the root is not added
        ({"severity": "critical", "env": "prod"}, ("oncall",)),
        ({"severity": "page"}, ("oncall",)),                          # env absent: != "staging"
        # nothing matches: the root is the catch-all
        ({"severity": "critical", "env": "staging"}, ("ops",)),
        ({"severity": "warning", "env": "prod"}, ("ops",)),
        ({"severity": "critical|page"}, ("ops",)),
        ({"severity": "CRITICAL"}, ("ops",)),
        ({"team": "dbx"}, ("ops",)),
        ({}, ("ops",)),
    ],
)
def test_contract_example(contract_tree: Route, labels: dict[str, str], bots: tuple[str, ...]) -> None:
    assert route_alert(contract_tree, labels) == bots


def test_contract_example_with_continue_on_the_db_route() -> None:
    raw = yaml.safe_load(CONTRACT_YAML)["route"]
    raw["routes"][0]["continue"] = True
    tree = build(raw)
    assert route_alert(tree, {"team": "db", "severity": "critical", "env": "prod"}) == ("db", "oncall")
    assert route_alert(tree, {"team": "db"}) == ("db",)


def leaf(name: str, matcher: str = "", *, cont: bool = False, routes: tuple[Route, ...] = ()) -> Route:
    return Route(matchers=tuple(parse_matchers(matcher)) if matcher else (), bots=(name,),
                 continue_=cont, routes=routes)


def test_match_stops_at_the_first_matching_child_without_continue() -> None:
    first, second = leaf("first", "a=1"), leaf("second", "a=~.*")
    root = Route(bots=("root",), routes=(first, second))
    assert match(root, {"a": "1"}) == [first]
    assert match(root, {"a": "2"}) == [second]


def test_continue_lets_later_siblings_match_too() -> None:
    c1, c2, c3, c4 = (leaf("c1", "a=1", cont=True), leaf("c2", "b=2", cont=True),
                      leaf("c3", "a=1"), leaf("c4", "a=1"))
    root = Route(bots=("root",), routes=(c1, c2, c3, c4))
    assert match(root, {"a": "1", "b": "2"}) == [c1, c2, c3]        # c3 has no continue: c4 is not tried
    assert match(root, {"a": "1"}) == [c1, c3]
    assert match(root, {"b": "2"}) == [c2]
    assert match(root, {}) == [root]


def test_continue_on_a_child_that_does_not_match_changes_nothing() -> None:
    c1, c2 = leaf("c1", "a=1", cont=True), leaf("c2", "b=2")
    root = Route(bots=("root",), routes=(c1, c2))
    assert match(root, {"b": "2"}) == [c2]


def test_a_child_without_matchers_matches_everything() -> None:
    special, rest = leaf("special", "team=db", cont=True), leaf("rest")
    root = Route(bots=("root",), routes=(special, rest))
    assert route_alert(root, {"team": "db"}) == ("special", "rest")
    assert route_alert(root, {"team": "web"}) == ("rest",)


def test_nesting_returns_the_deepest_matching_routes() -> None:
    grandchild = leaf("db-critical", 'severity="critical"')
    other = leaf("db-page", 'severity="page"')
    child = leaf("db", 'team="db"', routes=(grandchild, other))
    sibling = leaf("web", 'team="web"')
    root = Route(bots=("root",), routes=(child, sibling))
    assert match(root, {"team": "db", "severity": "critical"}) == [grandchild]
    assert match(root, {"team": "db", "severity": "page"}) == [other]
    assert match(root, {"team": "db", "severity": "info"}) == [child]   # the child is its children's catch-all
    assert match(root, {"team": "web", "severity": "critical"}) == [sibling]
    assert match(root, {"severity": "critical"}) == [root]


def test_continue_inside_a_subtree_and_after_it() -> None:
    g1 = leaf("g1", 'severity="critical"', cont=True)
    g2 = leaf("g2", 'env="prod"')
    child = leaf("db", 'team="db"', cont=True, routes=(g1, g2))
    audit = leaf("audit", "")
    root = Route(bots=("root",), routes=(child, audit))
    assert match(root, {"team": "db", "severity": "critical", "env": "prod"}) == [g1, g2, audit]
    assert match(root, {"team": "db", "severity": "critical"}) == [g1, audit]
    assert match(root, {"team": "db"}) == [child, audit]
    assert match(root, {"team": "web"}) == [audit]


def test_a_route_whose_matchers_fail_matches_nothing() -> None:
    route = leaf("x", "a=1", routes=(leaf("y"),))
    assert match(route, {"a": "2"}) == []


def test_route_alert_fans_out_in_order_and_names_each_bot_once() -> None:
    first = Route(matchers=tuple(parse_matchers("a=1")), bots=("ops", "db"), continue_=True)
    second = Route(matchers=tuple(parse_matchers("a=~.+")), bots=("db", "oncall", "ops"), continue_=True)
    third = Route(matchers=tuple(parse_matchers("b=2")), bots=("audit",))
    root = Route(bots=("root",), routes=(first, second, third))
    assert route_alert(root, {"a": "1", "b": "2"}) == ("ops", "db", "oncall", "audit")
    assert route_alert(root, {"a": "5"}) == ("db", "oncall", "ops")
    assert route_alert(root, {"c": "3"}) == ("root",)


def test_root_with_several_bots_is_the_catch_all() -> None:
    root = Route(bots=("ops", "backup"), routes=(leaf("db", 'team="db"'),))
    assert route_alert(root, {"team": "web"}) == ("ops", "backup")
    assert route_alert(root, {"team": "db"}) == ("db",)


def test_route_matches_pairs_each_bot_with_the_route_that_sends_the_alert_there() -> None:
    first = Route(matchers=tuple(parse_matchers("a=1")), bots=("ops", "db", "ops"), continue_=True)
    second = Route(matchers=tuple(parse_matchers("a=~.+")), bots=("db", "oncall"), send_resolved=False)
    root = Route(bots=("root",), routes=(first, second))
    assert route_matches(root, {"a": "1"}) == [("ops", first), ("db", first), ("db", second), ("oncall", second)]
    assert route_matches(root, {"b": "1"}) == [("root", root)]
    assert routes_by_bot(root, {"a": "1"}) == {"ops": (first,), "db": (first, second), "oncall": (second,)}
    assert list(routes_by_bot(root, {"a": "1"})) == list(route_alert(root, {"a": "1"}))
