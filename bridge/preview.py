"""The template preview: a page where a template author picks a bot (or pastes a template)
and a sample payload, and sees the messages Feishu would get, with each one's size.

    GET  /preview                   the page (bridge/preview_assets/index.html)
    GET  /preview/assets/<file>     its script and style sheet: nothing from outside
    GET  /preview/options           the bots (name, template), templates, samples and limits
    GET  /preview/templates/<name>  a template's source, to start a pasted one from
    POST /preview/render            {bot, template?, sample? | payload?, source?}
                                    -> {messages: [{body, bytes, components}], ...}

Off (404, as for any unknown path) with `preview.enabled: false`; behind the inbound auth
when that is on. A render sees a bot as its name and keywords only, so no answer can hold a
webhook URL, secret or proxy.

A pasted template is untrusted code. It is compiled in the renderer's own sandbox, but in a
child process with CPU, memory and wall-clock limits: the sandbox stops it reaching out,
not looping for ever (`range` caps one loop, not nested ones) or building a string of a
gigabyte, and those must cost the child, not a worker. Templates from the configuration
render in process, as the pipeline renders them.
"""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import NotFound

from . import auth, samples, sources
from .config import Bot, Config
from .errors import ConfigError, PayloadError, TemplateError
from .feishu import encode_body
from .limits import BODY_LIMIT_BYTES, BUDGET_BYTES, MAX_COMPONENTS, SIGNATURE_OVERHEAD
from .mentions import MentionResolver
from .model import Mention, Notification
from .render import Renderer, count_components
from .template_files import TEMPLATE_SUFFIX, shipped_templates_dir, template_names

blueprint = Blueprint("preview", __name__, static_folder="preview_assets", static_url_path="/preview/assets")

# The shipped default template is about 5 KB; a pasted one may be several times that.
TEMPLATE_MAX_BYTES = 64 * 1024
# A whole render request, pasted payload included: an Alertmanager group of about a
# thousand alerts. Lower when server.max_body_bytes is.
REQUEST_MAX_BYTES = 1024 * 1024
# A pasted template's child process. A render of the 50-alert sample takes well under a
# second of CPU, start-up included; an honest template never nears these.
CHILD_CPU_SECONDS = 5
CHILD_WALL_SECONDS = 10
CHILD_MEMORY_BYTES = 512 * 1024 * 1024
# Children running at once per worker process; more requests wait, then get 503.
CHILD_SLOTS = 2
# What a pasted template is called in errors. It ends in the template suffix so that the
# renderer finds the template's own line in a traceback.
PASTED = "<pasted>"
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


@dataclass(frozen=True)
class Job:
    """One render, in plain data: all a child process needs, and nothing secret."""

    bot: str
    keywords: tuple[str, ...]
    template: str                  # a template's name; its text when pasted
    pasted: bool
    templates_dir: str | None
    timezone: str
    sample: str | None             # a name from samples.all_samples(), or None for ...
    payload: Any                   # ... a decoded webhook body
    source: str                    # alertmanager, grafana or auto
    # Whom each alert pings on this bot, as (user_id, name) pairs: found from the config
    # before rendering, since the child does not see the config.
    mentions: tuple[tuple[tuple[str, str], ...], ...] = ()


# --- the endpoints ---------------------------------------------------------------------


@blueprint.record_once
def _state(setup) -> None:
    setup.app.extensions["preview"] = threading.BoundedSemaphore(CHILD_SLOTS)


@blueprint.before_request
def guard() -> Response | None:
    bridge = current_app.extensions["bridge"]
    if not bridge.config.preview.enabled:
        raise NotFound()  # as for any unknown path: a disabled preview looks like none
    refusal = auth.require(bridge.config.auth, request, bridge.log)
    if refusal is not None and bridge.config.auth.basic_username is not None:
        # A browser asks for a user name and password only when challenged with Basic.
        refusal.headers["WWW-Authenticate"] = 'Basic realm="bridge"'
    return refusal


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
    config = current_app.extensions["bridge"].config
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
    config = current_app.extensions["bridge"].config
    if name in template_names(config.templates_dir):  # never a path: the names are file stems
        for directory in (config.templates_dir, shipped_templates_dir()):
            path = directory / (name + TEMPLATE_SUFFIX) if directory else None
            if path is not None and path.is_file():
                return jsonify(name=name, source=path.read_text(encoding="utf-8"))
    raise Refused(404, "request", f"unknown template {name!r}")


