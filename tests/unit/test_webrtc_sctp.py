"""The sans-IO SCTP association: two of ours over a simulated link (lossy, reordering, duplicating, seeded),
and a hand-driven peer that builds packets chunk by chunk, as Chromium would. No sleeps, no wall clock."""

from __future__ import annotations

import heapq
import random
import struct
from collections.abc import Callable

import google_crc32c
import pytest

from voxgate.webrtc import sctp
from voxgate.webrtc.sctp import (
    Chunk,
    ChunkType,
    Closed,
    DataChunk,
    Established,
    ForwardTsnChunk,
    InitChunk,
    MessageReceived,
    OutgoingSsnResetRequest,
    OutgoingStreamsReset,
    Packet,
    ReconfigChunk,
    ReconfigResponse,
    SackChunk,
    SctpAssociation,
    SctpError,
    SctpEvent,
    State,
    StreamsReset,
)


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: bytes(rng.getrandbits(8) for _ in range(n))


def association(seed: int, **kwargs: int) -> SctpAssociation:
    return SctpAssociation(random_bytes=seeded(seed), **kwargs)  # type: ignore[arg-type]


class Link:
    """Two associations and what is in transit between them, on a simulated clock."""

    def __init__(self, a: SctpAssociation, b: SctpAssociation, *, seed: int = 0, loss: float = 0.0,
                 duplicate: float = 0.0, delay: float = 0.01, jitter: float = 0.0) -> None:
        self.a, self.b = a, b
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.delay, self.jitter = loss, duplicate, delay, jitter
        self.now = 0.0
        self.transit: list[tuple[float, int, int, bytes]] = []  # (arrival, order, destination index, packet)
        self.order = 0
        self.events: dict[int, list[SctpEvent]] = {0: [], 1: []}
        self.drop: Callable[[int, bytes], bool] = lambda source, packet: False  # a test's own loss
        self.sent: dict[int, list[bytes]] = {0: [], 1: []}

    def side(self, index: int) -> SctpAssociation:
        return self.a if index == 0 else self.b

    def messages(self, index: int) -> list[bytes]:
        return [e.data for e in self.events[index] if isinstance(e, MessageReceived)]

    def flush(self) -> None:
        for index in (0, 1):
            endpoint = self.side(index)
            for packet in endpoint.datagrams_to_send(self.now):
                assert len(packet) <= endpoint.mtu
                self.sent[index].append(packet)
                if self.drop(index, packet) or self.rng.random() < self.loss:
                    continue
                for _ in range(2 if self.rng.random() < self.duplicate else 1):
                    arrival = self.now + self.delay + self.rng.random() * self.jitter
                    heapq.heappush(self.transit, (arrival, self.order, 1 - index, packet))
                    self.order += 1
            while (event := endpoint.next_event()) is not None:
                self.events[index].append(event)

    def run(self, until: Callable[[], bool] = lambda: False, limit: float = 60.0) -> None:
        """Deliver packets and fire timers in time order until `until()` or nothing is left to happen."""
        end = self.now + limit
        while True:
            self.flush()
            if until():
                return
            times = [t for t in (self.a.next_timer(), self.b.next_timer()) if t is not None]
            if self.transit:
                times.append(self.transit[0][0])
            if not times or min(times) > end:
                return
            self.now = max(self.now, min(times))
            while self.transit and self.transit[0][0] <= self.now:
                _, _, destination, packet = heapq.heappop(self.transit)
                self.side(destination).receive(packet, self.now)
            for endpoint in (self.a, self.b):
                deadline = endpoint.next_timer()
                if deadline is not None and deadline <= self.now:
                    endpoint.handle_timer(self.now)


def connected(**link_options: float) -> Link:
    link = Link(association(1), association(2), **link_options)  # type: ignore[arg-type]
    link.a.connect(link.now)
    link.run(lambda: link.a.state is State.ESTABLISHED and link.b.state is State.ESTABLISHED)
    assert link.a.state is link.b.state is State.ESTABLISHED
    return link


def build(tag: int, *chunks: bytes, ports: tuple[int, int] = (5000, 5000)) -> bytes:
    """A packet, its CRC32c computed here (little-endian, RFC 9260 appendix A)."""
    data = struct.pack("!HHII", *ports, tag, 0) + b"".join(chunks)
    return data[:8] + struct.pack("<I", google_crc32c.value(data)) + data[12:]


