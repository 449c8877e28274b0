"""One phone call bridged from a carrier's media WebSocket to a Session: the asyncio shell.

Twilio and Telnyx differ only in their codec (twilio_messages.py, telnyx_messages.py) and their REST
commands (`CarrierControl`); everything else lives here, once:

    reader   carrier frames -> codec events -> session (caller audio, key presses, marks heard)
    pump     session events -> the call's AudioOutput (agent audio, coded and cut into frames)
    writer   AudioOutput -> carrier, released on the call's pacing clock at each shared tick, with marks

Served by voxgate's own listener (server/websocket_connection.py: the `DirectSocket` extension), the
reader is not a task: each carrier frame is handled by a plain call as it arrives, and frames are written
without awaiting. Only a frame whose handling must wait (a caller starting to speak over the agent) hands
the frames after it to a task, so they keep their order (`CallerInput`, as a SIP call's RTP does). Under
any other ASGI server the reader is an ordinary task.

All carrier calls in a process share one `FrameTicker` (frame_ticker.py: one timer every 20 ms instead
of one per call), but each keeps its own `PacingClock` grid and its own writer task, so a carrier that
stops reading stalls its own call only; a watchdog hangs up on it after `carrier_stall_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketState

from voxgate.admission import Refusal
from voxgate.audio.playout import Playout
from voxgate.observability import metrics
from voxgate.protocol.errors import RealtimeError
from voxgate.server.websocket_connection import EXTENSION as DIRECT_SOCKET
from voxgate.server.websocket_connection import DirectSocket
from voxgate.session.playback import PlaybackTracker
from voxgate.transports.audio_output import AudioOutput
from voxgate.transports.caller_input import CallerInput
from voxgate.transports.carrier_audio import FRAME_MS, CarrierAudio
from voxgate.transports.frame_ticker import FrameTicker, shared_ticker
from voxgate.transports.media_stream import (
    AudioReceived,
    CarrierErrorReported,
    CarrierMessageError,
    ChunksLost,
    DigitPressed,
    MarkPlayed,
    MediaStreamEvent,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from voxgate.transports.media_tokens import MediaGrant, MediaTokenError, MediaTokens
from voxgate.transports.replay_cache import ReplayCache

if TYPE_CHECKING:
    from voxgate.admission import Admission
    from voxgate.agents import AgentConfig
    from voxgate.clock import Clock
    from voxgate.config import Settings
    from voxgate.protocol.items import Dialect
    from voxgate.session.session import Session

log = logging.getLogger("voxgate.carrier")

START_TIMEOUT_S = 10.0  # a media socket that does not say `start` by then is closed
HEARD_GRACE_S = 1.0  # after the last frame, how long to wait for its mark before moving the call anyway
MAX_SILENCE_FILL = 10  # lost chunks filled with silence at most (a longer gap is not worth faking)
MAX_BACKLOG = 50  # frames held while a barge-in completes (1 s); past that, reading pauses (TCP pushes back)
_LOGGED_ERRORS = 5  # per call, then one line per hundred, so a broken peer cannot flood the log


class CarrierApiError(Exception):
    """A carrier REST command failed; `gone` when the call had already ended (Twilio 20404, Telnyx 90018)."""

    def __init__(self, action: str, message: str, *, gone: bool = False) -> None:
        super().__init__(message)
        self.action = action
        self.gone = gone


class CarrierControl(Protocol):
    """The carrier's REST commands for one call."""

    async def transfer(self, target: str, whisper: str | None = None) -> None:
        """Move the call to `target`; `whisper`: what the person hears first, where the carrier allows it."""
        ...

    async def hang_up(self) -> None: ...

    async def send_dtmf(self, digits: str) -> None: ...


class MediaCodec(Protocol):
    def receive(self, text: str | bytes) -> list[MediaStreamEvent]: ...

    def media(self, payload: bytes) -> str: ...

    def mark(self, name: str) -> str: ...

    def clear(self) -> str: ...


class CallGateway(Protocol):
    """What a carrier route needs from the process-wide Gateway (app.py)."""

    settings: Settings
    http: httpx.AsyncClient
    ready: bool
    real_clock: Clock  # real time (never pinned), for expiry and carriers' timestamps
    media_tokens: MediaTokens
    twilio_calls_answered: ReplayCache  # CallSids the voice webhook answered
    telnyx_events_seen: ReplayCache  # Telnyx event ids and signatures acted on
    admission: Admission

    def agent(self, name: str | None) -> AgentConfig: ...

    async def open_session(self, *, agent: AgentConfig, caller: Any, dialect: Dialect, model: str | None,
                           initial_config: dict[str, Any] | None = None) -> Session: ...

    def session_closed(self, session: Session) -> None: ...


