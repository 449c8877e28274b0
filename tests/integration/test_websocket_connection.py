"""WebSocket connections (server/websocket_connection.py) on a real listener and a raw TCP client.

The client writes RFC 6455 frames itself, cut at arbitrary byte boundaries, so the server meets frames
split anywhere, several in one read, pings and fragmented messages, an oversized frame (close 1009), an
unmasked one (1002) and random bytes. The app behind it is a Starlette app, as the gateway's is: it
accepts or refuses over ASGI and then reads by callback (the `DirectSocket` extension).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.conftest import ErrorRecords
from voxgate.config import Settings
from voxgate.embedded import free_port
from voxgate.server.listener import Listener, run
from voxgate.server.websocket_connection import EXTENSION, DirectSocket

MAX_SIZE = 4096  # the frame limit: twice max_message_bytes


SERVER_ERRORS = ErrorRecords()  # errors the server logs (an exception escaping data_received would be one)
ENDINGS: list[int] = []  # close codes the echo handler was told, in order


async def echo(websocket: WebSocket) -> None:
    """Answers the first message over ASGI, then reads by callback; sends every message back numbered."""
    await websocket.accept()
    first = await websocket.receive_text()
    direct: DirectSocket = websocket.scope["extensions"][EXTENSION]
    count = 0
    ended = asyncio.Event()

    def on_message(data: bytes) -> None:
        nonlocal count
        count += 1
        if data.startswith(b"several:"):  # answered by as many messages as it names, in one write
            direct.send_texts([f"{count}.{n}" for n in range(int(data[8:]))])
        else:
            direct.send_text(f"{count}:{data.decode()}")

    def on_disconnect(code: int) -> None:
        ENDINGS.append(code)
        ended.set()

    await websocket.send_text(f"0:{first}")  # over ASGI too
    direct.deliver_to(on_message, on_disconnect)
    await ended.wait()


async def refuse(websocket: WebSocket) -> None:
    await websocket.send_denial_response(PlainTextResponse("not you", status_code=403))


async def close_early(websocket: WebSocket) -> None:
    await websocket.close()


APP = Starlette(routes=[WebSocketRoute("/echo", echo), WebSocketRoute("/refuse", refuse),
                        WebSocketRoute("/close-early", close_early)])


@dataclass
class Served:
    listener: Listener
    thread: threading.Thread

    @property
    def port(self) -> int:
        return self.listener.port


@contextmanager
def serving(**settings: Any) -> Iterator[Served]:
    """A Listener for APP on a free loopback port, in a thread of its own."""
    settings = {"max_message_bytes": MAX_SIZE // 2, "port": free_port(), **settings}
    listener = Listener(APP, Settings(host="127.0.0.1", **settings))
    served = Served(listener, threading.Thread(target=run, args=(listener,), kwargs={"signals": False}, daemon=True))
    served.thread.start()
    assert listener.started.wait(20), "the listener did not start"
    try:
        yield served
    finally:
        listener.stop_soon()
        served.thread.join(20)


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    logging.getLogger().addHandler(SERVER_ERRORS)
    try:
        with serving() as served:
            yield served.port
    finally:
        logging.getLogger().removeHandler(SERVER_ERRORS)


def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class RawClient:
    def __init__(self, port: int, path: str = "/echo", status: int = 101, pipelined: bytes = b"") -> None:
        """`pipelined`: frames sent in the same write as the upgrade request, not waiting for the 101."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode() + pipelined)
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            self.buffer += chunk
        self.head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        if not self.head.startswith(f"HTTP/1.1 {status} ".encode()):
            self.sock.close()
            raise AssertionError(self.head)

    def hello(self) -> None:
        """The first message, over ASGI; the app reads by callback after it."""
        self.sock.sendall(frame(0x1, b"hello"))
        assert self.read_frame() == (0x1, b"0:hello")

    def read_to_end(self) -> bytes:
        """Everything until the server closes the connection."""
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        return data

    def read_frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 2:
                n, at = self.buffer[1] & 0x7F, 2
                if n == 126 and len(self.buffer) >= 4:
                    n, at = struct.unpack("!H", self.buffer[2:4])[0], 4
                if n < 127 and len(self.buffer) >= at + n:
                    opcode, payload = self.buffer[0] & 0x0F, self.buffer[at:at + n]
                    self.buffer = self.buffer[at + n:]
                    return opcode, payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def send_in_pieces(self, data: bytes, cuts: list[int]) -> None:
        position = 0
        for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
            if cut > position:
                self.sock.sendall(data[position:cut])
                time.sleep(0.001)  # separate reads on the server, most of the time
                position = cut


