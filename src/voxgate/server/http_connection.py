"""One HTTP/1.1 connection: h11's sans-IO parser under a plain asyncio.Protocol, serving an ASGI app.

Requests are read one at a time (pipelined ones wait, reading paused, until the answer before them is
out). Each runs the app in a task with ASGI's `http` receive/send. The connection's deadlines are the
guard's: a request must arrive whole within `http_request_timeout_s` of its first byte (and a new
connection must send one within that time of connecting), else 408 and closed; between requests a
connection may idle for `http_keep_alive_s`. A WebSocket upgrade, once its request is whole, is handed
to a `WebSocketConnection` with asyncio's `transport.set_protocol`; the guard keeps counting it.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import MutableMapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, cast

import h11

from voxgate.observability import metrics
from voxgate.server.websocket_connection import WebSocketConnection
from voxgate.server.write_flow import WriteFlow

if TYPE_CHECKING:
    from voxgate.server.listener import Listener

__all__ = ["ClientDisconnected", "HttpConnection", "answer"]

log = logging.getLogger("voxgate.server")

MAX_HEAD_BYTES = 64 * 1024  # a request head beyond this is refused (431)
BODY_HIGH_WATER = 64 * 1024  # request body the app has not read yet before reading pauses
RETRY_AFTER_S = 5
# After answering a request whose body was not read: how long, and how much, the rest is read and dropped
# so the client sees the answer rather than a reset (nginx's lingering_close).
LINGER_S = 5.0
LINGER_BYTES = 64 * 1024 * 1024

Message = MutableMapping[str, Any]


def answer(status: int, code: str, message: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer in the gateway's JSON problem shape, written where no app answers, then closed."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps({"error": {"type": kind, "code": code, "message": message, "param": None}}).encode()
    return (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n").encode() + body


REFUSED = answer(503, "too_many_connections", "The gateway has too many open connections; try again later.",
                 f"retry-after: {RETRY_AFTER_S}\r\n")
TIMED_OUT = answer(408, "request_timeout", "The request did not arrive in time.")


class ClientDisconnected(OSError):
    """An answer sent after the client has gone."""


class _Date:
    """The `Date` header, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, email.utils.formatdate(second, usegmt=True).encode()
        return cls.value


