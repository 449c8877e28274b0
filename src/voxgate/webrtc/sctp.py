"""A sans-IO SCTP association (RFC 9260) as WebRTC runs it over DTLS (RFC 8261): the transport under the
data channels of a browser call.

    association = SctpAssociation(port=5000, remote_port=5000)
    association.receive(dtls_payload, now)              # each SCTP packet out of a DTLS record
    while (event := association.next_event()) is not None:
        ...                                             # Established, MessageReceived, StreamsReset, Closed
    association.send(stream_id, ppid, data, now)        # queue one message
    for packet in association.datagrams_to_send(now):   # after every receive/send/handle_timer call
        dtls.send(packet)
    deadline = association.next_timer()                  # call handle_timer(now) once it has passed

Nothing here touches a socket, a task or the clock: bytes and `now` (monotonic seconds) come in, bytes and
typed events go out, like h11. The browser is normally the one that sends INIT; `connect()` plays that part
so two associations can talk to each other, and an INIT collision works out because our verification tag
and initial TSN are drawn once per association: every INIT-ACK we send carries the same ones, and a valid
COOKIE-ECHO is accepted in COOKIE-WAIT and COOKIE-ECHOED alike (RFC 9260 §5.2.4 cases B and D). A peer
restart (case A) is not supported: an endpoint that restarts over WebRTC does so with a new DTLS session.

The server side keeps no state before COOKIE-ECHO: the INIT-ACK's state cookie carries what the INIT said,
authenticated by HMAC-SHA256 under a per-association random secret and refused after COOKIE_LIFETIME.

Choices, each bounded so that a hostile peer cannot grow memory without limit:
- Timers follow dcsctp (the stack inside Chromium) rather than RFC 9260's defaults, which are tuned for the
  open Internet: RTO.Initial 0.5 s, RTO.Min 0.4 s (above the 200 ms delayed SACK, so that a lone packet's
  late SACK is no spurious retransmission), RTO.Max 3 s (WebRTC's cap on timer back-off: a call would rather
  find out soon), T1 1 s. After MAX_RETRANSMISSIONS expiries in a row without progress the association
  aborts; ICE consent normally notices a dead path first.
- Received messages are reassembled in TSN order, which RFC 9260 §6.9 makes possible: the fragments of one
  message have consecutive TSNs. A single-chunk unordered message is delivered as soon as it arrives; an
  ordered one waits for its SSN. A message over `max_message_size` aborts the association (as dcsctp does:
  the peer ignored the SDP's max-message-size). Out-of-order chunks are held up to RECEIVE_WINDOW bytes and
  MAX_OUT_OF_ORDER chunks; beyond that a chunk is dropped unacknowledged, and the peer sends it again.
- `send()` raises BufferError when `buffered_amount` would pass `max_send_buffer`, ValueError for a message
  over `max_send_message_size` (the peer's a=max-message-size), an empty one, a stream out of range or
  one being reset, ConnectionError once the association is shutting down or closed. Before the handshake
  completes, messages are queued.
- Partial reliability (RFC 3758): `send(max_retransmits=..., lifetime=...)` abandons a message past its
  limit and moves the peer on with FORWARD-TSN, when the peer supports it (browsers do); otherwise the
  message is sent reliably.
- Stream reset (RFC 6525): only the outgoing SSN reset request, which is what closing a data channel uses;
  the peer's other kinds of request are denied. One request is outstanding at a time; more streams wait for
  the next one.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import struct
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import google_crc32c

__all__ = [
    "Chunk",
    "ChunkType",
    "Closed",
    "DataChunk",
    "Established",
    "ForwardTsnChunk",
    "InitChunk",
    "MessageReceived",
    "OutgoingSsnResetRequest",
    "OutgoingStreamsReset",
    "Packet",
    "ReconfigChunk",
    "ReconfigResponse",
    "SackChunk",
    "SctpAssociation",
    "SctpError",
    "SctpEvent",
    "SctpStats",
    "State",
    "StreamsReset",
]

RTO_INITIAL = 0.5
RTO_MIN = 0.4
RTO_MAX = 3.0
T1_INITIAL = 1.0
SACK_DELAY = 0.2  # delayed SACK (RFC 9260 §6.2: at most 500 ms; everybody uses 200)
MAX_RETRANSMISSIONS = 10  # Association.Max.Retrans
MAX_INIT_RETRANSMISSIONS = 8
COOKIE_LIFETIME = 60.0
MAX_STREAMS = 65535  # what browsers offer and accept
RECEIVE_WINDOW = 1 << 20  # bytes held for reassembly and reordering; our a_rwnd when empty
MAX_OUT_OF_ORDER = 4096  # chunks held above the cumulative TSN
MAX_TSN_AHEAD = 32768  # a TSN further ahead is no honest peer's (gap offsets are 16 bits besides)
MAX_SEND_BUFFER = 16 << 20
_MAX_GAP_BLOCKS = 128
_MAX_DUPLICATES = 32
_MAX_PENDING = 64  # control chunks or whole packets waiting for datagrams_to_send
_CHUNK_OVERHEAD = 64  # what a held chunk costs besides its data, so that 1-byte chunks count too

_MASK = 0xFFFFFFFF
_COMMON_HEADER = struct.Struct("!HHII")
_CHUNK_HEADER = struct.Struct("!BBH")


class ChunkType(enum.IntEnum):
    DATA = 0
    INIT = 1
    INIT_ACK = 2
    SACK = 3
    HEARTBEAT = 4
    HEARTBEAT_ACK = 5
    ABORT = 6
    SHUTDOWN = 7
    SHUTDOWN_ACK = 8
    ERROR = 9
    COOKIE_ECHO = 10
    COOKIE_ACK = 11
    SHUTDOWN_COMPLETE = 14
    I_DATA = 0x40
    RECONFIG = 0x82
    FORWARD_TSN = 0xC0


# INIT / INIT-ACK parameters
_PARAM_STATE_COOKIE = 7
_PARAM_UNRECOGNIZED = 8
_PARAM_SUPPORTED_EXTENSIONS = 0x8008
_PARAM_FORWARD_TSN_SUPPORTED = 0xC000
# known, and of no use to us: addresses, cookie preservative, host name, supported address types
_PARAMS_IGNORED = frozenset({5, 6, 9, 11, 12})
# RE-CONFIG parameters (RFC 6525 §4)
_PARAM_OUTGOING_RESET = 13
_PARAM_INCOMING_RESET = 14
_PARAM_SSN_TSN_RESET = 15
_PARAM_RECONFIG_RESPONSE = 16
_PARAM_ADD_OUTGOING = 17
_PARAM_ADD_INCOMING = 18
# RE-CONFIG results
_RESULT_NOTHING_TO_DO = 0
_RESULT_PERFORMED = 1
_RESULT_DENIED = 2
_RESULT_BAD_SEQUENCE = 5
_RESULT_IN_PROGRESS = 6
# error causes
_CAUSE_STALE_COOKIE = 3
_CAUSE_UNRECOGNIZED_CHUNK = 6
_CAUSE_NO_USER_DATA = 9
_CAUSE_USER_ABORT = 12
_CAUSE_PROTOCOL_VIOLATION = 13

_DATA_END = 0x01
_DATA_BEGINNING = 0x02
_DATA_UNORDERED = 0x04
_DATA_IMMEDIATE = 0x08  # RFC 7053: the sender asks for a SACK now
_T_BIT = 0x01  # ABORT / SHUTDOWN-COMPLETE: the tag is the reflected one


class SctpError(ValueError):
    """A malformed or unacceptable packet; `receive()` counts it under `stats.dropped[reason]` and drops
    it. The parsers raise nothing else."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _after(a: int, b: int) -> bool:
    """a > b in 32-bit serial number arithmetic (RFC 1982), which TSNs follow."""
    return a != b and (a - b) & _MASK < 0x80000000


def _ssn_after(a: int, b: int) -> bool:
    return a != b and (a - b) & 0xFFFF < 0x8000


def _pad(length: int) -> bytes:
    return b"\x00" * (-length % 4)


def _tlv(kind: int, value: bytes) -> bytes:
    """A parameter or error cause: type, length, value, padded to 4 bytes."""
    return struct.pack("!HH", kind, 4 + len(value)) + value + _pad(len(value))


def _parse_tlvs(body: bytes, offset: int = 0) -> tuple[tuple[int, bytes], ...]:
    params = []
    while offset + 4 <= len(body):
        kind, length = struct.unpack_from("!HH", body, offset)
        if length < 4 or offset + length > len(body):
            raise SctpError("malformed", f"parameter {kind:#x} length {length}")
        params.append((kind, body[offset + 4 : offset + length]))
        offset += length + (-length % 4)
    if offset < len(body) and any(body[offset:]):
        raise SctpError("malformed", "trailing bytes after parameters")
    return tuple(params)


