"""The service as it runs in production: `feishu-alert-bridge serve` under gunicorn, several workers."""

from __future__ import annotations

from pathlib import Path

import requests

from procs import BridgeProcess

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "svc-secret-Kx81"


def test_gunicorn_service_delivers_signed_cards_and_leaks_no_secret(fake_feishu, tmp_path):
    url = fake_feishu.add_bot("tok-svc-7f3a9", secret=SECRET, keywords=["告警"])
    config = tmp_path / "config.yaml"
    (tmp_path / "url").write_text(url + "\n")
    config.write_text("""
bots:
  - name: ops
    webhook_url_file: url
    secret: ${OPS_SECRET}
    keywords: ["告警"]
route: {bots: [ops]}
storage: {path: outbox.db}
# Two of the payloads are later states of another's group: with coalescing a newer one may
# replace an older one still waiting, and this test wants every card.
delivery: {coalesce: false}
""")
    bridge = BridgeProcess(config, tmp_path / "bridge.log", workers=2, env={"OPS_SECRET": SECRET})
    try:
        payloads = [FIXTURES / "alertmanager" / f"am025-{name}.json"
                    for name in ("firing-single", "firing-group2", "resolved-single", "mixed-resolved-firing", "nasty")]
        answers = []
        for path in payloads:
            r = requests.post(f"{bridge.url}/alertmanager", data=path.read_bytes(),
                              headers={"Content-Type": "application/json"}, timeout=10)
            answers.append(r.text)
            assert r.status_code == 200, r.text
        bad = requests.post(f"{bridge.url}/alertmanager", data=b"{", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
        answers.append(bad.text)

        received = fake_feishu.wait_for("tok-svc-7f3a9", len(payloads), timeout=20)
        assert len(received) == len(payloads)
        assert all(m["msg_type"] == "interactive" for m in received)
        assert not fake_feishu.throttled("tok-svc-7f3a9")
        # Each accepted request carried a valid signature: the fake refuses anything else.
        assert all(a.code == 0 for a in fake_feishu.attempts("tok-svc-7f3a9"))
    finally:
        bridge.stop()
    everything = bridge.log() + "".join(answers)
    assert "tok-svc-7f3a9" not in everything and SECRET not in everything
