"""Shared fixtures and options.

Golden files: `pytest --update-golden` rewrites them. Tools the tests drive (helm,
hadolint, promtool, prometheus, alertmanager, chromium, chromedriver, setpriv): a missing
one skips its tests with a message saying how to install it, so a partial machine can
still run the rest; `pytest --require-tools` (CI's setting) makes it a failure instead,
because there a missing tool is a broken set-up, not an optional test.
"""

from __future__ import annotations

import socket
from typing import Iterator

import pytest

from support import LOOPBACK, MissingTool


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/ from what the fake Feishu received",
    )
    parser.addoption(
        "--require-tools",
        action="store_true",
        help="fail, rather than skip, a test whose tool (helm, hadolint, prometheus, ...) is not "
        "installed; CI runs with it",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    missing = call.excinfo is not None and call.excinfo.errisinstance(MissingTool)
    if missing and report.skipped and item.config.getoption("--require-tools"):
        report.outcome = "failed"
        report.longrepr = f"{call.excinfo.value.msg} (a failure, not a skip: --require-tools)"


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HTTP(S) proxy from the environment: the fake Feishu is on loopback."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch, no_proxy_env: None) -> list[str]:
    """Fails any name lookup but loopback's; returns the names looked up."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)  # the bot's proxy must not be bypassed
    looked_up: list[str] = []
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        looked_up.append(str(host))
        if str(host) not in LOOPBACK:
            raise AssertionError(f"the test tried to resolve {host!r}: only loopback is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    return looked_up


@pytest.fixture
def fake_feishu():
    """The strict fake Feishu webhook server, on a free loopback port."""
    from fake_feishu import FakeFeishu

    with FakeFeishu() as fake:
        yield fake


@pytest.fixture(scope="session")
def postgres_cluster():
    """One throw-away PostgreSQL server for the whole session (tests/support/postgres.py);
    each test takes a fresh schema or database in it."""
    from support.postgres import Cluster

    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def fake_open_api():
    """The strict fake of Feishu's Open API (app bots), on a free loopback port."""
    from fake_open_api import FakeOpenAPI

    with FakeOpenAPI() as fake:
        yield fake
