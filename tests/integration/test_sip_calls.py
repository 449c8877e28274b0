"""Phone calls over SIP with real SIP software on loopback: SIPp (Debian sip-tester) places the calls and
streams µ-law speech with `rtp_stream`; what the gateway sends back is captured off the loopback interface
and transcribed. One gateway (the carrier fixture's, local engine) serves every call, the Twilio ones too.

SIPp exits 0 only when its scenario ran as written: the right responses and requests, in order, within
its -timeout. Nothing here waits a fixed time for the gateway: every wait is for an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import socket
import time
import wave
from collections.abc import AsyncIterator, Awaitable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import CarrierServer, finished_call
from tests.integration.test_twilio import metric, transcribe
from tests.phone_carrier import eventually, eventually_true
from tests.sipp_caller import (
    BARESIP,
    OFFER,
    RtpCapture,
    SippRun,
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
from tests.speech import silence, speak
from voxgate.audio import g711
from voxgate.sip.dtmf import parse_telephone_event

REQUEST = "what is the status of order four five six seven"
HUMAN = "can I talk to a real person please"
SILENT = 0xFF  # µ-law silence


def sip_port(server: CarrierServer) -> int:
    phone = server.live.gateway.sip
    assert phone is not None, "the gateway's SIP door is not open"
    return phone.port


def sip_sessions(server: CarrierServer) -> list[Any]:
    return [s for s in list(server.live.gateway.sessions.values()) if s.caller.transport == "sip"]


async def new_sip_session(server: CarrierServer, before: list[Any],
                          caller: asyncio.Task[SippRun] | None = None) -> Any:
    """The session of the call just placed (a caller that ends first fails the test with what it said)."""

    def found() -> bool:
        if caller is not None and caller.done():
            run = caller.result()
            raise AssertionError(f"the caller ended first (exit {run.returncode}): {run.output[-2000:]}")
        return any(s not in before for s in sip_sessions(server))

    await eventually(found, 30, "a SIP call's session")
    return next(s for s in sip_sessions(server) if s not in before)


@contextlib.asynccontextmanager
async def captured_call(server: CarrierServer, directory: Path, xml: str, **sipp: Any,
                        ) -> AsyncIterator[tuple[RtpCapture, asyncio.Task[SippRun], Any]]:
    """A SIPp call placed in the background, what comes back to its media port captured:
    (the capture, SIPp's run, the call's session)."""
    media = free_port()
    before = sip_sessions(server)
    with RtpCapture(media) as capture:
        caller = asyncio.create_task(run_sipp(directory, xml, sip_port(server), media_port=media, **sipp))
        yield capture, caller, await new_sip_session(server, before, caller)


def call_audio(directory: Path, *parts: np.ndarray) -> None:
    (directory / "caller.ulaw").write_bytes(ulaw_file(np.concatenate(parts)))


async def test_a_spoken_request_is_answered_by_voice_with_barge_in_and_a_call_record(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """SIPp calls, talks over the greeting (barge-in: silence within a packet, the greeting truncated at
    what was sent), asks for an order's status; the answer is transcribed from the RTP that came back; the
    gateway hangs up (SIPp must get the BYE); the call record says sip."""
    live = carrier_server.live
    speech = speak(REQUEST, rate=8000)
    call_audio(tmp_path, silence(1500, 8000), speech, silence(500, 8000))
    xml = scenario("spoken request", invite(), answered("m=audio [0-9]+ RTP/AVP 0 101"), request("ACK", 1),
                   stream("caller.ulaw"), '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("sdp",))
    media = free_port()
    before = sip_sessions(carrier_server)
    with RtpCapture(media) as capture:
        caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server), media_port=media))
        session = await new_sip_session(carrier_server, before, caller)
        call = session.caller
        # 1. The greeting is interrupted by the caller.
        await eventually(lambda: any(i.role == "user" for i in session.conversation.visible()), 30,
                         "the caller's turn")
        greeting = next(i for i in session.conversation.visible() if i.role == "assistant")
        await eventually(lambda: greeting.status == "incomplete", 10, "the greeting truncated")
        heard_ms = greeting.content[0].audio_ms
        # 2. The reply: wait until it has been played out in full, then transcribe what came back.
        speech_end = time.monotonic()
        await eventually(lambda: len([i for i in session.conversation.visible() if i.role == "assistant"]) >= 2
                         and session.response is None and call.audio is not None and call.audio.playout.drained, 60,
                         "the reply played out")
        answer = await transcribe(capture.pcm(since=speech_end - 1.0))
        # 3. The gateway hangs up; SIPp takes the BYE and ends its scenario.
        await asyncio.to_thread(live.embedded.run, call.hang_up("test done"))
        outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    # As in the Twilio call: the status or the carrier, and the date (two days on, how the demo data dates
    # it) make it the order-status answer, heard back through G.711 and Whisper tiny (which, on a loaded
    # machine, has heard "has shipped" as "HES": one word of the answer is allowed to be misheard).
    arrives = live.gateway.clock.today() + timedelta(days=2)
    heard = answer.lower()
    assert ("ship" in heard or "ups" in heard) and f"{arrives:%A}".lower() in heard, answer
    # Barge-in on the wire: the greeting's packets stop at the truncation point, silence right after it.
    frames = [c.packet.payload for c in capture.audio()]
    first = next(i for i, f in enumerate(frames) if f.count(SILENT) < len(f))
    cut = first + int(np.ceil(heard_ms / 20))
    assert heard_ms > 0
    assert all(f.count(SILENT) == len(f) for f in frames[cut + 1:cut + 25]), "audio went on after the cut"
    record = await finished_call(live, session.id)
    assert record["transport"] == "sip" and record["status"] == "completed", record


async def test_a_caller_that_offers_comfort_noise_hears_the_agents_pauses_as_cn(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """SIPp offers CN (RFC 3389) beside PCMU: the answer takes it, the echo agent's silence comes back as CN
    packets (one where each pause starts, none every 20 ms), the echoed speech after a pause starts a
    marked talkspurt on the same RTP clock, and it is the caller's words."""
    speech = speak(REQUEST, rate=8000)
    call_audio(tmp_path, silence(1000, 8000), speech, silence(3000, 8000))
    offer_cn = invite().replace("RTP/AVP 0 101", "RTP/AVP 0 101 13").replace("a=ptime:20",
                                                                          "a=rtpmap:13 CN/8000\na=ptime:20")
    xml = scenario("comfort noise", offer_cn, answered("m=audio [0-9]+ RTP/AVP 0 101 13.*a=rtpmap:13 CN/8000"),
                   request("ACK", 1), stream("caller.ulaw"), '  <recv request="BYE"/>\n', reply(200, "OK"),
                   variables=("sdp",))
    async with captured_call(carrier_server, tmp_path, xml, service="echo") as (capture, caller, session):
        call = session.caller
        assert call.media is not None and call.media.comfort_noise == 13
        await eventually(lambda: any(i.role == "assistant" and i.status == "completed"
                                     for i in session.conversation.visible())
                         and session.response is None and call.audio is not None and call.audio.playout.drained,
                         60, "the echo played out")
        started = capture.packets[0].at
        await asyncio.to_thread(carrier_server.live.embedded.run, call.hang_up("test done"))
        outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    sent = [c for c in capture.packets if c.source_port == call.rtp.local[1]]
    noise = [c.packet for c in sent if c.packet.payload_type == 13]
    speech_packets = [c.packet for c in sent if c.packet.payload_type == 0]
    assert noise and all(p.payload == bytes([127]) for p in noise)
    # A continuous line would have sent a packet every 20 ms; this one sent the echo and a few CN packets.
    elapsed_frames = (sent[-1].at - started) / 0.02
    assert len(sent) < 0.8 * elapsed_frames, (len(sent), elapsed_frames)
    for before, after in itertools.pairwise(sent):
        if before.packet.payload_type == 13 and after.packet.payload_type == 0:
            assert after.packet.marker, "speech after comfort noise must start a talkspurt"
            assert (after.packet.timestamp - before.packet.timestamp) % 2**32 >= 160  # the clock ran on
    echoed = await transcribe(np.concatenate([g711.ulaw_decode(p.payload) for p in speech_packets]))
    assert "status" in echoed.lower() and "order" in echoed.lower(), echoed
    assert call.rtp.counters["comfort_noise_sent"] == len(noise)


