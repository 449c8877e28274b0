"""The flow brain on the real acme agent: routing, slot filling dialogs, and replies to tool results."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.agents import AgentConfig, load_agent
from voxgate.engines.base import HistoryEntry, ResponseRequest, ToolSpec
from voxgate.engines.local.brains.base import BrainDecision, CallTool, Say
from voxgate.engines.local.brains.flow import (
    AI_ANSWER,
    AI_ANSWER_OFFER,
    MAX_UTTERANCE_CHARS,
    NO_ANSWER,
    NO_ANSWER_OFFER,
    PRESENCE_ANSWER,
    FlowBrain,
    describe,
    heard,
    question_for,
    render,
    spoken,
)

ACME = Path(__file__).resolve().parents[2] / "examples" / "agents" / "acme.yaml"
WEATHER = ToolSpec("get_weather", "Get the current weather for a city.",
                   {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                    "required": ["city"]}, server=False)
THERMOSTAT = ToolSpec("set_thermostat", "Set the home thermostat to a target temperature.",
                      {"type": "object", "properties": {
                          "temperature": {"type": "number", "description": "Target temperature"},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                       "required": ["temperature", "unit"]}, server=False)


@pytest.fixture(scope="module")
def agent() -> AgentConfig:
    return load_agent(ACME)


class Call:
    """One caller's session: keeps the history and the brain's state between turns."""

    def __init__(self, agent: AgentConfig, client_tools: tuple[ToolSpec, ...] = (), tool_choice: Any = "auto",
                 today: str = "2025-03-12") -> None:
        self.agent = agent
        self.brain = FlowBrain(today=lambda: date(2000, 1, 1))  # the state's "today" must win
        self.tools = [ToolSpec(t.name, t.description, t.parameters, True) for t in agent.tools]
        self.tools += list(client_tools)
        self.tool_choice = tool_choice
        self.history: list[HistoryEntry] = []
        self.state: dict[str, Any] = {"today": today}
        self.calls = 0

    def _decide(self) -> BrainDecision:
        request = ResponseRequest(history=list(self.history), instructions="", tools=self.tools,
                                  tool_choice=self.tool_choice, modalities=["audio"], voice="joe",
                                  agent=self.agent, state=self.state)
        decision = self.brain.decide(request)
        if isinstance(decision, Say):
            self.history.append(HistoryEntry(kind="assistant", text=decision.text))
        return decision

    def user(self, text: str) -> BrainDecision:
        self.history.append(HistoryEntry(kind="user", text=text))
        return self._decide()

    def tool_output(self, call: CallTool, output: Any) -> BrainDecision:
        self.calls += 1
        call_id = f"call_{self.calls}"
        self.history.append(HistoryEntry(kind="function_call", name=call.name, call_id=call_id,
                                         arguments=json.dumps(call.arguments)))
        self.history.append(HistoryEntry(kind="function_call_output", call_id=call_id,
                                         output=output if isinstance(output, str) else json.dumps(output)))
        return self._decide()


# -- routing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("said", "tool", "arguments"), [
    ("Where's my order 4567?", "lookup_order", {"order_id": "4567"}),
    ("can you check order number twelve thirty four", "lookup_order", {"order_id": "1234"}),
    ("I'd like to book an appointment tomorrow at three pm", "book_appointment",
     {"date": "2025-03-13", "time": "15:00"}),
    ("Schedule me next Friday at noon.", "book_appointment", {"date": "2025-03-14", "time": "12:00"}),
    ("book the 3rd of December at 10:30 am", "book_appointment", {"date": "2025-12-03", "time": "10:30"}),
    ("You can hang up now.", "end_call", {}),
])
def test_routes_to_tools_with_arguments(agent: AgentConfig, said: str, tool: str,
                                        arguments: dict[str, Any]) -> None:
    assert Call(agent).user(said) == CallTool(tool, arguments)


@pytest.mark.parametrize("said", ["talk to a human", "Can I speak to an agent?", "get me a real person",
                                  "I want a representative now"])
def test_escalation_carries_a_reason(agent: AgentConfig, said: str) -> None:
    decision = Call(agent).user(said)
    assert isinstance(decision, CallTool) and decision.name == "transfer_to_human"
    assert decision.arguments["reason"].strip()


@pytest.mark.parametrize(("said", "intent"), [
    ("hello there", "greeting"), ("thanks a lot!", "thanks"), ("okay bye", "goodbye"),
    ("when do you open on saturday?", "store_hours"), ("what can you do for me?", "capabilities"),
])
def test_small_talk_answers_from_templates(agent: AgentConfig, said: str, intent: str) -> None:
    decision = Call(agent).user(said)
    reply = next(i.reply for i in agent.intents if i.name == intent)
    assert decision == Say(reply)


@pytest.mark.parametrize("said", ["Are you a robot?", "Is this an AI?", "am I talking to a real person?",
                                  "Are you human?", "Wait, is this automated?", "Is that a person or a machine?",
                                  "are you real"])
def test_a_caller_who_asks_whether_it_is_a_machine_is_told_the_truth(agent: AgentConfig, said: str) -> None:
    assert Call(agent).user(said) == Say(AI_ANSWER + AI_ANSWER_OFFER)
    # an agent with no way to a person does not offer one
    alone = agent.model_copy(update={"tools": [t for t in agent.tools if t.name != "transfer_to_human"],
                                     "intents": [i for i in agent.intents if i.tool != "transfer_to_human"]})
    assert Call(alone).user(said) == Say(AI_ANSWER)


@pytest.mark.parametrize(("said", "tool"), [
    ("Is this a real person? I want to talk to a human", "transfer_to_human"),  # a request for a person
    ("are you able to check my order 4567", "lookup_order"),
])
def test_questions_that_only_start_like_the_machine_question_route_as_before(agent: AgentConfig, said: str,
                                                                            tool: str) -> None:
    decision = Call(agent).user(said)
    assert isinstance(decision, CallTool) and decision.name == tool


@pytest.mark.parametrize("said", ["Are you there?", "hello, are you still there?", "can you hear me?",
                                  "is anybody there"])
def test_a_caller_checking_the_line_is_answered(agent: AgentConfig, said: str) -> None:
    assert Call(agent).user(said) == Say(PRESENCE_ANSWER)


@pytest.mark.parametrize("said", ["I want to cancel my appointment", "cancel my order 4567",
                                  "I'd like a refund for order 4567"])
def test_undoing_what_no_tool_undoes_is_not_that_tool(agent: AgentConfig, said: str) -> None:
    """The demo agent books appointments and looks orders up; it cannot cancel or refund: the fallback (which
    offers a person), not a booking or a lookup."""
    assert Call(agent).user(said) == Say(agent.fallback)
    assert isinstance(decision := Call(agent).user("can I talk to a person about a refund"), CallTool)
    assert decision.name == "transfer_to_human"
    cancel = ToolSpec("cancel_appointment", "Cancel an existing appointment.",
                      {"type": "object", "properties": {"date": {"type": "string", "format": "date"}},
                       "required": ["date"]}, server=False)
    assert Call(agent, client_tools=(cancel,)).user("I want to cancel my appointment on Friday") == \
        CallTool("cancel_appointment", {"date": "2025-03-14"})


@pytest.mark.parametrize("said", ["I don't know it", "I can't remember", "no idea", "I don't have it with me"])
def test_a_caller_without_the_answer_is_offered_a_way_on_not_asked_again(agent: AgentConfig, said: str) -> None:
    call = Call(agent)
    assert call.user("where is my order") == Say("What's your order number?")
    assert call.user(said) == Say(NO_ANSWER + NO_ANSWER_OFFER)
    assert call.user("yes please connect me to someone") == CallTool(
        "transfer_to_human", {"reason": "yes please connect me to someone"})
    assert Call(agent).user("where is my order") == Say("What's your order number?")
    knows = Call(agent)
    knows.user("where is my order")
    assert knows.user("I don't know, maybe 4567") == CallTool("lookup_order", {"order_id": "4567"})


def test_a_reschedule_is_a_booking(agent: AgentConfig) -> None:
    assert Call(agent).user("I need to reschedule my appointment") == Say("What day and time would you like?")


@pytest.mark.parametrize("said", ["What's the capital of France?", "blah blah", "um", "Purple monkey dishwasher."])
def test_anything_else_gets_the_fallback(agent: AgentConfig, said: str) -> None:
    assert Call(agent).user(said) == Say(agent.fallback)


def test_client_tools_route_from_their_schema_alone(agent: AgentConfig) -> None:
    call = Call(agent, client_tools=(WEATHER, THERMOSTAT))
    assert call.user("what's the weather like in Paris?") == CallTool("get_weather", {"city": "Paris"})
    assert Call(agent, client_tools=(WEATHER, THERMOSTAT)).user("set the thermostat to 21 degrees celsius") == \
        CallTool("set_thermostat", {"temperature": 21, "unit": "celsius"})
    # The demo agent keeps its own tools beside a client's (`client_tools: extend` in acme.yaml): client
    # tools for other topics do not steal its order lookup...
    assert agent.client_tools == "extend"
    assert Call(agent, client_tools=(WEATHER, THERMOSTAT)).user("where is order 4567") == \
        CallTool("lookup_order", {"order_id": "4567"})
    # ... while an agent that leaves `client_tools` at its default gives a client that declared tools
    # those alone, as OpenAI does.
    replacing = agent.model_copy(update={"client_tools": "replace"})
    assert Call(replacing, client_tools=(WEATHER, THERMOSTAT)).user("where is order 4567") == \
        Say(agent.fallback)
    assert Call(replacing, client_tools=(WEATHER, THERMOSTAT)).user("what's the weather like in Paris?") == \
        CallTool("get_weather", {"city": "Paris"})


ORDER_STATUS = ToolSpec("get_order_status", "Get the status of a customer's order.",
                        {"type": "object",
                         "properties": {"order_id": {"type": "string", "description": "The order id"}},
                         "required": ["order_id"]}, False)
SHIPMENT = ToolSpec("check_shipment", "Check where a shipment is.",
                    {"type": "object", "properties": {"tracking_number": {"type": "string"}},
                     "required": ["tracking_number"]}, False)


@pytest.mark.parametrize(("said", "arguments"), [
    ("Where is order 777?", {"order_id": "777"}),
    ("Where is order 4567?", {"order_id": "4567"}),
    ("What's the status of my order 12345", {"order_id": "12345"}),
])
def test_a_client_tool_for_what_the_agent_also_does_is_the_one_called(agent: AgentConfig, said: str,
                                                                      arguments: dict[str, str]) -> None:
    """The first thing code written for OpenAI does: declare its own order tool. The demo agent has one
    too, with example phrases, and keeps it beside the client's; the client's is called, with the caller's
    number, not the demo data (and so on an agent whose tools the client's replace)."""
    assert Call(agent, client_tools=(ORDER_STATUS,)).user(said) == CallTool("get_order_status", arguments)
    replacing = agent.model_copy(update={"client_tools": "replace"})
    assert Call(replacing, client_tools=(ORDER_STATUS,)).user(said) == CallTool("get_order_status", arguments)


def test_a_client_tool_asks_for_what_its_schema_requires(agent: AgentConfig) -> None:
    call = Call(agent, client_tools=(SHIPMENT, ORDER_STATUS))
    asked = call.user("can you check my shipment")
    assert isinstance(asked, Say) and "tracking number" in asked.text.lower()
    assert call.user("it's 88123") == CallTool("check_shipment", {"tracking_number": "88123"})


def test_tool_choice(agent: AgentConfig) -> None:
    assert Call(agent, tool_choice="none").user("where is order 4567") == Say(agent.fallback)
    forced = Call(agent, tool_choice={"type": "function", "name": "lookup_order"}).user("hello, it's 4567")
    assert forced == CallTool("lookup_order", {"order_id": "4567"})


# -- dialogs ------------------------------------------------------------------------------------------------


def test_asks_for_a_missing_order_number_then_calls(agent: AgentConfig) -> None:
    call = Call(agent)
    assert call.user("I want to check my order") == Say("What's your order number?")
    assert call.user("it's four five six seven") == CallTool("lookup_order", {"order_id": "4567"})
    assert "pending" not in call.state["flow"]


def test_invalid_value_is_not_sent_and_the_question_repeats(agent: AgentConfig) -> None:
    call = Call(agent)
    call.user("check my order")
    decision = call.user("one two three")
    assert isinstance(decision, Say) and "4 to 10 digits" in decision.text
    assert call.user("1 2 3 4 5") == CallTool("lookup_order", {"order_id": "12345"})


def test_gives_up_after_repeated_misses(agent: AgentConfig) -> None:
    call = Call(agent)
    call.user("check my order")
    call.user("I don't know")
    call.user("hmm")
    assert call.user("no idea") == Say(agent.fallback)
    assert "pending" not in call.state["flow"]


def test_date_and_time_are_asked_together_then_one_by_one(agent: AgentConfig) -> None:
    call = Call(agent)
    assert call.user("I'd like to book an appointment") == Say("What day and time would you like?")
    assert call.user("next monday") == Say("What time would you like?")
    assert call.user("2:30 in the afternoon") == CallTool("book_appointment",
                                                          {"date": "2025-03-17", "time": "14:30"})


def test_change_of_topic_and_cancel_while_asking(agent: AgentConfig) -> None:
    call = Call(agent)
    call.user("check my order")
    decision = call.user("actually, let me talk to a person")
    assert isinstance(decision, CallTool) and decision.name == "transfer_to_human"
    call = Call(agent)
    call.user("book an appointment")
    assert call.user("never mind") == Say("Okay, no problem. Is there anything else I can help with?")
    assert "pending" not in call.state["flow"]


def test_free_text_slot_filled_by_the_next_answer(agent: AgentConfig) -> None:
    call = Call(agent, client_tools=(WEATHER, THERMOSTAT))
    assert call.user("What's the weather?") == Say("What's the city name?")
    assert call.user("Boston, please.") == CallTool("get_weather", {"city": "Boston"})
    call = Call(agent, client_tools=(WEATHER, THERMOSTAT))
    assert call.user("set the thermostat to 70") == Say("Which unit: celsius or fahrenheit?")
    assert call.user("fahrenheit") == CallTool("set_thermostat", {"temperature": 70, "unit": "fahrenheit"})


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="0123456789", min_size=4, max_size=10))
def test_any_spoken_order_number_fills_the_slot(agent: AgentConfig, digits: str) -> None:
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    call = Call(agent)
    call.user("I want to check on my order")
    assert call.user("it's " + " ".join(words[int(d)] for d in digits)) == \
        CallTool("lookup_order", {"order_id": digits})


