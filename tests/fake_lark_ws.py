"""A fake of Feishu's long connection, the side lark-oapi 1.7 talks to (bridge/events).

What it is made from: the SDK's client (lark_oapi/ws/client.py, const.py, model.py,
pb/pbbp2_pb2.py in lark-oapi 1.7.5) and ../shared/feishu-app-protocol.md §6.1, §6.5, §6.6.
Feishu documents no part of this wire; the SDK is its only description.

- `POST /callback/ws/endpoint` with `{"AppID", "AppSecret"}` answers `{"code": 0, "data":
  {"URL": "ws://…?device_id=…&service_id=…&ticket=…", "ClientConfig": {…}}}`. Strict: an
  unknown app id or a wrong secret is refused with a non-zero code (Feishu's real code for
  it is not documented anywhere; the SDK raises ClientException for every code but 0, 1
  and 1000040343, so the value matters only to the message), and the ticket in the URL
  is good for one websocket only.
- Over the websocket: protobuf `Frame`s. A push is a DATA frame (method 1) with the headers
  type (event | card), message_id, trace_id, sum, seq and a JSON payload; the client answers
  with the same frame whose payload is `{"code": 200, "data": base64(JSON answer)}` (its
  ACK). A CONTROL ping (method 0, type ping) is answered with a pong.
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from lark_oapi.ws.pb.pbbp2_pb2 import Frame
from websockets.asyncio.server import serve

SERVICE_ID = 7
REFUSED_CODE = 1000040351   # not a documented code: see the module doc


class FakeLongConnection:
    def __init__(self, apps: dict[str, str], *, reconnect_interval: int = 1):
        self.apps = apps                                  # app_id -> app_secret
        self.client_config = {"ReconnectCount": -1, "ReconnectInterval": reconnect_interval,
                              "ReconnectNonce": 0, "PingInterval": 120}
        self.endpoint_calls: list[dict] = []
        self.busy = False          # the endpoint answers "system busy" (code 1), as Feishu while down
        self.conns: list = []
        self._tickets: dict[str, str] = {}                # ticket -> app_id, unused ones
        self._acks: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._ws_server = None

    # --- running ---------------------------------------------------------------------

    def start(self) -> "FakeLongConnection":
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        started = threading.Event()
        threading.Thread(target=self._run_ws, args=(started,), daemon=True).start()
        assert started.wait(10), "the fake's websocket server did not start"
        return self

    def _run_ws(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)

        async def main():
            self._ws_server = await serve(self._ws_handler, "127.0.0.1", 0)
            started.set()
            await self._ws_server.serve_forever()

        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        if self._ws_server is not None:
            self.loop.call_soon_threadsafe(self._ws_server.close)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def ws_port(self) -> int:
        return self._ws_server.sockets[0].getsockname()[1]

    # --- what a test does ------------------------------------------------------------

    def open_connections(self) -> list:
        return [c for c in self.conns if c.state.name == "OPEN"]

    def push(self, body: dict, *, frame_type: str = "event", timeout: float = 10.0) -> dict:
        """Send `body` as Feishu pushes a callback, and return the ACK: {"code", "answer"}."""
        conns = self.open_connections()
        assert conns, "no open long connection to push to"
        message_id = secrets.token_hex(8)
        frame = Frame(SeqID=1, LogID=1, service=SERVICE_ID, method=1, payload=json.dumps(body).encode())
        for key, value in (("type", frame_type), ("message_id", message_id), ("trace_id", secrets.token_hex(4)),
                           ("sum", "1"), ("seq", "0")):
            header = frame.headers.add()
            header.key, header.value = key, value
        acks = self._acks.setdefault(message_id, queue.Queue())
        asyncio.run_coroutine_threadsafe(conns[-1].send(frame.SerializeToString()), self.loop).result(5)
        ack = json.loads(acks.get(timeout=timeout).payload)
        data = ack.get("data")
        return {"code": ack["code"], "answer": json.loads(base64.b64decode(data)) if data else None}

    def drop(self) -> None:
        """Close every open websocket from Feishu's side, as a network break would."""
        for conn in self.open_connections():
            asyncio.run_coroutine_threadsafe(conn.close(), self.loop).result(5)

    # --- the endpoint ----------------------------------------------------------------

    def _endpoint(self, body: dict) -> dict:
        self.endpoint_calls.append({"AppID": body.get("AppID")})     # never the secret
        app_id, secret = body.get("AppID"), body.get("AppSecret")
        if self.busy:
            return {"code": 1, "msg": "system busy"}
        if app_id not in self.apps or not secrets.compare_digest(str(secret), self.apps[app_id]):
            return {"code": REFUSED_CODE, "msg": "app id or app secret is invalid"}
        ticket = secrets.token_hex(8)
        with self._lock:
            self._tickets[ticket] = app_id
        url = (f"ws://127.0.0.1:{self.ws_port}/ws/v2?device_id={secrets.token_hex(4)}&service_id={SERVICE_ID}"
               f"&access_key={secrets.token_hex(8)}&ticket={ticket}")
        return {"code": 0, "msg": "ok", "data": {"URL": url, "ClientConfig": self.client_config}}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path != "/callback/ws/endpoint":
                    self.send_error(404)
                    return
                answer = json.dumps(fake._endpoint(json.loads(raw or b"{}"))).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        return Handler

    # --- the websocket ---------------------------------------------------------------

    async def _ws_handler(self, conn) -> None:
        ticket = parse_qs(urlsplit(conn.request.path).query).get("ticket", [""])[0]
        with self._lock:
            known = self._tickets.pop(ticket, None)
        if known is None:
            await conn.close(code=1008, reason="unknown ticket")
            return
        self.conns.append(conn)
        async for message in conn:
            frame = Frame()
            frame.ParseFromString(message)
            headers = {h.key: h.value for h in frame.headers}
            if frame.method == 0 and headers.get("type") == "ping":
                pong = Frame(SeqID=0, LogID=0, service=SERVICE_ID, method=0)
                header = pong.headers.add()
                header.key, header.value = "type", "pong"
                await conn.send(pong.SerializeToString())
            elif frame.method == 1 and headers.get("message_id") in self._acks:
                self._acks[headers["message_id"]].put(frame)
