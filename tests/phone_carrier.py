"""Test carriers: a phone line that speaks Twilio's or Telnyx's media-stream protocol as documented, and a
recorder that stands in for their REST APIs.

`PhoneLine` behaves like the carrier's side of a call: it streams the caller's audio in real time
(20 ms frames, silence when the caller says nothing, as a real line does), plays the agent's audio on
a real-time clock and echoes each mark when the audio before it has played, empties its buffer on
`clear` (echoing the discarded marks, as both carriers do), and sends key presses and `stop`. The
messages and the playback are the load generator's own (`voxgate.loadtest.carrier_line`); this file
adds the sockets, tasks and what a test wants to look at afterwards.
Wire formats: ../shared/reference/telephony-protocols.md §1-2.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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

__all__ = ["ApiRequest", "CarrierApiRecorder", "PhoneLine", "Played", "TelnyxLine", "TwilioLine", "eventually",
           "twilio_sign"]


async def eventually(check: Callable[[], object], within_s: float, what: str) -> None:
    """Poll `check` until it is true; TimeoutError naming `what` if it never is."""
    deadline = time.monotonic() + within_s
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within_s} s")
        await asyncio.sleep(0.01)


@dataclass
class Played:
    at: float  # monotonic time the frame reached the line
    payload: bytes


@dataclass
class PhoneLine:
    """One call's carrier side; `messages` spells it as Twilio or Telnyx."""

    ws: ClientConnection
    messages: TwilioMessages | TelnyxMessages
    encoding: Encoding = "pcmu"  # what the line sends and expects back: "pcmu" or "pcma"
    frames: list[Played] = field(default_factory=list)
    marks_echoed: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    playback: LinePlayback = field(default_factory=LinePlayback)
    _speech: deque[bytes] = field(default_factory=deque)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reorder: bool = False  # Telnyx does not promise order: swap neighbouring media frames now and then

    @property
    def codec(self) -> LineCodec:
        return LineCodec(self.encoding)

    async def begin(self) -> None:
        await self.ws.send(self.messages.connected())
        await self.ws.send(self.messages.start())
        self._tasks = [asyncio.create_task(self._line()), asyncio.create_task(self._listen()),
                       asyncio.create_task(self._echo_marks())]

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    def say(self, pcm8k: np.ndarray) -> float:
        """Queue caller speech (8 kHz int16); returns how long it takes to say it, in seconds."""
        frames = self.codec.frames(pcm8k[: len(pcm8k) - len(pcm8k) % 160])
        self._speech.extend(frames)
        return len(frames) * FRAME_S

    async def press(self, digit: str) -> None:
        await self.ws.send(self.messages.dtmf(digit))

    async def hang_up(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.send(self.messages.stop())
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
        held: str | None = None
        while True:
            message = self.messages.media(self._speech.popleft() if self._speech else silence)
            if self.reorder and held is None and sent % 7 == 3:
                held = message  # send the next frame first
            else:
                await self.ws.send(message)
                if held is not None:
                    await self.ws.send(held)
                    held = None
            sent += 1
            await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.monotonic()))

    async def _listen(self) -> None:
        try:
            async for raw in self.ws:
                now = time.monotonic()
                message = json.loads(raw)
                kind = message.get("event")
                if kind == "media":
                    payload = base64.b64decode(message["media"]["payload"])
                    self.frames.append(Played(now, payload))
                    self.playback.audio(now, self.codec.seconds(len(payload)))
                elif kind == "mark":
                    self.playback.mark(now, message["mark"]["name"])
                elif kind == "clear":
                    self.clears.append(now)
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
            await self.ws.send(self.messages.mark(name))

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

    async def wait_quiet(self, after: float, quiet_s: float, within_s: float) -> None:
        """Wait until agent audio started after `after` and then stopped for `quiet_s`."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            got = [f for f in self.frames if f.at >= after]
            if got and time.monotonic() - got[-1].at >= quiet_s:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the agent did not finish speaking within {within_s} s")


@dataclass
class TwilioLine(PhoneLine):
    messages: TwilioMessages = field(default_factory=TwilioMessages)

    @property
    def call_sid(self) -> str:
        return self.messages.call_sid

    @property
    def stream_sid(self) -> str:
        return self.messages.stream_sid

    @property
    def parameters(self) -> dict[str, str]:
        return self.messages.parameters

    @classmethod
    async def dial(cls, ws_url: str, auth_token: str | None, parameters: dict[str, str], *,
                   sock: socket.socket | None = None, **kwargs: Any) -> TwilioLine:
        """Open the media socket as Twilio does (upgrade signed over the ws URL) and send connected + start.

        `sock`: an already connected socket to speak over (e.g. one with a tiny receive buffer)."""
        headers = {"X-Twilio-Signature": twilio_sign(ws_url, {}, auth_token)} if auth_token else {}
        ws = await connect(ws_url, additional_headers=headers, compression=None, max_size=None, sock=sock)
        ids = {k: kwargs.pop(k) for k in ("call_sid", "account_sid", "stream_sid") if k in kwargs}
        line = cls(ws=ws, messages=TwilioMessages(parameters=parameters, **ids), **kwargs)
        await line.begin()
        return line


@dataclass
class TelnyxLine(PhoneLine):
    messages: TelnyxMessages = field(default_factory=TelnyxMessages)

    @property
    def call_control_id(self) -> str:
        return self.messages.call_control_id

    @property
    def stream_id(self) -> str:
        return self.messages.stream_id

    @classmethod
    async def dial(cls, ws_url: str, auth_token: str | None, call_control_id: str, parameters: dict[str, str],
                   **kwargs: Any) -> TelnyxLine:
        headers = {"x-telnyx-streaming-auth-token": auth_token} if auth_token else {}
        ws = await connect(ws_url, additional_headers=headers, compression=None, max_size=None)
        ids = {k: kwargs.pop(k) for k in ("stream_id",) if k in kwargs}
        messages = TelnyxMessages(call_control_id=call_control_id, parameters=parameters, auth_token=auth_token,
                                  codec=LineCodec(kwargs.get("encoding", "pcmu")), **ids)
        line = cls(ws=ws, messages=messages, **kwargs)
        await line.begin()
        return line
