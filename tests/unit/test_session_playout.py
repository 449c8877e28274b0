"""A Session on a paced line, in-process: the gateway's own playout shell and core (`AudioOutput` over
`Playout`, what the carrier, WebRTC and RTP transports use) take the agent's audio and release it on a clock
the test moves (`LineCaller.play`). What the caller has heard is what that clock released, from the first
frame, with no report from the far end; after a barge-in, the session drops the late audio itself."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from tests.session_harness import RATE, Call, Hold, LineCaller, ScriptedEngine, speech, types
from voxgate.agents import AgentConfig


async def test_truncation_is_at_what_the_line_played_not_at_what_was_sent(
        ga_server_events: TypeAdapter[Any]) -> None:
    """The whole reply is handed to the line at once; the caller has heard only what its clock released."""
    engine = ScriptedEngine()
    engine.script(speech("One two three four five six.", 1200))
    caller = LineCaller()
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        done = await call.response()  # every delta went to the line: 1200 ms sent
        item_id = done["response"]["output"][0]["id"]
        assert call.session.caller.playback.sent_ms(item_id) == 1200
        assert call.session.caller.playback.heard_ms(item_id) == 0.0  # nothing played yet: nothing heard
        caller.play(600)
        assert call.session.caller.playback.heard_ms(item_id) == 600
        await call.speak(200)  # the agent is still audible on the line: a barge-in
        await call.next("input_audio_buffer.speech_started")
        truncated = await call.next("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 600
        assert (await call.next("output_audio_buffer.cleared"))["response_id"] == done["response"]["id"]
        assert caller.interrupted == 1
        caller.play(1000)
        assert caller.played_ms == 600  # the clear dropped the rest at once
        retrieved = await call.retrieve(item_id)
        assert retrieved["content"][0]["transcript"] == "One two three"


async def test_a_reply_the_line_has_played_in_full_is_heard_and_stops(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine()
    engine.script(speech("Done.", 400), speech("Sure.", 400))
    caller = LineCaller()
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        done = await call.response()
        caller.play(400)
        stopped = await call.next("output_audio_buffer.stopped")  # the last frame is out
        assert stopped["response_id"] == done["response"]["id"]
        await call.speak(300)  # the caller speaks after hearing it all: a turn, not a barge-in
        await call.pause(300)
        await call.next("input_audio_buffer.committed")
        assert (await call.response())["response"]["status"] == "completed"
        assert caller.interrupted == 0
        assert "conversation.item.truncated" not in types(call.seen)


async def test_late_audio_after_a_barge_in_is_dropped_by_the_session(ga_server_events: TypeAdapter[Any]) -> None:
    """Audio still queued for the line when the caller barges in, and audio the response makes while the
    line is being cleared (a carrier's `clear` takes a send), never reaches the line."""
    engine = ScriptedEngine()
    engine.script([*speech("Hello there.", 1000), Hold(), *speech("This is never said.", 1000)])

    async def slow_clear() -> None:  # the engine goes on while the transport is still clearing
        engine.release()
        for _ in range(20):
            await asyncio.sleep(0)

    caller = LineCaller(on_interrupt=slow_clear)
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        item_id = (await call.next("response.output_item.added"))["item"]["id"]
        for _ in range(2):  # 400 ms reach the line; the other 600 ms wait in the session's queue
            await call.next("response.output_audio.delta")
        caller.play(300)
        await call.speak(200)  # barge-in, while three deltas are still queued
        await call.response()
        truncated = await call.next("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 300
        await call.queued()
        deltas = [e for e in call.seen if e["type"] == "response.output_audio.delta"]
        assert len(deltas) == 2  # the queued ones and the ones made during the clear were dropped
        caller.play(2000)
        assert caller.played_ms == 300  # nothing of the cut response played after the clear
        assert engine.requests and not engine.scripts
        assert (await call.retrieve(item_id))["status"] == "incomplete"


async def test_an_agent_still_playing_on_the_line_is_not_silence(ga_server_events: TypeAdapter[Any]) -> None:
    """idle_timeout_ms counts from when the line has played the agent out, not from when it was sent."""
    engine = ScriptedEngine()
    engine.script(speech("How can I help?", 1000))
    caller = LineCaller()
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.detect_turns({"type": "server_vad", "idle_timeout_ms": 5000})
        await call.send({"type": "response.create"})
        await call.response()
        for _ in range(55):  # the caller listens in silence while the line plays (1 s) and then waits
            caller.play(100)
            await call.append(np.zeros(RATE // 10, dtype=np.int16))
        assert "input_audio_buffer.timeout_triggered" not in types(await call.queued())
        for _ in range(6):
            caller.play(100)
            await call.append(np.zeros(RATE // 10, dtype=np.int16))
        timeout = await call.next("input_audio_buffer.timeout_triggered")
        # The silence began as the line played the reply's last frame (with 900 ms of the caller's audio in,
        # the line at 1000 ms); counted from when it was sent, it would have begun at 0.
        assert timeout["audio_start_ms"] == 900
        await call.response()


async def test_a_cough_over_the_agent_pauses_it_and_it_plays_on_from_where_it_paused(
        ga_server_events: TypeAdapter[Any]) -> None:
    """The VAD's first trigger pauses the agent at the caller at once; speech too short to be a barge-in
    (a cough, under barge_in_min_speech_ms) lets it play on from the frame it paused at: nothing lost,
    nothing cancelled."""
    engine = ScriptedEngine()
    engine.script(speech("One two three four five six.", 1200))
    caller = LineCaller()
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        done = await call.response()
        item_id = done["response"]["output"][0]["id"]
        caller.play(400)
        await call.speak(40)
        assert (caller.holds, caller.resumes) == (1, 0)
        caller.play(100)  # the line plays silence while the onset is checked
        assert call.session.caller.playback.heard_ms(item_id) == 400 and caller.played_ms == 400
        await call.pause(20)  # not speech after all
        assert (caller.holds, caller.resumes) == (1, 1)
        caller.play(1000)
        assert caller.played_ms == 1200  # every frame, in order, after the pause
        assert call.session.caller.playback.heard_ms(item_id) == 1200
        assert call.session.interruptions == 0 and caller.interrupted == 0
        assert not {"input_audio_buffer.speech_started", "conversation.item.truncated"} & set(types(call.seen))


async def test_a_barge_in_stops_the_agent_at_the_first_speech_frame_and_cuts_it_there(
        ga_server_events: TypeAdapter[Any]) -> None:
    """The agent stops at the caller on the first frame of speech, not once barge_in_min_speech_ms has
    confirmed it: the item is cut at what was heard when the caller began."""
    engine = ScriptedEngine()
    engine.script(speech("One two three four five six.", 1200))
    caller = LineCaller()
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        done = await call.response()
        caller.play(600)
        await call.speak(20)  # the first speech frame: the agent pauses
        assert caller.holds == 1 and caller.interrupted == 0
        caller.play(60)  # nothing more is heard while min_speech_ms (64) decides
        await call.speak(180)
        await call.next("input_audio_buffer.speech_started")
        truncated = await call.next("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 600
        assert caller.interrupted == 1 and caller.resumes == 0
        caller.play(1000)
        assert caller.played_ms == 600
        assert (await call.retrieve(done["response"]["output"][0]["id"]))["status"] == "incomplete"


async def test_an_agent_that_asks_for_a_long_check_is_not_paused_for_it(ga_server_events: TypeAdapter[Any]) -> None:
    """A check longer than a line may hold (barge_in_min_speech_ms 400 > 300 ms): the agent plays on while
    it runs and stops at the confirmation, as it did before the pause on the first trigger."""
    engine = ScriptedEngine()
    engine.script(speech("One two three four five six.", 1200))
    caller = LineCaller()
    agent = AgentConfig(name="test", turn_taking={"barge_in_min_speech_ms": 400})
    async with Call(agent, engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        done = await call.response()
        caller.play(200)
        await call.speak(200)
        caller.play(200)
        assert caller.holds == 0 and caller.played_ms == 400
        await call.speak(300)
        await call.next("input_audio_buffer.speech_started")
        truncated = await call.next("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 400 and caller.interrupted == 1
        assert (await call.retrieve(done["response"]["output"][0]["id"]))["status"] == "incomplete"