# ---------------------------------------------------------------------------------------------- wire


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk as it is on the wire; the typed chunks below read and write its body."""

    type: int
    flags: int
    body: bytes

    def to_bytes(self) -> bytes:
        length = 4 + len(self.body)
        return _CHUNK_HEADER.pack(self.type, self.flags, length) + self.body + _pad(length)


@dataclass(frozen=True, slots=True)
class Packet:
    """Common header and chunks (RFC 9260 §3). `parse` checks the CRC32c and every length."""

    source_port: int
    destination_port: int
    verification_tag: int
    chunks: tuple[Chunk, ...]

    @classmethod
    def parse(cls, data: bytes) -> Packet:
        if len(data) < 16:
            raise SctpError("malformed", "shorter than a header and a chunk")
        source_port, destination_port, tag, _ = _COMMON_HEADER.unpack_from(data)
        (checksum,) = struct.unpack_from("<I", data, 8)  # CRC32c goes little-endian (RFC 9260 appendix A)
        if checksum != google_crc32c.value(data[:8] + b"\x00\x00\x00\x00" + data[12:]):
            raise SctpError("bad_checksum")
        chunks = []
        offset = 12
        while offset + 4 <= len(data):
            kind, flags, length = _CHUNK_HEADER.unpack_from(data, offset)
            if length < 4 or offset + length > len(data):
                raise SctpError("malformed", f"chunk {kind} length {length}")
            chunks.append(Chunk(kind, flags, data[offset + 4 : offset + length]))
            offset += length + (-length % 4)
        if offset < len(data) or not chunks:
            raise SctpError("malformed", "trailing bytes" if chunks else "no chunk")
        return cls(source_port, destination_port, tag, tuple(chunks))

    def to_bytes(self) -> bytes:
        return _serialize(self.source_port, self.destination_port, self.verification_tag,
                          b"".join(chunk.to_bytes() for chunk in self.chunks))


def _serialize(source_port: int, destination_port: int, tag: int, chunks: bytes) -> bytes:
    data = _COMMON_HEADER.pack(source_port, destination_port, tag, 0) + chunks
    return data[:8] + struct.pack("<I", google_crc32c.value(data)) + data[12:]


@dataclass(frozen=True, slots=True)
class DataChunk:
    """DATA (RFC 9260 §3.3.1): one message or one fragment of it (B and E bits)."""

    tsn: int
    stream_id: int
    ssn: int
    ppid: int
    data: bytes
    unordered: bool = False
    beginning: bool = True
    end: bool = True
    immediate: bool = False

    _HEADER = struct.Struct("!IHHI")

    @classmethod
    def parse(cls, chunk: Chunk) -> DataChunk:
        if len(chunk.body) < 12:
            raise SctpError("malformed", "short DATA")
        tsn, stream_id, ssn, ppid = cls._HEADER.unpack_from(chunk.body)
        flags = chunk.flags
        return cls(tsn, stream_id, ssn, ppid, chunk.body[12:], bool(flags & _DATA_UNORDERED),
                   bool(flags & _DATA_BEGINNING), bool(flags & _DATA_END), bool(flags & _DATA_IMMEDIATE))

    def to_bytes(self) -> bytes:
        flags = ((_DATA_UNORDERED if self.unordered else 0) | (_DATA_BEGINNING if self.beginning else 0)
                 | (_DATA_END if self.end else 0) | (_DATA_IMMEDIATE if self.immediate else 0))
        body = self._HEADER.pack(self.tsn, self.stream_id, self.ssn, self.ppid) + self.data
        return Chunk(ChunkType.DATA, flags, body).to_bytes()


@dataclass(frozen=True, slots=True)
class InitChunk:
    """INIT or INIT-ACK (RFC 9260 §3.3.2, §3.3.3): the same fixed fields, then parameters."""

    initiate_tag: int
    a_rwnd: int
    outbound_streams: int
    inbound_streams: int
    initial_tsn: int
    params: tuple[tuple[int, bytes], ...] = ()
    ack: bool = False

    _HEADER = struct.Struct("!IIHHI")

    @classmethod
    def parse(cls, chunk: Chunk) -> InitChunk:
        if len(chunk.body) < 16:
            raise SctpError("malformed", "short INIT")
        tag, a_rwnd, outbound, inbound, tsn = cls._HEADER.unpack_from(chunk.body)
        if tag == 0 or outbound == 0 or inbound == 0:
            raise SctpError("malformed", "INIT with a zero tag or no streams")
        return cls(tag, a_rwnd, outbound, inbound, tsn, _parse_tlvs(chunk.body, 16),
                   chunk.type == ChunkType.INIT_ACK)

    def to_bytes(self) -> bytes:
        body = self._HEADER.pack(self.initiate_tag, self.a_rwnd, self.outbound_streams, self.inbound_streams,
                                 self.initial_tsn) + b"".join(_tlv(kind, value) for kind, value in self.params)
        return Chunk(ChunkType.INIT_ACK if self.ack else ChunkType.INIT, 0, body).to_bytes()

    def param(self, kind: int) -> bytes | None:
        return next((value for k, value in self.params if k == kind), None)


@dataclass(frozen=True, slots=True)
class SackChunk:
    """SACK (RFC 9260 §3.3.4). Gap blocks are (start, end) offsets from the cumulative TSN."""

    cumulative_tsn: int
    a_rwnd: int
    gaps: tuple[tuple[int, int], ...] = ()
    duplicates: tuple[int, ...] = ()

    @classmethod
    def parse(cls, chunk: Chunk) -> SackChunk:
        body = chunk.body
        if len(body) < 12:
            raise SctpError("malformed", "short SACK")
        cumulative, a_rwnd, n_gaps, n_dups = struct.unpack_from("!IIHH", body)
        if len(body) != 12 + 4 * (n_gaps + n_dups):
            raise SctpError("malformed", "SACK length does not match its counts")
        gaps = struct.unpack_from(f"!{2 * n_gaps}H", body, 12)
        duplicates = struct.unpack_from(f"!{n_dups}I", body, 12 + 4 * n_gaps)
        return cls(cumulative, a_rwnd, tuple(zip(gaps[::2], gaps[1::2], strict=True)), duplicates)

    def to_bytes(self) -> bytes:
        body = struct.pack(f"!IIHH{2 * len(self.gaps)}H{len(self.duplicates)}I", self.cumulative_tsn,
                           self.a_rwnd, len(self.gaps), len(self.duplicates),
                           *(n for gap in self.gaps for n in gap), *self.duplicates)
        return Chunk(ChunkType.SACK, 0, body).to_bytes()


@dataclass(frozen=True, slots=True)
class ForwardTsnChunk:
    """FORWARD-TSN (RFC 3758 §3.2): move the cumulative TSN on past abandoned messages; for ordered
    streams, the last SSN skipped."""

    new_cumulative_tsn: int
    streams: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, chunk: Chunk) -> ForwardTsnChunk:
        body = chunk.body
        if len(body) < 4 or len(body) % 4:
            raise SctpError("malformed", "FORWARD-TSN length")
        values = struct.unpack_from(f"!I{(len(body) - 4) // 2}H", body)
        return cls(values[0], tuple(zip(values[1::2], values[2::2], strict=True)))

    def to_bytes(self) -> bytes:
        body = struct.pack(f"!I{2 * len(self.streams)}H", self.new_cumulative_tsn,
                           *(n for pair in self.streams for n in pair))
        return Chunk(ChunkType.FORWARD_TSN, 0, body).to_bytes()


@dataclass(frozen=True, slots=True)
class OutgoingSsnResetRequest:
    """RFC 6525 §4.1: the sender resets these outgoing streams (all, when empty) after `last_tsn`."""

    request_seq: int
    response_seq: int
    last_tsn: int
    streams: tuple[int, ...] = ()

    @classmethod
    def parse(cls, body: bytes) -> OutgoingSsnResetRequest:
        if len(body) < 12 or len(body) % 2:
            raise SctpError("malformed", "outgoing SSN reset request length")
        values = struct.unpack(f"!III{(len(body) - 12) // 2}H", body)
        return cls(values[0], values[1], values[2], values[3:])

    def to_bytes(self) -> bytes:
        return _tlv(_PARAM_OUTGOING_RESET, struct.pack(f"!III{len(self.streams)}H", self.request_seq,
                                                       self.response_seq, self.last_tsn, *self.streams))


@dataclass(frozen=True, slots=True)
class ReconfigResponse:
    """RFC 6525 §4.4 (without the optional TSNs, which only SSN/TSN reset responses carry)."""

    response_seq: int
    result: int

    @classmethod
    def parse(cls, body: bytes) -> ReconfigResponse:
        if len(body) < 8:
            raise SctpError("malformed", "re-configuration response length")
        return cls(*struct.unpack_from("!II", body))

    def to_bytes(self) -> bytes:
        return _tlv(_PARAM_RECONFIG_RESPONSE, struct.pack("!II", self.response_seq, self.result))


@dataclass(frozen=True, slots=True)
class ReconfigChunk:
    """RE-CONFIG (RFC 6525 §3.1): one or two parameters."""

    params: tuple[tuple[int, bytes], ...]

    @classmethod
    def parse(cls, chunk: Chunk) -> ReconfigChunk:
        params = _parse_tlvs(chunk.body)
        if not 1 <= len(params) <= 2:
            raise SctpError("malformed", "RE-CONFIG with no or too many parameters")
        return cls(params)

    @classmethod
    def of(cls, param: OutgoingSsnResetRequest | ReconfigResponse) -> bytes:
        return Chunk(ChunkType.RECONFIG, 0, param.to_bytes()).to_bytes()


@dataclass(frozen=True, slots=True)
class _Cookie:
    """What the INIT said and what our INIT-ACK answered: all the server needs at COOKIE-ECHO."""

    created: float
    local_tag: int
    remote_tag: int
    local_tsn: int
    remote_tsn: int
    remote_a_rwnd: int
    remote_outbound: int
    remote_inbound: int
    remote_forward_tsn: bool
    remote_reconfig: bool

    _FORMAT = struct.Struct("!dIIIIIHHB")
    _MAC = 32

    def to_bytes(self, secret: bytes) -> bytes:
        body = self._FORMAT.pack(self.created, self.local_tag, self.remote_tag, self.local_tsn, self.remote_tsn,
                                 self.remote_a_rwnd, self.remote_outbound, self.remote_inbound,
                                 self.remote_forward_tsn | self.remote_reconfig << 1)
        return body + hmac.digest(secret, body, hashlib.sha256)

    @classmethod
    def parse(cls, data: bytes, secret: bytes) -> _Cookie:
        if len(data) != cls._FORMAT.size + cls._MAC:
            raise SctpError("bad_cookie", "length")
        body = data[: cls._FORMAT.size]
        if not hmac.compare_digest(data[cls._FORMAT.size :], hmac.digest(secret, body, hashlib.sha256)):
            raise SctpError("bad_cookie", "MAC")
        created, ltag, rtag, ltsn, rtsn, a_rwnd, outbound, inbound, flags = cls._FORMAT.unpack(body)
        return cls(created, ltag, rtag, ltsn, rtsn, a_rwnd, outbound, inbound, bool(flags & 1), bool(flags & 2))


# -------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Established:
    """The handshake is complete: queued messages start to flow."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    stream_id: int
    ppid: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamsReset:
    """The peer reset these outgoing streams of its own (closing data channels): what arrives on them
    next starts again at SSN 0."""

    stream_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OutgoingStreamsReset:
    """Our `reset_streams()` request is done (or the peer refused it, which is counted): these streams
    start again at SSN 0 and may be used again."""

    stream_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Closed:
    reason: str


