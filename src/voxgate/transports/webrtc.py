"""The WebRTC transport: a browser's peer connection (aiortc), Opus both ways, events on `oai-events`.

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

The server owns playback here: agent audio leaves on an RTP track paced at real time, so the track
knows what the caller heard and the session truncates by itself on barge-in. Audio deltas never go on
the data channel; `output_audio_buffer.stopped` is sent when a response's audio has all been played.
A peer that has not connected within `webrtc_connect_timeout_s` is dropped, and a call ends (session
closed, peer connection closed, call forgotten) on hang-up, on peer loss, or at the session time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import fractions
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import aioice.ice
import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voxgate.admission import Refusal
from voxgate.audio.formats import PCM24K, OutputEncoder
from voxgate.audio.opus import OpusCodec
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
from voxgate.session.playback import PlaybackTracker
from voxgate.transports.audio_output import AudioOutput
from voxgate.transports.operator_leg import OperatorLeg
from voxgate.transports.sideband import Sideband, broadcast
from voxgate.transports.webrtc_offer import OfferError, read_offer

if TYPE_CHECKING:
    from voxgate.admission import Ticket
    from voxgate.gateway import Gateway, Principal
    from voxgate.session.session import Session

log = logging.getLogger("voxgate.webrtc")

RATE = 48000  # Opus's RTP clock (RFC 7587); aiortc hands us the caller's audio decoded at this rate
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000  # one packet's step of the RTP clock
TRACK_RATE = PCM24K.rate  # the agent's voice is queued and coded at the session's rate: no resampling
TRACK_FRAME_SAMPLES = TRACK_RATE * FRAME_MS // 1000
CHANNEL_LABEL = "oai-events"
MAX_INBOX_MESSAGES = 256  # data channel messages waiting for the session; more is a flood, refused
MAX_PENDING_EVENTS = 512  # events held for a data channel that has not opened yet
MAX_CHANNEL_BUFFERED = 4 * 1024 * 1024  # bytes a peer may leave unread on the channel before we hang up
MAX_SIGNALLING_BYTES = 256 * 1024  # an offer plus a session: a few KiB in practice
HANGUP_DRAIN_S = 30.0  # how long a goodbye may keep playing after the agent hangs up
_TIME_BASE = fractions.Fraction(1, RATE)
_SESSION_AUDIO = {"input": {"format": PCM24K.to_ga()}, "output": {"format": PCM24K.to_ga()}}
_ORIGINAL_HOST_ADDRESSES = aioice.ice.get_host_addresses


class TrackAudio:
    """The session's PCM at the track's rate, as the bytes of 16-bit native samples the playout cuts."""

    def __init__(self) -> None:
        self._resampler = StreamResampler(PCM24K.rate, TRACK_RATE)

    def encode(self, pcm: npt.NDArray[np.int16], rate: int) -> bytes:
        if self._resampler.in_rate != rate:
            self._resampler = StreamResampler(rate, TRACK_RATE)
        return self._resampler.process(pcm).tobytes()

    def flush(self) -> bytes:
        return self._resampler.flush().tobytes()

    def reset(self) -> None:
        self._resampler.reset()

    def decode(self, payload: bytes) -> tuple[npt.NDArray[np.int16], int]:
        return np.frombuffer(payload, dtype=np.int16), TRACK_RATE


class PlayoutTrack(MediaStreamTrack):
    """The agent's voice as aiortc pulls it: one 20 ms Opus packet per `recv`, paced on the call's playout
    clock (silence when nothing is queued).

    The packet is coded here, on the loop (about 0.1 ms in CELT's low-delay mode): handed a frame, aiortc's sender would
    resample it to stereo, scan its level and code it on a thread-pool worker, a round trip between threads
    50 times a second per call that costs several times the coding itself. A coded packet (`av.Packet`,
    which `MediaStreamTrack.recv` may return) it sends as it is."""

    kind = "audio"

    def __init__(self, output: AudioOutput) -> None:
        super().__init__()
        self._output = output
        self._owed = 0
        self._pts = 0
        self._opus = OpusCodec(input_rate=TRACK_RATE, application="lowdelay")  # CELT: a browser plays any mode
        self.relay: Callable[[], bytes | None] | None = None  # an operator's voice, once one took the call over

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        output = self._output
        while self._owed <= 0:
            self._owed += output.due(loop.time())
            if self._owed <= 0:
                deadline = output.playout.next_deadline
                await asyncio.sleep(max(0.0, (deadline or 0.0) - loop.time()))
        self._owed -= 1
        relay = self.relay
        relayed = relay() if relay is not None else None
        played = output.pop(instead=relayed)  # the recording hears the operator, once one took the call over
        pcm = relayed if relay is not None else None if played is None else played.payload
        opus = self._opus
        payload = opus.encode_silence() if pcm is None else opus.encode(np.frombuffer(pcm, dtype=np.int16))
        packet = av.Packet(payload)
        packet.pts = self._pts
        packet.time_base = _TIME_BASE
        self._pts += FRAME_SAMPLES
        return packet


class WebRtcCall:
    """One browser call: the peer connection, its session, and the Caller the session talks to."""

    transport = "webrtc"

    def __init__(self, gateway: Gateway, registry: WebRtcCalls, dialect: Dialect, owner: str | None = None,
                 ticket: Ticket | None = None) -> None:
        settings = gateway.settings
        self.id = new_id("rtc")
        self.owner = owner  # the key whose call this is (hang-up and sideband check it)
        self.ticket = ticket  # admission: released when the call closes
        self.gateway = gateway
        self.registry = registry
        self.dialect: Dialect = dialect
        self.playback = PlaybackTracker(server_side=True)
        self.session: Session | None = None
        self.pc = RTCPeerConnection(ice_configuration(settings))
        self.playout = Playout(frame_bytes=TRACK_FRAME_SAMPLES * 2, silence=b"\x00\x00", frame_ms=FRAME_MS,
                               continuous=True, max_frames=int(settings.webrtc_playout_buffer_s * 1000 / FRAME_MS))
        self.output = AudioOutput(self.playout, TrackAudio(), self.playback)
        self.track = PlayoutTrack(self.output)
        self.channel: RTCDataChannel | None = None
        self.sidebands: set[Sideband] = set()
        self.operator: OperatorLeg | None = None  # the operator who took the call over from the agent
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()
        self._closing = False
        self._pending: list[str] = []  # serialised events waiting for the channel to open
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue(MAX_INBOX_MESSAGES)
        self._encoder: OutputEncoder | None = None
        self._encoder_rate = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.events_dropped = 0
        self.pc.on("connectionstatechange", self._on_connection_state)
        self.pc.on("datachannel", self._on_datachannel)
        self.pc.on("track", self._on_track)

    # -- signalling --------------------------------------------------------------------------------

    async def answer(self, offer_sdp: str) -> str:
        """Take the browser's offer and return our answer (ICE candidates included: no trickle)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        self.pc.addTrack(self.track)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return str(self.pc.localDescription.sdp)

    def start(self, session: Session) -> None:
        """Run the call: pump the session's output, feed it the channel, watch the clock."""
        self.session = session
        self.output.session = session
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
        await asyncio.sleep(settings.session_max_seconds)
        if self.session is not None:
            self.session.error(RealtimeError("session_expired", "The session reached its maximum duration."))
        self._spawn(self.close("session_expired"))

    async def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self._spawn(self.close("connection_failed" if state == "failed" else "client_closed"))

    # -- events: data channel and sideband --------------------------------------------------------

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != CHANNEL_LABEL or self.channel is not None:
            channel.close()  # the protocol has exactly one channel; anything else is not ours to read
            return
        self.channel = channel

        @channel.on("message")
        def on_message(message: str | bytes) -> None:
            try:
                self._inbox.put_nowait(message)
            except asyncio.QueueFull:
                if self.session is not None:
                    self.session.error(RealtimeError("rate_limit_exceeded",
                                                     "Too many events at once; this one was dropped."))

        pending, self._pending = self._pending, []
        for text in pending:
            channel.send(text)

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
            channel = self.channel
            if channel is not None and channel.readyState == "open":
                channel.send(text)
                if channel.bufferedAmount > MAX_CHANNEL_BUFFERED:
                    log.warning("call %s: peer stopped reading its data channel", self.id)
                    self._spawn(self.close("client_not_reading"))
            elif channel is None:
                if len(self._pending) < MAX_PENDING_EVENTS:
                    self._pending.append(text)
                else:
                    self.events_dropped += 1
        broadcast(self.sidebands, event)

    # -- audio out: session -> playout -> track --------------------------------------------------

    async def _pump(self) -> None:
        """Drain the session's output: audio to the track's playout, every other event to the channel."""
        assert self.session is not None
        session, output = self.session, self.output
        while True:
            event = await session.outbound.get()
            if event is None:
                break
            if output.take(event) is None:
                self._send_event(event)
        self._spawn(self.close(session.end_reason or "session_closed"))

    # -- audio in: track -> session ----------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._read_audio(track))

    async def _read_audio(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            session = self.session
            if session is None or session.closed:
                return
            if not isinstance(frame, av.AudioFrame):
                continue
            pcm = _mono(frame)
            operator = self.operator
            if operator is not None:  # taken over: the caller talks to the operator, not the agent
                operator.hear_caller(pcm, frame.sample_rate)
                if session.recording is not None:  # and is still recorded (the session hears no more of it)
                    session.recording.caller(pcm, frame.sample_rate)
                continue
            fmt = session.config.input_format  # PCM at the frame's rate -> the session's wire format
            if self._encoder is None or self._encoder.format != fmt or self._encoder_rate != frame.sample_rate:
                self._encoder = OutputEncoder(fmt, frame.sample_rate)
                self._encoder_rate = frame.sample_rate
            try:
                rest = session.append_audio_nowait(self._encoder.encode(pcm))
                if rest is not None:  # the frame starts a turn: the barge-in finishes before the next counts
                    await rest
            except RealtimeError as exc:
                session.error(exc)

    # -- an operator taking over (control/escalations.py) ------------------------------------------

    async def take_over(self, leg: OperatorLeg) -> None:
        """The operator's leg replaces the agent: the caller's audio goes to it, its audio to the caller,
        and the session is silenced; the call ends when the operator's connection does."""
        self.operator = leg
        self.track.relay = leg.next_frame
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
        self.output.clear()

    async def hold_playback(self) -> None:
        """A possible barge-in: the track plays silence from the next frame, the agent's frames wait."""
        self.output.hold()

    async def resume_playback(self) -> None:
        self.output.resume()

    async def transfer(self, target: str, reason: str) -> None:
        # A browser is not a phone line: it learns of the hand-over from the agent's words and the call
        # record; there is no carrier leg to move.
        log.info("call %s: transfer to %s requested on a WebRTC call", self.id, target)

    async def hang_up(self, reason: str) -> None:
        """The agent ends the call: let the goodbye play out, then close."""
        await self.output.until_heard(HANGUP_DRAIN_S)
        await self.close(reason)

    async def send_dtmf(self, digits: str) -> None:
        raise RealtimeError("unsupported", "DTMF cannot be sent on a WebRTC call.")

    async def wait_ended(self) -> None:
        await self.closed.wait()

    # -- teardown ----------------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """End the call on any path; idempotent. Frees the session, the peer connection and the id."""
        if self._closing:
            return
        self._closing = True
        self.registry.forget(self)
        if self.ticket is not None:
            self.ticket.release()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        session = self.session
        if session is not None:
            await session.close(reason)
            self.gateway.session_closed(session)
        self.track.stop()
        if self.operator is not None:
            await self.operator.close()
        with contextlib.suppress(Exception):
            await self.pc.close()
        for sideband in list(self.sidebands):
            sideband.outbound.close()
        self._let_go()
        self.closed.set()
        log.info("call %s closed: %s", self.id, reason)

    def _let_go(self) -> None:
        """The call is closed and recorded: let go of its session (whose caller is this call), and take the call
        out of the peer connection (its listeners, the channel's, the sender's track). aiortc's own reference
        cycles then hold nothing of ours, and the call is freed as it ends, not by a full pass of the cycle
        collector (see `Session._let_go`)."""
        self.session = None
        self.output.session = None
        self.pc.remove_all_listeners()
        if self.channel is not None:
            self.channel.remove_all_listeners()
        for sender in self.pc.getSenders():
            sender.replaceTrack(None)


class WebRtcCalls:
    """The live calls of one app, by call id (what hang-up, sideband and the console look up)."""

    def __init__(self) -> None:
        self._calls: dict[str, WebRtcCall] = {}

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


def ice_configuration(settings: Settings) -> RTCConfiguration:
    """ICE as configured: no STUN/TURN by default (a LAN needs none; aiortc would otherwise ask Google's)."""
    if settings.webrtc_host_addresses:
        offered = list(settings.webrtc_host_addresses)

        def host_addresses(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
            return [a for a in offered if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

        # aioice has no option for this and never offers loopback; the patch is process-wide, like the setting.
        aioice.ice.get_host_addresses = host_addresses
    else:
        aioice.ice.get_host_addresses = _ORIGINAL_HOST_ADDRESSES
    servers = [RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
               for s in settings.ice_servers]
    return RTCConfiguration(iceServers=servers)


def _mono(frame: av.AudioFrame) -> npt.NDArray[np.int16]:
    """A decoded frame (interleaved s16, any channel count) as int16 mono: the channels' mean, in integers
    (a browser's microphone arrives as two equal channels; a float mean cost more than the resampling)."""
    channels = len(frame.layout.channels)
    samples = frame.to_ndarray().reshape(-1).astype(np.int16, copy=False)
    if channels == 1:
        return samples
    if channels == 2:
        return ((samples[0::2].astype(np.int32) + samples[1::2]) >> 1).astype(np.int16)
    return (samples.reshape(-1, channels).sum(axis=1, dtype=np.int32) // channels).astype(np.int16)


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
        read_offer(sdp)
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
        answer = await call.answer(sdp)
    except Exception as exc:  # aiortc refuses offers it cannot serve with assorted exception types
        await call.close("bad_offer")
        log.info("offer refused by aiortc: %r", exc)  # its words name its internals: for the log, not the caller
        return problem(400, "invalid_offer", "The SDP offer could not be answered: check that every media "
                       "section has ICE credentials, a DTLS fingerprint and a codec the gateway speaks.", param="sdp")
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
