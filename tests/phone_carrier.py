"""Test carriers: a phone line that speaks Twilio's or Telnyx's media-stream protocol as documented, and a
recorder that stands in for their REST APIs.

A call starts as a carrier starts it: with the webhook (`TwilioLine.call` posts the voice webhook and
follows its TwiML, sending the `<Parameter>`s, media token included, back in `start`; Telnyx tests
deliver `call.initiated` and take the stream URL and token from the answer command). `dial` opens a
media socket with whatever the caller of it says: what an attacker can do.

`PhoneLine` behaves like the carrier's side of a call: it streams the caller's audio in real time
(20 ms frames, silence when the caller says nothing, as a real line does), plays the agent's audio on
a real-time clock and echoes each mark when the audio before it has played, empties its buffer on
`clear` (echoing the discarded marks, as both carriers do), and sends key presses and `stop`. The
messages, the playback, the webhook's form and the reading of its TwiML are the load generator's own
(`voxgate.loadtest`); this file adds the sockets, tasks and what a test wants to look at afterwards.
Wire formats: ../shared/reference/telephony-protocols.md §1-2.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from voxgate.loadtest.carrier_api import ApiRequest, CarrierApiRecorder
from voxgate.loadtest.carrier_line import (
    FRAME_S,
    Encoding,
    LineCodec,
    LinePlayback,
    TelnyxMessages,
    TwilioMessages,
)
from voxgate.loadtest.carrier_line import twilio_signature as twilio_sign
from voxgate.loadtest.carrier_webhook import StreamAnswer, parse_twiml, twilio_voice_form, twilio_voice_headers

__all__ = ["TWILIO_ACCOUNT", "ApiRequest", "CarrierApiRecorder", "PhoneLine", "Played", "TelnyxLine", "TwilioLine",
           "eventually", "eventually_true", "twilio_sign", "twilio_voice_form", "twilio_voice_webhook"]

TWILIO_ACCOUNT = "AC" + "0" * 32


async def eventually(check: Callable[[], object], within_s: float, what: str) -> None:
    """Poll `check` until it is true; TimeoutError naming `what` if it never is."""
    deadline = time.monotonic() + within_s
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within_s} s")
        await asyncio.sleep(0.01)


async def eventually_true(check: Callable[[], Awaitable[object]], within_s: float, what: str) -> None:
    """`eventually` for a check that must await (a request to the gateway, say)."""
    deadline = time.monotonic() + within_s
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within_s} s")
        await asyncio.sleep(0.02)


async def twilio_voice_webhook(base_url: str, auth_token: str | None, form: dict[str, str],
                               agent: str = "acme") -> tuple[str, dict[str, str]]:
    """Post the voice webhook as Twilio does (signed when there is a token); the stream URL and the
    `<Parameter>`s of the `<Connect><Stream>` it answers with."""
    url = f"{base_url}/twilio/voice?agent={agent}"
    async with httpx.AsyncClient() as http:
        response = await http.post(url, data=form, headers=twilio_voice_headers(url, form, auth_token))
    response.raise_for_status()
    answer = parse_twiml(response.text)
    assert isinstance(answer, StreamAnswer), response.text
    return answer.url, answer.parameters


@dataclass
class Played:
    at: float  # monotonic time the frame reached the line
    payload: bytes


@dataclass
class PhoneLine:
    """One call's carrier side; subclasses make `messages`, which spell it as Twilio or Telnyx."""

    ws: ClientConnection
    encoding: Encoding = "pcmu"  # what the line sends and expects back: "pcmu" or "pcma"
    frames: list[Played] = field(default_factory=list)
    marks_echoed: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    playback: LinePlayback = field(default_factory=LinePlayback)
    messages: TwilioMessages | TelnyxMessages = field(init=False)
    _speech: deque[bytes] = field(default_factory=deque)
    _speech_unsent: int = 0  # queued speech frames not yet written to the socket
    _spoke_at: float = 0.0  # when the last speech frame was written
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reorder: bool = False  # Telnyx does not promise order: swap neighbouring media frames now and then
    # Line echo: the agent's audio comes back in the caller's microphone this many dB down (None: no echo),
    # mixed into the frame sent on the tick after it arrived, as a handset or a hybrid leaks it.
    echo_db: float | None = None
    _leak: deque[np.ndarray] = field(default_factory=deque)  # echo frames still to be mixed in

    @property
    def codec(self) -> LineCodec:
        return LineCodec(self.encoding)

    def connected_message(self) -> str:
        return self.messages.connected()

    def start_message(self) -> str:
        return self.messages.start()

    async def begin(self) -> None:
        await self.send(self.connected_message())
        await self.send(self.start_message())
        self._tasks = [asyncio.create_task(self._line()), asyncio.create_task(self._listen()),
                       asyncio.create_task(self._echo_marks())]

    async def send(self, message: str | dict[str, Any]) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    def say(self, pcm8k: np.ndarray) -> float:
        """Queue caller speech (8 kHz int16); returns how long it takes to say it, in seconds."""
        frames = self.codec.frames(pcm8k[: len(pcm8k) - len(pcm8k) % 160])
        self._speech.extend(frames)
        self._speech_unsent += len(frames)
        return len(frames) * FRAME_S

    async def press(self, digit: str) -> None:
        await self.send(self.messages.dtmf(digit))

    async def hang_up(self) -> None:
        with contextlib.suppress(Exception):
            await self.send(self.messages.stop())
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    async def _line(self) -> None:
        """The caller's microphone: a frame every 20 ms on an absolute clock, speech when queued."""
        silence = self.codec.silence()
        started = time.monotonic()
        sent = 0
        held: tuple[str, bool] | None = None
        while True:
            speech = bool(self._speech)
            payload = self._speech.popleft() if speech else silence
            if self._leak:
                mixed = self.codec.decode(payload).astype(np.int32) + self._leak.popleft()
                payload = self.codec.encode(np.clip(mixed, -32768, 32767).astype(np.int16))
            message = self.messages.media(payload)
            if self.reorder and held is None and sent % 7 == 3:
                held = (message, speech)  # send the next frame first
            else:
                await self._send_frame(message, speech)
                if held is not None:
                    await self._send_frame(*held)
                    held = None
            sent += 1
            await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.monotonic()))

    async def _send_frame(self, message: str, speech: bool) -> None:
        await self.send(message)
        if speech:
            self._speech_unsent -= 1
            self._spoke_at = time.monotonic()

    async def _listen(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()
                message = json.loads(raw)
                kind = message.get("event")
                if kind == "media":
                    payload = base64.b64decode(message["media"]["payload"])
                    self.frames.append(Played(now, payload))
                    if self.echo_db is not None:
                        self._leak.append((self.codec.decode(payload) * 10 ** (self.echo_db / 20)).astype(np.int32))
                    self.playback.audio(now, self.codec.seconds(len(payload)))
                elif kind == "mark":
                    self.playback.mark(now, message["mark"]["name"])
                elif kind == "clear":
                    self.clears.append(now)
                    self._leak.clear()  # the line drops what it had not played: no echo of it either
                    for name in self.playback.clear(now):  # discarded marks come back at once
                        await self._echo(name)
                else:
                    self.other.append(message)
        except Exception:
            pass
        finally:
            self.closed.set()

    async def _echo_marks(self) -> None:
        while True:
            for name in self.playback.due_marks(time.monotonic()):
                await self._echo(name)
            await asyncio.sleep(0.005)

    async def _echo(self, name: str) -> None:
        self.marks_echoed.append((time.monotonic(), name))
        with contextlib.suppress(Exception):
            await self.send(self.messages.mark(name))

    # -- what the caller heard -------------------------------------------------------------------

    def audio_since(self, since: float) -> bytes:
        return b"".join(f.payload for f in self.frames if f.at >= since)

    def pcm_since(self, since: float) -> np.ndarray:
        return self.codec.decode(self.audio_since(since))

    async def wait_audio(self, after: float, min_s: float, within_s: float) -> float:
        """Wait until at least `min_s` of agent audio has arrived after `after`; returns its first frame time."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            got = [f for f in self.frames if f.at >= after]
            if sum(len(f.payload) for f in got) >= min_s * 8000:
                return got[0].at
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {min_s} s of agent audio within {within_s} s")

    async def done_speaking(self, within_s: float = 60.0) -> float:
        """Wait until every queued speech frame has been written; returns when the last one was.

        Under load this line's 20 ms clock falls behind and catches up in bursts, so the end of what was
        said is when it was sent, not when `say` was called plus its length.
        """
        await eventually(lambda: self._speech_unsent <= 0, within_s, "the caller finishing speaking")
        return self._spoke_at

    async def wait_played(self, session: Any, within_s: float) -> None:
        """Wait until the agent has nothing left to say on this call and the line has played all of it.

        Decided by the gateway's state, not by a quiet spell on the line: under load, frames can arrive in
        bursts with gaps that look like the end of a reply. The carrier playout marks the end of every item
        and this line echoes marks only after the frames before them, so "every mark echoed" means every
        frame arrived.
        """
        call = session.caller
        await eventually(lambda: session.response is None and len(session.outbound) == 0
                         and call.output.playout.drained, within_s, "the reply played in full")


@dataclass
class TwilioLine(PhoneLine):
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    account_sid: str = TWILIO_ACCOUNT
    parameters: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.messages = TwilioMessages(call_sid=self.call_sid, account_sid=self.account_sid,
                                       stream_sid=self.stream_sid, parameters=self.parameters)

    @classmethod
    async def call(cls, base_url: str, auth_token: str | None, *, agent: str = "acme",
                   caller: str = "+15557654321", account_sid: str = TWILIO_ACCOUNT,
                   stream_account_sid: str | None = None, **kwargs: Any) -> TwilioLine:
        """Place a call as Twilio does: the voice webhook, then the media socket its TwiML names, with the
        TwiML's `<Parameter>`s (the media token among them) sent back in `start`. `stream_account_sid`:
        what `start` claims instead of the webhook's account (a forger's edit). `kwargs` go to `dial`."""
        call_sid = kwargs.pop("call_sid", None) or "CA" + uuid.uuid4().hex
        ws_url, parameters = await twilio_voice_webhook(
            base_url, auth_token, twilio_voice_form(call_sid, account_sid, caller), agent)
        return await cls.dial(ws_url, auth_token, parameters, call_sid=call_sid,
                              account_sid=stream_account_sid or account_sid, **kwargs)

    @classmethod
    async def dial(cls, ws_url: str, auth_token: str | None, parameters: dict[str, str], *,
                   sock: socket.socket | None = None, **kwargs: Any) -> TwilioLine:
        """Open the media socket as Twilio does (upgrade signed over the ws URL) and send connected + start
        with these `customParameters`: a real call takes them from the webhook's TwiML (`call`).

        `sock`: an already connected socket to speak over (e.g. one with a tiny receive buffer)."""
        headers = {"X-Twilio-Signature": twilio_sign(ws_url, {}, auth_token)} if auth_token else {}
        ws = await connect(ws_url, additional_headers=headers, compression=None, max_size=None, sock=sock)
        line = cls(ws=ws, parameters=parameters, **kwargs)
        await line.begin()
        return line


@dataclass
class TelnyxLine(PhoneLine):
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_control_id: str = field(default_factory=lambda: "v3:" + uuid.uuid4().hex)
    parameters: dict[str, str] = field(default_factory=dict)
    auth_token: str | None = None

    def __post_init__(self) -> None:
        self.messages = TelnyxMessages(call_control_id=self.call_control_id, stream_id=self.stream_id,
                                       parameters=self.parameters, auth_token=self.auth_token, codec=self.codec)

    @classmethod
    async def dial(cls, ws_url: str, auth_token: str | None, call_control_id: str, parameters: dict[str, str],
                   **kwargs: Any) -> TelnyxLine:
        headers = {"x-telnyx-streaming-auth-token": auth_token} if auth_token else {}
        ws = await connect(ws_url, additional_headers=headers, compression=None, max_size=None)
        line = cls(ws=ws, call_control_id=call_control_id, parameters=parameters, auth_token=auth_token, **kwargs)
        await line.begin()
        return line