@blueprint.post("/preview/render")
def render() -> Response:
    bridge = current_app.extensions["bridge"]
    config = bridge.config  # once: a reload may swap it meanwhile
    job = _job(config, _request_json(config))
    job = replace(job, mentions=_mentions(config, bridge.log, job))
    result = _run_pasted(job) if job.pasted else outcome(job)
    if "error" in result:
        raise Refused(400, result["kind"], result["error"], result.get("line"))
    answer = {"bot": job.bot, "template": PASTED if job.pasted else job.template, "alerts": result["alerts"],
              "messages": [_measured(m) for m in result["messages"]], "limits": _limits(config),
              # A card's <at id=ou_...></at> carries no name: Feishu shows the person's, the page this one.
              "people": {user_id: name for found in job.mentions for user_id, name in found if user_id and name}}
    # Not jsonify: it sorts keys, and the page shows each message as it is sent.
    return current_app.response_class(json.dumps(answer, ensure_ascii=False), mimetype="application/json")


# --- the request -----------------------------------------------------------------------


def _limits(config: Config) -> dict[str, int]:
    return {"body_bytes": BODY_LIMIT_BYTES, "budget_bytes": BUDGET_BYTES, "signature_bytes": SIGNATURE_OVERHEAD,
            "components": MAX_COMPONENTS, "template_bytes": TEMPLATE_MAX_BYTES,
            "request_bytes": min(REQUEST_MAX_BYTES, config.server.max_body_bytes)}


def _request_json(config: Config) -> Any:
    if not request.is_json:
        raise Refused(415, "request", f"expected Content-Type application/json, got {request.mimetype or 'none'!r}")
    limit = min(REQUEST_MAX_BYTES, config.server.max_body_bytes)
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise Refused(413, "request", f"the request is over {limit} bytes, the most a preview takes")
    return _decode(raw, "request")


