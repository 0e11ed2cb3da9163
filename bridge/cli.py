"""The `feishu-alert-bridge` command (also `python -m bridge`).

Errors are one clear line (or one line per config problem) and a non-zero exit,
never a traceback: 2 for a configuration problem, 1 for anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
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
    parser = argparse.ArgumentParser(
        prog="feishu-alert-bridge",
        description="Receive Alertmanager and Grafana webhooks; send signed Feishu/Lark cards.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the service",
        description="Run the service under gunicorn (or Flask's server with --dev).",
        epilog="example: feishu-alert-bridge serve --config /etc/feishu-alert-bridge/config.yaml --port 9095",
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    serve.add_argument("--log-format", choices=("json", "text"), default=os.environ.get("BRIDGE_LOG_FORMAT", "json"),
                       help="log format (env BRIDGE_LOG_FORMAT; default json)")
    serve.add_argument("--log-level", default=os.environ.get("BRIDGE_LOG_LEVEL", "info"),
                       choices=("debug", "info", "warning", "error"), help="log level (default info)")
    serve.add_argument("--dev", action="store_true", help="use Flask's development server instead of gunicorn")
    serve.set_defaults(run=_serve)

    check = sub.add_parser(
        "check-config", help="validate a config file and its templates",
        description="Validate the config and render every bot's template against built-in sample alerts. "
                    "Exit 0 when all is well, 2 with every problem and its key path otherwise.",
        epilog="example: feishu-alert-bridge check-config /etc/feishu-alert-bridge/config.yaml",
    )
    check.add_argument("path", metavar="PATH", help="config file")
    check.set_defaults(run=_check_config)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from . import config as config_module
    from .logs import configure

    log = configure(args.log_format, args.log_level)
    config = config_module.load(args.config)  # fail fast, before any worker starts
    log.info("starting", extra={"event": "starting", "config": config.source, "bots": list(config.bots),
                                "dry_run_bots": [b.name for b in config.bots.values() if not b.sends]})
    if args.dev:
        from .app import create_app

        create_app(config, logger=log).run(host=args.host, port=args.port, threaded=True)
        return 0
    from .server import run

    return run(args.config, host=args.host, port=args.port, workers=args.workers, threads=args.threads,
               log_level=args.log_level)


def _check_config(args: argparse.Namespace) -> int:
    from . import config as config_module
    from .render import Renderer
    from .samples import all_samples
    from .errors import TemplateError

    config = config_module.load(args.path)
    renderer = Renderer(config.templates_dir, config.timezone)
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
    return 0
