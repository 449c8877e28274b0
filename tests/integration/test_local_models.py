"""The real offline speech models: Piper -> Whisper round trips, Silero + TurnDetector on real speech."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.speech import silence, speak, wer
from voxgate.audio.resample import StreamResampler
from voxgate.engines.local.priority_pool import LATER
from voxgate.engines.local.stt import Transcription, WhisperTranscriber
from voxgate.engines.local.tts import OPENAI_VOICES, PieceTiming, PiperSynthesizer, UnknownVoice, split_sentences
from voxgate.engines.local.vad import SILERO_FRAME_MS, SileroModel, SileroStream, WebRtcStream
from voxgate.session.turn_detection import SpeechStarted, SpeechStopped, TurnDetectionConfig, TurnDetector

SENTENCES = [
    "what is the status of order four five six seven",
    "I need to talk to a human agent",
    "book an appointment for tomorrow at three pm",
    "please cancel my subscription and send me a refund",
]


@pytest.fixture(scope="module")
def stt() -> WhisperTranscriber:
    return WhisperTranscriber.shared()


@pytest.fixture(scope="module")
def tts() -> PiperSynthesizer:
    return PiperSynthesizer.shared()


@pytest.fixture(scope="module")
def silero() -> SileroModel:
    return SileroModel.shared()


def chunks(pcm: np.ndarray, size: int) -> list[np.ndarray]:
    return [pcm[i : i + size] for i in range(0, pcm.size, size)]


# --- STT ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sentence", SENTENCES)
def test_tts_to_stt_round_trip(stt: WhisperTranscriber, sentence: str) -> None:
    audio = np.concatenate([silence(300), speak(sentence), silence(300)])  # as a turn arrives: padded
    result = stt.transcribe_sync(audio)
    assert wer(sentence, result.text) <= 0.15, result.text
    assert result.audio_ms == pytest.approx(audio.size / 16)
    assert result.decode_ms > 0


async def test_async_transcribe_runs_off_the_loop(stt: WhisperTranscriber) -> None:
    audio = speak(SENTENCES[0])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    first, second = await asyncio.gather(stt.transcribe(audio), stt.transcribe(speak(SENTENCES[1])))
    task.cancel()
    assert wer(SENTENCES[0], first.text) <= 0.15 and wer(SENTENCES[1], second.text) <= 0.15
    assert ticks >= 5  # the loop kept running while Whisper decoded


def test_silence_and_noise_transcribe_to_nothing(stt: WhisperTranscriber) -> None:
    rng = np.random.default_rng(7)
    assert stt.transcribe_sync(silence(1500)) == Transcription(text="", audio_ms=1500.0, decode_ms=0.0)
    assert stt.transcribe_sync(np.zeros(0, np.int16)).text == ""
    hiss = (rng.standard_normal(32000) * 300).astype(np.int16)  # about -40 dBFS: passes the energy gate
    assert stt.transcribe_sync(hiss).text == ""
    hum = (2000 * np.sin(2 * np.pi * 120 * np.arange(32000) / 16000)).astype(np.int16)
    assert stt.transcribe_sync(hum).text == ""


@pytest.mark.parametrize("reply", ["Thank you.", "Yes."])
def test_short_real_replies_survive_the_hallucination_guard(stt: WhisperTranscriber, reply: str) -> None:
    audio = np.concatenate([silence(300), speak(reply), silence(300)])
    assert wer(reply, stt.transcribe_sync(audio).text) == 0


async def test_stt_rejects_bad_audio(stt: WhisperTranscriber) -> None:
    with pytest.raises(TypeError):
        await stt.transcribe(np.zeros(100, np.float32))
    with pytest.raises(ValueError):
        stt.transcribe_sync(np.zeros((2, 100), np.int16))


# --- VAD and turn detection --------------------------------------------------------------------


def test_silero_finds_speech_between_silences(silero: SileroModel) -> None:
    speech = speak(SENTENCES[0])
    audio = np.concatenate([silence(1000), speech, silence(1000)])
    stream = SileroStream(silero)
    probs = [p for chunk in chunks(audio, 320) for p in stream.feed(chunk)]  # 20 ms chunks, not 32
    assert len(probs) == audio.size // 512
    per_second = int(1000 / SILERO_FRAME_MS)
    assert max(probs[: per_second - 3]) < 0.2
    assert max(probs[-per_second + 8 :]) < 0.2
    speech_frames = probs[per_second + 3 : per_second + speech.size // 512 - 3]
    assert np.mean([p > 0.5 for p in speech_frames]) > 0.8

    detector = TurnDetector(TurnDetectionConfig(silence_duration_ms=500, prefix_padding_ms=300))
    events = detector.feed(probs, SILERO_FRAME_MS)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    assert isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    speech_end = 1000 + speech.size / 16
    assert abs(started.speech_start_ms - 1000) <= 150
    assert started.audio_start_ms == started.speech_start_ms - 300
    assert abs(stopped.speech_end_ms - speech_end) <= 250
    assert stopped.audio_end_ms - stopped.speech_end_ms >= 500


def test_silero_stream_is_chunking_invariant_and_resets(silero: SileroModel) -> None:
    audio = np.concatenate([silence(300), speak(SENTENCES[1])])
    whole = SileroStream(silero).feed(audio)
    stream = SileroStream(silero)
    odd = [p for chunk in chunks(audio, 777) for p in stream.feed(chunk)]
    assert odd == pytest.approx(whole, abs=1e-5)
    stream.reset()
    assert stream.feed(audio) == pytest.approx(whole, abs=1e-5)
    with pytest.raises(TypeError):
        stream.feed(audio.astype(np.float32))


def test_webrtc_stream_marks_speech() -> None:
    speech = speak(SENTENCES[2])
    stream = WebRtcStream(aggressiveness=2)
    flags = [p for chunk in chunks(np.concatenate([silence(1000), speech]), 160) for p in stream.feed(chunk)]
    assert flags[:30] == [0.0] * 30
    assert np.mean(flags[35 : 33 + speech.size // 480 - 2]) > 0.7
    with pytest.raises(ValueError):
        WebRtcStream(aggressiveness=5)
    with pytest.raises(ValueError):
        WebRtcStream(rate=11025)


def test_webrtc_stream_reads_a_phone_line_at_8k_as_it_hears_it_at_16k() -> None:
    speech = np.concatenate([silence(1000, rate=8000), speak(SENTENCES[2], rate=8000), silence(600, rate=8000)])
    narrow, wide = WebRtcStream(), WebRtcStream()
    assert narrow.use_rate(8000) == 8000 and wide.use_rate(44100) == 16000  # 44.1k: read at 16k instead
    at_8k = [p for chunk in chunks(speech, 160) for p in narrow.feed(chunk)]
    up = StreamResampler(8000, 16000)
    at_16k = [p for chunk in chunks(np.concatenate([up.process(speech), up.flush()]), 320) for p in wide.feed(chunk)]
    assert len(at_8k) == len(at_16k) == speech.size // 240
    assert at_8k[:30] == [0.0] * 30 and np.mean(at_8k[40:-30]) > 0.7
    assert np.mean(np.array(at_8k) == np.array(at_16k)) > 0.9


# --- TTS ------------------------------------------------------------------------------------------


def test_voices_and_unknown_voice(tts: PiperSynthesizer) -> None:
    assert tts.voices()[0] == "joe"
    assert set(OPENAI_VOICES) <= set(tts.voices())
    assert tts.sample_rate == 22050
    assert tts.resolve("marin") == "joe"
    with pytest.raises(UnknownVoice, match="nova"):
        next(tts.synthesize_sync("Hello.", voice="nova"))


async def test_async_synthesis_yields_sentence_by_sentence(tts: PiperSynthesizer) -> None:
    text = "Your order 4567 has shipped. It will arrive on Friday. Anything else?"
    got = [chunk async for chunk in tts.synthesize(text, voice="alloy")]
    assert len(got) == 3
    assert all(c.dtype == np.int16 and c.ndim == 1 and c.size > 0.3 * tts.sample_rate for c in got)
    with pytest.raises(UnknownVoice):
        async for _ in tts.synthesize("Hello.", voice="nova"):
            pass
    with pytest.raises(ValueError):
        async for _ in tts.synthesize("Hello.", speed=0.0):
            pass


@pytest.mark.parametrize(("written", "said"), [
    ("Order 4567 has shipped.", "Order four five six seven has shipped."),
    ("Call 555-123-4567 by 15:00.", "Call five five five, one two three, four five six seven by three PM."),
    ("That's $12.50, since 1999.", "That's twelve dollars fifty, since nineteen ninety nine."),
])
async def test_text_is_read_as_a_person_says_it(tts: PiperSynthesizer, written: str, said: str) -> None:
    """Both ways in, the voice reads ids digit by digit, phone numbers in groups, times, amounts and years
    as they are said (espeak alone: "four thousand five hundred...", "dollar twelve point five zero")."""
    async_pcm = np.concatenate([c async for c in tts.synthesize(written, deterministic=True)])
    sync_pcm = np.concatenate(list(tts.synthesize_sync(written, deterministic=True)))
    assert np.array_equal(async_pcm, sync_pcm)
    # Written, each of these is one piece; said, the phone number's commas would cut its opening short.
    assert np.array_equal(sync_pcm, np.concatenate(list(tts.synthesize_sync(said, deterministic=True,
                                                                            short_first=False))))


async def test_async_synthesis_stops_when_the_consumer_does(tts: PiperSynthesizer) -> None:
    text = " ".join(f"This is sentence number {n}." for n in range(20))
    stream = tts.synthesize(text)
    async for _ in stream:
        break
    await stream.aclose()  # the prefetched sentence is dropped, nothing more is queued
    await asyncio.sleep(0.3)
    assert tts._pool.queued() == 0
    # The pool is free for the next caller straight away.
    assert [c async for c in tts.synthesize("Okay.")]


async def test_a_reply_s_first_piece_renders_while_another_call_s_piece_holds_the_pool() -> None:
    tts = PiperSynthesizer(max_concurrency=1)  # one thread for any piece, and the lane for first pieces
    release = threading.Event()
    heard: list[str] = []
    timings: list[tuple[int, PieceTiming]] = []

    async def call(name: str, text: str, urgent: bool) -> None:
        async for _ in tts.synthesize(text, urgent=urgent, on_piece=lambda n, t: timings.append((n, t))):
            heard.append(name)

    try:
        busy = tts._pool.submit(LATER, release.wait)  # another call's piece holds the pool's thread
        later = asyncio.create_task(call("later", "And it will arrive on Friday.", urgent=False))
        await call("first", "Your order has shipped.", urgent=True)  # rendered on the lane meanwhile
        assert heard == ["first"] and not busy.done() and not later.done()
        release.set()
        await later
        assert busy.result() is True
        assert heard == ["first", "later"]
        assert [n for n, _ in timings] == [0, 0]
        assert all(t.render_ms > 0 and t.cpu_ms > 0 and t.wait_ms >= 0 for _, t in timings)
    finally:
        release.set()
        tts.close()


def test_pieces_render_at_once_outside_the_phonemizer_lock_as_piper_itself_renders_them(
        tts: PiperSynthesizer) -> None:
    texts = ["Your order has shipped.", "Okay.", "It will arrive on Friday, and it is paid."]
    voice, syn = tts._syn_config("joe", 1.0, deterministic=True)
    expected = [[chunk.audio_int16_array for chunk in voice.synthesize(text, syn_config=syn)] for text in texts]
    with ThreadPoolExecutor(max_workers=3) as threads:  # three renders in flight together
        rendered = list(threads.map(lambda text: tts._render(voice, text, syn)[0], texts))
    for mine, piper_s in zip(rendered, expected, strict=True):
        assert len(mine) == len(piper_s) and all(np.array_equal(a, b) for a, b in zip(mine, piper_s, strict=True))


def test_speed_changes_duration() -> None:
    normal, fast = speak(SENTENCES[1]), speak(SENTENCES[1], speed=1.5)
    assert fast.size < 0.8 * normal.size


# --- text splitting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, pieces",
    [
        (
            "Your total is 3.5 dollars. Order 4567 ships today!",
            ["Your total is 3.5 dollars.", "Order 4567 ships today!"],
        ),
        ("Dr. Smith sees you at 3 p.m. tomorrow. Bye.", ["Dr. Smith sees you at 3 p.m. tomorrow.", "Bye."]),
        ("We have 4,567 items... Really?", ["We have 4,567 items...", "Really?"]),
        ("Line one\nLine two", ["Line one", "Line two"]),
        (
            "Thanks for calling Acme support, I can check an order for you, or book an appointment for you.",
            [
                "Thanks for calling Acme support,",
                "I can check an order for you,",
                "or book an appointment for you.",
            ],
        ),
        # The opening a caller waits for is cut at its first break once it is long, counted as said
        # ("4567" is four words), and never mid-phrase.
        ("We're open Monday to Saturday, 9 AM to 5 PM, and closed on Sundays.",
         ["We're open Monday to Saturday,", "9 AM to 5 PM, and closed on Sundays."]),
        ("Order 4567 has shipped with UPS and should arrive Thursday.",
         ["Order 4567 has shipped with UPS", "and should arrive Thursday."]),
        # Never after a past tense said with a voiceless /t/, which Piper clips at a piece's end ("shipped" heard
        # "shit"); a voiced ending comes through.
        ("Order 4567 has shipped and should arrive Thursday.", ["Order 4567 has shipped and should arrive Thursday."]),
        ("Your order was checked, and the refund is on its way.",
         ["Your order was checked, and the refund is on its way."]),
        ("Order 1234 is being prepared and should arrive Friday.",
         ["Order 1234 is being prepared", "and should arrive Friday."]),
        ("Is there anything else I can help you with today?", ["Is there anything else I can help you with today?"]),
        ("Your appointment is booked for tomorrow at 3 PM.", ["Your appointment is booked for tomorrow at 3 PM."]),
        ("Yes, and thanks for calling.", ["Yes, and thanks for calling."]),  # no head of 20 characters
        ("", []),
        (" ... ", []),
    ],
)
def test_split_sentences_examples(text: str, pieces: list[str]) -> None:
    assert split_sentences(text) == pieces


def test_only_the_opening_is_cut_short() -> None:
    """A later sentence plays while it renders: it stays whole."""
    text = "We're open Monday to Saturday, 9 AM to 5 PM, and closed on Sundays."
    assert split_sentences(text, short_first=False) == [text]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 19.,!?;:\n—-'\"")), max_size=200))
def test_split_sentences_loses_nothing(text: str) -> None:
    pieces = split_sentences(text)
    assert "".join(ch for ch in text if ch.isalnum()) == "".join(ch for p in pieces for ch in p if ch.isalnum())
    assert all(p == p.strip() and any(ch.isalnum() for ch in p) for p in pieces)


@given(st.integers(0, 10**6), st.integers(0, 99))
def test_split_sentences_keeps_decimals(whole: int, fraction: int) -> None:
    assert split_sentences(f"It costs {whole}.{fraction} now. Thanks.") == [
        f"It costs {whole}.{fraction} now.",
        "Thanks.",
    ]


def test_the_whisper_model_is_a_setting_and_a_directory_without_one_is_refused(tmp_path: Path) -> None:
    """An operator's model directory (here: a copy of the packaged one's files under another path) loads
    and transcribes; a path that holds no model is refused when the settings are read, naming the path,
    and nothing is fetched from a hub."""
    import shutil

    from pydantic import ValidationError

    from voxgate.config import Settings
    from voxgate.engines.local.stt import packaged_model

    model = tmp_path / "whisper-model"
    shutil.copytree(packaged_model(), model)
    settings = Settings(stt_model=str(model))
    transcriber = WhisperTranscriber(cpu_threads=1, model=settings.stt_model)
    assert transcriber.model_path == model
    assert "order" in transcriber.transcribe_sync(speak("Please check my order status.")).text.lower()
    transcriber.close()
    with pytest.raises(ValidationError, match=r"small\.en"):
        Settings(stt_model="small.en")  # a hub name is not a directory: refused, never downloaded
