"""Fuzzed hostile requests against the service under gunicorn, as in production (issue 17).

Generated cases (support/fuzz.py: broken real bodies, any framing, content type and
encoding) go to /alertmanager, /grafana, their /<bot> forms and /preview/render. Every one
must be answered, none with a 5xx, every refusal with a reason; then a normal alert must
still reach Feishu (the strict fake). The run is bounded and repeatable: a fixed number of
examples, derandomized, no example database.

Requests that once got a wrong answer are kept in tests/hostile_corpus.json, each with where
it came from and the answer it must get; they run every time.
"""

from __future__ import annotations

import json
import os

import pytest
import requests
from hypothesis import HealthCheck, given, settings

from fake_feishu import FakeFeishu
from procs import BridgeProcess
from support import eventually
from support.fuzz import Case, cases, corpus, corpus_case, many_labels
from support.hostile import exchange
from test_delivery_service import NO_PROXY, notification

# FUZZ_EXAMPLES=20000 FUZZ_RANDOM=1 hunts further, with fresh random cases each run.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1000"))
TOKEN = "tok-fuzz-7f3a"


class Service:
    def __init__(self, tmp_path, fake: FakeFeishu):
        config = tmp_path / "config.yaml"
        # ops (the root's) only logs what it would send; a FuzzNormal alert goes to Feishu.
        config.write_text(f"""
bots:
  - name: ops
    dry_run: true
  - name: feishu
    webhook_url: {fake.add_bot(TOKEN)}
route:
  bots: [ops]
  routes:
    - matchers: ['alertname=~"FuzzNormal.*"']
      bots: [feishu]
storage:
  path: outbox.db
""")
        self.fake = fake
        self.bridge = BridgeProcess(config, tmp_path / "bridge.log", env={"NO_PROXY": "127.0.0.1"})


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with FakeFeishu() as fake:
        running = Service(tmp_path_factory.mktemp("fuzz"), fake)
        yield running
        running.bridge.stop()


def check(service: Service, case: Case, expected: tuple[int, str] | None = None) -> None:
    answer = exchange(service.bridge.port, case.raw(), timeout=30)
    assert answer.status is not None, f"{case!r}: {answer}"
    assert answer.status < 500, f"{case!r}: {answer}"
    if answer.status >= 400:
        reason = json.loads(answer.body)["error"]
        assert isinstance(reason, str) and reason, f"{case!r}: {answer}"
    if expected is not None:
        status, reason = expected
        assert answer.status == status and reason in json.loads(answer.body)["error"], f"{case!r}: {answer}"


@settings(max_examples=EXAMPLES, derandomize=not os.environ.get("FUZZ_RANDOM"), database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(case=cases())
def test_fuzzed_requests_are_answered_never_with_a_5xx(service, case):
    check(service, case)


@pytest.mark.parametrize("entry", corpus(), ids=lambda entry: entry["name"])
def test_requests_that_once_failed_get_their_answer(service, entry):
    check(service, corpus_case(entry), (entry["status"], entry["reason"]))


@pytest.mark.parametrize("path", ["/alertmanager", "/grafana/ops", "/preview/render"])
def test_an_alert_with_100_000_labels_is_answered(service, path):
    body = many_labels(100_000)
    if path == "/preview/render":
        body = b'{"bot": "ops", "payload": ' + body + b"}"
    check(service, Case(path, body))


def test_a_normal_alert_is_still_delivered_afterwards(service):
    answer = requests.post(f"{service.bridge.url}/alertmanager", json=notification("FuzzNormal-001"), timeout=10,
                           proxies=NO_PROXY)
    assert answer.status_code == 200 and answer.json()["messages"] == {"feishu": 1}, answer.text
    eventually(lambda: service.fake.received(TOKEN), 15, "the normal alert at Feishu")
    assert "FuzzNormal-001" in json.dumps(service.fake.received(TOKEN), ensure_ascii=False)
    log = service.bridge.log()
    assert "internal_error" not in log and "Traceback" not in log, log[-3000:]
