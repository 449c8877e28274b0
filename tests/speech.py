"""Spoken audio for tests and benches, and how to score what came back.

`speak` and `silence` are the load generator's caller voice (`voxgate.loadtest.speech`, the project's
own Piper voice, deterministic and cached), named here too so tests keep one import. `wer` scores a
transcript against what was said, after normalising the differences that are not errors: case,
punctuation, "4,567" vs "four five six seven", "3.5" vs "three point five", "p.m." vs "pm".
"""

from __future__ import annotations

import re

from voxgate.loadtest.speech import silence, speak

__all__ = ["normalise", "silence", "speak", "wer"]

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


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
