"""A Session in-process: a scripted engine, a loudness VAD and a test caller; no sockets, no models.

Tests drive a call through the interface that outlives refactors of the inside: client events go in as
wire dicts (`send`), caller audio as `input_audio_buffer.append` events (`speak`, `pause`), key presses
as a carrier would hand them over (`press`), and server events come out as the wire dicts a Realtime
client would read (`next`, `queued`), each checked against the official SDK's strict event models.

Time is the audio: the session's stream clock advances only with the caller audio a test appends, so
turn timing, prefix padding and idle timeouts are exact numbers. What the caller has heard of the agent
is whatever the test says it has heard (`heard`), or, for a `LineCaller`, what the gateway's own paced
playout has released on a clock the test moves (`LineCaller.play`). A response stays mid-air for as long as the test
likes: the engine parks at a `Hold` until the test releases it (or a barge-in cancels it).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np
from pydantic import TypeAdapter

from voxgate.agents import AgentConfig
from voxgate.audio.playout import Playout
from voxgate.audio.resample import StreamResampler
from voxgate.engines.base import AudioChunk, Engine, EngineOutput, ResponseRequest, TextDelta
from voxgate.protocol.serialiser import encode_event
from voxgate.protocol.server_events import ServerEvent
from voxgate.session.playback import PlaybackTracker
from voxgate.session.session import Session
from voxgate.tools.registry import ToolRegistry
from voxgate.transports.audio_output import AudioOutput

RATE = 24000  # pcm16 at 24 kHz: the Realtime default for input and output
FRAME_MS = 20  # what a caller sends per append, and what the VAD scores at once
LOUD = 8000  # amplitude of the caller's "speech" and the agent's voice
EVENT_WAIT_S = 10.0  # a guard against a hang, not a timing: a healthy test waits microseconds


def tone(ms: float, rate: int = RATE, amplitude: int = LOUD) -> np.ndarray:
    """A 440 Hz tone: loud enough for `LoudnessVad`, and (a cosine) loud from its first sample, so where it
    starts in a buffer can be read to the sample."""
    t = np.arange(int(rate * ms / 1000)) / rate
    return (amplitude * np.cos(2 * np.pi * 440 * t)).astype(np.int16)


class LoudnessVad:
    """A deterministic VadStream: a 20 ms frame is speech (1.0) when any sample is loud, else silence (0.0).
    It reads the input's rate, or `listens_at` (as Silero reads 16 kHz only)."""

    frame_ms: float = FRAME_MS

    def __init__(self, listens_at: int | None = None) -> None:
        self._rate = RATE
        self._listens_at = listens_at
        self._pending = np.zeros(0, dtype=np.int16)

    def use_rate(self, input_rate: int) -> int:
        self._rate = self._listens_at or input_rate
        self.reset()
        return self._rate

    def feed(self, pcm: np.ndarray) -> list[float]:
        samples = np.concatenate((self._pending, pcm))
        size = self._rate * FRAME_MS // 1000
        whole = samples.size - samples.size % size
        self._pending = samples[whole:]
        frames = samples[:whole].reshape(-1, size)
        return [1.0 if np.abs(frame.astype(np.int32)).max() > LOUD // 4 else 0.0 for frame in frames]

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)


@dataclass(frozen=True)
class Hold:
    """In a script: stop here (the response stays in progress) until the test calls `release()`."""


Step: TypeAlias = EngineOutput | Hold
Script: TypeAlias = Sequence[Step] | Callable[[ResponseRequest], Iterable[Step]]


def speech(text: str, ms: float) -> list[Step]:
    """A sentence as an engine streams it: its words, then `ms` of its audio."""
    return [TextDelta(text), AudioChunk(tone(ms), RATE)]


