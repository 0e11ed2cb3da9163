"""`feishu-alert-bridge events`: the long connection, end to end against a fake of
Feishu's side of it (tests/fake_lark_ws.py: the SDK's endpoint call, then protobuf frames
over a websocket), with the real SDK (lark-oapi) in between.

In-process (LongConnections in a thread, a recording Actions): a pushed tap reaches
`Actions.tap` with the body as Feishu sent it and its answer comes back in the ACK; a
`type=card` frame too; the SDK reconnects after a break; a connection down too long ends
the run with 1. As a process (the real command): fails at once with one line when Feishu
is unreachable or refuses the app, or when the config is wrong; answers a tap; SIGTERM
stops it with 0; no secret or connection credential in anything it prints.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import loads
from bridge.errors import BridgeError
from bridge.events.connections import LongConnections
from bridge.events.taps import dispatcher
from bridge.metrics import Metrics
from fake_lark_ws import FakeLongConnection
from support import eventually, free_port
from test_events_taps import RecordingActions, tap_body

APP_ID = "cli_a5fb0ae6a4123456"
APP_SECRET = "app-secret-that-must-never-show-0123456789"


def config_text(base_url: str, tmp_path: Path, *, actions: bool = True, secret: str = APP_SECRET) -> str:
    return f"""
apps:
  - name: oncall
    app_id: {APP_ID}
    app_secret: {secret}
    base_url: {base_url}
bots:
  - name: ops
    app: oncall
    chat_id: oc_e4d2605ca917e695f54f11aaf56a1234
