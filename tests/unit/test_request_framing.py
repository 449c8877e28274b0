"""Request framing: where requests end in a client's byte stream, checked against h11's serialiser."""

from __future__ import annotations

import itertools

import h11
from hypothesis import given
from hypothesis import strategies as st

from voxgate.request_framing import MAX_HEAD_BYTES, RequestFraming


def serialise(body_parts: list[bytes], chunked: bool) -> bytes:
    """One request as a real client writes it (h11, the client side)."""
    client = h11.Connection(h11.CLIENT)
    headers = [("Host", "gw"), ("X-Pad", "v" * 40)]
    headers.append(("Transfer-Encoding", "chunked") if chunked else ("Content-Length", str(sum(map(len, body_parts)))))
    out = client.send(h11.Request(method="POST", target="/v1/realtime/calls", headers=headers)) or b""
    for part in body_parts:
        out += client.send(h11.Data(data=part)) or b""
    return out + (client.send(h11.EndOfMessage()) or b"")


requests = st.lists(st.tuples(st.lists(st.binary(min_size=0, max_size=300), max_size=4), st.booleans()),
                    min_size=1, max_size=4)


@given(requests, st.lists(st.integers(0, 4000), max_size=12))
def test_pipelined_requests_are_counted_wherever_the_stream_is_cut(
        spec: list[tuple[list[bytes], bool]], cuts: list[int]) -> None:
    wires = [serialise(parts, chunked) for parts, chunked in spec]
    stream = b"".join(wires)
    framing = RequestFraming()
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    done = 0
    for start, end in itertools.pairwise(points):
        done += framing.receive(stream[start:end])
    assert done == framing.completed == len(wires)
    assert not framing.reading


@given(st.lists(st.binary(min_size=1, max_size=50), min_size=1, max_size=3), st.booleans(), st.data())
def test_a_request_cut_short_is_still_arriving(parts: list[bytes], chunked: bool, data: st.DataObject) -> None:
    wire = serialise(parts, chunked)
    cut = data.draw(st.integers(1, len(wire) - 1))
    framing = RequestFraming()
    assert framing.receive(wire[:cut]) == 0
    assert framing.reading
    assert framing.receive(wire[cut:]) == 1
    assert not framing.reading


def test_slowloris_headers_a_byte_at_a_time_never_finish_a_request() -> None:
    framing = RequestFraming()
    head = b"GET /readyz HTTP/1.1\r\nHost: gw\r\nX-a: " + b"b" * 100
    for byte in head:
        assert framing.receive(bytes([byte])) == 0
        assert framing.reading
    assert framing.receive(b"\r\n\r\n") == 1


def test_a_websocket_upgrade_ends_framing() -> None:
    framing = RequestFraming()
    upgrade = (b"GET /v1/realtime HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n")
    framing.receive(upgrade + b"\x81\x85garbage frames")
    assert not framing.watching and not framing.reading


def test_framings_it_cannot_follow_keep_the_request_arriving() -> None:
    for head in (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
                 b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                 b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                 b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES):
        framing = RequestFraming()
        assert framing.receive(head) == 0
        assert framing.reading, head[:60]
        assert framing.receive(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n") == 0  # and stays so


def test_empty_lines_before_a_request_start_it() -> None:
    framing = RequestFraming()
    assert framing.receive(b"\r\n") == 0 and framing.reading  # trickled blank lines count as arriving
    assert framing.receive(b"\r\nGET / HTTP/1.1\r\nHost: gw\r\n\r\n") == 1
