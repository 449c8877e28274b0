"""The sideband: an app server's WebSocket to `/v1/realtime?call_id=...`, joined to a live call's session.

It is the ordinary Realtime protocol on a call whose audio flows elsewhere (a browser's peer connection,
a SIP call's RTP): the app sees the call's events (never its audio) and steers it with client events
(`session.update`, `response.create`, `conversation.item.create` with a `function_call_output`,
`response.cancel`). A function call the model makes whose tool is not a gateway tool waits for the app's
output, as for a WebSocket client. Several may attach; one that drops leaves the call running, and the app
may attach again. A key that may not act on the call (`Principal.sees`), and an ephemeral key, are
answered as OpenAI answers them: 404 `call_id_not_found`, 403.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Protocol

from starlette.websockets import WebSocket

from voxgate.control.problems import problem
from voxgate.protocol import server_events as se
from voxgate.protocol.dialect import dialect_from_handshake
from voxgate.protocol.items import Dialect
from voxgate.session.outbound import Outbound
from voxgate.transports.realtime_ws import pump_outbound, read_client_events

if TYPE_CHECKING:
    from voxgate.gateway import Gateway, Principal
    from voxgate.session.session import Session

__all__ = ["Sideband", "SidebandCall", "attach_sideband", "sideband_call"]


class Sideband:
    """An app server's WebSocket joined to a live call: the call's events out, its events in."""

    def __init__(self, websocket: WebSocket, dialect: Dialect, max_events: int) -> None:
        self.websocket = websocket
        self.dialect: Dialect = dialect
        self.outbound = Outbound(max_events)  # control events only; a reader that stalls is cut off


class SidebandCall(Protocol):
    """A live call a sideband may join (a WebRTC call, an app-controlled SIP call)."""

    @property
    def session(self) -> Session | None: ...

    @property
    def owner(self) -> str | None: ...

    @property
    def sidebands(self) -> set[Sideband]: ...

    async def wait_ended(self) -> None: ...


def _gateway(websocket: WebSocket) -> Gateway:
    # not `gateway_of`: the gateway module imports the SIP phone, whose calls import this module
    gateway: Gateway = websocket.app.state.gateway
    return gateway


def sideband_call(websocket: WebSocket, call_id: str) -> SidebandCall | None:
    """The live call with this id, on any transport that has sidebands."""
    from voxgate.transports.webrtc import calls_of

    webrtc = calls_of(websocket.app.state).get(call_id)
    if webrtc is not None:
        return webrtc
    phone = _gateway(websocket).sip
    return phone.controlled.get(call_id) if phone is not None else None


def broadcast(sidebands: set[Sideband], event: se.ServerEvent) -> None:
    for sideband in list(sidebands):
        sideband.outbound.put(event)


async def attach_sideband(websocket: WebSocket, principal: Principal) -> None:
    """`/v1/realtime?call_id=...`: join a live call's session until the call or the socket ends; refused
    at the handshake otherwise."""
    call_id = websocket.query_params.get("call_id", "")
    if principal.kind == "ephemeral":
        await websocket.send_denial_response(
            problem(403, "ephemeral_key_not_allowed", "A sideband connection needs an API key."))
        return
    call = sideband_call(websocket, call_id)
    session = call.session if call is not None else None
    if call is None or session is None or session.closed or not principal.sees(call.owner):
        await websocket.send_denial_response(problem(404, "call_id_not_found", f"No live call {call_id!r}."))
        return
    subprotocols = list(websocket.scope.get("subprotocols") or [])
    headers = {k.lower(): v for k, v in websocket.headers.items()}
    sideband = Sideband(websocket, dialect_from_handshake(headers, subprotocols),
                        _gateway(websocket).settings.outbound_queue_events)
    await websocket.accept(subprotocol="realtime" if "realtime" in subprotocols else None)
    sideband.outbound.put(se.SessionCreated(session=session.config))
    call.sidebands.add(sideband)
    writer = asyncio.create_task(pump_outbound(sideband.outbound, websocket, sideband.dialect))
    reader = asyncio.create_task(read_client_events(session, websocket))
    call_over = asyncio.create_task(call.wait_ended())
    # A reader that stalls is cut off even while the writer waits on it (a socket, or a tunnel's credit).
    overflow = asyncio.create_task(sideband.outbound.overflow.wait())
    try:
        await asyncio.wait({writer, reader, call_over, overflow}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        call.sidebands.discard(sideband)
        sideband.outbound.close()
        reader.cancel()
        call_over.cancel()
        overflow.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(writer, timeout=2.0)
        with contextlib.suppress(Exception):
            await websocket.close(1008 if sideband.outbound.overflowed else 1000)
