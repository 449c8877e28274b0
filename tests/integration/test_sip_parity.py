"""One call, two doors: the same spoken request over SIP (SIPp) and over Twilio Media Streams (the test
carrier), to the same agent on the same gateway, gets the same answer, the same barge-in and the same call
record (issue 18, "Done when").

Both callers say the same request once they have heard a second of the greeting (a barge-in; SIPp is cued
by the test, which hears the RTP reaching it). Then each line does what it does when the caller says
nothing more: the Twilio line sends silence, as Twilio does; SIPp sends no more RTP, as a phone that
suppresses silence. What came back is
read off each line (SIP: the RTP captured off loopback; Twilio: the media messages) and compared byte for
byte with the agent's items: the greeting's kept audio is exactly what reached the caller before the cut
(one frame more at most), then nothing of it, then the whole reply.
The agent ends both calls (`session.hang_up`, as its end_call tool does), so the records may differ only
in the transport, ids and timings. A caller who hangs up is recorded the same on both doors too.

Nothing waits a fixed time: every wait is for an event (a session, a reply played out, a BYE, a close).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import CarrierServer, LiveServer, finished_call
from tests.integration.test_sip_calls import new_sip_session, sip_port, sip_sessions
from tests.integration.test_twilio import wait_session
from tests.phone_carrier import TwilioLine, eventually, eventually_true
from tests.sipp_caller import (
    RtpCapture,
    answered,
    free_port,
    invite,
    reply,
    request,
    run_sipp,
    scenario,
    stream,
    ulaw_file,
)
from tests.speech import normalise, speak
from voxgate.protocol.items import Item

REQUEST = "what is the status of order four five six seven"
ENDED_BY_AGENT = "the caller has the answer"
SILENT = b"\xff"  # µ-law silence
FRAME = 160  # bytes of one 20 ms G.711 frame
FRAME_S = 0.02
HEARD_BEFORE_SPEAKING_S = 1.0  # each caller talks over the greeting once it has heard this much of it
# What may differ between two records of the same call: the transport, ids, the caller's address, timings,
# and what timings decide (token estimates count the greeting's audio generated before the cut).
VARYING = ("id", "transport", "caller", "started_at", "ended_at", "duration_s", "first_response_ms", "usage",
           "cost_usd")


@dataclass
class Heard:
    """One call as its caller heard it, beside the session that served it and its record."""

    session: Any
    record: dict[str, Any]
    line: bytes  # the agent's µ-law as it reached the caller, in order (SIP sends silence between replies)
    before_clear: bytes | None = None  # Twilio: what arrived before the gateway's `clear`
    gaps: list[tuple[int, int]] = field(default_factory=list)  # SIP: RTP sequence gaps in what was captured

    def assistant(self) -> list[Item]:
        return [i for i in self.session.conversation.visible() if i.role == "assistant"]


def greeting_heard_s(capture: RtpCapture) -> float:
    """How much of the agent's voice (not the line's silence) has reached SIPp."""
    return sum(FRAME_S for c in capture.audio() if c.packet.payload.strip(SILENT))


def cue(call: Any) -> None:
    """Tell SIPp that its caller has heard enough of the greeting to talk: an INFO in the call's dialog,
    sent by the test (SIPp cannot listen to what it receives; the test does, off the loopback). SIPp waits
    for it with `<recv request="INFO"/>` and starts its audio; the gateway never sees it."""
    dialog = call.dialog
    info = (f"INFO sip:caller@{call.peer[0]}:{call.peer[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKcue{dialog.local_tag}\r\n"
            f"From: <sip:acme@127.0.0.1>;tag={dialog.local_tag}\r\n"
            f"To: <sip:caller@127.0.0.1>;tag={dialog.remote_tag}\r\n"
            f"Call-ID: {dialog.call_id}\r\nCSeq: 1 INFO\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as cueing:
        cueing.sendto(info.encode(), call.peer)


def answer_played(session: Any, playout: Any) -> bool:
    """The greeting and the reply are out, and the line has played every frame of them."""
    assistant = [i for i in session.conversation.visible() if i.role == "assistant"]
    line = playout()
    return (len(assistant) >= 2 and session.response is None and len(session.outbound) == 0
            and line is not None and line.drained)


async def call_over_sip(server: CarrierServer, directory: Path, audio: np.ndarray) -> Heard:
    """SIPp calls the acme agent, says `audio` in RTP once it has heard a second of the greeting, and takes
    the agent's BYE."""
    live = server.live
    (directory / "caller.ulaw").write_bytes(ulaw_file(audio))
    xml = scenario("parity", invite(), answered(), request("ACK", 1), '  <recv request="INFO"/>\n',
                   stream("caller.ulaw"), '  <recv request="BYE"/>\n', reply(200, "OK"))
    media = free_port()
    before = sip_sessions(server)
    with RtpCapture(media) as capture:
        caller = asyncio.create_task(run_sipp(directory, xml, sip_port(server), media_port=media, service="acme"))
        session = await new_sip_session(server, before, caller)
        call = session.caller
        await eventually(lambda: greeting_heard_s(capture) >= HEARD_BEFORE_SPEAKING_S, 30, "the greeting at SIPp")
        cue(call)
        await eventually(lambda: answer_played(session, lambda: call.audio and call.audio.playout), 60,
                         "the reply played out over SIP")
        await asyncio.to_thread(live.embedded.run, session.hang_up(ENDED_BY_AGENT))
        outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    packets = [c.packet for c in capture.audio()]
    gaps = [(a.sequence, b.sequence) for a, b in itertools.pairwise(packets) if b.sequence != (a.sequence + 1) % 65536]
    return Heard(session, await finished_call(live, session.id), b"".join(p.payload for p in packets), gaps=gaps)