async def test_rfc4733_and_info_key_presses_reach_the_session(carrier_server: CarrierServer, tmp_path: Path) -> None:
    """RFC 4733 events (SIPp's bundled capture of key 1) and a SIP INFO (key 5) arrive as carrier DTMF."""
    info = request("INFO", 2, body="Signal=5\nDuration=160\n", content_type="application/dtmf-relay")
    xml = scenario("dtmf", invite(), answered("telephone-event/8000"), request("ACK", 1),
                   '  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_1.pcap"/></action></nop>\n'
                   '  <pause milliseconds="600"/>\n', info, '  <recv response="200"/>\n',
                   '  <recv request="BYE" timeout="8000" ontimeout="bye"/>\n', '  <label id="bye"/>\n',
                   request("BYE", 3), '  <recv response="200"/>\n', variables=("sdp",))
    before = sip_sessions(carrier_server)
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server), service="echo"))
    session = await new_sip_session(carrier_server, before, caller)
    await eventually(lambda: session.keypad.pressed == ["1", "5"], 20, "both key presses")
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]


async def test_transfer_to_a_person_by_refer_records_the_notify_outcome(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """The caller asks for a person; the handover line plays, then REFER to the agent's escalation target;
    SIPp accepts (202), reports 100 then 200 by NOTIFY, and the gateway leaves with BYE."""
    live = carrier_server.live
    call_audio(tmp_path, silence(1000, 8000), speak(HUMAN, rate=8000), silence(500, 8000))
    notify = "Event: refer\nSubscription-State: {state}"
    xml = scenario(
        "refer", invite(), answered(), request("ACK", 1), stream("caller.ulaw"),
        '  <recv request="REFER">\n    <action><ereg regexp="Refer-To: &lt;sip:\\+15550100@" search_in="msg" '
        'check_it="true" assign_to="target"/></action>\n  </recv>\n', reply(202, "Accepted"),
        request("NOTIFY", 2, body="SIP/2.0 100 Trying\n", content_type="message/sipfrag;version=2.0",
                extra=notify.format(state="active;expires=60")), '  <recv response="200"/>\n',
        request("NOTIFY", 3, body="SIP/2.0 200 OK\n", content_type="message/sipfrag;version=2.0",
                extra=notify.format(state="terminated;reason=noresource")), '  <recv response="200"/>\n',
        '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("target",))
    before = sip_sessions(carrier_server)
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server)))
    session = await new_sip_session(carrier_server, before, caller)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(live, session.id)
    assert record["transport"] == "sip"
    assert "NOTIFY 200" in record["end_reason"] and record["end_reason"].startswith("transferred"), record