async def carrier_request(http: httpx.AsyncClient, carrier: str, action: str, method: str, url: str,
                          timeout_s: float, gone_codes: tuple[int, ...], **kwargs: Any) -> None:
    """One REST command with its outcome counted; raises CarrierApiError unless it succeeded."""
    try:
        response = await http.request(method, url, timeout=timeout_s, **kwargs)
    except httpx.HTTPError as exc:
        metrics.CARRIER_API_REQUESTS.labels(carrier, action, "error").inc()
        raise CarrierApiError(action, f"{carrier} {action}: {type(exc).__name__}: {exc}") from exc
    if response.is_success:
        metrics.CARRIER_API_REQUESTS.labels(carrier, action, "ok").inc()
        return
    code = _carrier_error_code(response)
    gone = code in gone_codes
    metrics.CARRIER_API_REQUESTS.labels(carrier, action, "gone" if gone else "error").inc()
    raise CarrierApiError(action, f"{carrier} {action}: HTTP {response.status_code} (code {code})", gone=gone)


def _carrier_error_code(response: httpx.Response) -> int | None:
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError, IndexError):
        body = response.json()
        if "code" in body:  # Twilio
            return int(body["code"])
        return int(body["errors"][0]["code"])  # Telnyx
    return None


class CarrierCall:
    """The `Caller` a session sees for a phone call through a carrier's media stream."""

    def __init__(self, *, carrier: str, websocket: WebSocket, codec: MediaCodec, settings: Settings) -> None:
        self.transport = carrier
        self.carrier = carrier
        self.websocket = websocket
        self.codec = codec
        self.settings = settings
        self.playback = PlaybackTracker(server_side=True)
        self.started: StreamStarted | None = None
        self.connected: StreamConnected | None = None
        self.session: Session | None = None
        self.audio: CarrierAudio | None = None
        self.control: CarrierControl | None = None
        self.output: AudioOutput | None = None
        self.errors = 0
        self._ended = asyncio.Event()
        self.end_reason = ""
        self._generation = 0  # bumped by every clear, so a writer mid-batch stops sending stale frames
        self._send_since: float | None = None  # when the send in progress began (stall watchdog)
        self._direct: DirectSocket | None = None
        self._frames: CallerInput[bytes] | None = None  # the direct socket's frames, in order
        self._beats: FrameTicker | None = None  # what beats the line while `_play_on_beats` plays it
        self._handed_back: asyncio.Future[str] | None = None  # its outcome, once a beat has one

    @property
    def name(self) -> str:
        return f"{self.carrier} call {self.started.call_id if self.started else '(not started)'}"

    # -- setup -------------------------------------------------------------------------------------

    async def wait_for_start(self, timeout_s: float = START_TIMEOUT_S) -> StreamStarted | None:
        """Read until the carrier says `start`; None if it hangs up, stalls, or breaks the protocol first."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.started is None:
                    message = await self.websocket.receive()
                    if message["type"] == "websocket.disconnect":
                        return None
                    try:
                        events = self.codec.receive(message.get("text") or message.get("bytes") or b"")
                    except CarrierMessageError as exc:
                        self._reject(exc)
                        if exc.fatal:
                            return None
                        continue
                    for event in events:
                        if isinstance(event, StreamConnected):
                            self.connected = event
                        elif isinstance(event, StreamStarted):
                            self.started = event
                        elif isinstance(event, CarrierErrorReported):
                            self._carrier_error(event)
        except TimeoutError:
            self._reject(CarrierMessageError("start_timeout", f"no 'start' within {timeout_s:.0f} s"))
            return None
        return self.started

    async def close_socket(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the media socket if it is still open; never waits long on a peer that does not read."""
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.websocket.close(code, reason)

    def attach(self, session: Session, audio: CarrierAudio, control: CarrierControl) -> None:
        s = self.settings
        self.session, self.audio, self.control = session, audio, control
        playout = Playout(
            frame_bytes=audio.frame_bytes, silence=audio.silence, frame_ms=FRAME_MS,
            lead_frames=s.carrier_lead_frames, confirm_every_frames=max(1, s.carrier_mark_interval_ms // FRAME_MS),
            max_frames=int(s.carrier_playout_buffer_s * 1000 / FRAME_MS))
        self.output = AudioOutput(playout, audio, self.playback)
        self.output.session = session

    def release(self) -> None:
        """The call is over and recorded: let go of its session, whose caller is this call, and of the socket
        (whose scope the call's WebSocket holds), so all are freed by reference counting rather than by a
        full pass of the cycle collector (see `Session._let_go`)."""
        self.session = None
        if self.output is not None:
            self.output.session = None
        self._direct = None

    # -- the call ----------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Run the call until the carrier stops it, the agent ends or moves it, or it breaks; always
        closes the session and the socket."""
        assert self.session is not None
        session = self.session
        loop = asyncio.get_running_loop()
        tasks = {loop.create_task(self._pump(), name="carrier-pump"),
                 loop.create_task(self._write(), name="carrier-write"),
                 loop.create_task(self._ended.wait(), name="carrier-ended")}
        self._direct = direct = self.websocket.scope.get("extensions", {}).get(DIRECT_SOCKET)
        if direct is not None:
            direct.limit_send_buffer(self.settings.carrier_send_buffer_bytes)
            # Past the backlog's bound reading pauses: TCP pushes back on the carrier.
            self._frames = CallerInput(self._on_frame, max_backlog=MAX_BACKLOG, pause=direct.pause_reading,
                                       resume=direct.resume_reading)
            direct.deliver_to(self._frames.put, lambda code: self._end("carrier_closed"))
        else:
            tasks.add(loop.create_task(self._read(), name="carrier-read"))
        deadline = loop.time() + self.settings.session_max_seconds
        status = "completed"
        try:
            while True:
                done, _ = await asyncio.wait(tasks, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                if done:
                    for task in done:
                        if not task.cancelled() and task.exception() is not None:
                            log.error("%s: %s failed", self.name, task.get_name(), exc_info=task.exception())
                            self._end("internal_error")
                        elif isinstance(result := task.result(), str):
                            self._end(result)
                    break
                now = loop.time()
                if self._send_since is not None and now - self._send_since > self.settings.carrier_stall_timeout_s:
                    metrics.CARRIER_STALLS.labels(self.carrier).inc()
                    log.warning("%s: the carrier stopped reading for %.0f s; dropping the call", self.name,
                                now - self._send_since)
                    self._end("carrier_not_reading")
                    status = "dropped"
                    break
                if now > deadline:
                    self._end("session_expired")
                    break
        finally:
            if self._frames is not None:
                self._frames.close()
                if (step := self._frames.finishing) is not None:
                    tasks.add(step)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close(self.end_reason or "carrier_closed", status=status)
            await self.close_socket()

    def _end(self, reason: str) -> None:
        if not self.end_reason:
            self.end_reason = reason
        self._ended.set()
        if self._frames is not None:
            self._frames.close()  # the frames after the end are nobody's

    async def _read(self) -> None:
        """The reader as a task, for ASGI servers that offer no direct socket."""
        while not self._ended.is_set():
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                self._end("carrier_closed")
                return
            rest = self._on_frame(message.get("text") or message.get("bytes") or b"")
            if rest is not None:
                await rest

    def _on_frame(self, data: str | bytes) -> Awaitable[None] | None:
        """Handle one carrier frame; an awaitable when its handling must wait (await it before the next)."""
        try:
            events = self.codec.receive(data)
        except CarrierMessageError as exc:
            self._reject(exc)
            if exc.fatal:
                self._end("carrier_protocol_error")
            return None
        for index, event in enumerate(events):
            rest = self._on_event(event)
            if rest is not None:
                return self._then(rest, events[index + 1:])
        return None

    async def _then(self, rest: Awaitable[None], events: list[MediaStreamEvent]) -> None:
        await rest
        for event in events:
            more = self._on_event(event)
            if more is not None:
                await more

    def _on_event(self, event: MediaStreamEvent) -> Awaitable[None] | None:
        assert self.session is not None and self.audio is not None and self.output is not None
        if isinstance(event, AudioReceived):
            return self._caller_audio(self.audio.to_session(event.payload))
        if isinstance(event, MarkPlayed):
            self.output.playout.confirmed(event.name)
        elif isinstance(event, DigitPressed):
            log.info("%s: key pressed", self.name)  # never the digit: it may be a card number
            self.session.dtmf_received(event.digit)
        elif isinstance(event, ChunksLost):
            metrics.CARRIER_FRAMES_LOST.labels(self.carrier).inc(event.count)
            fill = self.audio.inbound_silence(FRAME_MS * min(event.count, MAX_SILENCE_FILL))
            return self._caller_audio(self.audio.to_session(fill))
        elif isinstance(event, StreamStopped):
            # The carrier ends the stream when the call ends; unless we ended it first (`agent_hung_up`,
            # `transferred`, which `_end` keeps), the caller hung up: the record says so as a SIP BYE's does.
            self._end("caller_hung_up")
        elif isinstance(event, CarrierErrorReported):
            self._carrier_error(event)
        return None

    def _caller_audio(self, data: bytes) -> Awaitable[None] | None:
        assert self.session is not None
        try:
            rest = self.session.append_audio_nowait(data)
        except Exception as exc:
            self._audio_failed(exc)
            return None
        return None if rest is None else self._guarded(rest)

    async def _guarded(self, rest: Awaitable[None]) -> None:
        try:
            await rest
        except Exception as exc:
            self._audio_failed(exc)

    def _audio_failed(self, exc: Exception) -> None:
        if isinstance(exc, RealtimeError):
            self._reject(CarrierMessageError(exc.code, exc.message))
        else:  # a bug must cost one frame, not the call
            metrics.CARRIER_MESSAGE_ERRORS.labels(self.carrier, "internal_error").inc()
            log.error("%s: failed to take caller audio", self.name, exc_info=exc)

    async def _pump(self) -> str:
        """Session output -> the line, in the carrier's codec straight from PCM (base64 happens once, in the
        media message)."""
        assert self.session is not None and self.output is not None
        dropped = metrics.CARRIER_AUDIO_DROPPED.labels(self.carrier)
        await self.output.take_from(self.session, lambda frames: dropped.inc(frames * FRAME_MS))
        return "session_closed"

    async def _write(self) -> None:
        assert self.output is not None
        output, playout, ticker = self.output, self.output.playout, shared_ticker()
        loop = asyncio.get_running_loop()
        direct = self._direct
        while True:
            if playout.idle:
                output.ready.clear()
                await output.ready.wait()
            if direct is not None and direct.writable:
                # Frames go out from the shared ticker's beat, a plain call per call per beat: no task to
                # wake 50 times a second. The beat hands back here when the line falls idle, the carrier
                # stops reading (wait for room below), or the socket is gone.
                if await self._play_on_beats(ticker) == "closed":
                    return
                if not direct.writable and not await self._send_after_room():
                    return
                continue
            generation = self._generation
            for messages in self._due_messages(loop.time(), ticker.next_beat()):
                for text in messages:
                    if not await self._send(text):
                        return
                if generation != self._generation:
                    break  # cleared while a send waited: the rest of this batch is stale (and stays unpopped)
            if not playout.idle:
                await ticker.tick()

    async def _play_on_beats(self, ticker: FrameTicker) -> str:
        """Play the line from the ticker's beats until it is idle ("idle"), the carrier's socket has no room
        ("blocked") or is gone ("closed")."""
        handed_back = self._handed_back = asyncio.get_running_loop().create_future()
        self._beats = ticker
        ticker.add_beat(self._play_beat)  # a method, not a closure: one that names itself is a reference cycle
        try:
            return await handed_back
        finally:
            ticker.remove_beat(self._play_beat)
            self._handed_back = None

    def _play_beat(self, now: float) -> None:
        """One beat of `_play_on_beats`: the frames due, then hand back once there is nothing to play or no
        room to play it."""
        ticker, handed_back = self._beats, self._handed_back
        assert self.output is not None and self._direct is not None and ticker is not None
        if handed_back is None or handed_back.done():
            return
        playout, direct = self.output.playout, self._direct
        try:
            for messages in self._due_messages(now, ticker.next_beat()):
                direct.send_texts(messages)
        except ConnectionError:
            self._end("carrier_closed")
            outcome = "closed"
        except Exception as exc:  # a bug: the writer task fails with it, and the call ends
            ticker.remove_beat(self._play_beat)
            handed_back.set_exception(exc)
            return
        else:
            outcome = "idle" if playout.idle else "blocked" if not direct.writable else ""
        if outcome:
            ticker.remove_beat(self._play_beat)
            handed_back.set_result(outcome)

    def _due_messages(self, now: float, next_beat: float) -> Iterator[tuple[str, ...]]:
        """The messages of each frame due by `next_beat`: its media, and the mark that asks for its
        confirmation where it carries one. Lazy: a frame is popped only when its turn to be sent comes."""
        assert self.output is not None
        output, codec = self.output, self.codec
        for _ in range(output.due(now, next_beat)):
            frame = output.pop()
            if frame is None:
                return
            media = codec.media(frame.payload)
            yield (media,) if frame.confirm is None else (media, codec.mark(frame.confirm))

    async def _send_after_room(self) -> bool:
        """Wait, watched by the stall watchdog, until the carrier reads again; False when the socket is gone."""
        assert self._direct is not None
        self._send_since = asyncio.get_running_loop().time()
        try:
            await self._direct.wait_writable()
        finally:
            self._send_since = None
        return not self._ended.is_set()

    async def _send(self, text: str) -> bool:
        direct = self._direct
        if direct is not None:
            if not direct.writable:  # the carrier is not reading: wait, watched by the stall watchdog
                self._send_since = asyncio.get_running_loop().time()
                try:
                    await direct.wait_writable()
                finally:
                    self._send_since = None
            try:
                direct.send_text(text)
            except ConnectionError:
                self._end("carrier_closed")
                return False
            return True
        self._send_since = asyncio.get_running_loop().time()
        try:
            await self.websocket.send_text(text)
        except Exception:  # the carrier hung up under us (disconnect, reset, closed state)
            self._end("carrier_closed")
            return False
        finally:
            self._send_since = None
        return True

    # -- bad input ---------------------------------------------------------------------------------

    def _reject(self, exc: CarrierMessageError) -> None:
        metrics.CARRIER_MESSAGE_ERRORS.labels(self.carrier, exc.code).inc()
        self.errors += 1
        if self.errors <= _LOGGED_ERRORS or self.errors % 100 == 0:
            log.warning("%s: %s (%s)%s", self.name, exc.message, exc.code,
                        f"; {self.errors} bad frames so far" if self.errors > 1 else "")

    def _carrier_error(self, event: CarrierErrorReported) -> None:
        metrics.CARRIER_MESSAGE_ERRORS.labels(self.carrier, "carrier_error").inc()
        log.warning("%s: carrier reported error %s: %s %s", self.name, event.code, event.title, event.detail)

    # -- the Caller protocol -----------------------------------------------------------------------

    async def interrupt_playback(self) -> None:
        """Barge-in: tell the carrier to drop its buffer now, and drop ours."""
        if self.output is None or self.started is None:
            return
        held = self.output.playout.held  # nothing sent since the hold's clear: the carrier has none of it
        self.output.clear()
        if not held:
            await self._clear_carrier()

    async def hold_playback(self) -> None:
        """A possible barge-in: stop sending, and have the carrier drop the frames it holds ahead
        (`carrier_lead_frames`; if it was no barge-in they are lost, ~40 ms the caller does not miss)."""
        if self.output is None or self.started is None:
            return
        self.output.hold()
        await self._clear_carrier()

    async def _clear_carrier(self) -> None:
        self._generation += 1
        metrics.CARRIER_CLEARS.labels(self.carrier).inc()
        await self._send(self.codec.clear())

    async def resume_playback(self) -> None:
        if self.output is not None:
            self.output.resume()

    async def transfer(self, target: str, reason: str) -> None:
        """Move the call to a person once the caller has heard the handover line."""
        if not target:
            log.warning("%s: transfer requested but the agent has no escalation target", self.name)
            return
        assert self.control is not None
        await self._until_heard()
        session = self.session  # warm: the person first hears who is calling and why, where the carrier allows
        handoff = session.handoff if session is not None and session.agent.escalation.warm else None
        try:
            await self.control.transfer(target, handoff.whisper() if handoff is not None else None)
        except CarrierApiError as exc:
            log.error("%s: transfer failed: %s", self.name, exc)
            return
        log.info("%s: transferred", self.name)
        self._end("transferred")

    async def hang_up(self, reason: str) -> None:
        """End the carrier call once the goodbye has played."""
        assert self.control is not None
        await self._until_heard()
        try:
            await self.control.hang_up()
        except CarrierApiError as exc:
            if not exc.gone:
                log.error("%s: hang-up failed: %s", self.name, exc)
        self._end("agent_hung_up")

    async def send_dtmf(self, digits: str) -> None:
        assert self.control is not None
        try:
            await self.control.send_dtmf(digits)
        except CarrierApiError as exc:
            raise RealtimeError("dtmf_failed", str(exc)) from exc

    async def _until_heard(self, max_wait_s: float = 60.0) -> None:
        """Wait until the caller has heard what the session queued: every frame sent and its mark echoed.

        A carrier that never echoes marks costs HEARD_GRACE_S beyond the last frame, not a stuck call.
        """
        assert self.output is not None
        ended = asyncio.ensure_future(self._ended.wait())
        heard = asyncio.ensure_future(self.output.until_heard(max_wait_s, HEARD_GRACE_S))
        try:
            await asyncio.wait((ended, heard), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            heard.cancel()


def signatures_required(settings: Settings, secret_set: bool) -> bool:
    """Whether a carrier request must carry a valid signature: always when its secret is configured
    (unless checking is switched off); without a secret, only outside dev mode, where it is refused."""
    if not settings.verify_carrier_signatures:
        return False
    return secret_set or not settings.dev_mode


def media_socket_url(settings: Settings, path: str) -> str:
    """The ws(s):// URL carriers open for media: the public base URL with its scheme swapped."""
    base = settings.base_url()
    scheme, _, rest = base.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}{path}"


