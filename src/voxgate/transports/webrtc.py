"""The WebRTC transport: a browser's call on voxgate's own media stack (`voxgate.webrtc`), Opus both ways,
events on `oai-events`.

Signalling is OpenAI's, so a page written for OpenAI works by changing its base URL:

- GA `POST /v1/realtime/calls`: raw `application/sdp` body, or `multipart/form-data` with an `sdp` part
  and an optional `session` part (JSON); 201, the answer SDP, `Location: /v1/realtime/calls/{call_id}`.
- beta `POST /v1/realtime?model=...`: SDP in, SDP out, beta event names on the data channel.
- `POST /v1/realtime/calls/{call_id}/hangup` (API key) ends a call (`control/realtime_calls.py`; `/refer`
  is refused there: a browser has no phone line to transfer).
- sideband: a WebSocket to `/v1/realtime?call_id=...` (API key) joins a live call's session
  (`transports/sideband.py`): it sees the call's events and may send events (tools, instructions); the
  audio stays on the peer connection.
  Both answer 404 to a key that does not own the call (see `Principal.sees`).

The gateway is an ICE-lite agent with one UDP socket per call (`webrtc_host_addresses`,
`webrtc_port_min`-`webrtc_port_max`); the browser checks it, DTLS-SRTP keys the audio, SCTP carries the
data channel (`webrtc/peer.py`). The caller's packets go through the SIP calls' adaptive jitter buffer,
which hands a packet on the moment it is next in sequence: no fixed prefetch.

The server owns playback here: agent audio leaves as RTP paced on the shared 20 ms ticker, so the line
knows what the caller heard and the session truncates by itself on barge-in. Audio deltas never go on
the data channel; `output_audio_buffer.stopped` is sent when a response's audio has all been played.
A peer that has not connected within `webrtc_connect_timeout_s` is dropped, and a call ends (session
closed, sockets closed, call forgotten) on hang-up, on peer loss (DTLS close, or no consent check for
30 s), or at the session time limit.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import aioice.ice
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCIceServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxgate.admission import Refusal
from voxgate.audio.formats import PCM24K
from voxgate.audio.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from voxgate.audio.opus import OpusCodec, OpusError
from voxgate.audio.playout import Playout
from voxgate.audio.resample import StreamResampler
from voxgate.config import Settings
from voxgate.control.auth import principal_of
from voxgate.control.ephemeral import merge_bound_session, redeem, session_agent, validate_session
from voxgate.control.problems import problem, refused
from voxgate.gateway import gateway_of
from voxgate.protocol import server_events as se
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.ids import new_id
from voxgate.protocol.items import Dialect
from voxgate.protocol.json_text import parse_json
from voxgate.protocol.serialiser import encode_event
from voxgate.session.listening import STT_RATE
from voxgate.session.playback import PlaybackTracker
from voxgate.sip.jitter import JitterBuffer, Lost
from voxgate.sip.rtcp import RtcpError, RtcpSession, reception_record
from voxgate.sip.rtp import RtpPacket, RtpSender
from voxgate.transports.audio_output import AudioOutput
from voxgate.transports.caller_input import CallerInput
from voxgate.transports.frame_ticker import FrameTicker, shared_ticker
from voxgate.transports.operator_leg import OperatorLeg
from voxgate.transports.rtp_ports import PortsExhausted, RtpPorts
from voxgate.transports.sideband import Sideband, broadcast
from voxgate.transports.webrtc_offer import OfferError, read_offer
from voxgate.webrtc.answer import AnswerPlan, plan_answer
from voxgate.webrtc.data_channels import Channel
from voxgate.webrtc.dtls import DtlsCertificate
from voxgate.webrtc.peer import BrowserPeer

if TYPE_CHECKING:
    from voxgate.admission import Ticket
    from voxgate.gateway import Gateway, Principal
    from voxgate.session.session import Session

log = logging.getLogger("voxgate.webrtc")

FRAME_MS = 20
TRACK_RATE = PCM24K.rate  # the agent's voice is queued at the session's rate; Opus codes it as it is
# The caller's Opus decodes to the rate the session listens at (its VAD's and STT's): the session takes the
# PCM as it is and puts it into its input format only when a turn is committed.
HEARD_RATE = STT_RATE
CHANNEL_LABEL = "oai-events"
MAX_INBOX_MESSAGES = 256  # data channel messages waiting for the session; more is a flood, refused
MAX_PENDING_EVENTS = 512  # events held for a data channel that has not opened yet
MAX_CHANNEL_BUFFERED = 4 * 1024 * 1024  # bytes a peer may leave unread on the channel before we hang up
MAX_SIGNALLING_BYTES = 256 * 1024  # an offer plus a session: a few KiB in practice
MAX_INPUT_BACKLOG = 50  # caller frames waiting behind a barge-in (a second); more are dropped, counted
HANGUP_DRAIN_S = 30.0  # how long a goodbye may keep playing after the agent hangs up
CONSENT_TIMEOUT_S = 30.0  # RFC 7675: a browser that has sent no check for this long is gone
CERTIFICATE_RENEW_S = 24 * 3600.0  # a fresh DTLS certificate for new calls each day (each is valid 30)
_SESSION_AUDIO = {"input": {"format": PCM24K.to_ga()}, "output": {"format": PCM24K.to_ga()}}
_ORIGINAL_HOST_ADDRESSES = aioice.ice.get_host_addresses


class TrackAudio:
    """The session's PCM at the line's rate, as the bytes of 16-bit native samples the playout cuts."""

    def __init__(self, rate: int = TRACK_RATE) -> None:
        self.rate = rate
        self._resampler = StreamResampler(PCM24K.rate, rate)

    def encode(self, pcm: npt.NDArray[np.int16], rate: int) -> bytes:
        if self._resampler.in_rate != rate:
            self._resampler = StreamResampler(rate, self.rate)
        return self._resampler.process(pcm).tobytes()

    def flush(self) -> bytes:
        return self._resampler.flush().tobytes()

    def reset(self) -> None:
        self._resampler.reset()

    def decode(self, payload: bytes) -> tuple[npt.NDArray[np.int16], int]:
        return np.frombuffer(payload, dtype=np.int16), self.rate


class LineCodec:
    """The agreed codec both ways: RTP payloads to mono PCM, the playout's PCM frames to payloads.

    Opus (what every browser offers first) codes the agent's 24 kHz voice as it is, in CELT's low-delay
    mode, and decodes the caller's straight to the 16 kHz the session listens at (no resampler between,
    libopus does it inside); G.711 is for a client that offers nothing else."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.opus = OpusCodec(input_rate=TRACK_RATE, output_rate=HEARD_RATE, application="lowdelay") \
            if codec == "opus" else None
        self.line_rate = TRACK_RATE if codec == "opus" else 8000  # the PCM the playout holds
        self.heard_rate = HEARD_RATE if codec == "opus" else 8000  # the PCM a caller's packet decodes to
        self.clock_samples = 960 if codec == "opus" else 160  # one 20 ms packet's step of the RTP clock
        self._encode = ulaw_encode if codec == "pcmu" else alaw_encode
        self._decode = ulaw_decode if codec == "pcmu" else alaw_decode
        self._silence = b"" if self.opus is not None else self._encode(np.zeros(160, np.int16))

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """OpusError for a payload the decoder refuses; b"" (a lost packet's turn) is 20 ms of silence."""
        if self.opus is not None:
            return self.opus.decode(payload)
        return self._decode(payload) if payload else np.zeros(160, np.int16)

    def encode(self, pcm: bytes | None) -> bytes:
        if self.opus is not None:
            return self.opus.encode_silence() if pcm is None else self.opus.encode(np.frombuffer(pcm, np.int16))
        return self._silence if pcm is None else self._encode(np.frombuffer(pcm, np.int16))


