"""voxgate's own HTTP/1.1 server (server/listener.py, server/http_connection.py) on loopback, raw sockets
and httpx against a small Starlette app: keep-alive and pipelining, bodies (chunked, 100-continue, left
unread), HEAD, failures answered as JSON problems, forwarded client addresses believed only from trusted
proxies, lifespan, and a client that goes away mid-answer."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import ErrorRecords
from voxgate.config import Settings
from voxgate.embedded import free_port
from voxgate.server.forwarded import TrustedProxies
from voxgate.server.listener import Listener, run

DISCONNECTED = threading.Event()  # the streaming route heard its client leave


async def hello(request: Request) -> Response:
    return PlainTextResponse("hi")


async def echo(request: Request) -> Response:
    return Response(await request.body(), media_type="application/octet-stream")


async def boom(request: Request) -> Response:
    raise RuntimeError("the handler failed")


async def client(request: Request) -> Response:
    assert request.client is not None
    return JSONResponse({"client": request.client.host, "scheme": request.url.scheme})


async def ignore_body(request: Request) -> Response:
    return PlainTextResponse("not reading that", status_code=413)


async def stream(request: Request) -> Response:
    async def forever() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"tick\n"
                await asyncio.sleep(0.01)
        finally:
            DISCONNECTED.set()

    return StreamingResponse(forever())


APP = Starlette(routes=[Route("/hello", hello, methods=["GET", "HEAD"]), Route("/echo", echo, methods=["POST"]),
                        Route("/boom", boom), Route("/client", client),
                        Route("/ignore", ignore_body, methods=["POST"]), Route("/stream", stream)])


@contextmanager
def serving(app: Any = APP, **settings: Any) -> Iterator[int]:
    """A Listener for `app` on a free loopback port, in a thread of its own; yields the port."""
    listener = Listener(app, Settings(host="127.0.0.1", port=settings.pop("port", None) or free_port(), **settings))
    thread = threading.Thread(target=run, args=(listener,), kwargs={"signals": False}, daemon=True)
    thread.start()
    assert listener.started.wait(20), "the listener did not start"
    try:
        yield listener.port
    finally:
        listener.stop_soon()
        thread.join(20)


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serving() as port:
        yield port


def exchange(port: int, data: bytes) -> bytes:
    """Send `data`, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_keep_alive_and_pipelined_requests_are_answered_in_order(port: int) -> None:
    request = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nworld"
    last = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answers = exchange(port, request + body + last)
    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 3
    first, second, third = answers.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert first.endswith(b"\r\n\r\nhi") and second.endswith(b"\r\n\r\nworld") and third.endswith(b"\r\n\r\nhi")


async def test_chunked_and_expect_continue_bodies_arrive_whole(port: int) -> None:
    chunked = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert exchange(port, chunked).endswith(b"\r\n\r\nhello world")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"  # before any body was sent
    writer.write(b"body")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and await reader.readexactly(4) == b"body"
    writer.close()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        big = bytes(range(256)) * 4096  # 1 MiB: reading pauses and resumes as the app takes it
        assert (await http.post("/echo", content=big)).content == big


