"""The echo engine: plays back what the caller said, to test a line or measure the bridge alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voxgate.audio.formats import InputDecoder
from voxgate.engines.base import AudioChunk, Engine, EngineOutput, ResponseRequest, TextDelta

CHUNK_MS = 200


class EchoEngine(Engine):
    name = "echo"

    def voices(self) -> list[str]:
        return []  # any voice name is accepted: the caller's own voice comes back

    async def respond(self, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        if request.say is not None:
            yield TextDelta(request.say)  # no synthesis here: the words are the whole reply
            return
        wire, fmt = request.user_audio_wire, request.user_audio_format
        if not wire or fmt is None:
            yield TextDelta("")
            return
        # At the rate it was heard: a phone caller's 8 kHz comes back without a round trip through 16 kHz.
        audio = InputDecoder(fmt, fmt.rate).decode(wire)
        chunk = fmt.rate * CHUNK_MS // 1000
        for start in range(0, audio.size, chunk):
            yield AudioChunk(audio[start:start + chunk], fmt.rate)
