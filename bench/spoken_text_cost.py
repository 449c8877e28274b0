"""What reading ids as a person does costs the local voice: the acme demo's replies that carry ids, the
first piece of each (the one a caller waits for) rendered as written and as spoken text, in thread CPU.

espeak-ng reads "4567" as "four thousand five hundred sixty-seven"; spoken text reads "4 5 6 7" (and
"3FA9C2" letter by letter, "15:00" as "3 PM"). Each first piece renders `--reps` times per reading,
deterministically (the same audio every time), one at a time in this thread, through Piper's own API.

    .venv/bin/python bench/spoken_text_cost.py [--reps 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from examples.tools.acme import AcmeStore

from voxgate.agents import load_agent
from voxgate.engines.local.brains.flow import render
from voxgate.engines.local.spoken_text import spoken_text
from voxgate.engines.local.tts import DEFAULT_VOICE, installed_voices, split_sentences

ACME = Path(__file__).resolve().parents[1] / "examples" / "agents" / "acme.yaml"
NOW = datetime(2026, 3, 10, 11, 0)  # a Tuesday morning: every demo order has a spoken delivery day


def acme_replies() -> list[str]:
    """What the demo agent says after its tools run, where the line carries an id."""
    agent = load_agent(ACME)
    lookup, book, pay = (agent.tool(name) for name in ("lookup_order", "book_appointment", "pay_invoice"))
    assert lookup and lookup.say and lookup.say_error and book and book.say and pay and pay.say
    with tempfile.TemporaryDirectory() as tmp:
        store = AcmeStore(Path(tmp) / "acme.db", now=lambda: NOW)
        replies = [render(lookup.say, store.lookup_order(order)) for order in
                   ("4567", "1234", "9876", "3141", "55501", "202501")]
        replies.append(render(lookup.say_error, store.lookup_order("8642")))
        replies.append(render(book.say, store.book_appointment("2026-03-12", "15:00")))
    replies.append(render(pay.say, {"card_last4": "4242", "confirmation": "3FA9C2"}))
    return [r for r in replies if r]


def synthesized(voice: object, text: str, config: object) -> tuple[float, float]:
    """Thread CPU ms to render `text`, and the seconds of audio it makes (what the CPU time follows)."""
    started = time.thread_time()
    chunks = list(voice.synthesize(text, config))  # type: ignore[attr-defined]
    cpu = (time.thread_time() - started) * 1000.0
    return cpu, sum(c.audio_int16_array.size / c.sample_rate for c in chunks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    from piper import PiperVoice, SynthesisConfig

    files = installed_voices()[DEFAULT_VOICE]
    voice = PiperVoice.load(files.model, files.config)
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    synthesized(voice, "Ready.", config)  # warm the kernels
    cpu: dict[str, list[float]] = {"as written": [], "spoken": []}
    audio: dict[str, list[float]] = {"as written": [], "spoken": []}
    print(f"voxgate spoken text — acme replies with ids, first piece: thread CPU ms (median of {args.reps}) "
          "and seconds of audio")
    print(f"  {'as written':>14} {'spoken':>14}  first piece (as written -> as spoken)")
    for reply in acme_replies():
        piece = split_sentences(reply)[0]
        said = split_sentences(spoken_text(piece))[0]
        row = []
        for name, text in (("as written", piece), ("spoken", said)):
            runs = [synthesized(voice, text, config) for _ in range(args.reps)]
            cpu[name] += [c for c, _ in runs]
            audio[name].append(runs[0][1])
            row.append(f"{np.median([c for c, _ in runs]):6.0f} {runs[0][1]:5.2f} s")
        print(f"  {row[0]:>14} {row[1]:>14}  {piece!r} -> {said!r}")
    for name in cpu:
        print(f"  {name:<10} CPU p50 {np.percentile(cpu[name], 50):5.0f} ms  p95 {np.percentile(cpu[name], 95):5.0f} ms"
              f"  (n={len(cpu[name])});  audio p50 {np.percentile(audio[name], 50):4.2f} s"
              f"  p95 {np.percentile(audio[name], 95):4.2f} s")

if __name__ == "__main__":
    main()