async def test_a_refused_refer_is_recorded_and_the_call_goes_on(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """The PBX declines the REFER (603): the caller is told, the record says why, and the call is still the
    gateway's (the caller hangs up later)."""
    call_audio(tmp_path, silence(1000, 8000), speak(HUMAN, rate=8000), silence(500, 8000))
    xml = scenario("refer declined", invite(), answered(), request("ACK", 1), stream("caller.ulaw"),
                   '  <recv request="REFER"/>\n', reply(603, "Decline"), '  <pause milliseconds="1500"/>\n',
                   request("BYE", 2), '  <recv response="200"/>\n')
    before = sip_sessions(carrier_server)
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server)))
    session = await new_sip_session(carrier_server, before, caller)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(carrier_server.live, session.id)
    assert record["end_reason"] == "transfer failed: REFER 603 Decline", record
    assert record["outcome"] != "escalated", record


async def test_re_invite_holds_and_resumes_the_call(carrier_server: CarrierServer, tmp_path: Path) -> None:
    """A re-INVITE with a=sendonly is answered recvonly (the gateway stops sending), an UPDATE resumes
    (sendrecv), and a re-INVITE without an offer gets the current description as the gateway's offer,
    unchanged (the same o= version), whose answer the ACK carries (RFC 3264 §8)."""
    resume = request("UPDATE", 3, body=OFFER.format(direction="sendrecv", version=3), content_type="application/sdp")
    xml = scenario("hold", invite(), answered(), request("ACK", 1), '  <pause milliseconds="300"/>\n',
                   invite("sendonly", cseq=2, version=2), answered("a=recvonly"), request("ACK", 2),
                   '  <pause milliseconds="400"/>\n', resume, answered("a=sendrecv"),
                   request("INVITE", 4), answered("m=audio [0-9]+ RTP/AVP 0"),
                   request("ACK", 4, body=OFFER.format(direction="sendrecv", version=4),
                           content_type="application/sdp"),
                   request("BYE", 5), '  <recv response="200"/>\n', variables=("sdp",))
    before = sip_sessions(carrier_server)
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server), service="echo"))
    session = await new_sip_session(carrier_server, before, caller)
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(carrier_server.live, session.id)
    assert record["end_reason"] == "caller_hung_up", record
    assert session.caller.rtp.counters["held"] >= 10  # 400 ms on hold: frames kept, not sent
    # the UPDATE's answer, then the offer in the 200 to the offerless re-INVITE: the same description
    resumed, offered = sdp_versions(outcome.messages, "3 UPDATE"), sdp_versions(outcome.messages, "4 INVITE")
    assert len(resumed) == 1 and offered == resumed, (resumed, offered)


