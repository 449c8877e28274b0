"""A stand-in for the carriers' REST APIs on loopback: what a gateway's call commands reach in tests and
load tests.

Telnyx answers a call with a REST command (`answer` with the stream URL and token), and both carriers
take transfer and hang-up commands over REST, so whoever plays the carrier must also receive them. Point
the gateway's `twilio_api_base` / `telnyx_api_base` at `CarrierApiRecorder.url`. It answers every POST
with 200 `{}` (or what `reply` says), keeps the requests for tests (`keep=False` for a long load test),
and hands each one to `on_request`, called on the server's own thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["ApiRequest", "CarrierApiRecorder"]

MAX_BODY_BYTES = 1 << 20  # a call command is a few hundred bytes


@dataclass
class ApiRequest:
    at: float  # monotonic time it arrived
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))

    def json(self) -> Any:
        return json.loads(self.body)


class CarrierApiRecorder:
    """A loopback HTTP server that records every request and answers 200 `{}` (or what `reply` says)."""

    def __init__(self, port: int = 0, *, keep: bool = True,
                 on_request: Callable[[ApiRequest], None] | None = None) -> None:
        self.requests: list[ApiRequest] = []
        self.reply: tuple[int, dict[str, Any]] = (200, {})
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                if not 0 <= length <= MAX_BODY_BYTES:
                    self.send_error(413)
                    return
                request = ApiRequest(time.monotonic(), "POST", self.path,
                                     {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                if keep:
                    recorder.requests.append(request)
                if on_request is not None:
                    on_request(request)
                status, payload = recorder.reply
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="carrier-api", daemon=True)

    def start(self) -> CarrierApiRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    async def wait_for(self, path_part: str, within_s: float) -> ApiRequest:
        """The first kept request whose path contains `path_part`; TimeoutError after `within_s`."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for request in self.requests:
                if path_part in request.path:
                    return request
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no request to {path_part!r} within {within_s} s; got {[r.path for r in self.requests]}")