def public_request_url(settings: Settings, url: str, path: str, query: str) -> str:
    """The URL the carrier requested (and signed): behind a proxy, the public URL, not the local one."""
    if not settings.public_url:
        return url
    return settings.public_url.rstrip("/") + path + (f"?{query}" if query else "")


PresentedToken = Callable[[CarrierCall, StreamStarted], str | None]  # finds the token a media socket presents


async def open_media_socket(gateway: CallGateway, websocket: WebSocket, carrier: str, codec: MediaCodec,
                            presented_token: PresentedToken) -> tuple[CarrierCall, StreamStarted, MediaGrant] | None:
    """Accept a carrier's media socket, read until `start`, and redeem the media token the socket presents
    (`presented_token` finds it) for the call `start` names. None when refused: 503 while the gateway
    starts; close 1008 when the carrier hangs up or breaks the protocol first, or the token is missing,
    unknown, used, expired or another call's (counted, and no session is opened). Once per call: the
    frames after `start` pay nothing for it."""
    if not gateway.ready:
        await websocket.send_denial_response(PlainTextResponse("starting", status_code=503))
        return None
    await websocket.accept()
    call = CarrierCall(carrier=carrier, websocket=websocket, codec=codec, settings=gateway.settings)
    started = await call.wait_for_start()
    if started is None:
        await call.close_socket(1008)
        return None
    try:
        grant = gateway.media_tokens.redeem(presented_token(call, started), carrier, started.call_id,
                                            gateway.real_clock.time())
    except MediaTokenError as exc:
        metrics.CARRIER_WEBHOOKS_REJECTED.labels(carrier, f"token_{exc.reason}").inc()
        log.warning("%s media socket from %s for call %r refused: %s", carrier,
                    websocket.client.host if websocket.client else "?", started.call_id[:80], exc.message)
        await call.close_socket(1008, exc.message)
        return None
    return call, started, grant