class HttpConnection(asyncio.Protocol):
    """One TCP connection until it closes or becomes a WebSocket."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.exchange: Exchange | None = None  # the request being read or answered
        self.requests = 0  # requests read whole on this connection
        self.handed_over = False  # now a WebSocket
        self._timer: asyncio.TimerHandle | None = None  # the request deadline, or the keep-alive one
        self._awaiting_request = True  # between requests: the next byte starts the request deadline
        self._read_paused = False
        self._flow = WriteFlow()
        self._stopping = False  # the server is stopping: close once the answer in flight is out
        self._lingering: int | None = None  # bytes still to drop after an early answer (see _linger)

    # -- the guard's view --------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    @property
    def evictable(self) -> bool:
        """Open but not yet a whole request: an idle or trickling socket, not a client being served."""
        return self.requests == 0 and not self.handed_over and not self.closing

    def evict(self) -> None:
        self._close(TIMED_OUT, "evicted")

    def stop(self) -> None:
        """The server is stopping: close now if idle, else after the answer in flight."""
        self._stopping = True
        if self.exchange is None and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self.handed_over:
            self.transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's classes, same API
        listener = self.listener
        if not listener.guard.admit(self):
            metrics.CONNECTIONS_CLOSED.labels("over_capacity").inc()
            self.transport.write(REFUSED)
            self.transport.close()
            return
        listener.connections.add(self)
        # A new connection must send a whole request within the deadline from connecting, not from its first byte.
        self._awaiting_request = False
        self._arm(listener.request_timeout_s, self._request_timed_out)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return  # refused or answered for good: nothing more is read
        if self._lingering is not None:  # the rest of a body nobody will read
            self._lingering -= len(data)
            if self._lingering < 0:
                self.transport.close()
            return
        if self._awaiting_request:
            self._awaiting_request = False
            self._arm(self.listener.request_timeout_s, self._request_timed_out)
        self.h11.receive_data(data)
        self._read()

    def eof_received(self) -> bool | None:
        return None  # a client that stops sending is gone (or done after a linger): close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handed_over:
            return
        self.listener.connections.discard(self)
        self.listener.guard.forget(self)
        self._disarm()
        if self.exchange is not None:
            self.exchange.disconnect()
        self.resume_writing()

    def pause_writing(self) -> None:
        self._flow.pause()

    def resume_writing(self) -> None:
        self._flow.resume()

    async def drain(self) -> None:
        await self._flow.wait(lambda: self.closing)

    def pause_reading(self) -> None:
        if not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and self.transport is not None and not self.handed_over:
            self._read_paused = False
            self.transport.resume_reading()

    # -- reading requests --------------------------------------------------------------------------

    def _read(self) -> None:
        """Act on every event h11 can parse from what has arrived."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                self._bad_request(exc)
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                exchange = self.exchange
                if exchange is not None and exchange.upgrade and self.h11.their_state is h11.MIGHT_SWITCH_PROTOCOL:
                    self._hand_over(exchange)
                else:  # the answer before it is not out yet (pipelining): the rest waits, TCP pushes back
                    self.pause_reading()
                return
            if isinstance(event, h11.Request):
                if not self._request(event):
                    return
            elif isinstance(event, h11.Data):
                if self.exchange is not None:
                    self.exchange.body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.requests += 1
                self._disarm()
                if self.exchange is not None:
                    self.exchange.body_end()
            else:  # ConnectionClosed: the client is done sending
                return

    def _request(self, event: h11.Request) -> bool:
        """Start serving a request; False when it is refused (and the connection closing)."""
        assert self.transport is not None
        headers = [(name, value) for name, value in event.headers]
        # h11 bounds a head that is still arriving; one that came whole in a single read is bounded here.
        if len(event.target) + sum(len(name) + len(value) + 4 for name, value in headers) > MAX_HEAD_BYTES:
            self._close(answer(431, "request_header_fields_too_large", "The request head is too large."),
                        "bad_request", force=True)
            return False
        upgrade = _is_websocket_upgrade(event.method, headers)
        exchange = Exchange(self, event, headers, upgrade)
        self.exchange = exchange
        if not upgrade:
            exchange.task = self.listener.run_app(exchange.run(), "http")
        return True

    def _hand_over(self, exchange: Exchange) -> None:
        """The upgrade request is whole: the connection is a WebSocket's from here."""
        assert self.transport is not None
        self._disarm()
        self.handed_over = True
        self.exchange = None
        self.listener.connections.discard(self)
        early, _ = self.h11.trailing_data
        websocket = WebSocketConnection(self.listener, self.transport)
        self.listener.guard.replace(self, websocket)
        self.transport.set_protocol(websocket)
        if self._read_paused:
            self._read_paused = False
            self.transport.resume_reading()
        websocket.open(exchange.head(), bytes(early))

    def _bad_request(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
        code = "request_header_fields_too_large" if status == 431 else "bad_request"
        log.info("refusing a malformed HTTP request: %s", exc)
        exchange = self.exchange
        if exchange is not None:
            exchange.disconnect()  # its app hears the client is gone; what it sends is dropped
        if exchange is None or not exchange.started:
            self._close(answer(status, code, f"The request could not be read: {exc}"), "bad_request", force=True)
        elif self.transport is not None:
            self.transport.close()

    # -- answers -----------------------------------------------------------------------------------

    def send(self, *events: h11.Event) -> None:
        """Write `events` in one write (a response's head, body and end are one syscall, not three)."""
        assert self.transport is not None
        data = b"".join(self.h11.send(event) or b"" for event in events)
        if data:
            self.transport.write(data)

    def answered(self) -> None:
        """The answer to the current request is out: on to the next one, or close."""
        self.exchange = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if (self.h11.our_state in (h11.DONE, h11.MUST_CLOSE) and self.h11.their_state is h11.SEND_BODY
                and not self._stopping):
            self._linger(transport)  # answered before the body was read (a 413, a 401 to an upload)
            return
        if self._stopping or self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
            transport.close()  # h11 says so (Connection: close, HTTP/1.0)
            return
        self.h11.start_next_cycle()
        pending, _ = self.h11.trailing_data
        self._awaiting_request = not pending
        if pending:  # the next request began while this one was answered
            self._arm(self.listener.request_timeout_s, self._request_timed_out)
        else:
            self._arm(self.listener.keep_alive_s, self._idle_timed_out)
        self.resume_reading()
        self._read()

    def _linger(self, transport: asyncio.Transport) -> None:
        """An answer went out while the client was still sending its body. Closing now would reset the
        connection (unread data in the kernel) and the client would lose the answer mid-upload; so stop
        writing (FIN), read and drop what still comes for at most LINGER_S and LINGER_BYTES, then close."""
        self._lingering = LINGER_BYTES
        if transport.can_write_eof():
            transport.write_eof()
        self.resume_reading()
        self._arm(LINGER_S, transport.close)

    # -- deadlines ---------------------------------------------------------------------------------

    def _arm(self, delay_s: float, then: Any) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay_s, then)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _request_timed_out(self) -> None:
        self._timer = None
        if self.exchange is None or not self.exchange.read_whole:
            log.info("closing a connection whose request did not arrive within %.1f s",
                     self.listener.request_timeout_s)
            self._close(TIMED_OUT, "request_timeout")

    def _idle_timed_out(self) -> None:
        self._timer = None
        if self.exchange is None and self.transport is not None:
            self.transport.close()

    def _close(self, response: bytes, reason: str, force: bool = False) -> None:
        """Answer `response` (unless something was answered on this connection already) and close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        if self.requests == 0 or force:
            transport.write(response)
        transport.close()


class Exchange:
    """One request and its answer: ASGI's `http` receive and send over the connection."""

    def __init__(self, connection: HttpConnection, request: h11.Request, headers: list[tuple[bytes, bytes]],
                 upgrade: bool) -> None:
        self.connection = connection
        self.request = request
        self.upgrade = upgrade
        self.task: asyncio.Task[None] | None = None
        self.started = False  # the response head is out
        self.complete = False  # the whole response is out
        self.read_whole = False  # the request body has arrived whole
        self.disconnected = False
        self._head_only = request.method == b"HEAD"
        self._body = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._continued = False
        self._body_ended = False  # the app has been given the body's end
        self._head: h11.Response | None = None  # the response head, until its body goes out with it
        self._headers = headers

    def head(self) -> bytes:
        """The request head as it came (for websockets, which parses the upgrade itself)."""
        request = self.request
        lines = [request.method + b" " + request.target + b" HTTP/" + request.http_version]
        lines += [name + b": " + value for name, value in request.headers.raw_items()]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    # -- what the connection tells it --------------------------------------------------------------

    def body(self, data: bytes) -> None:
        self._body += data
        if len(self._body) > BODY_HIGH_WATER:
            self.connection.pause_reading()
        self._wake()

    def body_end(self) -> None:
        self.read_whole = True
        self._wake()

    def disconnect(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- ASGI --------------------------------------------------------------------------------------

    async def run(self) -> None:
        listener, request = self.connection.listener, self.request
        assert self.connection.transport is not None
        scope = listener.scope("http", self.connection.transport, request.target.decode("latin-1"), self._headers,
                               request.http_version.decode("ascii"))
        scope["method"] = request.method.decode("ascii")
        try:
            await listener.app(scope, self.receive, self.send)
        except Exception:
            if self.disconnected:  # the client left: what the app raised about it is no fault of the app's
                log.debug("%s %s ended: the client has gone", scope["method"], scope["path"], exc_info=True)
                return
            log.exception("unhandled error answering %s %s", scope["method"], scope["path"])
            if not self.started and not self.disconnected:
                self._fail()
            elif not self.complete and self.connection.transport is not None:
                self.connection.transport.close()
            return
        if not self.complete and not self.disconnected:
            if not self.started:
                log.error("the app returned without answering %s %s", scope["method"], scope["path"])
                self._fail()
            elif self.connection.transport is not None:
                self.connection.transport.close()  # an answer cut short: the client must not take it as whole

    def _fail(self) -> None:
        transport = self.connection.transport
        if transport is not None and not transport.is_closing():
            transport.write(answer(500, "server_error", "Internal server error."))
            transport.close()

    async def receive(self) -> Message:
        connection = self.connection
        if not self._continued and connection.h11.they_are_waiting_for_100_continue and not self.disconnected:
            self._continued = True
            connection.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
        while True:
            if self._body or (self.read_whole and not self._body_ended):
                chunk, self._body = bytes(self._body), bytearray()
                self._body_ended = self.read_whole
                connection.resume_reading()
                return {"type": "http.request", "body": chunk, "more_body": not self.read_whole}
            if self.disconnected or (self._body_ended and self.complete):
                return {"type": "http.disconnect"}
            await self._wait()  # more body, or (the body read) the end of the exchange

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def send(self, message: Message) -> None:
        kind = message["type"]
        connection = self.connection
        if self.disconnected:
            raise ClientDisconnected("the client has gone")  # ASGI 2.4: an OSError, which Starlette expects
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the response has started already")
            headers = list(message.get("headers") or [])
            if not any(name.lower() == b"date" for name, _ in headers):
                headers.append((b"date", _Date.now()))
            status = int(message["status"])
            # Held until the body: most answers are then one write.
            self._head = h11.Response(status_code=status, headers=headers, reason=_reason(status))
            self.started = True
        elif kind == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError("http.response.body outside a response")
            events: list[h11.Event] = []
            if self._head is not None:
                head, self._head = self._head, None
                if not self.read_whole:
                    # Answered before the request's body has all come (a 401 to a POST whose body is still on
                    # its way): the connection closes after this answer (`answered` lingers to read the rest),
                    # so the answer says so; a client would otherwise send its next request into the close.
                    head = h11.Response(status_code=head.status_code, reason=head.reason,
                                        headers=[*head.headers.raw_items(), (b"connection", b"close")])
                events.append(head)
            body = message.get("body", b"")
            if body and not self._head_only:
                await connection.drain()
                if self.disconnected:
                    raise ClientDisconnected("the client has gone")
                events.append(h11.Data(data=body))
            more = message.get("more_body", False)
            if not more:
                events.append(h11.EndOfMessage())
            connection.send(*events)
            if not more:
                self.complete = True
                self._wake()
                connection.answered()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _is_websocket_upgrade(method: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    if method != b"GET":
        return False
    upgrade = connection = False
    for name, value in headers:
        if name == b"upgrade":
            upgrade = upgrade or b"websocket" in value.lower()
        elif name == b"connection":
            connection = connection or b"upgrade" in value.lower()
    return upgrade and connection
