"""Rendering a preview job: in process for a configured template, in a child process for a
pasted one.

A pasted template is untrusted code. It is compiled in the renderer's own sandbox, but in a
child process with CPU, memory and wall-clock limits: the sandbox stops it reaching out,
not looping for ever (`range` caps one loop, not nested ones) or building a string of a
gigabyte, and those must cost the child, not a worker. Templates from the configuration
render in process, as the senders render them.

The child is a fresh interpreter that imports this module only: nothing here imports
Flask or the app, and a job is plain data with nothing secret in it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ... import samples, sources
from ...config import App, Bot
from ...errors import ConfigError, PayloadError, TemplateError
from ...model import Mention, Notification
from ...render import Renderer
from ...secret import Secret

# A pasted template's child process. A render of the 50-alert sample takes well under a
# second of CPU, start-up included; an honest template never nears these.
CHILD_CPU_SECONDS = 5
CHILD_WALL_SECONDS = 10
CHILD_MEMORY_BYTES = 512 * 1024 * 1024
# What a pasted template is called in errors. It ends in the template suffix so that the
# renderer finds the template's own line in a traceback.
PASTED = "<pasted>"
# The directory that holds the bridge package, installed or not: the child imports it from there.
_ROOT = str(Path(__file__).resolve().parents[3])


# What makes the child's bot an app bot: only whether it is one matters to rendering.
PREVIEW_APP = App("preview", "cli_preview", Secret(""))


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
    # Whom each alert pings on this bot, as (user_id, name, email) triples: found from the
    # config before rendering, since the child does not see the config.
    mentions: tuple[tuple[tuple[str, ...], ...], ...] = ()
    app: bool = False              # an app bot: its cards are cut to the app's limit (30 KB)


def outcome(job: Job) -> dict:
    """The messages for a job, or the error that stopped them, as plain data."""
    try:
        notification = _with_mentions(notification_of(job), job.mentions)
        renderer = _renderer(job)
        bot = Bot(name=job.bot, keywords=tuple(job.keywords), template=PASTED if job.pasted else job.template,
                  app=PREVIEW_APP if job.app else None)
        return {"messages": renderer.render_strict(notification, bot), "alerts": len(notification.alerts)}
    except PayloadError as exc:
        return {"kind": "payload", "error": f"not a valid {source_of(job)} payload: {exc}"}
    except TemplateError as exc:
        short = " (more memory than the preview allows)" if isinstance(exc.__cause__, MemoryError) else ""
        return {"kind": "template", "error": str(exc) + short, "line": exc.line}
    except ConfigError as exc:  # a configured template that no longer compiles on disk
        return {"kind": "template", "error": "; ".join(exc.problems)}


def notification_of(job: Job) -> Notification:
    if job.sample is not None:
        return samples.all_samples()[job.sample]
    return sources.parse(source_of(job), job.payload)


def _with_mentions(notification: Notification, mentions: tuple) -> Notification:
    if not any(mentions):
        return notification
    alerts = tuple(replace(alert, mentions=tuple(Mention(*person) for person in found))
                   for alert, found in zip(notification.alerts, mentions))
    return replace(notification, alerts=alerts)


def source_of(job: Job) -> str:
    return job.source if job.source != "auto" else sources.guess(job.payload)


def _renderer(job: Job) -> Renderer:
    directory = Path(job.templates_dir) if job.templates_dir else None
    zone = ZoneInfo(job.timezone)
    renderer = Renderer(directory, zone)
    return renderer.with_template(PASTED, job.template) if job.pasted else renderer


# --- the child process -----------------------------------------------------------------


def in_child(job: Job) -> dict:
    """outcome(job) computed by a fresh interpreter under resource limits."""
    order = {"job": asdict(job), "cpu_seconds": CHILD_CPU_SECONDS, "memory_bytes": CHILD_MEMORY_BYTES}
    stopped = (f"the pasted template was stopped: it needed more than {CHILD_CPU_SECONDS} s of CPU, "
               f"{CHILD_WALL_SECONDS} s in all or {CHILD_MEMORY_BYTES // 2**20} MiB of memory "
               "(a loop that never ends?)")
    try:
        done = subprocess.run(
            # -I: no environment variables, user site or working directory steer the child.
            [sys.executable, "-I", "-X", "utf8", "-c",
             "import sys; sys.path.insert(0, sys.argv[1]); from bridge.web.preview.sandbox import child_main; "
             "child_main()", _ROOT],
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
