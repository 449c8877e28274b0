"""One SIP call's RTP socket: what arrives becomes caller audio and key presses, what leaves is datagrams.

Symmetric RTP: we send from the socket we receive on. Latching (for NAT): the SDP's `c=`/`m=` says where
to send until the first acceptable packet arrives; from then on we send to the address that packet came
from, and packets from any other address are dropped and counted. Only a packet from the host the call's
signalling came from, or the SDP's host, may latch the line, so a stranger who guesses the port cannot
take the call's audio. Everything malformed (not RTP, unknown payload type, a payload no 20-60 ms frame
has, a telephone-event payload that is not one) is a counted drop for this call alone.

Caller audio passes a small adaptive jitter buffer that puts it back in order (the next packet in sequence
goes at once; a gap is waited for 20-200 ms, following the measured jitter); the call takes what is due
(`take_audio`) as each packet arrives (`on_audio`) and on each 20 ms tick, a lost packet's turn as
silence. A caller may also stop sending between talkspurts (silence suppression, RFC 3551 §4.1): the line
says when it has (`caller_quiet`), so the call can hand the session that silence as a carrier's
continuous line would; RFC 3389 comfort noise packets, where CN was agreed, are accepted as that quiet.
Key presses skip the buffer: they are reported as they arrive.

Going out, the agent's silence is a packet of silence every 20 ms, or, where CN was agreed, one CN packet
when the silence starts and one every 5 s after (`send_silence`): a listening call sends a third of the
packets, and the next speech packet is marked as a new talkspurt.

SDES-SRTP (when the offer/answer settled keys): every packet we send, RTP and RTCP, is protected; every
packet that arrives is authenticated and decrypted before anything reads it, so one that fails (a wrong
key, a forgery, a replay) is a counted drop (`srtp_auth_failed`, `srtp_replay`, ...) and cannot latch.

RTCP (RFC 3550): a compound report every ~5 s on the RTP port + 1 (or the RTP port with rtcp-mux): a
sender report with the sender's counts while we send, a report block on what we receive; the peer's
reports are read for the record (loss and jitter it saw of our stream, the round trip). RTCP latches
like RTP, to a trusted host only.

The parsing is the sans-IO cores' (`voxgate.sip.rtp`, `.rtcp`, `.dtmf`, `.srtp`); this shell owns the sockets.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

from voxgate.observability import metrics
from voxgate.sip.dtmf import DtmfError, DtmfReceiver
from voxgate.sip.jitter import JitterBuffer, Lost
from voxgate.sip.rtcp import RtcpError, RtcpSession, reception_record
from voxgate.sip.rtp import RtpError, RtpPacket, RtpSender, is_rtcp, parse_rtp
from voxgate.sip.sdp import MediaSession
from voxgate.sip.srtp import SrtpContext, SrtpError
from voxgate.transports.rtp_ports import RtpPorts

__all__ = ["RtpLine"]

log = logging.getLogger("voxgate.sip")

Address = tuple[str, int]
MAX_AUDIO_PAYLOAD = 480  # bytes of G.711: 60 ms, the longest packet time a trunk uses
MIN_AUDIO_PAYLOAD = 8  # 1 ms
TICK_S = 0.02  # the call takes the caller's audio once per 20 ms tick
FRAME_MS = 20  # what one packet carries, each way
_PAYLOAD_BYTES = {"OPUS": (1, 1275)}  # RFC 6716 §3.4: an Opus packet is 1-1275 bytes
# RFC 3389 §3: one byte, the noise level in -dBov; 127 is digital silence, which is what the agent's pauses
# are (no spectral coefficients: the far end's own comfort noise model fills in). Refreshed every CN_REFRESH_S
# during a silence, as PJSIP's keep-alive does (its default 5 s), well inside RTP inactivity timers (30 s+).
CN_SILENCE = bytes([127])
CN_REFRESH_S = 5.0
_SILENCE = {"PCMU": b"\xff", "PCMA": b"\xd5", "OPUS": b""}  # Opus: an empty payload, decoded as silence


class _RtcpSocket(asyncio.DatagramProtocol):
    """The RTCP port's datagrams, handed to the line."""

    def __init__(self, line: RtpLine) -> None:
        self.line = line

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.line.rtcp_received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.line.counters["rtcp_unreachable"] += 1  # a peer that takes no RTCP (SIPp): no fault of the call


