"""The `feishu-alert-bridge` command (also `python -m bridge`).

Errors are one clear line (or one line per config problem) and a non-zero exit,
never a traceback: 2 for a configuration problem, 1 for anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import BridgeError, ConfigError

EXIT_CONFIG = 2
DEFAULT_PORT = 9095


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return args.run(args)
    except ConfigError as exc:
        print(f"configuration error ({len(exc.problems)} problem{'s' if len(exc.problems) != 1 else ''}):",
              file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except BridgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    # Over 60 lines on purpose: it only declares the nine commands and their flags, read as
    # one page the way `--help` shows them; split up, a flag would hide from its neighbours.
    parser = argparse.ArgumentParser(
        prog="feishu-alert-bridge",
        description="Receive Alertmanager and Grafana webhooks; send signed Feishu/Lark cards.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = _command(
        sub, "serve", help="run the service",
        description="Run the service under gunicorn (or Flask's server with --dev).",
        epilog="example: feishu-alert-bridge serve --config /etc/feishu-alert-bridge/config.yaml --port 9095",
    )
    serve.add_argument("--config", metavar="PATH", default=os.environ.get("BRIDGE_CONFIG"),
                       help="config file (env BRIDGE_CONFIG; default: the embedded example config)")
    serve.add_argument("--host", default=os.environ.get("BRIDGE_HOST", "0.0.0.0"),
                       help="address to listen on (env BRIDGE_HOST; default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=int(os.environ.get("BRIDGE_PORT", DEFAULT_PORT)),
                       help=f"port (env BRIDGE_PORT; default {DEFAULT_PORT})")
    serve.add_argument("--workers", type=int, default=int(os.environ.get("BRIDGE_WORKERS", 2)),
                       help="gunicorn worker processes (env BRIDGE_WORKERS; default 2)")
    serve.add_argument("--threads", type=int, default=int(os.environ.get("BRIDGE_THREADS", 4)),
                       help="threads per worker (env BRIDGE_THREADS; default 4)")
    serve.add_argument("--log-format", choices=("json", "text"), default=os.environ.get("BRIDGE_LOG_FORMAT"),
                       help="log format (env BRIDGE_LOG_FORMAT; default: the config's log.format, json)")
    serve.add_argument("--log-level", default=os.environ.get("BRIDGE_LOG_LEVEL"),
                       choices=("debug", "info", "warning", "error"),
                       help="log level (env BRIDGE_LOG_LEVEL; default: the config's log.level, info)")
    serve.add_argument("--dev", action="store_true", help="use Flask's development server instead of gunicorn")
    serve.set_defaults(run=_serve)

    events = _command(
        sub, "events", help="receive card taps over Feishu's long connection (no public URL needed)",
        description="Open one long connection to Feishu per app under apps: (through the official SDK) and hand "
                    "every card tap to the card actions, as POST /feishu/callback does. Runs beside serve, with the "
                    "same config and store. Exits 2 when the config is wrong or actions are off, 1 when Feishu "
                    "cannot be reached or refuses the app; SIGTERM stops it.",
        epilog="example: feishu-alert-bridge events --config /etc/feishu-alert-bridge/config.yaml",
    )
    events.add_argument("--config", metavar="PATH", default=os.environ.get("BRIDGE_CONFIG"),
                        help="config file (env BRIDGE_CONFIG; default: the embedded example config)")
    events.add_argument("--log-format", choices=("json", "text"), default=os.environ.get("BRIDGE_LOG_FORMAT"),
                        help="log format (env BRIDGE_LOG_FORMAT; default: the config's log.format, json)")
    events.add_argument("--log-level", default=os.environ.get("BRIDGE_LOG_LEVEL"),
                        choices=("debug", "info", "warning", "error"),
                        help="log level (env BRIDGE_LOG_LEVEL; default: the config's log.level, info)")
    events.add_argument("--heartbeat-file", metavar="PATH", default=os.environ.get("BRIDGE_EVENTS_HEARTBEAT"),
                        help="touch this file every 10 s while the process runs, for a liveness probe "
                             "(env BRIDGE_EVENTS_HEARTBEAT)")
    events.add_argument("--retry-connect", metavar="SECONDS", type=float,
                        default=os.environ.get("BRIDGE_EVENTS_RETRY_CONNECT"),
                        help="when Feishu cannot be reached or refuses at start, log it and try again after "
                             "SECONDS instead of exiting 1 (env BRIDGE_EVENTS_RETRY_CONNECT; for a container "
                             "beside the server, whose restarts would make the pod unready)")
    events.add_argument("--metrics-port", metavar="PORT", type=int, default=os.environ.get("BRIDGE_EVENTS_METRICS_PORT"),
                        help="serve this process's Prometheus metrics (taps, the connections) at http://HOST:PORT/metrics "
                             "(env BRIDGE_EVENTS_METRICS_PORT; default: none)")
    events.add_argument("--metrics-host", metavar="HOST", default=os.environ.get("BRIDGE_EVENTS_METRICS_HOST", "0.0.0.0"),
                        help="address for --metrics-port (env BRIDGE_EVENTS_METRICS_HOST; default 0.0.0.0)")
    events.set_defaults(run=_events)

    check = _command(
        sub, "check-config", help="validate a config file and its templates",
        description="Validate the config and render every bot's template against built-in sample alerts. "
                    "Exit 0 when all is well, 2 with every problem and its key path otherwise.",
        epilog="example: feishu-alert-bridge check-config /etc/feishu-alert-bridge/config.yaml",
    )
    check.add_argument("path", metavar="PATH", help="config file")
    check.set_defaults(run=_check_config)

    render = _command(
        sub, "render", help="print the messages a payload would produce",
        description="Print, per bot, the exact Feishu message(s) a webhook payload would produce after "
                    "routing, keyword and size-splitting (the signature is omitted). Nothing is sent.",
        epilog="example: feishu-alert-bridge render --config config.yaml --payload alert.json --bot ops",
    )
    _config_option(render)
    render.add_argument("--payload", metavar="FILE", required=True, help="a webhook body (JSON); - for stdin")
    render.add_argument("--source", choices=("auto", "alertmanager", "grafana"), default="auto",
                        help="who sent the payload (default: told from its shape)")
    render.add_argument("--bot", metavar="NAME", help="skip the route tree and render for this bot only")
    render.set_defaults(run=_render)

    send_test = _command(
        sub, "send-test", help="send one test card to a bot and explain Feishu's answer",
        description="Send one test card (a built-in sample alert) to a bot, signed and keyworded as "
                    "the service would, and print Feishu's answer in words. Exit 0 when it was accepted.",
        epilog="example: feishu-alert-bridge send-test --config config.yaml --bot ops",
    )
    _config_option(send_test)
    send_test.add_argument("--bot", metavar="NAME", required=True, help="the bot to send to")
    send_test.set_defaults(run=_send_test)

    send = _command(
        sub, "send", help="send a message (not an alert) to a bot: for cron jobs, CI and scripts",
        description="Post a message to a bot through a running bridge's POST /send/<bot> (credentials from "
                    "BRIDGE_TOKEN, or BRIDGE_USERNAME and BRIDGE_PASSWORD), or with --direct sign and send it "
                    "from here, explaining Feishu's answer. Exit 0 only when the message was accepted.",
        epilog="examples:\n  feishu-alert-bridge send --bot ops --text \"Backup of db1 finished\"\n"
               "  feishu-alert-bridge send --bot ops --file message.json --direct --config config.yaml",
    )
    send.add_argument("--bot", metavar="NAME", required=True, help="the bot to send to")
    what = send.add_mutually_exclusive_group(required=True)
    what.add_argument("--text", help="a text message")
    what.add_argument("--file", metavar="FILE", help="a Feishu message or a relay request (JSON); - for stdin")
    send.add_argument("--dedupe-key", metavar="KEY", help="send once: the same key again within "
                                                          "delivery.dedupe_window is dropped")
    send.add_argument("--mention", metavar="NAME", action="append", default=[], help="ping NAME from users: "
                                                                                     "(repeatable)")
    send.add_argument("--mention-all", action="store_true", help="ping everyone in the chat")
    send.add_argument("--url", help="the bridge (env BRIDGE_URL; default http://127.0.0.1:9095)")
    send.add_argument("--direct", action="store_true", help="send from here with the bot of --config, no bridge")
    _config_option(send)
    send.set_defaults(run=_send)

    outbox = _command(
        sub, "outbox", help="list or re-queue stored messages (dead letters)",
        description="Look into the durable outbox that the service sends from (storage.path or storage.postgres).",
        epilog="examples:\n  feishu-alert-bridge outbox list --dead --config config.yaml\n"
               "  feishu-alert-bridge outbox retry --all-dead --config config.yaml",
    )
    outbox_sub = outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    listing = _command(
        outbox_sub, "list", help="show waiting messages and dead letters",
        description="Show the messages waiting to be sent and the dead letters (or only these with --dead): "
                    "id, bot, state, attempts, age and the last reason. Bodies, URLs and secrets are not shown.",
        epilog="example: feishu-alert-bridge outbox list --dead --config config.yaml",
    )
    _config_option(listing)
    listing.add_argument("--dead", action="store_true", help="only dead letters")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(run=_outbox_list)
    retry = _command(
        outbox_sub, "retry", help="queue dead letters again",
        description="Queue dead letters again, as if just accepted: by ID, or every one with --all-dead. "
                    "The running service picks them up within a second.",
        epilog="example: feishu-alert-bridge outbox retry 42 --config config.yaml",
    )
    _config_option(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", metavar="ID", nargs="?", type=int, help="a dead letter's id (from outbox list)")
    which.add_argument("--all-dead", action="store_true", help="every dead letter")
    retry.set_defaults(run=_outbox_retry)
    return parser


def _command(sub, name: str, *, help: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A subcommand whose help ends with its example, kept as written (line breaks too)."""
    return sub.add_parser(name, help=help, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="config file (default: the embedded example config)")


