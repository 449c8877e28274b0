"""Spoken audio for tests and benches, made with the project's own Piper voice.

`speak` renders text to int16 PCM at any rate, identically on every run (the voice's random variation
is off, so tests do not flake) and cached, so a sentence is synthesised once per process;
`silence` makes gaps, and `wer` scores a transcript against what was said, after normalising the
differences that are not errors: case, punctuation, "4,567" vs "four five six seven", "3.5" vs
"three point five", "p.m." vs "pm".
"""

from __future__ import annotations

import functools
import re

import numpy as np

from voxgate.audio.resample import StreamResampler
from voxgate.engines.local.tts import PiperSynthesizer

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@functools.lru_cache(maxsize=256)
def _speak(text: str, rate: int, speed: float) -> np.ndarray:
    synthesizer = PiperSynthesizer.shared()
    chunks = synthesizer.synthesize_sync(text, speed=speed, deterministic=True)
    pcm = np.concatenate([np.zeros(0, np.int16), *chunks])
    if rate != synthesizer.sample_rate:
        resampler = StreamResampler(synthesizer.sample_rate, rate)
        pcm = np.concatenate([resampler.process(pcm), resampler.flush()])
    pcm.setflags(write=False)
    return pcm


def speak(text: str, rate: int = 16000, speed: float = 1.0) -> np.ndarray:
    """`text` spoken by the default voice as int16 mono PCM at `rate` (speed > 1 talks faster)."""
    return _speak(text, rate, float(speed)).copy()


def silence(ms: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(round(ms * rate / 1000), dtype=np.int16)


def normalise(text: str) -> list[str]:
    """Words to compare: lower case, no punctuation, every digit spelled out."""
    text = text.lower()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # 4,567 -> 4567
    text = re.sub(r"(?<=\d)\.(?=\d)", " point ", text)  # 3.5 -> 3 point 5
    text = re.sub(r"\b([ap])\.m\.?", r"\1m", text)  # p.m. -> pm
    text = re.sub(r"\d", lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text)
    return [w.strip("'") for w in text.split() if w.strip("'")]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of `hyp` against `ref` (edits / reference words; 1.0 per word for an empty ref)."""
    r, h = normalise(ref), normalise(hyp)
    if not r:
        return float(len(h))
    previous = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        current = [i]
        for j, hw in enumerate(h, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (rw != hw)))
        previous = current
    return previous[-1] / len(r)
