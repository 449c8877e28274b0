"""End to end, #12 both ways: one voxgate plays OpenAI's SIP door, a second runs the agent behind it.

    SIPp --SIP/RTP--> voxgate A (call control "webhook": rings, POSTs a signed realtime.call.incoming)
                      voxgate B /openai/sip/webhook  -- verifies, picks the agent by the To header,
                      A /v1/realtime/calls/{id}/accept <-- B (the agent's instructions and tools)
                      A /v1/realtime?call_id={id}     <== B's sideband: B runs its gateway tool and
                      A /v1/realtime/calls/{id}/refer <-- B, to the agent's escalation target: A's REFER
                                                          reaches SIPp

A is an ordinary voxgate with SIP call control (part 1) and the local engine; its own agent has no tools,
so every tool the model calls is B's, answered over the sideband. B is configured as docs/openai.md "SIP"
says, with A's base URL as its OpenAI. SIPp asks for an order's status (the answer is transcribed from the
RTP that came back), then for a person (B refers the call; SIPp takes the REFER, reports 200 by NOTIFY,
gets the BYE). The test waits for events (the tool's output, the answer played out, SIPp's end), never a
fixed time, and the caller speaks on cue: its request once B's sideband is on the call and the greeting
has played, its second request once the answer has played out. What the caller heard is transcribed one
utterance at a time. (A recording with fixed gaps failed on a loaded machine, about one run in six: a
turn slower than the gap had the second request cancel the answer before it was played; and Whisper,
given the greeting, a pause and the answer in one piece, transcribed the greeting alone.)
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LiveServer, finished_call, start_server
from tests.integration.test_twilio import transcribe
from tests.phone_carrier import eventually
from tests.sipp_caller import (
    RtpCapture,
    answered,
    cue,
    free_port,
    invite,
    reply,
    request,
    run_sipp,
    scenario,
    send_cue,
    stream,
    ulaw_file,
)
from tests.speech import silence, speak, utterances
from voxgate.embedded import free_port as free_tcp_port

SECRET = "whsec_" + base64.b64encode(b"voxgate behind voxgate, both ways").decode()
A_KEY = "sk-voxgate-a-plays-openai"
REQUEST = "what is the status of order four five six seven"
HUMAN = "can I talk to a real person please"
TOOLS = Path(__file__).resolve().parents[2] / "examples" / "tools" / "acme.py"

DESK = """\
name: desk
description: The phone door's own agent; the app behind the webhook gives the call its instructions and tools.
instructions: You answer calls for an app.
client_tools: replace
"""
SHOP = f"""\
name: shop
instructions: You are the order desk of a shop. Look orders up with the tool; hand callers who ask for a person over.
disclosure: You are talking to an automated assistant.
tools:
  - name: lookup_order
    description: Look up the status and delivery date of a customer's order by its order number.
    handler: "{TOOLS}:lookup_order"
    parameters:
      type: object
      properties:
        order_id: {{type: string, pattern: "^[0-9]{{4,10}}$", description: The order number, 4 to 10 digits}}
      required: [order_id]
      additionalProperties: false
  - name: transfer_to_human
    description: Transfer the caller to a real person, a human colleague.
    builtin: transfer_to_human
escalation:
  target: "+15550100"
