"""Delivery's threads: several "workers" (Delivery instances on one outbox file, each with
its own threads) sending through a recording stub client or the strict fake Feishu.

Only what needs the threads is here: one sender at a time across workers, stop, reload,
the idle latency, the app answering 503 and /metrics when the outbox is unusable, and the
strict fake over HTTP. The timing logic (pacing, backoff, max_age, leases) is checked by
stepping a sender on a fake clock, in test_sender.py and test_sender_rendering.py.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import pytest

from bridge import create_app
from bridge.config import Config, loads
from bridge.delivery import Delivery
from bridge.notify.feishu import FeishuClient
from bridge.metrics import Metrics
from bridge.store.records import PENDING, SENDING
from bridge.secret import Secret
from support import eventually
from support.delivery import enqueue, LOG, StubClient, events, make_bot, make_config, msg, outbox_on, rendered_only

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def deliveries():
    """Started Delivery instances on the real clock, stopped at the end of the test."""
    made: list[Delivery] = []

    def make(config: Config, client, start: bool = True, **kw) -> Delivery:
        kw.setdefault("outbox", outbox_on(config.storage.path))
        kw.setdefault("render", rendered_only)
        delivery = Delivery(config, client, LOG, **kw)
        made.append(delivery)
        if start:
            delivery.start()
        return delivery

    yield make
    for delivery in made:
        delivery.stop(timeout=2)


def test_two_workers_send_one_bots_messages_once_in_order_within_the_per_second_limit(tmp_path, deliveries):
    config = make_config(tmp_path, make_bot(per_second=5, per_minute=100))
    client = StubClient(delay=0.05)    # a round trip, so that two senders at once would overlap
    workers = [deliveries(config, client), deliveries(config, client)]
    for i in range(15):
        enqueue(workers[i % 2], [msg(f"m{i}")])
    client.wait_calls(15, timeout=15)
    eventually(lambda: workers[0].outbox.list() == [], 5, "every send recorded")   # so none can follow
    assert client.texts() == [f"m{i}" for i in range(15)]
    assert client.most_in_flight == 1        # one sender at a time, so Feishu sees them in order
    times = client.times()
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[5:])), "6 sends within 1 s"


def test_stop_finishes_the_send_in_flight_and_the_next_start_sends_the_rest(tmp_path, deliveries):
    config = make_config(tmp_path)
    slow = StubClient(delay=0.3)
    first = deliveries(config, slow)
    enqueue(first, [msg("a"), msg("b"), msg("c")])
    slow.wait_calls(1)
    first.stop()
    assert slow.texts() == ["a"]
    assert [(r.state, r.attempts) for r in first.outbox.list()] == [(PENDING, 0), (PENDING, 0)]
    assert first.outbox.bot_state("ops").owner is None           # released: no wait for it to lapse

    client = StubClient()
    deliveries(config, client)
    client.wait_calls(2)
    assert client.texts() == ["b", "c"]


def test_stop_gives_up_on_a_hung_send_after_the_grace_and_keeps_the_message(tmp_path, deliveries, caplog):
    hung = StubClient(delay=1.0)
    delivery = deliveries(make_config(tmp_path, shutdown_grace=0.2), hung)
    enqueue(delivery, [msg("a")])
    hung.wait_calls(1)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        delivery.stop()
    assert time.monotonic() - began < 0.9                       # the grace, not the hung second
    assert [r.state for r in delivery.outbox.list()] == [SENDING]   # still stored; result unknown
    assert events(caplog, "stop_in_flight")


def test_a_reloaded_configuration_starts_new_bots_and_stops_removed_ones(tmp_path, deliveries):
    client = StubClient()
    delivery = deliveries(make_config(tmp_path, make_bot("ops")), client)
    eventually(lambda: delivery.outbox.bot_state("ops").owner == delivery.owner, 5, "the ops lease")
    delivery.configure(make_config(tmp_path, make_bot("db")))
    # The removed bot's lease is free for a worker that still has it: once it is, no sender
    # here is left to send its message.
    eventually(lambda: delivery.outbox.bot_state("ops").owner is None, 5, "the ops lease released")
    enqueue(delivery, [msg("to-db", bot="db"), msg("to-ops", bot="ops")])
    client.wait_calls(1)
    eventually(lambda: [(d[0], d[1]) for d in delivery.depths()] == [("db", 0), ("ops", 1)], 5,
               lambda: f"db sent, ops waiting: {delivery.depths()}")
    assert client.calls[0][1:] == ("db", "to-db") and len(client.calls) == 1


def test_idle_latency_when_another_worker_is_the_sender(tmp_path, deliveries):
    config = make_config(tmp_path, make_bot(per_second=50))
    client = StubClient()
    sender = deliveries(config, client)
    eventually(lambda: sender.outbox.bot_state("ops").owner == sender.owner, 5, "the lease")
    acceptor = deliveries(config, client, start=False)   # a worker that only accepts
    latencies = []
    for i in range(10):
        before = time.time()
        enqueue(acceptor, [msg(f"m{i}")])
        latencies.append(client.wait_calls(i + 1)[-1][0] - before)
        time.sleep(0.05)      # idle between messages
    p50, top = statistics.median(latencies), max(latencies)
    print(f"\nidle latency enqueue->request, other process sending: p50 {p50 * 1000:.1f} ms, "
          f"max {top * 1000:.1f} ms")
    assert p50 < 0.5       # generous: a slow polling loop (>= 1 s) would fail it


def test_not_stored_is_answered_503_never_200(tmp_path):
    (tmp_path / "file").write_text("")
    config = loads(f"bots: [{{name: ops}}]\nroute: {{bots: [ops]}}\nstorage: {{path: {tmp_path / 'file' / 'o.db'}}}\n",
                   env={})
    app = create_app(config, logger=LOG)
    try:
        body = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
        response = app.test_client().post("/alertmanager", data=body, content_type="application/json")
        assert response.status_code == 503 and "not stored" in response.get_json()["error"]
        assert "feishu_bridge_outbox_up 0.0" in app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["bridge"].stop(timeout=1)


def test_against_the_fake_feishu_nothing_is_throttled_lost_or_doubled(tmp_path, deliveries, fake_feishu):
    url = fake_feishu.add_bot("tok-delivery-1", secret="s3cr3t", keywords=["告警"])
    fake_feishu.script("tok-delivery-1", ("http", 500), ("reset",))
    bot = make_bot(url=url, secret=Secret("s3cr3t"), read_timeout=2.0)
    config = make_config(tmp_path, bot)
    workers = [deliveries(config, FeishuClient()), deliveries(config, FeishuClient())]
    for i in range(9):   # the two failures plus 9 go over Feishu's 5 per second
        enqueue(workers[i % 2], [msg(f"告警 {i}")])
    fake_feishu.wait_for("tok-delivery-1", 9, timeout=10)
    eventually(lambda: workers[0].outbox.list() == [], 5, "every send recorded")   # so none can follow
    assert [m["content"]["text"] for m in fake_feishu.received("tok-delivery-1")] == [f"告警 {i}" for i in range(9)]
    assert fake_feishu.throttled("tok-delivery-1") == []
    assert len(fake_feishu.attempts("tok-delivery-1")) == 11


# -- /metrics when the outbox is unusable ------------------------------------------------------

def test_an_unreadable_outbox_shows_as_outbox_up_0_and_the_scrape_still_answers(tmp_path):
    (tmp_path / "file").write_text("")
    config = make_config(tmp_path)
    metrics = Metrics()
    metrics.notification("alertmanager", "not_stored")
    Delivery(config, StubClient(), LOG, outbox=outbox_on(tmp_path / "file" / "o.db"), render=rendered_only,
             metrics=metrics)
    text = metrics.scrape().decode()
    assert "feishu_bridge_outbox_up 0.0" in text
    assert "feishu_bridge_outbox_depth{" not in text
    assert 'feishu_bridge_notifications_received_total{result="not_stored",source="alertmanager"} 1.0' in text
