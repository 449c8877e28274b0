"""The direct-socket lane (transports/direct_socket.py) on a real uvicorn server and a raw TCP client.

The client writes RFC 6455 frames itself, cut at arbitrary byte boundaries, so the lane's own frame
parser meets frames split anywhere, several in one read, pings and fragmented messages (which it hands
to websockets), and an oversized frame (which websockets refuses with close 1009).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from tests.conftest import ErrorRecords
from voxgate.embedded import free_port
from voxgate.transports.direct_socket import EXTENSION, UVICORN_WS, DirectSocket

MAX_SIZE = 4096


SERVER_ERRORS = ErrorRecords()  # errors the server logs (an exception escaping data_received would be one)


async def echo(websocket: WebSocket) -> None:
    """Goes direct once the first message arrives over ASGI; sends every message back with its number."""
    await websocket.accept()
    first = await websocket.receive_text()
    direct: DirectSocket = websocket.scope["extensions"][EXTENSION]
    count = 0
    ended = asyncio.Event()

    def on_message(data: bytes) -> None:
        nonlocal count
        count += 1
        direct.send_text(f"{count}:{data.decode()}")

    direct.send_text(f"0:{first}")
    direct.deliver_to(on_message, lambda code: ended.set())
    await ended.wait()


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(Starlette(routes=[WebSocketRoute("/echo", echo)]), host="127.0.0.1", port=port,
                            ws=UVICORN_WS, ws_max_size=MAX_SIZE, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    logging.getLogger().addHandler(SERVER_ERRORS)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)
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
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

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
        client.sock.sendall(frame(0x1, b"hello"))  # over ASGI: the app goes direct after this one
        assert client.read_frame() == (0x1, b"0:hello")
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


def test_an_oversized_frame_is_refused_with_1009(server: int) -> None:
    client = RawClient(server)
    try:
        client.sock.sendall(frame(0x1, b"hello"))
        assert client.read_frame() == (0x1, b"0:hello")
        client.sock.sendall(frame(0x1, b"small") + frame(0x1, b"x" * (MAX_SIZE + 1)))
        assert client.read_frame() == (0x1, b"1:small")
        opcode, payload = client.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009
    finally:
        client.sock.close()


def test_an_unmasked_client_frame_is_a_protocol_error(server: int) -> None:
    client = RawClient(server)
    try:
        client.sock.sendall(frame(0x1, b"hello"))
        assert client.read_frame() == (0x1, b"0:hello")
        client.sock.sendall(frame(0x1, b"naked", mask=False))
        opcode, payload = client.read_frame()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    finally:
        client.sock.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.binary(min_size=1, max_size=600), min_size=1, max_size=6))
def test_garbage_after_going_direct_costs_that_connection_only(server: int, garbage: list[bytes]) -> None:
    """Random bytes where frames should be: the server closes or ignores that connection, never crashes,
    and a connection opened next works normally."""
    client = RawClient(server)
    try:
        client.sock.sendall(frame(0x1, b"hello"))
        assert client.read_frame() == (0x1, b"0:hello")
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
