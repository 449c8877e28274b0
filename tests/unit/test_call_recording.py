"""A recorded call in-process, on a paced line: the notice first, consent by key or by voice, and the file
read back with PyAV: the caller left, the agent right as the line played it (a barge-in's cut audio is
not in it), PCI entry and sensitive spans silent. The line's clock is the test's (`LineCaller.play`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import TypeAdapter

from tests.recording_reader import read_back
from tests.session_harness import FRAME_MS, Call, LineCaller, ScriptedEngine, speech, tone
from voxgate.agents import AgentConfig, Recording
from voxgate.audio.stereo import StereoMix
from voxgate.engines.base import TextDelta
from voxgate.session.call_recording import CallRecording
from voxgate.session.consent import spoken_answer

LOUD_FLOOR = 1000  # a 20 ms window louder than this (peak) carries speech or tone; silence is 0


def recorded_agent(**policy: Any) -> AgentConfig:
    return AgentConfig(name="recorded", recording=Recording(enabled=True, notice="This call is recorded.", **policy))


def loud_ms(channel: np.ndarray, rate: int) -> list[bool]:
    """Per 20 ms window: is it loud?"""
    size = rate * FRAME_MS // 1000
    whole = channel[: channel.size - channel.size % size].reshape(-1, size)
    return [bool(np.abs(w).max() > LOUD_FLOOR) for w in whole]


async def talk(call: Call, caller: LineCaller, ms: float, *, loud: bool = False) -> None:
    """`ms` of real time: the caller's line carries speech or silence, the agent's line plays what is due."""
    for _ in range(round(ms / FRAME_MS)):
        await call.append(tone(FRAME_MS) if loud else np.zeros(int(24 * FRAME_MS), dtype=np.int16))
        caller.play(FRAME_MS)


@pytest.mark.parametrize("fmt", ["wav", "opus"])
async def test_stereo_channels_hold_the_caller_and_what_the_caller_heard_of_the_agent(
        tmp_path: Path, fmt: str, ga_server_events: TypeAdapter[Any]) -> None:
    """The notice plays first; a reply of 1200 ms is cut by a barge-in: the agent's channel has the notice
    and what was heard of the reply (the truncation point), no more; the caller's channel the caller's 200 ms."""
    path = tmp_path / f"call.{fmt}"
    engine = ScriptedEngine()
    engine.script(speech("One two three four five six.", 1200), [TextDelta("Okay.")])
    caller = LineCaller()
    recording = CallRecording(path, "wav" if fmt == "wav" else "opus")
    async with Call(recorded_agent(format=fmt), engine=engine, caller=caller, events=ga_server_events,
                    recording=recording) as call:
        notice = await call.response()
        assert notice["response"]["output"][0]["content"][0]["transcript"] == "This call is recorded."
        await talk(call, caller, 600)  # the notice's 400 ms, then quiet
        await call.send({"type": "response.create"})
        await call.response()
        await talk(call, caller, 600)
        await talk(call, caller, 200, loud=True)  # barge-in: the rest of the reply is dropped
        heard_ms = (await call.next("conversation.item.truncated"))["audio_end_ms"]
        await talk(call, caller, 1000)
    assert path.is_file()
    pcm, rate = read_back(path)
    left, right = loud_ms(pcm[0], rate), loud_ms(pcm[1], rate)
    # Opus smears a frame's edges into its neighbours: count whole windows, allow one either side.
    agent_windows = sum(right)
    assert heard_ms < 1200
    assert abs(agent_windows - (400 + heard_ms) // FRAME_MS) <= 2, (agent_windows, heard_ms)
    caller_windows = sum(left)
    assert abs(caller_windows - 200 // FRAME_MS) <= 2, caller_windows
    first_agent = right.index(True)
    assert first_agent <= 2, "the notice opens the recording"
    metadata = call.session.record_metadata["recording"]
    assert metadata["format"] == fmt and metadata["consent"]["state"] == "notice"


async def test_a_pci_entry_and_a_span_marked_sensitive_are_silent_on_both_channels(
        tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    path = tmp_path / "call.wav"
    caller = LineCaller()
    recording = CallRecording(path, "wav")
    engine = ScriptedEngine()
    engine.script([TextDelta("Thank you.")])  # the answer to the entry's '#'
    async with Call(recorded_agent(format="wav"), engine=engine, caller=caller, events=ga_server_events,
                    recording=recording) as call:
        await call.response()
        await call.detect_turns(None)  # the caller's sounds here are for the recording, not turns
        await talk(call, caller, 400)
        await talk(call, caller, 200, loud=True)
        call.session.keypad.ask("pay_invoice", "card_number", 0)  # the brain asks for a card on the keypad
        await talk(call, caller, 400, loud=True)  # the key tones, as heard on the line
        call.press("4")
        call.press("#")
        call.session.keypad.take_entry()  # the brain takes the typed value: the entry is over
        await talk(call, caller, 200, loud=True)
        call.session.mark_sensitive(True)  # an operator marks a span (the control API does this)
        await talk(call, caller, 300, loud=True)
        call.session.mark_sensitive(False)
        await talk(call, caller, 200, loud=True)
    pcm, rate = read_back(path)
    left = loud_ms(pcm[0], rate)
    silenced = call.session.record_metadata["recording"]["silenced"]
    assert len(silenced) == 2, silenced
    for start, end in silenced:
        span = pcm[:, int((start + 0.001) * rate): int((end - 0.001) * rate)]  # the spans are kept to the ms
        assert span.size and not np.abs(span).max(), (start, end)  # both channels
    # Loud before, between and after the spans: only the spans were silenced.
    assert sum(left) >= (200 + 200 + 200) // FRAME_MS - 6, sum(left)
    assert silenced[0][1] - silenced[0][0] >= 0.4 and silenced[1][1] - silenced[1][0] >= 0.3


async def test_consent_by_keypad_agrees_and_the_answer_is_kept(
        tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    path = tmp_path / "call.ogg"
    engine = ScriptedEngine()
    async with Call(recorded_agent(consent="keypad"), engine=engine, events=ga_server_events,
                    recording=CallRecording(path, "opus")) as call:
        asked = await call.response()
        said = asked["response"]["output"][0]["content"][0]["transcript"]
        assert said.startswith("This call is recorded.") and "Press 1" in said
        await call.send({"type": "response.create"})  # the app may not talk past the question
        error = await call.next("error")
        assert error["error"]["code"] == "consent_pending"
        call.press("1")
        thanks = await call.response()
        assert thanks["response"]["output"][0]["content"][0]["transcript"] == "Thank you."
    consent = call.session.record_metadata["recording"]["consent"]
    assert consent == {"mode": "keypad", "state": "agreed", "by": "keypad", "answer": "1"}
    assert path.is_file()


async def test_a_caller_who_declines_is_not_recorded(tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    path = tmp_path / "call.wav"
    async with Call(recorded_agent(consent="either", format="wav"), events=ga_server_events,
                    recording=CallRecording(path, "wav")) as call:
        await call.response()
        await call.pause(600)  # audio taken while asking, bound for the file until the answer
        call.press("2")
        declined = await call.response()
        assert declined["response"]["output"][0]["content"][0]["transcript"] == \
            "All right, this call will not be recorded."
        assert call.session.recording is None
    assert not path.exists()
    assert call.session.record_metadata["recording"]["consent"]["state"] == "declined"


async def test_consent_by_voice_is_heard_before_any_reply(tmp_path: Path, ga_server_events: TypeAdapter[Any]) -> None:
    """A spoken yes (transcribed) answers the question; the engine is never asked for a reply to it."""
    engine = ScriptedEngine(transcripts=["um, what?", "Yes, that's fine."])
    path = tmp_path / "call.wav"
    async with Call(recorded_agent(consent="voice", format="wav"), engine=engine, events=ga_server_events,
                    recording=CallRecording(path, "wav")) as call:
        await call.response()
        await call.speak(300)
        await call.pause(400)
        again = await call.response()  # not understood: asked again
        assert "Press 1" in again["response"]["output"][0]["content"][0]["transcript"]
        await call.speak(300)
        await call.pause(400)
        thanks = await call.response()
        assert thanks["response"]["output"][0]["content"][0]["transcript"] == "Thank you."
    consent = call.session.record_metadata["recording"]["consent"]
    assert consent["state"] == "agreed" and consent["by"] == "voice" and consent["answer"] == "Yes, that's fine."
    assert all(r.say is not None for r in engine.requests), "the engine was asked to reply to the answer"


@pytest.mark.parametrize(("said", "verdict"), [
    ("yes", True), ("Yeah, sure.", True), ("okay", True), ("I agree", True), ("No.", False),
    ("I don't agree", False), ("nope", False), ("what did you say", None), ("", None), ("yesterday", None),
    # yes in the words of a no, and no in the words of a yes
    ("Sure, no problem.", True), ("No problem", True), ("Yes, I don't mind", True), ("I don\u2019t mind.", True),
    ("No, I don't mind.", True), ("no objection", True), ("I don't mind, but no", False),
    ("Absolutely not", False), ("Of course not.", False), ("I'd rather you didn't", False), ("Not really", False),
    ("not right now", False), ("I object", False), ("Yes. Actually, no.", False),
    # other ways to agree, and not knowing
    ("Absolutely", True), ("Sounds good", True), ("I consent", True), ("Uh-huh.", True), ("Certainly", True),
    ("Alright", True), ("I don't know", None), ("Not sure", None), ("Could you say that again?", None),
])
def test_spoken_answers(said: str, verdict: bool | None) -> None:
    assert spoken_answer(said) is verdict


def test_a_side_that_falls_behind_is_filled_with_silence_up_to_the_skew() -> None:
    mix = StereoMix(rate=16000, max_skew_ms=100)
    mix.caller(np.full(16000, 5, dtype=np.int16), 16000)  # a second of caller, nothing from the agent
    out = mix.take()
    assert out.shape == (16000 - 1600, 2) and not out[:, 1].any() and (out[:, 0] == 5).all()
    mix.agent(np.full(3200, 7, dtype=np.int16), 16000)  # 200 ms: the agent's side now leads by 100 ms
    out = mix.take()
    assert out.shape[0] == 1600 and (out[:, 0] == 5).all() and (out[:, 1] == 7).all()
    tail = mix.flush()  # the call ends: the caller's side is filled with silence under the agent's last 100 ms
    assert tail.shape[0] == 1600 and not tail[:, 0].any() and (tail[:, 1] == 7).all()
    assert mix.written == 16000 + 1600