def _serve(args: argparse.Namespace) -> int:
    from . import config as config_module
    from .logs import configure

    config = config_module.load(args.config)  # fail fast, before any worker starts
    log_level = args.log_level or config.log.level
    log = configure(args.log_format or config.log.format, log_level)
    log.info("starting", extra={"event": "starting", "config": config.source, "bots": list(config.bots),
                                "dry_run_bots": [b.name for b in config.bots.values() if not b.sends]})
    if args.dev:
        import signal

        from .web import create_app

        app = create_app(config, logger=log)
        signal.signal(signal.SIGHUP, lambda *_: app.extensions["bridge"].reload_or_keep())
        app.run(host=args.host, port=args.port, threaded=True)
        return 0
    from .server import run

    return run(args.config, config.storage.path, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
               log_level=log_level)


def _events(args: argparse.Namespace) -> int:
    # Before prometheus_client is imported (it picks its storage then): the events process
    # counts on a registry of its own, never in the server's multiprocess directory, which
    # the chart's two containers share (/tmp) and which the server empties when it starts.
    for name in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir"):
        os.environ.pop(name, None)
    from .events import run

    return run(args.config, log_format=args.log_format, log_level=args.log_level,
               heartbeat=Path(args.heartbeat_file) if args.heartbeat_file else None,
               retry_connect=float(args.retry_connect) if args.retry_connect else None,
               metrics_port=args.metrics_port,
               metrics_host=args.metrics_host)