def _decode(raw: bytes | str, kind: str) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise Refused(400, kind, "not UTF-8 encoded JSON") from None
    except json.JSONDecodeError as exc:
        what = "the pasted payload is " if kind == "payload" else ""
        raise Refused(400, kind, f"{what}malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None


def _job(config: Config, body: Any) -> Job:
    if not isinstance(body, dict):
        raise Refused(400, "request", "expected a JSON object: {bot, template?, sample? or payload?, source?}")
    unknown = sorted(set(body) - _REQUEST_KEYS)
    if unknown:
        raise Refused(400, "request", f"unknown keys {unknown} (known: {', '.join(sorted(_REQUEST_KEYS))})")
    name = body.get("bot")
    if not isinstance(name, str) or name not in config.bots:
        raise Refused(404, "request", f"unknown bot {name!r}: configured bots are {', '.join(config.bots)}")
    bot = config.bots[name]
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
    """Whom each alert pings on the bot, found as the pipeline finds it: from the bot's
    settings and those of the routes that send the alert to it."""
    try:
        notification = _notification(job)
    except PayloadError as exc:
        raise Refused(400, "payload", f"not a valid {_source(job)} payload: {exc}") from None
    bot, resolver = config.bots[job.bot], MentionResolver(config.users, log)
    return tuple(
        tuple((m.user_id, m.name) for m in resolver.for_routed(alert, bot, config.route))
        for alert in notification.alerts)


def _measured(message: dict) -> dict:
    """A message with what counts against Feishu's limits: the bytes sent (before the
    signature, which adds up to SIGNATURE_OVERHEAD) and the card's components."""
    card = message.get("card") if message.get("msg_type") == "interactive" else None
    return {"body": message, "bytes": len(encode_body(message)), "components": count_components(card)}


# --- rendering (in process, or in the child for a pasted template) ---------------------


def outcome(job: Job) -> dict:
    """The messages for a job, or the error that stopped them, as plain data."""
    try:
        notification = _with_mentions(_notification(job), job.mentions)
        renderer = _renderer(job)
        bot = Bot(name=job.bot, keywords=tuple(job.keywords), template=PASTED if job.pasted else job.template)
        return {"messages": renderer.render_strict(notification, bot), "alerts": len(notification.alerts)}
    except PayloadError as exc:
        return {"kind": "payload", "error": f"not a valid {_source(job)} payload: {exc}"}
    except TemplateError as exc:
        short = " (more memory than the preview allows)" if isinstance(exc.__cause__, MemoryError) else ""
        return {"kind": "template", "error": str(exc) + short, "line": exc.line}
    except ConfigError as exc:  # a configured template that no longer compiles on disk
        return {"kind": "template", "error": "; ".join(exc.problems)}


def _notification(job: Job) -> Notification:
    if job.sample is not None:
        return samples.all_samples()[job.sample]
    return sources.parse(_source(job), job.payload)


def _with_mentions(notification: Notification, mentions: tuple) -> Notification:
    if not any(mentions):
        return notification
    alerts = tuple(replace(alert, mentions=tuple(Mention(user_id, name) for user_id, name in found))
                   for alert, found in zip(notification.alerts, mentions))
    return replace(notification, alerts=alerts)


def _source(job: Job) -> str:
    return job.source if job.source != "auto" else sources.guess(job.payload)


def _renderer(job: Job) -> Renderer:
    directory = Path(job.templates_dir) if job.templates_dir else None
    zone = ZoneInfo(job.timezone)
    renderer = Renderer(directory, zone)
    return renderer.with_template(PASTED, job.template) if job.pasted else renderer


# --- the child process -----------------------------------------------------------------


def _run_pasted(job: Job) -> dict:
    """outcome(job) computed by a fresh interpreter under resource limits."""
    slots: threading.BoundedSemaphore = current_app.extensions["preview"]
    if not slots.acquire(timeout=CHILD_WALL_SECONDS):
        raise Refused(503, "busy", "the preview is rendering other pasted templates; try again shortly")
    try:
        return _child(job)
    finally:
        slots.release()


def _child(job: Job) -> dict:
    root = str(Path(__file__).resolve().parent.parent)  # this very package, installed or not
    order = {"job": asdict(job), "cpu_seconds": CHILD_CPU_SECONDS, "memory_bytes": CHILD_MEMORY_BYTES}
    stopped = (f"the pasted template was stopped: it needed more than {CHILD_CPU_SECONDS} s of CPU, "
               f"{CHILD_WALL_SECONDS} s in all or {CHILD_MEMORY_BYTES // 2**20} MiB of memory "
               "(a loop that never ends?)")
    try:
        done = subprocess.run(
            # -I: no environment variables, user site or working directory steer the child.
            [sys.executable, "-I", "-X", "utf8", "-c",
             "import sys; sys.path.insert(0, sys.argv[1]); from bridge.preview import child_main; child_main()", root],
            input=json.dumps(order, ensure_ascii=False).encode("utf-8"), capture_output=True,
            timeout=CHILD_WALL_SECONDS, env={}, close_fds=True,
        )
    except subprocess.TimeoutExpired:
        return {"kind": "template", "error": stopped}
    if done.returncode < 0:  # SIGXCPU, or SIGKILL
        return {"kind": "template", "error": stopped}
    try:
        result = json.loads(done.stdout)
    except ValueError:
        result = None
    if done.returncode != 0 or not isinstance(result, dict):
        raise RuntimeError(f"the preview's child process failed ({done.returncode}): "
                           f"{done.stderr.decode('utf-8', 'replace')[-2000:]}")
    return result


def child_main() -> None:
    """The child's side: limits first, then the job from stdin, the outcome to stdout."""
    import resource

    def lower(kind: int, soft: int, hard: int) -> None:
        # Never above a hard limit the worker already has: raising it is not allowed.
        ceiling = resource.getrlimit(kind)[1]
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        resource.setrlimit(kind, (soft, hard))

    order = json.loads(sys.stdin.buffer.read())
    cpu, memory = order["cpu_seconds"], order["memory_bytes"]
    lower(resource.RLIMIT_CPU, cpu, cpu + 1)     # SIGXCPU, then SIGKILL
    lower(resource.RLIMIT_AS, memory, memory)    # MemoryError
    job = order["job"]
    try:
        result = outcome(Job(**{**job, "keywords": tuple(job["keywords"])}))
    except MemoryError:  # outside a render (which reports its own), e.g. compiling the template
        result = {"kind": "template", "error": f"the pasted template needed more than {memory // 2**20} MiB of memory"}
    sys.stdout.buffer.write(json.dumps(result, ensure_ascii=False).encode("utf-8"))
