"""A caller over the Realtime WebSocket (`/v1/realtime`, GA dialect), the asyncio shell of a Conversation.

It connects with the API key, sets PCM16 24 kHz both ways, and streams its microphone in real time as
`input_audio_buffer.append` (40 ms per event, silence between lines), leaving turns to the gateway's
server VAD as a live client does. `response.output_audio.delta` is agent audio (its length taken from
the base64 without decoding it); `input_audio_buffer.speech_started` is where a client stops its player,
so it is the barge-in signal. Refusals arrive as an HTTP status at the handshake or a close code.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from voxgate.loadtest.call_socket import MicrophoneLag, end_call, stream_microphone
from voxgate.loadtest.conversation import Conversation, Frame
from voxgate.loadtest.report import CallRecord
from voxgate.loadtest.speech import Lines, Pcm
from voxgate.loadtest.statistics import Ending
from voxgate.loadtest.target import Target

__all__ = ["FRAME_S", "RATE", "RealtimeCaller"]

RATE = 24000
FRAME_S = 0.04
_BYTES_PER_S = RATE * 2
OPEN_TIMEOUT_S = 15.0
_SESSION = {"type": "session.update", "session": {"type": "realtime", "audio": {
    "input": {"format": {"type": "audio/pcm", "rate": RATE}},
    "output": {"format": {"type": "audio/pcm", "rate": RATE}}}}}


def _append_events(pcm: Pcm) -> list[str]:
    """A line as the `input_audio_buffer.append` events that carry it, one per frame (the last one padded)."""
    size = round(RATE * FRAME_S)
    events = []
    for start in range(0, pcm.size, size):
        chunk = pcm[start:start + size]
        data = chunk.astype("<i2").tobytes() + b"\x00\x00" * (size - chunk.size)
        events.append(f'{{"type":"input_audio_buffer.append","audio":"{base64.b64encode(data).decode()}"}}')
    return events


_SILENCE_EVENT = _append_events(np.zeros(round(RATE * FRAME_S), np.int16))[0]


class RealtimeCaller:
    frame_s = FRAME_S

    def __init__(self, target: Target, lines: Lines, agent: str | None, lag: MicrophoneLag) -> None:
        self.target, self.lines, self.agent, self.lag = target, lines, agent, lag
        query = "model=voxgate-loadtest" + (f"&agent={agent}" if agent else "")
        self.url = f"{target.ws_url}/v1/realtime?{query}"

    def line_frames(self, text: str) -> int:
        return len(self._events(text))

    def _events(self, text: str) -> list[str]:
        return self.lines.encoded(text, RATE, "realtime", _append_events)

    async def call(self, conversation: Conversation, record: CallRecord) -> Ending:
        try:
            ws = await connect(self.url, additional_headers={"Authorization": f"Bearer {self.target.api_key}"},
                               compression=None, max_size=None, proxy=None, open_timeout=OPEN_TIMEOUT_S,
                               ping_interval=None)
        except InvalidStatus as exc:
            return Ending(http_status=exc.response.status_code)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            return Ending(error=f"connect_{type(exc).__name__}")
        created = asyncio.Event()
        reader = asyncio.create_task(self._read(ws, conversation, record, created))

        async def send(frame: Frame | None, now: float) -> None:
            await ws.send(_SILENCE_EVENT if frame is None else self._events(frame[0])[frame[1]])

        try:
            waiter = asyncio.create_task(created.wait())
            await asyncio.wait({reader, waiter}, timeout=OPEN_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if created.is_set():
                await ws.send(json.dumps(_SESSION))
                await stream_microphone(conversation, FRAME_S, send, reader.done, self.lag)
        except ConnectionClosed:
            pass
        return await end_call(ws, reader, caller_done=conversation.done,
                              never_started=None if created.is_set() else "no_session_created")

    @staticmethod
    async def _read(ws: ClientConnection, conversation: Conversation, record: CallRecord,
                    created: asyncio.Event) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                now = time.monotonic()
                try:
                    event: dict[str, Any] = json.loads(raw)
                except ValueError:
                    record.error("not_json")
                    continue
                kind = event.get("type")
                if kind == "response.output_audio.delta":
                    delta = str(event.get("delta", ""))
                    size = len(delta) * 3 // 4 - delta[-2:].count("=")
                    conversation.heard(now, size / _BYTES_PER_S)
                elif kind == "input_audio_buffer.speech_started":
                    conversation.interrupted(now)
                elif kind == "session.created":
                    created.set()
                elif kind == "error":
                    error = event.get("error")
                    record.error(str(error.get("code") if isinstance(error, dict) else "") or "error")
