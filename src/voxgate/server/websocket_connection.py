"""One WebSocket connection: websockets' public sans-IO `ServerProtocol` under a plain asyncio.Protocol.

`HttpConnection` hands a connection over (asyncio's `transport.set_protocol`) once an upgrade request has
arrived whole. From there websockets does the handshake's checks, pings, the close, fragments, size
limits and every odd frame, while the common frame (whole, masked, text or binary) is cut out and
unmasked by `FrameSplitter` (websocket_frames.py) at a third of the cost, and frames to the client are
written as a header and the payload.

The app sees an ordinary ASGI WebSocket (the denial-response extension included), so every route's
checks and refusals are plain Starlette code, and finds the connection itself in
`scope["extensions"][EXTENSION]` as a `DirectSocket`: a call that has 50 small messages a second each
way (a phone call's media) calls `deliver_to` once, after which every message reaches it by a plain call
from `data_received` and `send_text` writes without awaiting. No queue, no task switch, no coroutine per
message: that is what ASGI's shape costs per message, and what the carrier bridge cannot afford.

    socket = websocket.scope["extensions"].get(EXTENSION)   # after websocket.accept()
    socket.deliver_to(on_message, on_disconnect)            # messages now arrive as calls (text as UTF-8 bytes)
    socket.send_text(text)                                  # when socket.writable
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import os
import socket
from collections import deque
from collections.abc import Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from voxgate.server.websocket_frames import MESSAGE_TEXT, FrameSplitter, binary_frame, text_frame
from voxgate.server.write_flow import WriteFlow

if TYPE_CHECKING:
    from voxgate.server.listener import Listener

__all__ = ["EXTENSION", "DirectSocket", "WebSocketConnection"]

log = logging.getLogger("voxgate.server")

EXTENSION = "voxgate.direct_socket"
CLOSE_TIMEOUT_S = 5.0  # after the close handshake began, how long the peer has before the TCP connection is cut
MAX_QUEUED = 16  # messages waiting for the app's ASGI receive() before reading pauses (TCP pushes back)

Message = MutableMapping[str, Any]


class DirectSocket(Protocol):
    """What a call holds once it reads its WebSocket by callback (the `EXTENSION` in the ASGI scope)."""

    def deliver_to(self, receiver: Callable[[bytes], None], on_disconnect: Callable[[int], None]) -> None:
        """From now on every message (text as UTF-8 bytes, unchecked) goes to `receiver`, and the end of the
        connection to `on_disconnect(code)`, both called from the event loop's read callback: they must not
        block, and should not raise (an exception is logged and the message lost). Messages that arrived
        before are handed over first, in order."""
        ...

    @property
    def writable(self) -> bool:
        """False while the transport's buffer is over its high-water mark (the peer is not reading)."""
        ...

    async def wait_writable(self) -> None: ...

    def send_text(self, text: str) -> None:
        """Write one text message now; ConnectionError once the connection is closing or gone."""
        ...

    def send_texts(self, texts: Sequence[str]) -> None:
        """Write these text messages now, in order, in one write to the socket (one system call where a
        frame of audio and its mark go together); ConnectionError as `send_text`."""
        ...

    def limit_send_buffer(self, nbytes: int) -> None:
        """Hold at most about `nbytes` for a peer that is not reading, in the kernel and in the process each."""
        ...

    def pause_reading(self) -> None:
        """Stop reading from the peer (TCP pushes back) until `resume_reading`."""
        ...

    def resume_reading(self) -> None: ...