messages = st.lists(st.text(min_size=0, max_size=300).map(str.encode), min_size=1, max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=messages, cuts=st.lists(st.integers(0, 10_000), max_size=12), ping_at=st.integers(0, 8),
       fragment_at=st.integers(0, 8))
def test_messages_arrive_whole_and_in_order_however_the_bytes_are_cut(
        server: int, messages: list[bytes], cuts: list[int], ping_at: int, fragment_at: int) -> None:
    client = RawClient(server)
    try:
        client.hello()
        stream, expected = b"", []
        for index, message in enumerate(messages):
            if index == ping_at:
                stream += frame(0x9, b"are you there")
            if index == fragment_at and len(message) > 1:  # a fragmented message: websockets joins it
                stream += frame(0x1, message[:1], fin=False) + frame(0x0, message[1:])
            else:
                stream += frame(0x1, message)
            expected.append(message)
        client.send_in_pieces(stream, cuts)
        got: list[bytes] = []
        pongs = 0
        while len(got) < len(expected):
            opcode, payload = client.read_frame()
            if opcode == 0xA:
                pongs += 1
                assert payload == b"are you there"
            else:
                got.append(payload)
        assert got == [f"{n + 1}:".encode() + m for n, m in enumerate(expected)]
        assert pongs == (1 if ping_at < len(messages) else 0)
    finally:
        client.sock.close()


def test_messages_written_together_arrive_as_separate_messages_in_order(server: int) -> None:
    client = RawClient(server)
    try:
        client.hello()
        for request, count in ((b"several:1", 1), (b"several:3", 3), (b"plain", 0)):
            client.sock.sendall(frame(0x1, request))
            if count:
                got = [client.read_frame() for _ in range(count)]
                seq = got[0][1].split(b".")[0].decode()
                assert got == [(0x1, f"{seq}.{n}".encode()) for n in range(count)]
            else:
                assert client.read_frame()[1].endswith(b":plain")
    finally:
        client.sock.close()


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=messages, cuts=st.lists(st.integers(0, 10_000), max_size=12))
def test_a_client_that_sends_frames_with_its_upgrade_request_is_served_the_same(
        server: int, messages: list[bytes], cuts: list[int]) -> None:
    """Frames that arrive with the request wait for the app's answer: nothing may precede the 101."""
    client = RawClient(server, pipelined=frame(0x1, b"hello") + frame(0x9, b"ping") + frame(0x1, b"eager"))
    try:
        assert client.read_frame() == (0xA, b"ping")  # websockets answers at once, the app after a task switch
        assert client.read_frame() == (0x1, b"0:hello")
        assert client.read_frame() == (0x1, b"1:eager")
        client.send_in_pieces(b"".join(frame(0x1, m) for m in messages), cuts)
        assert [client.read_frame() for _ in messages] == [(0x1, f"{n + 2}:".encode() + m)
                                                         for n, m in enumerate(messages)]
    finally:
        client.sock.close()


@pytest.mark.parametrize(("bad", "code"), [
    (frame(0x1, b"x" * (MAX_SIZE + 1)), 1009),  # over the size limit: websockets refuses it
    (frame(0x1, b"naked", mask=False), 1002),  # clients must mask
    (bytes([0xC1]) + frame(0x1, b"rsv")[1:], 1002),  # a reserved bit, with no extension to own it
    (frame(0x0, b"continued"), 1002),  # a continuation with nothing to continue
], ids=["oversized", "unmasked", "reserved-bit", "stray-continuation"])
def test_a_frame_websockets_refuses_closes_the_socket_with_its_code(server: int, bad: bytes, code: int) -> None:
    client = RawClient(server)
    try:
        client.hello()
        client.sock.sendall(frame(0x1, b"small"))
        assert client.read_frame() == (0x1, b"1:small")
        client.sock.sendall(bad + frame(0x1, b"after"))  # nothing after the bad frame is delivered
        opcode, payload = client.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == code
    finally:
        client.sock.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=6))
