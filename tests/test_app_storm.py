"""Issue 13: a storm for many app bots of one app, three of them in one chat, sent by two
replicas sharing one PostgreSQL (each two gunicorn workers), against the strict fake Open
API with Feishu's limits: 5 a second per chat (shared by the bots in it), 50 a second and
1000 a minute per app and API.

15 bots, 20 alert groups each: the shared chat gets 60 cards, each other chat 20, 300 in
all. The shared chat decides the minimum: 60 requests at 5 a second leave over 11 s at the
earliest (the app's 50 a second binds too while the twelve single-chat bots want 60 a
second). What must hold: no request refused as over a limit, each card posted once, and
the storm drained near that minimum. The figures are printed (pytest -s).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import yaml

from support.appbot import alert, payload
from support.replicas import Replicas, postgres_storage
from test_delivery_service import FAST_BACKOFF, NO_PROXY, minimum_drain

APP_ID, SECRET = "cli_storm1", "storm-S3cret-9x"
SHARED, SINGLES, GROUPS = 3, 12, 20
ALLOWED_RATIO = 1.15


def chats() -> dict[str, str]:
    """Each bot's chat: three in oc_shared, the others one each."""
    out = {f"s{i}": "oc_shared" for i in range(SHARED)}
    out.update({f"c{i}": f"oc_single{i}" for i in range(SINGLES)})
    return out


def write_config(tmp_path: Path, base_url: str) -> Path:
    bots = [{"name": name, "app": "storm", "chat_id": chat, "read_timeout": "2s", "thread_replies": []}
            for name, chat in chats().items()]
    doc = {"apps": [{"name": "storm", "app_id": APP_ID, "app_secret": SECRET, "base_url": base_url}],
           "bots": bots, "route": {"bots": [b["name"] for b in bots]}, "storage": postgres_storage(tmp_path),
           "delivery": FAST_BACKOFF}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_storm_for_an_apps_bots_over_two_replicas_keeps_the_chats_and_the_apps_limits(
        fake_open_api, tmp_path, postgres_cluster):
    fake = fake_open_api
    fake.add_app(APP_ID, SECRET)
    for chat in set(chats().values()):
        fake.add_chat(chat, apps=[APP_ID])
    config = write_config(tmp_path, fake.base_url)
    replicas = Replicas(tmp_path, postgres_cluster, postgres_cluster.new_database("appstorm"))
    try:
        one, two = replicas.start(config), replicas.start(config)
        for k in range(GROUPS):
            answer = requests.post((one, two)[k % 2].url + "/alertmanager",
                                   data=payload(alert(f"Storm{k}", severity="warning"), group=f"storm-{k}"),
                                   headers={"Content-Type": "application/json", "Connection": "close"},
                                   timeout=10, proxies=NO_PROXY)
            assert answer.status_code == 200, answer.text
        expected = {chat: sum(GROUPS for c in chats().values() if c == chat) for chat in set(chats().values())}
        fake.wait_for(lambda: all(len(fake.cards(c)) >= n for c, n in expected.items()), timeout=90,
                      what="every bot's cards")
        sends = fake.attempts("send")
        drained = max(a.at for a in sends) - min(a.at for a in sends)
        minimum = minimum_drain(SHARED * GROUPS, 5, 10**9)
        print(f"\napp storm over two replicas: {len(sends)} sends by {SHARED + SINGLES} bots of one app "
              f"({SHARED} in one chat), {len(fake.throttled())} rate-limit answers; drained in {drained:.1f}s "
              f"against a minimum of {minimum:.0f}s: ratio {drained / minimum:.3f}")
        assert not fake.throttled(), [a.why for a in fake.throttled()][:5]
        assert {c: len(fake.cards(c)) for c in expected} == expected
        assert len(sends) == SHARED * GROUPS + SINGLES * GROUPS, "some card was posted twice"
        assert drained <= ALLOWED_RATIO * minimum, f"drained in {drained:.1f}s, over {ALLOWED_RATIO} x {minimum}s"
    finally:
        replicas.stop_all()
