"""Data channels and DCEP over our SCTP association: two of ours over a simulated link, and a hand-driven
peer that opens `oai-events` the way Chromium does."""

from __future__ import annotations

import heapq
import random
import struct
from collections.abc import Callable

import pytest

from tests.unit.test_webrtc_sctp import RawPeer, chunks_of, seeded
from voxgate.webrtc.data_channels import (
    AssociationClosed,
    AssociationEstablished,
    Channel,
    ChannelClosed,
    ChannelEvent,
    ChannelMessage,
    ChannelOpened,
    DataChannels,
)
from voxgate.webrtc.sctp import ChunkType, DataChunk, SctpAssociation, State


class Pair:
    """Our DTLS client (a) and server (b), each with its data channels, on a simulated clock."""

    def __init__(self, *, seed: int = 0, loss: float = 0.0) -> None:
        self.a = DataChannels(SctpAssociation(random_bytes=seeded(1)), dtls_client=True)
        self.b = DataChannels(SctpAssociation(random_bytes=seeded(2)), dtls_client=False)
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.transit: list[tuple[float, int, int, bytes]] = []
        self.order = 0
        self.events: dict[int, list[ChannelEvent]] = {0: [], 1: []}

    def side(self, index: int) -> DataChannels:
        return self.a if index == 0 else self.b

    def messages(self, index: int) -> list[str | bytes]:
        return [e.data for e in self.events[index] if isinstance(e, ChannelMessage)]

    def flush(self) -> None:
        for index in (0, 1):
            channels = self.side(index)
            while (event := channels.next_event()) is not None:
                self.events[index].append(event)
            for packet in channels.association.datagrams_to_send(self.now):
                if self.rng.random() >= self.loss:
                    heapq.heappush(self.transit, (self.now + 0.01, self.order, 1 - index, packet))
                    self.order += 1

    def run(self, until: Callable[[], bool], limit: float = 60.0) -> None:
        end = self.now + limit
        while True:
            self.flush()
            if until():
                return
            times = [t for t in (self.a.association.next_timer(), self.b.association.next_timer()) if t is not None]
            if self.transit:
                times.append(self.transit[0][0])
            if not times or min(times) > end:
                return
            self.now = max(self.now, min(times))
            while self.transit and self.transit[0][0] <= self.now:
                _, _, destination, packet = heapq.heappop(self.transit)
                self.side(destination).receive(packet, self.now)
            for channels in (self.a, self.b):
                deadline = channels.association.next_timer()
                if deadline is not None and deadline <= self.now:
                    channels.handle_timer(self.now)


def connected(**options: float) -> Pair:
    pair = Pair(**options)  # type: ignore[arg-type]
    pair.a.association.connect(0.0)
    pair.run(lambda: AssociationEstablished() in pair.events[0] and AssociationEstablished() in pair.events[1])
    return pair


def opened(pair: Pair, index: int) -> list[Channel]:
    return [e.channel for e in pair.events[index] if isinstance(e, ChannelOpened)]


def dcep_open(label: str, *, kind: int = 0x00, priority: int = 256, parameter: int = 0, protocol: str = "") -> bytes:
    label_bytes, protocol_bytes = label.encode(), protocol.encode()
    return struct.pack("!BBHIHH", 3, kind, priority, parameter, len(label_bytes), len(protocol_bytes)) + \
        label_bytes + protocol_bytes


def browser(dtls_client: bool = False) -> tuple[RawPeer, DataChannels]:
    """Chromium's association, established with a DataChannels of ours (the gateway is the DTLS server)."""
    peer = RawPeer()
    channels = DataChannels(SctpAssociation(random_bytes=seeded(7)), dtls_client=dtls_client)
    server = channels.association
    server.receive(peer.init(), 0.0)
    from voxgate.webrtc.sctp import Chunk, InitChunk

    ack = InitChunk.parse(chunks_of(server.datagrams_to_send(0.0))[0])
    peer.remote_tag, peer.remote_initial_tsn = ack.initiate_tag, ack.initial_tsn
    channels.receive(peer.packet(Chunk(ChunkType.COOKIE_ECHO, 0, ack.param(7) or b"").to_bytes()), 0.0)
    assert channels.next_event() == AssociationEstablished()
    server.datagrams_to_send(0.0)
    return peer, channels


