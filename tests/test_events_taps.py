"""A tap through the SDK's dispatcher, the path the long connection's client takes after
decoding a frame (lark_oapi/ws/client.py `_handle_data_frame` calls the event handler's
`_do_without_validation(payload)`), to `Actions.tap` and back as the SDK's response type.

The HTTP route `POST /feishu/callback` hands `Actions.tap` the decrypted body as decoded
JSON; over the long connection the same dict must arrive.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lark_oapi as lark
from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTriggerResponse

from bridge.events.taps import FAILED_TOAST, dispatcher

TAP = Path(__file__).parent / "fixtures" / "feishu_callbacks" / "card_action_trigger.json"


class RecordingActions:
    """Stands in for bridge.actions.Actions: records each call, answers `answer`."""

    def __init__(self, answer: dict | None = None, error: Exception | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.answer = answer or {"toast": {"type": "success", "content": "Silenced for 1h"},
                                 "card": {"type": "raw", "data": {"schema": "2.0", "config": {"update_multi": True},
                                                                  "body": {"elements": [
                                                                      {"tag": "markdown",
                                                                       "content": "🔕 Silenced by Alice"}]}}}}
        self.error = error

    def tap(self, app: str, callback: dict) -> dict:
        self.calls.append((app, callback))
        if self.error is not None:
            raise self.error
        return self.answer


def tap_body() -> dict:
    return json.loads(TAP.read_text(encoding="utf-8"))


def test_a_tap_reaches_actions_with_the_body_as_feishu_sent_it():
    actions = RecordingActions()
    handler = dispatcher("oncall", actions, logging.getLogger("test"))

    result = handler._do_without_validation(json.dumps(tap_body()).encode())

    assert actions.calls == [("oncall", tap_body())]          # what the HTTP route passes: json.loads(body)
    assert isinstance(result, P2CardActionTriggerResponse)
    # What the SDK's client puts in the frame's ACK (base64 of this JSON): the answer as given.
    assert json.loads(lark.JSON.marshal(result)) == actions.answer


def test_the_app_name_is_the_connections():
    first, second = RecordingActions(), RecordingActions()
    dispatcher("oncall", first, logging.getLogger("test"))._do_without_validation(json.dumps(tap_body()).encode())
    dispatcher("lark-intl", second, logging.getLogger("test"))._do_without_validation(
        json.dumps(tap_body()).encode())
    assert [app for app, _ in first.calls + second.calls] == ["oncall", "lark-intl"]


def test_a_handler_that_raises_answers_a_toast_in_words_and_logs(caplog):
    actions = RecordingActions(error=RuntimeError("boom"))
    with caplog.at_level(logging.ERROR, logger="test"):
        result = dispatcher("oncall", actions, logging.getLogger("test"))._do_without_validation(
            json.dumps(tap_body()).encode())
    assert json.loads(lark.JSON.marshal(result)) == FAILED_TOAST
    assert FAILED_TOAST["toast"]["type"] == "error"
    assert [r.event for r in caplog.records] == ["card_tap_failed"]


def test_other_callbacks_are_not_taps():
    """A URL-preview callback has no handler here: the SDK raises (its client ACKs 500),
    and Actions never hears of it."""
    actions = RecordingActions()
    body = tap_body()
    body["header"]["event_type"] = "url.preview.get"
    try:
        dispatcher("oncall", actions, logging.getLogger("test"))._do_without_validation(json.dumps(body).encode())
    except Exception as exc:   # the SDK's EventException
        assert "processor not found" in str(exc)
    else:
        raise AssertionError("the SDK dispatched a callback nobody registered")
    assert actions.calls == []
