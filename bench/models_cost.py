"""What the local speech models cost on this machine: load time, memory, latency per unit of work.

- VAD: Silero ms per 32 ms frame, fed one frame at a time as a live call does.
- STT: Whisper tiny.en ms per utterance (after the utterance ended) and WER, over five spoken sentences.
- TTS: Piper time to the first chunk of a reply and its real-time factor, through the async API.
- Load: seconds to load each model and the process RSS after each load.

The test speech is the project's own Piper voice (tests/speech.py), so the WER is a round-trip figure.
Run from the repository root:

    .venv/bin/python -m bench.models_cost [--reps N] [--stt-threads N] [--tts-threads N]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from tests.speech import silence, speak, wer

from voxgate.engines.local.stt import WhisperTranscriber
from voxgate.engines.local.tts import PiperSynthesizer
from voxgate.engines.local.vad import SILERO_FRAME_SAMPLES, SileroModel, SileroStream

SENTENCES = [
    "I want to check the status of order number four five six seven",
    "book an appointment for tomorrow at three pm",
    "I need to talk to a human agent",
    "what time does the store open on saturday",
    "please cancel my subscription and send me a refund",
]
REPLIES = [
    "Okay.",
    "Your order 4567 shipped yesterday and should arrive on Friday.",
    "I can book that for you. Would tomorrow at three work? I will send a confirmation by text.",
]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def row(name: str, values: list[float], unit: str = "ms") -> None:
    p50, p95 = pct(values, 50), pct(values, 95)
    print(f"  {name:<34} p50 {p50:8.2f} {unit}   p95 {p95:8.2f} {unit}   n={len(values)}")


def bench_loads(stt_threads: int, tts_threads: int) -> tuple[SileroModel, WhisperTranscriber, PiperSynthesizer]:
    print(f"load (RSS at start {rss_mb():.0f} MB)")
    started = time.perf_counter()
    vad = SileroModel()
    print(f"  silero vad      {1000 * (time.perf_counter() - started):7.0f} ms   RSS {rss_mb():6.0f} MB")
    started = time.perf_counter()
    stt = WhisperTranscriber(cpu_threads=stt_threads)
    print(f"  whisper tiny.en {1000 * (time.perf_counter() - started):7.0f} ms   RSS {rss_mb():6.0f} MB")
    started = time.perf_counter()
    tts = PiperSynthesizer.shared(threads=tts_threads)  # tests.speech renders with this one too
    print(f"  piper joe       {1000 * (time.perf_counter() - started):7.0f} ms   RSS {rss_mb():6.0f} MB")
    return vad, stt, tts


def bench_vad(model: SileroModel, audio: np.ndarray) -> None:
    stream = SileroStream(model)
    times: list[float] = []
    for i in range(0, audio.size - SILERO_FRAME_SAMPLES + 1, SILERO_FRAME_SAMPLES):
        frame = audio[i : i + SILERO_FRAME_SAMPLES]
        started = time.perf_counter()
        stream.feed(frame)
        times.append(1000 * (time.perf_counter() - started))
    print("vad (Silero v6, onnxruntime, 1 thread)")
    row("per 32 ms frame", times)
    print(f"  {'share of one core per call':<34} {100 * np.mean(times) / 32:.2f} %")


def bench_stt(stt: WhisperTranscriber, reps: int) -> None:
    stt.warm_up()
    times: list[float] = []
    errors = words = 0.0
    for _ in range(reps):
        for sentence in SENTENCES:
            audio = np.concatenate([silence(300), speak(sentence), silence(300)])
            result = stt.transcribe_sync(audio)
            times.append(result.decode_ms)
            n = len(sentence.split())
            errors += wer(sentence, result.text) * n
            words += n
    audio_s = np.mean([speak(s).size / 16000 + 0.6 for s in SENTENCES])
    print(f"stt (Whisper tiny.en int8, beam 1, {reps} x {len(SENTENCES)} utterances of ~{audio_s:.1f} s)")
    row("per utterance", times)
    print(f"  {'RTF (p50)':<34} {pct(times, 50) / 1000 / audio_s:.3f}")
    print(f"  {'WER':<34} {100 * errors / words:.1f} % ({errors:.0f}/{words:.0f} words)")


async def bench_tts(tts: PiperSynthesizer, reps: int) -> None:
    first: dict[str, list[float]] = {reply: [] for reply in REPLIES}
    rtf: list[float] = []
    for _ in range(reps):
        for reply in REPLIES:
            started = time.perf_counter()
            samples = 0
            async for chunk in tts.synthesize(reply):
                if samples == 0:
                    first[reply].append(1000 * (time.perf_counter() - started))
                samples += chunk.size
            rtf.append((time.perf_counter() - started) / (samples / tts.sample_rate))
    print("tts (Piper joe medium, 22.05 kHz, async API)")
    for reply, times in first.items():
        row(f"first chunk {reply[:20]!r}", times)
    row("RTF (whole reply)", rtf, unit="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--stt-threads", type=int, default=2)
    parser.add_argument("--tts-threads", type=int, default=1)
    args = parser.parse_args()
    vad, stt, tts = bench_loads(args.stt_threads, args.tts_threads)
    speech = np.concatenate([np.concatenate([speak(s), silence(500)]) for s in SENTENCES])
    bench_vad(vad, speech)
    bench_stt(stt, args.reps)
    asyncio.run(bench_tts(tts, args.reps))
    print(f"RSS at the end {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