async def call_over_twilio(server: CarrierServer, audio: np.ndarray) -> Heard:
    """The test carrier calls the acme agent, says `audio` in media messages once it has heard a second of the
    greeting, and is hung up on (REST)."""
    live = server.live
    dialled = time.monotonic()
    line = await TwilioLine.call(live.base_url, server.twilio_auth_token, agent="acme")
    try:
        session = await wait_session(server, line.call_sid)
        await line.wait_audio(dialled, min_s=HEARD_BEFORE_SPEAKING_S, within_s=30)
        line.say(audio)
        call = session.caller
        await eventually(lambda: answer_played(session, lambda: call.output and call.output.playout), 60,
                         "the reply played out over Twilio")
        await asyncio.to_thread(live.embedded.run, session.hang_up(ENDED_BY_AGENT))
        await asyncio.wait_for(line.closed.wait(), timeout=10)  # the gateway leaves the media socket
    finally:
        await line.close()
    assert len(line.clears) == 1, line.clears  # one barge-in, one `clear`
    before_clear = b"".join(f.payload for f in line.frames if f.at < line.clears[0])
    return Heard(session, await finished_call(live, session.id), b"".join(f.payload for f in line.frames),
                 before_clear)


def check_barge_in_and_answer(call: Heard) -> None:
    """The caller heard the greeting up to its truncation point (one frame more at most), then nothing of
    it, then the reply whole: so the cut came within a frame of the speech-start decision, the greeting
    item keeps exactly what was played, and the reply item is what came back."""
    assert not call.gaps, f"RTP lost on loopback or by the capture: {call.gaps[:5]}"  # the bytes compared
    greeting, answer = call.assistant()[:2]
    kept, said = bytes(greeting.content[0].audio or b""), bytes(answer.content[0].audio or b"")
    where = (call.record["transport"], [(i.role, i.status, i.text[:60], len(i.content[0].audio or b"") if i.content
                                         else 0) for i in call.session.conversation.visible()], len(call.line))
    assert greeting.status == "incomplete" and kept, "the greeting was not cut by the caller's speech"
    assert call.session.interruptions == 1
    start = call.line.find(kept)
    assert start >= 0, ("what the caller heard of the greeting is not the greeting item's kept audio", where)
    assert not call.line[:start].strip(SILENT), "agent audio before the greeting"
    cut = start + len(kept)
    end = call.line.find(said, cut)
    assert end >= 0, ("the reply item's audio did not reach the caller whole", where)
    assert not call.line[cut + FRAME:end].strip(SILENT), "the greeting went on after the cut"
    assert not call.line[end + len(said):].strip(SILENT), "agent audio after the reply"
    if call.before_clear is not None:
        assert call.before_clear.startswith(kept) and len(call.before_clear) - len(kept) <= FRAME
    truncated = [i for i in call.record["items"] if i["item_id"] == greeting.id]
    assert truncated and truncated[0]["truncated_at_ms"] * 8 == len(kept), truncated


