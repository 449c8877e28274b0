"""The agent's own voice in the caller's line: what caller audio can be its echo, and what cannot.

A phone's hybrid or a handset's speaker leaks the agent's audio back into the caller's microphone, some
way down (echo return loss: ~20 dB on a typical line). To a VAD that echo is speech, and while the agent
talks, 200 ms of it cut the agent off as surely as the caller did. `EchoGate` tells them apart by
loudness, as a carrier's double-talk detector does: it keeps the level of the agent's loudest 20 ms since
it began talking, and while the agent is audible a VAD frame of caller audio quieter than that level minus
`margin_db` may be echo; a louder one is the caller. Echo is a scaled, delayed copy of what the agent
said, so it never reaches the agent's loudest level minus the line's echo loss: with a margin below that
loss no echo frame passes, and a caller speaking about as loud as the agent passes at the first stressed
syllable. The turn detector starts speech only at such a frame (`TurnDetector.feed(..., loud=...)`), so
barge-in needs no long confirmation to rule the echo out.

Sans-IO: the listener feeds the agent's PCM (`agent_spoke`) and the caller's PCM at the VAD's rate
(`gate`), frame-aligned with the VAD stream it feeds the same audio to.
"""

from __future__ import annotations

import math

import numpy as np

FULL_SCALE_POWER = 32768.0 ** 2
SILENT_DB = -120.0  # the level of a frame of digital silence (its power floored, so its log exists)


def _energies(frames: np.ndarray) -> np.ndarray:
    """Sum of squares of each row of int16 samples (float32: exact enough for a level in dB, and a phone
    frame's 160-480 samples cost one small product, not a mean, a square and a log per frame)."""
    rows = frames.astype(np.float32)
    if rows.shape[0] == 1:  # the common case, a frame at a time: a dot product, no einsum parsing
        return np.array([np.dot(rows[0], rows[0])])
    return np.einsum("ij,ij->i", rows, rows)


def _level_db(energy: float, samples: int) -> float:
    """RMS level in dBFS of `samples` samples whose squares sum to `energy`."""
    power = energy / samples / FULL_SCALE_POWER
    return 10.0 * math.log10(power) if power > 1e-12 else SILENT_DB


class EchoGate:
    def __init__(self, margin_db: float | None) -> None:
        self.margin_db = margin_db  # None: no gate, every frame is the caller's
        self._frame_samples = 0
        self._pending = b""  # the start of the VAD's next frame, as int16 bytes
        self.agent_peak_db: float | None = None  # the agent's loudest 20 ms since it began talking

    def use_frames(self, frame_samples: int) -> None:
        """The VAD reads frames of this many samples from here on (its stream was reset)."""
        self._frame_samples = frame_samples
        self._pending = b""

    def agent_spoke(self, pcm: np.ndarray, rate: int) -> None:
        """Audio the agent is sending the caller (int16 at `rate`)."""
        if self.margin_db is None or not pcm.size:
            return
        block = max(rate // 50, 1)
        whole = pcm[: pcm.size - pcm.size % block] if pcm.size >= block else pcm
        width = min(block, whole.size)
        peak = _level_db(float(_energies(whole.reshape(-1, width)).max()), width)
        if self.agent_peak_db is None or peak > self.agent_peak_db:
            self.agent_peak_db = peak

    def agent_quiet(self) -> None:
        """The agent is no longer audible: no echo of it to expect."""
        self.agent_peak_db = None

    @property
    def threshold_db(self) -> float | None:
        """Caller audio below this level may be the agent's echo (None: none can be)."""
        if self.margin_db is None or self.agent_peak_db is None:
            return None
        return self.agent_peak_db - self.margin_db

    def gate(self, pcm: np.ndarray) -> list[bool] | None:
        """Advance over `pcm` (the audio the VAD is fed); for every VAD frame it completes, whether that frame
        is louder than any echo of the agent could be. None while no gate applies (the agent is silent):
        the frames are only counted then, not measured."""
        frame = self._frame_samples
        if frame <= 0:
            return None
        threshold = self.threshold_db
        # Framed as bytes, as the VAD frames it: cheaper than numpy concatenations at 20 ms a time.
        data = self._pending + pcm.tobytes()
        size = frame * 2
        n = len(data) // size
        self._pending = data[n * size:]  # the start of the VAD's next frame
        if threshold is None:
            return None
        if n == 0:
            return []
        if threshold <= SILENT_DB:
            return [True] * n
        # level >= threshold, compared as energies: one product per frame and no logarithm
        least = FULL_SCALE_POWER * frame * 10.0 ** (threshold / 10.0)
        frames = np.frombuffer(data, dtype=np.int16, count=n * frame).reshape(n, frame)
        return (_energies(frames) >= least).tolist()