class WebRtcCall:
    """One browser call: its peer (ICE, DTLS, SRTP, SCTP), its session, and the Caller the session talks to."""

    transport = "webrtc"

    def __init__(self, gateway: Gateway, registry: WebRtcCalls, dialect: Dialect, owner: str | None = None,
                 ticket: Ticket | None = None) -> None:
        self.id = new_id("rtc")
        self.owner = owner  # the key whose call this is (hang-up and sideband check it)
        self.ticket = ticket  # admission: released when the call closes
        self.gateway = gateway
        self.registry = registry
        self.dialect: Dialect = dialect
        self.playback = PlaybackTracker(server_side=True)
        self.session: Session | None = None
        self.peer: BrowserPeer | None = None
        self.plan: AnswerPlan | None = None
        self.codec: LineCodec | None = None
        self.playout: Playout | None = None
        self.output: AudioOutput | None = None
        self.jitter: JitterBuffer | None = None
        self.sender: RtpSender | None = None
        self.rtcp: RtcpSession | None = None  # reports both ways once the call runs (RFC 3550 §6)
        self.channel: Channel | None = None
        self.sidebands: set[Sideband] = set()
        self.operator: OperatorLeg | None = None  # the operator who took the call over from the agent
        self.relay: Callable[[], bytes | None] | None = None  # the operator's voice, once one took the call
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self._closing = False
        self._pending: list[str] = []  # serialised events waiting for the channel to open
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue(MAX_INBOX_MESSAGES)
        self._input: CallerInput[npt.NDArray[np.int16]] = CallerInput(self._append, max_backlog=MAX_INPUT_BACKLOG)
        self._ticker: FrameTicker | None = None
        self._ports: list[int] = []  # the media ports this call took (one per host address)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.events_dropped = 0
        self.counters: Counter[str] = Counter()

    # -- signalling --------------------------------------------------------------------------------

    async def answer(self, plan: AnswerPlan) -> str:
        """Bind the call's media for the planned answer and return the answer SDP (our candidates included: no
        trickle). Raises PortsExhausted when no port is free."""
        self.plan = plan
        codec = self.codec = LineCodec(plan.codec)
        settings = self.gateway.settings
        frame_bytes = codec.line_rate // 50 * 2
        self.playout = Playout(frame_bytes=frame_bytes, silence=b"\x00\x00", frame_ms=FRAME_MS, continuous=True,
                               max_frames=int(settings.webrtc_playout_buffer_s * 1000 / FRAME_MS))
        self.output = AudioOutput(self.playout, TrackAudio(codec.line_rate), self.playback)
        self.jitter = JitterBuffer(clock_rate=plan.clock_rate)
        self.sender = RtpSender(plan.payload_type, plan.clock_rate, ssrc=plan.ssrc)
        self.peer = BrowserPeer(plan, self.registry.certificate(), self)
        ports = self.registry.ports(settings)

        def bind(host: str) -> Any:
            # An address that is not this host's (a 1:1 NAT's public one) is offered as it is, and the socket
            # takes the port on every interface of its family.
            sock, _ = ports.bind(host if is_local_address(host) else "::" if ":" in host else "0.0.0.0", rtcp=False)
            self._ports.append(sock.getsockname()[1])
            return sock

        return await self.peer.open(host_addresses(settings), bind)

    def start(self, session: Session) -> None:
        """Run the call: pump the session's output, feed it the channel, beat the line, watch the clock."""
        assert self.output is not None
        self.session = session
        self.output.session = session
        assert self.sender is not None
        self.rtcp = RtcpSession(self.sender, "voxgate", start=asyncio.get_running_loop().time())
        self._ticker = shared_ticker()
        self._ticker.add_beat(self._beat)  # the line's 20 ms, as a plain call on the shared ticker
        self._spawn(self._pump())
        self._spawn(self._read_inbox())
        self._spawn(self._watch(self.gateway.settings))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch(self, settings: Settings) -> None:
        try:
            await asyncio.wait_for(self.connected.wait(), settings.webrtc_connect_timeout_s)
        except TimeoutError:
            log.info("call %s: peer did not connect within %.0f s", self.id, settings.webrtc_connect_timeout_s)
            self._spawn(self.close("connect_timeout"))
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.session_max_seconds
        while True:
            peer = self.peer
            assert peer is not None
            wake = min(deadline, peer.last_check + CONSENT_TIMEOUT_S)
            await asyncio.sleep(max(0.0, wake - loop.time()))
            now = loop.time()
            if now >= deadline:
                if self.session is not None:
                    self.session.error(RealtimeError("session_expired", "The session reached its maximum duration."))
                self._spawn(self.close("session_expired"))
                return
            if now - peer.last_check >= CONSENT_TIMEOUT_S:
                log.info("call %s: no consent check for %.0f s", self.id, CONSENT_TIMEOUT_S)
                self._spawn(self.close("connection_failed"))
                return

    # -- the peer's news (webrtc/peer.py's PeerListener) ---------------------------------------------

    def state_changed(self, state: str) -> None:
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self._spawn(self.close("connection_failed" if state == "failed" else "client_closed"))

    def channel_opened(self, channel: Channel) -> None:
        peer = self.peer
        assert peer is not None
        if channel.label != CHANNEL_LABEL or self.channel is not None:
            peer.close_channel(channel)  # the protocol has exactly one channel; anything else is not ours to read
            return
        self.channel = channel
        pending, self._pending = self._pending, []
        for text in pending:
            peer.send_text(channel, text)

    def channel_closed(self, channel: Channel) -> None:
        if channel is self.channel:
            self.channel = None
            self._spawn(self.close("client_closed"))

    def message_received(self, channel: Channel, data: str | bytes) -> None:
        if channel is not self.channel:
            return
        try:
            self._inbox.put_nowait(data)
        except asyncio.QueueFull:
            if self.session is not None:
                self.session.error(RealtimeError("rate_limit_exceeded",
                                                 "Too many events at once; this one was dropped."))

    def audio_received(self, packet: RtpPacket, now: float) -> None:
        """A caller's packet: into the jitter buffer, and what it has due (this packet, when it is the next in
        sequence) to the session at once; the beat takes what a gap held back."""
        jitter = self.jitter
        assert jitter is not None
        jitter.push(packet, now)
        if self.rtcp is not None:
            self.rtcp.receive_rtp(packet, now)
        self._take_audio(now)

    def rtcp_received(self, data: bytes, now: float) -> None:
        """The browser's report: its loss and jitter on our stream, and the round trip (our SR echoed)."""
        if self.rtcp is not None:
            try:
                self.rtcp.receive(data, now)
            except RtcpError:
                self.counters["dropped_bad_rtcp"] += 1

    # -- events: data channel and sideband --------------------------------------------------------

    async def _read_inbox(self) -> None:
        assert self.session is not None
        while True:
            message = await self._inbox.get()
            if isinstance(message, bytes):
                try:
                    message = message.decode()
                except UnicodeDecodeError:
                    self.session.error(RealtimeError("invalid_json", "Binary messages must hold UTF-8 JSON."))
                    continue
            await self.session.handle_message(message)

    def _send_event(self, event: se.ServerEvent) -> None:
        text = encode_event(event, self.dialect)
        if text is not None:
            channel, peer = self.channel, self.peer
            if channel is not None and peer is not None:
                refused = peer.send_text(channel, text)
                if refused == "too_large":  # the event is lost to this client: it is told so, in an event that fits
                    self.events_dropped += 1
                    log.warning("call %s: a %s event of %d bytes is over the data channel's message size",
                                self.id, event.type, len(text))
                    error = RealtimeError("event_too_large", f"A {event.type} event was over the data channel's "
                                          "max-message-size and was not sent; offer a larger a=max-message-size."
                                          ).to_event()
                    if (notice := encode_event(error, self.dialect)) is not None:
                        peer.send_text(channel, notice)
                elif refused == "backlog" or peer.buffered_amount > MAX_CHANNEL_BUFFERED:
                    log.warning("call %s: peer stopped reading its data channel", self.id)
                    self._spawn(self.close("client_not_reading"))
            elif len(self._pending) < MAX_PENDING_EVENTS:
                self._pending.append(text)
            else:
                self.events_dropped += 1
        broadcast(self.sidebands, event)

    # -- audio out: session -> playout -> RTP ----------------------------------------------------

    async def _pump(self) -> None:
        """Drain the session's output: audio to the line's playout, every other event to the channel."""
        assert self.session is not None and self.output is not None
        session, output = self.session, self.output
        while True:
            event = await session.outbound.get()
            if event is None:
                break
            if output.take(event) is None:
                self._send_event(event)
        self._spawn(self.close(session.end_reason or "session_closed"))

    def _beat(self, now: float) -> None:
        """Each 20 ms beat: what a gap in the caller's packets held back, then the agent's frames that are due,
        one RTP packet each (silence when nothing is queued: a browser's line never pauses)."""
        output, codec, sender, peer, ticker = self.output, self.codec, self.sender, self.peer, self._ticker
        assert output is not None and codec is not None and sender is not None and peer is not None
        assert ticker is not None
        self._take_audio(now)
        for _ in range(output.due(now, ticker.next_beat())):
            relay = self.relay
            relayed = relay() if relay is not None else None
            played = output.pop(instead=relayed)  # the recording hears the operator, once one took the call over
            pcm = relayed if relay is not None else None if played is None else played.payload
            payload = codec.encode(pcm)
            if not peer.send_rtp(sender.datagram(payload, codec.clock_samples)):
                self.counters["unsent"] += 1
        rtcp = self.rtcp
        if rtcp is not None and rtcp.due(now):
            peer.send_rtcp(rtcp.report(now, time.time()))

    def quality(self) -> dict[str, Any]:
        """What the call's record keeps of its media (never a key): codec and SRTP suite, packets each way,
        the loss and jitter we measured, what the browser's RTCP said of our stream, the round trip, drops."""
        plan, sender, rtcp, peer = self.plan, self.sender, self.rtcp, self.peer
        keys = peer.srtp.keys if peer is not None and peer.srtp is not None else None
        counters = self.counters + peer.counters if peer is not None else self.counters
        statistics = rtcp.statistics if rtcp is not None else None
        return {
            "codec": plan.codec if plan is not None else None,
            "srtp": keys.suite if keys is not None else None,
            "dtls": peer.dtls.cipher if peer is not None else None,
            "sent": {"packets": sender.packets_sent if sender else 0, "octets": sender.octets_sent if sender else 0},
            **reception_record(rtcp, statistics.received if statistics is not None else 0,
                               plan.clock_rate if plan is not None else 48000),
            "rtcp": {"sent": counters["rtcp_sent"], "received": counters["rtcp_received"]},
            "dropped": {key.removeprefix("dropped_"): value for key, value in sorted(counters.items())
                        if key.startswith("dropped_")},
        }

    # -- audio in: RTP -> jitter buffer -> session -------------------------------------------------

    def _take_audio(self, now: float) -> None:
        jitter, codec = self.jitter, self.codec
        assert jitter is not None and codec is not None
        while (item := jitter.pop(now)) is not None:
            try:
                pcm = codec.decode(b"" if isinstance(item, Lost) else item.payload)
            except OpusError:
                self.counters["dropped_bad_opus"] += 1
                continue
            self._hear(pcm)

    def _hear(self, pcm: npt.NDArray[np.int16]) -> None:
        """A caller's frame, at the codec's `heard_rate`: for the session, or the operator who took over."""
        session, operator, codec = self.session, self.operator, self.codec
        if session is None or session.closed or codec is None:
            return
        if operator is not None:  # taken over: the caller talks to the operator, not the agent
            operator.hear_caller(pcm, codec.heard_rate)
            if session.recording is not None:  # and is still recorded (the session hears no more of it)
                session.recording.caller(pcm, codec.heard_rate)
            return
        self._input.put(pcm)

    def _append(self, pcm: npt.NDArray[np.int16]) -> Awaitable[None] | None:
        session, codec = self.session, self.codec
        if session is None or session.closed or codec is None:
            return None
        try:
            return session.append_pcm_nowait(pcm, codec.heard_rate)
        except RealtimeError as exc:
            session.error(exc)
        return None

    # -- an operator taking over (control/escalations.py) ------------------------------------------

    async def take_over(self, leg: OperatorLeg) -> None:
        """The operator's leg replaces the agent: the caller's audio goes to it, its audio to the caller,
        and the session is silenced; the call ends when the operator's connection does."""
        assert self.output is not None
        self.operator = leg
        self.relay = leg.next_frame
        self.output.clear()
        if self.session is not None:
            await self.session.take_over(leg.operator)
        self._spawn(self._until_operator_leaves(leg))

    async def _until_operator_leaves(self, leg: OperatorLeg) -> None:
        await leg.ended.wait()
        self._spawn(self.close("operator_hung_up"))

    # -- the Caller protocol -----------------------------------------------------------------------

    async def interrupt_playback(self) -> None:
        """Barge-in: drop every queued frame now (the session has already cut the audio still on its way)."""
        if self.output is not None:
            self.output.clear()
            if self.sender is not None:
                self.sender.talkspurt()

    async def hold_playback(self) -> None:
        """A possible barge-in: the line plays silence from the next frame, the agent's frames wait."""
        if self.output is not None:
            self.output.hold()

    async def resume_playback(self) -> None:
        if self.output is not None:
            self.output.resume()

    async def transfer(self, target: str, reason: str) -> None:
        # A browser is not a phone line: it learns of the hand-over from the agent's words and the call
        # record; there is no carrier leg to move.
        log.info("call %s: transfer to %s requested on a WebRTC call", self.id, target)

    async def hang_up(self, reason: str) -> None:
        """The agent ends the call: let the goodbye play out, then close."""
        if self.output is not None:
            await self.output.until_heard(HANGUP_DRAIN_S)
        await self.close(reason)

    async def send_dtmf(self, digits: str) -> None:
        raise RealtimeError("unsupported", "DTMF cannot be sent on a WebRTC call.")

    async def wait_ended(self) -> None:
        await self.closed.wait()

    # -- teardown ----------------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """End the call on any path; idempotent. Frees the session, the sockets and the id."""
        if self._closing:
            return
        self._closing = True
        self.registry.forget(self)
        if self.ticket is not None:
            self.ticket.release()
        if self._ticker is not None:
            self._ticker.remove_beat(self._beat)
        self._input.close()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        if (step := self._input.finishing) is not None:
            step.cancel()
        session = self.session
        if session is not None:
            if not session.closed:
                session.record_metadata["media"] = self.quality()
            await session.close(reason)
            self.gateway.session_closed(session)
        if self.operator is not None:
            await self.operator.close()
        if self.peer is not None:
            self.peer.close()
        for port in self._ports:
            self.registry.ports(self.gateway.settings).release(port)
        for sideband in list(self.sidebands):
            sideband.outbound.close()
        self._let_go()
        self.closed.set()
        log.info("call %s closed: %s", self.id, reason)

    def _let_go(self) -> None:
        """The call is closed and recorded: let go of its session (whose caller is this call) and of the peer
        (whose listener is this call), so both are freed as the call ends, by reference counting, not by a
        full pass of the cycle collector (see `Session._let_go`)."""
        self.session = None
        if self.output is not None:
            self.output.session = None
        self.peer = None
        self.relay = None