class RtpLine(asyncio.DatagramProtocol):
    """`take_audio(now)` gives the audio payloads due, in order (G.711 or Opus); `on_digit(digit)` gets each key press
    (RFC 4733). `last_heard` is the loop time of the last accepted packet (media timeout); `report(now)`
    sends the RTCP report when one is due."""

    def __init__(self, media: MediaSession, signalling_host: str, on_digit: Callable[[str], None], *,
                 ports: RtpPorts | None = None, cname: str = "voxgate") -> None:
        self._follow(media)
        self.on_digit = on_digit
        self.ports = ports or RtpPorts()
        self.cname = cname
        self.jitter = JitterBuffer(clock_rate=media.codec.clock_rate)
        self._silence = _SILENCE.get(media.codec.name, b"\xff") * (media.codec.clock_rate // 50)
        self._payload_bytes = _PAYLOAD_BYTES.get(media.codec.name, (MIN_AUDIO_PAYLOAD, MAX_AUDIO_PAYLOAD))
        self.sender = RtpSender(media.codec.payload_type, media.codec.clock_rate)
        self.srtp = SrtpContext(media.srtp) if media.srtp is not None else None
        self.rtcp: RtcpSession | None = None  # once the sockets are open (its clock starts then)
        self.dtmf = DtmfReceiver()
        self.counters: Counter[str] = Counter()
        self.remote: Address = media.remote
        self.latched: Address | None = None
        self.rtcp_remote: Address = (media.remote_address, media.remote_rtcp_port)
        self.rtcp_latched: Address | None = None
        self._trusted_hosts = {signalling_host, media.remote_address}
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp_transport: asyncio.DatagramTransport | None = None
        self.local: Address = ("", 0)
        self._sock: socket.socket | None = None  # the RTP socket, which we send on ourselves
        self.last_heard = 0.0
        self._noise_sent_at: float | None = None  # loop time of the last CN packet of the current silence
        # Told after each audio packet is buffered: the call takes what is due at once, not on its next
        # 20 ms tick (up to a frame sooner to the VAD: barge-in, turn ends).
        self.on_audio: Callable[[float], None] | None = None
        self._loop: asyncio.AbstractEventLoop  # set by open()

    async def open(self, host: str) -> Address:
        """Bind the call's ports (RTP even, RTCP above it unless muxed). Raises PortsExhausted."""
        # Kept: on Python 3.11 each asyncio.get_running_loop() is a getpid() system call (its fork check),
        # and a line hears 50 packets a second.
        loop = self._loop = asyncio.get_running_loop()
        rtp_sock, rtcp_sock = self.ports.bind(host, rtcp=not self.media.rtcp_mux)
        self.local = rtp_sock.getsockname()[:2]
        self._sock = rtp_sock
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: self, sock=rtp_sock)
            self.transport = cast(asyncio.DatagramTransport, transport)  # the selector's class is not a subclass
            if rtcp_sock is not None:
                transport, _ = await loop.create_datagram_endpoint(lambda: _RtcpSocket(self), sock=rtcp_sock)
                self.rtcp_transport = cast(asyncio.DatagramTransport, transport)
        except BaseException:
            rtp_sock.close()
            if rtcp_sock is not None:
                rtcp_sock.close()
            self.close()
            self.ports.release(self.local[1])
            raise
        self.last_heard = loop.time()
        self.rtcp = RtcpSession(self.sender, self.cname, start=self.last_heard)
        return self.local

    def _follow(self, media: MediaSession) -> None:
        """Take `media` as the line's. What each packet reads of it is kept as plain fields: the SDP's dataclasses
        are interpreted Python, where each attribute is a dictionary lookup, 50 times a second each way."""
        self.media = media
        self.sends = media.sends
        self.on_hold = media.on_hold
        self.audio_payload_type = media.codec.payload_type
        self.frame_samples = media.codec.clock_rate * FRAME_MS // 1000  # a packet's step of the RTP clock
        self.comfort_noise = media.comfort_noise
        self.telephone_event = media.telephone_event

    def update(self, media: MediaSession) -> None:
        """A re-INVITE settled new media: a new SDP address is trusted, and sending follows it unless latched;
        new SRTP keys take effect for the direction they changed."""
        self._follow(media)
        self._trusted_hosts.add(media.remote_address)
        if self.latched is None or self.latched[0] != media.remote_address:
            self.latched = None
            self.remote = media.remote
        if self.rtcp_latched is None or self.rtcp_latched[0] != media.remote_address:
            self.rtcp_latched = None
            self.rtcp_remote = (media.remote_address, media.remote_rtcp_port)
        if media.codec.payload_type != self.sender.payload_type:
            self.sender.payload_type = media.codec.payload_type
            # our offer's first codec may not be the one the answer chose (PCMA's silence is not PCMU's)
            self._silence = _SILENCE.get(media.codec.name, b"\xff") * (media.codec.clock_rate // 50)
            self._payload_bytes = _PAYLOAD_BYTES.get(media.codec.name, (MIN_AUDIO_PAYLOAD, MAX_AUDIO_PAYLOAD))
        if media.srtp is None:
            self.srtp = None
        elif self.srtp is None:
            self.srtp = SrtpContext(media.srtp)
        else:
            self.srtp.rekey(media.srtp)

    def close(self) -> None:
        """Say BYE over RTCP (once the line was used), close the sockets, give the ports back."""
        if self.transport is not None and self.rtcp is not None and self.sender.packets_sent:
            self._send_rtcp(self.rtcp.report(asyncio.get_running_loop().time(), time.time(), goodbye=True))
        for transport in (self.transport, self.rtcp_transport):
            if transport is not None:
                transport.close()
        if self.transport is not None:
            self.ports.release(self.local[1])
        self.transport = self.rtcp_transport = None
        self._sock = None
        self.on_digit = _ignore_digit  # the call's method: a closed line keeps no reference to its call
        self.on_audio = None

    # -- out

    def send(self, packet: RtpPacket) -> None:
        self._noise_sent_at = None  # audio (or an event): the next silence starts with a CN packet
        if self.transport is not None and self.sends:
            self._send_datagram(packet.to_bytes())

    def send_audio(self, payload: bytes, samples: int) -> None:
        """The agent's next frame, as the stream's next packet (the hot path: no packet object)."""
        self._noise_sent_at = None  # speech: the next silence starts with a CN packet
        data = self.sender.datagram(payload, samples)
        if self.transport is not None and self.sends:
            self._send_datagram(data)

    def send_silence(self, samples: int, now: float) -> None:
        """A frame of the agent's silence. With RFC 3389 comfort noise agreed, one CN packet where the
        silence starts and one every CN_REFRESH_S after it (so the far end's inactivity timer and a NAT's
        binding stay alive), nothing between: the stream's clock runs on and its next speech packet is marked
        as a new talkspurt. Otherwise a packet of silence, as a line without CN must send."""
        comfort_noise = self.comfort_noise
        if comfort_noise is None:
            self.send_audio(self._silence, samples)
            return
        if self._noise_sent_at is not None and now - self._noise_sent_at < CN_REFRESH_S:
            self.sender.skip(samples)
            return
        self._noise_sent_at = now
        packet = self.sender.packet(CN_SILENCE, samples, payload_type=comfort_noise)
        self.sender.talkspurt()
        self.counters["comfort_noise_sent"] += 1
        if self.transport is not None and self.sends:
            self._send_datagram(packet.to_bytes())

    def _send_datagram(self, data: bytes) -> None:
        # Straight to our own socket: a datagram is sent or dropped, never queued (late audio is no use),
        # and the transport's checks would cost more than the send on a line that sends 50 a second.
        assert self._sock is not None
        try:
            self._sock.sendto(self.srtp.protect(data) if self.srtp is not None else data, self.remote)
        except (BlockingIOError, InterruptedError):
            self.drop("send_blocked")
        except OSError:
            self.drop("socket_error")  # e.g. the far end's ICMP unreachable, reported on a later send

    def report(self, now: float) -> None:
        """The RTCP report, when one is due (sent on hold too: RTCP keeps flowing, RFC 3264 §5.1)."""
        if self.rtcp is not None and self.rtcp.due(now):
            self._send_rtcp(self.rtcp.report(now, time.time()))

    def _send_rtcp(self, data: bytes) -> None:
        transport = self.rtcp_transport or (self.transport if self.media.rtcp_mux else None)
        if transport is None:
            return
        transport.sendto(self.srtp.protect_rtcp(data) if self.srtp is not None else data,
                         self.remote if self.media.rtcp_mux else self.rtcp_remote)
        self.counters["rtcp_sent"] += 1

    # -- in

    def rtcp_received(self, data: bytes, source: Address, *, muxed: bool = False) -> None:
        """A report from the peer, on the RTCP port or `muxed` on RTP's (where RTP's latch has already
        checked the source). The RTCP port latches like RTP: to the source of the first good report from
        a trusted host (the host RTP latched to, once it has)."""
        if not muxed:
            if self.rtcp_latched is not None and source != self.rtcp_latched:
                self.drop("wrong_source")
                return
            if self.latched is not None and source[0] != self.latched[0]:
                self.drop("wrong_source")
                return
        if self.latched is None and source[0] not in self._trusted_hosts:
            self.drop("untrusted_source")
            return
        if self.rtcp is None:
            return
        try:
            plain = self.srtp.unprotect_rtcp(data) if self.srtp is not None else data
            self.rtcp.receive(plain, self._loop.time())
        except SrtpError as error:
            self.drop(f"srtcp_{error.code}")
            return
        except RtcpError as error:
            self.drop(f"rtcp_{error.code}")
            return
        self.counters["rtcp"] += 1
        if not muxed and self.rtcp_latched is None:
            self.rtcp_latched = self.rtcp_remote = source

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def error_received(self, exc: Exception) -> None:
        self.drop("socket_error")  # an ICMP unreachable for something we sent: the far end went away

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        source = (addr[0], addr[1])
        if self.latched is not None and source != self.latched:
            self.drop("wrong_source")
            return
        if is_rtcp(data):  # muxed, or a peer that sends its reports to the RTP port anyway
            self.rtcp_received(data, source, muxed=True)
            return
        if self.srtp is not None:
            try:
                data = self.srtp.unprotect(data)
            except SrtpError as error:
                self.drop(f"srtp_{error.code}")
                return
        try:
            packet = parse_rtp(data)
        except RtpError as error:
            self.drop(error.code)
            return
        payload_type = packet.payload_type
        if payload_type == self.audio_payload_type:
            if not self._payload_bytes[0] <= len(packet.payload) <= self._payload_bytes[1]:
                self.drop("bad_payload_size")
                return
            if not self._accept(source, packet):
                return
            self.jitter.push(packet, self.last_heard)
            if self.on_audio is not None:
                self.on_audio(self.last_heard)
        elif payload_type == self.comfort_noise:
            # RFC 3389: the caller stopped sending speech; its quiet is heard as silence (`caller_quiet`)
            if self._accept(source, packet):
                self.counters["comfort_noise_received"] += 1
        elif payload_type == self.telephone_event:
            if not self._accept(source, packet):
                return
            try:
                digit = self.dtmf.receive(packet)
            except DtmfError as error:
                self.drop(error.code)
                return
            if digit is not None:
                self.on_digit(digit)
        else:
            self.drop("unknown_payload_type")

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

    def caller_quiet(self, now: float) -> bool:
        """The caller has stopped sending, not on hold: nothing waits in the jitter buffer and nothing has come
        for longer than its playout delay and a tick (a late packet is still waited for that long)."""
        return (not self.jitter and not self.on_hold
                and now - self.last_heard > self.jitter.delay + TICK_S)

    def _accept(self, source: Address, packet: RtpPacket) -> bool:
        """Latch on the first good packet from a trusted host; count what a latched line accepts."""
        if self.latched is None:
            if source[0] not in self._trusted_hosts:
                self.drop("untrusted_source")
                return False
            self.latched = self.remote = source
        self.counters["received"] += 1
        self.last_heard = self._loop.time()
        if self.rtcp is not None:
            self.rtcp.receive_rtp(packet, self.last_heard)
        return True

    def quality(self) -> dict[str, Any]:
        """What the call's record keeps of its media (never a key): the codec and SRTP suite, packets
        each way, the loss and jitter we measured, what the peer's RTCP said of our stream, the drops."""
        media, sender, rtcp = self.media, self.sender, self.rtcp
        return {
            "codec": media.codec.name,
            "srtp": media.srtp.suite if media.srtp is not None else None,
            "rtcp_mux": media.rtcp_mux,
            "sent": {"packets": sender.packets_sent, "octets": sender.octets_sent},
            **reception_record(rtcp, self.counters["received"], media.codec.clock_rate),
            "rtcp": {"sent": self.counters["rtcp_sent"], "received": self.counters["rtcp"]},
            "dropped": {key.removeprefix("dropped_"): value for key, value in sorted(self.counters.items())
                        if key.startswith("dropped_")},
        }

    def drop(self, reason: str) -> None:
        """Count a datagram (or a payload) refused for `reason`: for this call and in the metric."""
        self.counters[f"dropped_{reason}"] += 1
        metrics.SIP_RTP_DROPPED.labels(reason).inc()


def _ignore_digit(digit: str) -> None:
    """What a closed line reports key presses to."""
