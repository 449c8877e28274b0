"""The WebSocket tunnel between nodes: its wire format, and its ends' credit, close and loss of the other node."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.cluster.relay import RELAYED, MalformedRelay
from voxgate.cluster.tunnel import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    WINDOW,
    Credit,
    Ended,
    Frame,
    Opening,
    TunnelEnd,
    TunnelLost,
    to_wire,
    tunnel_message,
)

OPENING = Opening(tunnel="t1", node="gw-b", path="/v1/realtime", query=b"call_id=rtc_1",
                  headers=[(b"authorization", b"Bearer k")], subprotocols=["realtime"], client="10.0.0.9")


@pytest.mark.parametrize("message", [
    OPENING, Credit("t1", 32), Ended("t1"),
    Frame("t1", {"type": "websocket.accept", "subprotocol": "realtime", "headers": [(b"x-node", b"a")]}),
    Frame("t1", {"type": "websocket.send", "text": '{"type": "session.created"}'}),
    Frame("t1", {"type": "websocket.receive", "bytes": b"\x00\xff"}),
    Frame("t1", {"type": "websocket.close", "code": 1008, "reason": "stalled"}),
    Frame("t1", {"type": "websocket.disconnect", "code": 4001}),
    Frame("t1", {"type": "websocket.http.response.start", "status": 404, "headers": [(b"content-type", b"json")]}),
    Frame("t1", {"type": "websocket.http.response.body", "body": b"{}", "more_body": False}),
])
def test_every_tunnel_message_crosses_the_wire_unchanged(message: Opening | Frame | Credit | Ended) -> None:
    assert tunnel_message(to_wire(message).encode()) == message


@given(st.text(max_size=200), st.binary(max_size=200))
def test_any_text_and_bytes_cross_the_wire(text: str, data: bytes) -> None:
    for frame in (Frame("t", {"type": "websocket.send", "text": text}),
                  Frame("t", {"type": "websocket.receive", "bytes": data})):
        assert tunnel_message(to_wire(frame)) == frame


def test_the_holder_serves_an_opening_as_a_relayed_websocket() -> None:
    scope = OPENING.scope()
    assert (scope["type"], scope["path"], scope["query_string"], scope["subprotocols"], scope["client"]) == (
        "websocket", "/v1/realtime", b"call_id=rtc_1", ["realtime"], ("10.0.0.9", 0))
    assert scope[RELAYED] is True and "websocket.http.response" in scope["extensions"]


def _wire(kind: str, **fields: object) -> str:
    return json.dumps({"v": 1, "id": "t", "kind": kind, **fields})


@pytest.mark.parametrize("wire", [
    "not json", json.dumps({"v": 1, "id": "t"}), _wire("teleport"),
    _wire("frame", message={"type": "http.request"}), _wire("frame", message={"type": "websocket.send", "text": 1}),
    _wire("frame", message={"type": "websocket.close", "code": "1000"}),
    _wire("frame", message={"type": "websocket.receive", "bytes": "%%%"}),
    _wire("credit", frames=0), _wire("credit", frames=WINDOW + 1), _wire("credit", frames=True),
    _wire("open", node="b", path="relative", query="", subprotocols=[]), _wire("open", path="/p"),
    _wire("open", node="b", path="/p", query="", subprotocols=[1]),
])
def test_a_message_that_is_not_a_tunnel_message_is_refused(wire: str) -> None:
    with pytest.raises(MalformedRelay):
        tunnel_message(wire)


class Pair:
    """Two ends joined in memory, as two nodes' listeners would join them (in order, one loop pass later)."""

    def __init__(self, idle_s: float = 60.0) -> None:
        self.alive = {"a": True, "b": True}
        self.listening = {"a": True, "b": True}
        self.a = TunnelEnd("t", self._publisher("b"), self._alive("b"), idle_s, CLIENT_MESSAGES)  # the holder's
        self.b = TunnelEnd("t", self._publisher("a"), self._alive("a"), idle_s, SERVER_MESSAGES)  # the client's

    def _publisher(self, to: str) -> Callable[[str], Awaitable[int]]:
        async def publish(data: str) -> int:
            if not self.listening[to]:
                return 0
            end = self.a if to == "a" else self.b
            message = tunnel_message(data)
            assert not isinstance(message, Opening)
            asyncio.get_running_loop().call_soon(end.delivered, message)
            return 1
        return publish

    def _alive(self, node: str) -> Callable[[], Awaitable[bool]]:
        async def alive() -> bool:
            return self.alive[node]
        return alive


async def test_a_sender_waits_for_credit_once_the_window_is_used_and_goes_on_as_the_receiver_consumes() -> None:
    pair = Pair()
    for n in range(WINDOW):
        await pair.b.send({"type": "websocket.receive", "text": str(n)})
    blocked = asyncio.create_task(pair.b.send({"type": "websocket.receive", "text": "over"}))
    await asyncio.sleep(0.05)
    assert not blocked.done()  # the receiver has consumed nothing yet
    received = [await pair.a.receive() for _ in range(WINDOW // 2)]
    assert [m["text"] for m in received if m] == [str(n) for n in range(WINDOW // 2)]
    await asyncio.wait_for(blocked, 5)  # the credit granted for them let it go
    for n in range(WINDOW // 2 - 1):  # the window is full again
        await pair.b.send({"type": "websocket.receive", "text": f"again {n}"})
    # A close is the last frame: it goes whatever the credit.
    await pair.b.send({"type": "websocket.disconnect", "code": 4001})
    rest = [await pair.a.receive() for _ in range(WINDOW + 1)]
    assert [m["text"] if m and "text" in m else m for m in rest][-2:] == [f"again {WINDOW // 2 - 2}", {
        "type": "websocket.disconnect", "code": 4001}]
    assert pair.a.closing.is_set() and pair.a.close == {"type": "websocket.disconnect", "code": 4001}


async def test_a_frame_the_other_side_may_not_send_ends_the_tunnel() -> None:
    pair = Pair()
    await pair.a.send({"type": "websocket.receive", "text": "a client's frame, from the holder?"})
    assert await pair.b.receive() is None and pair.b.ended


async def test_an_end_whose_other_node_stops_beating_or_listening_is_lost() -> None:
    pair = Pair(idle_s=0.05)
    pair.alive["a"] = False
    assert await asyncio.wait_for(pair.b.receive(), 5) is None and pair.b.ended
    with pytest.raises(TunnelLost):
        await pair.b.send({"type": "websocket.receive", "text": "x"})
    pair.listening["b"] = False
    with pytest.raises(TunnelLost):
        await pair.a.send({"type": "websocket.send", "text": "x"})
    assert pair.a.ended and pair.a.closing.is_set()


async def test_an_ended_end_tells_the_other_once() -> None:
    pair = Pair()
    await pair.a.send({"type": "websocket.close", "code": 1000})
    await pair.a.end()
    await pair.a.end()
    assert await pair.b.receive() == {"type": "websocket.close", "code": 1000}
    assert await pair.b.receive() is None and pair.b.ended
