"""The echo engine: plays back what the caller said, to test a line or measure the bridge alone."""

from __future__ import annotations

from collections.abc import AsyncIterator

from voxgate.engines.base import AudioChunk, Engine, EngineOutput, ResponseRequest, TextDelta

CHUNK_SAMPLES = 16000 // 5  # 200 ms at 16 kHz


class EchoEngine(Engine):
    name = "echo"

    def voices(self) -> list[str]:
        return []  # any voice name is accepted: the caller's own voice comes back

    async def respond(self, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        if request.say is not None:
            yield TextDelta(request.say)  # no synthesis here: the words are the whole reply
            return
        audio = request.user_audio
        if audio is None or not audio.size:
            yield TextDelta("")
            return
        for start in range(0, audio.size, CHUNK_SAMPLES):
            yield AudioChunk(audio[start:start + CHUNK_SAMPLES], 16000)