def record_shape(record: dict[str, Any]) -> dict[str, Any]:
    """A call record with the transport, ids and timings set aside: which fields are filled, and every value
    that does not depend on when the caller's speech met the greeting."""
    items = []
    for item in record["items"]:
        truncated = item["truncated_at_ms"] is not None
        text = item["text"] or ""
        items.append({
            "role": item["role"], "type": item["type"], "status": item["status"], "truncated": truncated,
            "audio": item["audio_ms"] is not None,
            # A cut item's words depend on where it was cut; a caller's are compared as words.
            "text": bool(text) if truncated else normalise(text) if item["role"] == "user" else text,
        })
    # A SIP call's record adds what only RTP measures (codec, SRTP, RTCP loss and jitter): set aside.
    metadata = {key: value for key, value in (record.get("metadata") or {}).items() if key != "media"}
    return {
        **{key: value for key, value in record.items()
           if key not in ("items", "tool_calls", "metadata", "latency", "barge_ins", *VARYING)},
        "metadata": metadata,
        "filled": {key: record[key] is not None for key in VARYING},
        "items": items,
        "tool_calls": [{key: tool[key] for key in ("name", "side", "arguments", "status", "output")}
                       for tool in record["tool_calls"]],
        # The latency budget: the same stages reached in each turn (their times are the line's own).
        "latency": [{"heard": turn["heard"], **{stage: ms is not None for stage, ms in turn["stages"].items()}}
                    for turn in record["latency"]],
        "barge_ins": len(record["barge_ins"]),
    }


async def call_ids(live: LiveServer) -> set[str]:
    async with httpx.AsyncClient(base_url=live.base_url, headers=live.auth) as http:
        return {call["id"] for call in (await http.get("/v1/calls", params={"limit": 500})).json()["data"]}


async def new_call_record(live: LiveServer, before: set[str]) -> dict[str, Any]:
    """The record of the one call placed since `before` (a call too short for a test to catch its session)."""
    new: set[str] = set()

    async def placed() -> bool:
        new.update((await call_ids(live)) - before)
        return bool(new)

    await eventually_true(placed, 10, "the call's record")
    assert len(new) == 1, new
    return await finished_call(live, new.pop())


async def test_the_same_spoken_request_over_sip_and_twilio_gets_the_same_answer_barge_in_and_record(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    audio = speak(REQUEST, rate=8000)
    sip = await call_over_sip(carrier_server, tmp_path, audio)
    twilio = await call_over_twilio(carrier_server, audio)
    assert (sip.record["transport"], twilio.record["transport"]) == ("sip", "twilio")

    # The same barge-in: cut within a frame of the decision, truncated at what was played, counted once.
    check_barge_in_and_answer(sip)
    check_barge_in_and_answer(twilio)

    # The same answer: the reply's words (what the caller heard, byte for byte, above).
    sip_reply, twilio_reply = sip.assistant()[1].text, twilio.assistant()[1].text
    assert sip_reply == twilio_reply, (sip_reply, twilio_reply)
    assert "ship" in sip_reply.lower(), sip_reply  # the order-status answer

    # The same call record: turns, interruptions, outcome, end reason, items and tool calls.
    assert sip.record["end_reason"] == ENDED_BY_AGENT and sip.record["interruptions"] == 1, sip.record
    assert record_shape(sip.record) == record_shape(twilio.record), (sip.record, twilio.record)
    # Each answered turn's budget runs to the caller's ear on a phone line: every stage, the heard one too.
    assert sip.record["latency"], sip.record
    for turn in sip.record["latency"] + twilio.record["latency"]:
        assert turn["heard"] and None not in turn["stages"].values(), turn
        assert turn["total_ms"] == pytest.approx(sum(turn["stages"].values()), abs=0.01), turn
    assert len(sip.record["barge_ins"]) == 1 and sip.record["barge_ins"][0]["stop_ms"] > 0


async def test_a_caller_who_hangs_up_is_recorded_the_same_over_sip_and_twilio(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """SIP's BYE and Twilio's `stop` are the same event for the call record: the caller hung up."""
    live = carrier_server.live
    xml = scenario("hang up", invite(), answered(), request("ACK", 1), request("BYE", 2), '  <recv response="200"/>\n')
    before = await call_ids(live)
    outcome = await run_sipp(tmp_path, xml, sip_port(carrier_server), service="echo")
    assert outcome.returncode == 0, outcome.messages[-3000:]
    sip = await new_call_record(live, before)

    line = await TwilioLine.call(live.base_url, carrier_server.twilio_auth_token, agent="echo")
    try:
        twilio_session = await wait_session(carrier_server, line.call_sid)
        await line.hang_up()
    finally:
        await line.close()
    twilio = await finished_call(live, twilio_session.id)

    assert sip["end_reason"] == "caller_hung_up" and sip["status"] == "completed", sip
    assert record_shape(sip) == record_shape(twilio)