def sent_data(channels: DataChannels, now: float) -> list[DataChunk]:
    return [DataChunk.parse(c) for c in chunks_of(channels.association.datagrams_to_send(now), ChunkType.DATA)]


def drain(channels: DataChannels) -> list[ChannelEvent]:
    return list(iter(channels.next_event, None))


# --------------------------------------------------------------------------------------------------


def test_open_ack_and_messages_of_every_kind_both_ways() -> None:
    pair = connected()
    channel = pair.a.open("chat", pair.now, protocol="json")
    assert channel.state == "connecting" and channel.stream_id == 0  # the DTLS client opens even ids
    big = random.Random(1).randbytes(200 * 1024)
    sent: list[str | bytes] = ["hello", "", b"", b"\x00\x01", "ünïcødé ✓", big, "x" * 70000]
    for message in sent:
        pair.a.send(channel, message, pair.now)  # before the ACK: allowed, ordered
    pair.run(lambda: len(pair.messages(1)) == len(sent))
    (remote,) = opened(pair, 1)
    assert (remote.label, remote.protocol, remote.stream_id, remote.state) == ("chat", "json", 0, "open")
    assert opened(pair, 0) == [channel] and channel.state == "open"
    received = pair.messages(1)
    assert received == sent and [type(m) for m in received] == [type(m) for m in sent]
    pair.b.send(remote, "reply", pair.now)
    pair.b.send(remote, b"", pair.now)
    pair.run(lambda: len(pair.messages(0)) == 2)
    assert pair.messages(0) == ["reply", b""]
    assert all(e.channel is channel for e in pair.events[0] if isinstance(e, ChannelMessage))


def test_empty_messages_go_as_one_zero_byte_under_ppid_56_and_57() -> None:
    peer, channels = browser()
    channels.receive(peer.packet(peer.data(dcep_open("c"), stream=0, ppid=50)), 0.1)
    (event,) = drain(channels)
    assert isinstance(event, ChannelOpened)
    sent_data(channels, 0.1)
    channels.send(event.channel, "", 0.2)
    channels.send(event.channel, b"", 0.2)
    assert [(c.ppid, c.data) for c in sent_data(channels, 0.2)] == [(56, b"\x00"), (57, b"\x00")]


def test_stream_ids_are_even_for_the_dtls_client_and_odd_for_the_server() -> None:
    pair = connected()
    assert [pair.a.open(f"a{n}", pair.now).stream_id for n in range(3)] == [0, 2, 4]
    assert [pair.b.open(f"b{n}", pair.now).stream_id for n in range(3)] == [1, 3, 5]
    pair.run(lambda: len(opened(pair, 0)) == 6 and len(opened(pair, 1)) == 6)
    assert sorted(c.stream_id for c in pair.a.channels) == [0, 1, 2, 3, 4, 5]


def test_chromium_opens_oai_events_and_gets_its_ack() -> None:
    peer, channels = browser()
    channels.receive(peer.packet(peer.data(dcep_open("oai-events"), stream=0, ppid=50)), 0.1)
    (event,) = drain(channels)
    assert isinstance(event, ChannelOpened)
    channel = event.channel
    assert (channel.label, channel.stream_id, channel.ordered, channel.state, channel.priority) == (
        "oai-events", 0, True, "open", 256)
    (ack,) = sent_data(channels, 0.1)
    assert (ack.stream_id, ack.ppid, ack.data, ack.unordered) == (0, 50, b"\x02", False)
    channels.receive(peer.packet(peer.data(b'{"type":"session.created"}', stream=0, ppid=51)), 0.2)
    assert drain(channels) == [ChannelMessage(channel, '{"type":"session.created"}')]
    channels.send(channel, '{"type":"response.create"}', 0.3)
    (data,) = sent_data(channels, 0.3)
    assert (data.stream_id, data.ppid, data.ssn, data.unordered) == (0, 51, 1, False)  # SSN 0 was the ACK


