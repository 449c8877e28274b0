"""A stand-in for OpenAI's SIP call control on loopback, for the tests of agents behind OpenAI's SIP.

OpenAI itself cannot run here. This serves the same routes and bodies as the reference says
(../shared/reference/realtime-protocol.md §1.2-1.4), on one port, in the test's own event loop:

    POST /v1/realtime/calls/{call_id}/{accept|reject|refer|hangup}   recorded; 200, empty body
    WS   /v1/realtime?call_id=...                                     the call's sideband: the test plays
                                                                      OpenAI's side through a `Sideband`

A call id the test has not `ring`-ed, or has `end`-ed, is refused at the sideband handshake with 404
`call_id_not_found`, as OpenAI does. `hold_accepts` makes accepts hang without an answer (an upstream that
never answers), `refuse_refers` answers a refer 409. The end-to-end test
(tests/integration/test_openai_sip_e2e.py) has a real voxgate play OpenAI instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


@dataclass
class ControlRequest:
    call_id: str
    action: str
    body: Any
    authorization: str


class Sideband:
    """One sideband connection, as OpenAI's end of it."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.authorization = websocket.headers.get("authorization", "")
        self.received: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.closed = asyncio.Event()

    async def send(self, event: dict[str, Any]) -> None:
        await self.websocket.send_text(json.dumps(event))

    async def receive(self, timeout_s: float = 20.0) -> dict[str, Any]:
        """The next client event the gateway sent; AssertionError if the socket closed first."""
        event = await asyncio.wait_for(self.received.get(), timeout_s)
        assert event is not None, "the sideband closed"
        return event

    async def receive_type(self, kind: str, timeout_s: float = 20.0) -> dict[str, Any]:
        while True:
            event = await self.receive(timeout_s)
            if event["type"] == kind:
                return event

    async def reply(self, response_id: str) -> None:
        """The model answers what the gateway asked for: a response created and done."""
        await self.send({"type": "response.created", "response": {"id": response_id}})
        await self.send({"type": "response.done", "response": {"id": response_id, "status": "completed"}})

    async def tool_turn(self, call_id: str, name: str, arguments: str) -> dict[str, Any]:
        """The model calls a tool: the function_call_output item the gateway sends, once the gateway's
        response.create has followed it."""
        await self.send({"type": "response.function_call_arguments.done", "call_id": call_id, "name": name,
                         "arguments": arguments})
        output = await self.receive_type("conversation.item.create")
        await self.receive_type("response.create")
        item: dict[str, Any] = output["item"]
        return item

    async def drop(self, code: int = 1011) -> None:
        """Close it as a failing upstream would, mid-call."""
        with contextlib.suppress(Exception):
            await self.websocket.close(code)
        self.closed.set()


@dataclass
class StandInOpenAI:
    port: int = 0
    requests: list[ControlRequest] = field(default_factory=list)
    live: set[str] = field(default_factory=set)  # calls whose sideband may attach
    hold_accepts: set[str] = field(default_factory=set)  # calls whose accept is never answered
    refuse_refers: set[str] = field(default_factory=set)  # calls whose refer is answered 409
    _sidebands: dict[str, asyncio.Queue[Sideband]] = field(default_factory=dict)
    _request_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _never: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ring(self, call_id: str) -> None:
        self.live.add(call_id)

    def end(self, call_id: str) -> None:
        self.live.discard(call_id)

    async def sideband(self, call_id: str, timeout_s: float = 20.0) -> Sideband:
        """The next sideband the gateway opens for `call_id`."""
        return await asyncio.wait_for(self._queue(call_id).get(), timeout_s)

    async def request(self, call_id: str, action: str, timeout_s: float = 20.0) -> ControlRequest:
        """The first `action` request for `call_id`, once it has arrived."""
        async with asyncio.timeout(timeout_s):
            while True:
                for request in self.requests:
                    if (request.call_id, request.action) == (call_id, action):
                        return request
                self._request_arrived.clear()
                await self._request_arrived.wait()

    def _queue(self, call_id: str) -> asyncio.Queue[Sideband]:
        return self._sidebands.setdefault(call_id, asyncio.Queue())

    async def _control(self, request: Request) -> Response:
        call_id, action = request.path_params["call_id"], request.path_params["action"]
        raw = await request.body()
        self.requests.append(ControlRequest(call_id, action, json.loads(raw) if raw else None,
                                            request.headers.get("authorization", "")))
        self._request_arrived.set()
        if action == "accept" and call_id in self.hold_accepts:
            await self._never.wait()  # never answers; the gateway's timeout must end it
        if action == "refer" and call_id in self.refuse_refers:
            return JSONResponse({"error": {"type": "invalid_request_error", "code": "refer_failed",
                                           "message": "The trunk declined the REFER."}}, status_code=409)
        if call_id not in self.live:
            return JSONResponse({"error": {"type": "invalid_request_error", "code": "call_id_not_found",
                                           "message": "No such call."}}, status_code=404)
        if action in ("hangup", "refer", "reject"):
            self.live.discard(call_id)
        return Response(status_code=200)

    async def _sideband(self, websocket: WebSocket) -> None:
        call_id = websocket.query_params.get("call_id", "")
        if call_id not in self.live:
            await websocket.send_denial_response(JSONResponse(
                {"error": {"type": "invalid_request_error", "code": "call_id_not_found", "message": "No call."}},
                status_code=404))
            return
        await websocket.accept()
        peer = Sideband(websocket)
        await peer.send({"type": "session.created", "event_id": "event_0",
                         "session": {"type": "realtime", "object": "realtime.session", "id": "sess_x"}})
        self._queue(call_id).put_nowait(peer)
        try:
            while True:
                peer.received.put_nowait(json.loads(await websocket.receive_text()))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            peer.received.put_nowait(None)
            peer.closed.set()

    async def start(self) -> StandInOpenAI:
        if not self.port:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
        app = Starlette(routes=[
            Route("/v1/realtime/calls/{call_id}/{action}", self._control, methods=["POST"]),
            WebSocketRoute("/v1/realtime", self._sideband),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off", ws="websockets-sansio"))
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._never.set()
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