class WebRtcCalls:
    """The live calls of one app, by call id (what hang-up, sideband and the console look up)."""

    def __init__(self) -> None:
        self._calls: dict[str, WebRtcCall] = {}
        self._certificate: DtlsCertificate | None = None
        self._certificate_made = 0.0
        self._ports: RtpPorts | None = None

    def certificate(self) -> DtlsCertificate:
        """The DTLS certificate new calls present (browsers trust it by the fingerprint in our answer), made
        on first use and anew each day; a call keeps the one it started with."""
        now = time.monotonic()
        if self._certificate is None or now - self._certificate_made > CERTIFICATE_RENEW_S:
            self._certificate, self._certificate_made = DtlsCertificate.generate(), now
        return self._certificate

    def ports(self, settings: Settings) -> RtpPorts:
        if self._ports is None:
            self._ports = RtpPorts(settings.webrtc_port_min, settings.webrtc_port_max)
        return self._ports

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[WebRtcCall]:
        return iter(list(self._calls.values()))

    def add(self, call: WebRtcCall) -> None:
        self._calls[call.id] = call

    def get(self, call_id: str) -> WebRtcCall | None:
        return self._calls.get(call_id)

    def forget(self, call: WebRtcCall) -> None:
        self._calls.pop(call.id, None)
        if call.gateway.cluster is not None:
            call.gateway.cluster.release(call.id)


