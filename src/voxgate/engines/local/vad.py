"""Voice activity detection: one speech probability per short frame of 16 kHz PCM16.

`SileroStream` runs Silero VAD v6 (the copy bundled with faster-whisper) directly with onnxruntime:
`import silero_vad` would pull torch. The model is an LSTM that reads 512-sample frames (32 ms) each
prefixed with the last 64 samples of the previous frame; its `input` batch axis is the time axis, so
several frames go through in one `run` with the recurrent state (`h`, `c`, each [1, 1, 128]) carried
across them. One `InferenceSession` serves the whole process (onnxruntime's `run` is thread-safe);
each call owns a stream holding its own state, context and leftover samples.

`WebRtcStream` has the same shape over webrtcvad (30 ms frames, 0.0 or 1.0): a near-free gate for
spotting silence before paying for Silero, or a fallback.

The probabilities feed `voxgate.session.turn_detection.TurnDetector`.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort
import webrtcvad

SAMPLE_RATE = 16_000
SILERO_FRAME_SAMPLES = 512  # fixed by the model at 16 kHz
SILERO_CONTEXT_SAMPLES = 64
SILERO_FRAME_MS = SILERO_FRAME_SAMPLES * 1000 / SAMPLE_RATE  # 32.0
_STATE_SHAPE = (1, 1, 128)


def silero_model_path() -> Path:
    """The Silero VAD v6 ONNX file shipped inside the faster-whisper package."""
    path = resources.files("faster_whisper") / "assets" / "silero_vad_v6.onnx"
    return Path(str(path))


def _as_pcm16(pcm: np.ndarray) -> np.ndarray:
    if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16:
        raise TypeError(f"VAD expects a numpy int16 array, got {getattr(pcm, 'dtype', type(pcm))}")
    if pcm.ndim != 1:
        raise ValueError(f"VAD expects mono audio (1-D), got shape {pcm.shape}")
    return pcm


class SileroModel:
    """The loaded Silero network; share one per process (see `shared()`) across all calls."""

    _shared: SileroModel | None = None
    _shared_lock = threading.Lock()

    def __init__(self, path: Path | None = None) -> None:
        options = ort.SessionOptions()
        # One thread each: a frame costs ~0.1 ms, and the cores belong to Whisper and Piper.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = path or silero_model_path()
        self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "h", "c"}:
            raise RuntimeError(f"{self.path}: unexpected Silero inputs {sorted(names)}; expected input, h, c")

    @classmethod
    def shared(cls) -> SileroModel:
        """The process-wide model, loaded on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def run(self, frames: np.ndarray, h: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Probabilities for consecutive frames ([n, 64 + 512] float32 in [-1, 1]) and the next state."""
        probs, h_next, c_next = self._session.run(None, {"input": frames, "h": h, "c": c})
        return np.asarray(probs, dtype=np.float32).reshape(-1), h_next, c_next


class SileroStream:
    """Per-call Silero state: feed 16 kHz int16 audio in chunks of any size, get one probability per 32 ms."""

    frame_ms: float = SILERO_FRAME_MS

    def __init__(self, model: SileroModel) -> None:
        self._model = model
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._c = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(SILERO_CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)

    def feed(self, pcm: np.ndarray) -> list[float]:
        """Speech probabilities for every whole frame completed by `pcm`; the remainder waits for more."""
        samples = _as_pcm16(pcm).astype(np.float32) / 32768.0
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        n = samples.size // SILERO_FRAME_SAMPLES
        self._pending = samples[n * SILERO_FRAME_SAMPLES :]
        if n == 0:
            return []
        frames = samples[: n * SILERO_FRAME_SAMPLES].reshape(n, SILERO_FRAME_SAMPLES)
        # Each frame is preceded by the last 64 samples of the frame before it.
        contexts = np.empty((n, SILERO_CONTEXT_SAMPLES), dtype=np.float32)
        contexts[0] = self._context
        contexts[1:] = frames[:-1, -SILERO_CONTEXT_SAMPLES:]
        self._context = frames[-1, -SILERO_CONTEXT_SAMPLES:].copy()
        batch = np.ascontiguousarray(np.concatenate([contexts, frames], axis=1))
        probs, self._h, self._c = self._model.run(batch, self._h, self._c)
        return [float(p) for p in probs]


class WebRtcStream:
    """webrtcvad with the `SileroStream` shape: 1.0 (speech) or 0.0 per 30 ms frame of 16 kHz int16."""

    frame_ms: float = 30.0

    def __init__(self, aggressiveness: int = 2) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"webrtcvad aggressiveness must be 0..3, got {aggressiveness}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame_samples = int(SAMPLE_RATE * self.frame_ms / 1000)
        self.reset()

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.int16)

    def feed(self, pcm: np.ndarray) -> list[float]:
        samples = _as_pcm16(pcm)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        n = samples.size // self._frame_samples
        self._pending = samples[n * self._frame_samples :].copy()
        out: list[float] = []
        for i in range(n):
            frame = samples[i * self._frame_samples : (i + 1) * self._frame_samples]
            out.append(1.0 if self._vad.is_speech(frame.tobytes(), SAMPLE_RATE) else 0.0)
        return out