def sdp_versions(messages: str, cseq: str) -> set[str]:
    """The o= versions of the gateway's SDP in its 200s with this CSeq, from SIPp's message log."""
    return {version for block in re.split(r"^-{20,}.*$", messages, flags=re.MULTILINE)
            if re.search(r"^SIP/2.0 200", block, re.MULTILINE) and f"CSeq: {cseq}" in block
            for version in re.findall(r"^o=- \d+ (\d+) IN", block, re.MULTILINE)}


async def test_an_invite_without_an_offer_gets_ours_and_the_ack_brings_the_answer(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """Delayed offer (RFC 3264): SIPp's INVITE has no SDP; the 200 OK carries the gateway's offer (PCMU,
    PCMA, telephone-event), SIPp's ACK the answer (PCMU). Then audio both ways: SIPp's speech reaches the
    echo agent, which plays it back to SIPp's media port."""
    call_audio(tmp_path, silence(300, 8000), speak("one two three", rate=8000), silence(2500, 8000))
    answer = OFFER.format(direction="sendrecv", version=1)
    xml = scenario("delayed offer", request("INVITE", 1, in_dialog=False),
                   answered("m=audio [0-9]+ RTP/AVP 0 8 101"),
                   request("ACK", 1, body=answer, content_type="application/sdp"), stream("caller.ulaw"),
                   '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("sdp",))
    async with captured_call(carrier_server, tmp_path, xml, service="echo") as (capture, caller, session):
        call = session.caller

        def echoed() -> bool:
            return len([c for c in capture.audio() if c.packet.payload.count(SILENT) < 160]) > 25

        await eventually(echoed, 30, "the caller's words echoed back")
        await asyncio.to_thread(carrier_server.live.embedded.run, call.hang_up("test done"))
        outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    assert call.media.codec.name == "PCMU" and call.media.telephone_event == 101
    assert call.rtp.counters["received"] > 50  # SIPp's audio reached the gateway
    record = await finished_call(carrier_server.live, session.id)
    assert record["transport"] == "sip" and record["end_reason"] == "agent_hung_up", record


async def record_of_a_short_call(live: Any, placing: Awaitable[SippRun]) -> dict[str, Any]:
    """The record of the one call `placing` makes, found in the call list once SIPp is done (a call that
    lasts milliseconds may come and go between two looks at the live sessions)."""
    async with httpx.AsyncClient(base_url=live.base_url, headers=live.auth) as http:

        async def records() -> list[dict[str, Any]]:
            return list((await http.get("/v1/calls", params={"limit": 500})).json()["data"])

        known = {record["id"] for record in await records()}
        outcome = await placing
        assert outcome.returncode == 0, outcome.messages[-3000:]
        found: list[dict[str, Any]] = []

        async def recorded() -> bool:
            found[:] = [r for r in await records() if r["id"] not in known and r["ended_at"]]
            return bool(found)

        await eventually_true(recorded, 10, "the call's record")
    [record] = found
    return record


async def test_an_ack_without_the_answer_to_our_offer_ends_the_call_with_bye(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """A delayed offer whose ACK carries no answer: the gateway sends BYE (RFC 3261 §13.2.1), counts the
    end and records it as dropped."""
    xml = scenario("no answer", request("INVITE", 1, in_dialog=False), answered("m=audio"), request("ACK", 1),
                   '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("sdp",))
    live = carrier_server.live

    async def ended_for_bad_answers() -> float:
        async with httpx.AsyncClient(base_url=live.base_url, headers=live.auth) as http:
            return metric((await http.get("/metrics")).text, "voxgate_sip_calls_ended_total", reason="bad_answer")

    counted = await ended_for_bad_answers()
    record = await record_of_a_short_call(live, run_sipp(tmp_path, xml, sip_port(carrier_server), service="echo"))
    assert record["transport"] == "sip" and record["end_reason"] == "bad_answer", record
    assert record["status"] == "dropped", record
    assert await ended_for_bad_answers() - counted == 1


async def test_a_re_invite_without_an_offer_whose_ack_brings_no_answer_ends_the_call(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """The same rule mid-call: our offer in the 200 to an offerless re-INVITE must be answered in the ACK;
    an ACK without one gets BYE, recorded."""
    xml = scenario("re-INVITE, no answer", invite(), answered(), request("ACK", 1), request("INVITE", 2),
                   answered("m=audio [0-9]+ RTP/AVP 0 101"), request("ACK", 2), '  <recv request="BYE"/>\n',
                   reply(200, "OK"), variables=("sdp",))
    record = await record_of_a_short_call(carrier_server.live,
                                          run_sipp(tmp_path, xml, sip_port(carrier_server), service="echo"))
    assert record["end_reason"] == "bad_answer" and record["status"] == "dropped", record


def timer_invite(session_expires: str) -> str:
    """An INVITE (with an offer) that supports session timers and asks for this Session-Expires."""
    return invite(extra=f"Supported: timer\nSession-Expires: {session_expires}")


def expect(*checks: tuple[str, str]) -> str:
    """Check the message just received against regular expressions (its whole text), each (pattern, name)."""
    eregs = "".join(f'<ereg regexp="{pattern}" search_in="msg" check_it="true" assign_to="{name}"/>'
                    for pattern, name in checks)
    return f"<action>{eregs}</action>"


async def test_session_timer_granted_refreshed_by_the_caller_and_ended_when_refreshes_stop(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """RFC 4028 with the caller refreshing: too short an interval is refused 422 with Min-SE; 120 s is
    granted in the 200 OK (Require: timer); SIPp's refresh re-INVITE is answered with the timer again; then
    the call's clock is stepped past the expiry and the gateway hangs up with BYE, recorded."""
    refused = scenario("too short", timer_invite("60"), '  <recv response="100" optional="true"/>\n',
                       f'  <recv response="422">{expect(("Min-SE: 90", "floor"))}</recv>\n',
                       request("ACK", 1, branch="[branch-3]"), variables=("floor",))
    short = await run_sipp(tmp_path, refused, sip_port(carrier_server), service="echo")
    assert short.returncode == 0, short.messages[-3000:]

    granted = expect(("Session-Expires: 120;refresher=uac", "granted"), ("Require: timer", "required"))
    again = expect(("Session-Expires: 120;refresher=uac", "again"))
    refresh = request("INVITE", 2, body=OFFER.format(direction="sendrecv", version=2),
                      content_type="application/sdp", extra="Supported: timer\nSession-Expires: 120;refresher=uac")
    xml = scenario("caller refreshes", timer_invite("120;refresher=uac"),
                   '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n',
                   f'  <recv response="200">{granted}</recv>\n', request("ACK", 1), refresh,
                   '  <recv response="100" optional="true"/>\n', f'  <recv response="200">{again}</recv>\n',
                   request("ACK", 2), '  <recv request="BYE"/>\n', reply(200, "OK"),
                   variables=("granted", "required", "again"))
    before = sip_sessions(carrier_server)
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server), service="echo"))
    session = await new_sip_session(carrier_server, before, caller)
    call = session.caller
    await eventually(lambda: call.refresh is not None and call.refresh.refreshes == 1, 20, "the caller's refresh")
    assert not call.refresh.timer.we_refresh and call.refresh.timer.interval == 120
    real = call.clock
    call.clock = lambda: real() + 120.0  # past 120 - 32 s since that refresh: expired
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(carrier_server.live, session.id)
    assert record["end_reason"] == "session_timer_expired" and record["status"] == "dropped", record


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
async def test_session_timer_refreshed_by_the_gateway(carrier_server: CarrierServer, tmp_path: Path,
                                                      method: str) -> None:
    """RFC 4028 with the gateway refreshing (refresher=uas): at half the interval on the call's clock it
    refreshes with the timer (refresher=uac: itself again): by UPDATE when the caller's INVITE allows it,
    else by re-INVITE offering its current description (SIPp answers and gets the ACK). The call goes on
    until SIPp hangs up."""
    answer = OFFER.format(direction="sendrecv", version=2) if method == "INVITE" else ""
    ok = reply(200, "OK", extra="Session-Expires: 90;refresher=uac\nRequire: timer", body=answer,
               content_type="application/sdp" if answer else "")
    checks = [("Session-Expires: 90;refresher=uac", "asked")]
    if method == "INVITE":
        checks.append(("m=audio [0-9]+ RTP/AVP 0", "offer"))
    asked = expect(*checks)
    allow = "\nAllow: INVITE, ACK, CANCEL, BYE, UPDATE" if method == "UPDATE" else ""
    xml = scenario("gateway refreshes", invite(extra=f"Supported: timer\nSession-Expires: 90;refresher=uas{allow}"),
                   '  <recv response="100" optional="true"/>\n  <recv response="180" optional="true"/>\n',
                   f'  <recv response="200">{expect(("Session-Expires: 90;refresher=uas", "granted"))}</recv>\n',
                   request("ACK", 1), f'  <recv request="{method}">{asked}</recv>\n', ok,
                   '  <recv request="ACK"/>\n' if method == "INVITE" else "", request("BYE", 2),
                   '  <recv response="200"/>\n', variables=("granted", "asked", *(("offer",) if answer else ())))
    before = sip_sessions(carrier_server)
    caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server), service="echo"))
    session = await new_sip_session(carrier_server, before, caller)
    call = session.caller
    await eventually(lambda: call.refresh is not None and call.audio is not None, 10, "the call answered")
    assert call.refresh.timer.we_refresh and call.refresh.refresh_at is not None
    real = call.clock
    call.clock = lambda: real() + 46.0  # past half of 90 s
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    assert call.refresh.refreshes == 1 and call.refresh.timer.we_refresh
    record = await finished_call(carrier_server.live, session.id)
    assert record["end_reason"] == "caller_hung_up", record


