"""The sideband core of a call behind OpenAI's SIP: sideband events in, actions out. Tool calls run through
the agent's real ToolRegistry (validation, redaction); the driver below is the shell's part in miniature."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voxgate.agents import AgentConfig, load_agent
from voxgate.control.sideband_agent import (
    Action,
    HangUp,
    RecordItem,
    RecordUsage,
    Refer,
    RunTool,
    Send,
    SidebandAgent,
    target_uri,
)
from voxgate.engines.openai_upstream import SAY_INSTRUCTIONS
from voxgate.roles import GATEWAY_CALL_ROLES
from voxgate.tools.registry import ToolContext, ToolRegistry

ACME = Path(__file__).resolve().parents[2] / "examples" / "agents" / "acme.yaml"


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [a.event for a in actions if isinstance(a, Send)]


def kinds(actions: list[Action]) -> list[str]:
    return [a.event["type"] if isinstance(a, Send) else type(a).__name__ for a in actions]


def call_done(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"type": "response.function_call_arguments.done", "call_id": call_id, "name": name, "arguments": arguments,
            "item_id": "item_f", "response_id": "resp_1", "output_index": 0}


class Driver:
    """Runs the core's RunTool actions through the agent's tools, as the shell does, and is the tools'
    CallActions: a transfer or hang-up goes back into the core."""

    def __init__(self, core: SidebandAgent, tools: ToolRegistry) -> None:
        self.core, self.tools = core, tools
        self.out: list[Action] = []

    async def transfer(self, target: str, reason: str) -> None:
        self.out += self.core.transfer(target, reason)

    async def hang_up(self, reason: str) -> None:
        self.out += self.core.hang_up(reason)

    async def send_dtmf(self, digits: str) -> None:
        raise NotImplementedError

    async def run(self, actions: list[Action]) -> list[Action]:
        """The actions, with each RunTool replaced by what finishing it led to."""
        result: list[Action] = []
        for action in actions:
            if not isinstance(action, RunTool):
                result.append(action)
                continue
            ctx = ToolContext(call_id=action.call_id, session_id="s", agent=self.tools.agent, roles=GATEWAY_CALL_ROLES,
                              actions=self)
            outcome = await self.tools.call(action.name, action.arguments, ctx)
            self.out = []
            finished = self.core.tool_finished(action.call_id, outcome.output)
            result += self.out + finished
        return result


@pytest.fixture
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToolRegistry:
    monkeypatch.setenv("ACME_DB", str(tmp_path / "acme.db"))
    return ToolRegistry(load_agent(ACME))


def test_the_opening_is_said_word_for_word_without_tools() -> None:
    core = SidebandAgent(opening="This call is recorded. Hi!")
    [create] = sent(core.start())
    assert create["type"] == "response.create"
    assert create["response"] == {"instructions": SAY_INSTRUCTIONS.format(text="This call is recorded. Hi!"),
                                  "tool_choice": "none"}
    assert SidebandAgent().start() == []


async def test_a_tool_call_is_validated_run_and_answered_then_the_model_goes_on(acme: ToolRegistry) -> None:
    core = SidebandAgent()
    driver = Driver(core, acme)
    assert core.receive({"type": "response.created", "response": {"id": "resp_1"}}) == []
    [run] = core.receive(call_done("call_1", "lookup_order", '{"order_id": "4567"}'))
    assert run == RunTool("call_1", "lookup_order", '{"order_id": "4567"}')
    # announced again by output_item.done and response.done: run once
    assert core.receive({"type": "response.output_item.done", "item": {
        "type": "function_call", "call_id": "call_1", "name": "lookup_order", "arguments": "{}"}}) == []
    finished = await driver.run([run])
    # the output goes up at once; the next response waits for this one to end
    [output] = sent(finished)
    assert output["type"] == "conversation.item.create"
    assert output["item"]["type"] == "function_call_output" and output["item"]["call_id"] == "call_1"
    assert json.loads(output["item"]["output"])["status"] == "shipped"
    done = core.receive({"type": "response.done", "response": {"id": "resp_1", "output": [
        {"type": "function_call", "call_id": "call_1", "name": "lookup_order", "arguments": "{}"}]}})
    assert kinds(done) == ["response.create"]


async def test_bad_arguments_are_refused_by_the_schema_and_the_model_hears_why(acme: ToolRegistry) -> None:
    core = SidebandAgent()
    driver = Driver(core, acme)
    core.receive({"type": "response.created", "response": {"id": "resp_1"}})
    core.receive({"type": "response.done", "response": {"id": "resp_1"}})
    # the tool's response has ended already: output and response.create go together
    finished = await driver.run(core.receive(call_done("call_2", "lookup_order", '{"order_id": "12"}')))
    assert kinds(finished) == ["conversation.item.create", "response.create"]
    error = json.loads(sent(finished)[0]["item"]["output"])["error"]
    assert error["type"] == "invalid_arguments" and error["param"] == "order_id"
    unknown = await driver.run(core.receive(call_done("call_3", "rm_rf", "{}")))
    assert json.loads(sent(unknown)[0]["item"]["output"])["error"]["type"] == "unknown_tool"


async def test_tool_output_pii_is_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = tmp_path / "leaky.py"
    handler.write_text("def card(order_id: str) -> dict:\n    return {'card': '4111 1111 1111 1111'}\n")
    agent = AgentConfig.model_validate({"name": "leaky", "tools": [
        {"name": "card", "handler": f"{handler}:card",
         "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}}}]})
    core = SidebandAgent()
    finished = await Driver(core, ToolRegistry(agent)).run(core.receive(call_done("c", "card", '{"order_id": "1"}')))
    assert "4111 1111 1111 1111" not in sent(finished)[0]["item"]["output"]


async def test_two_tools_of_one_response_get_one_response_create(acme: ToolRegistry) -> None:
    core = SidebandAgent()
    core.receive({"type": "response.created", "response": {"id": "resp_1"}})
    first = core.receive(call_done("a", "lookup_order", '{"order_id": "4567"}'))
    second = core.receive(call_done("b", "lookup_order", '{"order_id": "1234"}'))
    assert core.receive({"type": "response.done", "response": {"id": "resp_1"}}) == []  # tools still run
    driver = Driver(core, acme)
    assert kinds(await driver.run(first)) == ["conversation.item.create"]
    assert kinds(await driver.run(second)) == ["conversation.item.create", "response.create"]


async def test_escalation_refers_to_the_agents_target_once_the_handover_was_heard(acme: ToolRegistry) -> None:
    core = SidebandAgent()
    driver = Driver(core, acme)
    core.receive({"type": "response.created", "response": {"id": "resp_1"}})
    run = core.receive(call_done("t", "transfer_to_human", '{"reason": "wants a person"}'))
    core.receive({"type": "response.done", "response": {"id": "resp_1"}})
    finished = await driver.run(run)
    assert json.loads(sent(finished)[0]["item"]["output"]) == {"status": "transferring", "target": "+15550100"}
    assert kinds(finished) == ["conversation.item.create", "response.create"]  # the model says the handover
    assert core.outcome == "escalated" and core.end_reason == "transferred: wants a person"
    core.receive({"type": "response.created", "response": {"id": "resp_2"}})
    core.receive({"type": "output_audio_buffer.started", "response_id": "resp_2"})
    assert core.receive({"type": "response.done", "response": {"id": "resp_2"}}) == []  # still playing
    assert core.receive({"type": "output_audio_buffer.stopped", "response_id": "resp_2"}) == [
        Refer("tel:+15550100", "wants a person")]
    assert core.ended
    assert core.receive(call_done("late", "lookup_order", "{}")) == []  # nothing more runs on a moved call
    # the REFER was refused: the call is still the agent's
    assert core.transfer_failed("refer: HTTP 409") == []
    assert not core.ended and core.outcome == "" and core.end_reason == "transfer failed: refer: HTTP 409"
    assert kinds(core.receive(call_done("again", "lookup_order", '{"order_id": "4567"}'))) == ["RunTool"]


async def test_end_call_hangs_up_after_the_goodbye(acme: ToolRegistry) -> None:
    core = SidebandAgent()
    finished = await Driver(core, acme).run(core.receive(call_done("e", "end_call", "{}")))
    assert kinds(finished) == ["conversation.item.create", "response.create"]
    core.receive({"type": "response.created", "response": {"id": "resp_9"}})
    assert core.receive({"type": "response.done", "response": {"id": "resp_9"}}) == [HangUp("")]


def test_a_transfer_without_a_usable_target_fails_the_tool() -> None:
    with pytest.raises(ValueError, match="neither"):
        SidebandAgent().transfer("the front desk", "")
    assert target_uri("+15550100") == "tel:+15550100"
    assert target_uri("sip:desk@pbx.example") == "sip:desk@pbx.example"
    assert target_uri("desk@pbx.example") == "sip:desk@pbx.example"


def test_a_menu_key_asks_the_model_like_the_caller_would() -> None:
    core = SidebandAgent(menu={"1": "check_order", "0": "transfer_to_human"})
    core.receive({"type": "response.created", "response": {"id": "resp_1"}})
    actions = core.receive({"type": "input_audio_buffer.dtmf_event_received", "event": "1", "received_at": 1})
    assert kinds(actions) == ["conversation.item.create", "response.cancel"]  # the key interrupts the reply
    assert "pressed 1" in sent(actions)[0]["item"]["content"][0]["text"]
    assert "check_order" in sent(actions)[0]["item"]["content"][0]["text"]
    assert kinds(core.receive({"type": "response.done", "response": {"id": "resp_1", "status": "cancelled"}})) == [
        "response.create"]
    assert core.receive({"type": "input_audio_buffer.dtmf_event_received", "event": "7"}) == []  # not in the menu
    assert core.receive({"type": "input_audio_buffer.dtmf_event_received", "event": "12"}) == []


def test_what_was_said_and_the_usage_go_to_the_record() -> None:
    core = SidebandAgent()
    core.receive({"type": "input_audio_buffer.committed", "item_id": "item_u"})
    [user] = core.receive({"type": "conversation.item.input_audio_transcription.completed", "item_id": "item_u",
                           "content_index": 0, "transcript": "where is my order"})
    assert isinstance(user, RecordItem) and user.item.role == "user" and user.item.text == "where is my order"
    message = {"id": "item_a", "type": "message", "role": "assistant", "status": "completed",
               "content": [{"type": "output_audio", "transcript": "It has shipped."}]}
    [agent] = core.receive({"type": "response.output_item.done", "item": message})
    assert isinstance(agent, RecordItem) and agent.item.text == "It has shipped."
    usage = {"total_tokens": 30, "input_tokens": 20, "output_tokens": 10}
    actions = core.receive({"type": "response.done", "response": {"id": "r", "output": [message], "usage": usage}})
    assert actions == [RecordUsage(usage)]  # the message was recorded once
    assert core.turns == 1


def test_a_refused_response_create_does_not_stall_the_call() -> None:
    core = SidebandAgent(opening="Hello")
    core.start()
    assert core.hang_up("done") == []  # waits for the opening
    assert core.receive({"type": "error", "error": {"type": "invalid_request_error", "code": "x",
                                                    "message": "no"}}) == [HangUp("done")]


def test_a_response_create_that_races_the_models_own_reply_is_asked_again_after_it() -> None:
    core = SidebandAgent()
    [create] = sent(core.tool_finished("c1", "{}")[1:])
    # the caller spoke meanwhile: the upstream's own reply starts, and our create is refused for it
    core.receive({"type": "response.created", "response": {"id": "resp_vad"}})
    refused = {"type": "error", "error": {"type": "invalid_request_error", "message": "busy",
                                          "code": "conversation_already_has_active_response",
                                          "event_id": create["event_id"]}}
    assert core.receive(refused) == []
    assert kinds(core.receive({"type": "response.done", "response": {"id": "resp_vad"}})) == ["response.create"]


def test_another_events_error_leaves_a_pending_create_alone() -> None:
    core = SidebandAgent()
    core.tool_finished("c1", "{}")
    other = {"type": "error", "error": {"type": "invalid_request_error", "message": "no", "event_id": "event_x"}}
    assert core.receive(other) == []
    assert core.hang_up("bye") == []  # still waiting for our response


def test_a_reattached_sideband_forgets_what_the_old_one_had_in_flight() -> None:
    core = SidebandAgent()
    core.receive({"type": "response.created", "response": {"id": "resp_1"}})
    core.receive({"type": "output_audio_buffer.started", "response_id": "resp_1"})
    assert core.hang_up("bye") == []
    assert core.reattached() == [HangUp("bye")]


@pytest.mark.parametrize("event", [
    {}, {"type": 7}, {"type": "response.done", "response": "x"}, {"type": "response.function_call_arguments.done"},
    {"type": "response.output_item.done", "item": []},
    {"type": "conversation.item.input_audio_transcription.completed"},
    {"type": "input_audio_buffer.dtmf_event_received", "event": None}, {"type": "error", "error": "x"},
])
def test_odd_events_are_ignored(event: dict[str, Any]) -> None:
    core = SidebandAgent()
    assert [a for a in core.receive(event) if not isinstance(a, Send)] == []