SctpEvent = Established | MessageReceived | StreamsReset | OutgoingStreamsReset | Closed


class State(enum.Enum):
    CLOSED = "closed"
    COOKIE_WAIT = "cookie-wait"
    COOKIE_ECHOED = "cookie-echoed"
    ESTABLISHED = "established"
    SHUTDOWN_PENDING = "shutdown-pending"
    SHUTDOWN_SENT = "shutdown-sent"
    SHUTDOWN_RECEIVED = "shutdown-received"
    SHUTDOWN_ACK_SENT = "shutdown-ack-sent"


_CONNECTED = frozenset({State.ESTABLISHED, State.SHUTDOWN_PENDING, State.SHUTDOWN_SENT, State.SHUTDOWN_RECEIVED,
                        State.SHUTDOWN_ACK_SENT})


@dataclass
class SctpStats:
    packets_received: int = 0
    packets_sent: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # packets, by reason (SctpError.reason)
    chunks_ignored: int = 0  # unknown chunk types, or chunks that make no sense in this state
    duplicate_tsns: int = 0
    data_dropped: int = 0  # chunks dropped unacknowledged for want of room: the peer sends them again
    retransmissions: int = 0
    fast_retransmissions: int = 0
    t3_expirations: int = 0
    abandoned_messages: int = 0
    reset_refused: int = 0  # our stream reset requests the peer refused


# ------------------------------------------------------------------------------------- association

_QUEUED, _OUTSTANDING, _ACKED, _RETRANSMIT, _ABANDONED = range(5)


@dataclass(slots=True, eq=False)
class _OutMessage:
    """The partial-reliability limits of one message, and its chunks, to abandon them together."""

    max_retransmits: int | None
    expires: float | None
    chunks: list[_OutChunk] = field(default_factory=list)
    abandoned: bool = False


@dataclass(slots=True, eq=False)
class _OutChunk:
    tsn: int
    stream_id: int
    ssn: int
    unordered: bool
    wire: bytes  # the DATA chunk as it goes out, built once
    size: int  # user data bytes: what flight size, the windows and buffered_amount count
    message: _OutMessage | None
    state: int = _QUEUED
    sent_count: int = 0
    sent_at: float = 0.0
    misses: int = 0
    fast_retransmitted: bool = False


@dataclass(slots=True)
class _InStream:
    """An ordered incoming stream: the SSN due next, and complete messages that came before their turn."""

    next_ssn: int = 0
    early: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # SSN → (ppid, data)