def test_a_message_before_the_ack_opens_the_channel() -> None:
    peer, channels = browser()
    channel = channels.open("ours", 0.1)
    assert channel.stream_id == 1  # we are the DTLS server: odd
    (open_chunk,) = sent_data(channels, 0.1)
    assert open_chunk.ppid == 50 and open_chunk.data == dcep_open("ours", priority=0)
    channels.receive(peer.packet(peer.data(b"early", stream=1, ppid=53)), 0.2)
    assert drain(channels) == [ChannelOpened(channel), ChannelMessage(channel, b"early")]
    channels.receive(peer.packet(peer.data(b"\x02", stream=1, ppid=50)), 0.3)  # the ACK, late
    assert drain(channels) == [] and channel.state == "open"


def test_malformed_opens_and_opens_on_a_busy_stream_are_counted_and_ignored() -> None:
    peer, channels = browser()
    bad = [
        dcep_open("x")[:10],  # truncated
        dcep_open("x", kind=0x05),  # no such channel type
        dcep_open("label") + b"!",  # lengths that do not add up
        struct.pack("!BBHIHH", 3, 0, 0, 0, 2, 0) + b"\xff\xfe",  # label not UTF-8
        b"\x07",  # no such DCEP message
    ]
    for stream, message in enumerate(bad):
        channels.receive(peer.packet(peer.data(message, stream=stream * 2, ppid=50)), 0.1)
    assert drain(channels) == [] and channels.stats.malformed == 5
    channels.receive(peer.packet(peer.data(dcep_open("first"), stream=20, ppid=50)), 0.2)
    channels.receive(peer.packet(peer.data(dcep_open("second"), stream=20, ppid=50)), 0.2)
    events = drain(channels)
    assert len(events) == 1 and isinstance(events[0], ChannelOpened) and events[0].channel.label == "first"
    assert channels.stats.opens_ignored == 1
    channels.receive(peer.packet(peer.data(b"nobody", stream=40, ppid=51)), 0.3)
    channels.receive(peer.packet(peer.data(b"odd ppid", stream=20, ppid=99)), 0.3)
    channels.receive(peer.packet(peer.data(b"\xff\xfe", stream=20, ppid=51)), 0.3)
    assert drain(channels) == []
    assert (channels.stats.no_channel, channels.stats.unknown_ppid, channels.stats.bad_utf8) == (1, 1, 1)
    assert channels.association.state is State.ESTABLISHED


