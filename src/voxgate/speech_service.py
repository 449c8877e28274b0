"""voxgate as a speech service: OpenAI's `/v1/audio/transcriptions` and `/v1/audio/speech` over the
gateway's own local models (Whisper through faster-whisper, Piper voices), with an API key.

So one voxgate can be another's STT and TTS (a cascade engine's services), any OpenAI SDK can use it by
its base URL, and tests need no stand-ins. The same bodies, answers and errors as OpenAI's where the
local models can honour them; where they cannot, a clear 400 naming the parameter:

- transcriptions: multipart `file` (any container FFmpeg reads) and `model` (any name: there is one
  model), optional `language` (English only: the model is English-only), `prompt` and `temperature`
  (accepted, unused), `response_format` `json` | `text` | `verbose_json`. Uploads up to
  `speech_max_upload_bytes` (25 MiB, OpenAI's limit) and `speech_max_audio_s` of audio.
- speech: JSON `model`, `input` (at most 4096 characters), `voice` (an installed voice or an OpenAI name,
  which speaks with the default voice), `response_format` `mp3` (default) | `opus` | `aac` | `flac` |
  `wav` | `pcm` (24 kHz 16-bit little-endian mono, streamed sentence by sentence as it is synthesised),
  `speed` 0.25-4, `instructions` (accepted, unused: Piper voices take no style prompt).

The models run in their own thread pools (`stt_max_concurrency`, `tts_max_concurrency`); requests beyond
`speech_max_waiting` waiting for them get 503 with `Retry-After`, so a flood of uploads costs calls
nothing but a queue slot. Decoding and encoding run off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from voxgate.audio.containers import SPEECH_FORMATS, AudioFileError, SpeechStream, decode_file, encode_speech
from voxgate.config import Settings
from voxgate.control.auth import require_api_key
from voxgate.control.problems import problem
from voxgate.engines.local.stt import WhisperTranscriber
from voxgate.engines.local.tts import MAX_SPEED, MIN_SPEED, PiperSynthesizer, UnknownVoice
from voxgate.gateway import gateway_of
from voxgate.observability import metrics

__all__ = ["SpeechService", "speech", "transcriptions"]

MAX_INPUT_CHARS = 4096  # OpenAI's limit on `input`
TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json")
RETRY_AFTER_S = 2


class Busy(Exception):
    """More requests are waiting for a model than `speech_max_waiting`."""


class SpeechService:
    """The models and the waiting room behind the two routes (one per gateway)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._waiting = 0
        self._lock = asyncio.Lock()
        self._stt: WhisperTranscriber | None = None
        self._tts: PiperSynthesizer | None = None

    @property
    def full(self) -> bool:
        return self._waiting >= self.settings.speech_max_waiting

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """A place in the queue for the models, or Busy."""
        if self.full:
            raise Busy
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def transcriber(self) -> WhisperTranscriber:
        if self._stt is None:
            async with self._lock:  # the first request loads the model once, off the loop
                if self._stt is None:
                    s = self.settings
                    self._stt = await asyncio.get_running_loop().run_in_executor(
                        None, WhisperTranscriber.shared, s.stt_threads, s.stt_max_concurrency, s.stt_model)
        return self._stt

    async def synthesizer(self) -> PiperSynthesizer:
        if self._tts is None:
            async with self._lock:
                if self._tts is None:
                    self._tts = await asyncio.get_running_loop().run_in_executor(
                        None, PiperSynthesizer.shared, self.settings.tts_max_concurrency)
        return self._tts


def service_of(request: Request) -> SpeechService:
    service: SpeechService | None = getattr(request.app.state, "speech_service", None)
    if service is None:
        service = request.app.state.speech_service = SpeechService(gateway_of(request).settings)
    return service


def _busy() -> JSONResponse:
    metrics.SPEECH_REQUESTS.labels("busy").inc()
    return problem(503, "speech_service_busy", "Too many speech requests are waiting; try again shortly.",
                   headers={"Retry-After": str(RETRY_AFTER_S)})


