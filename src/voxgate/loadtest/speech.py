"""A caller's voice: text spoken by the project's own Piper voice, for load tests, tests and benchmarks.

`speak` renders text to int16 PCM at any rate, identically on every run (the voice's random variation is
off, so runs are comparable and tests do not flake) and cached, so a sentence is synthesised once per
process; `silence` makes gaps; `Lines` holds a load test's lines, rendered before its clock starts.
Piper loads on first use: importing this module costs nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["Lines", "silence", "speak", "speech_span"]

Pcm = npt.NDArray[np.int16]
T = TypeVar("T")


@functools.lru_cache(maxsize=256)
def _speak(text: str, rate: int, speed: float) -> Pcm:
    from voxgate.audio.resample import StreamResampler
    from voxgate.engines.local.tts import PiperSynthesizer

    synthesizer = PiperSynthesizer.shared()
    # A caller says a sentence in one breath: no opening cut short, as the agent's replies are.
    chunks = synthesizer.synthesize_sync(text, speed=speed, deterministic=True, short_first=False)
    pcm = np.concatenate([np.zeros(0, np.int16), *chunks])
    if rate != synthesizer.sample_rate:
        resampler = StreamResampler(synthesizer.sample_rate, rate)
        pcm = np.concatenate([resampler.process(pcm), resampler.flush()])
    pcm.setflags(write=False)
    return pcm


def speak(text: str, rate: int = 16000, speed: float = 1.0) -> Pcm:
    """`text` spoken by the default voice as int16 mono PCM at `rate` (speed > 1 talks faster)."""
    return _speak(text, rate, float(speed)).copy()


def silence(ms: float, rate: int = 16000) -> Pcm:
    return np.zeros(round(ms * rate / 1000), dtype=np.int16)


def speech_span(pcm: Pcm, threshold: int = 300) -> Pcm:
    """`pcm` without the near-silence the voice leaves before and after the words: what a caller's
    "end of speech" is measured from. `threshold` is an absolute sample value (about -40 dBFS)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > threshold)
    if loud.size == 0:
        return pcm[:0].copy()
    return pcm[loud[0]:loud[-1] + 1].copy()


class Lines:
    """Every line a load test's callers say, rendered once up front at each rate a transport needs, and
    each transport's encoding of them made once and shared by every call."""

    def __init__(self, texts: Iterable[str], rates: Iterable[int]) -> None:
        self._pcm = {(text, rate): speech_span(speak(text, rate)) for text in texts for rate in rates}
        self._encoded: dict[tuple[str, Hashable], list[Any]] = {}

    def pcm(self, text: str, rate: int) -> Pcm:
        return self._pcm[(text, rate)]

    def encoded(self, text: str, rate: int, key: Hashable, encode: Callable[[Pcm], list[T]]) -> list[T]:
        """`encode(pcm)` of this line at `rate`, computed on first use; `key` names the encoding."""
        found = self._encoded.get((text, key))
        if found is None:
            found = self._encoded[(text, key)] = encode(self.pcm(text, rate))
        return found
