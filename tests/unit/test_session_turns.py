"""Turn-taking in one Session, in-process: server_vad and semantic_vad turns, barge-in and truncation at the
heard position, cancellation, and the idle timeout. Time is the caller audio the test appends (see
tests/session_harness.py); the agent's turn taking uses the agent defaults: 300 ms prefix padding, 300 ms
of silence ends a turn, 60 ms of speech starts one (200 ms while the agent is talking)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from tests.session_harness import LOUD, Call, Hold, ScriptedEngine, TestCaller, audio_ms, speech, tone, types
from voxgate.agents import AgentConfig
from voxgate.engines.base import HistoryEntry, TextDelta


async def test_a_server_vad_turn_is_committed_and_answered(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine(transcripts=["What time do you open?"])
    engine.script(speech("We open at nine.", 400))
    async with Call(engine=engine, events=ga_server_events) as call:
        await call.pause(1000)
        await call.speak(600)
        started = await call.next("input_audio_buffer.speech_started")
        assert started["audio_start_ms"] == 1000 - 300  # the first speech frame less the prefix padding
        await call.pause(280)
        assert "input_audio_buffer.speech_stopped" not in types(await call.queued())
        await call.pause(20)
        stopped = await call.next("input_audio_buffer.speech_stopped")
        assert stopped["audio_end_ms"] == 1600 + 300  # the decision, silence included
        assert stopped["item_id"] == started["item_id"]
        committed = await call.next("input_audio_buffer.committed")
        assert committed["item_id"] == started["item_id"]
        await call.next("response.created")
        done = await call.response()
        assert done["response"]["status"] == "completed"
        [message] = done["response"]["output"]
        assert message["content"][0]["transcript"] == "We open at nine."
        assert engine.requests[0].history[-1] == HistoryEntry("user", "What time do you open?")


async def test_create_response_false_commits_without_answering(ga_server_events: TypeAdapter[Any]) -> None:
    async with Call(events=ga_server_events) as call:
        await call.detect_turns({"type": "server_vad", "create_response": False})
        await call.speak(300)
        await call.pause(600)
        await call.next("input_audio_buffer.committed")
        assert "response.created" not in types(await call.queued())


async def test_barge_in_cancels_and_truncates_at_what_the_caller_heard(ga_server_events: TypeAdapter[Any]) -> None:
    """A phone or browser caller (the gateway plays the audio): speech over the agent stops it at the
    transport, cancels the response and cuts its item at the position the transport reported heard."""
    engine = ScriptedEngine()
    engine.script([*speech("Hello there.", 1000), *speech("How can I help you today?", 1000), Hold(),
                   *speech("This is never said.", 1000)])
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.pause(1000)
        await call.send({"type": "response.create"})
        item = (await call.next("response.output_item.added"))["item"]
        await call.next("output_audio_buffer.started")
        for _ in range(10):  # 2 s of audio in 200 ms deltas, then the engine holds
            await call.next("response.output_audio.delta")
        call.heard(item["id"], 1000)  # the caller has heard the first sentence
        await call.speak(40)  # shorter than barge_in_min_speech_ms (64): a click or a cough
        assert not {"input_audio_buffer.speech_started", "response.done"} & set(types(await call.queued()))
        await call.pause(240)
        await call.speak(200)
        started = await call.next("input_audio_buffer.speech_started")
        done = await call.response()
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        truncated = await call.next("conversation.item.truncated")
        assert truncated == {**truncated, "item_id": item["id"], "content_index": 0, "audio_end_ms": 1000}
        cleared = await call.next("output_audio_buffer.cleared")
        assert cleared["response_id"] == done["response"]["id"]
        assert caller.interrupted == 1
        assert call.session.interruptions == 1
        kept = await call.retrieve(item["id"])
        assert kept["status"] == "incomplete"
        assert kept["content"][0]["transcript"] == "Hello there."
        assert audio_ms(kept["content"][0]) == 1000
        assert started["audio_start_ms"] == 1280 - 300  # the turn starts at its first speech frame, not the cough


async def test_a_realtime_client_hears_speech_started_on_the_first_speech_frame_over_the_agent(
        ga_server_events: TypeAdapter[Any]) -> None:
    """A WebSocket client plays the agent's audio itself and stops its player on `speech_started`: the
    gateway cannot pause it there while a check runs, so by default speech over the agent is announced on
    its first frame (the seed's "cancel on the first VAD trigger", as OpenAI's server VAD does); the agent
    still talks on through the first frame of a turn that starts while it is silent. An agent that sets
    `barge_in_min_speech_ms` keeps its check on this transport too."""
    for check, blip_interrupts in ((None, True), (64, False)):
        engine = ScriptedEngine()
        engine.script([*speech("A long sentence.", 2000), Hold()])
        agent = AgentConfig(name="test", turn_taking={"barge_in_min_speech_ms": check})
        async with Call(agent, engine=engine, events=ga_server_events) as call:
            await call.send({"type": "response.create"})
            await call.next("response.output_audio.delta")
            await call.speak(20)  # one speech frame of the loudness VAD
            queued = await call.queued()
            announced = "input_audio_buffer.speech_started" in types(queued)
            assert announced is blip_interrupts, (check, announced)
            if announced:
                [done] = [event for event in queued if event["type"] == "response.done"]
                assert done["response"]["status"] == "cancelled"
                assert call.session.interruptions == 1
            else:
                await call.pause(100)
                assert call.session.interruptions == 0
            engine.release()


async def test_speech_no_louder_than_the_agents_echo_never_barges_in(ga_server_events: TypeAdapter[Any]) -> None:
    """The agent's own voice leaking back (here 9.5 dB down: a VAD that hears it as speech) does not interrupt
    it however long it lasts, with an echo margin of 6 dB; the caller as loud as the agent does, at once.
    Without the echo gate (margin null) the same leak is a barge-in."""
    for margin, interrupted_by_echo in ((6.0, False), (None, True)):
        engine = ScriptedEngine()
        engine.script([*speech("A long sentence.", 2000), Hold()])
        agent = AgentConfig(name="test", turn_taking={"barge_in_echo_margin_db": margin})
        caller = TestCaller(server_side=True, transport="twilio")
        async with Call(agent, engine=engine, caller=caller, events=ga_server_events) as call:
            await call.send({"type": "response.create"})
            await call.next("response.output_audio.delta")  # the agent's voice, before any echo of it
            await call.append(tone(1000, amplitude=LOUD // 3))  # echo: the VAD calls it speech
            echo_barged = "input_audio_buffer.speech_started" in types(await call.queued())
            assert echo_barged is interrupted_by_echo, (margin, echo_barged)
            if not echo_barged:
                assert call.session.interruptions == 0
                await call.speak(100)
                await call.next("input_audio_buffer.speech_started")
                assert (await call.response())["response"]["status"] == "cancelled"
            assert call.session.interruptions == 1
            engine.release()


async def test_barge_in_after_the_response_ended_cuts_what_was_still_playing(
        ga_server_events: TypeAdapter[Any]) -> None:
    """The response is done (all audio generated) but the carrier is seconds behind: still a barge-in."""
    engine = ScriptedEngine()
    engine.script(speech("One two three four five six.", 1200))
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        done = await call.response()
        item_id = done["response"]["output"][0]["id"]
        call.heard(item_id, 600)
        await call.speak(200)
        await call.next("input_audio_buffer.speech_started")
        truncated = await call.next("conversation.item.truncated")
        assert truncated["audio_end_ms"] == 600
        assert (await call.next("output_audio_buffer.cleared"))["response_id"] == done["response"]["id"]
        assert (await call.retrieve(item_id))["content"][0]["transcript"] == "One two three"
        call.heard(item_id, 1200)  # the transport's late report changes nothing: the cut is made
        assert (await call.retrieve(item_id))["content"][0]["transcript"] == "One two three"


async def test_a_heard_response_is_not_interrupted(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine()
    engine.script(speech("Done.", 400), speech("Sure.", 400))
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        item_id = (await call.response())["response"]["output"][0]["id"]
        call.heard(item_id, 400)
        await call.speak(300)
        await call.pause(300)
        await call.next("input_audio_buffer.committed")
        assert (await call.response())["response"]["status"] == "completed"
        assert not {"conversation.item.truncated", "output_audio_buffer.cleared"} & {e["type"] for e in call.seen}
        assert caller.interrupted == 0
        assert (await call.retrieve(item_id))["status"] == "completed"


async def test_a_websocket_client_truncates_what_it_played(ga_server_events: TypeAdapter[Any]) -> None:
    """The client plays the audio itself: speech cancels the response, and the client says what it played."""
    engine = ScriptedEngine()
    engine.script([*speech("Hello there.", 1000), *speech("How can I help you today?", 1000), Hold()])
    async with Call(engine=engine, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        item = (await call.next("response.output_item.added"))["item"]
        for _ in range(10):
            await call.next("response.output_audio.delta")
        await call.speak(200)
        await call.next("input_audio_buffer.speech_started")
        assert (await call.response())["response"]["status_details"]["reason"] == "turn_detected"
        assert "conversation.item.truncated" not in types(await call.queued())  # the server cannot know
        await call.send({"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0,
                         "audio_end_ms": 1500})
        assert (await call.next("conversation.item.truncated"))["audio_end_ms"] == 1500
        kept = await call.retrieve(item["id"])
        assert audio_ms(kept["content"][0]) == 1500
        assert kept["content"][0]["transcript"] == "Hello there. How can I"  # words spread by their length
        await call.send({"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0,
                         "audio_end_ms": 1800})  # longer than what is left
        error = await call.next("error")
        assert error["error"]["code"] == "invalid_value" and error["error"]["param"] == "audio_end_ms"
        await call.send({"type": "conversation.item.truncate", "item_id": item["id"], "content_index": 0,
                         "audio_end_ms": 0})
        assert (await call.retrieve(item["id"]))["content"][0]["transcript"] == ""  # the session carries on


async def test_response_cancel(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine()
    engine.script([TextDelta("Let me think"), Hold(), TextDelta(" about that.")], speech("Yes.", 200))
    async with Call(engine=engine, events=ga_server_events) as call:
        await call.send({"type": "response.cancel"})
        assert (await call.next("error"))["error"]["code"] == "response_cancel_not_active"
        await call.send({"type": "response.create"})
        created = await call.next("response.created")
        await call.next("response.output_audio_transcript.delta")
        await call.send({"type": "response.cancel", "response_id": "resp_another"})
        assert (await call.next("error"))["error"]["code"] == "response_cancel_not_active"
        await call.send({"type": "response.cancel", "response_id": created["response"]["id"]})
        done = await call.response()
        assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert done["response"]["output"][0]["status"] == "incomplete"
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Let me think"
        await call.send({"type": "response.create"})  # the conversation goes on
        assert (await call.response())["response"]["status"] == "completed"


async def test_output_audio_buffer_clear_cuts_at_the_heard_position(ga_server_events: TypeAdapter[Any]) -> None:
    """WebRTC and SIP clients ask the server to stop playing; the item keeps what was heard."""
    engine = ScriptedEngine()
    engine.script([*speech("Hello there.", 1000), Hold()])
    caller = TestCaller(server_side=True, transport="webrtc")
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        item = (await call.next("response.output_item.added"))["item"]
        for _ in range(5):
            await call.next("response.output_audio.delta")
        call.heard(item["id"], 400)
        await call.send({"type": "output_audio_buffer.clear"})
        assert (await call.response())["response"]["status_details"]["reason"] == "client_cancelled"
        assert (await call.next("conversation.item.truncated"))["audio_end_ms"] == 400
        await call.next("output_audio_buffer.cleared")
        assert caller.interrupted == 1


@pytest.mark.parametrize(("transcript", "silence_ms"), [
    ("I'd like to book a table.", 300),  # a whole phrase: eagerness high ends the turn soon
    ("I'd like to book a table and", 2000),  # trails off: the caller gets time to go on
    ("", 500),  # no words heard: the middle wait
])
async def test_semantic_vad_waits_by_what_was_said(ga_server_events: TypeAdapter[Any], transcript: str,
                                                   silence_ms: int) -> None:
    engine = ScriptedEngine(transcripts=[transcript])
    engine.script(speech("Certainly.", 200))
    async with Call(engine=engine, events=ga_server_events) as call:
        await call.detect_turns({"type": "semantic_vad", "eagerness": "high"})
        await call.pause(200)
        await call.speak(800)
        await call.next("input_audio_buffer.speech_started")
        await call.pause(silence_ms - 20)
        assert "input_audio_buffer.speech_stopped" not in types(await call.queued())
        await call.pause(20)
        stopped = await call.next("input_audio_buffer.speech_stopped")
        assert stopped["audio_end_ms"] == 1000 + silence_ms
        assert len(engine.transcribed) == 1  # the speculative decode served as the turn's transcript
        await call.response()
        assert engine.requests[0].history[-1].text == transcript


async def test_semantic_vad_speech_after_a_pause_voids_the_guess(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine(transcripts=["Book a table.", "Book a table for two and"])
    engine.script(speech("Certainly.", 200))
    async with Call(engine=engine, events=ga_server_events) as call:
        await call.detect_turns({"type": "semantic_vad", "eagerness": "high"})
        await call.speak(600)
        await call.pause(200)  # a finished phrase so far...
        await call.speak(400)  # ...but the caller goes on
        await call.pause(1980)
        assert "input_audio_buffer.speech_stopped" not in types(await call.queued())
        await call.pause(20)
        assert (await call.next("input_audio_buffer.speech_stopped"))["audio_end_ms"] == 1200 + 2000
        await call.response()
        assert engine.requests[0].history[-1].text == "Book a table for two and"


async def test_idle_timeout_prompts_once_per_silence(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine()
    engine.script(speech("How can I help?", 600), speech("Go ahead.", 200))
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(engine=engine, caller=caller, events=ga_server_events) as call:
        await call.detect_turns({"type": "server_vad", "idle_timeout_ms": 5000})
        await call.send({"type": "response.create"})
        item_id = (await call.response())["response"]["output"][0]["id"]
        call.heard(item_id, 0)
        await call.pause(1000)  # the caller is still hearing the agent: not silence yet
        call.heard(item_id, 600)
        await call.pause(4980)
        assert "input_audio_buffer.timeout_triggered" not in types(await call.queued())
        await call.pause(20)
        timeout = await call.next("input_audio_buffer.timeout_triggered")
        assert (timeout["audio_start_ms"], timeout["audio_end_ms"]) == (1000, 6000)
        prompt = await call.response()
        assert prompt["response"]["output"][0]["content"][0]["transcript"] == call.agent.idle_prompt
        assert engine.requests[-1].say == call.agent.idle_prompt
        prompt_id = prompt["response"]["output"][0]["id"]
        call.heard(prompt_id, engine.say_ms)
        await call.pause(4980)
        assert "input_audio_buffer.timeout_triggered" not in types(await call.queued())
        await call.speak(300)  # the caller answers: the next silence has not begun
        await call.pause(300)
        await call.next("input_audio_buffer.committed")
        await call.response()
        assert not engine.scripts


async def test_a_beta_client_gets_the_same_turn_in_beta_names(beta_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine(transcripts=["Hello?"])
    engine.script([*speech("Hello there.", 600), Hold()])
    async with Call(engine=engine, events=beta_server_events, dialect="beta") as call:
        await call.speak(300)
        await call.pause(300)
        item_id = (await call.next("input_audio_buffer.committed"))["item_id"]
        assert (await call.next("conversation.item.created"))["item"]["id"] == item_id
        await call.next("response.audio_transcript.delta")
        await call.next("response.audio.delta")
        await call.speak(200)  # barge-in
        await call.next("input_audio_buffer.speech_started")
        assert (await call.response())["response"]["status_details"]["reason"] == "turn_detected"
        assert not {"conversation.item.done", "response.output_audio.delta"} & set(types(call.seen))
