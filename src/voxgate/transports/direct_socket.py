"""A WebSocket's media path without ASGI's per-message round trip: the `voxgate.direct_socket` extension.

A phone call is 50 small messages a second each way. Through ASGI every one of them is queued, the
reading paused until the app's task wakes to take it and resumed after, and every send is a coroutine
round trip through the server: about 9 µs of the ~14 µs a media message costs the server on top of
its parsing. `DirectWebSocketProtocol` is uvicorn's own WebSocket protocol (websockets-sansio) that
offers each accepted connection a `DirectSocket` in `scope["extensions"]`; an app that takes it
(the carrier bridge, transports/carrier_call.py) gets each message by a plain call from
`data_received` and writes frames straight to the transport. Once it does, the common frame (a
whole, masked text or binary message within the size limit) is parsed here in a few lines; any other
frame (ping, pong, close, fragments, anything oversized or malformed) goes, whole and in order, to
uvicorn's websockets parser, so the handshake, keep-alive, close and size limits stay uvicorn's. An
app served without this protocol (another ASGI server) finds no extension and keeps the ASGI path:
the extension is an optimisation only. One difference: a direct receiver gets text as bytes,
unchecked for UTF-8 (the carrier codecs' JSON parser refuses bad UTF-8 as bad JSON).

    direct = websocket.scope["extensions"].get(EXTENSION)      # after websocket.accept()
    direct.deliver_to(on_message, on_disconnect)               # messages now arrive as calls
    direct.send_text(text)                                     # when direct.writable
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

__all__ = ["EXTENSION", "UVICORN_WS", "DirectSocket", "DirectWebSocketProtocol"]

EXTENSION = "voxgate.direct_socket"
UVICORN_WS = "voxgate.transports.direct_socket:DirectWebSocketProtocol"  # uvicorn's `ws` setting


def _frame_header(opcode: int, length: int) -> bytes:
    """RFC 6455 §5.2 header of a final, unmasked frame (a server never masks)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 1 << 16:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


class DirectSocket:
    """One accepted WebSocket, read by callback and written without awaiting."""

    def __init__(self, protocol: DirectWebSocketProtocol) -> None:
        self._protocol = protocol
        self._receiver: Callable[[bytes], None] | None = None
        self._on_disconnect: Callable[[int], None] | None = None
        self.disconnected = False

    @property
    def active(self) -> bool:
        return self._receiver is not None

    def deliver_to(self, receiver: Callable[[bytes], None], on_disconnect: Callable[[int], None]) -> None:
        """From now on every message (text as UTF-8 bytes) goes to `receiver`, and the end of the
        connection to `on_disconnect(code)`, both called from the event loop's I/O callback: they must
        not block, and should not raise (an exception is logged and the message lost).

        Messages the ASGI queue already holds are handed over first, in order.
        """
        protocol = self._protocol
        self._receiver, self._on_disconnect = receiver, on_disconnect
        queued = protocol.queue
        protocol.queue = _DisconnectOnly(self)  # type: ignore[assignment]
        while not queued.empty():
            protocol.queue.put_nowait(queued.get_nowait())
        if protocol.read_paused:  # ASGI paused reading until the app took its message: nothing to wait for now
            protocol.read_paused = False
            protocol.transport.resume_reading()

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is over its high-water mark (the peer is not reading)."""
        return self._protocol.writable.is_set()

    async def wait_writable(self) -> None:
        await self._protocol.writable.wait()

    def send_text(self, text: str) -> None:
        """Write one text message now; ConnectionError once the connection is closing or gone."""
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected or protocol.transport.is_closing():
            raise ConnectionError("the WebSocket is closed")
        payload = text.encode()
        protocol.transport.write(_frame_header(0x1, len(payload)) + payload)

    def limit_send_buffer(self, nbytes: int) -> None:
        """Hold at most about `nbytes` for a peer that is not reading, in the kernel and in the transport
        each, so `writable` turns False within seconds of it stopping. (Linux otherwise grows a socket's
        send buffer to 4 MiB even while the peer's window is shut: minutes of phone audio.)"""
        transport = self._protocol.transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)
        transport.set_write_buffer_limits(high=nbytes)

    def pause_reading(self) -> None:
        """Stop reading from the peer (TCP pushes back) until `resume_reading`."""
        if not self._protocol.read_paused and not self.disconnected:
            self._protocol.read_paused = True
            self._protocol.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._protocol.read_paused and not self.disconnected:
            self._protocol.read_paused = False
            self._protocol.transport.resume_reading()

    def _deliver(self, data: bytes) -> None:
        assert self._receiver is not None
        try:
            self._receiver(data)
        except Exception:
            self._protocol.logger.exception("voxgate: a direct WebSocket receiver failed; message dropped")

    def _disconnect(self, code: int) -> None:
        if self.disconnected:
            return
        self.disconnected = True
        assert self._on_disconnect is not None
        try:
            self._on_disconnect(code)
        except Exception:
            self._protocol.logger.exception("voxgate: a direct WebSocket disconnect handler failed")