def _check_config(args: argparse.Namespace) -> int:
    from . import bootstrap
    from . import config as config_module
    from .samples import all_samples
    from .errors import TemplateError

    config = config_module.load(args.path)
    renderer = bootstrap.build_renderer(config)
    problems = []
    for i, bot in enumerate(config.bots.values()):
        for name, sample in all_samples().items():
            try:
                renderer.render_strict(sample, bot)
            except TemplateError as exc:
                problems.append(f"bots[{i}].template: sample {name!r}: {exc}")
    if problems:
        raise ConfigError(problems)
    print(f"{args.path}: OK ({len(config.bots)} bot{'s' if len(config.bots) != 1 else ''}: "
          f"{', '.join(config.bots)})")
    if config.relay.enabled:
        print(f"relay: POST /send/<bot> is on for {', '.join(config.relay.bots or config.bots)}")
    return 0


def _render(args: argparse.Namespace) -> int:
    import json
    import logging

    from . import bootstrap
    from . import config as config_module
    from . import sources
    from .accept import find_bot, route_shares
    from .errors import PayloadError
    from .limits import app_content, app_size, encode_body
    from .send import read_json

    config = config_module.load(args.config)
    if args.bot is not None:
        find_bot(config, args.bot)
    payload = read_json(args.payload)
    source = args.source if args.source != "auto" else sources.guess(payload)
    try:
        notification = sources.parse(source, payload)
    except PayloadError as exc:
        raise BridgeError(f"{args.payload}: not a valid {source} payload: {exc}") from None
    compose = bootstrap.build_compose(config, logging.getLogger("bridge.cli"))
    rendered = [(bot, compose.render(notification, share.alerts, config.bots[bot], routes=share.routes))
                for bot, share in route_shares(config, notification, only_bot=args.bot).items()]
    if not rendered:
        print("no bot gets a message from this payload")
    for name, bodies in rendered:
        bot = config.bots[name]
        for part, body in enumerate(bodies, start=1):
            if bot.is_app:
                # As im/v1 is sent it, with the content (a JSON string on the wire) shown as JSON.
                kind, content = app_content(body)
                print(f"# bot {name}: message {part}/{len(bodies)}, {app_size(body)} bytes (app bot: the content "
                      f"string of POST /open-apis/im/v1/messages, or of its update in place)")
                body = {"receive_id": bot.chat_id, "msg_type": kind, "content": json.loads(content)}
            else:
                print(f"# bot {name}: message {part}/{len(bodies)}, {len(encode_body(body))} bytes")
            print(json.dumps(body, ensure_ascii=False, indent=2))
    return 0


