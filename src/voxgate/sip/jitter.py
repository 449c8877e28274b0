"""A small adaptive jitter buffer for received RTP: reorders, waits a little for late packets, and says
when one is lost, on the caller's clock.

    buffer = JitterBuffer(clock_rate=8000)
    buffer.push(packet, arrival=now)         # as packets arrive
    item = buffer.pop(now)                   # once per frame: an RtpPacket, Lost(sequence) or None

What reads the audio is a session (a VAD, a decoder), not a sound card: it needs the order, not an even
pace. So the next packet in sequence plays as soon as it is here, nothing being able to come before it;
only a gap is waited for. Each packet's turn is its RTP time (mapped to the local clock by the earliest
transit seen) plus a playout delay; the delay follows the measured interarrival jitter (RFC 3550
§6.4.1), three times it, within [min_delay, max_delay], and changes only when the buffer runs dry or a
talkspurt begins. A packet that arrives after its turn is dropped as late; when the turn of a missing
packet has passed and a later one is due, `Lost` lets the decoder conceal one frame. (A turn-by-turn
playout held every packet for the delay: 20 ms more before the VAD heard a caller barge in.) A change of
SSRC or a large jump restarts the stream. Everything is bounded (`capacity` packets) and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from voxgate.sip.rtp import RtpPacket

__all__ = ["JitterBuffer", "JitterStats", "Lost"]

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_RESTART_GAP = 3000  # packets: a jump this large is a new stream, not loss


@dataclass(frozen=True, slots=True)
class Lost:
    """The packet with this (extended) sequence number never came in time: conceal one frame."""

    sequence: int


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0  # arrived after its turn: dropped
    duplicate: int = 0
    overflow: int = 0  # dropped because the buffer was full
    flushed: int = 0  # still waiting when the stream restarted
    restarts: int = 0


@dataclass
class JitterBuffer:
    clock_rate: int = 8000
    min_delay: float = 0.02  # how long a gap is waited for at least: one frame
    max_delay: float = 0.2
    capacity: int = 50  # packets: a second of 20 ms audio
    stats: JitterStats = field(default_factory=JitterStats)

    def __post_init__(self) -> None:
        self._packets: dict[int, tuple[RtpPacket, int]] = {}  # extended sequence → (packet, extended timestamp)
        self._ssrc: int | None = None
        self._next = 0  # extended sequence number to play next
        self._highest = 0
        self._last_ts = 0  # extended timestamp of the latest arrival
        self._base: float | None = None  # arrival - rtp time: the smallest transit seen
        self._jitter = 0.0  # seconds
        self._last_transit: float | None = None
        self._delay = self.min_delay
        self._playing = False

    @property
    def jitter(self) -> float:
        """The interarrival jitter estimate, in seconds."""
        return self._jitter

    @property
    def delay(self) -> float:
        """The playout delay in use, in seconds."""
        return self._delay

    def __len__(self) -> int:
        return len(self._packets)

    def _restart(self, packet: RtpPacket) -> None:
        if self._ssrc is not None:
            self.stats.restarts += 1
        self.stats.flushed += len(self._packets)
        self._packets.clear()
        self._ssrc = packet.ssrc
        self._next = self._highest = packet.sequence
        self._last_ts = packet.timestamp
        self._base = None
        self._last_transit = None
        self._playing = False

    def _extend(self, sequence: int, reference: int) -> int:
        """`sequence` unwrapped to the 16-bit cycle nearest `reference`."""
        delta = (sequence - reference) % _SEQ_MOD
        if delta >= _SEQ_MOD // 2:
            delta -= _SEQ_MOD
        return reference + delta

    def push(self, packet: RtpPacket, arrival: float) -> None:
        if self._ssrc != packet.ssrc:
            self._restart(packet)
        sequence = self._extend(packet.sequence, self._highest)
        if abs(sequence - self._highest) > _RESTART_GAP:
            self._restart(packet)
            sequence = packet.sequence
        self.stats.received += 1
        if sequence < self._next:
            self.stats.late += 1
            return
        if sequence in self._packets:
            self.stats.duplicate += 1
            return
        ts_delta = (packet.timestamp - self._last_ts) % _TS_MOD
        if ts_delta >= _TS_MOD // 2:
            ts_delta -= _TS_MOD
        timestamp = self._last_ts + ts_delta
        if sequence > self._highest:
            self._highest = sequence
            self._last_ts = timestamp
        transit = arrival - timestamp / self.clock_rate
        if self._last_transit is not None:
            self._jitter += (abs(transit - self._last_transit) - self._jitter) / 16
        self._last_transit = transit
        if self._base is None or transit < self._base:
            self._base = transit
        if len(self._packets) >= self.capacity:
            oldest = min(self._packets)
            del self._packets[oldest]
            self.stats.overflow += 1
            self._next = max(self._next, oldest + 1)
        self._packets[sequence] = (packet, timestamp)
        if not self._playing or (packet.marker and sequence == self._next):
            self._adapt()

    def _adapt(self) -> None:
        self._delay = min(self.max_delay, max(self.min_delay, 3 * self._jitter))

    def _due(self, timestamp: int) -> float:
        assert self._base is not None
        return timestamp / self.clock_rate + self._base + self._delay

    def pop(self, now: float) -> RtpPacket | Lost | None:
        """The next frame to play at `now`: the next packet in sequence if it is here, Lost for a gap whose
        turn has passed (a later packet is due), or None."""
        if not self._packets:
            if self._playing:
                self._playing = False  # ran dry: the next talk may use a new delay
                self._adapt()
            return None
        entry = self._packets.get(self._next)
        if entry is not None:  # next in sequence: nothing can come before it, so it plays now
            packet = entry[0]
            del self._packets[self._next]
            self._next += 1
            self._playing = True
            self.stats.played += 1
            return packet
        following = min(self._packets)
        if self._due(self._packets[following][1]) > now:
            return None
        missing = self._next
        self._next += 1
        self.stats.lost += 1
        return Lost(missing)