"""
OTHER = "name: other\ninstructions: Not the agent this number is routed to.\n"


@dataclass
class Pair:
    door: LiveServer  # A: OpenAI's role
    agents: LiveServer  # B: the agents behind it


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("openai-sip-e2e")
    os.environ.setdefault("ACME_DB", str(root / "acme.db"))
    (root / "a-agents").mkdir()
    (root / "a-agents" / "desk.yaml").write_text(DESK)
    (root / "b-agents").mkdir()
    (root / "b-agents" / "shop.yaml").write_text(SHOP)
    (root / "b-agents" / "other.yaml").write_text(OTHER)
    door_port = free_tcp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        sip_port = probe.getsockname()[1]
    agents = start_server(root / "b", engine="echo", dev_mode=False, agents_dir=root / "b-agents",
                          default_agent="other", openai_webhook_secret=SECRET, openai_api_key=A_KEY,
                          openai_base_url=f"http://127.0.0.1:{door_port}/v1",
                          openai_sip_routes=[{"header": "to", "match": "shopline", "agent": "shop"}])
    try:
        door = start_server(root / "a", port=door_port, api_keys=A_KEY, engine="local", dev_mode=False,
                            agents_dir=root / "a-agents", default_agent="desk", sip_port=sip_port,
                            sip_call_control={"*": {"url": f"{agents.base_url}/openai/sip/webhook"}},
                            sip_webhook_secret=SECRET,
                            sip_media_timeout_s=600)  # the caller sends no RTP while it waits for a cue
    except BaseException:
        agents.embedded.stop()
        raise
    yield Pair(door, agents)
    door.embedded.stop()
    agents.embedded.stop()


async def test_an_agent_behind_the_door_answers_by_tool_over_the_sideband_and_refers_the_caller(
        pair: Pair, tmp_path: Path) -> None:
    door, agents = pair.door, pair.agents
    # Each request is followed by silence enough for the gateway to hear that the caller has finished.
    for name, words in (("request", REQUEST), ("human", HUMAN)):
        (tmp_path / f"{name}.ulaw").write_bytes(ulaw_file(np.concatenate([
            silence(500, 8000), speak(words, rate=8000), silence(3000, 8000)])))
    notify = "Event: refer\nSubscription-State: {state}"
    xml = scenario(
        "behind the door", invite(), '  <recv response="100" optional="true"/>\n  <recv response="180"/>\n',
        answered("m=audio [0-9]+ RTP/AVP 0 101"), request("ACK", 1), cue(), stream("request.ulaw"), cue(),
        stream("human.ulaw"),
        '  <recv request="REFER" timeout="90000">\n    <action><ereg regexp="Refer-To: &lt;tel:\\+15550100&gt;" '
        'search_in="msg" check_it="true" assign_to="target"/></action>\n  </recv>\n', reply(202, "Accepted"),
        request("NOTIFY", 2, body="SIP/2.0 100 Trying\n", content_type="message/sipfrag;version=2.0",
                extra=notify.format(state="active;expires=60")), '  <recv response="200"/>\n',
        request("NOTIFY", 3, body="SIP/2.0 200 OK\n", content_type="message/sipfrag;version=2.0",
                extra=notify.format(state="terminated;reason=noresource")), '  <recv response="200"/>\n',
        '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("sdp", "target"))
    phone = door.gateway.sip
    assert phone is not None
    media = free_port()
    before = set(door.gateway.sessions)
    with RtpCapture(media) as capture:
        caller = asyncio.create_task(run_sipp(tmp_path, xml, phone.port, media_port=media, service="shopline",
                                              timeout_s=240))

        def answered_by_b() -> bool:
            if caller.done():
                run = caller.result()
                raise AssertionError(f"the caller ended first (exit {run.returncode}): {run.messages[-3000:]}")
            return any(s not in before for s in list(door.gateway.sessions))

        await eventually(answered_by_b, 60, "the call accepted by the agents' gateway")
        call_id = next(s for s in list(door.gateway.sessions) if s not in before)
        session = door.gateway.sessions[call_id]
        assert "order desk of a shop" in session.config.instructions  # B's agent, not A's own
        controlled = phone.controlled.get(call_id)
        assert controlled is not None
        await eventually(lambda: bool(controlled.sidebands), 60, "B's sideband on the call")
        await eventually(lambda: any(i.role == "assistant" for i in session.conversation.visible())
                         and session.response is None and session.caller.audio.playout.drained, 60,
                         "the greeting played out")
        asked_at = time.monotonic()
        await send_cue(controlled.call.invite, 101)  # the caller asks about the order
        # B's tool ran and its output reached A over the sideband; the reply to it is what the caller hears
        await eventually(lambda: any(i.type == "function_call_output" for i in session.conversation.visible()),
                         90, "the tool's output from the sideband")
        output = next(i for i in session.conversation.visible() if i.type == "function_call_output")
        await eventually(lambda: any(i.role == "assistant" and i.status != "in_progress"
                                     for i in session.conversation.visible()[
                                         session.conversation.visible().index(output) + 1:])
                         and session.response is None and session.caller.audio.playout.drained, 60,
                         "the answer played out")
        # Everything said to the caller since it asked (read from when it was cued, not from when this
        # loop saw the tool's output: a loaded machine may see that after the answer has begun; the
        # capture's reader may be late too, so the greeting's end can be in it).
        answer = " ".join([await transcribe(u) for u in utterances(capture.pcm(since=asked_at), 8000)]).lower()
        await send_cue(controlled.call.invite, 102)  # the caller asks for a person
        outcome = await caller
    behind = await finished_call(agents, call_id, wait_s=30)
    door_record = await finished_call(door, call_id, wait_s=30)
    said = [(i["role"], i["type"], i["text"]) for i in door_record["items"]]
    assert outcome.returncode == 0, (said, behind["tool_calls"], outcome.messages[-3000:])
    assert "ship" in answer or "ups" in answer, (answer, said)
    assert behind["transport"] == "openai_sip" and behind["agent"] == "shop", behind
    assert behind["status"] == "transferred" and behind["outcome"] == "escalated", behind
    assert [t["name"] for t in behind["tool_calls"]] == ["lookup_order", "transfer_to_human"], behind
    assert all(t["status"] == "completed" for t in behind["tool_calls"]), behind
    assert door_record["transport"] == "sip" and door_record["status"] == "transferred", door_record
    assert A_KEY not in str(behind) and A_KEY not in str(door_record)
