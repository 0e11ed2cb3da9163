"""No body, however odd, gets a 500: every answer is 200 or a 4xx with a JSON reason."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import create_app
from bridge.config import loads

text = st.text(max_size=60)
label_maps = st.dictionaries(st.text(min_size=1, max_size=20), text, max_size=6)
times = st.sampled_from(["2026-11-29T00:42:10Z", "0001-01-01T00:00:00Z", "2026-11-29T08:42:10.123456789+08:00"])
alerts = st.fixed_dictionaries({
    "status": st.sampled_from(["firing", "resolved"]),
    "labels": label_maps, "annotations": label_maps,
    "startsAt": times, "endsAt": times,
    "generatorURL": st.one_of(text, st.just("http://prometheus:9090/graph?g0.expr=up")),
    "fingerprint": st.just(""),
})
payloads = st.fixed_dictionaries({
    "version": st.just("4"), "groupKey": text, "truncatedAlerts": st.integers(0, 5),
    "status": st.sampled_from(["firing", "resolved"]), "receiver": text,
    "groupLabels": label_maps, "commonLabels": label_maps, "commonAnnotations": label_maps,
    "externalURL": text, "alerts": st.lists(alerts, min_size=1, max_size=8),
})
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("props")
    config = loads(f"""
bots: [{{name: ops, dry_run: true, keywords: [告警]}}, {{name: db, template: text}}]
route: {{bots: [ops], routes: [{{matchers: ['team=~"d.*"'], bots: [db], continue: true}}]}}
storage: {{path: {tmp / 'outbox.db'}}}
""", env={})
    log = logging.getLogger("bridge.props")
    log.setLevel(logging.WARNING)
    app = create_app(config, logger=log)
    yield app.test_client()
    app.extensions["bridge"].stop(timeout=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=payloads, source=st.sampled_from(["alertmanager", "grafana"]))
def test_well_formed_payloads_with_any_strings_are_accepted(client, payload, source):
    if source == "grafana":
        payload = {**payload, "version": "1"}
    response = client.post(f"/{source}", data=json.dumps(payload), content_type="application/json")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["alerts"] == len(payload["alerts"])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values, source=st.sampled_from(["alertmanager", "grafana", "alertmanager/ops"]))
def test_arbitrary_json_gets_200_or_400_never_500(client, body, source):
    response = client.post(f"/{source}", data=json.dumps(body), content_type="application/json")
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    assert "error" in response.get_json() or response.status_code == 200
