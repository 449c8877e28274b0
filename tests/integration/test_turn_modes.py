"""Turn-taking options honoured as OpenAI documents them: manual commit, create_response=false,
A-law input, unknown voices and malformed audio."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import websockets
from pydantic import TypeAdapter

from tests.conftest import LiveServer
from tests.integration.test_text_conversation import StrictReader
from tests.speech import silence, speak, wer
from voxgate.audio import g711


async def open_session(live: LiveServer, adapter: TypeAdapter[Any]) -> tuple[Any, StrictReader]:
    ws = await websockets.connect(f"{live.ws_url}/v1/realtime?model=gpt-realtime", max_size=None,
                                  additional_headers={"Authorization": f"Bearer {live.api_key}"})
    reader = StrictReader(ws.recv, adapter)
    await reader.next()
    return ws, reader


async def send(ws: Any, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


async def test_manual_commit_and_errors(live_server: LiveServer, ga_server_events: TypeAdapter[Any]) -> None:
    ws, reader = await open_session(live_server, ga_server_events)
    async with ws:
        await send(ws, {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                        "audio": {"input": {"format": {"type": "audio/pcma"}, "turn_detection": None}}}})
        updated = (await reader.until("session.updated"))[-1]
        assert updated["session"]["audio"]["input"]["turn_detection"] is None

        await send(ws, {"type": "input_audio_buffer.commit", "event_id": "c0"})
        error = await reader.next()
        assert error["error"]["code"] == "input_audio_buffer_commit_empty" and error["error"]["event_id"] == "c0"

        audio = g711.alaw_encode(np.concatenate([speak("where is order one two three four", rate=8000),
                                                 silence(600, 8000)]))
        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()})
        await send(ws, {"type": "input_audio_buffer.commit"})
        events = await reader.until("conversation.item.done")
        assert [e["type"] for e in events] == ["input_audio_buffer.committed", "conversation.item.added",
                                               "conversation.item.done"]  # no VAD events, no response
        completed = await reader.until("conversation.item.input_audio_transcription.completed")
        heard = completed[-1]["transcript"]
        assert wer("where is order one two three four", heard) <= 0.3  # "where's" counts as two errors
        await send(ws, {"type": "response.create"})
        events = await reader.until("response.done")
        reply = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
        assert "1234" in reply

        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x01\x02\x03").decode()})
        await send(ws, {"type": "input_audio_buffer.clear"})
        await reader.until("input_audio_buffer.cleared")


async def test_create_response_false_and_bad_audio(live_server: LiveServer,
                                                   ga_server_events: TypeAdapter[Any]) -> None:
    ws, reader = await open_session(live_server, ga_server_events)
    async with ws:
        await send(ws, {"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "create_response": False}},
            "output": {"voice": "nobody"}}}})
        error = await reader.next()
        assert error["type"] == "error" and error["error"]["param"] == "session.audio.output.voice"
        await send(ws, {"type": "session.update", "session": {"type": "realtime", "audio": {
            "input": {"turn_detection": {"type": "server_vad", "create_response": False}}}}})
        await reader.until("session.updated")

        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\x00" * 3).decode(),
                        "event_id": "odd"})
        error = await reader.next()
        assert error["error"]["code"] == "invalid_audio" and error["error"]["event_id"] == "odd"

        audio = np.concatenate([silence(300, 24000), speak("hello there", rate=24000), silence(800, 24000)])
        await send(ws, {"type": "input_audio_buffer.append",
                        "audio": base64.b64encode(audio.astype("<i2").tobytes()).decode()})
        events = await reader.until("conversation.item.done")
        assert "input_audio_buffer.speech_stopped" in [e["type"] for e in events]
        # VAD events still come, but no response is created on its own.
        await send(ws, {"type": "response.cancel", "event_id": "probe"})
        while (event := await reader.next())["type"] != "error":
            assert not event["type"].startswith("response."), event
        assert event["error"]["code"] == "response_cancel_not_active"


async def test_idle_timeout_prompts_a_silent_caller(live_server: LiveServer,
                                                    ga_server_events: TypeAdapter[Any]) -> None:
    ws, reader = await open_session(live_server, ga_server_events)
    async with ws:
        await send(ws, {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                        "audio": {"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}}})
        await reader.until("session.updated")
        await send(ws, {"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}})
        await send(ws, {"type": "response.create"})
        await reader.until("response.done")
        quiet = silence(4000, 24000).astype("<i2").tobytes()
        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(quiet).decode()})
        await send(ws, {"type": "input_audio_buffer.clear"})
        events = await reader.until("input_audio_buffer.cleared")
        assert "input_audio_buffer.timeout_triggered" not in [e["type"] for e in events]  # 4 s < 5 s
        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(quiet).decode()})
        triggered = (await reader.until("input_audio_buffer.timeout_triggered"))[-1]
        assert triggered["audio_end_ms"] - triggered["audio_start_ms"] >= 5000
        events = await reader.until("response.done")
        assert "still there" in "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


async def test_a_minute_long_monologue_is_one_turn(live_server: LiveServer,
                                                   ga_server_events: TypeAdapter[Any]) -> None:
    """A long stretch of talking (about a minute) with only short breaths: one turn, transcribed whole,
    answered; memory bounded by
    max_input_buffer_seconds (a longer one is cut into turns rather than grown without limit)."""
    ws, reader = await open_session(live_server, ga_server_events)
    sentences = [
        "I have been waiting for my order for a very long time now",
        "and I called last week and nobody could tell me anything useful",
        "the tracking page says it left the warehouse but it never arrived",
        "my neighbour got her parcel from you in two days",
        "so I really do not understand what is happening with mine",
        "I paid extra for the fast delivery option when I checked out",
        "the confirmation email promised it would be here on Monday",
        "then on Tuesday a message said there was a delay at the depot",
        "on Wednesday the driver apparently could not find my street",
        "which is strange because the bakery on the corner gets deliveries every morning",
        "I waited at home the whole of Thursday and nobody knocked",
        "the app shows a photo of a green door but my door is painted red",
        "I think the box went to the wrong house entirely",
        "it contains a birthday present for my daughter",
        "her party is on Saturday afternoon and I am getting worried",
        "could you please look into it and tell me where the box is now",
        "I would also like the delivery fee refunded to my card",
        "and if it cannot arrive by Friday I want to cancel the whole thing",
    ]
    pieces = []
    for text in sentences:
        pieces += [speak(text, rate=24000), silence(100, 24000)]
    monologue = np.concatenate([*pieces, silence(1500, 24000)])
    async with ws:
        await send(ws, {"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"],
                        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}}}})
        await reader.until("session.updated")
        second = 24000 * 2
        data = monologue.astype("<i2").tobytes()
        for start in range(0, len(data), second):
            await send(ws, {"type": "input_audio_buffer.append",
                            "audio": base64.b64encode(data[start:start + second]).decode()})
        events = await reader.until("response.done")
        kinds = [e["type"] for e in events]
        assert kinds.count("input_audio_buffer.speech_started") == 1
        assert kinds.count("input_audio_buffer.committed") == 1
        stopped = next(e for e in events if e["type"] == "input_audio_buffer.speech_stopped")
        assert stopped["audio_end_ms"] >= monologue.size * 1000 / 24000 - 1500
        transcript = next(e for e in reader.seen
                          if e["type"] == "conversation.item.input_audio_transcription.completed")["transcript"]
        words = sum(len(t.split()) for t in sentences)
        assert len(transcript.split()) > 0.8 * words, transcript
        assert transcript.lower().startswith("i have been waiting") and "cancel" in transcript.lower(), transcript
        assert events[-1]["response"]["status"] == "completed"
