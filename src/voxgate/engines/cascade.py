"""The cascade engine: speech to text, an LLM and text to speech, each the in-process local model or any
OpenAI-compatible HTTP service the operator runs (vLLM, llama.cpp server, Ollama, speaches, OpenAI, or
another voxgate, which serves all three).

    caller's turn ── STT ─────────────► text ── /v1/chat/completions (stream) ──► tokens
     (16 kHz)        local Whisper, or          instructions + conversation + tools     │
                     /v1/audio/transcriptions                                           ▼
                                                            sentences ── TTS ──► audio, sentence by sentence
                                                            tool calls ──► the session (gateway tools run
                                                                           validated and redacted; client
                                                                           tools go to the client)

The LLM's tokens become speech a sentence at a time, so the first audio leaves after the first sentence,
not the whole reply. A barge-in cancels the response: the streams to the LLM and the TTS service close at
once, and the session truncates the item at what the caller heard, so the next request's history holds
only that. A service that refuses or fails before anything was said is retried (`cascade_max_retries`);
after that, or mid-reply, the engine raises `EngineError` and the session reports it (on a call the
gateway plays out, the agent's apology follows in the local voice, then the escalation).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import wave
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import numpy as np

from voxgate.config import Settings
from voxgate.engines.base import AudioChunk, Engine, EngineError, EngineOutput, ResponseRequest, TextDelta, ToolCall
from voxgate.engines.chat_completions import (
    ChatStream,
    ChatStreamError,
    ContentDelta,
    Sentences,
    StreamDone,
    ToolCallDone,
    chat_messages,
    chat_tool_choice,
    chat_tools,
)
from voxgate.observability import metrics
from voxgate.protocol.ids import new_id

__all__ = ["CascadeEngine"]

log = logging.getLogger("voxgate.engines.cascade")

SPEECH_RATE = 24_000  # OpenAI's `pcm`: 24 kHz 16-bit little-endian mono
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


class CascadeEngine(Engine):
    name = "cascade"
    transcribes = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.llm_url = settings.cascade_llm_base_url.rstrip("/")
        self.stt_url = settings.cascade_stt_base_url.rstrip("/")
        self.tts_url = settings.cascade_tts_base_url.rstrip("/")
        if not self.llm_url:
            raise ValueError("the cascade engine needs cascade_llm_base_url (an OpenAI-compatible /v1 URL)")
        self._client: httpx.AsyncClient | None = None
        self._stt: Any = None  # the local WhisperTranscriber when no STT service is set
        self._tts: Any = None  # the local PiperSynthesizer when no TTS service is set
        # Recent stage timings (ms), for benchmarks; bounded as the local engine's (a gateway runs for months).
        self.timings: dict[str, deque[float]] = {k: deque(maxlen=1000) for k in ("stt", "llm_first_token", "tts_first")}

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        timeout = httpx.Timeout(s.cascade_timeout_s, connect=s.cascade_connect_timeout_s)
        self._client = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256,
                                                                              max_keepalive_connections=64))
        loop = asyncio.get_running_loop()
        if not self.stt_url:
            from voxgate.engines.local.stt import WhisperTranscriber

            self._stt = await loop.run_in_executor(None, WhisperTranscriber.shared, s.stt_threads,
                                                   s.stt_max_concurrency, s.stt_model)
        if not self.tts_url:
            from voxgate.engines.local.tts import PiperSynthesizer

            self._tts = await loop.run_in_executor(None, PiperSynthesizer.shared, s.tts_max_concurrency)
        log.info("cascade engine: STT %s, LLM %s (%s), TTS %s", self.stt_url or "local Whisper", self.llm_url,
                 s.cascade_llm_model or "the server's default model", self.tts_url or "local Piper")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def voices(self) -> Sequence[str]:
        return self._tts.voices() if self._tts is not None else ()  # a TTS service's voices are its own

    # -- speech to text ----------------------------------------------------------------------------

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str | None:
        if not pcm16k.size:
            return ""
        started = time.perf_counter()
        if self._stt is not None:
            text: str = (await self._stt.transcribe(pcm16k)).text
        else:
            text = await self._transcribe_remote(pcm16k)
        self.timings["stt"].append((time.perf_counter() - started) * 1000.0)
        return text

    async def _transcribe_remote(self, pcm16k: np.ndarray) -> str:
        wav = io.BytesIO()
        with wave.open(wav, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16_000)
            out.writeframes(pcm16k.astype("<i2", copy=False).tobytes())
        s = self.settings
        try:
            reply = await self._http.post(
                f"{self.stt_url}/audio/transcriptions", headers=_auth(s.cascade_stt_api_key.get_secret_value()),
                data={"model": s.cascade_stt_model, "response_format": "json", "language": "en"},
                files={"file": ("turn.wav", wav.getvalue(), "audio/wav")})
        except httpx.HTTPError as exc:
            raise EngineError(f"the STT service failed: {type(exc).__name__}") from exc
        if reply.status_code != 200:
            raise EngineError(f"the STT service answered {reply.status_code}")
        try:
            return str(reply.json()["text"]).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise EngineError("the STT service's answer has no text") from exc

    # -- the reply ---------------------------------------------------------------------------------

    async def respond(self, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        if request.say is not None:
            async for out in self._speak(request.say, request, first=True):
                yield out
            return
        sentences = Sentences()
        spoken_any = False
        calls: list[ToolCall] = []
        async for event in self._chat(request):
            if isinstance(event, ContentDelta):
                if "audio" not in request.modalities:
                    yield TextDelta(event.text)
                    spoken_any = True
                    continue
                for sentence in sentences.feed(event.text):
                    async for out in self._speak(sentence, request, first=not spoken_any):
                        yield out
                    spoken_any = True
            elif isinstance(event, ToolCallDone):
                calls.append(ToolCall(event.name, event.arguments, event.call_id or new_id("call")))
            elif isinstance(event, StreamDone):
                for sentence in sentences.flush():
                    async for out in self._speak(sentence, request, first=not spoken_any):
                        yield out
                    spoken_any = True
        for call in calls:
            yield call

    async def _chat(self, request: ResponseRequest) -> AsyncIterator[ContentDelta | ToolCallDone | StreamDone]:
        """The LLM's streamed answer as events; retried while nothing has come back yet."""
        s = self.settings
        body: dict[str, Any] = {"messages": chat_messages(request.instructions, request.history), "stream": True}
        if s.cascade_llm_model:
            body["model"] = s.cascade_llm_model
        body["temperature"] = request.temperature
        if s.cascade_llm_seed is not None:
            body["seed"] = s.cascade_llm_seed
        if request.zero_retention:  # OpenAI keeps no stored completion (Chat Completions' `store`)
            body["store"] = False
        if request.max_output_tokens is not None:
            body["max_tokens"] = request.max_output_tokens
        if request.tools and request.tool_choice != "none":
            body["tools"] = chat_tools(request.tools)
            body["tool_choice"] = chat_tool_choice(request.tool_choice)
        headers = _auth(s.cascade_llm_api_key.get_secret_value())
        started = time.perf_counter()
        for attempt in range(s.cascade_max_retries + 1):
            got_any = False
            try:
                async with self._http.stream("POST", f"{self.llm_url}/chat/completions", json=body,
                                             headers=headers) as reply:
                    if reply.status_code != 200:
                        detail = (await reply.aread())[:200].decode("utf-8", "replace")
                        if reply.status_code in RETRY_STATUSES and attempt < s.cascade_max_retries:
                            log.warning("LLM service answered %d; retrying", reply.status_code)
                            await asyncio.sleep(0.2 * 2 ** attempt)
                            continue
                        raise EngineError(f"the LLM service answered {reply.status_code}: {detail}")
                    stream = ChatStream()
                    async for chunk in reply.aiter_raw():
                        for event in stream.feed(chunk):
                            if not got_any:
                                got_any = True
                                first_ms = (time.perf_counter() - started) * 1000.0
                                self.timings["llm_first_token"].append(first_ms)
                                metrics.CASCADE_LLM_FIRST_TOKEN_SECONDS.observe(first_ms / 1000.0)
                            yield event
                        if stream.done:
                            return
                    for event in stream.close():
                        yield event
                    return
            except ChatStreamError as exc:
                raise EngineError(f"the LLM service's stream broke: {exc}") from exc
            except httpx.HTTPError as exc:
                if got_any or attempt >= s.cascade_max_retries:
                    raise EngineError(f"the LLM service failed: {type(exc).__name__}") from exc
                log.warning("LLM service failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(0.2 * 2 ** attempt)

    # -- text to speech ----------------------------------------------------------------------------

    async def _speak(self, text: str, request: ResponseRequest, first: bool) -> AsyncIterator[EngineOutput]:
        """One sentence: its words, then its audio as it is synthesised."""
        yield TextDelta(text if first else " " + text)
        if "audio" not in request.modalities:
            return
        started = time.perf_counter()
        timed = False
        async for pcm, rate in self._synthesize(text, request):
            if not timed and first:
                self.timings["tts_first"].append((time.perf_counter() - started) * 1000.0)
                timed = True
            yield AudioChunk(pcm, rate)

    async def _synthesize(self, text: str, request: ResponseRequest) -> AsyncIterator[tuple[np.ndarray, int]]:
        if self._tts is not None:
            voice = self._tts.resolve(request.voice)
            async for pcm in self._tts.synthesize(text, voice, request.speed,
                                                  deterministic=not self.settings.tts_variation):
                yield pcm, self._tts.sample_rate
            return
        s = self.settings
        body = {"model": s.cascade_tts_model, "input": text, "voice": request.voice or "alloy",
                "response_format": "pcm", "speed": request.speed}
        odd = b""
        try:
            async with self._http.stream("POST", f"{self.tts_url}/audio/speech", json=body,
                                         headers=_auth(s.cascade_tts_api_key.get_secret_value())) as reply:
                if reply.status_code != 200:
                    detail = (await reply.aread())[:200].decode("utf-8", "replace")
                    raise EngineError(f"the TTS service answered {reply.status_code}: {detail}")
                async for chunk in reply.aiter_bytes():
                    data = odd + chunk
                    whole = len(data) - len(data) % 2
                    odd = data[whole:]
                    if whole:
                        yield np.frombuffer(data[:whole], dtype="<i2").astype(np.int16), SPEECH_RATE
        except httpx.HTTPError as exc:
            raise EngineError(f"the TTS service failed: {type(exc).__name__}") from exc

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EngineError("the cascade engine was not started")
        return self._client


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}