class WebSocketConnection(asyncio.Protocol):
    """One upgraded TCP connection: ASGI for the handshake and until the app calls `deliver_to`, callbacks
    after. Implements `DirectSocket`."""

    def __init__(self, listener: Listener, transport: asyncio.Transport) -> None:
        self.listener = listener
        self.transport = transport
        # No compression offered: frames to clients are written here, uncompressed. websockets logs on
        # "websockets.server", whose handshake headers at debug level lose their credentials to
        # observability/logs.py's filter.
        self.ws = ServerProtocol(max_size=listener.max_message_bytes)
        self.task: asyncio.Task[None] | None = None  # the app, once the upgrade request is parsed
        self.answered = False  # the handshake's HTTP response (101 or a refusal) has gone out
        self.closing = False  # refused, or the closing handshake has begun: messages are dropped, sends refused
        self.disconnected = False
        # From the 101 on, the stream is cut into frames here; websockets gets the request head and odd frames.
        self._splitter: FrameSplitter | None = None
        self._early = b""  # frames a client sent before the app answered: read once it has
        self._response: Response | None = None  # the 101, sent when the app accepts
        self._denial: tuple[int, list[tuple[str, str]], bytearray] | None = None  # an HTTP refusal being built
        self._queue: deque[Message] = deque()  # ASGI events the app has not received yet
        self._waiter: asyncio.Future[None] | None = None  # the app's receive(), waiting for the queue
        self._receiver: Callable[[bytes], None] | None = None
        self._on_disconnect: Callable[[int], None] | None = None
        self._ended = False  # the end of the connection has been reported to the app
        self._fragments: list[bytes] = []  # a fragmented message so far
        self._fragmented_text = False
        self._read_paused = False
        self._flow = WriteFlow()
        self._timer: asyncio.TimerHandle | None = None  # the close-handshake deadline
        self._ping: asyncio.TimerHandle | None = None  # the next keepalive ping
        self._pong_due = b""  # the payload of a ping not yet answered

    # -- the handover ------------------------------------------------------------------------------

    def open(self, head: bytes, early: bytes) -> None:
        """Begin with the upgrade request's head and whatever the client sent after it."""
        self.listener.connections.add(self)
        self._early = early
        self._websockets_parse(head)

    # -- the guard's view --------------------------------------------------------------------------

    @property
    def evictable(self) -> bool:
        return False  # a WebSocket is a client being served

    def evict(self) -> None:  # pragma: no cover - never evictable
        self.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        splitter = self._splitter
        if splitter is None:  # the app has not answered the upgrade yet: frames wait for its answer
            if not self.closing:
                self._early += data
                if len(self._early) > self.listener.max_message_bytes:
                    self.pause_reading()
            return
        receiver = self._receiver
        for kind, piece in splitter.feed(data):
            if kind:
                if receiver is not None and not self.closing:  # the hot path: a call, nothing queued
                    try:
                        receiver(piece)
                    except Exception:
                        log.exception("a WebSocket's receiver failed; message dropped")
                else:
                    self._message(piece, kind == MESSAGE_TEXT)
            else:
                self._websockets_parse(piece)
                if self.closing and not splitter.delegated:  # after a close, whatever comes is websockets'
                    splitter.delegate()

    def eof_received(self) -> bool | None:
        with contextlib.suppress(EOFError):
            self.ws.receive_eof()
        self._flush()
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.disconnected = True
        self.listener.connections.discard(self)
        self.listener.guard.forget(self)
        for timer in (self._timer, self._ping):
            if timer is not None:
                timer.cancel()
        self._timer = self._ping = None
        with contextlib.suppress(EOFError):
            self.ws.receive_eof()
        self._end(self.ws.close_code or 1006)
        self.resume_writing()  # nobody may wait to write on a connection that is gone

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    # -- DirectSocket ------------------------------------------------------------------------------

    def deliver_to(self, receiver: Callable[[bytes], None], on_disconnect: Callable[[int], None]) -> None:
        self._receiver, self._on_disconnect = receiver, on_disconnect
        queued, self._queue = self._queue, deque()
        for message in queued:
            if message["type"] == "websocket.receive":
                data = message.get("bytes")
                self._deliver(data if data is not None else message["text"].encode())
            elif message["type"] == "websocket.disconnect":
                self._call_on_disconnect(int(message.get("code", 1005)))
        self.resume_reading()  # reading may have paused while the queue was full

    @property
    def writable(self) -> bool:
        return self._flow.writable

    async def wait_writable(self) -> None:
        await self._flow.wait(lambda: self.disconnected)

    def send_text(self, text: str) -> None:
        if self.closing or not self.answered or self.transport.is_closing():
            raise ConnectionError("the WebSocket is closed")
        self.transport.write(text_frame(text))

    def send_texts(self, texts: Sequence[str]) -> None:
        if len(texts) == 1:
            self.send_text(texts[0])
            return
        if self.closing or not self.answered or self.transport.is_closing():
            raise ConnectionError("the WebSocket is closed")
        self.transport.writelines([text_frame(text) for text in texts])

    def limit_send_buffer(self, nbytes: int) -> None:
        # Linux otherwise grows a socket's send buffer to megabytes while the peer's window is shut: minutes of
        # phone audio before `writable` turns False.
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, nbytes)
        self.transport.set_write_buffer_limits(high=nbytes)

    def pause_reading(self) -> None:
        if not self._read_paused and not self.disconnected:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and not self.disconnected:
            self._read_paused = False
            self.transport.resume_reading()

    # -- closing -----------------------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; the connection is cut if the peer has not finished it in time."""
        if self.closing or self.disconnected:
            return
        self.closing = True
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, reason)
        self._flush()
        if self._timer is None and not self.disconnected:
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.abort)

    def stop(self) -> None:
        """The server is stopping: close (1001) and tell the app now, not when the peer has answered."""
        if not self.answered:
            self.abort()
            return
        self.close(1001, "server shutting down")
        self._end(1001)

    def abort(self) -> None:
        if not self.disconnected:
            self.transport.abort()

    # -- the handshake, over ASGI ------------------------------------------------------------------

    def _upgrade(self, request: Request) -> None:
        """The upgrade request is parsed: websockets checks it, then the app accepts or refuses it."""
        response = self.ws.accept(request)
        if response.status_code != 101:  # not a valid WebSocket upgrade: websockets says why
            self._answer(response)
            return
        self._response = response
        subprotocols = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol")
                        for p in value.split(",") if p.strip()]
        headers = [(name.lower().encode("latin-1"), value.encode("latin-1", "surrogateescape"))
                   for name, value in request.headers.raw_items()]
        scope = self.listener.scope("websocket", self.transport, request.path, headers, "1.1")
        scope["subprotocols"] = subprotocols
        scope["extensions"] = {"websocket.http.response": {}, EXTENSION: self}
        self._queue.append({"type": "websocket.connect"})
        self.task = self.listener.run_app(self._run(scope), "websocket")

    async def _run(self, scope: dict[str, Any]) -> None:
        code = 1000
        try:
            await self.listener.app(scope, self._receive, self._send)
        except Exception:
            log.exception("a WebSocket's handler failed")
            code = 1011
        if not self.answered:
            if code == 1000:
                log.error("a WebSocket's handler returned without accepting or refusing it")
            self._answer(self.ws.reject(http.HTTPStatus.INTERNAL_SERVER_ERROR, "Internal server error.\n"))
        self.close(code)  # the handler is done with it: close if it did not

    async def _receive(self) -> Message:
        while not self._queue:
            if self._receiver is not None:
                raise RuntimeError("this WebSocket delivers its messages to a receiver, not to ASGI receive()")
            if self._ended:  # asked again after the end: the end again, never a wait that cannot finish
                return {"type": "websocket.disconnect", "code": self.ws.close_code or 1006}
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        message = self._queue.popleft()
        if len(self._queue) < MAX_QUEUED:
            self.resume_reading()
        return message

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if not self.answered:
            if kind == "websocket.accept":
                assert self._response is not None
                fields = self._response.headers
                for name, value in message.get("headers") or []:
                    fields[name.decode("latin-1")] = value.decode("latin-1")
                if message.get("subprotocol"):
                    fields["Sec-WebSocket-Protocol"] = message["subprotocol"]
                self._answer(self._response)
            elif kind == "websocket.close":  # closed before accepting: ASGI says that is a 403
                self._answer(self.ws.reject(http.HTTPStatus.FORBIDDEN, ""))
            elif kind == "websocket.http.response.start" and self._denial is None:
                headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers") or []]
                self._denial = (int(message["status"]), headers, bytearray())
            elif kind == "websocket.http.response.body" and self._denial is not None:
                status, headers, body = self._denial
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    self._answer(_http_response(status, headers, bytes(body)))
            else:
                raise RuntimeError(f"unexpected ASGI message {kind!r} before the WebSocket was accepted")
            return
        if kind == "websocket.close":  # idempotent: the peer may have closed first
            self.close(int(message.get("code") or 1000), message.get("reason") or "")
            return
        if self.closing or self.disconnected:
            raise ConnectionError("the WebSocket is closed")
        if kind == "websocket.send":
            await self.wait_writable()
            if self.closing or self.transport.is_closing():
                raise ConnectionError("the WebSocket is closed")
            data, text = message.get("bytes"), message.get("text")
            self.transport.write(binary_frame(data) if data is not None else text_frame(text or ""))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def _answer(self, response: Response) -> None:
        """Send the handshake's HTTP response: the 101, or a refusal (after which the connection closes)."""
        if self.answered:
            return
        self.answered = True
        if response.status_code != 101:
            self.closing = True
            self._end(1006)
        self.ws.send_response(response)
        self._flush()
        if response.status_code == 101:
            self._splitter = FrameSplitter(self.listener.max_message_bytes)
            self._arm_ping()
            early, self._early = self._early, b""
            self.resume_reading()
            if early:
                self.data_received(early)

    # -- keepalive ---------------------------------------------------------------------------------

    def _arm_ping(self) -> None:
        interval = self.listener.ping_interval_s
        if interval > 0 and not self.disconnected:
            self._ping = asyncio.get_running_loop().call_later(interval, self._keepalive)

    def _keepalive(self) -> None:
        """Every interval: a peer that has not answered the last ping is gone (half-open TCP); else ping."""
        self._ping = None
        if self.closing or self.disconnected or self.ws.state is not State.OPEN:
            return
        if self._pong_due:
            log.info("closing a WebSocket whose peer did not answer a ping within %.0f s",
                     self.listener.ping_interval_s)
            self.close(1011, "keepalive ping timeout")
            self._end(1011)
            return
        self._pong_due = os.urandom(4)  # tells this ping's pong from an unsolicited one
        self.ws.send_ping(self._pong_due)
        self._flush()
        self._arm_ping()

    # -- messages ----------------------------------------------------------------------------------

    def _websockets_parse(self, data: bytes) -> None:
        """Feed websockets and act on what it parsed."""
        ws = self.ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                opcode = event.opcode
                if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                    if event.fin:
                        self._message(bytes(event.data), opcode is Opcode.TEXT)
                    else:
                        self._fragments, self._fragmented_text = [bytes(event.data)], opcode is Opcode.TEXT
                elif opcode is Opcode.CONT:
                    self._fragments.append(bytes(event.data))
                    if event.fin:
                        message, self._fragments = b"".join(self._fragments), []
                        self._message(message, self._fragmented_text)
                elif opcode is Opcode.PONG and bytes(event.data) == self._pong_due:
                    self._pong_due = b""
                # A ping or a close websockets has answered itself: the answer is in what _flush writes.
            elif isinstance(event, Request):
                self._upgrade(event)
        if ws.state is State.CLOSING or ws.state is State.CLOSED:  # a close came, or websockets failed the stream
            self.closing = True
        self._flush()

    def _message(self, data: bytes, text: bool) -> None:
        if self.closing:  # past a close, messages are dropped
            return
        if self._receiver is not None:
            self._deliver(data)
            return
        if text:
            try:
                self._queue.append({"type": "websocket.receive", "text": data.decode()})
            except UnicodeDecodeError:
                self.close(1007, "invalid UTF-8")
                self._end(1007)
                return
        else:
            self._queue.append({"type": "websocket.receive", "bytes": data})
        self._wake()
        if len(self._queue) >= MAX_QUEUED:
            self.pause_reading()

    def _deliver(self, data: bytes) -> None:
        assert self._receiver is not None
        try:
            self._receiver(data)
        except Exception:
            log.exception("a WebSocket's receiver failed; message dropped")

    def _end(self, code: int) -> None:
        """Tell the app, once, that the connection is over."""
        if self._ended:
            return
        self._ended = True
        if self._receiver is not None:
            self._call_on_disconnect(code)
        else:
            self._queue.append({"type": "websocket.disconnect", "code": code})
            self._wake()

    def _call_on_disconnect(self, code: int) -> None:
        assert self._on_disconnect is not None
        self._ended = True
        on_disconnect, self._on_disconnect = self._on_disconnect, _told
        try:
            on_disconnect(code)
        except Exception:
            log.exception("a WebSocket's disconnect handler failed")

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _flush(self) -> None:
        """Write what websockets has to send; cut the connection where it says the stream ends."""
        transport = self.transport
        for chunk in self.ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:  # end of stream: the server closes TCP (after the buffer is written)
                transport.close()
        if self.ws.state is not State.OPEN and self.ws.state is not State.CONNECTING and self._timer is None \
                and not self.disconnected and self.ws.close_expected():
            self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self.abort)


def _http_response(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    """An app's HTTP answer to an upgrade request (the ASGI WebSocket denial response)."""
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    fields = Headers(headers)
    fields.setdefault("Connection", "close")
    fields.setdefault("Content-Length", str(len(body)))
    fields.setdefault("Content-Type", "text/plain; charset=utf-8")
    return Response(status, phrase, fields, body)


def _told(code: int) -> None:
    """The disconnect handler once it has been told: the app's (a call's) is let go, so the call is freed
    by reference counting when it ends, not left in a cycle through the ASGI scope."""
