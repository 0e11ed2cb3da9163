"""Shared fixtures. Golden files: `pytest --update-golden` rewrites them."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/golden/ from what the fake Feishu received",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def fake_feishu():
    """The strict fake Feishu webhook server, on a free loopback port."""
    from fake_feishu import FakeFeishu

    with FakeFeishu() as fake:
        yield fake