def test_deprecated_partial_ppids_are_put_together_within_a_bound() -> None:
    peer, channels = browser()
    channels.receive(peer.packet(peer.data(dcep_open("p"), stream=0, ppid=50)), 0.1)
    (event,) = drain(channels)
    assert isinstance(event, ChannelOpened)
    channel = event.channel
    for piece, ppid in ((b"he", 52), (b"ll", 52), (b"o", 51), (b"\x01", 54), (b"\x02", 53)):
        channels.receive(peer.packet(peer.data(piece, stream=0, ppid=ppid)), 0.2)
    assert drain(channels) == [ChannelMessage(channel, "hello"), ChannelMessage(channel, b"\x01\x02")]
    limit = channels.association.max_message_size
    for _ in range(limit // 60000 + 2):
        channels.receive(peer.packet(peer.data(b"z" * 1000, stream=0, ppid=54)), 0.3)  # 1000 B each...
        for _ in range(59):
            channels.receive(peer.packet(peer.data(b"z" * 1000, stream=0, ppid=54)), 0.3)
    channels.receive(peer.packet(peer.data(b"end", stream=0, ppid=53)), 0.4)
    channels.receive(peer.packet(peer.data(b"after", stream=0, ppid=53)), 0.4)
    assert drain(channels) == [ChannelMessage(channel, b"after")]
    assert channels.stats.oversized == 1 and sum(channels._partial_size.values()) == 0


def test_closing_resets_both_directions_and_frees_the_stream_id() -> None:
    pair = connected()
    channel = pair.a.open("short-lived", pair.now)
    pair.run(lambda: bool(opened(pair, 1)) and channel.state == "open")
    (remote,) = opened(pair, 1)
    pair.a.send(channel, "last words", pair.now)
    pair.a.close(channel, pair.now)
    assert channel.state == "closing"
    with pytest.raises(ConnectionError):
        pair.a.send(channel, "too late", pair.now)
    pair.run(lambda: ChannelClosed(channel) in pair.events[0] and ChannelClosed(remote) in pair.events[1])
    assert pair.messages(1) == ["last words"]
    assert channel.state == remote.state == "closed" and pair.a.channels == pair.b.channels == []
    again = pair.a.open("reborn", pair.now)
    assert again.stream_id == 2  # ids move on, but 0 is free again
    pair.a._next_id = 0
    reused = pair.a.open("reused", pair.now)
    assert reused.stream_id == 0
    pair.a.send(reused, "fresh", pair.now)
    pair.run(lambda: "fresh" in pair.messages(1))
    assert [c.label for c in opened(pair, 1)][-2:] == ["reborn", "reused"]


def test_the_peer_closing_a_channel_closes_it_here_too() -> None:
    pair = connected()
    channel = pair.a.open("peer closes", pair.now)
    pair.run(lambda: bool(opened(pair, 1)))
    (remote,) = opened(pair, 1)
    pair.b.close(remote, pair.now)
    pair.run(lambda: ChannelClosed(channel) in pair.events[0] and ChannelClosed(remote) in pair.events[1])
    assert channel.state == remote.state == "closed"


def test_association_closing_closes_every_channel() -> None:
    pair = connected()
    channels = [pair.a.open(f"c{n}", pair.now) for n in range(3)]
    pair.run(lambda: len(opened(pair, 1)) == 3)
    pair.b.association.abort(pair.now, "call ended")
    pair.run(lambda: AssociationClosed("aborted by peer: call ended") in pair.events[0])
    assert [e.channel for e in pair.events[0] if isinstance(e, ChannelClosed)] == channels
    assert pair.events[0][-1] == AssociationClosed("aborted by peer: call ended")
    assert AssociationClosed("call ended") in pair.events[1]


def test_unordered_channel_sends_ordered_until_its_ack() -> None:
    peer, channels = browser()
    channel = channels.open("fast", 0.1, ordered=False, max_retransmits=0)
    channels.send(channel, "before", 0.1)
    assert [(c.ppid, c.unordered) for c in sent_data(channels, 0.1)] == [(50, False), (51, False)]
    channels.receive(peer.packet(peer.data(b"\x02", stream=1, ppid=50)), 0.2)
    assert drain(channels) == [ChannelOpened(channel)]
    channels.send(channel, "after", 0.3)
    assert [(c.ppid, c.unordered) for c in sent_data(channels, 0.3)] == [(51, True)]


def test_partial_reliability_parameters_reach_the_peer() -> None:
    pair = connected()
    rexmit = pair.a.open("rexmit", pair.now, ordered=False, max_retransmits=3)
    timed = pair.a.open("timed", pair.now, max_packet_lifetime=150)
    pair.run(lambda: len(opened(pair, 1)) == 2 and len(opened(pair, 0)) == 2)
    remote = {c.label: c for c in opened(pair, 1)}
    assert (remote["rexmit"].ordered, remote["rexmit"].max_retransmits) == (False, 3)
    assert (remote["timed"].ordered, remote["timed"].max_packet_lifetime) == (True, 150)
    with pytest.raises(ValueError):
        pair.a.open("both", pair.now, max_retransmits=1, max_packet_lifetime=1)
    assert rexmit.state == timed.state == "open"


def test_a_lossy_link_with_a_partially_reliable_channel_never_stalls_the_reliable_one() -> None:
    pair = connected(seed=3, loss=0.2)
    lossy = pair.a.open("lossy", pair.now, ordered=False, max_retransmits=0)
    reliable = pair.a.open("oai-events", pair.now)
    pair.run(lambda: len(opened(pair, 1)) == 2 and lossy.state == reliable.state == "open")
    for n in range(100):
        pair.a.send(lossy, b"frame %d" % n, pair.now)
        pair.a.send(reliable, f"event {n}", pair.now)
    pair.run(lambda: len([m for m in pair.messages(1) if isinstance(m, str)]) == 100
             and pair.a.association.buffered_amount == 0)
    assert [m for m in pair.messages(1) if isinstance(m, str)] == [f"event {n}" for n in range(100)]
    frames = [m for m in pair.messages(1) if isinstance(m, bytes)]
    assert 0 < len(frames) <= 100 and pair.a.association.stats.abandoned_messages > 0