def test_today_comes_from_the_state_or_the_clock(agent: AgentConfig) -> None:
    assert Call(agent, today="2025-06-30").user("book tomorrow at 10 am") == \
        CallTool("book_appointment", {"date": "2025-07-01", "time": "10:00"})
    brain = FlowBrain(today=lambda: date(2031, 1, 31))
    request = ResponseRequest(history=[HistoryEntry(kind="user", text="book tomorrow at 10 am")],
                              instructions="", tools=[], tool_choice="auto", modalities=["audio"],
                              voice="joe", agent=agent, state={})
    assert brain.decide(request) == CallTool("book_appointment", {"date": "2031-02-01", "time": "10:00"})


def test_no_user_turn_yet_greets(agent: AgentConfig) -> None:
    assert Call(agent)._decide() == Say(agent.greeting or "")


# -- tool results -------------------------------------------------------------------------------------------


def test_result_spoken_with_the_tools_template(agent: AgentConfig) -> None:
    call = Call(agent)
    decision = call.user("order 4567 please")
    assert isinstance(decision, CallTool)
    reply = call.tool_output(decision, {"order_id": "4567", "status": "shipped",
                                        "summary": "has shipped with UPS and should arrive tomorrow"})
    assert reply == Say("Order 4567 has shipped with UPS and should arrive tomorrow.", completes_task=True)


