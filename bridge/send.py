"""`feishu-alert-bridge send`: one message to a bot, from a cron job, a CI step or a script.

By default it posts to a running bridge's POST /send/<bot> (--url, credentials from the
environment), so the message waits its turn in the outbox with the alerts, within the
bot's rate limits, with retries. With --direct it needs no bridge: it prepares the
message exactly as the relay would (keyword, mentions, parts; bridge.relay.prepare),
signs and sends each part itself with the bridge's Feishu client, and explains Feishu's
answer in words. Exit status 0 only when the message was accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from .errors import BridgeError, PayloadError

if TYPE_CHECKING:
    from .config import Bot
    from .notify import Channel
    from .notify.outcome import SendResult

ENV_URL = "BRIDGE_URL"
ENV_TOKEN = "BRIDGE_TOKEN"             # the same name config.example.yaml's auth.bearer_token reads
ENV_USERNAME = "BRIDGE_USERNAME"
ENV_PASSWORD = "BRIDGE_PASSWORD"
DEFAULT_URL = "http://127.0.0.1:9095"
# Storing a message takes milliseconds; a bridge that has not answered in this long is not well.
TIMEOUT = 30.0


def run(args: argparse.Namespace) -> int:
    body = request_body(args)
    return direct(args, body) if args.direct else through_bridge(args, body)


def request_body(args: argparse.Namespace) -> dict:
    """The relay request: --text, or the JSON of --file, with --dedupe-key and --mention added."""
    if args.text is not None:
        body: Any = {"text": args.text}
    else:
        body = read_json(args.file)
        if not isinstance(body, dict):
            raise BridgeError(f"{args.file}: expected a JSON object (a message, or a relay request)")
    if args.dedupe_key is not None:
        body["dedupe_key"] = args.dedupe_key
    if args.mention or args.mention_all:
        body["mentions"] = {"users": list(args.mention), "all": args.mention_all}
    return body


def through_bridge(args: argparse.Namespace, body: dict) -> int:
    import requests

    base = (args.url or os.environ.get(ENV_URL) or DEFAULT_URL).rstrip("/")
    where = _shown(base)
    try:
        response = requests.post(f"{base}/send/{quote(args.bot, safe='')}", headers=_headers(),
                                 data=json.dumps(body, ensure_ascii=False).encode("utf-8"), timeout=TIMEOUT)
    except requests.RequestException as exc:
        raise BridgeError(f"cannot reach the bridge at {where}: {type(exc).__name__}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if response.status_code == 200 and answer.get("status") == "accepted":
        if answer.get("duplicate"):
            print(f"bot {args.bot}: already sent within delivery.dedupe_window (dedupe_key); not sent again")
        else:
            count = answer.get("messages")
            print(f"bot {args.bot}: accepted by the bridge at {where}, {count} message{'s' if count != 1 else ''} "
                  "queued for Feishu")
        return 0
    error = answer.get("error") if isinstance(answer, dict) else None
    print(f"bot {args.bot}: not accepted by the bridge at {where} (HTTP {response.status_code}): "
          f"{error or response.reason}", file=sys.stderr)
    if response.status_code == 401:
        print(f"  set {ENV_TOKEN} (bearer), or {ENV_USERNAME} and {ENV_PASSWORD} (basic), as the bridge's auth: "
              "expects", file=sys.stderr)
    return 1


def _headers() -> dict[str, str]:
    headers = {"Content-Type": "application/json; charset=utf-8"}
    token, user = os.environ.get(ENV_TOKEN), os.environ.get(ENV_USERNAME)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user:
        import base64

        pair = f"{user}:{os.environ.get(ENV_PASSWORD, '')}".encode("utf-8")
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    return headers


def _shown(url: str) -> str:
    """The bridge's address without any credentials or query in it."""
    try:
        parts = urlsplit(url)
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{parts.path}" if host else "<invalid url>"


def direct(args: argparse.Namespace, body: dict) -> int:
    from . import bootstrap
    from . import config as config_module
    from .accept import find_bot
    from .relay import prepare, relay_templates

    config = config_module.load(args.config)
    bot = find_bot(config, args.bot)
    if not bot.sends:
        raise BridgeError(f"bot {bot.name!r} is a dry-run bot (no webhook URL, or dry_run: true): nothing to send to")
    try:
        prepared = prepare(config, bootstrap.build_renderer(config), bot, body, relay_templates(config))
    except PayloadError as exc:
        raise BridgeError(f"not sent: {exc}") from None
    return _send_parts(bot, list(prepared.bodies), bootstrap.build_channel())


def _send_parts(bot: Bot, bodies: list[dict], channel: Channel) -> int:
    """Each part in order, within the bot's rate limit; stops at the first not accepted."""
    from .clock import SYSTEM_CLOCK
    from .delivery.pacing import next_allowed
    from .notify.outcome import Outcome

    where = f"bot {bot.name} ({bot.webhook_url})"
    ends: list[float] = []
    for n, message in enumerate(bodies, 1):
        wait = next_allowed(ends, bot.rate_limit, SYSTEM_CLOCK.now()) - SYSTEM_CLOCK.now()
        if wait > 0:
            time.sleep(wait)
        result = channel.send(bot, message)
        ends.insert(0, SYSTEM_CLOCK.now())
        part = f"part {n}/{len(bodies)}" if len(bodies) > 1 else "the message"
        if result.outcome is not Outcome.SENT:
            explain_refusal(f"{where}: {part}", result)
            if n > 1:
                print(f"  parts 1 to {n - 1} were sent; {n} to {len(bodies)} were not", file=sys.stderr)
            elif len(bodies) > 1:
                print(f"  none of the {len(bodies)} parts was sent", file=sys.stderr)
            return 1
    print(f"{where}: sent; Feishu accepted {'all ' + str(len(bodies)) + ' parts' if len(bodies) > 1 else 'it'}")
    return 0


def explain_refusal(what: str, result: SendResult) -> None:
    """Why Feishu did not take `what`, in words, on stderr: the same lines for `send --direct`
    and `send-test`, so that an operator reads one form."""
    code = f"code {result.code}" if result.code is not None else f"HTTP {result.http_status or '-'}"
    print(f"{what} not sent ({code}): {result.advice}", file=sys.stderr)
    if result.detail:
        print(f"  Feishu said: {result.detail}", file=sys.stderr)


def read_json(path: str) -> Any:
    """The JSON in the file `path` names (`-`: standard input), read as the webhooks read a
    body (accept.decode_json); what is wrong with it as a BridgeError naming the file."""
    from .accept import decode_json

    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise BridgeError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return decode_json(raw)
    except PayloadError as exc:
        raise BridgeError(f"{path}: {exc}") from None
