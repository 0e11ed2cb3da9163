"""The gunicorn the worker (bridge/serving/) is built on: the version pyproject.toml allows,
and the gthread internals the worker relies on (none of them public API), so that a gunicorn
that changed them fails here, by name, rather than as a worker that hangs or crashes."""

from __future__ import annotations

import inspect
import re
from importlib.metadata import version
from pathlib import Path

import gunicorn.http.errors
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers.base import Worker
from gunicorn.workers.gthread import TConn, ThreadWorker
from packaging.requirements import Requirement

from bridge.serving import refusals

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def pinned() -> Requirement:
    (line,) = re.findall(r'^\s*"(gunicorn[^"]*)",', PYPROJECT.read_text(), flags=re.MULTILINE)
    return Requirement(line)


def test_the_installed_gunicorn_is_the_one_pinned():
    requirement = pinned()
    assert requirement.specifier.contains(version("gunicorn")), (requirement, version("gunicorn"))
    assert not requirement.specifier.contains("27.1.0") and not requirement.specifier.contains("27.0.0"), \
        "the range is the one the worker is tested with"


def test_the_gthread_internals_the_worker_uses_are_there():
    for name in ("enqueue_req", "handle", "handle_request", "finish_request", "murder_pending", "init_process",
                 "run", "handle_quit", "load_wsgi"):
        assert callable(getattr(ThreadWorker, name, None)), f"gthread's ThreadWorker.{name}"
    worker_source = inspect.getsource(ThreadWorker)
    for attribute in ("self.method_queue", "self.poller", "self.nr_conns"):
        assert attribute in worker_source, f"gthread's {attribute}"
    assert callable(getattr(TConn, "init", None)) and "self.parser" in inspect.getsource(TConn)
    assert callable(getattr(SocketUnreader, "take_buffered", None))
    assert list(inspect.signature(Worker.handle_error).parameters) == ["self", "req", "client", "addr", "exc"]


def test_every_parse_error_gunicorn_raises_for_a_client_has_its_answer():
    """A new client-side parse error in gunicorn would fall to its HTML page: name it here."""
    parse_errors = [c for c in vars(gunicorn.http.errors).values()
                    if isinstance(c, type) and issubclass(c, gunicorn.http.errors.ParseException)]
    unanswered = {c.__name__ for c in parse_errors if refusals.refusal(_instance(c)) is None}
    # Not the client's: the app's response headers, and gunicorn's own configuration;
    # HTTP/2 (off here) and the base class.
    assert unanswered == {"ParseException", "ConfigurationProblem", "InvalidResponseHeader",
                          "InvalidResponseHeaderName", "InvalidH2CPreface"}


def _instance(kind: type) -> Exception:
    arguments = len(inspect.signature(kind.__init__).parameters) - 1
    try:
        return kind(*(["x"] * arguments))
    except TypeError:
        return kind.__new__(kind)