def calls_of(app_state: Any) -> WebRtcCalls:
    """The app's call registry, made on first use."""
    registry: WebRtcCalls | None = getattr(app_state, "webrtc_calls", None)
    if registry is None:
        registry = WebRtcCalls()
        app_state.webrtc_calls = registry
    return registry


def host_addresses(settings: Settings) -> list[str]:
    """The addresses a browser call's socket binds and offers: the configured ones, else every interface's
    IPv4 address but loopback (aioice's enumeration, as the operator's leg uses)."""
    if settings.webrtc_host_addresses:
        return list(settings.webrtc_host_addresses)
    return _ORIGINAL_HOST_ADDRESSES(use_ipv4=True, use_ipv6=False) or ["127.0.0.1"]


def is_local_address(host: str) -> bool:
    """Whether a socket can be bound to `host` here."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except (OSError, OverflowError):
        return False
    return True


def ice_configuration(settings: Settings) -> RTCConfiguration:
    """ICE for an operator's leg (aiortc, control/escalations.py): no STUN/TURN by default (a LAN needs none;
    aiortc would otherwise ask Google's)."""
    if settings.webrtc_host_addresses:
        offered = list(settings.webrtc_host_addresses)

        def addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
            return [a for a in offered if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

        # aioice has no option for this and never offers loopback; the patch is process-wide, like the setting.
        aioice.ice.get_host_addresses = addresses
    else:
        aioice.ice.get_host_addresses = _ORIGINAL_HOST_ADDRESSES
    servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in settings.ice_servers]
    return RTCConfiguration(iceServers=servers)


