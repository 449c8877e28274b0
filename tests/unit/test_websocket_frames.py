"""The WebSocket server's own frame handling (server/websocket_frames.py), checked against websockets.

Client streams are RFC 6455 frames written here, masked with random keys and cut at arbitrary byte
boundaries: the splitter must give back every common frame's payload and every other frame whole, in
order, whatever the cuts. What the server writes is read back by websockets' own sans-IO client.
"""

from __future__ import annotations

import os
import struct

from hypothesis import given
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from voxgate.server.websocket_frames import (
    FRAME,
    MESSAGE_BINARY,
    MESSAGE_TEXT,
    FrameSplitter,
    binary_frame,
    text_frame,
    unmask,
)

MAX_SIZE = 1024


def masked(opcode: int, payload: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A client's frame, as RFC 6455 writes it (the mask is random, as a client's must be)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes([first, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([first, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, 0x80 | 127]) + struct.pack("!Q", n)
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def split(stream: bytes, cuts: list[int], splitter: FrameSplitter) -> list[tuple[int, bytes]]:
    pieces: list[tuple[int, bytes]] = []
    position = 0
    for cut in [*sorted({c % (len(stream) + 1) for c in cuts}), len(stream)]:
        pieces += splitter.feed(stream[position:cut])
        position = cut
    return pieces


@given(payload=st.binary(max_size=600), key=st.binary(min_size=4, max_size=4))
def test_unmask_is_the_rfc_xor(payload: bytes, key: bytes) -> None:
    assert unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


kinds = st.sampled_from(["text", "binary", "ping", "pong", "fragmented", "rsv", "unmasked"])


@given(frames=st.lists(st.tuples(kinds, st.binary(max_size=300)), min_size=1, max_size=10),
       cuts=st.lists(st.integers(0, 5000), max_size=15))
def test_common_frames_come_out_unmasked_and_every_other_frame_whole_in_order(
        frames: list[tuple[str, bytes]], cuts: list[int]) -> None:
    stream, expected = b"", []
    for kind, payload in frames:
        if kind in ("text", "binary"):
            stream += masked(0x1 if kind == "text" else 0x2, payload)
            expected.append((MESSAGE_TEXT if kind == "text" else MESSAGE_BINARY, payload))
        elif kind in ("ping", "pong"):
            frame = masked(0x9 if kind == "ping" else 0xA, payload[:125])
            stream += frame
            expected.append((FRAME, frame))
        elif kind == "fragmented":  # every piece of it whole, even the one that looks like a common frame
            parts = [masked(0x1, payload[:1], fin=False), masked(0x1, b"inside"), masked(0x0, payload[1:])]
            stream += b"".join(parts)
            expected += [(FRAME, part) for part in parts]
        else:
            frame = masked(0x1, payload, rsv1=True) if kind == "rsv" else bytes([0x81, len(payload[:125])]) + \
                payload[:125]
            stream += frame
            expected.append((FRAME, frame))
    assert split(stream, cuts, FrameSplitter(MAX_SIZE)) == expected


@given(cuts=st.lists(st.integers(0, 3000), max_size=10))
def test_from_an_oversized_frame_on_every_byte_is_handed_over(cuts: list[int]) -> None:
    before, huge, after = masked(0x1, b"fine"), masked(0x2, b"x" * (MAX_SIZE + 1)), masked(0x1, b"late")
    splitter = FrameSplitter(MAX_SIZE)
    pieces = split(before + huge + after, cuts, splitter)
    assert pieces[0] == (MESSAGE_TEXT, b"fine")
    assert all(kind == FRAME for kind, _ in pieces[1:]) and b"".join(p for _, p in pieces[1:]) == huge + after
    assert splitter.delegated


def test_after_delegate_the_rest_goes_as_it_comes_from_the_next_frame_boundary() -> None:
    splitter = FrameSplitter(MAX_SIZE)
    first, second = masked(0x1, b"one"), masked(0x1, b"two")
    assert splitter.feed(first + second[:3]) == [(MESSAGE_TEXT, b"one")]
    splitter.delegate()
    assert splitter.feed(second[3:]) == [(FRAME, second)]
    assert splitter.feed(b"") == []


@given(sizes=st.lists(st.sampled_from([0, 1, 125, 126, 127, 65535, 65536, 70000]), min_size=1, max_size=3))
def test_frames_to_the_client_read_back_in_websockets_client(sizes: list[int]) -> None:
    client = ClientProtocol(parse_uri("ws://carrier.example/"), state=State.OPEN, max_size=None)
    sent = [("é" * (size // 2)) if i % 2 == 0 else os.urandom(size) for i, size in enumerate(sizes)]
    client.receive_data(b"".join(text_frame(d) if isinstance(d, str) else binary_frame(d) for d in sent))
    frames = [event for event in client.events_received() if isinstance(event, Frame)]
    assert [(f.opcode, f.fin) for f in frames] == [(Opcode.TEXT if isinstance(d, str) else Opcode.BINARY, True)
                                                   for d in sent]
    assert [bytes(f.data) for f in frames] == [d.encode() if isinstance(d, str) else d for d in sent]
