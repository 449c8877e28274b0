"""A WebSocket carried over Redis to the node holding its call: a sideband that reached another node.

    client ==WS==> node X (the key checked here)  --Redis-->  holder H: its own app runs the route
           <=====                                 <--Redis--  (the key again, the call's owner, its events)

X publishes an `Opening` (the handshake: path, query, headers, subprotocols, the client's address) to
H's tunnel channel. H runs the WebSocket through its own app over ASGI (`serve_through`), as if the
client had reached it, the scope marked RELAYED so it is served there and never carried again; X plays
H's app towards its client (`carry`). Every ASGI message either side produces travels as a `Frame`: H's
accept (its subprotocol) or refusal (status, headers, body), its events, its close code; the client's
frames and its close code. So the client gets exactly what H's route decides.

Back-pressure: an end may have WINDOW frames unacknowledged; the receiving end grants more (`Credit`)
as its side consumes them. A client that stops reading stops X's sends to it, then H's credit, then H's
writer, whose bounded queue cuts the sideband off (1008) as it would a local one; frames up wait alike.
An end that hears nothing for `idle_s` checks the other node's heartbeat, and ends the tunnel (1011 to
a client) once that node is gone. Frames of one direction are published by one task, each awaited, so
they arrive in order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxgate.cluster.relay import (
    RELAYED,
    VERSION,
    Headers,
    MalformedRelay,
    binary_in,
    headers_in,
    headers_out,
    relay_message,
    unreachable,
)

__all__ = ["CLIENT_MESSAGES", "SERVER_MESSAGES", "WINDOW", "Credit", "Ended", "Frame", "Opening", "TunnelEnd",
           "TunnelLost", "carry", "serve_through", "to_wire", "tunnel_message"]

log = logging.getLogger("voxgate.cluster")

WINDOW = 64  # frames an end may send before the other grants more
# The ASGI messages each way: what a client's side sends the app, what the app sends the client.
CLIENT_MESSAGES = frozenset({"websocket.receive", "websocket.disconnect"})
SERVER_MESSAGES = frozenset({"websocket.accept", "websocket.send", "websocket.close",
                             "websocket.http.response.start", "websocket.http.response.body"})
CLOSING = frozenset({"websocket.close", "websocket.disconnect"})  # sent whatever the credit: the last frame
LOST_CODE = 1011  # to a client whose call's node went away (or answered nothing)
CLOSE_GRACE_S = 2.0  # what the holder sent before its close may take this long to reach a slow client


class TunnelLost(ConnectionError):
    """The other end is gone: its node stopped listening or lost its heartbeat, or Redis failed.
    (A ConnectionError, so Starlette takes it as a dropped socket: WebSocketDisconnect 1006.)"""


# -- the wire format ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opening:
    """A client's handshake, carried from the node it reached (`node`) to the call's node."""

    tunnel: str
    node: str  # the opening node: where frames for the client go, and whose heartbeat the holder watches
    path: str
    query: bytes
    headers: Headers
    subprotocols: list[str]
    client: str | None

    @classmethod
    def of(cls, websocket: WebSocket, tunnel: str, node: str) -> Opening:
        return cls(tunnel=tunnel, node=node, path=websocket.url.path, query=websocket.scope.get("query_string", b""),
                   headers=list(websocket.scope["headers"]),
                   subprotocols=[str(s) for s in websocket.scope.get("subprotocols") or []],
                   client=websocket.client.host if websocket.client else None)

    def scope(self) -> dict[str, Any]:
        """The ASGI WebSocket scope the holder's app serves this client in."""
        return {"type": "websocket", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "ws",
                "path": self.path, "raw_path": self.path.encode(), "root_path": "", "query_string": self.query,
                "headers": self.headers, "subprotocols": self.subprotocols, "client": (self.client or "relay", 0),
                "server": None, "state": {}, "extensions": {"websocket.http.response": {}}, RELAYED: True}


@dataclass(frozen=True, slots=True)
class Frame:
    """One ASGI WebSocket message from one end's side to the other's."""

    tunnel: str
    message: Message


@dataclass(frozen=True, slots=True)
class Credit:
    """The receiving end consumed `frames` more: the sender may send as many more."""

    tunnel: str
    frames: int


@dataclass(frozen=True, slots=True)
class Ended:
    """This end is done: its side finished, or its client went away."""

    tunnel: str


TunnelMessage = Opening | Frame | Credit | Ended


def _asgi_out(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"type": message["type"]}
    for name in ("text", "reason", "subprotocol"):
        if message.get(name) is not None:
            out[name] = str(message[name])
    for name in ("code", "status"):
        if message.get(name) is not None:
            out[name] = int(message[name])
    for name in ("bytes", "body"):
        if message.get(name) is not None:
            out[name] = base64.b64encode(bytes(message[name])).decode()
    if message.get("headers") is not None:
        out["headers"] = headers_out([(bytes(k), bytes(v)) for k, v in message["headers"]])
    if message.get("more_body"):
        out["more_body"] = True
    return out