async def transcriptions(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    service = service_of(request)
    limit = service.settings.speech_max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is None:
        return problem(411, "length_required", "Send the upload with a Content-Length.")
    if not declared.isdigit() or int(declared) > limit:
        return problem(413, "file_too_large", f"Uploads are limited to {limit} bytes.", param="file")
    if service.full:  # before reading 25 MB that would only wait
        return _busy()
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return problem(400, "invalid_request", "Send the audio as multipart/form-data with a `file` part.")
    try:
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            fields = {name: value for name, value in form.items() if isinstance(value, str)}
            data = await upload.read() if isinstance(upload, UploadFile) else None
    except Exception as exc:  # the multipart parser's errors: a body that is not the form it says it is
        return problem(400, "invalid_request", f"The form could not be read: {exc}")
    refusal = _transcription_params(fields, data)
    if refusal is not None:
        return refusal
    assert data is not None
    try:
        with service.turn():
            loop = asyncio.get_running_loop()
            pcm = await loop.run_in_executor(None, lambda: decode_file(
                data, rate=16_000, max_seconds=service.settings.speech_max_audio_s))
            result = await (await service.transcriber()).transcribe(pcm)
    except Busy:
        return _busy()
    except AudioFileError as exc:
        metrics.SPEECH_REQUESTS.labels("bad_audio").inc()
        return problem(400, "invalid_audio", f"The audio could not be used: {exc}", param="file")
    metrics.SPEECH_REQUESTS.labels("transcribed").inc()
    response_format = fields.get("response_format", "json")
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format == "verbose_json":
        return JSONResponse({"task": "transcribe", "language": "english", "duration": pcm.size / 16_000,
                             "text": result.text})
    return JSONResponse({"text": result.text})


def _transcription_params(fields: dict[str, str], data: bytes | None) -> JSONResponse | None:
    if data is None:
        return problem(400, "missing_required_parameter", "`file` is required: the audio to transcribe.",
                       param="file")
    if not fields.get("model"):
        return problem(400, "missing_required_parameter", "`model` is required.", param="model")
    if fields.get("response_format", "json") not in TRANSCRIPTION_FORMATS:
        return problem(400, "unsupported_value", "`response_format` must be one of "
                       + ", ".join(TRANSCRIPTION_FORMATS) + ".", param="response_format")
    language = fields.get("language", "en").lower()
    if language not in ("en", "english") and not language.startswith("en-"):
        return problem(400, "unsupported_language", "Only English is transcribed (the local model is "
                       "English-only).", param="language")
    return None


async def speech(request: Request) -> Response:
    principal = await require_api_key(request)
    if isinstance(principal, JSONResponse):
        return principal
    service = service_of(request)
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return problem(400, "invalid_json", "The body must be a JSON object.")
    if not isinstance(body, dict):
        return problem(400, "invalid_json", "The body must be a JSON object.")
    checked = await _speech_params(body, service)
    if isinstance(checked, JSONResponse):
        return checked
    text, voice, speed, speech_format = checked
    tts = await service.synthesizer()
    if speech_format.name == "pcm":
        return await _stream_pcm(service, tts, text, voice, speed)
    try:
        with service.turn():
            chunks = [chunk async for chunk in tts.synthesize(
                text, voice, speed, deterministic=not service.settings.tts_variation)]
            pcm = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
            audio = await asyncio.get_running_loop().run_in_executor(
                None, encode_speech, pcm, tts.sample_rate, speech_format)
    except Busy:
        return _busy()
    metrics.SPEECH_REQUESTS.labels("spoken").inc()
    return Response(audio, media_type=speech_format.content_type)


async def _speech_params(body: dict[str, Any], service: SpeechService) -> JSONResponse | tuple[str, str, float, Any]:
    if not isinstance(body.get("model"), str) or not body["model"]:
        return problem(400, "missing_required_parameter", "`model` is required.", param="model")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        return problem(400, "missing_required_parameter", "`input` is required: the text to speak.", param="input")
    if len(text) > MAX_INPUT_CHARS:
        return problem(400, "string_above_max_length", f"`input` is limited to {MAX_INPUT_CHARS} characters.",
                       param="input")
    voice = body.get("voice")
    if isinstance(voice, dict):  # the newer SDKs' custom-voice shape: {"id": "..."}
        voice = voice.get("id")
    if not isinstance(voice, str) or not voice:
        return problem(400, "missing_required_parameter", "`voice` is required.", param="voice")
    try:
        (await service.synthesizer()).resolve(voice)
    except UnknownVoice as exc:
        return problem(400, "invalid_value", str(exc), param="voice")
    speed = body.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, int | float) or not MIN_SPEED <= speed <= MAX_SPEED:
        return problem(400, "invalid_value", f"`speed` must be a number from {MIN_SPEED} to {MAX_SPEED}.",
                       param="speed")
    name = body.get("response_format", "mp3")
    speech_format = SPEECH_FORMATS.get(name) if isinstance(name, str) else None
    if speech_format is None:
        return problem(400, "unsupported_value", "`response_format` must be one of "
                       + ", ".join(SPEECH_FORMATS) + ".", param="response_format")
    if body.get("stream_format", "audio") != "audio":
        return problem(400, "unsupported_value", "Only `stream_format: audio` is served.", param="stream_format")
    return text, voice, float(speed), speech_format


async def _stream_pcm(service: SpeechService, tts: PiperSynthesizer, text: str, voice: str,
                      speed: float) -> Response:
    """`pcm`: each sentence goes out as soon as it is synthesised (the first within a sentence's time)."""
    if service.full:
        return _busy()

    async def chunks() -> AsyncIterator[bytes]:
        with service.turn():  # taken once the answer starts: a client gone before then holds no place
            stream = SpeechStream(tts.sample_rate)
            async for chunk in tts.synthesize(text, voice, speed, deterministic=not service.settings.tts_variation):
                yield stream.feed(chunk)
            yield stream.flush()
        metrics.SPEECH_REQUESTS.labels("spoken").inc()

    return StreamingResponse(chunks(), media_type=SPEECH_FORMATS["pcm"].content_type)
