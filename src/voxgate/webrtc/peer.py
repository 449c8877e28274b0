"""One browser's media, under a thin asyncio shell: ICE-lite on our own UDP socket, DTLS, SRTP, SCTP.

    peer = BrowserPeer(plan, certificate, listener)        # plan: answer.plan_answer(offer)
    answer_sdp = peer.open(["192.0.2.10"], ports)         # binds, returns the answer
    peer.send_rtp(packet)                                 # the agent's audio, protected and sent
    peer.send_text(channel, text)                         # an event on a data channel
    peer.close()

Every datagram is handled where it lands (`datagram_received`), as a plain call: no task, queue or thread
hand-over per packet (aiortc's cost three per packet, and held every packet for 80 ms in a jitter
buffer). RFC 7983 tells STUN, DTLS and SRTP apart by the first byte. Only an address that passed an
authenticated connectivity check may send anything but a check; the one the browser nominated is
where we send. What `listener` hears (audio packets, channel events, the connection's state) it must
handle without blocking.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from typing import Protocol, cast

from voxgate.sip.rtp import RtpError, RtpPacket, parse_rtp
from voxgate.sip.srtp import SrtpContext, SrtpError
from voxgate.webrtc import stun
from voxgate.webrtc.answer import MAX_MESSAGE_SIZE, AnswerPlan, IceCredentials
from voxgate.webrtc.data_channels import (
    AssociationClosed,
    Channel,
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    DataChannels,
)
from voxgate.webrtc.dtls import ApplicationData, Closed, Connected, DtlsCertificate, DtlsEndpoint, Failed
from voxgate.webrtc.sctp import SctpAssociation

__all__ = ["BrowserPeer", "PeerListener"]

log = logging.getLogger("voxgate.webrtc")

Address = tuple[str, int]
CONSENT_TIMEOUT_S = 30.0  # RFC 7675: no authenticated check for this long, and the browser is gone
SCTP_MTU = 1100  # DTLS adds 13 bytes of header and up to ~50 of AEAD/padding within its 1200
MAX_CHECKED_ADDRESSES = 8  # addresses a browser may prove (one per candidate pair it tries), bounded


class PeerListener(Protocol):
    def audio_received(self, packet: RtpPacket, now: float) -> None: ...
    def channel_opened(self, channel: Channel) -> None: ...
    def message_received(self, channel: Channel, data: str | bytes) -> None: ...
    def channel_closed(self, channel: Channel) -> None: ...
    def state_changed(self, state: str) -> None: ...  # "connected" | "failed" | "closed"
    def rtcp_received(self, data: bytes, now: float) -> None: ...  # a compound report, decrypted


class _Socket(asyncio.DatagramProtocol):
    """One of our candidates: a UDP socket whose datagrams go to the peer, tagged with where they landed."""

    def __init__(self, peer: BrowserPeer) -> None:
        self.peer = peer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's UDP transport is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        self.peer.datagram_received(self, data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.peer.counters["socket_errors"] += 1


class BrowserPeer:
    def __init__(self, plan: AnswerPlan, certificate: DtlsCertificate, listener: PeerListener, *,
                 ice: IceCredentials | None = None) -> None:
        self.plan = plan
        self.ice = ice or IceCredentials.generate()
        self.certificate = certificate
        self.listener = listener
        self.state = "new"  # "checking" once a check came, "connected" after DTLS, "failed" | "closed"
        self.dtls = DtlsEndpoint(certificate, server=plan.dtls_server, remote_fingerprints=plan.remote_fingerprints)
        self.srtp: SrtpContext | None = None
        self.sctp: SctpAssociation | None = None
        self.channels: DataChannels | None = None
        self.last_check = 0.0  # loop time of the last authenticated check (consent freshness)
        self.counters: Counter[str] = Counter()
        self._loop = asyncio.get_running_loop()
        self._sockets: list[_Socket] = []
        self._checked: dict[Address, _Socket] = {}  # addresses that passed a check, and the socket they reached
        self._selected: tuple[_Socket, Address] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._dtls_started = False
        self._closed = False  # `close` has run: the sockets are closed (the state may say so earlier)

    # -- set-up and teardown -------------------------------------------------------------------------

    async def open(self, hosts: list[str], bind: BindSocket) -> str:
        """Bind a socket on each host address and return the answer SDP naming them as candidates."""
        candidates: list[Address] = []
        for host in hosts:
            sock = bind(host)
            _, protocol = await self._loop.create_datagram_endpoint(lambda: _Socket(self), sock=sock)
            self._sockets.append(protocol)
            candidates.append((host, sock.getsockname()[1]))
        return self.plan.to_sdp(ice=self.ice, fingerprints=self.certificate.fingerprints(), candidates=candidates)

    @property
    def ports(self) -> list[int]:
        return [s.transport.get_extra_info("sockname")[1] for s in self._sockets if s.transport is not None]

    def close(self) -> None:
        """Say goodbye on the data channel's transport (close_notify) and close the sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.state == "connected":
            self.dtls.close()
            self._flush_dtls()
        self._set_state("closed")  # the listener hears it, unless the browser's leaving already ended the call
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for protocol in self._sockets:
            if protocol.transport is not None:
                protocol.transport.close()
        # Let go of the sockets (each points back here) and of the listener (the call, which points here):
        # an ended call holds no reference cycle, and is freed as it ends (see `Session._let_go`).
        self._sockets.clear()
        self.listener = _NOBODY

    # -- sending -------------------------------------------------------------------------------------

    def send_rtp(self, packet: bytes) -> bool:
        """Protect and send one RTP packet; False (nothing sent) until DTLS has given us keys."""
        return self.srtp is not None and self._send(self.srtp.protect(packet))

    def send_rtcp(self, packet: bytes) -> bool:
        """Protect and send one compound RTCP packet (muxed on the media socket, RFC 5761)."""
        if self.srtp is None or not self._send(self.srtp.protect_rtcp(packet)):
            return False
        self.counters["rtcp_sent"] += 1
        return True

    def _send(self, datagram: bytes) -> bool:
        """One datagram to the pair the browser nominated; False while there is none."""
        selected = self._selected
        if selected is None or selected[0].transport is None:
            return False
        selected[0].transport.sendto(datagram, selected[1])
        return True

    def send_text(self, channel: Channel, data: str | bytes) -> str | None:
        """Queue a message on a channel; None, or why it was not sent: "too_large" (over the browser's
        a=max-message-size), "backlog" (the peer stopped reading: the send buffer is full), "closed"."""
        channels = self.channels
        if channels is None or self.state != "connected":
            return "closed"
        try:
            channels.send(channel, data, self._loop.time())
        except BufferError:
            return "backlog"
        except ConnectionError:
            return "closed"
        except ValueError:  # over the size both sides agreed on (or empty bytes: never, DCEP sends those)
            return "too_large"
        self._flush_sctp()
        return None

    def close_channel(self, channel: Channel) -> None:
        channels = self.channels
        if channels is not None and self.state == "connected":
            channels.close(channel, self._loop.time())
            self._flush_sctp()

    @property
    def buffered_amount(self) -> int:
        return self.sctp.buffered_amount if self.sctp is not None else 0

    # -- receiving -----------------------------------------------------------------------------------

    def datagram_received(self, sock: _Socket, data: bytes, source: Address) -> None:
        if self.state in ("closed", "failed") or not data:
            return
        first = data[0]
        if first < 4:
            self._check_received(sock, data, source)
        elif source not in self._checked:
            self._drop("unchecked_source")  # RFC 8445 §7.3: media only from an address that proved our password
        elif 20 <= first <= 63:
            self._dtls_received(data)
        elif 128 <= first <= 191:
            self._media_received(data)
        else:
            self._drop("unknown_protocol")

    def _check_received(self, sock: _Socket, data: bytes, source: Address) -> None:
        if sock.transport is None or not stun.is_stun(data):
            self._drop("bad_stun")
            return
        try:
            check = stun.read_check(data, local_ufrag=self.ice.ufrag, local_password=self.ice.password)
        except stun.StunError as error:
            self._drop("bad_check")
            if error.status:
                reply = stun.answer_error(data, error.status, local_password=self.ice.password)
                if reply is not None:
                    sock.transport.sendto(reply, source)
            return
        if check.remote_ufrag != self.plan.remote_ice.ufrag:
            self._drop("bad_check")  # a check from another session's browser, signed by chance with ours: no
            return
        sock.transport.sendto(stun.answer_check(check, source=source, local_password=self.ice.password), source)
        now = self._loop.time()
        self.last_check = now
        if source not in self._checked and len(self._checked) >= MAX_CHECKED_ADDRESSES:
            return
        self._checked[source] = sock
        if check.use_candidate or self._selected is None:
            self._selected = (sock, source)  # the nominated pair, or the first that worked until one is
        if self.state == "new":
            self._set_state("checking")
        if not self._dtls_started:
            self._dtls_started = True
            self.dtls.start(now)  # a client sends its ClientHello now; a server waits for one
            self._flush_dtls()

    def _dtls_received(self, data: bytes) -> None:
        self.dtls.receive(data, self._loop.time())
        self._dtls_events()
        self._flush_dtls()

    def _dtls_events(self) -> None:
        while (event := self.dtls.next_event()) is not None:
            if isinstance(event, Connected):
                self.srtp = SrtpContext(event.keys)
                plan = self.plan
                if plan.data is not None:
                    # An SCTP packet rides in one DTLS record in one datagram: its MTU leaves room for the record.
                    self.sctp = SctpAssociation(remote_port=plan.remote_sctp_port, mtu=SCTP_MTU,
                                                max_message_size=MAX_MESSAGE_SIZE,
                                                max_send_message_size=plan.remote_max_message_size)
                    self.channels = DataChannels(self.sctp, dtls_client=not plan.dtls_server)
                self._set_state("connected")
            elif isinstance(event, ApplicationData):
                if self.channels is not None:
                    self.channels.receive(event.data, self._loop.time())
                    self._channel_events()
                    self._flush_sctp()
            elif isinstance(event, Closed):
                self._set_state("closed")
            elif isinstance(event, Failed):
                log.info("DTLS failed: %s", event.reason)
                self._set_state("failed")

    def _channel_events(self) -> None:
        channels, listener = self.channels, self.listener
        assert channels is not None
        while (event := channels.next_event()) is not None:
            if isinstance(event, ChannelMessage):
                listener.message_received(event.channel, event.data)
            elif isinstance(event, ChannelOpened):
                listener.channel_opened(event.channel)
            elif isinstance(event, ChannelClosed):
                listener.channel_closed(event.channel)
            elif isinstance(event, AssociationClosed):
                log.info("SCTP association closed: %s", event.reason)

    def _media_received(self, data: bytes) -> None:
        srtp = self.srtp
        if srtp is None:
            self._drop("before_keys")
            return
        if len(data) >= 2 and 192 <= data[1] <= 223:  # RFC 5761: RTCP on the muxed port
            try:
                plain = srtp.unprotect_rtcp(data)
            except SrtpError:
                self._drop("bad_srtcp")
                return
            self.counters["rtcp_received"] += 1
            self.listener.rtcp_received(plain, self._loop.time())
            return
        try:
            packet = parse_rtp(srtp.unprotect(data))
        except (SrtpError, RtpError):
            self._drop("bad_srtp")
            return
        if packet.payload_type != self.plan.payload_type:
            self._drop("unknown_payload_type")
            return
        self.listener.audio_received(packet, self._loop.time())

    # -- timers and output ---------------------------------------------------------------------------

    def _flush_sctp(self) -> None:
        sctp = self.sctp
        if sctp is not None:
            for packet in sctp.datagrams_to_send(self._loop.time()):
                self.dtls.send(packet)
        self._flush_dtls()

    def _flush_dtls(self) -> None:
        for datagram in self.dtls.datagrams_to_send():
            self._send(datagram)
        self._arm()

    def _arm(self) -> None:
        """One timer for the call's transport: the earlier of DTLS's retransmission and SCTP's."""
        due = [t for t in (self.dtls.next_timer(), self.sctp.next_timer() if self.sctp is not None else None)
               if t is not None]
        at = min(due) if due else None
        if at == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = None if at is None else self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self.state in ("closed", "failed"):
            return
        now = self._loop.time()
        dtls_due = self.dtls.next_timer()
        if dtls_due is not None and dtls_due <= now:
            self.dtls.handle_timer(now)
            self._dtls_events()
        sctp, channels = self.sctp, self.channels
        if sctp is not None and channels is not None:
            sctp_due = sctp.next_timer()
            if sctp_due is not None and sctp_due <= now:
                channels.handle_timer(now)
                self._channel_events()
        self._flush_sctp()

    def _set_state(self, state: str) -> None:
        if self.state == state or self.state in ("closed", "failed"):
            return
        self.state = state
        if state != "checking":
            self.listener.state_changed(state)

    def _drop(self, reason: str) -> None:
        self.counters[f"dropped_{reason}"] += 1


class _Nobody:
    """What a closed peer reports to: nobody."""

    def audio_received(self, packet: RtpPacket, now: float) -> None: ...
    def channel_opened(self, channel: Channel) -> None: ...
    def message_received(self, channel: Channel, data: str | bytes) -> None: ...
    def channel_closed(self, channel: Channel) -> None: ...
    def state_changed(self, state: str) -> None: ...
    def rtcp_received(self, data: bytes, now: float) -> None: ...


_NOBODY = _Nobody()


class BindSocket(Protocol):
    def __call__(self, host: str) -> socket.socket: ...