def test_head_is_answered_without_a_body(port: int) -> None:
    answer = exchange(port, b"HEAD /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 2" in head.lower() and body == b""


def test_a_body_the_app_leaves_unread_closes_the_connection_after_the_answer(port: int) -> None:
    request = b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000
    answer = exchange(port, request + b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413 ") and answer.endswith(b"not reading that")  # and no second answer


def test_an_answer_before_the_body_has_come_says_the_connection_closes(port: int) -> None:
    """A client that sends its head, then its body (as httpx does under load): answered before the body
    has come, the connection will close after the answer, so the answer must say so; a client that took it
    as kept alive would send its next request into the close ("Server disconnected without a response")."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")  # no body yet
        answer = b""
        while b"not reading that" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
        head = answer.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 413 ") and b"connection: close" in head
        sock.sendall(b"hello")  # the body, late: read and dropped, then the server closes
        assert sock.recv(65536) == b""
    kept = exchange(port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
                          b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert kept.count(b"HTTP/1.1 200 ") == 2 and b"connection: close" not in kept.partition(b"\r\n\r\n")[0].lower()


async def test_an_answer_sent_before_a_large_upload_is_read_reaches_the_client_whole(port: int) -> None:
    """A 413 (or a 401) to an upload still being sent: closing at once would reset the connection and the
    client would see a broken pipe instead of the answer; the rest of the body is read and dropped first."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        reply = await http.post("/ignore", files={"file": ("big.bin", b"x" * (26 * 1024 * 1024))})
        assert reply.status_code == 413 and reply.text == "not reading that"
        assert (await http.get("/hello")).text == "hi"  # a new connection: that one was closed after the linger


def test_a_failing_handler_is_answered_500_and_logged_and_the_server_goes_on(port: int) -> None:
    errors = ErrorRecords()
    logging.getLogger().addHandler(errors)
    try:
        answer = exchange(port, b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        logging.getLogger().removeHandler(errors)
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert any("the handler failed" in str(r.exc_info[1]) for r in errors.records if r.exc_info)
    assert exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").endswith(b"hi")


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (b"GET /hello HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"),  # a header line without a colon
    (b"NOT HTTP AT ALL\r\n\r\n", 400, "bad_request"),
    (b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large"),
], ids=["no-colon", "not-http", "head-too-large"])
def test_requests_that_cannot_be_read_get_a_json_problem(port: int, request_bytes: bytes, status: int,
                                                         code: str) -> None:
    answer = exchange(port, request_bytes)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert json.loads(body)["error"]["code"] == code


async def test_forwarded_addresses_are_believed_from_trusted_proxies_only() -> None:
    spoof = {"X-Forwarded-For": "203.0.113.7, 198.51.100.1", "X-Forwarded-Proto": "https"}
    with serving(forwarded_allow_ips="127.0.0.1,198.51.100.0/24") as trusting:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{trusting}") as http:
            # 198.51.100.1 is a trusted proxy too, so the client is the address before it.
            assert (await http.get("/client", headers=spoof)).json() == {"client": "203.0.113.7", "scheme": "https"}
            assert (await http.get("/client")).json() == {"client": "127.0.0.1", "scheme": "http"}
    with serving(forwarded_allow_ips="10.0.0.1") as wary:  # loopback is no proxy of this one's
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{wary}") as http:
            assert (await http.get("/client", headers=spoof)).json() == {"client": "127.0.0.1", "scheme": "http"}


def test_trusted_proxy_chains() -> None:
    proxies = TrustedProxies("10.0.0.0/8, ::1")
    headers = [(b"x-forwarded-for", b"198.51.100.9, 10.1.2.3"), (b"x-forwarded-for", b"10.0.0.2:4711")]
    assert proxies.resolve(("10.0.0.1", 80), headers, "ws") == (("198.51.100.9", 0), "ws")
    assert proxies.resolve(("::1", 80), [(b"x-forwarded-for", b"[2001:db8::1]:443")], "http") == \
        (("2001:db8::1", 443), "http")
    assert proxies.resolve(("192.0.2.1", 80), headers, "http") == (("192.0.2.1", 80), "http")  # untrusted peer
    everyone = [(b"x-forwarded-for", b"10.9.9.9, 10.1.1.1")]  # every hop a proxy: the first one is the client
    assert proxies.resolve(("10.0.0.1", 80), everyone, "http") == (("10.9.9.9", 0), "http")
    with pytest.raises(ValueError, match="not an IP address"):
        TrustedProxies("127.0.0.1, proxy.example")


async def test_a_client_that_leaves_mid_answer_is_heard_by_the_app(port: int) -> None:
    DISCONNECTED.clear()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
    await reader.readuntil(b"tick\n")
    writer.close()
    assert await asyncio.to_thread(DISCONNECTED.wait, 20)


def test_a_failed_start_up_and_a_taken_port_stop_run_with_3() -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    assert run(Listener(failing, Settings(host="127.0.0.1", port=free_port())), signals=False) == 3
    with serving() as taken:
        assert run(Listener(APP, Settings(host="127.0.0.1", port=taken)), signals=False) == 3
