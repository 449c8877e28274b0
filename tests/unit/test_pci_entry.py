"""PCI on every door, in-process: a card number said aloud (as words) is masked before the engine's
context, the events, the record and the logs see it, and a caller in PCI mode who says one is cut off and
told to use the keypad; a browser page's keypad (the `input_audio_buffer.dtmf_event` client event) types a
PCI entry as a phone's does."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import TypeAdapter

from tests.session_harness import Call, Hold, ScriptedEngine, speech
from voxgate.agents import AgentConfig
from voxgate.engines.base import TextDelta

SPOKEN_CARD = "My card is four one one one one one one one one one one one one one one one."
CARD_TRACES = ("4111", "four one one one", "1111 1111")


def pci_agent() -> AgentConfig:
    return AgentConfig(name="payments", pci_mode=True)


def no_card(text: str) -> bool:
    lowered = text.lower()
    return not any(trace in lowered for trace in CARD_TRACES)


async def test_a_card_said_aloud_is_masked_everywhere_and_the_caller_is_told_to_use_the_keypad(
        ga_server_events: TypeAdapter[Any], caplog: pytest.LogCaptureFixture) -> None:
    engine = ScriptedEngine(transcripts=[SPOKEN_CARD])
    engine.script([Hold(), *speech("Thanks, charging that card.", 400)])  # the reply it must not finish
    caplog.set_level(logging.DEBUG)
    async with Call(pci_agent(), engine=engine, events=ga_server_events) as call:
        await call.send({"type": "session.update", "session": {"type": "realtime", "audio": {"input": {
            "transcription": {"model": "whisper-1"}}}}})
        await call.speak(600)
        await call.pause(400)
        done = await call.next("response.done")
        assert done["response"]["status"] == "cancelled"
        keypad = await call.response()
        said = keypad["response"]["output"][0]["content"][0]["transcript"]
        assert said == pci_agent().pci_keypad_line
        user = next(i for i in call.session.conversation.visible() if i.role == "user")
        assert user.content[0].transcript == "My card is **** **** **** 1111."
    for request in engine.requests:
        assert no_card(repr(request.history)), request.history
    assert all(no_card(str(event)) for event in call.seen)
    assert all(no_card(record.getMessage()) for record in caplog.records)


async def test_a_page_keypad_types_a_pci_entry_that_no_event_shows(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine()
    engine.script([TextDelta("Thank you.")])  # the answer to '#'
    async with Call(pci_agent(), engine=engine, events=ga_server_events) as call:
        call.session.keypad.ask("pay_invoice", "card_number", 0)  # the brain asks for the card
        for key in "4111111111111111#":
            await call.send({"type": "input_audio_buffer.dtmf_event", "event": key})
        await call.response()
        entry = call.session.keypad.take_entry()
        assert entry is not None and entry.digits == "4111111111111111"
        await call.send({"type": "input_audio_buffer.dtmf_event", "event": "5"})  # outside an entry: reported
        received = await call.next("input_audio_buffer.dtmf_event_received")
        assert received["event"] == "5"
        await call.send({"type": "input_audio_buffer.dtmf_event", "event": "55"})
        error = await call.next("error")
        assert error["error"]["code"] == "invalid_value" and error["error"]["param"] == "event"
    assert all(no_card(str(event)) for event in call.seen)
    assert [e["event"] for e in call.seen if e["type"] == "input_audio_buffer.dtmf_event_received"] == ["5"]


TYPED_CARDS = ("my card is 4111 1111 1111 1111", "or 4,111,111,111,111,111", "and ４１１１１１１１１１１１１１１１")


async def test_a_card_typed_into_any_text_item_is_masked_before_the_engine_and_the_caller_told_to_use_the_keypad(
        ga_server_events: TypeAdapter[Any], caplog: pytest.LogCaptureFixture) -> None:
    """A message's text, a client's function output and an inline `response.input` message: each card in
    them is masked in the item itself, so the engine's context, every event and every log line are free of
    it; in PCI mode the agent follows its answer to a typed card with the keypad line."""
    engine = ScriptedEngine()
    engine.script([TextDelta("Noted.")], [TextDelta("Okay.")])
    caplog.set_level(logging.DEBUG)
    keypad_line = pci_agent().pci_keypad_line
    async with Call(pci_agent(), engine=engine, events=ga_server_events) as call:
        await call.send({"type": "session.update", "session": {"type": "realtime", "output_modalities": ["text"]}})
        await call.next("session.updated")
        await call.send({"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": " ".join(TYPED_CARDS)}]}})
        added = await call.next("conversation.item.added")
        assert added["item"]["content"][0]["text"] == (
            "my card is **** **** **** 1111 or **** **** **** 1111 and **** **** **** 1111")
        await call.send({"type": "response.create"})
        answer = await call.response()  # the client's answer first, then the keypad line
        assert answer["response"]["output"][0]["content"][0]["text"] == "Noted."
        keypad = await call.response()
        assert keypad["response"]["output"][0]["content"][0]["text"] == keypad_line
        await call.send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": "call_1", "output": '{"card": "4111111111111111"}'}})
        output = await call.next("conversation.item.added")
        assert output["item"]["output"] == '{"card": "**** **** **** 1111"}'
        await call.send({"type": "response.create", "response": {"conversation": "none", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": TYPED_CARDS[1]}]}]}})
        await call.response()
        await call.response()
        assert [r.say for r in engine.requests] == [None, keypad_line, None, keypad_line]
        assert engine.requests[2].history[0].text == "or **** **** **** 1111"
    for request in engine.requests:
        assert no_card(repr(request.history)), request.history
    assert all(no_card(str(event)) for event in call.seen)
    assert all(no_card(record.getMessage()) for record in caplog.records)
