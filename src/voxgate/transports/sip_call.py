"""One SIP call bridged to a Session: the `Caller` the session sees, and the asyncio shell round the call.

    ringing   RTP socket opened, SDP answered (or, for an INVITE without one, our offer made), 180
              Ringing, the session opened, 200 OK (resent until ACK; a delayed offer's answer is in the ACK:
              without an acceptable one the call ends with BYE, RFC 3261 §13.2.1)
    serving   RTP in -> session (G.711 payloads as they are, Opus decoded and resampled to the session's
              24 kHz PCM, silence while the caller sends none, as a carrier's continuous line; RFC 4733 and
              INFO key presses as carrier DTMF); session audio -> the call's AudioOutput (the gateway's one
              playout, continuous) -> one RTP packet per 20 ms tick (silence between replies, so NATs and
              media timeouts on the far side stay satisfied); SRTP when the offer asked for it; an RTCP
              report every ~5 s
    in-dialog BYE ends the call, re-INVITE/UPDATE move or hold the media and refresh the session timer
              (RFC 4028: we refresh when we are the refresher, and hang up when the peer's refresh never
              came), INFO carries keys, NOTIFY reports a transfer we asked for with REFER
    ending    BYE (unless the caller sent it), RTP socket closed, the session closed and recorded

The dialog, SDP, RTP and DTMF rules are the sans-IO cores' (`voxgate.sip`); signalling goes through the
`CallSignalling` the phone (`sip_phone.py`) provides. Barge-in drops the output queue at once (the next
tick sends silence) and the session truncates the item at the last packet that left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from voxgate.audio import g711
from voxgate.audio.opus import OpusCodec, OpusError
from voxgate.audio.playout import Playout
from voxgate.observability import metrics
from voxgate.protocol.errors import RealtimeError
from voxgate.session.playback import PlaybackTracker
from voxgate.sip.dialog import Dialog, InviteAnswer
from voxgate.sip.dtmf import DtmfError, dtmf_packets, parse_dtmf_info
from voxgate.sip.endpoint import ALLOW
from voxgate.sip.errors import SipError
from voxgate.sip.headers import HeaderError, NameAddress
from voxgate.sip.message import Request, Response, make_response
from voxgate.sip.refer import TransferProgress, parse_refer_notify, refer_headers
from voxgate.sip.sdes import new_key
from voxgate.sip.sdp import (
    CodecPreferences,
    MediaSession,
    OfferRejected,
    SessionDescription,
    SrtpPolicy,
    accept_answer,
    answer_offer,
    make_offer,
    parse_sdp,
)
from voxgate.sip.session_timer import (
    IntervalTooSmall,
    SessionRefresh,
    SessionTimer,
    SessionTimerPolicy,
    accept_session_timer,
    answer_session_timer,
    parse_min_se,
)
from voxgate.sip.transaction import Address, ServerInviteTransaction, Transmit
from voxgate.sip.uri import SipUri, Uri, UriError, parse_uri
from voxgate.transports.audio_output import AudioOutput
from voxgate.transports.caller_input import CallerInput
from voxgate.transports.carrier_audio import CarrierAudio
from voxgate.transports.frame_ticker import FrameTicker, shared_ticker
from voxgate.transports.media_stream import MediaEncoding
from voxgate.transports.rtp_line import FRAME_MS, RtpLine
from voxgate.transports.rtp_ports import PortsExhausted, RtpPorts
from voxgate.transports.sideband import Sideband, broadcast
from voxgate.transports.whisper import play_whisper

if TYPE_CHECKING:
    from voxgate.config import Settings
    from voxgate.session.session import Session

__all__ = ["CallSignalling", "SipCall", "offer_status", "sdp_session_id", "transcoded", "transfer_uri"]

log = logging.getLogger("voxgate.sip")

MAX_BACKLOG = 50  # caller packets held while a barge-in completes (1 s); past that, dropped and counted
HEARD_MAX_WAIT_S = 60.0
WATCH_MAX_WAIT_S = 5.0  # the longest the call's watcher sleeps: a hold lifted by an UPDATE is noticed within it
APOLOGY_TRANSFER_FAILED = "I'm sorry, I could not put you through right now."
SRTP_POLICIES: dict[str, SrtpPolicy] = {"optional": "optional", "required": "required", "off": "never"}  # sip_srtp


class CallSignalling(Protocol):
    """What a call needs from the SIP phone: send responses and requests, and say when it is over."""

    def respond(self, response: Response) -> None: ...

    def transmit(self, transmit: Transmit) -> None: ...

    def send(self, call: SipCall, request: Request) -> Awaitable[Response | None]:
        """Send an in-dialog request to the call's peer; its final response, or None (timed out)."""
        ...

    def call_ended(self, call: SipCall) -> None: ...

    def dial_leg(self, to: str, codec: str) -> Awaitable[SipCall | None]:
        """Call `to` ourselves (offering `codec` first): the answered leg, or None (not answered)."""
        ...


def offer_status(error: SipError) -> int:
    """The answer to an offer we cannot take: 488 when it is well-formed but unacceptable, 503 when no
    media port is free, else 400."""
    return 488 if isinstance(error, OfferRejected) else 503 if isinstance(error, PortsExhausted) else 400