def test_booking_reply_speaks_dates_and_times(agent: AgentConfig) -> None:
    call = Call(agent)
    decision = call.user("book friday at 3 pm")
    assert isinstance(decision, CallTool)
    reply = call.tool_output(decision, {"appointment_id": 7, "date": "2025-03-14", "time": "15:00"})
    assert reply == Say("You're booked for Friday, March 14 at 3 PM. Your confirmation number is 7.",
                        completes_task=True)


def test_error_result_uses_say_error(agent: AgentConfig) -> None:
    call = Call(agent)
    decision = call.user("book friday at 3 pm")
    assert isinstance(decision, CallTool)
    reply = call.tool_output(decision, {"error": "that slot is already taken."})
    assert reply == Say("I'm sorry, that slot is already taken. Would you like to try another time?")


def test_transfer_speaks_the_handover_line(agent: AgentConfig) -> None:
    call = Call(agent)
    decision = call.user("let me talk to a human")
    assert isinstance(decision, CallTool)
    reply = call.tool_output(decision, {"ok": True})
    assert isinstance(reply, Say) and reply.text == agent.escalation.handover_line
    assert not reply.completes_task


def test_client_tool_result_without_template_is_a_sentence(agent: AgentConfig) -> None:
    call = Call(agent, client_tools=(WEATHER,))
    decision = call.user("weather in Paris")
    assert isinstance(decision, CallTool)
    reply = call.tool_output(decision, {"city": "Paris", "temperature_c": 18, "conditions": "cloudy"})
    assert reply == Say("The city is Paris, the temperature c is 18 and the conditions are cloudy.",
                        completes_task=True)
    failed = call.tool_output(decision, {"error": {"message": "service unavailable"}})
    assert failed == Say("Sorry, that didn't work: service unavailable.")