class _DisconnectOnly:
    """Stands in for the protocol's ASGI receive queue once the app reads directly: uvicorn reports every
    way a connection ends by queueing `websocket.disconnect`, so this is where the end is caught."""

    def __init__(self, socket: DirectSocket) -> None:
        self._socket = socket

    def put_nowait(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.disconnect":
            self._socket._disconnect(int(message.get("code", 1005)))
        elif message["type"] == "websocket.receive":
            data = message.get("bytes")
            self._socket._deliver(data if data is not None else message["text"].encode())

    def empty(self) -> bool:
        return True

    async def get(self) -> dict[str, Any]:
        raise RuntimeError("this WebSocket delivers its messages to a DirectSocket receiver, not to ASGI receive()")


# The lane leans on uvicorn's protocol internals (tested against uvicorn 0.54): should a release rename
# them, the extension is simply not offered and media sockets take the ASGI path.
_UVICORN_AS_EXPECTED = all(
    name in WebSocketsSansIOProtocol.__dict__
    for name in ("send_receive_event_to_app", "handle_connect", "data_received", "pause_writing")
)


class DirectWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol, offering `DirectSocket` as an ASGI extension.

    Select it with `uvicorn.run(..., ws=UVICORN_WS)`.
    """

    direct: DirectSocket | None = None
    _unparsed = b""  # the start of a frame whose end has not arrived
    _delegated = False  # an oversized frame went to websockets: the stream is its own from there

    def data_received(self, data: bytes) -> None:
        direct = self.direct
        # websockets' reader may hold the start of a frame from before the app went direct: until it
        # has finished that frame, the stream is not at a frame boundary for us.
        if direct is None or not direct.active or self._delegated or self.conn.reader.buffer:
            super().data_received(data)
            return
        buffer = self._unparsed + data if self._unparsed else data
        end, limit, position = len(buffer), self.config.ws_max_size, 0
        while end - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length, header = second & 0x7F, 2
            if length == 126:
                if end - position < 4:
                    break
                length, header = int.from_bytes(buffer[position + 2:position + 4], "big"), 4
            elif length == 127:
                if end - position < 10:
                    break
                length, header = int.from_bytes(buffer[position + 2:position + 10], "big"), 10
            masked = second & 0x80
            size = header + (4 if masked else 0) + length
            # FIN, no RSV bits, text or binary, masked as clients must, within the size limit: ours.
            if first in (0x81, 0x82) and masked and length <= limit:
                if end - position < size:
                    break
                mask_at = position + header
                payload = apply_mask(buffer[mask_at + 4:mask_at + 4 + length], buffer[mask_at:mask_at + 4])
                position += size
                if not self.close_sent:  # past our close, messages are dropped (as uvicorn does)
                    direct._deliver(payload)
                continue
            if length > limit:  # websockets refuses it and closes; from here on everything is its to read
                self._unparsed, self._delegated = b"", True
                super().data_received(buffer[position:])
                return
            if end - position < size:
                break
            # Any other whole frame is websockets' to judge: it answers pings, closes, joins fragments.
            super().data_received(buffer[position:position + size])
            position += size
        self._unparsed = buffer[position:]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None and _UVICORN_AS_EXPECTED:
            self.direct = DirectSocket(self)
            scope["extensions"][EXTENSION] = self.direct

    def send_receive_event_to_app(self) -> None:
        direct = self.direct
        if direct is None or not direct.active:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if not self.close_sent:  # past our close, messages are dropped (as uvicorn does)
            direct._deliver(bytes(data))