class SctpAssociation:
    """One SCTP association: a pure state machine. After every `receive`, `send`, `handle_timer`,
    `reset_streams`, `shutdown` or `abort`, read `next_event()` until None and send what
    `datagrams_to_send(now)` returns; call `handle_timer(now)` when `next_timer()` has passed."""

    def __init__(self, *, port: int = 5000, remote_port: int = 5000, max_message_size: int = 262144,
                 random_bytes: Callable[[int], bytes] = secrets.token_bytes, mtu: int = 1200,
                 max_send_buffer: int = MAX_SEND_BUFFER, max_send_message_size: int | None = None) -> None:
        if mtu < 256:
            raise ValueError("mtu too small")
        self.port = port
        self.remote_port = remote_port
        self.max_message_size = max_message_size  # what we take: our a=max-message-size
        # what we may send: the peer's a=max-message-size (RFC 8841), ours when not given
        self.max_send_message_size = max_message_size if max_send_message_size is None else max_send_message_size
        self.max_send_buffer = max_send_buffer
        self.mtu = mtu
        self.state = State.CLOSED
        self.stats = SctpStats()
        self._random_bytes = random_bytes
        self._events: deque[SctpEvent] = deque()
        self._closed = False  # CLOSED for good, not just not started
        self._secret = random_bytes(32)
        self._local_tag = int.from_bytes(random_bytes(4), "big") or 1
        self._local_initial_tsn = int.from_bytes(random_bytes(4), "big")
        self._remote_tag = 0
        self._remote_forward_tsn = False
        self._outbound_streams = MAX_STREAMS
        self._inbound_streams = MAX_STREAMS
        self._receive_window = max(RECEIVE_WINDOW, 2 * max_message_size)
        self._fragment = (mtu - 12 - 16) & ~3  # user data per DATA chunk, so that one fits a packet alone

        # sending
        self._next_tsn = self._local_initial_tsn
        self._cumulative_ack = (self._local_initial_tsn - 1) & _MASK  # the peer's cumulative TSN of ours
        self._queue: deque[_OutChunk] = deque()  # TSN assigned, never sent
        self._in_flight: deque[_OutChunk] = deque()  # sent, above the peer's cumulative TSN: consecutive TSNs
        self._flight_size = 0  # bytes of chunks _OUTSTANDING
        self._retransmits = 0  # chunks marked _RETRANSMIT
        self._buffered = 0
        self._ssn: dict[int, int] = {}
        self._cwnd = min(4 * mtu, max(2 * mtu, 4380))  # RFC 9260 §7.2.1
        self._ssthresh = RECEIVE_WINDOW
        self._partial_bytes_acked = 0
        self._peer_rwnd = RECEIVE_WINDOW
        self._fast_recovery_exit: int | None = None
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rto = RTO_INITIAL
        self._errors = 0  # T3 expiries in a row
        self._forward_tsn: ForwardTsnChunk | None = None  # due to be sent

        # receiving
        self._remote_cumulative_tsn = 0
        self._ahead: dict[int, DataChunk | None] = {}  # TSN above the cumulative one → chunk (None: delivered)
        self._ahead_bytes = 0
        self._partial: list[DataChunk] = []  # fragments of the message being reassembled, in TSN order
        self._partial_bytes = 0
        self._streams_in: dict[int, _InStream] = {}
        self._early_bytes = 0
        self._duplicates: list[int] = []
        self._sack_now = False
        self._sack_deadline: float | None = None
        self._data_packets = 0  # packets with DATA since our last SACK

        # handshake and shutdown
        self._handshake_packet: bytes | None = None  # INIT or COOKIE-ECHO, sent again at T1
        self._init_chunk: bytes = b""
        self._t1: float | None = None
        self._t1_tries = 0
        self._t2: float | None = None
        self._t2_tries = 0
        self._t3: float | None = None

        # stream reset (RFC 6525): ours, and the peer's
        self._reconfig_seq = self._local_initial_tsn  # §4.1: request sequence numbers start at the initial TSN
        self._reset_request: OutgoingSsnResetRequest | None = None  # outstanding
        self._reset_waiting: list[int] = []  # streams for the next request
        self._resetting: set[int] = set()  # ours, waiting or outstanding: no new message on them
        self._reconfig_timer: float | None = None
        self._reconfig_tries = 0
        self._peer_reconfig_seq = 0  # the peer's request sequence number we expect next
        self._last_response: ReconfigResponse | None = None
        self._deferred_reset: OutgoingSsnResetRequest | None = None

        # output
        self._packets: list[bytes] = []  # whole packets under a tag of their own (INIT, INIT-ACK, ...)
        self._control: list[bytes] = []  # chunks to go first under the peer's tag

    # ------------------------------------------------------------------------------------ public API

    def __repr__(self) -> str:
        return f"<SctpAssociation {self.state.value} port={self.port}>"

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by send() and not yet acknowledged (nor abandoned)."""
        return self._buffered

    @property
    def outbound_streams(self) -> int:
        return self._outbound_streams

    def connect(self, now: float) -> None:
        """The client's part: send INIT."""
        if self.state is not State.CLOSED or self._closed:
            raise ConnectionError(f"cannot connect in state {self.state.value}")
        self._init_chunk = InitChunk(self._local_tag, self._receive_window, MAX_STREAMS, MAX_STREAMS,
                                     self._local_initial_tsn, self._our_params()).to_bytes()
        self._send_init(now)

    def receive(self, packet: bytes, now: float) -> None:
        """Take one SCTP packet. A malformed or unacceptable one is counted and dropped; nothing raises."""
        self.stats.packets_received += 1
        try:
            self._handle(Packet.parse(packet), now)
        except SctpError as error:
            self.stats.dropped[error.reason] += 1

    def next_event(self) -> SctpEvent | None:
        return self._events.popleft() if self._events else None

    def next_timer(self) -> float | None:
        timers = [t for t in (self._t1, self._t2, self._t3, self._sack_deadline, self._reconfig_timer)
                  if t is not None]
        return min(timers) if timers else None

    def send(self, stream_id: int, ppid: int, data: bytes, now: float, *, ordered: bool = True,
             max_retransmits: int | None = None, lifetime: float | None = None) -> None:
        """Queue one message. `max_retransmits` or `lifetime` (seconds) make it partially reliable."""
        if self._closed or self.state not in (State.CLOSED, State.COOKIE_WAIT, State.COOKIE_ECHOED,
                                              State.ESTABLISHED):
            raise ConnectionError(f"cannot send in state {self.state.value}")
        if not 0 <= stream_id < self._outbound_streams:
            raise ValueError(f"stream {stream_id} out of range")
        if stream_id in self._resetting:
            raise ValueError(f"stream {stream_id} is being reset")
        if not data:
            raise ValueError("an SCTP message cannot be empty")
        if len(data) > self.max_send_message_size:
            raise ValueError(f"message of {len(data)} bytes over the peer's max_send_message_size")
        if self._buffered + len(data) > self.max_send_buffer:
            raise BufferError("send buffer full")
        ssn = 0
        if ordered:
            ssn = self._ssn.get(stream_id, 0)
            self._ssn[stream_id] = (ssn + 1) & 0xFFFF
        message = None
        if max_retransmits is not None or lifetime is not None:
            message = _OutMessage(max_retransmits, None if lifetime is None else now + lifetime)
        last = len(data) - 1
        for offset in range(0, len(data), self._fragment):
            piece = data[offset : offset + self._fragment]
            wire = DataChunk(self._next_tsn, stream_id, ssn, ppid, piece, not ordered, offset == 0,
                             offset + self._fragment > last).to_bytes()
            chunk = _OutChunk(self._next_tsn, stream_id, ssn, not ordered, wire, len(piece), message)
            self._queue.append(chunk)
            if message is not None:
                message.chunks.append(chunk)
            self._next_tsn = (self._next_tsn + 1) & _MASK
        self._buffered += len(data)

    def reset_streams(self, stream_ids: list[int], now: float) -> None:
        """Reset our outgoing streams (RFC 6525 §5.1.2): what closes data channels. `OutgoingStreamsReset`
        says when it is done; until then the streams take no new message."""
        if self._closed or self.state not in (State.CLOSED, State.COOKIE_WAIT, State.COOKIE_ECHOED,
                                              State.ESTABLISHED):
            return
        for stream_id in stream_ids:
            if stream_id not in self._resetting:
                self._resetting.add(stream_id)
                self._reset_waiting.append(stream_id)

    def shutdown(self, now: float) -> None:
        """Close gracefully (RFC 9260 §9.2): what is queued is delivered first."""
        if self._closed:
            return
        if self.state in (State.CLOSED, State.COOKIE_WAIT, State.COOKIE_ECHOED):
            self.abort(now, "shutdown before established")
        elif self.state is State.ESTABLISHED:
            self.state = State.SHUTDOWN_PENDING
            self._check_shutdown(now)

    def abort(self, now: float, reason: str) -> None:
        if self._closed:
            return
        self._abort(_CAUSE_USER_ABORT, reason)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """The packets to hand to DTLS now, each at most `mtu` bytes."""
        packets, self._packets = self._packets, []
        if self.state in _CONNECTED and not self._closed:
            self._start_reset_request(now)
            data = self._data_to_send(now)
            chunks: list[bytes] = []
            if self._sack_now or (data and self._sack_deadline is not None):
                chunks.append(self._sack())
            chunks += self._control
            self._control = []
            if self._forward_tsn is not None:
                chunks.append(self._forward_tsn.to_bytes())
                self._forward_tsn = None
            chunks += data
            packets += self._packetize(chunks, self._remote_tag)
            if self._in_flight and self._t3 is None:
                self._t3 = now + self._rto
        self.stats.packets_sent += len(packets)
        return packets

    def handle_timer(self, now: float) -> None:
        if self._closed:
            return
        if self._t1 is not None and now >= self._t1:
            self._on_t1(now)
        if self._t2 is not None and now >= self._t2:
            self._on_t2(now)
        if self._t3 is not None and now >= self._t3:
            self._on_t3(now)
        if self._sack_deadline is not None and now >= self._sack_deadline:
            self._sack_deadline = None
            self._sack_now = True
        if self._reconfig_timer is not None and now >= self._reconfig_timer:
            self._on_reconfig_timer(now)

    # ------------------------------------------------------------------------------------- receiving

    def _handle(self, packet: Packet, now: float) -> None:
        if packet.destination_port != self.port or packet.source_port != self.remote_port:
            raise SctpError("bad_port")
        first = packet.chunks[0]
        if first.type == ChunkType.INIT:
            # §8.5.1: an INIT goes alone, under a zero tag
            if len(packet.chunks) != 1 or packet.verification_tag != 0:
                raise SctpError("bad_tag", "INIT bundled or under a tag")
            self._on_init(InitChunk.parse(first), now)
            return
        if self._closed:
            raise SctpError("closed")
        if first.type in (ChunkType.ABORT, ChunkType.SHUTDOWN_COMPLETE) and first.flags & _T_BIT:
            if self._remote_tag == 0 or packet.verification_tag != self._remote_tag:
                raise SctpError("bad_tag")
        elif packet.verification_tag != self._local_tag:
            raise SctpError("bad_tag")
        if self.state is State.CLOSED and first.type != ChunkType.COOKIE_ECHO:
            raise SctpError("out_of_the_blue")
        if self.state is State.COOKIE_ECHOED and first.type in (ChunkType.DATA, ChunkType.SACK, ChunkType.HEARTBEAT):
            self._established()  # an implied COOKIE-ACK, as usrsctp has it: ours was lost, the peer is up
        had_data = False
        gaps_before = bool(self._ahead)
        for chunk in packet.chunks:
            if self._closed:
                break
            kind = chunk.type
            if kind == ChunkType.DATA:
                if self.state in _CONNECTED:
                    self._on_data(DataChunk.parse(chunk))
                    had_data = True
                else:
                    self.stats.chunks_ignored += 1
            elif kind == ChunkType.SACK:
                if self.state in _CONNECTED:
                    self._on_sack(SackChunk.parse(chunk), now)
                else:
                    self.stats.chunks_ignored += 1
            elif kind == ChunkType.INIT:
                raise SctpError("bad_tag", "INIT bundled")
            elif kind == ChunkType.INIT_ACK:
                self._on_init_ack(packet, InitChunk.parse(chunk), now)
            elif kind == ChunkType.COOKIE_ECHO:
                self._on_cookie_echo(packet, chunk, now)
            elif kind == ChunkType.COOKIE_ACK:
                if self.state is State.COOKIE_ECHOED:
                    self._established()
            elif kind == ChunkType.HEARTBEAT:
                if self.state in _CONNECTED and len(chunk.body) <= self.mtu - 16:
                    self._queue_control(Chunk(ChunkType.HEARTBEAT_ACK, 0, chunk.body).to_bytes())
            elif kind == ChunkType.HEARTBEAT_ACK:
                pass  # we send no heartbeats of our own: ICE consent watches the path
            elif kind == ChunkType.ABORT:
                self._close(f"aborted by peer{_describe_causes(chunk.body)}")
            elif kind == ChunkType.ERROR:
                self._on_error(chunk, now)
            elif kind == ChunkType.FORWARD_TSN:
                if self.state in _CONNECTED:
                    self._on_forward_tsn(ForwardTsnChunk.parse(chunk))
                    had_data = True
            elif kind == ChunkType.RECONFIG:
                if self.state in _CONNECTED:
                    self._on_reconfig(ReconfigChunk.parse(chunk), now)
            elif kind == ChunkType.SHUTDOWN:
                self._on_shutdown(chunk, now)
            elif kind == ChunkType.SHUTDOWN_ACK:
                if self.state in (State.SHUTDOWN_SENT, State.SHUTDOWN_ACK_SENT):
                    self._packets.append(self._packet([Chunk(ChunkType.SHUTDOWN_COMPLETE, 0, b"").to_bytes()]))
                    self._close("shutdown")
            elif kind == ChunkType.SHUTDOWN_COMPLETE:
                if self.state is State.SHUTDOWN_ACK_SENT:
                    self._close("shutdown")
            else:
                # §3.2: the upper two bits of an unknown type say whether to go on and whether to report
                self.stats.chunks_ignored += 1
                if kind & 0x40 and self.state in _CONNECTED:
                    self._queue_control(Chunk(ChunkType.ERROR, 0, _tlv(_CAUSE_UNRECOGNIZED_CHUNK,
                                                                       chunk.to_bytes()[:256])).to_bytes())
                if not kind & 0x80:
                    break
        if had_data and not self._closed:
            self._data_packets += 1
            if self.state is State.SHUTDOWN_SENT:
                self._queue_control(self._shutdown_chunk())
            # §6.7: a gap (or one just filled) or a duplicate is reported at once; else every second packet
            if self._sack_now or self._ahead or gaps_before or self._data_packets >= 2 or self.state is not \
                    State.ESTABLISHED:
                self._sack_now = True
                self._sack_deadline = None
            elif self._sack_deadline is None:
                self._sack_deadline = now + SACK_DELAY

    def _on_data(self, chunk: DataChunk) -> None:
        if not chunk.data:
            self._abort(_CAUSE_NO_USER_DATA, "DATA without user data")
            return
        if chunk.immediate:
            self._sack_now = True
        tsn = chunk.tsn
        cumulative = self._remote_cumulative_tsn
        if not _after(tsn, cumulative) or tsn in self._ahead:
            self.stats.duplicate_tsns += 1
            if len(self._duplicates) < _MAX_DUPLICATES:
                self._duplicates.append(tsn)
            self._sack_now = True
            return
        if chunk.stream_id >= self._inbound_streams:
            chunk = DataChunk(tsn, chunk.stream_id, 0, 0, b"", beginning=False, end=False)  # acked, dropped
        if tsn == (cumulative + 1) & _MASK:
            self._remote_cumulative_tsn = tsn
            self._in_order(chunk)
            self._drain_ahead()
            return
        if ((tsn - cumulative) & _MASK > MAX_TSN_AHEAD or len(self._ahead) >= MAX_OUT_OF_ORDER
                or self._held_bytes() + len(chunk.data) > self._receive_window):
            self.stats.data_dropped += 1
            return
        if chunk.unordered and chunk.beginning and chunk.end:
            self._ahead[tsn] = None  # nothing to wait for: deliver now, remember the TSN for the SACK
            self._events.append(MessageReceived(chunk.stream_id, chunk.ppid, chunk.data))
        else:
            self._ahead[tsn] = chunk
            self._ahead_bytes += len(chunk.data) + _CHUNK_OVERHEAD

    def _drain_ahead(self) -> None:
        while self._ahead and not self._closed:
            tsn = (self._remote_cumulative_tsn + 1) & _MASK
            if tsn not in self._ahead:
                break
            chunk = self._ahead.pop(tsn)
            self._remote_cumulative_tsn = tsn
            if chunk is not None:
                self._ahead_bytes -= len(chunk.data) + _CHUNK_OVERHEAD
                self._in_order(chunk)
            else:
                self._check_deferred_reset()

    def _held_bytes(self) -> int:
        return self._ahead_bytes + self._partial_bytes + self._early_bytes

    def _in_order(self, chunk: DataChunk) -> None:
        """Take the chunk the cumulative TSN just reached."""
        if chunk.data:  # not one for a stream out of range
            self._reassemble(chunk)
        self._check_deferred_reset()

    def _reassemble(self, chunk: DataChunk) -> None:
        """In TSN order, which §6.9 makes enough: the fragments of one message have consecutive TSNs."""
        if chunk.beginning:
            self._partial, self._partial_bytes = [], 0  # what it interrupts lost its end to a FORWARD-TSN
        elif not self._partial or not _continues(self._partial[-1], chunk):
            self._partial, self._partial_bytes = [], 0  # its beginning was abandoned
            return
        if chunk.end and not self._partial:
            self._complete(chunk.stream_id, chunk.ssn, chunk.ppid, chunk.unordered, chunk.data)
            return
        self._partial.append(chunk)
        self._partial_bytes += len(chunk.data) + _CHUNK_OVERHEAD
        if self._partial_bytes - len(self._partial) * _CHUNK_OVERHEAD > self.max_message_size:
            self._abort(_CAUSE_PROTOCOL_VIOLATION, "message over max_message_size")
        elif chunk.end:
            first = self._partial[0]
            data = b"".join(piece.data for piece in self._partial)
            self._partial, self._partial_bytes = [], 0
            self._complete(first.stream_id, first.ssn, first.ppid, first.unordered, data)

    def _complete(self, stream_id: int, ssn: int, ppid: int, unordered: bool, data: bytes) -> None:
        if unordered:
            self._events.append(MessageReceived(stream_id, ppid, data))
            return
        stream = self._streams_in.setdefault(stream_id, _InStream())
        if ssn == stream.next_ssn:
            self._events.append(MessageReceived(stream_id, ppid, data))
            stream.next_ssn = (ssn + 1) & 0xFFFF
            self._deliver_early(stream_id, stream)
        elif _ssn_after(ssn, stream.next_ssn) and ssn not in stream.early:
            # only after a FORWARD-TSN that skipped an SSN, or a misbehaving peer: bounded all the same
            if self._held_bytes() + len(data) > self._receive_window:
                self._abort(_CAUSE_PROTOCOL_VIOLATION, "receive buffer exhausted")
                return
            stream.early[ssn] = (ppid, data)
            self._early_bytes += len(data) + _CHUNK_OVERHEAD

    def _deliver_early(self, stream_id: int, stream: _InStream) -> None:
        while stream.next_ssn in stream.early:
            ppid, data = stream.early.pop(stream.next_ssn)
            self._early_bytes -= len(data) + _CHUNK_OVERHEAD
            self._events.append(MessageReceived(stream_id, ppid, data))
            stream.next_ssn = (stream.next_ssn + 1) & 0xFFFF

    def _on_forward_tsn(self, forward: ForwardTsnChunk) -> None:
        """RFC 3758 §3.6: the peer abandoned what lies up to the new cumulative TSN."""
        self._sack_now = True
        new = forward.new_cumulative_tsn
        if not _after(new, self._remote_cumulative_tsn):
            return
        if (new - self._remote_cumulative_tsn) & _MASK > 1 << 30:
            raise SctpError("malformed", "FORWARD-TSN too far ahead")
        cumulative = self._remote_cumulative_tsn
        for tsn in sorted((t for t in self._ahead if not _after(t, new)), key=lambda t: (t - cumulative) & _MASK):
            chunk = self._ahead.pop(tsn)
            if chunk is not None:  # received before the peer gave up on what came before it
                self._ahead_bytes -= len(chunk.data) + _CHUNK_OVERHEAD
                self._remote_cumulative_tsn = tsn
                self._in_order(chunk)
                if self._closed:
                    return
        self._remote_cumulative_tsn = new
        if self._partial and self._partial[-1].tsn != new:
            self._partial, self._partial_bytes = [], 0  # its missing fragments were abandoned
        for stream_id, ssn in forward.streams:
            stream = self._streams_in.setdefault(stream_id, _InStream())
            if not _ssn_after(stream.next_ssn, ssn):
                for early in [s for s in stream.early if not _ssn_after(s, ssn)]:
                    self._early_bytes -= len(stream.early.pop(early)[1]) + _CHUNK_OVERHEAD
                stream.next_ssn = (ssn + 1) & 0xFFFF
                self._deliver_early(stream_id, stream)
        self._check_deferred_reset()
        self._drain_ahead()

    def _sack(self) -> bytes:
        gaps: list[tuple[int, int]] = []
        if self._ahead:
            cumulative = self._remote_cumulative_tsn
            offsets = sorted((tsn - cumulative) & _MASK for tsn in self._ahead)
            start = end = offsets[0]
            for offset in offsets[1:]:
                if offset != end + 1:
                    gaps.append((start, end))
                    start = offset
                end = offset
            gaps.append((start, end))
        duplicates, self._duplicates = self._duplicates, []
        self._sack_now = False
        self._sack_deadline = None
        self._data_packets = 0
        a_rwnd = max(0, self._receive_window - self._held_bytes())
        return SackChunk(self._remote_cumulative_tsn, a_rwnd, tuple(gaps[:_MAX_GAP_BLOCKS]),
                         tuple(duplicates)).to_bytes()

    # ---------------------------------------------------------------------------------------- sending

    def _on_sack(self, sack: SackChunk, now: float) -> None:
        cumulative = sack.cumulative_tsn
        if _after(self._cumulative_ack, cumulative):
            return  # older than one already processed (§6.2.1 D)
        highest_sent = self._in_flight[-1].tsn if self._in_flight else self._cumulative_ack
        if _after(cumulative, highest_sent):
            raise SctpError("malformed", "SACK for a TSN never sent")
        fully_used = self._flight_size + self.mtu >= self._cwnd
        advanced = cumulative != self._cumulative_ack
        newly_acked = 0
        highest_newly_acked: int | None = None
        rtt_sample: _OutChunk | None = None
        while self._in_flight and not _after(self._in_flight[0].tsn, cumulative):
            chunk = self._in_flight.popleft()
            if chunk.state != _ABANDONED:
                self._buffered -= chunk.size
                newly_acked += chunk.size
                if chunk.state != _ACKED:
                    highest_newly_acked = chunk.tsn
                    if chunk.sent_count == 1:
                        rtt_sample = chunk
            self._unmark(chunk)
        self._cumulative_ack = cumulative
        in_flight = self._in_flight
        for start, end in sack.gaps:
            if start == 0 or end < start:
                continue
            for index in range(start - 1, min(end, len(in_flight))):
                chunk = in_flight[index]
                if chunk.state in (_OUTSTANDING, _RETRANSMIT):
                    self._unmark(chunk)
                    chunk.state = _ACKED
                    if highest_newly_acked is None or _after(chunk.tsn, highest_newly_acked):
                        highest_newly_acked = chunk.tsn
                    if chunk.sent_count == 1:
                        rtt_sample = chunk
        if rtt_sample is not None:
            self._measure_rtt(now - rtt_sample.sent_at)
        if highest_newly_acked is not None and sack.gaps:
            self._count_misses(highest_newly_acked, now)
        self._peer_rwnd = max(0, sack.a_rwnd - self._flight_size)
        if advanced:
            self._errors = 0
            if self._fast_recovery_exit is not None and not _after(self._fast_recovery_exit, cumulative):
                self._fast_recovery_exit = None
            if self._fast_recovery_exit is None and fully_used:
                if self._cwnd <= self._ssthresh:  # slow start
                    self._cwnd += min(newly_acked, self.mtu)
                else:  # congestion avoidance
                    self._partial_bytes_acked += newly_acked
                    if self._partial_bytes_acked >= self._cwnd:
                        self._partial_bytes_acked -= self._cwnd
                        self._cwnd += self.mtu
            self._t3 = now + self._rto if self._in_flight else None
        elif not self._in_flight:
            self._t3 = None
        self._advance_ack_point()
        self._check_shutdown(now)

    def _unmark(self, chunk: _OutChunk) -> None:
        """Take a chunk out of the flight size or the retransmission count, whichever it was in."""
        if chunk.state == _OUTSTANDING:
            self._flight_size -= chunk.size
        elif chunk.state == _RETRANSMIT:
            self._retransmits -= 1

    def _count_misses(self, highest_newly_acked: int, now: float) -> None:
        """§7.2.4 fast retransmit: three SACKs reporting a chunk missing below newly acked ones."""
        marked = False
        for chunk in self._in_flight:
            if not _after(highest_newly_acked, chunk.tsn):
                break
            if chunk.state == _OUTSTANDING and not chunk.fast_retransmitted:
                chunk.misses += 1
                if chunk.misses >= 3:
                    chunk.fast_retransmitted = True
                    self.stats.fast_retransmissions += 1
                    self._mark_retransmit(chunk, now)
                    marked = True
        if marked and self._fast_recovery_exit is None:
            self._ssthresh = max(self._cwnd // 2, 4 * self.mtu)
            self._cwnd = self._ssthresh
            self._partial_bytes_acked = 0
            self._fast_recovery_exit = self._in_flight[-1].tsn

    def _mark_retransmit(self, chunk: _OutChunk, now: float) -> None:
        message = chunk.message
        if message is not None and self._remote_forward_tsn and (
                (message.max_retransmits is not None and chunk.sent_count > message.max_retransmits)
                or (message.expires is not None and now >= message.expires)):
            self._abandon(message)
            return
        self._unmark(chunk)
        chunk.state = _RETRANSMIT
        self._retransmits += 1

    def _abandon(self, message: _OutMessage | None) -> None:
        if message is None or message.abandoned:
            return
        message.abandoned = True
        self.stats.abandoned_messages += 1
        for chunk in message.chunks:
            if chunk.state in (_QUEUED, _OUTSTANDING, _RETRANSMIT):
                self._buffered -= chunk.size
                self._unmark(chunk)
                chunk.state = _ABANDONED

    def _advance_ack_point(self) -> None:
        """RFC 3758 §3.5 C: move the peer past abandoned chunks at the front with a FORWARD-TSN."""
        if not self._remote_forward_tsn:
            return
        while self._queue and self._queue[0].state == _ABANDONED:
            # never sent, but given TSNs: the peer must skip them too
            self._in_flight.append(self._queue.popleft())
        point = self._cumulative_ack
        streams: dict[int, int] = {}
        for chunk in self._in_flight:
            if chunk.state != _ABANDONED:
                break
            point = chunk.tsn
            if not chunk.unordered:
                streams[chunk.stream_id] = chunk.ssn
        if point != self._cumulative_ack:
            self._forward_tsn = ForwardTsnChunk(point, tuple(sorted(streams.items())))

    def _measure_rtt(self, rtt: float) -> None:
        """RFC 9260 §6.3.1."""
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self._rto = min(max(self._srtt + 4 * self._rttvar, RTO_MIN), RTO_MAX)

    def _data_to_send(self, now: float) -> list[bytes]:
        """Retransmissions first, then new chunks, within the congestion window and the peer's a_rwnd
        (with nothing in flight, one chunk goes whatever the a_rwnd: the zero window probe)."""
        chunks: list[bytes] = []
        abandoned = False
        if self._retransmits:
            for chunk in self._in_flight:
                if chunk.state != _RETRANSMIT:
                    continue
                if chunks and self._flight_size >= self._cwnd:
                    break
                if self._expired(chunk.message, now):
                    self._abandon(chunk.message)
                    abandoned = True
                    continue
                self._retransmits -= 1
                self._transmit(chunk, now)
                self.stats.retransmissions += 1
                chunks.append(chunk.wire)
        while self._queue:
            chunk = self._queue[0]
            if chunk.state == _ABANDONED or self._expired(chunk.message, now):
                self._abandon(chunk.message)
                abandoned = True
                self._in_flight.append(self._queue.popleft())
                continue
            if self._flight_size >= self._cwnd or (chunk.size > self._peer_rwnd and self._flight_size):
                break
            self._in_flight.append(self._queue.popleft())
            self._transmit(chunk, now)
            chunks.append(chunk.wire)
        if abandoned:
            self._advance_ack_point()
        return chunks

    def _expired(self, message: _OutMessage | None, now: float) -> bool:
        return (message is not None and message.expires is not None and now >= message.expires
                and self._remote_forward_tsn)

    def _transmit(self, chunk: _OutChunk, now: float) -> None:
        chunk.state = _OUTSTANDING
        chunk.sent_count += 1
        chunk.sent_at = now
        chunk.misses = 0
        self._flight_size += chunk.size
        self._peer_rwnd = max(0, self._peer_rwnd - chunk.size)

    def _on_t3(self, now: float) -> None:
        """§6.3.3: everything outstanding is sent again, one packet's worth at first (cwnd = 1 MTU)."""
        self._t3 = None
        if not self._in_flight:
            return
        self.stats.t3_expirations += 1
        self._errors += 1
        if self._errors > MAX_RETRANSMISSIONS:
            self._abort(_CAUSE_USER_ABORT, "too many retransmissions")
            return
        self._rto = min(self._rto * 2, RTO_MAX)
        self._ssthresh = max(self._cwnd // 2, 4 * self.mtu)
        self._cwnd = self.mtu
        self._partial_bytes_acked = 0
        self._fast_recovery_exit = None
        for chunk in list(self._in_flight):
            if chunk.state == _OUTSTANDING:
                self._mark_retransmit(chunk, now)
        self._advance_ack_point()
        self._t3 = now + self._rto

    # ------------------------------------------------------------------------------------ handshake

    def _our_params(self) -> tuple[tuple[int, bytes], ...]:
        return ((_PARAM_FORWARD_TSN_SUPPORTED, b""),
                (_PARAM_SUPPORTED_EXTENSIONS, bytes([ChunkType.RECONFIG, ChunkType.FORWARD_TSN])))

    def _send_init(self, now: float) -> None:
        self.state = State.COOKIE_WAIT
        self._handshake_packet = self._packet([self._init_chunk], tag=0)
        self._packets.append(self._handshake_packet)
        self._t1 = now + T1_INITIAL
        self._t1_tries = 0

    def _on_init(self, init: InitChunk, now: float) -> None:
        """Answer with an INIT-ACK and keep nothing (§5.1): all we need comes back in the cookie."""
        if self._closed or self.state not in (State.CLOSED, State.COOKIE_WAIT, State.COOKIE_ECHOED):
            self.stats.chunks_ignored += 1  # a peer restart: unsupported (module docstring)
            return
        forward_tsn, reconfig, unrecognized = _peer_features(init)
        cookie = _Cookie(now, self._local_tag, init.initiate_tag, self._local_initial_tsn, init.initial_tsn,
                         init.a_rwnd, init.outbound_streams, init.inbound_streams, forward_tsn, reconfig)
        params = ((_PARAM_STATE_COOKIE, cookie.to_bytes(self._secret)), *self._our_params(),
                  *((_PARAM_UNRECOGNIZED, param) for param in unrecognized))
        ack = InitChunk(self._local_tag, self._receive_window, MAX_STREAMS, MAX_STREAMS, self._local_initial_tsn,
                        params, ack=True)
        self._queue_packet(self._packet([ack.to_bytes()], tag=init.initiate_tag))

    def _on_init_ack(self, packet: Packet, ack: InitChunk, now: float) -> None:
        if self.state is not State.COOKIE_WAIT:
            self.stats.chunks_ignored += 1
            return
        cookie = ack.param(_PARAM_STATE_COOKIE)
        if cookie is None or len(cookie) > self.mtu - 16:
            raise SctpError("malformed", "INIT-ACK without a usable cookie")
        forward_tsn, _, _ = _peer_features(ack)
        self._remote(ack.initiate_tag, ack.initial_tsn, ack.a_rwnd, ack.outbound_streams, ack.inbound_streams,
                     forward_tsn)
        self.state = State.COOKIE_ECHOED
        self._handshake_packet = self._packet([Chunk(ChunkType.COOKIE_ECHO, 0, cookie).to_bytes()])
        self._packets.append(self._handshake_packet)
        self._t1 = now + T1_INITIAL
        self._t1_tries = 0

    def _on_cookie_echo(self, packet: Packet, chunk: Chunk, now: float) -> None:
        cookie = _Cookie.parse(chunk.body, self._secret)
        if cookie.local_tag != self._local_tag or packet.verification_tag != cookie.local_tag:
            raise SctpError("bad_cookie", "tag")
        if cookie.created > now + 1.0:
            raise SctpError("bad_cookie", "from the future")
        if now - cookie.created > COOKIE_LIFETIME:
            # §5.2.6: tell the peer, in microseconds, how stale; it starts over with a new INIT
            staleness = min(int((now - cookie.created - COOKIE_LIFETIME) * 1e6), _MASK)
            error = Chunk(ChunkType.ERROR, 0, _tlv(_CAUSE_STALE_COOKIE, struct.pack("!I", staleness)))
            self._queue_packet(self._packet([error.to_bytes()], tag=cookie.remote_tag))
            raise SctpError("stale_cookie")
        if self.state in (State.CLOSED, State.COOKIE_WAIT, State.COOKIE_ECHOED):
            self._remote(cookie.remote_tag, cookie.remote_tsn, cookie.remote_a_rwnd, cookie.remote_outbound,
                         cookie.remote_inbound, cookie.remote_forward_tsn)
            self._established()
        elif cookie.remote_tag != self._remote_tag:
            self.stats.chunks_ignored += 1  # a peer restart: unsupported
            return
        self._queue_control(Chunk(ChunkType.COOKIE_ACK, 0, b"").to_bytes())  # again, if ours was lost

    def _remote(self, tag: int, initial_tsn: int, a_rwnd: int, outbound: int, inbound: int,
                forward_tsn: bool) -> None:
        self._remote_tag = tag
        self._remote_cumulative_tsn = (initial_tsn - 1) & _MASK
        self._peer_reconfig_seq = initial_tsn
        self._peer_rwnd = a_rwnd
        self._ssthresh = max(a_rwnd, 4 * self.mtu)
        self._outbound_streams = min(MAX_STREAMS, inbound)
        self._inbound_streams = min(MAX_STREAMS, outbound)
        self._remote_forward_tsn = forward_tsn

    def _established(self) -> None:
        self.state = State.ESTABLISHED
        self._t1 = None
        self._handshake_packet = None
        self._events.append(Established())

    def _on_t1(self, now: float) -> None:
        self._t1_tries += 1
        if self._t1_tries > MAX_INIT_RETRANSMISSIONS or self._handshake_packet is None:
            self._close("handshake timed out")
            return
        self._packets.append(self._handshake_packet)
        self._t1 = now + min(T1_INITIAL * 2**self._t1_tries, RTO_MAX)

    def _on_error(self, chunk: Chunk, now: float) -> None:
        causes = _parse_tlvs(chunk.body)
        if self.state is State.COOKIE_ECHOED and any(kind == _CAUSE_STALE_COOKIE for kind, _ in causes):
            tries = self._t1_tries
            self._send_init(now)  # §5.2.6: start over
            self._t1_tries = tries + 1
            if self._t1_tries > MAX_INIT_RETRANSMISSIONS:
                self._close("handshake timed out")
        # any other ERROR is informational: we never send what a peer could refuse in a way that matters

    # ------------------------------------------------------------------------------------- shutdown

    def _shutdown_chunk(self) -> bytes:
        return Chunk(ChunkType.SHUTDOWN, 0, struct.pack("!I", self._remote_cumulative_tsn)).to_bytes()

    def _check_shutdown(self, now: float) -> None:
        if self._queue or self._in_flight:
            return
        if self.state is State.SHUTDOWN_PENDING:
            self.state = State.SHUTDOWN_SENT
            self._queue_control(self._shutdown_chunk())
        elif self.state is State.SHUTDOWN_RECEIVED:
            self.state = State.SHUTDOWN_ACK_SENT
            self._queue_control(Chunk(ChunkType.SHUTDOWN_ACK, 0, b"").to_bytes())
        else:
            return
        self._t2 = now + self._rto
        self._t2_tries = 0

    def _on_shutdown(self, chunk: Chunk, now: float) -> None:
        if len(chunk.body) != 4:
            raise SctpError("malformed", "SHUTDOWN length")
        if self.state not in _CONNECTED:
            self.stats.chunks_ignored += 1
            return
        (cumulative,) = struct.unpack("!I", chunk.body)
        if self._in_flight and not _after(cumulative, self._in_flight[-1].tsn):
            self._on_sack(SackChunk(cumulative, self._peer_rwnd + self._flight_size), now)
        if self.state in (State.ESTABLISHED, State.SHUTDOWN_PENDING):
            self.state = State.SHUTDOWN_RECEIVED
            self._check_shutdown(now)
        elif self.state is State.SHUTDOWN_SENT:  # both sides at once (§9.2)
            self.state = State.SHUTDOWN_ACK_SENT
            self._queue_control(Chunk(ChunkType.SHUTDOWN_ACK, 0, b"").to_bytes())
            self._t2 = now + self._rto
            self._t2_tries = 0

    def _on_t2(self, now: float) -> None:
        self._t2_tries += 1
        if self._t2_tries > MAX_RETRANSMISSIONS:
            self._abort(_CAUSE_USER_ABORT, "shutdown timed out")
            return
        if self.state is State.SHUTDOWN_SENT:
            self._queue_control(self._shutdown_chunk())
        elif self.state is State.SHUTDOWN_ACK_SENT:
            self._queue_control(Chunk(ChunkType.SHUTDOWN_ACK, 0, b"").to_bytes())
        self._t2 = now + min(self._rto * 2**self._t2_tries, RTO_MAX)

    def _abort(self, cause: int, reason: str) -> None:
        if self._remote_tag:
            body = _tlv(cause, reason.encode()[:200])
            self._packets.append(self._packet([Chunk(ChunkType.ABORT, 0, body).to_bytes()]))
        self._close(reason)

    def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.state = State.CLOSED
        self._t1 = self._t2 = self._t3 = self._sack_deadline = self._reconfig_timer = None
        self._queue.clear()
        self._in_flight.clear()
        self._ahead.clear()
        self._partial = []
        self._streams_in.clear()
        self._control = []
        self._events.append(Closed(reason))

    # --------------------------------------------------------------------------------- stream reset

    def _start_reset_request(self, now: float) -> None:
        if self._reset_request is not None or not self._reset_waiting or self.state is not State.ESTABLISHED:
            return
        room = (self.mtu - 12 - 4 - 16) // 2
        streams, self._reset_waiting = self._reset_waiting[:room], self._reset_waiting[room:]
        self._reset_request = OutgoingSsnResetRequest(
            self._reconfig_seq, (self._peer_reconfig_seq - 1) & _MASK, (self._next_tsn - 1) & _MASK,
            tuple(streams))
        self._reconfig_seq = (self._reconfig_seq + 1) & _MASK
        self._reconfig_tries = 0
        self._queue_control(ReconfigChunk.of(self._reset_request))
        self._reconfig_timer = now + self._rto

    def _on_reconfig_timer(self, now: float) -> None:
        request = self._reset_request
        self._reconfig_timer = None
        if request is None:
            return
        self._reconfig_tries += 1
        if self._reconfig_tries > MAX_RETRANSMISSIONS:
            self.stats.reset_refused += 1
            self._reset_done(request)
            return
        self._queue_control(ReconfigChunk.of(request))
        self._reconfig_timer = now + min(self._rto * 2**self._reconfig_tries, RTO_MAX)

    def _reset_done(self, request: OutgoingSsnResetRequest) -> None:
        self._reset_request = None
        self._reconfig_timer = None
        for stream_id in request.streams:
            self._ssn.pop(stream_id, None)
            self._resetting.discard(stream_id)
        self._events.append(OutgoingStreamsReset(request.streams))

    def _on_reconfig(self, chunk: ReconfigChunk, now: float) -> None:
        for kind, body in chunk.params:
            if kind == _PARAM_OUTGOING_RESET:
                self._on_reset_request(OutgoingSsnResetRequest.parse(body))
            elif kind == _PARAM_RECONFIG_RESPONSE:
                response = ReconfigResponse.parse(body)
                request = self._reset_request
                if request is None or response.response_seq != request.request_seq:
                    continue
                if response.result == _RESULT_IN_PROGRESS:
                    self._reconfig_timer = now + self._rto  # ask again
                    continue
                if response.result not in (_RESULT_NOTHING_TO_DO, _RESULT_PERFORMED):
                    self.stats.reset_refused += 1
                self._reset_done(request)
            elif kind in (_PARAM_INCOMING_RESET, _PARAM_SSN_TSN_RESET, _PARAM_ADD_OUTGOING, _PARAM_ADD_INCOMING):
                if len(body) < 4:
                    raise SctpError("malformed", "re-configuration request length")
                (seq,) = struct.unpack_from("!I", body)
                self._queue_control(ReconfigChunk.of(ReconfigResponse(seq, _RESULT_DENIED)))
            else:
                self.stats.chunks_ignored += 1

    def _on_reset_request(self, request: OutgoingSsnResetRequest) -> None:
        """§5.2.2: the peer resets its outgoing streams once we have everything it sent before."""
        expected = self._peer_reconfig_seq
        if request.request_seq == (expected - 1) & _MASK and self._last_response is not None:
            self._queue_control(ReconfigChunk.of(self._last_response))  # our response was lost
        elif request.request_seq != expected:
            self._queue_control(ReconfigChunk.of(ReconfigResponse(request.request_seq, _RESULT_BAD_SEQUENCE)))
        elif not _after(request.last_tsn, self._remote_cumulative_tsn):
            self._perform_reset(request)
        else:
            self._deferred_reset = request
            self._queue_control(ReconfigChunk.of(ReconfigResponse(request.request_seq, _RESULT_IN_PROGRESS)))

    def _check_deferred_reset(self) -> None:
        request = self._deferred_reset
        if request is not None and not _after(request.last_tsn, self._remote_cumulative_tsn):
            self._perform_reset(request)

    def _perform_reset(self, request: OutgoingSsnResetRequest) -> None:
        streams = request.streams or tuple(sorted(self._streams_in))  # none listed: all of them
        for stream_id in streams:
            stream = self._streams_in.pop(stream_id, None)
            if stream is not None:
                self._early_bytes -= sum(len(data) + _CHUNK_OVERHEAD for _, data in stream.early.values())
        self._deferred_reset = None
        self._peer_reconfig_seq = (request.request_seq + 1) & _MASK
        self._last_response = ReconfigResponse(request.request_seq, _RESULT_PERFORMED)
        self._queue_control(ReconfigChunk.of(self._last_response))
        self._events.append(StreamsReset(streams))

    # ---------------------------------------------------------------------------------------- output

    def _packet(self, chunks: list[bytes], tag: int | None = None) -> bytes:
        return _serialize(self.port, self.remote_port, self._remote_tag if tag is None else tag, b"".join(chunks))

    def _packetize(self, chunks: list[bytes], tag: int) -> list[bytes]:
        """Bundle chunks into as few packets as fit the MTU, in order (control chunks come first)."""
        packets: list[bytes] = []
        current: list[bytes] = []
        size = 12
        for chunk in chunks:
            if current and size + len(chunk) > self.mtu:
                packets.append(self._packet(current, tag))
                current, size = [], 12
            current.append(chunk)
            size += len(chunk)
        if current:
            packets.append(self._packet(current, tag))
        return packets

    def _queue_control(self, chunk: bytes) -> None:
        if len(self._control) < _MAX_PENDING:
            self._control.append(chunk)

    def _queue_packet(self, packet: bytes) -> None:
        if len(self._packets) < _MAX_PENDING:
            self._packets.append(packet)


def _continues(previous: DataChunk, chunk: DataChunk) -> bool:
    return (chunk.tsn == (previous.tsn + 1) & _MASK and chunk.stream_id == previous.stream_id
            and chunk.unordered == previous.unordered and (chunk.unordered or chunk.ssn == previous.ssn))


def _peer_features(init: InitChunk) -> tuple[bool, bool, list[bytes]]:
    """Forward-TSN support, RE-CONFIG support, and the parameters to report as unrecognized (§3.2.1)."""
    forward_tsn = reconfig = False
    unrecognized: list[bytes] = []
    for kind, value in init.params:
        if kind == _PARAM_FORWARD_TSN_SUPPORTED:
            forward_tsn = True
        elif kind == _PARAM_SUPPORTED_EXTENSIONS:
            forward_tsn = forward_tsn or ChunkType.FORWARD_TSN in value
            reconfig = ChunkType.RECONFIG in value
        elif kind in _PARAMS_IGNORED or kind == _PARAM_STATE_COOKIE:
            pass
        else:
            if kind & 0x4000 and len(unrecognized) < 4:
                unrecognized.append(_tlv(kind, value[:64]))
            if not kind & 0x8000:
                break
    return forward_tsn, reconfig, unrecognized


def _describe_causes(body: bytes) -> str:
    try:
        causes = _parse_tlvs(body)
    except SctpError:
        return ""
    if not causes:
        return ""
    kind, value = causes[0]
    if kind in (_CAUSE_USER_ABORT, _CAUSE_PROTOCOL_VIOLATION):
        return f": {value.decode('utf-8', 'replace')[:200]}"
    return f": cause {kind}"