@given(st.dictionaries(st.text(alphabet="abcdefghij_", min_size=1, max_size=12),
                       st.one_of(st.integers(), st.text(alphabet="abc xyz.", max_size=20), st.booleans(), st.none(),
                                 st.lists(st.integers(), max_size=3)), max_size=6))
def test_described_results_never_read_json_aloud(result: dict[str, Any]) -> None:
    text = describe(result)
    assert text and not any(ch in text for ch in '{}[]"_')


def test_helpers() -> None:
    assert spoken("2025-12-03") == "Wednesday, December 3"
    assert spoken("09:30") == "9:30 AM" and spoken("12:00") == "noon" and spoken("17:00") == "5 PM"
    assert spoken(["a", "b", "c"]) == "a, b and c"
    assert render("Order {order_id} {missing}", {"order_id": "1"}) is None
    assert describe("plain text answer") == "plain text answer."
    assert describe({"ok": True}) == "Done."
    assert describe({"order_id": "777", "status": "out for delivery"}) == "The status is out for delivery."
    assert describe({"items": 3, "address": "12 Main St"}) == "The items are 3 and the address is 12 Main St."
    assert describe([1, 2]) == "I found 1 and 2."
    props = {"reason": {"type": "string", "description": "Why the caller wants a person"}}
    assert question_for(["reason"], props) == "Can you tell me why you want a person?"
    assert question_for(["x"], {"x": {"type": "string"}}) == "What's the x?"


