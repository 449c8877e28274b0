"""Spoken audio for tests and benches, and how to score what came back.

`speak` and `silence` are the load generator's caller voice (`voxgate.loadtest.speech`, the project's
own Piper voice, deterministic and cached), named here too so tests keep one import; `key_tones` are a
phone keypad's in-band tones (DTMF). `wer` scores a
transcript against what was said, after normalising the differences that are not errors: case,
punctuation, "4,567" vs "four five six seven", "3.5" vs "three point five", "p.m." vs "pm". `utterances`
cuts a recording into its stretches of speech before it is transcribed.
"""

from __future__ import annotations

import re

import numpy as np

from voxgate.loadtest.speech import silence, speak

__all__ = ["key_tones", "normalise", "silence", "speak", "utterances", "wer"]

# A keypad key's two tones (Hz): its row's and its column's.
_ROWS = {**dict.fromkeys("123A", 697), **dict.fromkeys("456B", 770), **dict.fromkeys("789C", 852),
         **dict.fromkeys("*0#D", 941)}
_COLUMNS = {**dict.fromkeys("147*", 1209), **dict.fromkeys("2580", 1336), **dict.fromkeys("369#", 1477),
            **dict.fromkeys("ABCD", 1633)}
_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def utterances(pcm: np.ndarray, rate: int, gap_ms: int = 600, floor: int = 300) -> list[np.ndarray]:
    """The stretches of speech in a recording: runs of samples louder than `floor` that no silence of
    `gap_ms` or more interrupts, each with `gap_ms / 2` of its silence either side. Transcribe them one
    by one: given a recording with pauses in it, Whisper tiny stops at the first (a greeting, a pause,
    then the answer came back as "Hello.")."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > floor)
    if loud.size == 0:
        return []
    gap = rate * gap_ms // 1000
    breaks = np.flatnonzero(np.diff(loud) > gap)
    starts = [int(loud[0]), *(int(loud[b + 1]) for b in breaks)]
    ends = [*(int(loud[b]) for b in breaks), int(loud[-1])]
    return [pcm[max(0, a - gap // 2):b + gap // 2] for a, b in zip(starts, ends, strict=True)]


def key_tones(keys: str, rate: int, dbfs: float, tone_ms: int = 100, gap_ms: int = 300) -> np.ndarray:
    """The in-band tones of `keys` pressed one after another, as a handset puts them on the line: each key's
    two sines for `tone_ms`, then `gap_ms` of silence, at `dbfs` RMS (int16 at `rate`)."""
    t = np.arange(rate * tone_ms // 1000) / rate
    pieces = []
    for key in keys:
        tone = np.sin(2 * np.pi * _ROWS[key] * t) + np.sin(2 * np.pi * _COLUMNS[key] * t)  # RMS 1
        pieces += [tone * 32768 * 10 ** (dbfs / 20), np.zeros(rate * gap_ms // 1000)]
    return np.concatenate(pieces).astype(np.int16) if pieces else np.zeros(0, np.int16)


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
