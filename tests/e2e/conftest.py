"""End-to-end fixtures: the real binaries, processes stopped whatever happens, their logs on failure.

Every process writes its log to a `*.log` file under the test's tmp_path; when a test
fails (in setup, call or teardown) the end of each of those files is added to the report.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import pytest

import procs
from procs import LOG_TAIL_CHARS

P = TypeVar("P")


@pytest.fixture
def alertmanager_binary() -> str:
    """Skips without the binary, saying how to install it; fails under --require-tools (CI)."""
    return procs.alertmanager_binary()


@pytest.fixture
def prometheus_binary() -> str:
    return procs.prometheus_binary()


@pytest.fixture
def running() -> Iterator[Callable[[P], P]]:
    """`running(Process(...))` returns the process and stops it at the end, last started first."""
    with contextlib.ExitStack() as stack:
        def started(proc: P) -> P:
            stack.callback(proc.stop)  # type: ignore[attr-defined]
            return proc

        yield started


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(tmp_path, Path):
        for log in sorted(tmp_path.rglob("*.log")):
            text = log.read_text(errors="replace")
            cut = f"(last {LOG_TAIL_CHARS} of {len(text)} characters)\n" if len(text) > LOG_TAIL_CHARS else ""
            report.sections.append((f"log {log.relative_to(tmp_path)}", cut + text[-LOG_TAIL_CHARS:]))
