"""Inbound authentication: bearer, basic, Grafana's HMAC, and what a refusal reveals (nothing)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from pathlib import Path

import pytest

from bridge import create_app
from bridge.config import loads

FIXTURES = Path(__file__).parent / "fixtures"
AM_BODY = (FIXTURES / "alertmanager" / "am025-firing-single.json").read_bytes()
GRAFANA_BODY = (FIXTURES / "grafana" / "grafana-unified-firing.json").read_bytes()
TOKEN = "bearer-tok-Qm42"
PASSWORD = "pw-Lk09"
HMAC_SECRET = "hmac-secret-Pz77"


def app_with(tmp_path, auth: str):
    config = loads(f"""
bots: [{{name: ops, dry_run: true}}]
route: {{bots: [ops]}}
storage: {{path: {tmp_path / 'outbox.db'}}}
auth:
{auth}
""", env={})
    app = create_app(config, logger=logging.getLogger("bridge.auth-test"))
    return app


@pytest.fixture
def bearer_and_basic(tmp_path):
    app = app_with(tmp_path, f"  bearer_token: {TOKEN}\n  basic: {{username: am, password: {PASSWORD}}}\n")
    yield app.test_client()
    app.extensions["bridge"].stop(timeout=5)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def post(client, path, body=AM_BODY, **headers):
    return client.post(path, data=body, headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize("authorization,status", [
    (None, 401),
    ("", 401),
    ("Bearer wrong", 401),
    (f"Bearer {TOKEN}x", 401),
    (f"Bearer {TOKEN}", 200),
    (f"bearer {TOKEN}", 200),
    (basic("am", PASSWORD), 200),
    (basic("am", "nope"), 401),
    (basic("root", PASSWORD), 401),
    ("Basic !!!not-base64", 401),
    (f"Token {TOKEN}", 401),
])
def test_webhooks_need_the_configured_credentials(bearer_and_basic, authorization, status):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = post(bearer_and_basic, "/alertmanager", **headers)
    assert response.status_code == status
    if status == 401:
        # The same answer whatever failed: nothing about which part was wrong.
        assert response.get_json() == {"error": "unauthorized"}
        assert TOKEN not in response.get_data(as_text=True)


def test_operations_are_open_by_default_and_guarded_when_asked(bearer_and_basic, tmp_path):
    assert bearer_and_basic.get("/-/healthy").status_code == 200
    app = app_with(tmp_path, f"  bearer_token: {TOKEN}\n  protect_operations: true\n")
    try:
        client = app.test_client()
        assert client.get("/-/healthy").status_code == 401
        assert client.get("/-/ready").status_code == 401
        assert client.get("/-/healthy", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    finally:
        app.extensions["bridge"].stop(timeout=5)


def grafana_headers(body: bytes, secret: str = HMAC_SECRET, ts: int | None = None) -> dict:
    message = body if ts is None else f"{ts}:".encode() + body
    headers = {"X-Grafana-Alerting-Signature": hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()}
    if ts is not None:
        headers["X-Grafana-Alerting-Timestamp"] = str(ts)
    return headers


def test_grafana_hmac_without_timestamp(tmp_path):
    app = app_with(tmp_path, f"  grafana_hmac: {{secret: {HMAC_SECRET}}}\n")
    try:
        client = app.test_client()
        assert post(client, "/grafana", GRAFANA_BODY, **grafana_headers(GRAFANA_BODY)).status_code == 200
        assert post(client, "/grafana", GRAFANA_BODY).status_code == 401
        assert post(client, "/grafana", GRAFANA_BODY, **grafana_headers(GRAFANA_BODY, "other")).status_code == 401
        tampered = GRAFANA_BODY.replace(b"alert1", b"alert2")
        assert post(client, "/grafana", tampered, **grafana_headers(GRAFANA_BODY)).status_code == 401
        # The HMAC is Grafana's: Alertmanager's endpoint does not ask for it.
        assert post(client, "/alertmanager").status_code == 200
    finally:
        app.extensions["bridge"].stop(timeout=5)


def test_grafana_hmac_with_timestamp_refuses_a_stale_one(tmp_path):
    app = app_with(tmp_path, f"  grafana_hmac: {{secret: {HMAC_SECRET}, "
                             "timestamp_header: X-Grafana-Alerting-Timestamp, max_skew: 1m}\n")
    try:
        client = app.test_client()
        now = int(time.time())
        assert post(client, "/grafana", GRAFANA_BODY, **grafana_headers(GRAFANA_BODY, ts=now)).status_code == 200
        stale = grafana_headers(GRAFANA_BODY, ts=now - 120)
        assert post(client, "/grafana", GRAFANA_BODY, **stale).status_code == 401
        # A signature over the body alone is not enough once a timestamp header is configured.
        assert post(client, "/grafana", GRAFANA_BODY, **grafana_headers(GRAFANA_BODY)).status_code == 401
    finally:
        app.extensions["bridge"].stop(timeout=5)


def test_auth_config_mistakes_are_named(tmp_path):
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        loads("bots: [{name: a}]\nroute: {bots: [a]}\nauth: {basic: {username: x}, grafana_hmac: {}, tokn: 1}\n",
              env={})
    text = "\n".join(info.value.problems)
    assert "auth.basic.password: required" in text
    assert "auth.grafana_hmac.secret: required" in text
    assert "auth.tokn: unknown key" in text
