"""Key presses in the flow brain: menu choices, and PCI arguments typed on the keypad (acme's pay_invoice)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.agents import AgentConfig, load_agent
from voxgate.engines.base import HistoryEntry, ResponseRequest, ToolSpec
from voxgate.engines.local.brains.base import BrainDecision, CallTool, Say
from voxgate.engines.local.brains.flow import FlowBrain
from voxgate.session.keypad import Keypad, PciVault

ACME = Path(__file__).resolve().parents[2] / "examples" / "agents" / "acme.yaml"
CARD = "4111111111111111"
INVOICE = "20931"


@pytest.fixture(scope="module")
def agent() -> AgentConfig:
    return load_agent(ACME)


class Phone:
    """One call as the session drives the brain: key presses go onto the keypad, words into the history."""

    def __init__(self, agent: AgentConfig) -> None:
        self.agent = agent
        self.brain = FlowBrain()
        self.tools = [ToolSpec(t.name, t.description, t.parameters, True) for t in agent.tools]
        self.history: list[HistoryEntry] = [HistoryEntry("assistant", agent.greeting or "")]
        self.state: dict[str, Any] = {"today": "2025-03-12"}
        self.keypad = Keypad()

    def decide(self) -> BrainDecision:
        request = ResponseRequest(history=list(self.history), instructions="", tools=self.tools, tool_choice="auto",
                                  modalities=["text"], voice="joe", agent=self.agent, state=self.state,
                                  keypad=self.keypad)
        decision = self.brain.decide(request)
        if isinstance(decision, Say):
            self.history.append(HistoryEntry("assistant", decision.text))
        return decision

    def press(self, key: str) -> BrainDecision:
        self.keypad.menu_key = key  # what Session.dtmf_received leaves for the next response
        return self.decide()

    def type(self, digits: str) -> BrainDecision:
        entry = self.keypad.entry  # the session adds digits while the brain waits for them
        assert entry is not None
        entry.digits = digits
        entry.done = True
        return self.decide()

    def say(self, text: str) -> BrainDecision:
        self.history.append(HistoryEntry("user", text))
        return self.decide()

    def waiting_for(self) -> str | None:
        """The argument the brain waits to be typed."""
        return self.keypad.entry.argument if self.keypad.entry is not None else None

    def visible(self) -> str:
        """Everything the conversation (and so a model, a transcript, a record) holds."""
        return json.dumps([e.__dict__ for e in self.history])


def test_menu_keys_act_like_asking(agent: AgentConfig) -> None:
    phone = Phone(agent)
    asked = phone.press("1")
    assert isinstance(asked, Say) and "order number" in asked.text
    assert phone.state["flow"]["route"] == "lookup_order"
    assert phone.say("4567") == CallTool("lookup_order", {"order_id": "4567"})
    assert phone.keypad.menu_key is None

    booking = Phone(agent).press("2")
    assert isinstance(booking, Say) and "day and time" in booking.text
    human = Phone(agent).press("0")
    assert isinstance(human, CallTool) and human.name == "transfer_to_human"
    assert human.arguments["reason"]


def test_a_menu_key_overrides_a_question_being_asked(agent: AgentConfig) -> None:
    phone = Phone(agent)
    phone.say("I'd like to book an appointment")
    assert phone.press("1") == Say("What's your order number?")
    assert phone.state["flow"]["pending"]["tool"] == "lookup_order"


def test_pci_arguments_are_typed_and_never_visible(agent: AgentConfig) -> None:
    phone = Phone(agent)
    ask_invoice = phone.say("I want to pay my invoice, it is 7788")
    assert isinstance(ask_invoice, Say) and "keypad" in ask_invoice.text and "invoice number" in ask_invoice.text
    assert phone.waiting_for() == "invoice_id"  # spoken digits are never taken
    ask_card = phone.type(INVOICE)
    assert isinstance(ask_card, Say) and "card number" in ask_card.text
    call = phone.type(CARD)
    assert call == CallTool("pay_invoice", {"invoice_id": "****0931", "card_number": "****1111"})
    assert phone.keypad.vault == PciVault("pay_invoice", {"invoice_id": INVOICE, "card_number": CARD})
    assert phone.keypad.entry is None
    assert CARD not in phone.visible() and INVOICE not in phone.visible()


def test_a_bad_entry_is_asked_again_then_given_up(agent: AgentConfig) -> None:
    phone = Phone(agent)
    phone.press("3")
    retry = phone.type("12")  # too short for an invoice number
    assert isinstance(retry, Say) and retry.text.startswith("Sorry") and "invoice number" in retry.text
    phone.type("")
    assert phone.type("9") == Say(agent.fallback)
    assert phone.keypad.entry is None and phone.keypad.vault is None


def test_words_while_typing_are_never_the_value(agent: AgentConfig) -> None:
    phone = Phone(agent)
    phone.press("3")
    reminder = phone.say(f"it's {INVOICE}")
    assert isinstance(reminder, Say) and "keypad" in reminder.text
    assert phone.waiting_for() == "invoice_id" and phone.keypad.entry.digits == ""
    switched = phone.say("actually, what are your opening hours")
    assert isinstance(switched, Say) and "Saturday" in switched.text
    assert phone.keypad.entry is None
    phone.press("3")
    phone.type(INVOICE)
    cancelled = phone.say("never mind")
    assert isinstance(cancelled, Say) and "no problem" in cancelled.text
    assert phone.keypad.entry is None and phone.keypad.vault is None


def test_words_in_the_middle_of_an_entry_keep_the_digits_typed_so_far(agent: AgentConfig) -> None:
    phone = Phone(agent)
    phone.press("3")
    assert phone.keypad.entry is not None
    phone.keypad.entry.digits = INVOICE[:3]  # typed, not yet ended with '#'
    reminder = phone.say("hold on a second")
    assert isinstance(reminder, Say) and "keypad" in reminder.text
    assert phone.waiting_for() == "invoice_id" and phone.keypad.entry.digits == INVOICE[:3]
    assert INVOICE[:3] not in phone.visible()


def test_without_pci_mode_the_arguments_are_spoken(agent: AgentConfig) -> None:
    plain = agent.model_copy(update={"pci_mode": False})
    phone = Phone(plain)
    decision = phone.say(f"I want to pay invoice {INVOICE}")
    assert isinstance(decision, Say) and "keypad" not in decision.text
    assert phone.keypad.entry is None


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789", min_size=0, max_size=22))
def test_any_typed_card_reaches_only_the_vault(agent: AgentConfig, digits: str) -> None:
    phone = Phone(agent)
    phone.press("3")
    phone.type(INVOICE)
    decision = phone.type(digits)
    valid = 13 <= len(digits) <= 19
    assert isinstance(decision, CallTool) == valid
    if valid:
        assert phone.keypad.typed("pay_invoice")["card_number"] == digits
    if len(digits) > 4:
        assert digits not in phone.visible() and digits not in json.dumps(getattr(decision, "arguments", {}))


def test_menu_names_must_be_known(agent: AgentConfig) -> None:
    data = agent.model_dump(exclude={"source"})
    with pytest.raises(ValueError, match="neither an intent nor a tool"):
        AgentConfig.model_validate({**data, "dtmf_menu": {"1": "nothing"}})
    with pytest.raises(ValueError, match="keypad key"):
        AgentConfig.model_validate({**data, "dtmf_menu": {"#": "book"}})
