"""A tap, from the SDK's object to `Actions.tap` and back.

The SDK's dispatcher (`EventDispatcherHandler`) decodes a `card.action.trigger` frame into
a `P2CardActionTrigger` and calls the function registered for it; what that function
returns, the SDK's client marshals into the frame's ACK, which is Feishu's answer to the
tap. Here the object is turned back into the dict Feishu sent (the SDK's own JSON
marshalling drops only the fields its model does not know and nulls; the documented
body comes back equal, tests/test_events_taps.py) and handed to the same `Actions.tap`
the HTTP route calls; the dict it answers becomes the SDK's response object.

Never raises: an exception in the SDK's handler becomes an ACK with code 500, which the
person who tapped sees as a bare error (../shared/feishu-app-protocol.md §6.6, caveat 3).
"""

from __future__ import annotations

import json
import logging
from typing import Callable

import lark_oapi as lark
from lark_oapi.event.callback.model.p2_card_action_trigger import P2CardActionTrigger, P2CardActionTriggerResponse

from ..actions import Actions

# What the person sees when the handler itself failed: words, not a code.
FAILED_TOAST = {"toast": {"type": "error", "content": "The alert bridge could not handle this tap; see its log."}}


def callback_dict(data: P2CardActionTrigger) -> dict:
    """The callback body as Feishu sent it, from the SDK's object."""
    return json.loads(lark.JSON.marshal(data))


def tap_handler(app: str, actions: Actions, log: logging.Logger
                ) -> Callable[[P2CardActionTrigger], P2CardActionTriggerResponse]:
    """The function to register with the SDK for `app`'s taps."""
    def on_tap(data: P2CardActionTrigger) -> P2CardActionTriggerResponse:
        try:
            answer = actions.tap(app, callback_dict(data))
        except Exception:   # the SDK would turn it into a bare error for the user
            log.exception("card tap failed in the handler", extra={"event": "card_tap_failed", "app": app,
                                                                   "via": "long_connection"})
            answer = FAILED_TOAST
        return P2CardActionTriggerResponse(answer)

    return on_tap


def dispatcher(app: str, actions: Actions, log: logging.Logger) -> lark.EventDispatcherHandler:
    """The SDK's dispatcher with `app`'s tap handler registered. Its encrypt key and
    verification token are empty: over the long connection Feishu authenticates the
    connection once and pushes plain frames (§6.1), which the SDK's client hands to the
    dispatcher without a signature check."""
    return (lark.EventDispatcherHandler.builder("", "")
            .register_p2_card_action_trigger(tap_handler(app, actions, log))
            .build())