def reference_crc32c(data: bytes) -> int:
    """CRC32c (Castagnoli, reflected polynomial 0x82F63B78) one bit at a time: slow, and nobody's library."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def chunks_of(packets: list[bytes], kind: int | None = None) -> list[Chunk]:
    found = [chunk for packet in packets for chunk in Packet.parse(packet).chunks]
    return [chunk for chunk in found if kind is None or chunk.type == kind]


class RawPeer:
    """A peer driven by hand: its INIT is the one Chromium sends (dcsctp, M120+)."""

    def __init__(self, tag: int = 0x5EED_1234, initial_tsn: int = 0xFFFF_FFF0) -> None:
        self.tag = tag
        self.tsn = initial_tsn  # next TSN to send: close to the wrap, on purpose
        self.initial_tsn = initial_tsn
        self.remote_tag = 0
        self.remote_initial_tsn = 0
        self.ssn: dict[int, int] = {}

    def init(self) -> bytes:
        params = (
            (0x8008, bytes([ChunkType.RECONFIG, ChunkType.FORWARD_TSN, ChunkType.I_DATA])),  # Supported Extensions
            (0xC000, b""),  # Forward-TSN-Supported
            (0x8001, struct.pack("!I", 1)),  # Zero Checksum Acceptable (RFC 9653), EDMID "DTLS"
        )
        return build(0, InitChunk(self.tag, 5 * 1024 * 1024, 65535, 65535, self.initial_tsn, params).to_bytes())

    def establish(self, server: SctpAssociation, now: float = 0.0) -> list[bytes]:
        server.receive(self.init(), now)
        (ack_packet,) = server.datagrams_to_send(now)
        ack = InitChunk.parse(chunks_of([ack_packet])[0])
        self.remote_tag, self.remote_initial_tsn = ack.initiate_tag, ack.initial_tsn
        cookie = ack.param(7)
        assert cookie is not None
        server.receive(self.packet(Chunk(ChunkType.COOKIE_ECHO, 0, cookie).to_bytes()), now)
        assert server.state is State.ESTABLISHED and server.next_event() == Established()
        return server.datagrams_to_send(now)

    def packet(self, *chunks: bytes) -> bytes:
        return build(self.remote_tag, *chunks)

    def data(self, payload: bytes, *, stream: int = 1, ppid: int = 53, beginning: bool = True, end: bool = True,
             tsn: int | None = None, ssn: int | None = None, unordered: bool = False) -> bytes:
        if tsn is None:
            tsn, self.tsn = self.tsn, (self.tsn + 1) & 0xFFFFFFFF
        if ssn is None:
            ssn = self.ssn.get(stream, 0)
            if end and not unordered:
                self.ssn[stream] = ssn + 1
        return DataChunk(tsn, stream, ssn, ppid, payload, unordered, beginning, end).to_bytes()

    def tsn_at(self, offset: int) -> int:
        return (self.initial_tsn + offset) & 0xFFFFFFFF


def last_sack(packets: list[bytes]) -> SackChunk:
    return SackChunk.parse(chunks_of(packets, ChunkType.SACK)[-1])


def payload(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


# ------------------------------------------------------------------------------------------- handshake


def test_handshake_establishes_both_sides_once() -> None:
    link = connected()
    assert [type(e) for e in link.events[0]] == [Established]
    assert [type(e) for e in link.events[1]] == [Established]
    init = InitChunk.parse(chunks_of(link.sent[0][:1])[0])
    assert Packet.parse(link.sent[0][0]).verification_tag == 0 and not init.ack
    assert link.a.stats.dropped == link.b.stats.dropped == {}
    assert link.a.next_timer() is None and link.b.next_timer() is None  # nothing outstanding, no T1 left


def test_handshake_survives_lost_init_and_cookie_echo() -> None:
    lost = {"INIT": 1, "COOKIE_ECHO": 1}

    def drop(source: int, packet: bytes) -> bool:
        kind = ChunkType(Packet.parse(packet).chunks[0].type).name
        if lost.get(kind):
            lost[kind] -= 1
            return True
        return False

    link = Link(association(1), association(2))
    link.drop = drop
    link.a.connect(0.0)
    link.run(lambda: link.a.state is State.ESTABLISHED and link.b.state is State.ESTABLISHED)
    assert link.a.state is link.b.state is State.ESTABLISHED
    assert 2.0 <= link.now < 4.0  # one T1 (1 s), then one more (2 s)


def test_data_in_cookie_echoed_stands_for_a_lost_cookie_ack() -> None:
    link = Link(association(1), association(2))
    link.drop = lambda source, packet: chunks_of([packet])[0].type == ChunkType.COOKIE_ACK
    link.a.connect(0.0)
    link.run(lambda: link.b.state is State.ESTABLISHED)
    link.b.send(1, 53, b"server speaks first", link.now)
    link.run(lambda: bool(link.messages(0)))
    assert link.a.state is State.ESTABLISHED and link.messages(0) == [b"server speaks first"]
    assert link.events[0][0] == Established()


def test_handshake_gives_up_after_max_init_retransmissions() -> None:
    a = association(1)
    a.connect(0.0)
    now = 0.0
    sent = len(a.datagrams_to_send(now))
    while (deadline := a.next_timer()) is not None:
        now = deadline
        a.handle_timer(now)
        sent += len(a.datagrams_to_send(now))
    assert sent == 1 + sctp.MAX_INIT_RETRANSMISSIONS
    assert a.next_event() == Closed("handshake timed out") and a.state is State.CLOSED


def test_init_collision_establishes_both_once() -> None:
    link = Link(association(1), association(2))
    link.a.connect(0.0)
    link.b.connect(0.0)
    link.run(lambda: link.a.state is State.ESTABLISHED and link.b.state is State.ESTABLISHED)
    assert link.a.state is link.b.state is State.ESTABLISHED
    link.a.send(1, 53, b"from a", link.now)
    link.b.send(1, 53, b"from b", link.now)
    link.run(lambda: bool(link.messages(0) and link.messages(1)))
    assert link.messages(0) == [b"from b"] and link.messages(1) == [b"from a"]
    assert [type(e) for e in link.events[0]].count(Established) == 1
    assert [type(e) for e in link.events[1]].count(Established) == 1


def test_chromium_init_gets_a_well_formed_init_ack() -> None:
    server = association(7)
    peer = RawPeer(tag=0x9A3B_C1D2)
    server.receive(peer.init(), 0.0)
    assert server.state is State.CLOSED  # nothing kept before COOKIE-ECHO
    (packet,) = server.datagrams_to_send(0.0)
    parsed = Packet.parse(packet)
    assert (parsed.source_port, parsed.destination_port, parsed.verification_tag) == (5000, 5000, peer.tag)
    (chunk,) = parsed.chunks
    ack = InitChunk.parse(chunk)
    assert ack.ack and ack.initiate_tag != 0
    assert (ack.outbound_streams, ack.inbound_streams) == (65535, 65535)
    assert ack.a_rwnd >= 1 << 20
    kinds = [kind for kind, _ in ack.params]
    assert kinds[0] == 7  # the state cookie
    assert 0xC000 in kinds and 8 not in kinds  # Forward-TSN-Supported; Zero Checksum skipped silently
    extensions = ack.param(0x8008)
    assert extensions is not None and set(extensions) == {ChunkType.RECONFIG, ChunkType.FORWARD_TSN}

    # the same bytes read by hand, the CRC32c computed bit by bit as RFC 9260 appendix B defines it
    assert struct.unpack("<I", packet[8:12])[0] == reference_crc32c(packet[:8] + bytes(4) + packet[12:])
    assert struct.unpack("!I", packet[4:8])[0] == peer.tag and packet[12] == ChunkType.INIT_ACK
    assert struct.unpack("!I", packet[16:20])[0] == ack.initiate_tag

    # and the rest of Chromium's handshake: COOKIE-ECHO bundled with DATA, COOKIE-ACK first in the answer
    peer.remote_tag, cookie = ack.initiate_tag, ack.param(7)
    assert cookie is not None
    server.receive(peer.packet(Chunk(ChunkType.COOKIE_ECHO, 0, cookie).to_bytes(), peer.data(b"hi")), 0.0)
    assert server.state is State.ESTABLISHED and server.next_event() == Established()
    assert server.next_event() == MessageReceived(1, 53, b"hi")
    answer = chunks_of(server.datagrams_to_send(0.3))
    assert answer[0].type == ChunkType.COOKIE_ACK


def test_init_unknown_parameters_are_reported_or_skipped_by_their_upper_bits() -> None:
    server = association(7)
    params = ((0x4001, b"report-and-skip?"), (0xC123, b"skip+report"), (0x8123, b"skip"))
    server.receive(build(0, InitChunk(1, 65536, 10, 10, 5, params).to_bytes()), 0.0)
    ack = InitChunk.parse(chunks_of(server.datagrams_to_send(0.0))[0])
    # 0x4001 (01): stop processing parameters, report it; the ones after it are not looked at
    assert [value for kind, value in ack.params if kind == 8] == [sctp._tlv(0x4001, b"report-and-skip?")]


def test_tampered_cookie_is_dropped() -> None:
    server = association(7)
    peer = RawPeer()
    server.receive(peer.init(), 0.0)
    ack = InitChunk.parse(chunks_of(server.datagrams_to_send(0.0))[0])
    cookie = ack.param(7)
    assert cookie is not None
    peer.remote_tag = ack.initiate_tag
    for index in (0, 10, len(cookie) - 1):
        tampered = bytearray(cookie)
        tampered[index] ^= 0x01
        server.receive(peer.packet(Chunk(ChunkType.COOKIE_ECHO, 0, bytes(tampered)).to_bytes()), 1.0)
    server.receive(peer.packet(Chunk(ChunkType.COOKIE_ECHO, 0, cookie[:-1]).to_bytes()), 1.0)
    assert server.stats.dropped["bad_cookie"] == 4
    assert server.state is State.CLOSED and server.next_event() is None
    server.receive(peer.packet(Chunk(ChunkType.COOKIE_ECHO, 0, cookie).to_bytes()), 1.0)
    assert server.state is State.ESTABLISHED


def test_cookie_from_another_association_is_refused() -> None:
    """Each association has its own secret: a cookie minted by one is worthless to another."""
    peer = RawPeer()
    minter, victim = association(7), association(8)
    minter.receive(peer.init(), 0.0)
    ack = InitChunk.parse(chunks_of(minter.datagrams_to_send(0.0))[0])
    assert ack.param(7) is not None
    cookie_echo = build(ack.initiate_tag, Chunk(ChunkType.COOKIE_ECHO, 0, ack.param(7) or b"").to_bytes())
    victim.receive(cookie_echo, 0.5)
    assert victim.state is State.CLOSED and sum(victim.stats.dropped.values()) == 1


def test_expired_cookie_is_refused_with_stale_cookie_and_the_client_starts_over() -> None:
    link = Link(association(1), association(2))
    held: list[bytes] = []

    def hold_first_cookie_echo(source: int, packet: bytes) -> bool:
        if Packet.parse(packet).chunks[0].type == ChunkType.COOKIE_ECHO and not held:
            held.append(packet)
            return True
        return False

    link.drop = hold_first_cookie_echo
    link.a.connect(0.0)
    link.flush()
    link.run(lambda: bool(held))
    link.drop = lambda source, packet: False
    link.b.receive(held[0], sctp.COOKIE_LIFETIME + 5.0)  # arrives past its lifetime
    assert link.b.stats.dropped["stale_cookie"] == 1 and link.b.state is State.CLOSED
    (error_packet,) = link.b.datagrams_to_send(link.now)
    error = chunks_of([error_packet])[0]
    assert error.type == ChunkType.ERROR and struct.unpack_from("!H", error.body)[0] == 3
    link.a.receive(error_packet, link.now)
    assert link.a.state is State.COOKIE_WAIT  # a fresh INIT goes out
    link.now = sctp.COOKIE_LIFETIME + 5.0
    link.run(lambda: link.b.state is State.ESTABLISHED and link.a.state is State.ESTABLISHED)
    assert link.a.state is link.b.state is State.ESTABLISHED


# ---------------------------------------------------------------------------------------- data transfer


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_messages_up_to_200kb_arrive_intact_and_in_order_over_a_bad_link(seed: int) -> None:
    link = Link(association(seed), association(seed + 100), seed=seed, loss=0.08, duplicate=0.05, jitter=0.02)
    link.a.connect(0.0)
    rng = random.Random(seed)
    sizes = [1, 2, 1171, 1172, 1173, 2344, 65536, 200 * 1024, *(rng.randrange(1, 200 * 1024) for _ in range(4)),
             *(rng.randrange(1, 300) for _ in range(40))]
    rng.shuffle(sizes)
    sent = [payload(rng, size) for size in sizes]
    for message in sent:
        link.a.send(1, 53, message, 0.0)  # queued before the handshake: they flow once it is done
    back = [payload(rng, rng.randrange(1, 5000)) for _ in range(20)]
    for message in back:
        link.b.send(3, 51, message, 0.0)
    link.run(lambda: len(link.messages(1)) == len(sent) and len(link.messages(0)) == len(back), limit=120)
    assert link.messages(1) == sent
    assert link.messages(0) == back
    link.run(lambda: link.a.buffered_amount == 0 and link.b.buffered_amount == 0)
    assert link.a.buffered_amount == link.b.buffered_amount == 0
    assert link.a.stats.retransmissions > 0 and link.b.stats.duplicate_tsns > 0
    assert link.a.stats.dropped == link.b.stats.dropped == {}


def test_ordered_streams_are_independent_and_unordered_messages_all_arrive() -> None:
    link = connected(seed=4, loss=0.1, jitter=0.03)
    rng = random.Random(4)
    expected: dict[int, list[bytes]] = {1: [], 2: []}
    unordered = []
    for index in range(200):
        stream = 1 + index % 2
        message = payload(rng, rng.randrange(1, 3000))
        if index % 5 == 0:
            link.a.send(7, 53, message, link.now, ordered=False)
            unordered.append(message)
        else:
            link.a.send(stream, 53, message, link.now)
            expected[stream].append(message)
    link.run(lambda: len(link.messages(1)) == 200)
    received = [e for e in link.events[1] if isinstance(e, MessageReceived)]
    for stream, messages in expected.items():
        assert [e.data for e in received if e.stream_id == stream] == messages
    assert sorted(e.data for e in received if e.stream_id == 7) == sorted(unordered)


def test_delayed_sack_every_second_packet_or_after_200ms() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    server.receive(peer.packet(peer.data(b"one")), 1.0)
    assert server.datagrams_to_send(1.0) == []  # the first packet waits for the second, or for 200 ms
    assert server.next_timer() == pytest.approx(1.0 + sctp.SACK_DELAY)
    server.handle_timer(1.0 + sctp.SACK_DELAY)
    assert last_sack(server.datagrams_to_send(1.2)).cumulative_tsn == peer.tsn_at(0)
    server.receive(peer.packet(peer.data(b"two")), 2.0)
    server.receive(peer.packet(peer.data(b"three")), 2.01)
    assert last_sack(server.datagrams_to_send(2.01)).cumulative_tsn == peer.tsn_at(2)
    assert server.next_timer() is None


def test_sack_reports_gap_blocks_and_duplicates_at_once() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    chunks = [peer.data(bytes([n]), ssn=n) for n in range(7)]  # TSNs initial+0 .. initial+6, across the wrap
    for index in (0, 2, 3, 5, 0):
        server.receive(peer.packet(chunks[index]), 1.0)
    sack = last_sack(server.datagrams_to_send(1.0))
    assert sack.cumulative_tsn == peer.tsn_at(0)
    assert sack.gaps == ((2, 3), (5, 5))
    assert sack.duplicates == (peer.tsn_at(0),)
    assert [e.data for e in iter(server.next_event, None) if isinstance(e, MessageReceived)] == [b"\x00"]
    for index in (1, 4, 6):
        server.receive(peer.packet(chunks[index]), 1.1)
    sack = last_sack(server.datagrams_to_send(1.1))
    assert sack.cumulative_tsn == peer.tsn_at(6) and sack.gaps == ()
    assert [e.data for e in iter(server.next_event, None) if isinstance(e, MessageReceived)] == [
        bytes([n]) for n in range(1, 7)]


def test_lost_data_is_retransmitted_after_t3_with_backoff() -> None:
    link = connected()
    losses = {"left": 3}

    def drop_data(source: int, packet: bytes) -> bool:
        if source == 0 and chunks_of([packet], ChunkType.DATA) and losses["left"]:
            losses["left"] -= 1
            return True
        return False

    link.drop = drop_data
    start = link.now
    link.a.send(1, 53, b"lost three times", link.now)
    link.run(lambda: bool(link.messages(1)))
    assert link.messages(1) == [b"lost three times"]
    assert link.a.stats.t3_expirations == 3
    # no RTT sample yet: RTO.Initial, then doubled at each expiry; then one trip across the link
    assert link.now - start == pytest.approx(sctp.RTO_INITIAL * (1 + 2 + 4) + 0.01)


def test_fast_retransmit_after_three_missing_reports() -> None:
    link = connected()
    dropped: list[int] = []

    def drop_one(source: int, packet: bytes) -> bool:
        data = chunks_of([packet], ChunkType.DATA)
        if source == 0 and data and not dropped:
            dropped.append(DataChunk.parse(data[0]).tsn)
            return True
        return False

    link.drop = drop_one
    messages = [bytes([n]) * 1000 for n in range(20)]
    for message in messages:
        link.a.send(1, 53, message, link.now)
    start = link.now
    link.run(lambda: len(link.messages(1)) == 20)
    assert link.messages(1) == messages
    assert link.a.stats.fast_retransmissions == 1 and link.a.stats.t3_expirations == 0
    assert link.now - start < sctp.RTO_MIN


def test_association_aborts_after_too_many_retransmissions() -> None:
    link = connected()
    link.drop = lambda source, packet: True  # the path is gone
    link.a.send(1, 53, b"into the void", link.now)
    link.run(lambda: link.a.state is State.CLOSED, limit=120)
    assert link.events[0][-1] == Closed("too many retransmissions")
    assert link.a.stats.t3_expirations == sctp.MAX_RETRANSMISSIONS + 1


def test_congestion_window_grows_in_slow_start_and_halves_on_timeout() -> None:
    link = connected()
    initial = link.a._cwnd
    for _ in range(100):
        link.a.send(1, 53, b"x" * 1000, link.now)
    link.run(lambda: link.a.buffered_amount == 0)
    grown = link.a._cwnd
    assert grown > initial
    link.drop = lambda source, packet: source == 0
    link.a.send(1, 53, b"y", link.now)
    link.run(lambda: link.a.stats.t3_expirations == 1)
    assert link.a._cwnd == link.a.mtu and link.a._ssthresh == max(grown // 2, 4 * link.a.mtu)


def test_peer_receive_window_limits_what_is_in_flight() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    server.receive(peer.packet(SackChunk((server._local_initial_tsn - 1) & 0xFFFFFFFF, 3000).to_bytes()), 1.0)
    for _ in range(10):
        server.send(1, 53, b"z" * 1000, 1.0)
    data = chunks_of(server.datagrams_to_send(1.0), ChunkType.DATA)
    assert len(data) == 3  # a_rwnd 3000: three chunks of 1000
    assert server._flight_size == 3000


# ------------------------------------------------------------------------------------- dropped packets


def test_bad_checksum_and_wrong_tag_and_wrong_port_are_dropped_and_counted() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    good = peer.packet(peer.data(b"payload", tsn=peer.tsn_at(0)))
    corrupted = bytearray(good)
    corrupted[-1] ^= 0xFF
    server.receive(bytes(corrupted), 1.0)
    server.receive(build(peer.remote_tag ^ 1, peer.data(b"payload", tsn=peer.tsn_at(0))), 1.0)
    server.receive(build(peer.remote_tag, peer.data(b"payload", tsn=peer.tsn_at(0)), ports=(5001, 5000)), 1.0)
    server.receive(build(0, peer.data(b"payload", tsn=peer.tsn_at(0))), 1.0)  # a zero tag is INIT's alone
    assert dict(server.stats.dropped) == {"bad_checksum": 1, "bad_tag": 2, "bad_port": 1}
    assert server.next_event() is None
    server.receive(good, 1.0)
    assert server.next_event() == MessageReceived(1, 53, b"payload")


def test_abort_needs_the_right_tag_and_honours_the_t_bit() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    abort = Chunk(ChunkType.ABORT, 0, b"").to_bytes()
    server.receive(build(peer.tag, abort), 1.0)  # T bit clear: must carry our tag, not the peer's
    assert server.state is State.ESTABLISHED
    server.receive(build(peer.tag, Chunk(ChunkType.ABORT, 1, b"").to_bytes()), 1.0)  # T bit: the reflected tag
    assert server.state is State.CLOSED
    assert server.next_event() == Closed("aborted by peer")


def test_unknown_chunk_types_follow_their_upper_two_bits() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    unknown = {bits: Chunk(bits << 6 | 0x2A, 0, b"????").to_bytes() for bits in range(4)}
    server.receive(peer.packet(unknown[0b00], peer.data(b"after 00")), 1.0)  # stop: the DATA is discarded
    server.receive(peer.packet(unknown[0b01], peer.data(b"after 01")), 1.0)  # stop and report
    server.receive(peer.packet(unknown[0b10], peer.data(b"after 10", ssn=0, tsn=peer.tsn_at(0))), 1.0)  # skip
    server.receive(peer.packet(unknown[0b11], peer.data(b"after 11", ssn=1, tsn=peer.tsn_at(1))), 1.0)
    assert [e.data for e in iter(server.next_event, None) if isinstance(e, MessageReceived)] == [
        b"after 10", b"after 11"]
    errors = chunks_of(server.datagrams_to_send(1.0), ChunkType.ERROR)
    assert [struct.unpack_from("!H", e.body)[0] for e in errors] == [6, 6]  # Unrecognized Chunk Type, twice
    assert server.stats.chunks_ignored == 4


def test_heartbeat_is_answered_with_its_own_info() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    info = sctp._tlv(1, b"heartbeat info, opaque")
    server.receive(peer.packet(Chunk(ChunkType.HEARTBEAT, 0, info).to_bytes()), 1.0)
    (ack,) = chunks_of(server.datagrams_to_send(1.0), ChunkType.HEARTBEAT_ACK)
    assert ack.body == info


# ------------------------------------------------------------------------------ partial reliability


def test_forward_tsn_from_the_peer_skips_an_abandoned_message() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    server.receive(peer.packet(peer.data(b"first half", beginning=True, end=False, ssn=0)), 1.0)
    peer.tsn = peer.tsn_at(2)  # the second half (initial+1) is abandoned, never to come
    server.receive(peer.packet(peer.data(b"next", ssn=1)), 1.0)
    assert server.next_event() is None
    forward = ForwardTsnChunk(peer.tsn_at(1), ((1, 0),))
    server.receive(peer.packet(forward.to_bytes()), 1.1)
    assert server.next_event() == MessageReceived(1, 53, b"next")
    assert last_sack(server.datagrams_to_send(1.1)).cumulative_tsn == peer.tsn_at(2)
    server.receive(peer.packet(forward.to_bytes()), 1.2)  # again: old news, only a SACK
    assert server.next_event() is None and last_sack(server.datagrams_to_send(1.2)).gaps == ()


def test_partially_reliable_message_is_abandoned_and_the_peer_moved_on() -> None:
    link = connected()
    link.drop = lambda source, packet: source == 0 and b"doomed" in packet
    link.a.send(1, 53, b"doomed", link.now, max_retransmits=2)
    link.a.send(1, 53, b"survivor", link.now)
    link.a.send(2, 53, b"expires" * 2000, link.now, lifetime=0.0)  # abandoned before it is sent
    link.a.send(2, 53, b"also survives", link.now)
    link.run(lambda: len(link.messages(1)) == 2 and link.a.buffered_amount == 0)
    assert link.messages(1) == [b"survivor", b"also survives"]
    assert link.a.stats.abandoned_messages == 2
    assert chunks_of(link.sent[0], ChunkType.FORWARD_TSN)
    assert not link.a._in_flight and not link.a._queue


# ------------------------------------------------------------------------------------------ stream reset


def test_stream_reset_both_ways_restarts_ssns() -> None:
    link = connected()
    for n in range(3):
        link.a.send(1, 53, b"a%d" % n, link.now)
        link.b.send(1, 53, b"b%d" % n, link.now)
    link.a.reset_streams([1], link.now)
    with pytest.raises(ValueError, match="being reset"):
        link.a.send(1, 53, b"too early", link.now)
    link.run(lambda: any(isinstance(e, OutgoingStreamsReset) for e in link.events[0]))
    assert StreamsReset((1,)) in link.events[1] and OutgoingStreamsReset((1,)) in link.events[0]
    assert link.messages(1) == [b"a0", b"a1", b"a2"]  # all delivered before the reset
    link.b.reset_streams([1], link.now)
    link.run(lambda: any(isinstance(e, OutgoingStreamsReset) for e in link.events[1]))
    assert StreamsReset((1,)) in link.events[0]
    link.a.send(1, 53, b"reused", link.now)  # SSN 0 again, on both sides
    link.b.send(1, 53, b"reused too", link.now)
    link.run(lambda: len(link.messages(1)) == 4 and len(link.messages(0)) == 4)
    assert link.messages(1)[-1] == b"reused" and link.messages(0)[-1] == b"reused too"


def test_peer_reset_waits_for_the_data_sent_before_it() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    late = peer.data(b"sent before the reset")  # TSN initial+0, lost for now
    request = OutgoingSsnResetRequest(peer.initial_tsn, (server._local_initial_tsn - 1) & 0xFFFFFFFF,
                                      peer.tsn_at(0), (1,))
    server.receive(peer.packet(ReconfigChunk.of(request)), 1.0)
    (response_chunk,) = chunks_of(server.datagrams_to_send(1.0), ChunkType.RECONFIG)
    assert ReconfigResponse.parse(ReconfigChunk.parse(response_chunk).params[0][1]).result == 6  # in progress
    assert server.next_event() is None
    server.receive(peer.packet(late), 1.1)
    assert server.next_event() == MessageReceived(1, 53, b"sent before the reset")
    assert server.next_event() == StreamsReset((1,))
    (response_chunk,) = chunks_of(server.datagrams_to_send(1.1), ChunkType.RECONFIG)
    assert ReconfigResponse.parse(ReconfigChunk.parse(response_chunk).params[0][1]) == ReconfigResponse(
        peer.initial_tsn, 1)
    server.receive(peer.packet(ReconfigChunk.of(request)), 1.2)  # its retransmission: the same answer
    (again,) = chunks_of(server.datagrams_to_send(1.2), ChunkType.RECONFIG)
    assert again == response_chunk and server.next_event() is None
    server.receive(peer.packet(peer.data(b"new life", ssn=0)), 1.3)
    assert server.next_event() == MessageReceived(1, 53, b"new life")


# ----------------------------------------------------------------------------------- shutdown and abort


def test_graceful_shutdown_delivers_what_is_queued_first() -> None:
    link = connected(seed=5, loss=0.1)
    messages = [bytes([n]) * 3000 for n in range(10)]
    for message in messages:
        link.a.send(1, 53, message, link.now)
    link.a.shutdown(link.now)
    assert link.a.state is State.SHUTDOWN_PENDING
    with pytest.raises(ConnectionError):
        link.a.send(1, 53, b"late", link.now)
    link.run(lambda: link.a.state is State.CLOSED and link.b.state is State.CLOSED)
    assert link.messages(1) == messages
    assert link.events[0][-1] == Closed("shutdown") and link.events[1][-1] == Closed("shutdown")
    assert link.a.next_timer() is None and link.b.next_timer() is None


def test_shutdown_from_both_sides_at_once() -> None:
    link = connected()
    link.a.shutdown(link.now)
    link.b.shutdown(link.now)
    link.run(lambda: link.a.state is State.CLOSED and link.b.state is State.CLOSED)
    assert link.events[0][-1] == link.events[1][-1] == Closed("shutdown")


def test_lost_shutdown_and_shutdown_ack_are_sent_again() -> None:
    link = connected()
    lost = {ChunkType.SHUTDOWN: 1, ChunkType.SHUTDOWN_ACK: 1}

    def drop(source: int, packet: bytes) -> bool:
        for chunk in chunks_of([packet]):
            if lost.get(ChunkType(chunk.type)):
                lost[ChunkType(chunk.type)] -= 1
                return True
        return False

    link.drop = drop
    link.b.send(1, 53, b"answer in flight", link.now)
    link.a.shutdown(link.now)
    link.run(lambda: link.a.state is State.CLOSED and link.b.state is State.CLOSED)
    assert link.messages(0) == [b"answer in flight"]  # SHUTDOWN-RECEIVED still sends what it has
    assert link.events[0][-1] == link.events[1][-1] == Closed("shutdown") and lost == {
        ChunkType.SHUTDOWN: 0, ChunkType.SHUTDOWN_ACK: 0}


def test_abort_closes_both_sides_with_the_reason() -> None:
    link = connected()
    link.a.abort(link.now, "call ended")
    link.run(lambda: link.b.state is State.CLOSED)
    assert link.events[0][-1] == Closed("call ended")
    assert link.events[1][-1] == Closed("aborted by peer: call ended")
    link.b.receive(link.sent[0][-1], link.now)  # anything after: dropped, counted
    assert link.b.stats.dropped["closed"] == 1


# ------------------------------------------------------------------------------------------------ bounds


def test_endless_fragmented_message_aborts_at_max_message_size() -> None:
    peer = RawPeer()
    server = SctpAssociation(random_bytes=seeded(7), max_message_size=64 * 1024)
    peer.establish(server)
    fragment = b"f" * 1100
    server.receive(peer.packet(peer.data(fragment, beginning=True, end=False, ssn=0)), 1.0)
    for n in range(200):
        server.receive(peer.packet(peer.data(fragment, beginning=False, end=False, ssn=0)), 1.0 + n / 1000)
        assert server._held_bytes() <= 64 * 1024 + 200 * sctp._CHUNK_OVERHEAD
        if server.state is State.CLOSED:
            break
    assert server.state is State.CLOSED and n < 60
    assert server.next_event() == Closed("message over max_message_size")
    (abort,) = chunks_of(server.datagrams_to_send(1.5), ChunkType.ABORT)
    assert struct.unpack_from("!H", abort.body)[0] == 13  # Protocol Violation


def test_out_of_order_flood_is_bounded() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    rng = random.Random(3)
    for _ in range(6000):  # never the TSN that would let anything through, far and near
        offset = rng.choice([rng.randrange(2, 40000), rng.randrange(2, 10**9)])
        server.receive(peer.packet(peer.data(b"q" * 300, tsn=peer.tsn_at(offset), ssn=0)), 1.0)
    assert len(server._ahead) <= sctp.MAX_OUT_OF_ORDER
    assert server._held_bytes() <= server._receive_window
    assert server.stats.data_dropped > 0
    sack = last_sack(server.datagrams_to_send(1.0))
    assert len(sack.gaps) <= sctp._MAX_GAP_BLOCKS and len(chunks_of(server.datagrams_to_send(1.0))) == 0
    assert server.state is State.ESTABLISHED


def test_send_refuses_what_it_cannot_take() -> None:
    a = SctpAssociation(random_bytes=seeded(1), max_message_size=1000, max_send_buffer=2500)
    with pytest.raises(ValueError, match="empty"):
        a.send(1, 53, b"", 0.0)
    with pytest.raises(ValueError, match="max_send_message_size"):
        a.send(1, 53, b"x" * 1001, 0.0)
    with pytest.raises(ValueError, match="out of range"):
        a.send(65535, 53, b"x", 0.0)
    a.send(1, 53, b"x" * 1000, 0.0)
    a.send(1, 53, b"x" * 1000, 0.0)
    with pytest.raises(BufferError):
        a.send(1, 53, b"x" * 1000, 0.0)
    assert a.buffered_amount == 2000


def test_data_without_user_data_aborts() -> None:
    peer = RawPeer()
    server = association(7)
    peer.establish(server)
    server.receive(peer.packet(peer.data(b"")), 1.0)
    assert server.next_event() == Closed("DATA without user data")


# -------------------------------------------------------------------------------------------------- fuzz


def corpus() -> list[bytes]:
    """Valid packets of every kind, from a real exchange and from the hand-driven peer."""
    link = connected(seed=9, loss=0.05)
    rng = random.Random(9)
    for n in range(30):
        link.a.send(n % 3, 53, rng.randbytes(rng.randrange(1, 4000)), link.now, ordered=n % 4 != 0)
        link.b.send(1, 51, rng.randbytes(rng.randrange(1, 200)), link.now)
    link.a.reset_streams([2], link.now)
    link.run(lambda: link.a.buffered_amount == 0 and link.b.buffered_amount == 0)
    peer = RawPeer()
    extra = [
        peer.init(),
        build(1, ForwardTsnChunk(5, ((1, 2), (3, 4))).to_bytes()),
        build(1, Chunk(ChunkType.HEARTBEAT, 0, sctp._tlv(1, b"info")).to_bytes()),
        build(1, SackChunk(3, 1000, ((2, 3), (5, 9)), (1, 2)).to_bytes()),
        build(1, Chunk(ChunkType.ERROR, 0, sctp._tlv(3, b"\x00\x00\x00\x01")).to_bytes()),
        build(1, ReconfigChunk.of(ReconfigResponse(7, 1))),
    ]
    return link.sent[0] + link.sent[1] + extra


def mutate(rng: random.Random, packet: bytes) -> bytes:
    data = bytearray(packet)
    for _ in range(rng.randrange(1, 4)):
        if not data:
            break
        action = rng.randrange(5)
        position = rng.randrange(len(data))
        if action == 0:
            data[position] ^= 1 << rng.randrange(8)
        elif action == 1:
            data[position] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        elif action == 2:
            del data[position:]
        elif action == 3:
            data[position:position] = rng.randbytes(rng.randrange(1, 16))
        elif position + 4 <= len(data):  # a length field's worth of nonsense
            data[position : position + 2] = rng.choice([b"\x00\x00", b"\xff\xff", b"\x00\x04", b"\x00\x03"])
    return bytes(data)


def with_crc(packet: bytes) -> bytes:
    if len(packet) < 12:
        return packet
    data = packet[:8] + b"\x00\x00\x00\x00" + packet[12:]
    return data[:8] + struct.pack("<I", google_crc32c.value(data)) + data[12:]


def test_fuzz_parsers_raise_only_sctp_error() -> None:
    rng = random.Random(2024)
    packets = corpus()
    parsers: list[Callable[[Chunk], object]] = [DataChunk.parse, InitChunk.parse, SackChunk.parse,
                                                ForwardTsnChunk.parse, ReconfigChunk.parse]
    outcomes = {"parsed": 0, "refused": 0}
    for n in range(4000):
        if n % 4 == 0:
            candidate = rng.randbytes(rng.randrange(0, 300))
        else:
            candidate = mutate(rng, rng.choice(packets))
        if n % 2:
            candidate = with_crc(candidate)
        try:
            parsed = Packet.parse(candidate)
        except SctpError:
            outcomes["refused"] += 1
            continue
        outcomes["parsed"] += 1
        for chunk in parsed.chunks:
            for parse in parsers:
                try:
                    parse(chunk)
                except SctpError:
                    pass
            for parse_body in (OutgoingSsnResetRequest.parse, ReconfigResponse.parse):
                try:
                    parse_body(chunk.body)
                except SctpError:
                    pass
    assert outcomes["parsed"] > 500 and outcomes["refused"] > 500


_CLOSING = {ChunkType.ABORT, ChunkType.SHUTDOWN, ChunkType.SHUTDOWN_ACK, ChunkType.SHUTDOWN_COMPLETE}


def test_fuzz_into_an_established_association_never_raises_nor_breaks_it() -> None:
    """Random and mutated packets, CRC and tag made right half the time so that they reach the chunk
    handlers. The peer's own garbage can legitimately end the association (an ABORT, a SHUTDOWN, an empty
    DATA): those are left out of the valid-CRC half. Afterwards the target still sends, and still takes
    what arrives with a bad CRC or tag as nothing."""
    link = connected(seed=11)
    target = link.b
    tag = target._local_tag
    rng = random.Random(11)
    packets = corpus()
    delivered_before = len(link.messages(1))
    for n in range(3000):
        if n % 5 == 0:
            candidate = rng.randbytes(rng.randrange(0, 400))
        else:
            candidate = mutate(rng, rng.choice(packets))
        if n % 2 and len(candidate) >= 12:
            candidate = with_crc(candidate[:4] + struct.pack("!I", tag) + candidate[8:])
            try:
                kinds = {chunk.type for chunk in Packet.parse(candidate).chunks}
                if kinds & _CLOSING or any(c.type == ChunkType.DATA and len(c.body) <= 12
                                           for c in Packet.parse(candidate).chunks):
                    continue
            except SctpError:
                pass
        target.receive(candidate, link.now)  # must not raise
        target.datagrams_to_send(link.now)
        if n % 100 == 0:
            target.handle_timer(link.now + 0.3)
        while target.next_event() is not None:
            pass
        assert target.state is State.ESTABLISHED, n
        assert target._held_bytes() <= target._receive_window
    assert sum(target.stats.dropped.values()) > 1000
    assert len(link.messages(1)) == delivered_before  # what the fuzz delivered went to the drain above
    target.send(5, 53, b"still alive", link.now)
    link.run(lambda: b"still alive" in link.messages(0))
    assert link.messages(0)[-1] == b"still alive"


def test_each_side_sends_what_the_other_takes_and_takes_what_it_said() -> None:
    """RFC 8841: a browser that offers a=max-message-size:65536 is sent no more than that, while it may send
    us what our answer's 262144 allows."""
    link = Link(SctpAssociation(random_bytes=seeded(1), max_message_size=262144, max_send_message_size=65536),
                SctpAssociation(random_bytes=seeded(2), max_message_size=65536, max_send_message_size=262144))
    link.a.connect(link.now)
    link.run(lambda: link.a.state is State.ESTABLISHED and link.b.state is State.ESTABLISHED)
    with pytest.raises(ValueError, match="max_send_message_size"):
        link.a.send(1, 53, b"x" * 65537, link.now)
    big = bytes(range(256)) * 400  # 100 KiB
    link.b.send(1, 53, big, link.now)
    link.run(lambda: big in link.messages(0))
    assert link.messages(0) == [big] and link.a.state is State.ESTABLISHED
