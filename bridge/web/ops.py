"""Operations endpoints, named as in Prometheus and Alertmanager: /-/healthy, /-/ready."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..errors import ConfigError
from . import auth
from .state import bridge, runtime

blueprint = Blueprint("ops", __name__)
# A reload not done by then is answered "still going on" (issue 17: /-/reload must answer within 2 s).
RELOAD_ANSWER_SECONDS = 1.0


@blueprint.before_request
def authenticate() -> Response | None:
    # Off by default, so that kubelet probes and Prometheus scrapes need no credentials.
    config = runtime().config
    if not config.auth.protect_operations:
        return None
    return auth.require(config.auth, request, bridge().log)


@blueprint.get("/-/healthy")
def healthy() -> Response:
    return jsonify(status="healthy")


@blueprint.get("/-/ready")
def ready() -> tuple[Response, int] | Response:
    services = bridge().services
    problem = services.store.writable_problem() or services.write_health.problem()
    if problem is not None:
        return jsonify(status="not ready", reason=f"outbox not writable: {problem}"), 503
    stopped = services.delivery.problems()
    if stopped:
        reason = "; ".join(f"bot {name} stopped: {why}" for name, why in sorted(stopped.items()))
        return jsonify(status="not ready", reason=reason, stopped_bots=sorted(stopped)), 503
    return jsonify(status="ready", bots=list(runtime().config.bots))


@blueprint.post("/-/reload")
def reload() -> tuple[Response, int] | Response:
    """Reload config and templates here, then ask the other workers to do the same.

    500 with every problem on failure (Prometheus answers a failed reload with 500
    too); the running configuration stays. A reload still going on after
    RELOAD_ANSWER_SECONDS (a machine busy with webhooks, a very large file) is answered
    202 at once and goes on; its outcome is logged and shown by
    feishu_bridge_config_last_reload_successful.
    """
    outcome = bridge().reload_in_background()
    try:
        config = outcome.result(timeout=RELOAD_ANSWER_SECONDS)
    except TimeoutError:
        return jsonify(status="reloading", message=(
            f"the reload is still going on after {RELOAD_ANSWER_SECONDS:g} s; its outcome will be logged "
            "(event reloaded or reload_failed) and shown by feishu_bridge_config_last_reload_successful")), 202
    except ConfigError as exc:  # already logged by reload()
        return jsonify(error="reload failed; the running configuration stays", problems=exc.problems), 500
    return jsonify(status="reloaded", bots=list(config.bots))


@blueprint.get("/metrics")
def metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(bridge().metrics.scrape(), content_type=CONTENT_TYPE_LATEST)