def _asgi_in(raw: Any) -> Message:
    if not isinstance(raw, dict) or raw.get("type") not in CLIENT_MESSAGES | SERVER_MESSAGES:
        raise MalformedRelay("frame is not an ASGI WebSocket message")
    message: Message = {"type": raw["type"]}
    for name in ("text", "reason", "subprotocol"):
        if name in raw:
            if not isinstance(raw[name], str):
                raise MalformedRelay(f"{name} must be a string")
            message[name] = raw[name]
    for name in ("code", "status"):
        if name in raw:
            if isinstance(raw[name], bool) or not isinstance(raw[name], int):
                raise MalformedRelay(f"{name} must be an integer")
            message[name] = raw[name]
    for name in ("bytes", "body"):
        if name in raw:
            message[name] = binary_in(raw[name], name)
    if "headers" in raw:
        message["headers"] = headers_in(raw["headers"])
    if message["type"] == "websocket.http.response.body":
        message.setdefault("body", b"")
        message["more_body"] = raw.get("more_body") is True
    return message


def to_wire(message: TunnelMessage) -> str:
    wire: dict[str, Any] = {"v": VERSION, "id": message.tunnel}
    if isinstance(message, Opening):
        wire |= {"kind": "open", "node": message.node, "path": message.path, "query": message.query.decode("latin-1"),
                 "headers": headers_out(message.headers), "subprotocols": message.subprotocols,
                 "client": message.client}
    elif isinstance(message, Frame):
        wire |= {"kind": "frame", "message": _asgi_out(message.message)}
    elif isinstance(message, Credit):
        wire |= {"kind": "credit", "frames": message.frames}
    else:
        wire |= {"kind": "end"}
    return json.dumps(wire)


def tunnel_message(data: bytes | str) -> TunnelMessage:
    """A tunnel message from the wire; MalformedRelay for anything else."""
    m = relay_message(data)
    kind, tunnel = m.get("kind"), m["id"]
    if kind == "frame":
        return Frame(tunnel, _asgi_in(m.get("message")))
    if kind == "credit":
        frames = m.get("frames")
        if isinstance(frames, bool) or not isinstance(frames, int) or not 0 < frames <= WINDOW:
            raise MalformedRelay("credit must be a count of frames")
        return Credit(tunnel, frames)
    if kind == "end":
        return Ended(tunnel)
    if kind == "open":
        node, path, query, subprotocols, client = (m.get("node"), m.get("path"), m.get("query", ""),
                                                   m.get("subprotocols", []), m.get("client"))
        if not (isinstance(node, str) and node and isinstance(path, str) and path.startswith("/")
                and isinstance(query, str) and isinstance(subprotocols, list)
                and all(isinstance(s, str) for s in subprotocols)):
            raise MalformedRelay("open needs node, an absolute path, query and subprotocols")
        return Opening(tunnel=tunnel, node=node, path=path, query=query.encode("latin-1"),
                       headers=headers_in(m.get("headers", [])), subprotocols=subprotocols,
                       client=client if isinstance(client, str) else None)
    raise MalformedRelay(f"unknown tunnel message kind {kind!r}")


# -- one end ------------------------------------------------------------------------------------------------


class TunnelEnd:
    """One end of a tunnel: frames to the other end within its credit, the other end's frames in order.

    `publish` sends a wire message to the other end's node (the number of listeners back); `peer_alive`
    says whether that node still beats. The node's listener hands this end what arrives (`delivered`).
    """

    def __init__(self, tunnel: str, publish: Callable[[str], Awaitable[int]],
                 peer_alive: Callable[[], Awaitable[bool]], idle_s: float, accepts: frozenset[str]) -> None:
        self.tunnel = tunnel
        self._publish = publish
        self._peer_alive = peer_alive
        self._idle_s = idle_s
        self._accepts = accepts
        self._inbox: deque[Message] = deque()
        self._arrived = asyncio.Event()
        self._credit = WINDOW
        self._credited = asyncio.Event()
        self._consumed = 0
        self.ended = False  # the other end is done or gone: nothing more comes, nothing more goes
        self.closing = asyncio.Event()  # the other end sent its close (kept in `close`), ended or is gone
        self.close: Message | None = None

    def delivered(self, message: Frame | Credit | Ended) -> None:
        """What the other end sent (from the node's listener, in order)."""
        if isinstance(message, Frame):
            if message.message["type"] not in self._accepts or len(self._inbox) >= 2 * WINDOW:
                log.warning("tunnel %s: unexpected %s from the other node; ended", self.tunnel,
                            message.message["type"])
                self.lose()
                return
            self._inbox.append(message.message)
            self._arrived.set()
            if message.message["type"] in CLOSING:
                self.close = message.message
                self.closing.set()
        elif isinstance(message, Credit):
            self._credit += message.frames
            self._credited.set()
        else:
            self.lose()

    def lose(self) -> None:
        """The other end is over: wake whoever waits on it."""
        self.ended = True
        self._arrived.set()
        self._credited.set()
        self.closing.set()

    async def _wait(self, event: asyncio.Event) -> None:
        """Until `event` is set, or the other node stops beating (this end is then lost)."""
        while not event.is_set():
            try:
                async with asyncio.timeout(self._idle_s):
                    await event.wait()
            except TimeoutError:
                if not await self._peer_alive():
                    self.lose()

    async def _send_wire(self, message: TunnelMessage) -> None:
        try:
            listeners = await self._publish(to_wire(message))
        except OSError as exc:  # the node's publish raises TunnelLost for Redis's own errors too
            self.lose()
            raise TunnelLost(str(exc)) from exc
        if not listeners:
            self.lose()
            raise TunnelLost("the other node no longer listens")

    async def send(self, message: Message) -> None:
        """One ASGI message to the other end's side, once it has room for it (a close at once)."""
        while self._credit <= 0 and not self.ended and message["type"] not in CLOSING:
            self._credited.clear()
            await self._wait(self._credited)
        if self.ended:
            raise TunnelLost("the other end has ended")
        self._credit -= 1
        await self._send_wire(Frame(self.tunnel, message))

    async def receive(self) -> Message | None:
        """The other end's next ASGI message; None once it has ended (or its node is gone)."""
        while not self._inbox:
            if self.ended:
                return None
            self._arrived.clear()
            await self._wait(self._arrived)
        message = self._inbox.popleft()
        self._consumed += 1
        if self._consumed >= WINDOW // 2 and not self.ended:
            grant, self._consumed = self._consumed, 0
            with contextlib.suppress(TunnelLost):  # seen by the next send or receive
                await self._send_wire(Credit(self.tunnel, grant))
        return message

    async def end(self) -> None:
        """Tell the other end this one is done (once; best effort: it also sees this node's heartbeat)."""
        if not self.ended:
            self.ended = True
            with contextlib.suppress(TunnelLost):
                await self._send_wire(Ended(self.tunnel))


