"""Voice activity detection: one speech probability per short frame of 16 kHz PCM16.

`SileroStream` runs Silero VAD v6 (the copy bundled with faster-whisper) directly with onnxruntime:
`import silero_vad` would pull torch. The model is an LSTM that reads 512-sample frames (32 ms) each
prefixed with the last 64 samples of the previous frame; its `input` batch axis is the time axis, so
several frames go through in one `run` with the recurrent state (`h`, `c`, each [1, 1, 128]) carried
across them. One `InferenceSession` serves the whole process (onnxruntime's `run` is thread-safe);
each call owns a stream holding its own state, context and leftover samples.

`WebRtcStream` has the same shape over webrtcvad (30 ms frames, 0.0 or 1.0): a fallback.

`GatedVadStream` is what a call uses: Silero's frames and probabilities, but Silero only runs while
webrtcvad (C, ~2 µs a frame against Silero's ~50 µs) hears something voice-like, and for a hangover
after it. A phone line is silent most of the time (the caller listens to the agent), so most frames
cost webrtcvad alone. webrtcvad fires on a speech onset a frame or two before Silero crosses 0.5, and on
resuming Silero first re-reads the ~190 ms before it, so the onset frame is scored in context.

The probabilities feed `voxgate.session.turn_detection.TurnDetector`.
"""

from __future__ import annotations

import threading
from importlib import resources
from pathlib import Path
from typing import ClassVar

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

    _shared: ClassVar[SileroModel | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path | None = None) -> None:
        options = ort.SessionOptions()
        # One thread each: a frame costs ~0.1 ms, and the cores belong to Whisper and Piper.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.path = path or silero_model_path()
        self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        self.frames_scored = 0  # frames run through the network: what a gate in front of it saves is what this is not
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
        self.frames_scored += frames.shape[0]
        return np.asarray(probs, dtype=np.float32).reshape(-1), h_next, c_next


class SileroStream:
    """Per-call Silero state: feed 16 kHz int16 audio in chunks of any size, get one probability per 32 ms."""

    def __init__(self, model: SileroModel) -> None:
        self.frame_ms = SILERO_FRAME_MS  # set here, not as a class default: compiled, those are constants only
        self._model = model
        self.reset()

    def use_rate(self, input_rate: int) -> int:
        self.reset()
        return SAMPLE_RATE  # the bundled model reads 16 kHz only

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
    """webrtcvad with the `SileroStream` shape: 1.0 (speech) or 0.0 per 30 ms frame of int16 audio at
    16 kHz, or at 8, 32 or 48 kHz after `use_rate` (a phone line's 8 kHz is read as it comes)."""

    frame_ms: float = 30.0
    RATES = (8000, 16000, 32000, 48000)

    def __init__(self, aggressiveness: int = 2, rate: int = SAMPLE_RATE) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"webrtcvad aggressiveness must be 0..3, got {aggressiveness}")
        if rate not in self.RATES:
            raise ValueError(f"webrtcvad reads {self.RATES} Hz, not {rate}")
        self._vad = webrtcvad.Vad(aggressiveness)
        self._rate = rate
        self._frame_samples = int(rate * self.frame_ms / 1000)
        self.reset()

    def use_rate(self, input_rate: int) -> int:
        self._rate = input_rate if input_rate in self.RATES else SAMPLE_RATE
        self._frame_samples = int(self._rate * self.frame_ms / 1000)
        self.reset()
        return self._rate

    def reset(self) -> None:
        self._pending = b""  # the start of the next frame, as the bytes webrtcvad reads

    def feed(self, pcm: np.ndarray) -> list[float]:
        # Framed as bytes: a phone frame is 160-320 samples, where slicing bytes costs less than the
        # numpy concatenations and copies it would take, and webrtcvad reads bytes anyway.
        data = self._pending + _as_pcm16(pcm).tobytes()
        size = self._frame_samples * 2
        n = len(data) // size
        self._pending = data[n * size:]
        is_speech, rate = self._vad.is_speech, self._rate
        return [1.0 if is_speech(data[i * size:(i + 1) * size], rate) else 0.0 for i in range(n)]


