"""A spoken conversation with the local engine through the official openai SDK.

Audio of a request goes in with server VAD; the gateway transcribes it, calls lookup_order with
order_id "4567", and speaks the answer (transcribed back here to check it). Then the caller talks
over the agent: the response is cancelled at once, and the client's truncate trims the reply to
what was heard. The same in G.711 µ-law at 8 kHz.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI
from pydantic import TypeAdapter

from tests.conftest import LiveServer, finished_call
from tests.integration.test_text_conversation import StrictReader
from tests.speech import normalise, silence, speak
from voxgate.audio import g711
from voxgate.audio.resample import StreamResampler
from voxgate.engines.local.stt import WhisperTranscriber
from voxgate.engines.local.tts import PiperSynthesizer

REQUEST = "what is the status of order four five six seven"
INTERRUPTION = "wait, can I talk to a real person please"

FORMATS = {
    "pcm16": ({"type": "audio/pcm", "rate": 24000}, 24000),
    "pcmu": ({"type": "audio/pcmu"}, 8000),
}


def encode(pcm: np.ndarray, fmt: str) -> bytes:
    return g711.ulaw_encode(pcm) if fmt == "pcmu" else pcm.astype("<i2").tobytes()


def decode_to_16k(data: bytes, fmt: str) -> np.ndarray:
    if fmt == "pcmu":
        pcm, rate = g711.ulaw_decode(data), 8000
    else:
        pcm, rate = np.frombuffer(data, dtype="<i2").astype(np.int16), 24000
    resampler = StreamResampler(rate, 16000)
    return np.concatenate([resampler.process(pcm), resampler.flush()])


def voiced_seconds(text: str) -> float:
    """How long the local voice (deterministic, as in tests) takes to say `text`."""
    tts = PiperSynthesizer.shared()
    return sum(chunk.size for chunk in tts.synthesize_sync(text, deterministic=True)) / tts.sample_rate


async def stream(conn: Any, audio: bytes, chunk: int, realtime: bool) -> None:
    for start in range(0, len(audio), chunk):
        await conn.input_audio_buffer.append(audio=base64.b64encode(audio[start:start + chunk]).decode())
        if realtime:
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("fmt", ["pcm16", "pcmu"])
async def test_spoken_turn_tool_call_and_barge_in(live_server: LiveServer, ga_server_events: TypeAdapter[Any],
                                                 fmt: str) -> None:
    wire_format, rate = FORMATS[fmt]
    # Render every line before the call: the test must not compete with the gateway's own voice.
    follow_up = np.concatenate([speak("and order one two three four", rate=rate), silence(700, rate)])
    interrupting = np.concatenate([speak(INTERRUPTION, rate=rate), silence(900, rate)])
    bytes_per_20ms = rate // 50 * (2 if fmt == "pcm16" else 1)
    client = AsyncOpenAI(api_key=live_server.api_key, base_url=f"{live_server.base_url}/v1",
                         websocket_base_url=f"{live_server.ws_url}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        reader = StrictReader(conn.recv_bytes, ga_server_events)
        session_id = (await reader.next())["session"]["id"]
        await conn.session.update(session={"type": "realtime", "audio": {
            "input": {"format": wire_format, "transcription": {"model": "whisper-1"},
                      "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}},
            "output": {"format": wire_format, "voice": "marin"}}})
        await reader.until("session.updated")

        # Turn 1: the request, streamed in real time, followed by silence so the VAD ends the turn.
        request = np.concatenate([silence(300, rate), speak(REQUEST, rate=rate), silence(900, rate)])
        await stream(conn, encode(request, fmt), bytes_per_20ms, realtime=True)
        events = await reader.until("response.done")
        kinds = [e["type"] for e in events]
        for expected in ("input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
                         "input_audio_buffer.committed", "response.created", "response.output_audio.delta"):
            assert expected in kinds, kinds
        started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
        stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
        spoken_ms = 300 + len(speak(REQUEST, rate=rate)) * 1000 / rate
        assert 0 <= started["audio_start_ms"] < 600 < stopped["audio_end_ms"] < spoken_ms + 900
        transcription = next(e for e in reader.seen
                             if e["type"] == "conversation.item.input_audio_transcription.completed")
        assert "4567" in transcription["transcript"].replace(" ", "") or "four five six seven" in \
            transcription["transcript"].lower()
        done = events[-1]["response"]
        assert done["status"] == "completed"
        transcript = done["output"][0]["content"][0]["transcript"]
        assert "shipped" in transcript.lower(), transcript
        audio = b"".join(base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta")
        heard = (await WhisperTranscriber.shared().transcribe(decode_to_16k(audio, fmt))).text
        assert "ship" in heard.lower(), heard
        # The transcript keeps the order number as written; the voice reads it digit by digit, which Whisper
        # may write "4567" or "4, 5, 6, 7": compared as digits. The audio lasts as long as the reply said
        # with "four five six seven", not with "four thousand five hundred sixty-seven" (espeak's reading).
        assert "Order 4567 " in transcript, transcript
        assert "four five six seven" in " ".join(normalise(heard)), heard
        seconds = len(audio) / (2 if fmt == "pcm16" else 1) / rate
        by_digit, as_number = await asyncio.gather(*(asyncio.to_thread(voiced_seconds, transcript.replace(
            "4567", words)) for words in ("four five six seven", "four thousand five hundred sixty-seven")))
        assert abs(seconds - by_digit) < 0.1 < abs(seconds - as_number), (seconds, by_digit, as_number)

        # Turn 2: ask again, and talk over the agent as soon as its audio starts.
        await stream(conn, encode(follow_up, fmt), bytes_per_20ms, realtime=False)
        first_delta = None
        while first_delta is None:
            event = await reader.next()
            if event["type"] == "response.output_audio.delta":
                first_delta = event
        await stream(conn, encode(interrupting, fmt), bytes_per_20ms, realtime=False)
        events = await reader.until("response.done")
        cancelled = events[-1]["response"]
        assert cancelled["status"] == "cancelled"
        assert cancelled["status_details"]["reason"] == "turn_detected"
        kinds = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in kinds
        assert kinds.index("input_audio_buffer.speech_started") < kinds.index("response.done")
        # No audio after the cancel decision: the response ends right after speech_started.
        after = kinds[kinds.index("input_audio_buffer.speech_started"):]
        assert after.count("response.output_audio.delta") == 0

        # The client heard 200 ms of that reply before stopping its player: truncate there.
        item_id = first_delta["item_id"]
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=200)
        truncated = await reader.until("conversation.item.truncated")
        assert truncated[-1]["audio_end_ms"] == 200
        await conn.conversation.item.retrieve(item_id=item_id)
        retrieved = (await reader.until("conversation.item.retrieved"))[-1]["item"]
        heard_text = retrieved["content"][0]["transcript"] or ""
        assert len(heard_text.split()) <= 2, heard_text  # 200 ms is a word at most
        heard_audio = base64.b64decode(retrieved["content"][0]["audio"])
        assert len(heard_audio) == 200 * bytes_per_20ms // 20

        # The interruption is itself a turn: it is answered (a transfer to a person).
        events = await reader.until("response.done")
        assert events[-1]["response"]["status"] == "completed"

    call = await finished_call(live_server, session_id)
    lookups = [t for t in call["tool_calls"] if t["name"] == "lookup_order"]
    assert json.loads(lookups[0]["arguments"]) == {"order_id": "4567"}
    assert call["interruptions"] >= 1
    assert any(t["name"] == "transfer_to_human" for t in call["tool_calls"])
    # Each answered turn's latency budget: a WebSocket client plays the audio itself, so the budget ends
    # when the first audio is sent; every stage before it happened (the VAD heard 300 ms of silence first).
    assert len(call["latency"]) == 3, call["latency"]  # the request, the follow-up (cut), the interruption
    for turn in call["latency"]:
        stages = turn["stages"]
        assert not turn["heard"] and stages["first_audio_heard"] is None, turn
        assert None not in [stages[s] for s in ("vad", "transcript", "first_token", "tts_first_audio",
                                                "first_audio_sent")], turn
        assert turn["total_ms"] == pytest.approx(sum(ms for ms in stages.values() if ms is not None), abs=0.01)
    assert call["latency"][0]["stages"]["vad"] >= 300 - 32  # 300 ms of silence, to the VAD's 32 ms frame
    assert len(call["barge_ins"]) == call["interruptions"] and all(b["stop_ms"] > 0 for b in call["barge_ins"])


async def test_semantic_vad_waits_longer_after_an_unfinished_phrase(live_server: LiveServer,
                                                                  ga_server_events: TypeAdapter[Any]) -> None:
    """semantic_vad (eagerness high): a whole phrase ends the turn after a short pause, while words that
    trail off ("... and") keep the turn open through the same pause."""
    client = AsyncOpenAI(api_key=live_server.api_key, base_url=f"{live_server.base_url}/v1",
                         websocket_base_url=f"{live_server.ws_url}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        reader = StrictReader(conn.recv_bytes, ga_server_events)
        await reader.next()
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "audio": {
            "input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}}})
        await reader.until("session.updated")

        async def stopped_after(text: str, pause_ms: int) -> bool:
            audio = np.concatenate([silence(200, 24000), speak(text, rate=24000), silence(pause_ms, 24000)])
            await stream(conn, audio.astype("<i2").tobytes(), 960, realtime=True)
            await asyncio.sleep(0.3)  # let the server finish with what it has
            seen = []
            while True:
                try:
                    seen.append(await asyncio.wait_for(reader.next(), 0.5))
                except TimeoutError:
                    break
            return any(e["type"] == "input_audio_buffer.speech_stopped" for e in seen)

        assert not await stopped_after("I want to check on my order and", 1200)
        await conn.input_audio_buffer.clear()
        await reader.until("input_audio_buffer.cleared")
        assert await stopped_after("what is the status of order four five six seven", 1200)