def test_garbage_after_going_direct_costs_that_connection_only(server: int, garbage: list[bytes]) -> None:
    """Random bytes where frames should be: the server closes or ignores that connection, never crashes,
    and a connection opened next works normally."""
    client = RawClient(server)
    try:
        client.hello()
        for chunk in garbage:
            try:
                client.sock.sendall(chunk)
            except OSError:
                break  # the server already closed it: fine
    finally:
        client.sock.close()
    fresh = RawClient(server)
    try:
        fresh.sock.sendall(frame(0x1, b"hello") + frame(0x1, b"still here"))
        assert fresh.read_frame() == (0x1, b"0:hello")
        assert fresh.read_frame() == (0x1, b"1:still here")
    finally:
        fresh.sock.close()
    assert not SERVER_ERRORS.records, [r.getMessage() for r in SERVER_ERRORS.records]


def test_the_app_refuses_over_asgi_with_its_own_response_or_403(server: int) -> None:
    refused = RawClient(server, "/refuse", status=403)
    closed = RawClient(server, "/close-early", status=403)
    unrouted = RawClient(server, "/nowhere", status=403)  # Starlette closes what no route takes
    try:
        assert refused.read_to_end() == b"not you"
        assert closed.read_to_end() == b""
        assert unrouted.read_to_end() == b""
    finally:
        for client in (refused, closed, unrouted):
            client.sock.close()


def test_a_closing_client_is_answered_and_its_app_told(server: int) -> None:
    client = RawClient(server)
    try:
        client.hello()
        before = len(ENDINGS)
        client.sock.sendall(frame(0x8, struct.pack("!H", 1000) + b"bye"))
        opcode, payload = client.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1000
        assert client.read_to_end() == b""  # and then the server closes TCP
        while len(ENDINGS) == before:
            time.sleep(0.01)
        assert ENDINGS[before] == 1000
    finally:
        client.sock.close()


def test_connections_beyond_the_limit_are_refused_with_503() -> None:
    """A WebSocket holds its connection's slot: with one slot, the next connection is refused."""
    with serving(max_connections=1) as served:
        first = RawClient(served.port)
        try:
            second = RawClient(served.port, status=503)
            second.sock.close()
            first.hello()
        finally:
            first.sock.close()


def test_a_peer_that_stops_answering_pings_is_dropped() -> None:
    """A half-open connection (here: a client that reads but never answers a ping) is closed 1011 and its
    app told, at the ping after the one it left unanswered; a client that answers stays."""
    with serving(ws_ping_interval_s=0.2) as served:
        silent, answering = RawClient(served.port), RawClient(served.port)
        heard: list[tuple[int, bytes]] = []  # what the answering client got besides pings

        def answer_pings() -> None:
            with contextlib.suppress(OSError):
                while True:
                    opcode, payload = answering.read_frame()
                    if opcode == 0x9:
                        answering.sock.sendall(frame(0xA, payload))
                        heard.append((0x9, b""))
                    else:
                        heard.append((opcode, payload))

        answerer = threading.Thread(target=answer_pings, daemon=True)
        answerer.start()
        try:
            pings = 0
            for client in (silent, answering):
                client.sock.sendall(frame(0x1, b"hello"))
            while (found := silent.read_frame())[0] == 0x9:  # pings before the echo, if the machine is slow
                pings += 1
            assert found == (0x1, b"0:hello")
            before = len(ENDINGS)
            while (found := silent.read_frame())[0] == 0x9:
                pings += 1
            opcode, payload = found
            assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1011 and pings == 1
            while len(ENDINGS) == before:
                time.sleep(0.01)
            assert ENDINGS[before] == 1011
            while heard.count((0x9, b"")) < 4:  # four intervals on, well past the silent one's end...
                time.sleep(0.01)
            answering.sock.sendall(frame(0x1, b"still here"))  # ...the answering one is still served
            while (0x1, b"1:still here") not in heard:
                time.sleep(0.01)
            assert [h for h in heard if h[0] != 0x9] == [(0x1, b"0:hello"), (0x1, b"1:still here")]
        finally:
            silent.sock.close()
            answering.sock.close()
            answerer.join(5)


def test_stopping_the_listener_closes_open_sockets_with_1001() -> None:
    with serving() as served:
        client = RawClient(served.port)
        client.hello()
        before = len(ENDINGS)
        served.listener.stop_soon()
        opcode, payload = client.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1001
        client.sock.sendall(frame(0x8, payload[:2]))  # the closing handshake, as a client does
        served.thread.join(20)
        assert not served.thread.is_alive()
        assert ENDINGS[before] == 1001
        client.sock.close()