async def run_carrier_call(gateway: CallGateway, call: CarrierCall, started: StreamStarted, grant: MediaGrant,
                           audio: CarrierAudio, control: CarrierControl) -> None:
    """Open the session for a started media stream, greet the caller, and serve the call to its end. The
    agent and caller are the ones the signed webhook named (`grant`), not what the stream says.

    The call was admitted at that webhook (its ticket reserved under the carrier's call id); a stream
    whose reservation lapsed is admitted now or closed 1013."""
    ticket = gateway.admission.claim(grant.call_id) or gateway.admission.try_admit(None, call.carrier)
    if isinstance(ticket, Refusal):
        log.warning("%s: refused, %s", call.name, ticket.reason)
        await call.close_socket(1013)
        return
    try:
        agent = gateway.agent(grant.agent)
        session = await gateway.open_session(agent=agent, caller=call, dialect="ga", model=None)
        try:
            call.attach(session, audio, control)
            session.configure(audio.session_config())
            log.info("%s: stream %s started for agent %s", call.name, started.stream_id, agent.name)
            await session.start(greet=True, caller_id=grant.from_number or None, opening=grant.opening)
            await call.serve()
        finally:
            if not session.closed:
                await session.close(call.end_reason or "carrier_closed")
            gateway.session_closed(session)
            call.release()
            log.info("%s: ended (%s)", call.name, call.end_reason or "closed")
    finally:
        ticket.release()