route: {{bots: [ops]}}
storage: {{path: {tmp_path / 'outbox.db'}}}
actions: {{enabled: {'true' if actions else 'false'}}}
"""


@pytest.fixture
def fake():
    fake = FakeLongConnection({APP_ID: APP_SECRET}).start()
    yield fake
    fake.stop()


class Running:
    """LongConnections.run in a thread (the SDK's loop runs wherever run is called)."""

    def __init__(self, connections: LongConnections):
        self.connections = connections
        self.result: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result.append(self.connections.run(signals=False))
        except BaseException as exc:   # handed to the test
            self.result.append(exc)

    def stop(self) -> int:
        self.connections.stop()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the long connections did not stop"
        return self.result[0]


def connections(fake, tmp_path, actions, caplog_logger, **kwargs) -> LongConnections:
    config = loads(config_text(fake.base_url, tmp_path))
    return LongConnections(list(config.apps.values()), lambda app: dispatcher(app.name, actions, caplog_logger),
                           caplog_logger, **kwargs)


def test_a_pushed_tap_reaches_actions_and_the_answer_goes_back_in_the_ack(fake, tmp_path, caplog):
    actions = RecordingActions()
    log = logging.getLogger("test.events")
    running = Running(connections(fake, tmp_path, actions, log))
    eventually(fake.open_connections, 15, "a long connection")

    ack = fake.push(tap_body())

    assert actions.calls == [("oncall", tap_body())]
    assert ack == {"code": 200, "answer": actions.answer}
    assert fake.endpoint_calls == [{"AppID": APP_ID}]
    assert running.stop() == 0
    eventually(lambda: not fake.open_connections(), 5, "the websocket closed by the stop")


def test_a_tap_sent_as_a_card_frame_is_dispatched_too_and_said_once(fake, tmp_path, caplog):
    """lark-oapi drops `type=card` frames without an answer (protocol notes §6.6, caveat 2);
    some tenants were seen sending taps that way."""
    actions = RecordingActions()
    log = logging.getLogger("test.events")
    running = Running(connections(fake, tmp_path, actions, log))
    eventually(fake.open_connections, 15, "a long connection")
    with caplog.at_level(logging.WARNING, logger="test.events"):
        first = fake.push(tap_body(), frame_type="card")
        second = fake.push(tap_body(), frame_type="card")
    assert first == second == {"code": 200, "answer": actions.answer}
    assert len(actions.calls) == 2
    assert [r.event for r in caplog.records if r.name == "test.events"] == ["events_card_frame"]
    assert running.stop() == 0


def test_after_a_break_the_sdk_reconnects_and_taps_arrive_again(fake, tmp_path, caplog):
    actions = RecordingActions()
    log = logging.getLogger("test.events")
    running = Running(connections(fake, tmp_path, actions, log))
    eventually(fake.open_connections, 15, "a long connection")
    with caplog.at_level(logging.INFO, logger="test.events"):
        fake.drop()
        # The fake's ClientConfig: no jitter, a retry every second (Feishu sends its own).
        eventually(lambda: len(fake.endpoint_calls) == 2 and fake.open_connections(), 15, "a reconnect")
        assert fake.push(tap_body())["code"] == 200
    events = [r.event for r in caplog.records if r.name == "test.events"]
    assert "events_disconnected" in events and "events_reconnected" in events
    assert running.stop() == 0


def test_a_connection_down_too_long_ends_the_run_with_1(fake, tmp_path):
    actions = RecordingActions()
    heartbeat = tmp_path / "alive"
    conns = connections(fake, tmp_path, actions, logging.getLogger("test.events"), heartbeat=heartbeat,
                        max_disconnected=1.0, heartbeat_every=0.1)
    running = Running(conns)
    eventually(fake.open_connections, 15, "a long connection")
    eventually(heartbeat.exists, 5, "the heartbeat file")
    fake.busy = True
    fake.drop()
    running.thread.join(20)
    assert running.result == [1]
    assert conns.failure and "app oncall: no long connection" in conns.failure


# --- the command -----------------------------------------------------------------------


def events_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bridge", "events", "--config", str(config), *extra]


def run_events(config: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(events_command(config), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_PROXY": "*"})


def assert_one_clear_line(proc: subprocess.CompletedProcess, code: int, expected: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert APP_SECRET not in proc.stderr + proc.stdout
    assert expected in proc.stderr.strip().splitlines()[-1], proc.stderr


def test_unreachable_feishu_is_one_line_and_exit_1(tmp_path):
    port = free_port()        # nothing listens: connection refused
    config = tmp_path / "config.yaml"
    config.write_text(config_text(f"http://127.0.0.1:{port}", tmp_path))
    started = time.monotonic()
    proc = run_events(config)
    assert_one_clear_line(proc, 1, f"error: app oncall: cannot reach Feishu's long-connection endpoint at "
                                   f"http://127.0.0.1:{port}: [Errno 111] Connection refused")
    assert time.monotonic() - started < 20     # no retry loop at start


def test_a_refused_app_is_one_line_and_exit_1(fake, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(config_text(fake.base_url, tmp_path, secret="a-wrong-secret"))
    proc = run_events(config)
    assert_one_clear_line(proc, 1, "error: app oncall: Feishu refused the long connection (code 1000040351: "
                                   "app id or app secret is invalid); check apps[].app_id and app_secret")
    assert "a-wrong-secret" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("case, expected", [
    ("actions-off", "actions.enabled: card actions are off"),
    ("no-apps", "actions.enabled: card actions need an app bot"),   # the config loader says so first
    ("bad-key", "actions.enable: unknown key"),
])
def test_config_problems_are_exit_2_naming_the_key(tmp_path, case, expected):
    text = config_text("http://127.0.0.1:9", tmp_path, actions=case != "actions-off")
    if case == "no-apps":
        text = f"bots: [{{name: ops, webhook_url: 'https://open.feishu.cn/open-apis/bot/v2/hook/x'}}]\n" \
               f"route: {{bots: [ops]}}\nstorage: {{path: {tmp_path / 'o.db'}}}\nactions: {{enabled: true}}\n"
    if case == "bad-key":
        text = text.replace("actions: {enabled:", "actions: {enable:")
    config = tmp_path / "config.yaml"
    config.write_text(text)
    proc = run_events(config)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in proc.stderr
    assert not (tmp_path / "outbox.db").exists()      # nothing started


def test_the_command_answers_taps_stops_on_sigterm_and_prints_no_credential(fake, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(config_text(fake.base_url, tmp_path))
    heartbeat = tmp_path / "alive"
    proc = subprocess.Popen(events_command(config, "--heartbeat-file", str(heartbeat), "--log-level", "debug"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        eventually(lambda: proc.poll() is not None or fake.open_connections(), 30, "the events process connected")
        assert proc.poll() is None
        ack = fake.push(tap_body())
        # The Actions in force answers (a toast in words); the frame's ACK carries it.
        assert ack["code"] == 200 and ack["answer"]["toast"]["content"]
        assert heartbeat.exists()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    eventually(lambda: not fake.open_connections(), 5, "the websocket closed")
    lines = [json.loads(line) for line in err.splitlines()]          # every line JSON, as the server's
    events = [line.get("event") for line in lines]
    assert events[0] == "events_starting" and "events_connected" in events and events[-1] == "events_stopped"
    assert "sdk" in events                                          # the SDK's lines, in the bridge's log
    printed = out + err
    for credential in (APP_SECRET, "access_key=", "ticket=", tap_body()["event"]["token"]):
        assert credential not in printed


def test_with_retry_connect_a_failed_start_is_logged_and_tried_again(fake, tmp_path, caplog):
    """As the chart runs it beside the server: exiting would restart the container and
    make the pod unready, taking the webhooks out of the Service with it."""
    actions = RecordingActions()
    heartbeat = tmp_path / "alive"
    fake.busy = True
    log = logging.getLogger("test.events")
    with caplog.at_level(logging.ERROR, logger="test.events"):
        running = Running(connections(fake, tmp_path, actions, log, retry_connect=0.2, heartbeat=heartbeat,
                                      heartbeat_every=0.1))
        eventually(lambda: len(fake.endpoint_calls) >= 2, 10, "a second try")
        assert heartbeat.exists() and not running.result            # alive, waiting
        fake.busy = False
        eventually(fake.open_connections, 10, "the connection once Feishu answers")
    failed = [r for r in caplog.records if r.name == "test.events" and r.event == "events_connect_failed"]
    assert failed and "app oncall: Feishu's long-connection endpoint at" in failed[0].getMessage()
    assert "code 1: system busy" in failed[0].getMessage()
    assert fake.push(tap_body())["code"] == 200
    assert running.stop() == 0


def test_with_retry_connect_a_stop_while_waiting_is_a_clean_exit(fake, tmp_path):
    fake.busy = True
    running = Running(connections(fake, tmp_path, RecordingActions(), logging.getLogger("test.events"),
                                  retry_connect=30))
    eventually(lambda: fake.endpoint_calls, 10, "a first try")
    started = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - started < 5


def test_an_endpoint_that_never_answers_is_a_timeout_not_a_hang(tmp_path):
    """The SDK's endpoint call sets no timeout: a host that accepts and stays silent held
    the process for ever."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)                       # accepts (the kernel does), never answers
    try:
        config = loads(config_text(f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path))
        conns = LongConnections(list(config.apps.values()),
                                lambda app: dispatcher(app.name, RecordingActions(), logging.getLogger("test")),
                                logging.getLogger("test"), endpoint_timeout=1.0)
        started = time.monotonic()
        with pytest.raises(BridgeError, match="cannot reach Feishu's long-connection endpoint at .*: timed out"):
            conns.run(signals=False)
        assert time.monotonic() - started < 10
    finally:
        silent.close()


# --- metrics: the process's own /metrics (--metrics-port) ----------------------------------


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples at http://127.0.0.1:PORT/metrics: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


UP = ("feishu_bridge_long_connection_up", (("app", "oncall"),))
RECONNECTS = ("feishu_bridge_long_connection_reconnects_total", (("app", "oncall"),))


def test_the_connections_gauge_and_reconnects_follow_the_sdk(fake, tmp_path):
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    fake.busy = True                                   # Feishu down at start
    running = Running(connections(fake, tmp_path, RecordingActions(), logging.getLogger("test.events"),
                                  retry_connect=0.2, metrics=metrics))

    def value(sample):
        return registry.get_sample_value(sample[0], dict(sample[1]))

    eventually(lambda: fake.endpoint_calls, 10, "a first try")
    assert value(UP) == 0                              # known, and down, before the first connection
    fake.busy = False
    eventually(lambda: value(UP) == 1, 10, "the gauge up once connected")
    assert value(RECONNECTS) in (None, 0)
    fake.busy = True                                   # the reconnect cannot succeed yet
    fake.drop()
    eventually(lambda: value(UP) == 0, 10, "the gauge down after the break")
    assert value(RECONNECTS) == 1
    fake.busy = False
    eventually(lambda: value(UP) == 1, 15, "the gauge up after the reconnect")
    assert value(RECONNECTS) == 1
    assert running.stop() == 0


def test_the_commands_metrics_count_taps_and_leave_the_servers_directory_alone(fake, tmp_path):
    """The chart runs `events` beside the server in one pod, sharing /tmp: the server's
    multiprocess directory (PROMETHEUS_MULTIPROC_DIR, emptied by the server at start) must
    get no file of the events process's, and lose none of its own."""
    config = tmp_path / "config.yaml"
    config.write_text(config_text(fake.base_url, tmp_path))
    server_dir = tmp_path / "server-metrics"
    server_dir.mkdir()
    (server_dir / "counter_4242.db").write_bytes(b"the server's values")
    port = free_port()
    env = {**os.environ, "NO_PROXY": "*", "PROMETHEUS_MULTIPROC_DIR": str(server_dir),
           "BRIDGE_EVENTS_METRICS_PORT": str(port), "BRIDGE_EVENTS_METRICS_HOST": "127.0.0.1"}
    proc = subprocess.Popen(events_command(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        eventually(lambda: proc.poll() is not None or fake.open_connections(), 30, "the events process connected")
        assert proc.poll() is None
        samples = eventually(lambda: _scraped(port), 10, "/metrics")
        assert samples[UP] == 1
        assert not [k for k in samples if k[0] == "feishu_bridge_card_actions_total"]
        ack = fake.push(tap_body())
        assert ack["code"] == 200
        counted = {k: v for k, v in scrape(port).items() if k[0] == "feishu_bridge_card_actions_total"}
        # The tap's button value is not signed with this bridge's key: refused as forged,
        # and counted as the HTTP route counts it.
        assert counted == {("feishu_bridge_card_actions_total", (("action", "unknown"), ("result", "forged"))): 1}
        fake.drop()
        eventually(lambda: scrape(port).get(RECONNECTS) == 1 and scrape(port).get(UP) == 1, 15, "a reconnect counted")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert sorted(p.name for p in server_dir.iterdir()) == ["counter_4242.db"]
    assert (server_dir / "counter_4242.db").read_bytes() == b"the server's values"
    events = [json.loads(line).get("event") for line in err.splitlines()]
    assert "events_metrics" in events
    assert APP_SECRET not in out + err


def _scraped(port: int):
    try:
        return scrape(port)
    except OSError:
        return None


def test_a_taken_metrics_port_is_one_line_and_exit_1(fake, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(config_text(fake.base_url, tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run(events_command(config, "--metrics-port", str(port), "--metrics-host", "127.0.0.1"),
                              capture_output=True, text=True, timeout=30, env={**os.environ, "NO_PROXY": "*"})
    assert_one_clear_line(proc, 1, f"error: --metrics-port: cannot listen on 127.0.0.1:{port} for /metrics: "
                                   "Address already in use")
