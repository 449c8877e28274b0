"""The input buffer of one Session, in-process: a turn's audio starts exactly `prefix_padding_ms` before its
first speech frame, however long the line was idle before it and whenever the call connected."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from tests.session_harness import LOUD, RATE, Call, LoudnessVad, ScriptedEngine, pcm_of, speech, tone


async def turn_audio(call: Call, lead_ms: int, speech_ms: int = 400) -> tuple[dict[str, Any], np.ndarray]:
    """One spoken turn after `lead_ms` of silence: the speech_started event and the committed audio."""
    began_ms = call.stream_ms  # where the buffer starts: the call's start or the last commit
    await call.pause(lead_ms)
    await call.speak(speech_ms)
    await call.pause(300)
    started = await call.next("input_audio_buffer.speech_started")
    stopped = await call.next("input_audio_buffer.speech_stopped")
    committed = await call.next("input_audio_buffer.committed")
    audio = pcm_of((await call.retrieve(committed["item_id"]))["content"][0])
    kept_from = max(started["audio_start_ms"], began_ms)  # the padding never reaches into the last turn
    assert audio.size == (stopped["audio_end_ms"] - kept_from) * RATE // 1000
    return started, audio


def leading_silence_ms(audio: np.ndarray) -> float:
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 1000)
    return float(loud[0]) * 1000 / RATE


@pytest.mark.parametrize("lead_ms", [0, 100, 300, 320, 500, 980, 1000, 1500, 1740, 2520, 4000])
async def test_a_turn_keeps_exactly_the_prefix_padding(ga_server_events: TypeAdapter[Any], lead_ms: int) -> None:
    engine = ScriptedEngine(transcripts=["hello"])
    engine.script(speech("Hi.", 200))
    async with Call(engine=engine, events=ga_server_events) as call:
        started, audio = await turn_audio(call, lead_ms)
        assert started["audio_start_ms"] == max(0, lead_ms - 300)
        assert leading_silence_ms(audio) == min(lead_ms, 300)
        assert audio.size == (min(lead_ms, 300) + 400 + 300) * RATE // 1000
        await call.response()


@pytest.mark.parametrize("prefix_ms", [0, 60, 500, 1000])
async def test_every_turn_of_a_call_keeps_the_configured_padding(ga_server_events: TypeAdapter[Any],
                                                                prefix_ms: int) -> None:
    engine = ScriptedEngine(transcripts=["one", "two", "three"])
    engine.script(*[speech("Okay.", 200)] * 3)
    async with Call(engine=engine, events=ga_server_events) as call:
        await call.detect_turns({"type": "server_vad", "prefix_padding_ms": prefix_ms, "silence_duration_ms": 300})
        for lead_ms in (1700, 260, 3140):
            _, audio = await turn_audio(call, lead_ms)
            assert leading_silence_ms(audio) == min(lead_ms, prefix_ms)
            await call.response()


async def test_without_turn_detection_the_client_commits_everything(ga_server_events: TypeAdapter[Any]) -> None:
    async with Call(events=ga_server_events) as call:
        await call.detect_turns(None)
        await call.pause(2500)
        await call.speak(200)
        await call.send({"type": "input_audio_buffer.commit"})
        committed = await call.next("input_audio_buffer.committed")
        audio = pcm_of((await call.retrieve(committed["item_id"]))["content"][0])
        assert leading_silence_ms(audio) == 2500
        assert audio.size == 2700 * RATE // 1000


@pytest.mark.parametrize("decoded_at", [16000, 24000, 48000])
@pytest.mark.parametrize("lead_ms", [0, 300, 980, 2520])
async def test_audio_a_transport_decoded_is_committed_in_the_input_format(ga_server_events: TypeAdapter[Any],
                                                                         lead_ms: int, decoded_at: int) -> None:
    """A browser call's transport decodes the caller's Opus itself and hands the session PCM (at the 16 kHz
    the VAD listens at, or any other rate): the committed item is the input format's 24 kHz all the same, the
    same stretch of the stream to the sample, the caller's tone in it at its level."""
    engine = ScriptedEngine(transcripts=["hello"])
    engine.script(speech("Hi.", 200))
    async with Call(engine=engine, events=ga_server_events, decoded_at=decoded_at,
                    vad_factory=lambda: LoudnessVad(listens_at=16000)) as call:
        assert call.session.listening.rate == 16000
        # Resampled on the way (into the transport's rate, then maybe the VAD's), the stream is a filter's
        # hold (~1 ms) behind what was sent, and a filter's ringing may come before the tone.
        await call.pause(lead_ms)
        await call.speak(400)
        await call.pause(340)
        started = await call.next("input_audio_buffer.speech_started")
        stopped = await call.next("input_audio_buffer.speech_stopped")
        committed = await call.next("input_audio_buffer.committed")
        audio = pcm_of((await call.retrieve(committed["item_id"]))["content"][0])
        assert started["audio_start_ms"] == max(0, lead_ms - 300)
        # To its end, and at most the rest of the frame that ended it (the frames no longer fall on the VAD's).
        assert 0 <= audio.size - (stopped["audio_end_ms"] - started["audio_start_ms"]) * RATE // 1000 <= RATE // 50
        assert abs(leading_silence_ms(audio) - min(lead_ms, 300)) <= 1.5
        spoken = audio[int(RATE * (min(lead_ms, 300) + 20) / 1000):][:RATE * 300 // 1000].astype(float)
        spectrum = np.abs(np.fft.rfft(spoken))
        assert abs(np.argmax(spectrum) * RATE / spoken.size - 440) < 5
        assert 0.95 * LOUD < np.sqrt(2 * np.mean(spoken ** 2)) < 1.05 * LOUD


async def test_decoded_audio_and_append_events_keep_their_order(ga_server_events: TypeAdapter[Any]) -> None:
    """A browser whose client also appends audio on the data channel: the commit holds both, in the order
    they came, each at its length."""
    async with Call(events=ga_server_events, vad_factory=lambda: LoudnessVad(listens_at=16000)) as call:
        await call.detect_turns(None)
        session = call.session
        session.append_pcm_nowait(np.zeros(16000 * 200 // 1000, dtype=np.int16), 16000)  # 200 ms, decoded
        await call.speak(100)  # 100 ms of tone, as append events
        session.append_pcm_nowait(tone(300, rate=16000), 16000)
        await call.send({"type": "input_audio_buffer.commit"})
        committed = await call.next("input_audio_buffer.committed")
        audio = pcm_of((await call.retrieve(committed["item_id"]))["content"][0])
        assert audio.size == 600 * RATE // 1000
        assert abs(leading_silence_ms(audio) - 200) <= 1.5
        assert np.abs(audio[RATE * 320 // 1000:RATE * 580 // 1000].astype(int)).max() > LOUD * 0.9
