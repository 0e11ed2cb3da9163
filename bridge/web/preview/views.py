"""The template preview: a page where a template author picks a bot (or pastes a template)
and a sample payload, and sees the messages Feishu would get, with each one's size.

    GET  /preview                   the page (bridge/web/preview/assets/index.html)
    GET  /preview/assets/<file>     its script and style sheet: nothing from outside
    GET  /preview/options           the bots (name, template), templates, samples and limits
    GET  /preview/templates/<name>  a template's source, to start a pasted one from
    POST /preview/render            {bot, template?, sample? | payload?, source?}
                                    -> {messages: [{body, bytes, components}], ...}

Off (404, as for any unknown path) with `preview.enabled: false`; behind the inbound auth
when that is on. A render sees a bot as its name and keywords only, so no answer can hold a
webhook URL, secret or proxy. A pasted template renders in a child process (sandbox.py).
"""

from __future__ import annotations

import inspect
import json
import threading
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from ... import samples, sources
from ...accept import UnknownBot, decode_json, find_bot
from ...config import Config
from ...errors import PayloadError
from ...limits import (APP_BODY_LIMIT_BYTES, APP_BUDGET_BYTES, BODY_LIMIT_BYTES, BUDGET_BYTES, MAX_COMPONENTS,
                       SIGNATURE_OVERHEAD, app_size, encode_body)
from ...mentions import MentionResolver
from ...render import count_components
from ...template_files import TEMPLATE_SUFFIX, shipped_templates_dir, template_names
from .. import auth
from ..body import body_limit, read_body
from ..state import bridge, runtime
from . import sandbox
from .sandbox import PASTED, Job

blueprint = Blueprint("preview", __name__, static_folder="assets", static_url_path="/preview/assets")

# The shipped default template is about 5 KB; a pasted one may be several times that.
TEMPLATE_MAX_BYTES = 64 * 1024
# A whole render request, pasted payload included: an Alertmanager group of about a
# thousand alerts. Lower when server.max_body_bytes is.
REQUEST_MAX_BYTES = 1024 * 1024
# Children running at once per worker process; more requests wait, then get 503.
CHILD_SLOTS = 2
SOURCE_CHOICES = ("auto",) + sources.SOURCES
_REQUEST_KEYS = {"bot", "template", "sample", "payload", "source"}
# The page loads only its own files; card links open in a new tab, which CSP leaves alone.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Refused(Exception):
    """A render request the preview cannot serve: answered with `status` and JSON."""

    def __init__(self, status: int, kind: str, error: str, line: int | None = None):
        super().__init__(error)
        self.status, self.kind, self.error, self.line = status, kind, error, line


# --- the endpoints ---------------------------------------------------------------------


@blueprint.record_once
def _state(setup) -> None:
    setup.app.extensions["preview"] = threading.BoundedSemaphore(CHILD_SLOTS)


@blueprint.before_request
def guard() -> Response | None:
    config = runtime().config
    if not config.preview.enabled:
        raise NotFound()  # as for any unknown path: a disabled preview looks like none
    return auth.require(config.auth, request, bridge().log, browser=True)


@blueprint.after_request
def secure(response: Response) -> Response:
    response.headers.update(_SECURITY_HEADERS)
    return response


@blueprint.errorhandler(Refused)
def refused(exc: Refused) -> tuple[Response, int]:
    return jsonify(error=exc.error, kind=exc.kind, line=exc.line), exc.status


@blueprint.get("/preview")
def page() -> Response:
    return blueprint.send_static_file("index.html")


@blueprint.get("/preview/options")
def options() -> Response:
    config = runtime().config
    built = samples.all_samples()
    return jsonify(
        bots=[{"name": b.name, "template": b.template} for b in config.bots.values()],
        templates=sorted(template_names(config.templates_dir)),
        samples=[{"name": name, "alerts": len(n.alerts), "about": inspect.getdoc(getattr(samples, name)) or ""}
                 for name, n in built.items()],
        limits=_limits(config),
    )


@blueprint.get("/preview/templates/<name>")
def template_source(name: str) -> Response:
    """The text of a configured or shipped template, as the renderer would load it."""
    config = runtime().config
    if name in template_names(config.templates_dir):  # never a path: the names are file stems
        for directory in (config.templates_dir, shipped_templates_dir()):
            path = directory / (name + TEMPLATE_SUFFIX) if directory else None
            if path is not None and path.is_file():
                return jsonify(name=name, source=path.read_text(encoding="utf-8"))
    raise Refused(404, "request", f"unknown template {name!r}")


@blueprint.post("/preview/render")
def render() -> Response:
    config = runtime().config
    job = _job(config, _request_json(config))
    job = replace(job, mentions=_mentions(config, bridge().log, job))
    result = _run_pasted(job) if job.pasted else sandbox.outcome(job)
    if "error" in result:
        raise Refused(400, result["kind"], result["error"], result.get("line"))
    answer = {"bot": job.bot, "template": PASTED if job.pasted else job.template, "alerts": result["alerts"],
              "messages": [_measured(m, job.app) for m in result["messages"]], "limits": _limits(config, job.app),
              # A card's <at id=ou_...></at> carries no name: Feishu shows the person's, the page this one.
              "people": {user_id: name for found in job.mentions for user_id, name, _ in found if user_id and name}}
    # Not jsonify: it sorts keys, and the page shows each message as it is sent.
    return current_app.response_class(json.dumps(answer, ensure_ascii=False), mimetype="application/json")