async def test_cancel_before_answer_ends_the_attempt_without_a_session(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    xml = scenario("cancel", invite(), '  <recv response="100" optional="true"/>\n  <recv response="180"/>\n',
                   request("CANCEL", 1, in_dialog=False, branch="[branch-3]"), '  <recv response="200"/>\n',
                   '  <recv response="487"/>\n', request("ACK", 1, branch="[branch-6]"),
                   '  <pause milliseconds="200"/>\n')
    live = carrier_server.live
    before = sip_sessions(carrier_server)
    admitted = live.gateway.admission.in_use
    outcome = await run_sipp(tmp_path, xml, sip_port(carrier_server))
    assert outcome.returncode == 0, outcome.messages[-3000:]
    await eventually(lambda: live.gateway.admission.in_use == admitted, 5, "the ticket released")
    assert sip_sessions(carrier_server) == before


async def test_bad_sip_and_bad_rtp_are_answered_or_counted_while_a_call_goes_on(
        carrier_server: CarrierServer, tmp_path: Path) -> None:
    """During a live call (the echo agent, over TCP signalling): malformed SIP datagrams get 400 or are
    dropped; RTP aimed at the call from another port is dropped and counted; the call still echoes the
    caller and ends as written."""
    live = carrier_server.live
    call_audio(tmp_path, silence(300, 8000), speak("one two three", rate=8000), silence(2500, 8000))
    xml = scenario("echo", invite(), answered(), request("ACK", 1), stream("caller.ulaw"),
                   '  <pause milliseconds="5000"/>\n', request("BYE", 2), '  <recv response="200"/>\n')
    media = free_port()
    before = sip_sessions(carrier_server)
    metrics_url = f"{live.base_url}/metrics"
    async with httpx.AsyncClient() as http:
        dropped_before = metric((await http.get(metrics_url, headers=live.auth)).text,
                                "voxgate_sip_rtp_dropped_total", reason="wrong_source")
        with RtpCapture(media) as capture:
            caller = asyncio.create_task(run_sipp(tmp_path, xml, sip_port(carrier_server), media_port=media,
                                                  transport="t1", service="echo"))
            session = await new_sip_session(carrier_server, before, caller)
            call = session.caller
            await eventually(lambda: call.rtp is not None and call.rtp.latched is not None, 10, "RTP latched")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rogue:
                rogue.settimeout(5)
                sip = ("127.0.0.1", sip_port(carrier_server))
                rogue.sendto(b"\x00\xffnot sip at all", sip)
                rogue.sendto(b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n"
                             b"Content-Length: 5\r\n\r\n", sip)  # no Call-ID, From, To, CSeq
                answer, _ = rogue.recvfrom(4096)
                assert answer.startswith(b"SIP/2.0 400"), answer
                for datagram in (b"\x80\x00" + bytes(170), b"garbage", bytes(2000)):
                    rogue.sendto(datagram, ("127.0.0.1", call.rtp.local[1]))
            await eventually(lambda: call.rtp.counters["dropped_wrong_source"] >= 3, 5, "the rogue RTP counted")
            outcome = await caller
        assert outcome.returncode == 0, outcome.messages[-3000:]
        assert len([c for c in capture.audio() if c.packet.payload.count(SILENT) < 160]) > 25, "no echo came back"
        dropped_after = metric((await http.get(metrics_url, headers=live.auth)).text,
                               "voxgate_sip_rtp_dropped_total", reason="wrong_source")
    assert dropped_after - dropped_before >= 3


async def test_baresip_places_a_call_and_hangs_up(carrier_server: CarrierServer, tmp_path: Path) -> None:
    """baresip (the C libre stack) dials the echo agent and talks; when its audio file ends, baresip hangs
    up (its menu ends a call whose source fails), and the gateway records the caller's BYE."""
    config = tmp_path / "baresip"
    config.mkdir()
    speech = tmp_path / "caller.wav"
    with wave.open(str(speech), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.concatenate([speak("one two three", rate=8000), silence(1000, 8000)]).tobytes())
    (config / "config").write_text(
        f"sip_listen 127.0.0.1:0\naudio_source aufile,{speech}\nmodule_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\nmodule account.so\nmodule_app menu.so\naudio_codecs PCMU\n")
    (config / "accounts").write_text("<sip:caller@127.0.0.1>;regint=0\n")
    (config / "contacts").write_text("")
    before = sip_sessions(carrier_server)
    process = await asyncio.create_subprocess_exec(
        BARESIP, "-f", str(config), "-e", f"/dial sip:echo@127.0.0.1:{sip_port(carrier_server)}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    try:
        session = await new_sip_session(carrier_server, before)
        record = await finished_call(carrier_server.live, session.id, wait_s=30)
        assert record["end_reason"] == "caller_hung_up", record
        assert session.caller.rtp.counters["received"] > 50, session.caller.rtp.counters  # >1 s of its audio
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_send_dtmf_goes_out_as_rfc4733_events(carrier_server: CarrierServer, tmp_path: Path) -> None:
    """`send_dtmf` on a SIP call: each key an RFC 4733 event on the call's RTP stream (PT 101, one timestamp
    per key, the end packet sent three times), between the audio packets."""
    xml = scenario("keys out", invite(), answered(), request("ACK", 1), '  <recv request="BYE"/>\n',
                   reply(200, "OK"))
    async with captured_call(carrier_server, tmp_path, xml, service="echo") as (capture, caller, session):
        await eventually(lambda: capture.audio(), 10, "the call's audio")
        run = carrier_server.live.embedded.run
        await asyncio.to_thread(run, session.caller.send_dtmf("1#"))
        await asyncio.to_thread(run, session.caller.hang_up("test done"))
        outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    events = [parse_telephone_event(c.packet.payload) for c in capture.audio(101)]
    keys = [(c.packet.timestamp, e.event, e.end) for c, e in zip(capture.audio(101), events, strict=True)]
    presses = sorted({timestamp for timestamp, _, _ in keys})
    assert [next(event for t, event, _ in keys if t == stamp) for stamp in presses] == [1, 11]  # '1', '#'
    assert [sum(1 for t, _, end in keys if t == stamp and end) for stamp in presses] == [3, 3]
    assert len({c.packet.ssrc for c in capture.packets}) == 1  # one stream: the audio's SSRC

