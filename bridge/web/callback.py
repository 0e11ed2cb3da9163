"""POST /feishu/callback: Feishu's card callbacks over HTTP (the console's 回调配置, request
URL mode). 404 unless actions.enabled. Each request is checked as Feishu's
(bridge.notify.feishu_app.callback: decrypted with the app's Encrypt Key, its signature,
its Verification Token, its time; its event id not seen before by any process); a URL
check is answered with its challenge, a tap by
bridge.actions (the same `Actions.tap` the long connection's `events` process calls).

A refused request gets 400 or 401 with its reason as JSON and one log line; nothing is
done. Never a 3xx (Feishu forbids it for callbacks, §6.4) and never a 500. Served in a
lane of its own (bridge.serving.worker), so webhooks queued in a storm do not make a tap
miss Feishu's 3 s.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import NotFound

from ..notify.feishu_app.callback import CallbackRefused, open_callback
from .state import bridge, runtime

blueprint = Blueprint("callback", __name__)


@blueprint.post("/feishu/callback")
def callback() -> Response | tuple[Response, int]:
    current = runtime()
    if current.actions is None:
        raise NotFound("card actions are off: set actions.enabled: true to receive Feishu's card callbacks")
    raw = request.get_data(cache=False)   # 413 over server.max_body_bytes
    services = bridge().services
    try:
        opened = open_callback(current.config.apps, request.headers, raw, services.clock.now())
        event_id = (opened.body.get("header") or {}).get("event_id") if opened.challenge is None else None
        if opened.challenge is None and (not isinstance(event_id, str) or not event_id):
            raise CallbackRefused(400, "a callback without header.event_id")
        if event_id is not None and not services.store.first_event(event_id):
            raise CallbackRefused(401, "this event was handled already: a replay")
    except CallbackRefused as refused:
        services.log.warning("Feishu card callback refused: %s", refused.reason,
                             extra={"event": "callback_refused", "status": refused.status, "reason": refused.reason,
                                    "remote": request.remote_addr})
        if services.metrics is not None:
            services.metrics.card_action("unknown", "refused")
        return jsonify({"error": refused.reason}), refused.status
    if opened.challenge is not None:
        return jsonify({"challenge": opened.challenge})
    return jsonify(current.actions.tap(opened.app.name, opened.body))
