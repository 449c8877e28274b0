"""Key presses in one Session, in-process: menu keys reach the engine as a key press and are answered like
an utterance, and a PCI value typed on the keypad reaches only the tool that needs it: no server event,
conversation item or engine history ever holds the digits."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from tests.session_harness import Call, Hold, ScriptedEngine, Step, TestCaller, speech, types
from voxgate.agents import AgentConfig, Intent, ToolDefinition
from voxgate.engines.base import ResponseRequest, ToolCall

CARD = "4111111111111111"
MASKED = "************1111"
MENU = AgentConfig(name="menu", intents=[Intent(name="billing", reply="Billing.")], dtmf_menu={"1": "billing"})
CARD_PARAMETERS = {"type": "object", "properties": {"card": {"type": "string"}}, "required": ["card"]}


async def pay(card: str) -> dict[str, Any]:
    """The PCI tool of these tests: it is the one place the typed digits may reach."""
    return {"paid": card == CARD}


async def test_a_menu_key_is_answered_and_other_keys_are_only_reported(ga_server_events: TypeAdapter[Any]) -> None:
    def menu(request: ResponseRequest) -> list[Step]:
        return speech(f"You pressed {request.keypad.take_menu_key()}: billing.", 400)

    engine = ScriptedEngine()
    engine.script(menu)
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(MENU, engine=engine, caller=caller,
                    events=ga_server_events) as call:
        call.press("5")
        pressed = await call.next("input_audio_buffer.dtmf_event_received")
        assert pressed["event"] == "5" and "event_id" not in pressed
        call.press("1")
        assert (await call.next("input_audio_buffer.dtmf_event_received"))["event"] == "1"
        done = await call.response()
        assert done["response"]["output"][0]["content"][0]["transcript"] == "You pressed 1: billing."
        assert engine.requests[0].keypad.pressed == ["5", "1"]
        assert len(engine.requests) == 1  # the 5 was not a menu choice


async def test_a_menu_key_interrupts_the_agent(ga_server_events: TypeAdapter[Any]) -> None:
    engine = ScriptedEngine()
    engine.script([*speech("Welcome to Acme. For billing press one.", 1000), Hold()], speech("Billing.", 200))
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(MENU, engine=engine, caller=caller,
                    events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        item_id = (await call.next("response.output_item.added"))["item"]["id"]
        await call.next("response.output_audio.delta")
        call.heard(item_id, 200)
        call.press("1")
        assert (await call.response())["response"]["status_details"]["reason"] == "turn_detected"
        assert (await call.next("conversation.item.truncated"))["audio_end_ms"] == 200
        assert (await call.response())["response"]["status"] == "completed"
        assert engine.requests[1].keypad.menu_key == "1"


async def test_a_card_typed_on_the_keypad_reaches_the_tool_and_nothing_else(ga_server_events: TypeAdapter[Any]) -> None:
    agent = AgentConfig(name="payments", pci_mode=True, tools=[ToolDefinition(
        name="pay", pci=True, parameters=CARD_PARAMETERS, handler=f"{__name__}:pay")])

    def ask(request: ResponseRequest) -> list[Step]:  # what the flow brain does for a PCI argument
        request.keypad.ask("pay", "card", tries=0)
        return speech("Please type your card number, then press the pound key.", 600)

    def charge(request: ResponseRequest) -> list[Step]:
        entry = request.keypad.take_entry()
        assert entry is not None and entry.done
        request.keypad.vault_for("pay").values["card"] = entry.digits
        return [ToolCall("pay", json.dumps({"card": MASKED}), "call_pay")]

    def confirm(request: ResponseRequest) -> list[Step]:
        paid = json.loads(request.history[-1].output)["paid"]
        return speech("Your payment went through." if paid else "That card did not work.", 400)

    engine = ScriptedEngine()
    engine.script(ask, charge, confirm)
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(agent, engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        await call.response()
        for key in "5500*":  # a false start, cleared with star as IVRs do
            call.press(key)
        for key in CARD:
            call.press(key)
        assert types(await call.queued()) == []  # not one event for a PCI key
        assert len(engine.requests) == 1
        call.press("#")
        done = await call.response()
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Your payment went through."
        assert call.session.keypad.vault is None  # used once, then gone

        for request in engine.requests:
            assert all(CARD not in entry.arguments + entry.output + entry.text for entry in request.history)
        assert engine.requests[-1].history[-2].arguments == json.dumps({"card": MASKED})
        wire = json.dumps(call.seen)
        assert CARD not in wire and "5500" not in wire
        assert call.session.keypad.pressed == []  # PCI keys are not kept as menu presses either


async def test_a_keys_in_band_tone_is_no_turn_of_the_callers(ga_server_events: TypeAdapter[Any]) -> None:
    """Carriers pass a key's tones on the line beside its key event: loud enough for the VAD, they must not
    make a turn (whose reply would ask for the card again and drop the digits typed so far)."""
    agent = AgentConfig(name="payments", pci_mode=True, tools=[ToolDefinition(
        name="pay", pci=True, parameters=CARD_PARAMETERS, handler=f"{__name__}:pay")])
    typed: list[str] = []

    def ask(request: ResponseRequest) -> list[Step]:
        request.keypad.ask("pay", "card", tries=0)
        return speech("Please type your card number, then press the pound key.", 600)

    def charge(request: ResponseRequest) -> list[Step]:
        entry = request.keypad.take_entry()
        assert entry is not None and entry.done
        typed.append(entry.digits)
        request.keypad.vault_for("pay").values["card"] = entry.digits
        return [ToolCall("pay", json.dumps({"card": MASKED}), "call_pay")]

    def confirm(request: ResponseRequest) -> list[Step]:
        return speech("Your payment went through.", 400)

    engine = ScriptedEngine(transcripts=["Beep."])  # what a transcriber might make of tones
    engine.script(ask, charge, confirm)
    caller = TestCaller(server_side=True, transport="twilio")
    async with Call(agent, engine=engine, caller=caller, events=ga_server_events) as call:
        await call.send({"type": "response.create"})
        await call.response()
        for key in CARD + "#":
            await call.speak(240)  # the key's tone: long enough to start a turn
            call.press(key)  # its key event, as the tone ends
            await call.pause(120)  # the gap to the next key: shorter than a turn's closing silence
        done = await call.response()
        assert done["response"]["output"][0]["content"][0]["transcript"] == "Your payment went through."
        await call.pause(1000)  # any turn left open would close here
        seen = types(call.seen + await call.queued())
        assert "input_audio_buffer.speech_started" in seen  # the tones did reach the VAD ...
        assert "input_audio_buffer.committed" not in seen  # ... and made no turn
        assert typed == [CARD] and len(engine.requests) == 3