# -- card numbers and SSNs ----------------------------------------------------------------------------------

_PRIVATE = [
    ("my social is 123 45 6789", "123456789"),
    ("where is my order? my social is 123 45 6789", "123456789"),
    ("check order 123-45-6789", "123456789"),
    ("my social security number is 123,456,789", "123456789"),
    ("my social is one two three four five six seven eight nine", "123456789"),
    ("check my order 4,111,111,111,111,111", "4111111111111111"),
    ("order number 4111 1111 1111 1111", "4111111111111111"),
    ("order \uff14\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11 \uff11\uff11\uff11\uff11",
     "4111111111111111"),
    ("order four one one one one one one one one one one one one one one one", "4111111111111111"),
    ("get me a person, my card 4111-1111-1111-1111 was charged twice", "4111111111111111"),
]


def _digits_in(decision: BrainDecision) -> str:
    said = decision.text if isinstance(decision, Say) else json.dumps(decision.arguments)
    return "".join(ch for ch in said if ch.isdigit())


@pytest.mark.parametrize(("said", "private"), _PRIVATE)
def test_a_card_number_or_ssn_is_never_an_argument_nor_spoken_back(agent: AgentConfig, said: str,
                                                                   private: str) -> None:
    plain = agent.model_copy(update={"pci_mode": False})  # no keypad: only the brain stands in the way
    first = Call(plain)
    answered = Call(plain)
    answered.user("I want to check my order")
    paying = Call(plain)
    paying.user("I want to pay invoice 20931")
    for decision in (first.user(said), answered.user(said), paying.user(said), answered.user(said)):
        digits = _digits_in(decision)
        assert not any(private[i:i + 4] in digits for i in range(len(private) - 3)), (said, decision)


def test_an_ssn_turns_into_a_question_not_a_lookup(agent: AgentConfig) -> None:
    call = Call(agent)
    call.user("I want to check my order")
    decision = call.user("my social is 123 45 6789")
    assert isinstance(decision, Say) and "order number" in decision.text
    assert call.user("it's 4567") == CallTool("lookup_order", {"order_id": "4567"})  # real ones still work


def test_a_typed_item_is_read_up_to_a_bound(agent: AgentConfig) -> None:
    said = "where is my order 4567? " + "and also " * 50_000
    assert Call(agent).user(said) == CallTool("lookup_order", {"order_id": "4567"})
    assert heard(said) == heard(said[:MAX_UTTERANCE_CHARS]) and len(heard(said)) <= MAX_UTTERANCE_CHARS
    straddling = heard("x" * (MAX_UTTERANCE_CHARS - 8) + " 4111 1111 1111 1111")
    assert straddling.endswith(" **** **") and not any(ch.isdigit() for ch in straddling)  # no part of a card