def transcoded(payload: bytes, source: str, target: str) -> bytes:
    """A G.711 payload in the other law (PCMU <-> PCMA); as it is when the laws match."""
    if source == target:
        return payload
    pcm = g711.ulaw_decode(payload) if source == "PCMU" else g711.alaw_decode(payload)
    return g711.alaw_encode(pcm) if target == "PCMA" else g711.ulaw_encode(pcm)


def sdp_session_id(local_tag: str) -> int:
    """Our SDP o= session id for a call, stable across its offers and answers (from our dialog tag)."""
    return int.from_bytes(local_tag.encode()[:6].ljust(6, b"0"), "big") % 10**12


def transfer_uri(target: str, peer_host: str) -> Uri:
    """The Refer-To for an agent's escalation target: a sip:/sips:/tel: URI as it is, a bare number as
    `sip:<number>@<the PBX that sent the call>` (what a PBX routes; `tel:` is often refused)."""
    if ":" in target:
        return parse_uri(target)
    number = "".join(ch for ch in target if ch.isdigit() or ch == "+")
    if not number:
        raise UriError(f"escalation target {target!r} is neither a URI nor a number", "bad_target")
    return SipUri("sip", peer_host, number, params=(("user", "phone"),))


class SipCall:
    """The `Caller` a session sees for a SIP call."""

    transport = "sip"

    def __init__(self, *, signalling: CallSignalling, invite: Request, transaction: ServerInviteTransaction | None,
                 peer: Address,
                 reliable: bool, dialog: Dialog, settings: Settings, media_host: str, public_address: str,
                 ports: RtpPorts | None = None, rtp: RtpLine | None = None, media: MediaSession | None = None,
                 timer_policy: SessionTimerPolicy | None = None, session_timer: SessionTimer | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """An inbound call: `invite` is the caller's, `transaction` its server transaction. An outbound call
        (the far end answered our `invite`, `transaction` None) brings its RTP line and settled `media`."""
        self.signalling = signalling
        self.invite = invite
        self.transaction = transaction
        self.peer = peer
        self.reliable = reliable
        self.dialog = dialog
        self.settings = settings
        self.media_host = media_host
        self.public_address = public_address
        self.playback = PlaybackTracker(server_side=True)
        self.preferences = CodecPreferences(order=tuple(settings.sip_codecs), srtp=SRTP_POLICIES[settings.sip_srtp],
                                            comfort_noise=settings.sip_comfort_noise)
        self.ports = ports
        self._srtp_key = new_key()  # our SDES key for the whole call (every answer in the dialog repeats it)
        self.media: MediaSession | None = media
        self.rtp: RtpLine | None = rtp
        self.outbound = transaction is None
        if rtp is not None:
            rtp.on_digit = self._on_digit
        self.audio: AudioOutput | None = None
        self.session: Session | None = None
        self.answered = False
        self.end_reason = ""
        self._ended = asyncio.Event()
        self._answers: list[InviteAnswer] = []  # 2xx to INVITE resent until their ACK
        self._answers_changed = asyncio.Event()
        self._sdp_version = 1
        self._sdp_id = sdp_session_id(dialog.local_tag)
        self._input = CallerInput(self._append, max_backlog=MAX_BACKLOG)  # the caller's audio, in order
        self._transfer: asyncio.Future[TransferProgress] | None = None
        self._sending_dtmf = False
        self._silence_frame = b""
        self.opus: OpusCodec | None = None  # an Opus call's encoder and decoder
        self._line_audio: CarrierAudio | None = None  # an Opus call's PCM both ways (its resamplers)
        # Session timers (RFC 4028) run on `clock` (monotonic seconds; a test steps it by hand)
        self.clock = clock
        self.timer_policy = timer_policy or SessionTimerPolicy(0)
        self.session_timer = session_timer  # what the INVITE's 200 grants
        self.refresh: SessionRefresh | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._reinviting = False  # our refresh re-INVITE is out: a peer's re-INVITE now is glare (491)
        self._last_ack: Request | None = None  # to our last re-INVITE's 2xx, sent again if the 2xx comes again
        # the description we last sent, offer or answer (an outbound call's: the offer its INVITE carried)
        self._local_sdp: SessionDescription | None = parse_sdp(invite.body) if self.outbound else None
        self._awaiting: tuple[int, SessionDescription] | None = None  # (CSeq, our offer) whose answer the ACK brings
        self.bridged: SipCall | None = None  # the leg our RTP is relayed to (a refused REFER's fallback)
        self._ticker: FrameTicker | None = None  # what beats the line, once it is served
        self.sidebands: set[Sideband] = set()  # an app's sideband sockets (call control): the session's events
        self._bridge_watch: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return f"sip call {self.dialog.call_id[:40]}"

    @property
    def backlog_dropped(self) -> int:
        """Caller packets dropped because a barge-in held the session up for over a second."""
        return self._input.dropped

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    # -- answering ---------------------------------------------------------------------------------

    async def open_media(self) -> bytes:
        """Open the RTP socket and answer the INVITE's offer, or make ours when it has none (delayed offer);
        the SDP for the 200 OK. Raises SipError (488/400)."""
        if not self.invite.body:
            return await self._open_with_offer()
        offer = parse_sdp(self.invite.body)
        # The port goes into the answer, so the socket is opened first with the offer's settlement.
        answer, media = answer_offer(offer, address=self.public_address, port=0, session_id=self._sdp_id,
                                     session_version=self._sdp_version, preferences=self.preferences,
                                     local_key=self._srtp_key)
        self.media = media
        self.rtp = RtpLine(media, self.peer[0], self._on_digit, ports=self.ports,
                           cname=f"voxgate@{self.public_address}")
        _, port = await self.rtp.open(self.media_host)
        answer, media = answer_offer(offer, address=self.public_address, port=port, session_id=self._sdp_id,
                                     session_version=self._sdp_version, preferences=self.preferences,
                                     local_key=self._srtp_key)
        self.media = media
        self.rtp.update(media)
        self._local_sdp = answer
        return answer.to_bytes()

    async def _open_with_offer(self) -> bytes:
        """Delayed offer (RFC 3264 §4): our offer (the configured codecs and telephone-event) goes in the 200
        OK and the caller's answer comes in the ACK. Until then the line sends nothing and expects our first
        codec, from the signalling host only."""
        placeholder = make_offer(address=self.peer[0], port=9, session_id=0, session_version=0,
                                 preferences=self.preferences)
        expected = accept_answer(placeholder, placeholder, self.preferences)  # our first codec, as if taken
        self.media = dataclasses.replace(expected, direction="inactive")
        self.rtp = RtpLine(self.media, self.peer[0], self._on_digit, ports=self.ports,
                           cname=f"voxgate@{self.public_address}")
        _, port = await self.rtp.open(self.media_host)
        offer = make_offer(address=self.public_address, port=port, session_id=self._sdp_id,
                           session_version=self._sdp_version, preferences=self.preferences)
        self._local_sdp = offer
        self._awaiting = (self.invite.cseq.number, offer)
        return offer.to_bytes()

    def provisional(self, status: int) -> None:
        self.signalling.respond(make_response(self.invite, status, to_tag=self.dialog.local_tag,
                                              headers=[("Contact", str(self.dialog.contact))]))

    def refuse(self, status: int, headers: list[tuple[str, str]] | None = None) -> None:
        """A final non-2xx to the INVITE (the transaction resends it until the ACK)."""
        if self.transaction is not None and self.transaction.final is None:
            self.signalling.respond(make_response(self.invite, status, to_tag=self.dialog.local_tag,
                                                  headers=headers or []))

    def answer(self, sdp: bytes, session: Session) -> None:
        """200 OK with our SDP (answer, or offer for a delayed offer) and the session timer; resent until the
        caller's ACK. The session's audio is connected now, or when the ACK brings the answer (`settled`)."""
        assert self.media is not None
        self.session = session
        ok = make_response(self.invite, 200, to_tag=self.dialog.local_tag, body=sdp,
                           headers=[("Contact", str(self.dialog.contact)), ("Allow", ALLOW),
                                    *self._timer_headers(self.session_timer)])
        self.signalling.respond(ok)
        self._resend_until_ack(ok)
        self.answered = True
        self._session_refreshed(self.session_timer)
        if self._awaiting is None:
            self._connect_audio()

    def connected(self, session: Session) -> None:
        """Our outbound call was answered (and ACKed): the session starts taking audio now."""
        assert self.media is not None
        self.session = session
        self._connect_audio()
        if self.rtp is not None:
            self.rtp.last_heard = asyncio.get_running_loop().time()  # ringing is not silence on the line
        self.answered = True

    async def settled(self) -> bool:
        """True once the media is agreed: at once, or (delayed offer) when the ACK brought an acceptable
        answer, the 200 OK resent meanwhile. False when the call ended instead (no ACK, no answer)."""
        while self._awaiting is not None and not self.ended:
            reason = await self._tend_answers(1.0)
            if reason is not None:
                self.end(reason)
        return not self.ended

    def _connect_audio(self) -> None:
        """The session's audio out, on the agreed codec."""
        assert self.session is not None and self.media is not None
        # A continuous line: a packet every 20 ms, silence between replies; heard is what the clock released.
        encoder = self.codec_audio()
        playout = Playout(frame_bytes=encoder.frame_bytes, silence=encoder.silence, frame_ms=FRAME_MS,
                          continuous=True, max_frames=int(self.settings.carrier_playout_buffer_s * 1000 / FRAME_MS))
        self.audio = AudioOutput(playout, encoder, self.playback)
        if self.media.codec.name == "OPUS":
            self.opus, self._line_audio = OpusCodec(), encoder
        self.audio.session = self.session
        self._silence_frame = encoder.silence * (encoder.frame_bytes // len(encoder.silence))

    def codec_audio(self) -> CarrierAudio:
        """The session's input and output formats for this call's codec (G.711 passes straight in; Opus
        is 48 kHz PCM on the line, the session's 24 kHz PCM inside)."""
        assert self.media is not None
        if self.media.codec.name == "OPUS":
            return CarrierAudio("l16", 48000, "l16", 48000)
        encoding: MediaEncoding = "pcma" if self.media.codec.name == "PCMA" else "pcmu"
        return CarrierAudio(encoding, 8000, encoding, 8000)

    def _resend_until_ack(self, ok: Response) -> None:
        loop = asyncio.get_running_loop()
        self._answers.append(InviteAnswer(ok, self.peer, loop.time(), reliable=self.reliable))
        self._answers_changed.set()

    # -- the call ----------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run the answered call until either side ends it; then BYE (if ours) and close the media."""
        assert self.session is not None
        loop = asyncio.get_running_loop()
        ticker = self._ticker = shared_ticker()
        ticker.add_beat(self._beat)  # the line's 20 ms, as a plain call on the shared ticker: no task per call
        assert self.rtp is not None
        self.rtp.on_audio = self._take_arrived
        tasks = {loop.create_task(self._pump(), name="sip-pump"), loop.create_task(self._watch(), name="sip-watch"),
                 loop.create_task(self._ended.wait(), name="sip-ended")}
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s: %s failed", self.name, task.get_name(), exc_info=task.exception())
                    self.end("internal_error")
                elif isinstance(result := task.result(), str):
                    self.end(result)
        finally:
            ticker.remove_beat(self._beat)
            if self.rtp is not None:
                self.rtp.on_audio = None
            self._input.close()
            if (step := self._input.finishing) is not None:
                tasks.add(step)
            if self._refreshing is not None:
                tasks.add(self._refreshing)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.leave()

    def end(self, reason: str) -> None:
        if not self._ended.is_set():
            self.end_reason = reason
            metrics.SIP_CALLS_ENDED.labels(reason).inc()
            self._ended.set()
            self._input.close()  # the caller's audio after the end is nobody's
            self._answers_changed.set()  # wake `settled`

    async def leave(self) -> None:
        """Say BYE unless the caller did (or the call never came up), and close the media socket; a
        bridged leg is hung up too."""
        leg, self.bridged = self.bridged, None
        if self._bridge_watch is not None:
            self._bridge_watch.cancel()
        if leg is not None:
            leg.end("bridge_ended")
            await leg.leave()
        if self.answered and self.end_reason not in ("caller_hung_up", "transferred_by_peer"):
            with contextlib.suppress(SipError):
                bye = self.dialog.bye()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await self.signalling.send(self, bye)
        if self.rtp is not None:
            self.rtp.close()
        self.signalling.call_ended(self)

    def close_media(self) -> None:
        if self.rtp is not None:
            self.rtp.close()

    def release(self) -> None:
        """The call is over and recorded: let go of its session, whose caller is this call, so both are freed
        by reference counting (see `Session._let_go`) rather than by a full pass of the cycle collector."""
        self.session = None
        if self.audio is not None:
            self.audio.session = None

    async def _pump(self) -> str:
        """Session output -> the paced line."""
        assert self.session is not None and self.audio is not None
        await self.audio.take_from(self.session, on_event=lambda event: broadcast(self.sidebands, event))
        return "session_closed"

    def _beat(self, now: float) -> None:
        """Each 20 ms beat of the shared ticker: the caller's audio that is due (out of the jitter buffer) to
        the session, and one RTP packet (on the call's own pacing grid) to the caller."""
        audio, rtp = self.audio, self.rtp
        assert audio is not None and rtp is not None
        if self.bridged is not None:
            self._relay(now, self.bridged)
            return
        taken = rtp.take_audio(now)
        for payload in taken:
            self._on_audio(payload)
        if not taken and rtp.caller_quiet(now):
            # A caller that has stopped sending (silence suppression) is heard as silence, a frame a beat:
            # the session's turn-taking and idle timeout run on the audio it is given, and a carrier's line
            # never stops, so a SIP caller's pause must not stop the session's clock either.
            rtp.counters["quiet"] += 1
            self._on_audio(b"" if self.opus is not None else self._silence_frame)  # Opus: b"" decodes as silence
        rtp.report(now)
        if self._sending_dtmf:
            return
        samples = rtp.frame_samples  # a codec change mid-call is refused
        opus = self.opus
        assert self._ticker is not None
        for _ in range(audio.due(now, self._ticker.next_beat())):
            frame = audio.pop()
            if frame is None and opus is None and rtp.sends:
                rtp.send_silence(samples, now)  # a packet of silence, or comfort noise where agreed
                continue
            payload = frame.payload if frame is not None else self._silence_frame
            if opus is not None:  # the playout holds big-endian 48 kHz PCM for an Opus line
                payload = opus.encode(np.frombuffer(payload, dtype=">i2").astype(np.int16))
                if not payload:  # the encoder kept this frame back: its time passes unsent
                    rtp.sender.skip(samples)
                    continue
            if rtp.sends:
                rtp.send_audio(payload, samples)
            else:  # on hold: the clock runs on, nothing is sent
                rtp.sender.skip(samples)
                rtp.counters["held"] += 1

    def _take_arrived(self, now: float) -> None:
        """A packet came: what the jitter buffer has due now (the packet itself, when it is the next in
        sequence) goes to the session at once; waiting for the beat cost up to 20 ms more before the VAD
        heard the caller. A bridge relays on the beat alone."""
        if self.bridged is None and self.audio is not None and self.rtp is not None:
            for payload in self.rtp.take_audio(now):
                self._on_audio(payload)

    async def _watch(self) -> str:
        """2xx resends until their ACK, the media timeout, the session timer and the call's length limit."""
        assert self.rtp is not None
        loop = asyncio.get_running_loop()
        rtp, settings = self.rtp, self.settings
        deadline = loop.time() + settings.session_max_seconds
        while True:
            # Asleep until the first thing that can fall due (the media timeout counts from the last packet),
            # and a 2xx to resend or a hold lifted wakes it sooner: hundreds of calls, not a wake-up a second each.
            now = loop.time()
            wake = min(deadline, now + WATCH_MAX_WAIT_S)
            if not rtp.on_hold:
                wake = min(wake, rtp.last_heard + settings.sip_media_timeout_s)
            longest = max(0.0, wake - now)
            refresh = self.refresh
            if refresh is not None:
                longest = min(longest, 1.0, max(0.0, refresh.deadline - self.clock()))
            reason = await self._tend_answers(longest)
            if reason is not None:
                return reason
            now = loop.time()
            if not rtp.on_hold and now - rtp.last_heard >= settings.sip_media_timeout_s:
                log.warning("%s: no RTP for %.0f s; hanging up", self.name, now - rtp.last_heard)
                return "media_timeout"
            if now > deadline:
                return "session_expired"
            reason = self._tend_session_timer()
            if reason is not None:
                return reason

    async def _tend_answers(self, longest: float) -> str | None:
        """Wait up to `longest` seconds (less when a 2xx is due again), resend the 2xx that are due; "no_ack"
        when one never got its ACK."""
        loop = asyncio.get_running_loop()
        self._answers_changed.clear()
        due = [a.deadline for a in self._answers if a.deadline is not None]
        wait = min([longest, *(max(0.0, d - loop.time()) for d in due)])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._answers_changed.wait()
        now = loop.time()
        for pending in list(self._answers):
            for transmit in pending.handle_timer(now):
                self.signalling.transmit(transmit)
            if pending.timed_out:
                log.warning("%s: no ACK to our 200 OK", self.name)
                return "no_ack"
            if pending.acknowledged:
                self._answers.remove(pending)
        return None

    # -- session timer (RFC 4028) ------------------------------------------------------------------

    @staticmethod
    def _timer_headers(timer: SessionTimer | None) -> list[tuple[str, str]]:
        return [("Supported", "timer"), *(timer.headers() if timer is not None else [])]

    def _session_refreshed(self, timer: SessionTimer | None) -> None:
        """A 2xx of ours to the INVITE, a re-INVITE or an UPDATE set the timer (None: no timer now)."""
        if timer is None:
            self.refresh = None
        elif self.refresh is None:
            self.refresh = SessionRefresh(timer, self.clock(), min_se=self.timer_policy.min_se)
        else:
            self.refresh.refreshed(timer, self.clock())

    def _tend_session_timer(self) -> str | None:
        """Send our refresh when it is due; "session_timer_expired" when the session went unrefreshed."""
        refresh = self.refresh
        if refresh is None:
            return None
        now = self.clock()
        due = refresh.due(now)
        if due == "expired":
            log.warning("%s: no session refresh within %d s; hanging up", self.name, refresh.timer.interval)
            return "session_timer_expired"
        if due == "refresh" and self._refreshing is None:
            refresh.sent(now)
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_session(refresh),
                                                                      name="sip-refresh")
        return None

    async def _refresh_session(self, refresh: SessionRefresh) -> None:
        """Our refresh (§7.4): an UPDATE without a body when the caller allows UPDATE, else a re-INVITE
        offering our current description unchanged. No answer, 408 or 481: the dialog is gone (BYE)."""
        try:
            update = "UPDATE" in {method.upper() for method in self.invite.headers.values("Allow")}
            offer = None if update else self._local_sdp
            request = self.dialog.new_request("UPDATE" if update else "INVITE", headers=refresh.request_headers(),
                                              body=offer.to_bytes() if offer is not None else b"")
            self._reinviting = not update
            response = await self.signalling.send(self, request)
            if response is not None and request.method == "INVITE" and 200 <= response.status < 300:
                self._last_ack = self.dialog.ack(request)
                await self.signalling.send(self, self._last_ack)
            now = self.clock()
            if response is None or response.status in (408, 481):
                log.warning("%s: session refresh %s; hanging up", self.name,
                            f"answered {response.status}" if response else "unanswered")
                self.end("session_refresh_failed")
            elif 200 <= response.status < 300:
                if offer is not None and not self._take_answer(offer, response.body, "the answer to our refresh"):
                    self.end("bad_answer")
                    return
                try:
                    timer = accept_session_timer(response)
                except HeaderError:
                    timer = refresh.timer  # a malformed Session-Expires in a 2xx: keep the interval we asked
                if timer is None:
                    self.refresh = None  # the caller dropped the timer
                else:
                    refresh.refreshed(timer, now)
            elif response.status == 422:
                try:
                    floor = parse_min_se(response.headers.get("Min-SE") or "")
                except HeaderError:
                    floor = refresh.timer.interval * 2
                refresh.failed(now, min_se=floor)
            else:
                refresh.failed(now)  # 491 glare, 500, ...: the session goes on; tried again half way to expiry
        except SipError as error:  # the dialog ended under us: the call is ending anyway
            log.debug("%s: no session refresh: %s", self.name, error)
        finally:
            self._reinviting = False
            self._refreshing = None

    def acknowledge_again(self, response: Response) -> None:
        """A 2xx to our re-INVITE came again (its ACK was lost): the same ACK again (RFC 3261 §13.2.2.4)."""
        ack = self._last_ack
        if ack is not None and ack.cseq.number == response.cseq.number:
            self.signalling.transmit(Transmit(ack, self.peer, ack.to_bytes()))

    # -- caller audio and keys ---------------------------------------------------------------------

    def _on_audio(self, payload: bytes) -> None:
        session = self.session
        if session is None or session.closed:
            return
        if self.opus is not None and self._line_audio is not None:
            try:
                pcm = self.opus.decode(payload)  # b"": a lost packet's turn, silence
            except OpusError:
                if self.rtp is not None:
                    self.rtp.drop("bad_opus")
                return
            payload = self._line_audio.to_session(pcm.astype(">i2").tobytes())
        self._input.put(payload)

    def _append(self, payload: bytes) -> Awaitable[None] | None:
        assert self.session is not None
        try:
            return self.session.append_audio_nowait(payload)
        except RealtimeError as exc:
            log.warning("%s: caller audio refused: %s", self.name, exc.message)
        except Exception:  # a bug must cost one packet, not the call
            log.exception("%s: failed to take caller audio", self.name)
        return None

    def _on_digit(self, digit: str) -> None:
        session = self.session
        if session is None or session.closed:
            return
        log.info("%s: key pressed", self.name)  # never the digit: it may be a card number
        session.dtmf_received(digit)

    # -- in-dialog requests ------------------------------------------------------------------------

    def acknowledged(self, ack: Request) -> None:
        """The ACK to one of our 2xx; it carries the answer when the 2xx carried our offer."""
        for pending in self._answers:
            if pending.acknowledge(ack):
                awaiting = self._awaiting
                if awaiting is not None and awaiting[0] == ack.cseq.number:
                    self._awaiting = None
                    if not self._take_answer(awaiting[1], ack.body, "the ACK"):
                        self.end("bad_answer")
                self._answers_changed.set()
                return

    def _take_answer(self, offer: SessionDescription, body: bytes, where: str) -> bool:
        """Settle the media from the answer to our offer; False (the call must end with BYE, RFC 3261
        §13.2.1) when there is none or it is unacceptable."""
        assert self.rtp is not None
        try:
            if not body:
                raise OfferRejected(f"{where} carries no answer to our offer", "no_answer")
            media = accept_answer(offer, parse_sdp(body), self.preferences)
            if self.audio is not None and self.media is not None and media.codec.name != self.media.codec.name:
                raise OfferRejected("a codec change mid-call is not supported", "codec_change")
        except SipError as error:
            log.warning("%s: no acceptable SDP answer (%s): %s; hanging up", self.name, error.code, error)
            return False
        self.media = media
        self.rtp.update(media)
        if self.audio is None and self.session is not None:
            self._connect_audio()
        return True

    def in_dialog(self, request: Request) -> None:
        """A request inside this call's dialog (its transaction is the layer's): answer it."""
        problem = self.dialog.receive_request(request)
        if problem is not None:
            self._reply(request, problem)
            return
        method = request.method
        if method == "BYE":
            self._reply(request, 200)
            self.end("caller_hung_up")
        elif method in ("INVITE", "UPDATE"):
            self._renegotiate(request)
        elif method == "INFO":
            self._info(request)
        elif method == "NOTIFY":
            self._notify(request)
        else:
            self._reply(request, 405, [("Allow", ALLOW)])

    def _reply(self, request: Request, status: int, headers: list[tuple[str, str]] | None = None,
               body: bytes = b"") -> Response:
        response = make_response(request, status, to_tag=self.dialog.local_tag, headers=headers or [], body=body)
        self.signalling.respond(response)
        return response

    def _renegotiate(self, request: Request) -> None:
        """re-INVITE or UPDATE: hold, unhold, a new address (RFC 3264 §8), and a session refresh (RFC 4028).
        A re-INVITE without an offer gets ours, the current description unchanged, and the ACK brings the
        answer; an UPDATE without one changes no media."""
        if self.rtp is None or self.media is None or not self.answered:  # an UPDATE while it still rings
            self._reply(request, 491)
            return
        try:
            timer = answer_session_timer(request, self.timer_policy)
        except HeaderError:
            self._reply(request, 400)
            return
        if isinstance(timer, IntervalTooSmall):
            self._reply(request, 422, timer.headers())
            return
        if (request.body or request.method == "INVITE") and (self._reinviting or self._awaiting is not None):
            self._reply(request, 491)  # an offer of ours is still out (RFC 3261 §14.2, RFC 3311 §5.2)
            return
        try:
            if request.body:
                offer = parse_sdp(request.body)
                answer, media = answer_offer(offer, address=self.public_address, port=self.rtp.local[1],
                                             session_id=self._sdp_id, session_version=self._sdp_version + 1,
                                             preferences=self.preferences, local_key=self._srtp_key)
                if media.codec.name != self.media.codec.name:
                    raise OfferRejected("a codec change mid-call is not supported", "codec_change")
                self._sdp_version += 1  # only for a description we send (RFC 3264 §8: one more each time)
                self.media = media
                self.rtp.update(media)
                log.info("%s: media %s", self.name, "held" if media.on_hold else "resumed")
                self._local_sdp = answer
                body = answer.to_bytes()
            elif request.method == "INVITE" and self._local_sdp is not None:
                # the same version: an unchanged description (RFC 3264 §8)
                body = self._local_sdp.to_bytes()
                self._awaiting = (request.cseq.number, self._local_sdp)
            else:
                body = b""
        except SipError as error:
            self._reply(request, offer_status(error))
            return
        ok = self._reply(request, 200, [("Contact", str(self.dialog.contact)), *self._timer_headers(timer)], body)
        self._session_refreshed(timer)
        if request.method == "INVITE":
            self._resend_until_ack(ok)

    def _info(self, request: Request) -> None:
        try:
            digit, _ = parse_dtmf_info(request.content_type, request.body)
        except DtmfError as error:
            self._reply(request, 415 if error.code == "unsupported_type" else 400)
            return
        self._reply(request, 200)
        self._on_digit(digit)

    def _notify(self, request: Request) -> None:
        try:
            progress = parse_refer_notify(request)
        except SipError:
            self._reply(request, 400)
            return
        self._reply(request, 200)
        if self._transfer is not None and not self._transfer.done() and (progress.final or progress.subscription_ended):
            self._transfer.set_result(progress)

    # -- the Caller protocol -----------------------------------------------------------------------

    async def interrupt_playback(self) -> None:
        """Barge-in: drop the queue now; the next tick sends silence and starts a new talkspurt."""
        if self.audio is None or self.rtp is None:
            return
        self.audio.clear()
        self.rtp.sender.talkspurt()

    async def hold_playback(self) -> None:
        """A possible barge-in: the line plays silence from the next tick, the agent's frames wait."""
        if self.audio is not None:
            self.audio.hold()

    async def resume_playback(self) -> None:
        if self.audio is not None:
            self.audio.resume()

    async def transfer(self, target: str, reason: str) -> None:
        """Blind transfer by REFER once the caller has heard the handover line; the outcome (NOTIFY) is
        recorded. Refused or failed, the caller is told and the call goes on."""
        if not target:
            log.warning("%s: transfer requested but the agent has no escalation target", self.name)
            return
        if self.audio is not None:
            await self.audio.until_heard(HEARD_MAX_WAIT_S)
        try:
            uri = transfer_uri(target, self.peer[0])
            refer = self.dialog.new_request("REFER", headers=refer_headers(
                uri, referred_by=NameAddress(self.dialog.local_uri.uri)))
        except SipError as error:
            self._transfer_failed(f"bad target ({error})")
            return
        session = self.session
        if session is not None and session.agent.escalation.warm and await self._warm_transfer(uri, session):
            return
        self._transfer = asyncio.get_running_loop().create_future()
        response = await self.signalling.send(self, refer)
        if response is None or response.status >= 300:
            why = f"REFER {response.status} {response.reason}" if response else "REFER timed out"
            if not (self.settings.sip_transfer_bridge and await self._bridge(uri, why)):
                self._transfer_failed(why)
            return
        try:
            async with asyncio.timeout(self.settings.sip_transfer_timeout_s):
                progress = await self._transfer
        except TimeoutError:
            self._transfer_failed("no final NOTIFY")
            return
        if not progress.succeeded:
            self._transfer_failed(f"NOTIFY {progress.status} {progress.reason}".strip())
            return
        metrics.SIP_TRANSFERS.labels("succeeded").inc()
        self._note(f"REFER accepted, NOTIFY {progress.status} {progress.reason}".strip())
        log.info("%s: transferred", self.name)
        self.end("transferred")

    async def _warm_transfer(self, target: Uri, session: Session) -> bool:
        """Call the person first and tell them who is calling and why (the session's hand-off), then bridge
        the caller to them. Nobody answers: the caller hears the agent's unanswered line and stays with the
        agent. False when this call cannot be bridged (not G.711): the blind REFER goes ahead instead."""
        assert self.media is not None
        codec = self.media.codec.name
        if codec not in ("PCMU", "PCMA"):
            log.warning("%s: a warm transfer needs a G.711 call, not %s; transferring blind", self.name, codec)
            return False
        log.info("%s: warm transfer: calling %s", self.name, target)
        leg = await self.signalling.dial_leg(str(target), codec)
        if leg is None or self.ended:
            if leg is not None:
                leg.end("bridge_ended")
                await leg.leave()
            metrics.SIP_TRANSFERS.labels("unanswered").inc()
            if not session.closed:
                session.outcome = ""
                session.end_reason = f"transfer failed: nobody answered at {target}"
                session.say(session.agent.escalation.unanswered_line)
            return True
        assert leg.rtp is not None and leg.media is not None
        handoff = session.handoff
        whisper = handoff.whisper() if handoff is not None else f"A caller from the {session.agent.name} agent."
        leg.answered = True  # its BYE is ours to send if this call ends while the person listens
        await play_whisper(leg.rtp, leg.media.codec.name, whisper, session.agent.voice,
                           deterministic=not self.settings.tts_variation)
        if self.ended or leg.ended:
            if not leg.ended:
                leg.end("bridge_ended")
                await leg.leave()
            return True
        self._join(leg, target, "warm: the person heard who is calling and why")
        return True

    async def _bridge(self, target: Uri, why: str) -> bool:
        """The REFER was refused: call the target ourselves and relay RTP between the two legs until either
        hangs up (the agent leaves the conversation). False when the target did not answer."""
        assert self.media is not None
        if self.media.codec.name not in ("PCMU", "PCMA"):
            log.warning("%s: %s; an %s call cannot be bridged (G.711 only)", self.name, why, self.media.codec.name)
            return False
        log.info("%s: %s; calling %s to bridge", self.name, why, target)
        leg = await self.signalling.dial_leg(str(target), self.media.codec.name)
        if leg is None or self.ended:
            if leg is not None:
                leg.end("bridge_ended")
                await leg.leave()
            return False
        self._join(leg, target, why)
        return True

    def _join(self, leg: SipCall, target: Uri, why: str) -> None:
        """Relay RTP between the caller and the person's answered leg until either hangs up."""
        self.bridged = leg
        leg.answered = True  # its BYE is ours to send when this call ends
        assert self.rtp is not None and leg.rtp is not None
        self.rtp.sender.talkspurt()
        leg.rtp.last_heard = asyncio.get_running_loop().time()
        self._bridge_watch = asyncio.get_running_loop().create_task(self._until_leg_ends(leg), name="sip-bridge")
        metrics.SIP_TRANSFERS.labels("bridged").inc()
        session = self.session
        if session is not None and not session.closed:
            session.outcome = "escalated"  # a person has the caller now
        self._note(f"{why}; bridged to {target} by a second INVITE")

    async def _until_leg_ends(self, leg: SipCall) -> None:
        await leg.wait_ended()
        self.end("bridged_party_hung_up")

    def _relay(self, now: float, leg: SipCall) -> None:
        """One tick of a bridge: what each side sent that is due goes to the other, re-stamped (and
        transcoded when the legs settled on different G.711 laws)."""
        assert self.rtp is not None and self.media is not None and leg.rtp is not None and leg.media is not None
        ours, theirs = self.media.codec.name, leg.media.codec.name
        for source, sink, law, other_law in ((self.rtp, leg.rtp, ours, theirs), (leg.rtp, self.rtp, theirs, ours)):
            taken = source.take_audio(now)
            for payload in taken:
                sink.send(sink.sender.packet(transcoded(payload, law, other_law), len(payload)))
            if not taken and source.caller_quiet(now):  # a side in a pause (CN, suppression): the other hears
                sink.send_silence(source.media.codec.samples_per_20ms, now)  # silence (or CN, where agreed)

    def _transfer_failed(self, why: str) -> None:
        """The call stays ours: the caller hears so, and the record says why (no longer `transferred`)."""
        metrics.SIP_TRANSFERS.labels("failed").inc()
        log.warning("%s: transfer failed: %s", self.name, why)
        session = self.session
        if session is not None and not session.closed:
            session.outcome = ""  # not escalated after all
            session.end_reason = f"transfer failed: {why}"
            session.say(APOLOGY_TRANSFER_FAILED)

    def _note(self, text: str) -> None:
        """Add the transfer's outcome to the call's end reason (its record)."""
        session = self.session
        if session is not None:
            session.end_reason = f"{session.end_reason} ({text})" if session.end_reason else text

    async def hang_up(self, reason: str) -> None:
        """End the call once the goodbye has played."""
        if self.audio is not None:
            await self.audio.until_heard(HEARD_MAX_WAIT_S)
        self.end("agent_hung_up")

    async def send_dtmf(self, digits: str) -> None:
        """Key presses to the far end: RFC 4733 events on the RTP stream when negotiated, else SIP INFO."""
        if self.rtp is None or self.media is None:
            raise RealtimeError("dtmf_failed", "the call has no media yet")
        rtp, event = self.rtp, self.media.telephone_event
        for digit in digits:
            if event is None:
                info = self.dialog.new_request("INFO", body=f"Signal={digit}\r\nDuration=160\r\n".encode(),
                                               content_type="application/dtmf-relay")
                response = await self.signalling.send(self, info)
                if response is None or response.status >= 300:
                    raise RealtimeError("dtmf_failed", "the far end refused the key press")
                continue
            try:
                packets = dtmf_packets(rtp.sender, digit, payload_type=event)
            except DtmfError as exc:
                raise RealtimeError("dtmf_failed", str(exc)) from exc
            self._sending_dtmf = True
            try:
                loop = asyncio.get_running_loop()
                start = loop.time()
                for offset, packet in packets:
                    delay = start + offset - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    rtp.send(packet)
            finally:
                self._sending_dtmf = False
                rtp.sender.talkspurt()

