"""Slow and broken clients (issue 17, defect 4) against the service under gunicorn, as in production.

Before the fix each of these held one of gunicorn's handler threads for as long as the client
liked: 32 of any kind, and no webhook nor /-/healthy was answered. Now a request reaches a
thread only once it has arrived whole (bridge/serving/worker.py); what never arrives is
answered 408 after server.read_timeout (1 s here), and bytes that are not HTTP get a 400 at
once. The ordinary ways of sending a request (keep-alive, pipelining, Expect: 100-continue, a
body in slow pieces, large bodies all at once) still work.

Timings are generous on purpose: each probe may take up to 5 s, against the "never" of before.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bridge.config import ServerConfig, loads
from bridge.errors import ConfigError
from procs import BridgeProcess
from support.hostile import exchange, request
from support.slow import KINDS, SlowClients, timed_request
from test_delivery_service import notification

SLOW = 32
READ_TIMEOUT = 1.0
MAX_BODY = 256 * 1024
PROBE_TIMEOUT = 5.0
# The first bytes of a TLS ClientHello, as a client that was given https:// sends them.
CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00"


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    config = tmp / "config.yaml"
    config.write_text("bots:\n  - name: ops\n    dry_run: true\nroute:\n  bots: [ops]\nstorage:\n  path: outbox.db\n"
                      f"server:\n  max_body_bytes: {MAX_BODY}\n  read_timeout: {READ_TIMEOUT}s\n")
    process = BridgeProcess(config, tmp / "bridge.log")
    yield process
    process.stop()


def webhook(name: str, alerts: int = 1) -> bytes:
    return json.dumps(notification(name, firing=alerts)).encode()


def probe(bridge: BridgeProcess, rounds: int = 6) -> list[str]:
    """What went wrong in `rounds` of one webhook and one /-/healthy, each on a new connection."""
    problems = []
    for i in range(rounds):
        seconds, status = timed_request(bridge.port, "POST", "/alertmanager", webhook(f"Probe-{time.time_ns()}-{i}"),
                                        timeout=PROBE_TIMEOUT)
        if status != 200:
            problems.append(f"webhook: {status} after {seconds:.1f} s")
        seconds, status = timed_request(bridge.port, "GET", "/-/healthy", timeout=PROBE_TIMEOUT)
        if status != 200:
            problems.append(f"/-/healthy: {status} after {seconds:.1f} s")
    return problems


@pytest.mark.parametrize("kind", KINDS)
def test_slow_connections_leave_the_webhooks_and_the_health_check_answering(bridge, kind):
    with SlowClients(bridge.port, kind, SLOW) as clients:
        if kind != "tls":   # those are answered at once, and come back each second
            assert clients.open_now() >= SLOW * 3 // 4
        problems = probe(bridge)
        held = clients.snapshot()
    assert not problems, f"with {SLOW} {kind!r} connections: {problems}"
    if kind == "tls":
        assert set(held.answers) == {"HTTP/1.1 400 Bad Request"} and held.opened >= SLOW, held


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    began, answer = time.monotonic(), b""
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except socket.timeout:
        raise AssertionError(f"the connection was still open after {timeout} s; got {answer[:200]!r}") from None
    return answer, time.monotonic() - began


def test_a_tls_handshake_on_the_plain_port_is_answered_400_at_once(bridge):
    with socket.create_connection(("127.0.0.1", bridge.port)) as sock:
        sock.sendall(CLIENT_HELLO)   # and then, as a TLS client does, wait for the server's hello
        answer, _ = read_until_closed(sock, PROBE_TIMEOUT)
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"plain HTTP, not TLS" in answer


# What a client sends before it stops, the connection left open.
UNFINISHED = {
    "head": b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Ty",
    "body": b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
            b"Content-Length: 500\r\n\r\n{\"receiver\": ",
    "chunked": b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n100\r\n{\"receiver\": ",
}


@pytest.mark.parametrize("what", list(UNFINISHED))
def test_a_request_that_stops_arriving_is_answered_408_after_read_timeout(bridge, what):
    with socket.create_connection(("127.0.0.1", bridge.port)) as sock:
        sock.sendall(UNFINISHED[what])
        answer, took = read_until_closed(sock, READ_TIMEOUT + PROBE_TIMEOUT)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert b"server.read_timeout" in answer
    assert took >= READ_TIMEOUT * 0.9


def test_a_connection_that_never_speaks_is_closed_without_an_answer(bridge):
    with socket.create_connection(("127.0.0.1", bridge.port)) as sock:
        answer, took = read_until_closed(sock, READ_TIMEOUT + PROBE_TIMEOUT)
    assert answer == b""


@pytest.mark.parametrize("alerts", [1, 120])   # 120: the second request is read with the first
def test_keep_alive_and_pipelined_requests_are_each_answered(bridge, alerts):
    one, two = webhook(f"Piped{alerts}-001"), webhook(f"Piped{alerts}-002", alerts)
    head = (b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n")
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=PROBE_TIMEOUT) as sock:
        # Two requests in one write, then a third after the answers, on the same connection.
        sock.sendall(head % len(one) + one + head % len(two) + two)
        answers = _read_answers(sock, 2)
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
        answers += _read_answers(sock, 1)
    assert [status for status, _ in answers] == [200, 200, 200], answers
    assert [body.get("alerts") for _, body in answers[:2]] == [1, alerts]


def _read_answers(sock: socket.socket, count: int) -> list[tuple[int, dict]]:
    answers, buffered = [], b""
    while len(answers) < count:
        head_end = buffered.find(b"\r\n\r\n")
        if head_end < 0:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(answers)} answers"
            buffered += chunk
            continue
        head = buffered[:head_end].decode("latin-1")
        length = int(next(line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length")))
        while len(buffered) < head_end + 4 + length:
            buffered += sock.recv(65536)
        body = buffered[head_end + 4:head_end + 4 + length]
        answers.append((int(head.split(" ")[1]), json.loads(body)))
        buffered = buffered[head_end + 4 + length:]
    return answers


def test_expect_100_continue_is_answered_before_the_body_is_sent(bridge):
    body = webhook("Expect-001")
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=PROBE_TIMEOUT) as sock:
        sock.sendall(b"POST /alertmanager HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer, _ = read_until_closed(sock, PROBE_TIMEOUT)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    assert b"100 Continue" not in answer, "100 Continue sent twice"


def test_a_body_that_arrives_slowly_but_in_time_is_accepted(bridge):
    body = webhook("Slowly-001")
    raw = request("/alertmanager", body, chunks=[97])
    with socket.create_connection(("127.0.0.1", bridge.port), timeout=PROBE_TIMEOUT) as sock:
        for start in range(0, len(raw), 200):   # in about half of read_timeout
            sock.sendall(raw[start:start + 200])
            time.sleep(READ_TIMEOUT / 2 / (len(raw) / 200))
        answer, _ = read_until_closed(sock, PROBE_TIMEOUT)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


def test_large_bodies_arriving_together_are_all_answered(bridge):
    # Each near server.max_body_bytes: more than the worker keeps at once, so some wait for
    # others to be answered; none may be starved or time out waiting.
    bodies = [webhook(f"Large{i:02d}-001", alerts=650) for i in range(10)]
    assert all(MAX_BODY // 2 < len(body) <= MAX_BODY for body in bodies), [len(b) for b in bodies]
    barrier = threading.Barrier(len(bodies))

    def send(body: bytes) -> str:
        barrier.wait()
        return str(exchange(bridge.port, request("/alertmanager", body), timeout=30))

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(send, bodies))
    assert all(answer.startswith("HTTP 200") for answer in answers), answers


@pytest.mark.slow
def test_previews_of_pasted_templates_do_not_hold_the_webhooks_threads(bridge):
    # Each pasted template spins in its child process for a few seconds of CPU (10^8 rounds).
    spin = "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}"
    preview = json.dumps({"bot": "ops", "sample": "firing", "template": spin}).encode()
    with ThreadPoolExecutor(8) as pool:
        previews = [pool.submit(timed_request, bridge.port, "POST", "/preview/render", preview, timeout=60)
                    for _ in range(12)]
        time.sleep(1.0)
        problems = probe(bridge, rounds=3)
        statuses = {future.result()[1] for future in previews}
    assert not problems, f"while 8 previews rendered: {problems}"
    # Rendered (200), stopped at the CPU limit (400), or no slot free in time (503).
    assert statuses <= {200, 400, 503}, statuses


def test_read_timeout_is_a_duration_in_the_server_section():
    base = "bots: [{name: ops}]\nroute: {bots: [ops]}\n"
    assert loads(base).server == ServerConfig(read_timeout=10.0)
    assert loads(base + "server: {read_timeout: 1m30s}").server.read_timeout == 90.0
    with pytest.raises(ConfigError, match=r"server\.read_timeout: expected a positive duration"):
        loads(base + "server: {read_timeout: soon}")
