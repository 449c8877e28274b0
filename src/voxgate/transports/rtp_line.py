"""One SIP call's RTP socket: what arrives becomes caller audio and key presses, what leaves is datagrams.

Symmetric RTP: we send from the socket we receive on. Latching (for NAT): the SDP's `c=`/`m=` says where
to send until the first acceptable packet arrives; from then on we send to the address that packet came
from, and packets from any other address are dropped and counted. Only a packet from the host the call's
signalling came from, or the SDP's host, may latch the line, so a stranger who guesses the port cannot
take the call's audio. Everything malformed (not RTP, unknown payload type, a payload no 20-60 ms frame
has, a telephone-event payload that is not one) is a counted drop for this call alone.

Caller audio waits in a small adaptive jitter buffer (40-200 ms, following the measured jitter) that puts
it back in order; the call takes what is due on each 20 ms tick (`take_audio`), a lost packet's turn as
silence. Key presses skip the buffer: they are reported as they arrive.

The parsing is the sans-IO core's (`voxgate.sip.rtp`, `voxgate.sip.dtmf`); this shell owns the socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import cast

from voxgate.observability import metrics
from voxgate.sip.dtmf import DtmfError, DtmfReceiver
from voxgate.sip.jitter import JitterBuffer, Lost
from voxgate.sip.rtp import RtpError, RtpPacket, RtpSender, is_rtcp, parse_rtp
from voxgate.sip.sdp import MediaSession

__all__ = ["RtpLine"]

log = logging.getLogger("voxgate.sip")

Address = tuple[str, int]
MAX_AUDIO_PAYLOAD = 480  # bytes of G.711: 60 ms, the longest packet time a trunk uses
MIN_AUDIO_PAYLOAD = 8  # 1 ms
_SILENCE = {"PCMU": b"\xff", "PCMA": b"\xd5"}


class RtpLine(asyncio.DatagramProtocol):
    """`take_audio(now)` gives the G.711 payloads due, in order; `on_digit(digit)` gets each key press
    (RFC 4733). `last_heard` is the loop time of the last accepted packet (media timeout)."""

    def __init__(self, media: MediaSession, signalling_host: str, on_digit: Callable[[str], None]) -> None:
        self.media = media
        self.on_digit = on_digit
        self.jitter = JitterBuffer(clock_rate=media.codec.clock_rate)
        self._silence = _SILENCE.get(media.codec.name, b"\xff") * (media.codec.clock_rate // 50)
        self.sender = RtpSender(media.codec.payload_type, media.codec.clock_rate)
        self.dtmf = DtmfReceiver()
        self.counters: Counter[str] = Counter()
        self.remote: Address = media.remote
        self.latched: Address | None = None
        self._trusted_hosts = {signalling_host, media.remote_address}
        self.transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self.last_heard = 0.0

    async def open(self, host: str) -> Address:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=(host, 0))
        self.transport = cast(asyncio.DatagramTransport, transport)  # the selector's class is not a subclass
        self.local = transport.get_extra_info("sockname")[:2]
        self.last_heard = loop.time()
        return self.local

    def update(self, media: MediaSession) -> None:
        """A re-INVITE settled new media: a new SDP address is trusted, and sending follows it unless latched."""
        self.media = media
        self._trusted_hosts.add(media.remote_address)
        if self.latched is None or self.latched[0] != media.remote_address:
            self.latched = None
            self.remote = media.remote
        if media.codec.payload_type != self.sender.payload_type:
            self.sender.payload_type = media.codec.payload_type
            # our offer's first codec may not be the one the answer chose (PCMA's silence is not PCMU's)
            self._silence = _SILENCE.get(media.codec.name, b"\xff") * (media.codec.clock_rate // 50)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # -- out

    def send(self, packet: RtpPacket) -> None:
        if self.transport is not None and self.media.sends:
            self.transport.sendto(packet.to_bytes(), self.remote)

    # -- in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        self._drop("socket_error")  # an ICMP unreachable for something we sent: the far end went away

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        source = (addr[0], addr[1])
        if self.latched is not None and source != self.latched:
            self._drop("wrong_source")
            return
        if is_rtcp(data):
            self.counters["rtcp"] += 1  # reports are read by nobody yet; receiving them is no fault
            return
        try:
            packet = parse_rtp(data)
        except RtpError as error:
            self._drop(error.code)
            return
        media = self.media
        if packet.payload_type == media.codec.payload_type:
            if not MIN_AUDIO_PAYLOAD <= len(packet.payload) <= MAX_AUDIO_PAYLOAD:
                self._drop("bad_payload_size")
                return
            if not self._accept(source):
                return
            self.jitter.push(packet, self.last_heard)
        elif media.telephone_event is not None and packet.payload_type == media.telephone_event:
            if not self._accept(source):
                return
            try:
                digit = self.dtmf.receive(packet)
            except DtmfError as error:
                self._drop(error.code)
                return
            if digit is not None:
                self.on_digit(digit)
        else:
            self._drop("unknown_payload_type")

    def take_audio(self, now: float) -> list[bytes]:
        """The caller's audio due at `now`, in order; a lost packet's turn as silence of the same length."""
        out: list[bytes] = []
        jitter = self.jitter
        while (item := jitter.pop(now)) is not None:
            if isinstance(item, Lost):
                self.counters["lost"] += 1
                out.append(self._silence)
            else:
                out.append(item.payload)
                if len(item.payload) != len(self._silence):
                    self._silence = self._silence[:1] * len(item.payload)
        return out

    def _accept(self, source: Address) -> bool:
        """Latch on the first good packet from a trusted host; count what a latched line accepts."""
        if self.latched is None:
            if source[0] not in self._trusted_hosts:
                self._drop("untrusted_source")
                return False
            self.latched = self.remote = source
        self.counters["received"] += 1
        self.last_heard = asyncio.get_running_loop().time()
        return True

    def _drop(self, reason: str) -> None:
        self.counters[f"dropped_{reason}"] += 1
        metrics.SIP_RTP_DROPPED.labels(reason).inc()