class ScriptedEngine(Engine):
    """A real engine whose responses are written in the test: each response plays the next script.

    A script is a list of outputs (`TextDelta`, `AudioChunk`, `ToolCall`, `Hold`) or a function of the
    request that returns one, for replies that read the conversation or the brain state. A response that
    calls a gateway tool takes a second script for what it says after the tool. A fixed line (`say`:
    greetings, idle prompts) is spoken without using a script. `transcribe` answers the next of
    `transcripts` (an empty string once they run out).
    """

    name = "scripted"
    transcribes = True

    def __init__(self, transcripts: Iterable[str] = (), say_ms: float = 400.0) -> None:
        self.scripts: deque[Script] = deque()
        self.transcripts = deque(transcripts)
        self.say_ms = say_ms
        self.requests: list[ResponseRequest] = []  # every request, in order
        self.transcribed: list[int] = []  # samples of each audio it was asked to transcribe
        self._release = asyncio.Event()

    def script(self, *scripts: Script) -> None:
        self.scripts.extend(scripts)

    def release(self) -> None:
        """Let a response parked at a `Hold` go on."""
        self._release.set()

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str | None:
        self.transcribed.append(pcm16k.size)
        return self.transcripts.popleft() if self.transcripts else ""

    async def respond(self, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        self.requests.append(request)
        if request.say is not None:
            steps: Iterable[Step] = speech(request.say, self.say_ms)
        else:
            if not self.scripts:
                raise AssertionError("the engine was asked for a response the test did not script")
            script = self.scripts.popleft()
            steps = script(request) if callable(script) else script
        for step in steps:
            if isinstance(step, Hold):
                self._release.clear()
                await self._release.wait()
            else:
                yield step


@dataclass
class TestCaller:
    """The transport's end of the call. `server_side`: it plays the agent's audio itself (phone, browser)."""

    server_side: bool = False
    transport: str = "realtime_ws"
    playback: PlaybackTracker = field(init=False)
    interrupted: int = 0
    holds: int = 0  # barge-in checks the session paused the agent for
    resumes: int = 0
    hung_up: list[str] = field(default_factory=list)
    transferred: list[tuple[str, str]] = field(default_factory=list)
    dtmf_sent: list[str] = field(default_factory=list)
    moved: asyncio.Event = field(default_factory=asyncio.Event)  # hung up or transferred
    heard_by_item: dict[str, float] = field(default_factory=dict)  # what the test says the caller heard

    __test__ = False  # not a pytest test class

    def __post_init__(self) -> None:
        self.playback = PlaybackTracker(server_side=self.server_side)
        if self.server_side:
            self.playback.line = self

    def heard_ms(self, item_id: str) -> float:
        return self.heard_by_item.get(item_id, 0.0)

    async def interrupt_playback(self) -> None:
        self.interrupted += 1

    async def hold_playback(self) -> None:
        self.holds += 1

    async def resume_playback(self) -> None:
        self.resumes += 1

    async def transfer(self, target: str, reason: str) -> None:
        self.transferred.append((target, reason))
        self.moved.set()

    async def hang_up(self, reason: str) -> None:
        self.hung_up.append(reason)
        self.moved.set()

    async def wait_moved(self) -> None:
        """Until the session has hung up or transferred the call."""
        async with asyncio.timeout(EVENT_WAIT_S):
            await self.moved.wait()

    async def send_dtmf(self, digits: str) -> None:
        self.dtmf_sent.append(digits)


class PcmLine:
    """A line that carries the session's pcm16 as it is (the `LineEncoder` of a 24 kHz PCM line)."""

    def encode(self, pcm: np.ndarray, rate: int) -> bytes:
        assert rate == RATE
        return pcm.astype("<i2").tobytes()

    def flush(self) -> bytes:
        return b""

    def reset(self) -> None:
        pass

    def decode(self, payload: bytes) -> tuple[np.ndarray, int]:
        return np.frombuffer(payload, dtype="<i2").astype(np.int16), RATE


@dataclass
class LineCaller(TestCaller):
    """A caller on a paced line: the gateway's own playout shell and core (what the carrier, WebRTC and RTP
    transports use) take the session's audio as a transport's pump would (`Call` feeds them every event it
    reads), and release it on a clock the test moves with `play`. What the caller has heard is what that
    playout released; `on_interrupt` runs inside the barge-in's clear, as a transport's slow clear would."""

    server_side: bool = True
    transport: str = "webrtc"
    now: float = 0.0
    played: bytearray = field(default_factory=bytearray)  # the agent audio released to the caller
    on_interrupt: Callable[[], Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        playout = Playout(frame_bytes=RATE * FRAME_MS // 1000 * 2, silence=b"\x00\x00", frame_ms=FRAME_MS,
                          continuous=True)
        self.output = AudioOutput(playout, PcmLine(), self.playback)

    def heard_ms(self, item_id: str) -> float:
        return self.output.playout.heard_ms(item_id)

    def play(self, ms: float) -> None:
        """`ms` of real time pass on the line: the frames due go to the caller (silence when none)."""
        for _ in range(round(ms / FRAME_MS)):  # tick by tick, as a line's sender wakes
            self.now += FRAME_MS / 1000
            for _ in range(self.output.due(self.now)):
                frame = self.output.pop()
                if frame is not None:
                    self.played += frame.payload

    @property
    def played_ms(self) -> float:
        return len(self.played) / 2 * 1000 / RATE

    async def hold_playback(self) -> None:
        self.holds += 1
        self.output.hold()

    async def resume_playback(self) -> None:
        self.resumes += 1
        self.output.resume()

    async def interrupt_playback(self) -> None:
        self.interrupted += 1
        self.output.clear()
        if self.on_interrupt is not None:
            await self.on_interrupt()


class _ErrorRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Call:
    """One Session driven in-process; use as `async with Call(...) as call:`."""

    def __init__(self, agent: AgentConfig | None = None, *, engine: ScriptedEngine | None = None,
                 caller: TestCaller | None = None, events: TypeAdapter[Any] | None = None,
                 decoded_at: int | None = None, **session_options: Any) -> None:
        self.agent = agent or AgentConfig(name="test")
        self.engine = engine or ScriptedEngine()
        self.caller = caller or TestCaller()
        self.tools = ToolRegistry(self.agent)
        session_options.setdefault("vad_factory", LoudnessVad)
        self.session = Session(agent=self.agent, engine=self.engine, tools=self.tools, caller=self.caller,
                               audio_lead_ms=3_600_000.0, **session_options)
        # The caller's audio as a browser call's transport hands it over: PCM it decoded itself at this rate
        # (`append_pcm_nowait`), not `input_audio_buffer.append` events. None: the events.
        self._decoder = (StreamResampler(RATE, decoded_at), decoded_at) if decoded_at is not None else None
        self._events = events  # the SDK's server-event union: every event must validate against it
        if isinstance(self.caller, LineCaller):
            self.caller.output.session = self.session
            self.caller.output.due(0.0)  # the line's clock starts with the call
        self.seen: list[dict[str, Any]] = []  # every server event read so far, in order
        self.stream_ms = 0.0  # caller audio appended so far: the session's clock
        self.errors = _ErrorRecords()  # a traceback the session logs is a failure, even if the events look right

    async def __aenter__(self) -> Call:
        logging.getLogger("voxgate").addHandler(self.errors)
        await self.session.start()
        await self.next("session.created")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.session.close()
            await self.tools.aclose()
        finally:
            logging.getLogger("voxgate").removeHandler(self.errors)
        if exc_info[0] is None:
            assert not self.errors.records, [r.getMessage() for r in self.errors.records]

    # -- in ----------------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        """A client event, as a Realtime client would write it."""
        await self.session.handle_message(json.dumps(event))

    async def detect_turns(self, turn_detection: dict[str, Any] | None) -> None:
        """`session.update` of the turn detection (None: the client commits), once it is applied."""
        await self.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "turn_detection": turn_detection}}}})
        await self.next("session.updated")

    async def append(self, pcm: np.ndarray) -> None:
        """Caller audio, one frame per `input_audio_buffer.append`, letting the session's tasks run in
        between as the 20 ms between real frames would."""
        size = RATE * FRAME_MS // 1000
        for start in range(0, pcm.size, size):
            frame = pcm[start:start + size]
            if self._decoder is not None:
                resampler, rate = self._decoder
                rest = self.session.append_pcm_nowait(resampler.process(frame), rate)
                if rest is not None:
                    await rest
            else:
                await self.send({"type": "input_audio_buffer.append",
                                 "audio": base64.b64encode(frame.astype("<i2").tobytes()).decode()})
            self.stream_ms += frame.size * 1000 / RATE
            for _ in range(3):  # a task started by this frame runs, finishes, and its callbacks run
                await asyncio.sleep(0)

    async def speak(self, ms: float) -> None:
        await self.append(tone(ms))

    async def pause(self, ms: float) -> None:
        await self.append(np.zeros(int(RATE * ms / 1000), dtype=np.int16))

    def press(self, key: str) -> None:
        """A key pressed on the caller's phone, as the carrier transport reports it."""
        self.session.dtmf_received(key)

    def heard(self, item_id: str, ms: float) -> None:
        """The transport reports that the caller has heard `ms` of this item's audio."""
        self.caller.heard_by_item[item_id] = ms

    # -- out ---------------------------------------------------------------------------------------

    def _wire(self, event: ServerEvent) -> dict[str, Any] | None:
        """The event as the client reads it: serialised for the dialect as a transport would, validated.
        A paced line takes it first, as the transport's pump would."""
        if isinstance(self.caller, LineCaller):
            self.caller.output.take(event)
        text = encode_event(event, self.session.dialect)
        if text is None:
            return None
        out: dict[str, Any] = json.loads(text)
        if self._events is not None:
            self._events.validate_python(out, strict=True)
        self.seen.append(out)
        return out

    async def next(self, kind: str) -> dict[str, Any]:
        """The next server event of this type; the ones before it are kept in `seen`."""
        try:
            async with asyncio.timeout(EVENT_WAIT_S):
                while True:
                    event = await self.session.outbound.get()
                    if event is None:
                        raise AssertionError(f"the session closed before {kind}")
                    wire = self._wire(event)
                    if wire is not None and wire["type"] == kind:
                        return wire
                    if wire is not None and wire["type"] == "error":
                        raise AssertionError(f"an error while waiting for {kind}: {wire['error']}")
        except TimeoutError:
            raise AssertionError(f"no {kind} event; saw {[e['type'] for e in self.seen[-20:]]}") from None

    async def queued(self) -> list[dict[str, Any]]:
        """The server events queued so far, without waiting for more."""
        out = []
        while len(self.session.outbound):
            event = await self.session.outbound.get()
            wire = self._wire(event) if event is not None else None
            if wire is not None:
                out.append(wire)
        return out

    async def response(self) -> dict[str, Any]:
        """Wait for the current response to end; its `response.done` event. As a client reading it from a
        socket would, the test then finds the session free for the next response."""
        done = await self.next("response.done")
        for _ in range(100):
            if self.session.response is None:
                break
            await asyncio.sleep(0)  # the response's task ends right after queueing response.done
        return done

    async def retrieve(self, item_id: str) -> dict[str, Any]:
        """An item as the server holds it, audio included."""
        await self.send({"type": "conversation.item.retrieve", "item_id": item_id})
        item: dict[str, Any] = (await self.next("conversation.item.retrieved"))["item"]
        return item


def audio_ms(part: dict[str, Any]) -> float:
    """Length of a retrieved pcm16 24 kHz audio part."""
    return len(base64.b64decode(part["audio"])) / 2 / RATE * 1000


def pcm_of(part: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(part["audio"]), dtype="<i2")


def types(events: Iterable[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]