def _send_test(args: argparse.Namespace) -> int:
    from . import bootstrap
    from . import config as config_module
    from .accept import find_bot
    from .delivery.oneshot import send_once
    from .notify.outcome import Outcome
    from .samples import firing
    from .send import explain_refusal

    config = config_module.load(args.config)
    bot = find_bot(config, args.bot)
    if not bot.sends:
        raise BridgeError(f"bot {bot.name!r} is a dry-run bot (no webhook URL or app, or dry_run: true): nothing to "
                          "send to")
    card = bootstrap.build_renderer(config).render(firing(), bot)[0]
    def waiting() -> None:
        print(f"bot {bot.name}: the running service holds its lease; waiting for it to send the test card in turn",
              file=sys.stderr)

    store = bootstrap.build_store(config)
    channel = bootstrap.build_channel(tokens=store, users=store)
    result, by_service = send_once(store, channel, bot, card, clock=store.clock, on_wait=waiting)
    where = f"bot {bot.name} ({bot.webhook_url or f'app {bot.app.name}, chat {bot.chat_id}'})"
    if result.outcome is Outcome.SENT:
        print(f"{where}: sent; Feishu accepted the test card")
        return 0
    explain_refusal(where + ":", result)
    if by_service and result.outcome is Outcome.RETRY:
        print("  the running service keeps the test card and tries again (see: feishu-alert-bridge outbox list)",
              file=sys.stderr)
    return 1


def _send(args: argparse.Namespace) -> int:
    from .send import run

    if args.direct and args.url:
        raise BridgeError("--url and --direct exclude each other: --direct sends without a bridge")
    return run(args)


def _open_outbox(config_path: str | None):
    from . import bootstrap
    from . import config as config_module

    config = config_module.load(config_path)
    if config.storage.path is not None and not config.storage.path.exists():
        raise BridgeError(f"no outbox at {config.storage.path} (storage.path): has the service run with this config?")
    return bootstrap.build_store(config)


def _outbox_list(args: argparse.Namespace) -> int:
    import json
    import time

    entries = _open_outbox(args.config).list(dead=True if args.dead else None)
    if args.json:
        for entry in entries:
            print(json.dumps(entry.as_dict(), ensure_ascii=False))
        return 0
    if not entries:
        print("no dead letters" if args.dead else "the outbox is empty: nothing waiting, no dead letters")
        return 0
    now = time.time()
    print(f"{'ID':>6}  {'BOT':<16} {'STATE':<8} {'PART':>5} {'TRIES':>5} {'AGE':>7}  REASON")
    for e in entries:
        part = f"{e.part}/{e.parts or '?'}"      # ? until rendered, at its first send
        reason = " ".join(str(x) for x in (e.reason, f"code {e.code}" if e.code is not None else None,
                                           e.detail) if x)
        print(f"{e.id:>6}  {e.bot:<16} {e.state:<8} {part:>5} {e.attempts:>5} "
              f"{_age(now - e.created):>7}  {reason}")
    return 0


def _age(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _outbox_retry(args: argparse.Namespace) -> int:
    outbox = _open_outbox(args.config)
    if args.all_dead:
        count = outbox.retry_all_dead()
        print(f"{count} dead letter{'s' if count != 1 else ''} queued again")
        return 0
    if outbox.retry(args.id) == 0:
        raise BridgeError(f"no dead letter with id {args.id} (see: feishu-alert-bridge outbox list --dead)")
    print(f"dead letter {args.id} queued again")
    return 0
