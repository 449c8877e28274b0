"""The local engine: offline STT (Whisper tiny.en), a brain, and TTS (Piper), all on the CPU.

Models load once per process and are shared by every session; each model runs in its own small
thread pool so one call's decoding never stalls another call's audio on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence

import numpy as np

from voxgate.engines.base import AudioChunk, Engine, EngineOutput, ResponseRequest, TextDelta, ToolCall
from voxgate.engines.local.brains.base import Brain, CallTool, Say
from voxgate.engines.local.brains.flow import FlowBrain
from voxgate.engines.local.stt import WhisperTranscriber
from voxgate.engines.local.tts import PieceTiming, PiperSynthesizer, split_sentences
from voxgate.observability import metrics
from voxgate.protocol.ids import new_id

log = logging.getLogger("voxgate.local")

class LocalEngine(Engine):
    transcribes = True
    name = "local"

    def __init__(self, *, stt_threads: int = 2, stt_concurrency: int = 1, tts_concurrency: int = 1,
                 stt_model: str = "", tts_variation: bool = True, brain: Brain | None = None) -> None:
        self._tts_variation = tts_variation
        self._stt_model = stt_model  # "": the packaged tiny.en
        self._stt_threads = stt_threads
        self._stt_concurrency = stt_concurrency
        self._tts_concurrency = tts_concurrency
        self.brain: Brain = brain or FlowBrain()
        self.stt: WhisperTranscriber | None = None
        self.tts: PiperSynthesizer | None = None
        # Recent stage timings (ms), for benchmarks and the metrics below; bounded. Each stage's time split
        # into its wait for the stage's pool and its compute (the TTS first piece's also in CPU time), so
        # a slow turn shows whether it queued behind other work or ran short of cores.
        self.timings: dict[str, deque[float]] = {k: deque(maxlen=1000) for k in (
            "stt", "stt_wait", "brain", "tts_first", "tts_first_wait", "tts_first_render", "tts_first_cpu")}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self.stt, self.tts = await asyncio.gather(
            loop.run_in_executor(None, WhisperTranscriber.shared, self._stt_threads, self._stt_concurrency,
                                 self._stt_model),
            loop.run_in_executor(None, PiperSynthesizer.shared, self._tts_concurrency),
        )
        # A first decode and synthesis warm the kernels, so the first caller does not pay for it.
        assert self.stt is not None and self.tts is not None
        await loop.run_in_executor(None, self.stt.warm_up)
        async for _ in self.tts.synthesize("Ready."):
            pass
        log.info("local engine ready in %.1f s", time.monotonic() - started)

    def voices(self) -> Sequence[str]:
        return self.tts.voices() if self.tts is not None else ()

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str | None:
        assert self.stt is not None, "start() the engine first"
        if not pcm16k.size:
            return ""
        result = await self.stt.transcribe(pcm16k)
        self.timings["stt"].append(result.decode_ms)
        self.timings["stt_wait"].append(result.wait_ms)
        return result.text

    async def respond(self, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        if request.say is not None:
            async for out in self._speak(request.say, request):
                yield out
            return
        started = time.perf_counter()
        decision = self.brain.decide(request)
        brain_ms = (time.perf_counter() - started) * 1000.0
        self.timings["brain"].append(brain_ms)
        metrics.BRAIN_SECONDS.observe(brain_ms / 1000.0)
        if isinstance(decision, CallTool):
            yield ToolCall(decision.name, json.dumps(decision.arguments), new_id("call"))
            return
        assert isinstance(decision, Say)
        async for out in self._speak(decision.text, request):
            yield out

    async def _speak(self, text: str, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        """Sentence by sentence: the words of a sentence, then its audio, so the first audio leaves early."""
        if "audio" not in request.modalities:
            yield TextDelta(text)
            return
        assert self.tts is not None, "start() the engine first"
        voice = self.tts.resolve(request.voice)
        for n, sentence in enumerate(split_sentences(text)):
            yield TextDelta(sentence if n == 0 else " " + sentence)
            started = time.perf_counter()
            first = True
            async for pcm in self.tts.synthesize(sentence, voice, request.speed,
                                                 deterministic=not self._tts_variation,
                                                 on_piece=self._first_piece if n == 0 else None, urgent=n == 0):
                if first and n == 0:
                    tts_ms = (time.perf_counter() - started) * 1000.0
                    self.timings["tts_first"].append(tts_ms)
                    metrics.TTS_FIRST_CHUNK_SECONDS.observe(tts_ms / 1000.0)
                first = False
                yield AudioChunk(pcm, self.tts.sample_rate)

    def _first_piece(self, index: int, timing: PieceTiming) -> None:
        if index == 0:
            self.timings["tts_first_wait"].append(timing.wait_ms)
            self.timings["tts_first_render"].append(timing.render_ms)
            self.timings["tts_first_cpu"].append(timing.cpu_ms)