# -- the holder's side: its app, fed from the tunnel -----------------------------------------------------------


async def serve_through(app: ASGIApp, opening: Opening, end: TunnelEnd) -> None:
    """Run the carried WebSocket through this node's app: the client's frames in, the app's out."""
    connected = False

    async def receive() -> Message:
        nonlocal connected
        if not connected:  # the handshake itself arrived with the opening
            connected = True
            return {"type": "websocket.connect"}
        message = await end.receive()
        return message if message is not None else {"type": "websocket.disconnect", "code": 1006}

    async def send(message: Message) -> None:
        await end.send(message)

    try:
        await app(opening.scope(), receive, send)
    except TunnelLost:
        pass
    except Exception:
        log.exception("carried WebSocket %s %s failed", opening.path, opening.tunnel)
    finally:
        await end.end()


# -- the client's side: this node plays the holder's app towards the client -------------------------------------


async def _client_frames(websocket: WebSocket, end: TunnelEnd) -> None:
    """The client's frames and its close, to the holder, each once the holder has room for it."""
    try:
        while True:
            message = await websocket.receive()
            await end.send(message)
            if message["type"] == "websocket.disconnect":
                return
    except TunnelLost:
        end.lose()  # `carry` closes the client
    except (OSError, RuntimeError, WebSocketDisconnect):  # the client's side failed: the holder hears it left
        with contextlib.suppress(TunnelLost):
            await end.send({"type": "websocket.disconnect", "code": 1006})
        end.lose()


async def carry(websocket: WebSocket, end: TunnelEnd) -> None:
    """Answer `websocket` with what the holder's app does: its accept or refusal, its frames, its close."""
    upward: list[asyncio.Task[None]] = []

    async def downward() -> None:
        while (message := await end.receive()) is not None:
            if message["type"] == "websocket.accept":
                await websocket.accept(subprotocol=message.get("subprotocol"), headers=message.get("headers"))
                upward.append(asyncio.get_running_loop().create_task(_client_frames(websocket, end)))
            else:
                await websocket.send(message)  # an event, a close, a refusal
            if websocket.application_state == WebSocketState.DISCONNECTED:  # closed, or refused in full
                return

    frames = asyncio.get_running_loop().create_task(downward())
    closing = asyncio.get_running_loop().create_task(end.closing.wait())
    try:
        await asyncio.wait({frames, closing}, return_when=asyncio.FIRST_COMPLETED)
        if not frames.done():  # the holder closed while a slow client still had frames to take
            await asyncio.wait({frames}, timeout=CLOSE_GRACE_S)
    finally:
        for task in (frames, closing, *upward):
            task.cancel()
        for task in (frames, closing, *upward):
            with contextlib.suppress(asyncio.CancelledError, OSError, RuntimeError, WebSocketDisconnect):
                await task  # the client gone: nothing more to tell it
        await end.end()
    with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
        if websocket.application_state == WebSocketState.CONNECTING:  # the holder answered nothing
            await websocket.send_denial_response(unreachable())
        elif websocket.application_state == WebSocketState.CONNECTED:
            close = end.close if end.close is not None and end.close["type"] == "websocket.close" else None
            await websocket.close(close.get("code", 1000) if close else LOST_CODE,
                                  close.get("reason", "") if close else "the node holding the call was lost")
