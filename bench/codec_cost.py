"""CPU cost of the per-frame audio work: G.711 and streaming resampling, µs per 20 ms frame.

Each path runs over a few thousand consecutive 20 ms frames of a speech-band signal, timed frame by
frame, and prints p50/p95/mean and the share of one core a call spends on it (mean / 20 ms). Run:

    .venv/bin/python bench/codec_cost.py [--frames N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from voxgate.audio import g711
from voxgate.audio.resample import StreamResampler

FRAME_MS = 20


def test_signal(rate: int, frames: int) -> np.ndarray:
    """Noise plus harmonics: something that exercises every code and filter path like speech does."""
    n = rate * FRAME_MS // 1000 * frames
    t = np.arange(n) / rate
    rng = np.random.default_rng(1)
    x = sum(3000 / k * np.sin(2 * np.pi * 150 * k * t) for k in range(1, 20)) + rng.normal(0, 800, n)
    return np.clip(x, -32768, 32767).astype(np.int16)


def frames_of(signal: np.ndarray | bytes, size: int) -> list:
    return [signal[i : i + size] for i in range(0, len(signal) - size + 1, size)]


def measure(step: Callable[[object], object], frames: list) -> tuple[float, float, float]:
    for frame in frames[:50]:  # warm caches and filter state
        step(frame)
    costs = np.empty(len(frames))
    clock = time.perf_counter_ns
    for i, frame in enumerate(frames):
        start = clock()
        step(frame)
        costs[i] = clock() - start
    p50, p95 = np.percentile(costs, [50, 95]) / 1000
    return float(p50), float(p95), float(costs.mean()) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5000)
    args = parser.parse_args()
    n = args.frames

    pcm8k = test_signal(8000, n)
    ulaw = g711.ulaw_encode(pcm8k)
    alaw = g711.alaw_encode(pcm8k)
    rows: list[tuple[str, float, float, float]] = []

    def row(name: str, step: Callable[[object], object], frames: list) -> None:
        rows.append((name, *measure(step, frames)))

    row("ulaw encode 8k", g711.ulaw_encode, frames_of(pcm8k, 160))  # type: ignore[arg-type]
    row("ulaw decode 8k", g711.ulaw_decode, frames_of(ulaw, 160))  # type: ignore[arg-type]
    row("alaw encode 8k", g711.alaw_encode, frames_of(pcm8k, 160))  # type: ignore[arg-type]
    row("alaw decode 8k", g711.alaw_decode, frames_of(alaw, 160))  # type: ignore[arg-type]

    pairs = [
        (8000, 16000),
        (16000, 8000),
        (8000, 24000),
        (24000, 8000),
        (16000, 24000),
        (24000, 16000),
        (22050, 24000),
        (22050, 8000),
        (48000, 16000),
        (16000, 48000),
        (48000, 24000),
        (24000, 48000),
    ]
    for quality in ("low-latency", "QQ", "LQ", "HQ"):
        for in_rate, out_rate in pairs:
            if quality != "low-latency" and (in_rate, out_rate) not in ((8000, 24000), (24000, 8000)):
                continue
            resampler = StreamResampler(in_rate, out_rate, quality)  # type: ignore[arg-type]
            source = test_signal(in_rate, n)
            row(
                f"resample {in_rate}->{out_rate} {quality}",
                resampler.process,  # type: ignore[arg-type]
                frames_of(source, in_rate * FRAME_MS // 1000),
            )

    # The carrier bridge's whole per-frame job: µ-law in -> 24 kHz for the engine, 24 kHz back -> µ-law.
    up, down = StreamResampler(8000, 24000), StreamResampler(24000, 8000)

    def bridge(frame: object) -> object:
        return g711.ulaw_encode(down.process(up.process(g711.ulaw_decode(frame))))  # type: ignore[arg-type]

    row("bridge ulaw->24k->ulaw", bridge, frames_of(ulaw, 160))

    # Mean, not p50, gives the core share: soxr's filtered qualities do all their work on one frame in
    # two or three (they compute in blocks), so their p50 understates them.
    print(f"{'path':34} {'p50 µs':>8} {'p95 µs':>8} {'mean µs':>8} {'core % per call':>16}")
    for name, p50, p95, mean in rows:
        print(f"{name:34} {p50:8.1f} {p95:8.1f} {mean:8.1f} {100 * mean / (FRAME_MS * 1000):15.3f}%")


if __name__ == "__main__":
    main()