# -- routes ----------------------------------------------------------------------------------------


async def receive_signalling(request: Request, allow_session: bool) -> tuple[str, Any]:
    """(offer SDP, session part or None) from the request body, read up to MAX_SIGNALLING_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SIGNALLING_BYTES:
            raise RealtimeError("body_too_large", f"The request body exceeds {MAX_SIGNALLING_BYTES} bytes.")
    return read_signalling(request.headers.get("content-type", ""), body, allow_session)


def read_signalling(header: str, body: bytes, allow_session: bool) -> tuple[str, Any]:
    """(offer SDP, session part or None) from a raw `application/sdp` body or a multipart form, or a
    RealtimeError saying what is wrong with it (sans-IO)."""
    content_type = header.split(";")[0].strip().lower()
    accepted = "application/sdp or multipart/form-data" if allow_session else "application/sdp"
    if content_type not in ("application/sdp", "text/plain", "") and not (
            allow_session and content_type == "multipart/form-data"):
        raise RealtimeError("unsupported_content_type", f"Send the SDP offer as {accepted}, not {content_type}.")
    if content_type != "multipart/form-data":
        return body.decode("utf-8", "replace"), None
    parts = form_parts(header, body)
    if "sdp" not in parts:
        raise RealtimeError("missing_required_parameter", "The multipart body has no 'sdp' part.", param="sdp")
    session: Any = None
    if "session" in parts:
        try:
            session = parse_json(parts["session"], "The 'session' part")
        except RealtimeError as exc:
            exc.param = "session"
            raise
    return parts["sdp"].decode("utf-8", "replace"), session


def form_parts(content_type: str, body: bytes) -> dict[str, bytes]:
    """The named parts of a `multipart/form-data` body (the standard library's MIME parser does the work)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise RealtimeError("invalid_body", "The multipart body could not be read (check its boundary).")
    parts: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts[name] = payload
    return parts


async def _open_call(request: Request, dialect: Dialect) -> Response:

    gateway = gateway_of(request)
    principal = await principal_of(request)
    if isinstance(principal, JSONResponse):
        return principal
    if not gateway.ready:
        return problem(503, "not_ready", "The gateway is starting.")
    params = request.query_params
    try:
        agent = session_agent(gateway, principal, params.get("agent"))
    except RealtimeError as exc:
        return problem(403, exc.code, exc.message, param=exc.param)
    ticket = gateway.admission.try_admit(principal.owner, "webrtc")
    if isinstance(ticket, Refusal):
        return refused(ticket)
    try:
        sdp, session_part = await receive_signalling(request, allow_session=dialect == "ga")
        plan = plan_answer(read_offer(sdp))  # before a key is spent: an offer we cannot answer is refused here
        initial = await _initial_config(gateway, principal, session_part, agent.name)
    except OfferError as exc:
        ticket.release()
        return problem(400, "invalid_offer", str(exc), param="sdp")
    except RealtimeError as exc:
        ticket.release()
        return problem(400, exc.code, exc.message, param=exc.param)
    except BaseException:  # the client went away mid-body, or the task was cancelled
        ticket.release()
        raise
    registry = calls_of(request.app.state)
    # From here on, closing the call releases the ticket.
    call = WebRtcCall(gateway, registry, dialect, owner=principal.owner, ticket=ticket)
    if not await redeem(gateway, principal, "webrtc", call.id):
        await call.close("key_reused")
        return problem(401, "invalid_api_key", "This ephemeral key has already been used to open a session.")
    try:
        answer = await call.answer(plan)
    except PortsExhausted:
        await call.close("no_media_port")
        return problem(503, "media_ports_exhausted", "No media port is free for another call; try again shortly.")
    model = params.get("model") or (principal.session_config or {}).get("model")
    try:
        session = await gateway.open_session(agent=agent, caller=call, dialect=dialect, model=model,
                                             initial_config=initial, owner=principal.owner, opened_by=principal)
    except RealtimeError as exc:  # the bound config does not fit this agent (e.g. a voice its engine lacks)
        await call.close("bad_session")
        return problem(400, exc.code, exc.message, param=exc.param)
    registry.add(call)
    if gateway.cluster is not None:  # other nodes carry control requests for this call here
        await gateway.cluster.hold(call.id)
    call.start(session)
    await session.start(caller_id=request.client.host if request.client else None)
    return Response(answer, status_code=201, media_type="application/sdp",
                    headers={"Location": f"/v1/realtime/calls/{call.id}"})


async def _initial_config(gateway: Gateway, principal: Principal, session_part: Any,
                          agent_name: str) -> dict[str, Any]:
    """The session a call starts with: the key's bound config, the offer's `session` part, PCM 24 kHz."""
    initial: dict[str, Any] = dict(principal.session_config or {})
    if session_part is not None:
        requested, _ = await validate_session(gateway, session_part, "ga", agent_name)
        initial = merge_bound_session(initial, requested) if principal.kind == "ephemeral" else \
            {**initial, **requested}
    # The media format of a WebRTC call is Opus on the wire whatever the session says; inside, the
    # session hears and speaks PCM 24 kHz (the GA default).
    audio = dict(initial.get("audio") or {})
    audio["input"] = {**(audio.get("input") or {}), **_SESSION_AUDIO["input"]}
    audio["output"] = {**(audio.get("output") or {}), **_SESSION_AUDIO["output"]}
    initial["audio"] = audio
    initial.pop("type", None)
    return initial


async def create_call(request: Request) -> Response:
    """GA `POST /v1/realtime/calls`."""
    return await _open_call(request, "ga")


async def create_beta_call(request: Request) -> Response:
    """Beta `POST /v1/realtime?model=...`: SDP in, SDP out."""
    return await _open_call(request, "beta")