class GatedVadStream:
    """`SileroStream`'s interface and frames, with Silero run only around what webrtcvad calls voice.

    Per 32 ms frame: webrtcvad reads its last 30 ms. Silero scores the frame when webrtcvad says voice,
    within `hangover_frames` after it said so, or while Silero's last score is still `release` or more
    (it has the last word on when speech is over). Any other frame reports 0.0 unscored: for a turn
    detector with a threshold above `release` + 0.15 that is silence either way. When Silero resumes it
    keeps its recurrent state (a fresh one moved later onsets by up to ~100 ms against a stream that
    never stopped; kept, they stay within a frame or come earlier) and first reads `preroll_frames` of
    the audio before the trigger, scores discarded, so its state has caught up with the line.

    Steady noise costs Silero nothing once webrtcvad has adapted to it (~100 ms); noise loud enough to
    keep webrtcvad voiced (a -24 dBFS hiss, a mains hum) just keeps Silero running, as ungated.
    """

    def __init__(self, model: SileroModel, *, aggressiveness: int = 2, preroll_frames: int = 6,
                 hangover_frames: int = 10, release: float = 0.1) -> None:
        self.frame_ms = SILERO_FRAME_MS
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"webrtcvad aggressiveness must be 0..3, got {aggressiveness}")
        if preroll_frames < 0 or hangover_frames < 0:
            raise ValueError("preroll_frames and hangover_frames must be >= 0")
        self._silero = SileroStream(model)
        self._aggressiveness = aggressiveness
        self._preroll_samples = preroll_frames * SILERO_FRAME_SAMPLES
        self._hangover = hangover_frames
        self._release = release
        self.reset()

    def use_rate(self, input_rate: int) -> int:
        self.reset()
        return SAMPLE_RATE  # Silero's rate; webrtcvad reads the same frames

    def reset(self) -> None:
        self._silero.reset()
        self._webrtc = webrtcvad.Vad(self._aggressiveness)  # it adapts to the line: start that over too
        self._pending = np.zeros(0, dtype=np.int16)
        self._recent = np.zeros(self._preroll_samples, dtype=np.int16)  # the audio before the next frame
        self._scoring = False  # Silero has scored every frame since it last resumed
        self._quiet = self._hangover + 1  # frames since webrtcvad last said voice
        self._last = 0.0

    def feed(self, pcm: np.ndarray) -> list[float]:
        """Speech probabilities for every whole frame completed by `pcm`; the remainder waits for more."""
        samples = _as_pcm16(pcm)
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        n = samples.size // SILERO_FRAME_SAMPLES
        self._pending = samples[n * SILERO_FRAME_SAMPLES :].copy()
        if n == 0:
            return []
        whole = samples[: n * SILERO_FRAME_SAMPLES]
        voiced = [self._webrtc.is_speech(whole[(i + 1) * SILERO_FRAME_SAMPLES - 480 : (i + 1) * SILERO_FRAME_SAMPLES]
                                         .tobytes(), SAMPLE_RATE) for i in range(n)]
        out: list[float] = []
        i = 0
        while i < n:
            self._quiet = 0 if voiced[i] else self._quiet + 1
            if not (self._quiet <= self._hangover or (self._scoring and self._last >= self._release)):
                self._scoring = False
                out.append(0.0)
                i += 1
                continue
            # Score a run at once: every frame up to where the hangover runs out needs Silero anyway.
            end = i + 1
            while end < n and (voiced[end] or self._quiet + 1 <= self._hangover):
                self._quiet = 0 if voiced[end] else self._quiet + 1
                end += 1
            out += self._score(whole, i, end)
            i = end
        if self._preroll_samples:
            self._recent = np.concatenate([self._recent, whole])[-self._preroll_samples :]
        return out

    def _score(self, whole: np.ndarray, start: int, end: int) -> list[float]:
        """Silero's probabilities for frames [start, end) of `whole`, after the preroll if it was idle."""
        frames = whole[start * SILERO_FRAME_SAMPLES : end * SILERO_FRAME_SAMPLES]
        skip = 0
        if not self._scoring:
            if self._preroll_samples:
                before = np.concatenate([self._recent, whole[: start * SILERO_FRAME_SAMPLES]])
                frames = np.concatenate([before[-self._preroll_samples :], frames])
                skip = self._preroll_samples // SILERO_FRAME_SAMPLES
            self._scoring = True
        probs = self._silero.feed(frames)[skip:]
        self._last = probs[-1]
        return probs