# --- the request -----------------------------------------------------------------------


def _limits(config: Config, app: bool = False) -> dict[str, Any]:
    """What a message may take: a custom bot's body, signed; an app bot's card as the content
    string of its request (30 KB, no signature: bridge.limits)."""
    body, budget, signature = ((APP_BODY_LIMIT_BYTES, APP_BUDGET_BYTES, 0) if app
                               else (BODY_LIMIT_BYTES, BUDGET_BYTES, SIGNATURE_OVERHEAD))
    return {"body_bytes": body, "budget_bytes": budget, "signature_bytes": signature,
            "components": MAX_COMPONENTS, "template_bytes": TEMPLATE_MAX_BYTES,
            "request_bytes": min(REQUEST_MAX_BYTES, body_limit()), "app_bot": app}


def _request_json(config: Config) -> Any:
    if not request.is_json:
        raise Refused(415, "request", f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    limit = min(REQUEST_MAX_BYTES, body_limit())
    try:
        raw = read_body(limit)
    except RequestEntityTooLarge:
        raise Refused(413, "request", f"the request is over {limit} bytes, the most a preview takes") from None
    except HTTPException as exc:
        raise Refused(exc.code or 400, "request", exc.description or exc.name) from None
    except PayloadError as exc:
        raise Refused(400, "request", str(exc)) from None
    return _decode(raw, "request")


def _decode(raw: bytes | str, kind: str) -> Any:
    try:
        return decode_json(raw)
    except PayloadError as exc:
        what = "the pasted payload is " if kind == "payload" else ""
        raise Refused(400, kind, f"{what}{exc}") from None


def _job(config: Config, body: Any) -> Job:
    if not isinstance(body, dict):
        raise Refused(400, "request", "expected a JSON object: {bot, template?, sample? or payload?, source?}")
    unknown = sorted(set(body) - _REQUEST_KEYS)
    if unknown:
        raise Refused(400, "request", f"unknown keys {unknown} (known: {', '.join(sorted(_REQUEST_KEYS))})")
    try:
        bot = find_bot(config, body.get("bot"))
    except UnknownBot as exc:
        raise Refused(404, "request", str(exc)) from None
    template = body.get("template")
    if template is not None and not isinstance(template, str):
        raise Refused(400, "request", "template: expected the template's text, a string")
    if template is not None and len(template.encode("utf-8", "surrogatepass")) > TEMPLATE_MAX_BYTES:
        raise Refused(413, "template", f"the pasted template is over {TEMPLATE_MAX_BYTES} bytes, "
                                       "the most a preview takes")
    sample, payload = _sample_or_payload(body)
    source = body.get("source", "auto")
    if source not in SOURCE_CHOICES:
        raise Refused(400, "request", f"source: expected one of {', '.join(SOURCE_CHOICES)}, got {source!r}")
    return Job(bot=bot.name, keywords=tuple(bot.keywords), template=bot.template if template is None else template,
               app=bot.is_app,
               pasted=template is not None,
               templates_dir=str(config.templates_dir.resolve()) if config.templates_dir else None,
               timezone=(bot.timezone or config.timezone).key, sample=sample, payload=payload, source=source)


def _sample_or_payload(body: dict) -> tuple[str | None, Any]:
    sample, payload = body.get("sample"), body.get("payload")
    names = list(samples.all_samples())
    if (sample is None) == (payload is None):
        raise Refused(400, "request", f"give either sample (one of {', '.join(names)}) or payload, not both")
    if sample is not None and sample not in names:
        raise Refused(400, "request", f"unknown sample {sample!r} (samples: {', '.join(names)})")
    if isinstance(payload, str):  # pasted text: parsed here, so that its errors say where
        payload = _decode(payload, "payload")
    return sample, payload


def _mentions(config: Config, log, job: Job) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Whom each alert pings on the bot, found as the senders find it: from the bot's
    settings and those of the routes that send the alert to it."""
    try:
        notification = sandbox.notification_of(job)
    except PayloadError as exc:
        raise Refused(400, "payload", f"not a valid {sandbox.source_of(job)} payload: {exc}") from None
    bot, resolver = config.bots[job.bot], MentionResolver(config.users, log, config.user_emails)
    return tuple(
        tuple((m.user_id, m.name, m.email) for m in resolver.for_routed(alert, bot, config.route))
        for alert in notification.alerts)


def _measured(message: dict, app: bool = False) -> dict:
    """A message with what counts against Feishu's limits: the bytes sent (a custom bot's
    body before the signature, which adds up to SIGNATURE_OVERHEAD; an app bot's content
    string) and the card's components."""
    card = message.get("card") if message.get("msg_type") == "interactive" else None
    size = app_size(message) if app else len(encode_body(message))
    return {"body": message, "bytes": size, "components": count_components(card)}


def _run_pasted(job: Job) -> dict:
    """sandbox.in_child(job), in one of this worker's CHILD_SLOTS."""
    slots: threading.BoundedSemaphore = current_app.extensions["preview"]
    if not slots.acquire(timeout=sandbox.CHILD_WALL_SECONDS):
        raise Refused(503, "busy", "the preview is rendering other pasted templates; try again shortly")
    try:
        return sandbox.in_child(job)
    finally:
        slots.release()
