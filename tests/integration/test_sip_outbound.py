"""Outbound SIP calls and the trunk registration, with SIPp as the far end and as the registrar on loopback.

One gateway dials sip: URIs on loopback directly (no trunk): SIPp answers and talks (the echo agent's
disclosure is its first line; the far end's words come back over RTP), is busy (486), or never answers
(the ring timeout CANCELs it). Another gateway has a trunk: it REGISTERs with a SIPp registrar that
challenges every REGISTER, refreshes the binding before the 2 s it is granted run out, places a call to a
number through the trunk's proxy (a SIPp that challenges the INVITE and hangs up itself), and
removes the binding at shutdown. SIPp exits 0 only when its scenario ran as written; nothing here waits a
fixed time for the gateway: every wait is for an event.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import LiveServer, finished_call, start_server
from tests.phone_carrier import eventually, eventually_true
from tests.sipp_caller import (
    OFFER,
    SIPP,
    RtpCapture,
    SippRun,
    answered,
    far_end_args,
    free_port,
    invite,
    port_taken,
    reply,
    request,
    run_far_end,
    run_sipp,
    scenario,
    stream,
    ulaw_file,
)
from tests.speech import silence, speak
from voxgate.cli import app as cli_app
from voxgate.config import Settings

DISCLOSURE = "This is an automated assistant calling from Acme."
GREETING = "Hello there."
AGENT = f"""name: echo
description: Echo line for outbound calls.
engine: echo
instructions: Repeat the caller's words back to them.
disclosure: "{DISCLOSURE}"
greeting: "{GREETING}"
turn_taking:
  vad: webrtc
"""
SILENT = 0xFF  # µ-law silence

# What SIPp as the far end answers: the INVITE's headers, its own To tag and Contact.
FAR_HEADERS = """[last_Via:]
[last_From:]
[last_To:];tag=[pid]far[call_number]
[last_Call-ID:]
{cseq}
Contact: <sip:far@[local_ip]:[local_port]>"""
ANSWER_SDP = OFFER.format(direction="sendrecv", version=1)  # what the far end answers with


def far_response(status: int, reason: str, *, sdp: bool = False, extra: str = "",
                 cseq: str = "[last_CSeq:]") -> str:
    head = FAR_HEADERS.format(cseq=cseq) + (f"\n{extra.strip()}" if extra else "")
    retrans = ' retrans="500"' if sdp else ""  # a 2xx to INVITE goes again until the ACK
    if sdp:
        return (f"  <send{retrans}><![CDATA[\nSIP/2.0 {status} {reason}\n{head}\nContent-Type: application/sdp\n"
                f"Content-Length: [len]\n\n{ANSWER_SDP}]]></send>\n")
    return f"  <send{retrans}><![CDATA[\nSIP/2.0 {status} {reason}\n{head}\nContent-Length: 0\n\n]]></send>\n"


OFFER_CHECK = ('  <recv request="INVITE"><action><ereg regexp="m=audio [0-9]+ RTP/AVP 0 8 101" search_in="body" '
               'check_it="true" assign_to="offer"/></action></recv>\n')


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """No trunk: sip: URIs on loopback are dialled directly; room for one call; a 2 s ring timeout; a refused
    REFER falls back to a second INVITE and a bridge."""
    tmp = tmp_path_factory.mktemp("sip-outbound")
    (tmp / "agents").mkdir()
    (tmp / "agents" / "echo.yaml").write_text(AGENT)
    live = start_server(tmp, engine="echo", agents_dir=tmp / "agents", default_agent="echo", max_calls=1,
                        sip_port=free_port(), sip_ring_timeout_s=2.0, sip_transfer_bridge=True)
    yield live
    live.embedded.stop()


def http(live: LiveServer) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=live.base_url, headers=live.auth, timeout=10.0)


async def far_end(directory: Path, xml: str, port: int, media: int | None = None) -> asyncio.Task[SippRun]:
    """SIPp listening on `port` (the task ends with its run)."""
    task = asyncio.create_task(run_far_end(directory, xml, port, media_port=media))
    await eventually(lambda: port_taken(port) or task.done(), 15, "SIPp listening")
    assert not task.done(), task.result().output[-2000:]
    return task


async def idle(live: LiveServer) -> None:
    """Wait until the gateway holds no call (the room is free for the next test: max_calls is 1)."""
    await eventually(lambda: live.gateway.admission.in_use == 0, 10, "the call's admission ticket released")


async def place(live: LiveServer, to: str, **body: Any) -> dict[str, Any]:
    async with http(live) as client:
        placed = await client.post("/v1/calls", json={"to": to, **body})
    assert placed.status_code == 202, placed.text
    assert placed.headers["Location"] == f"/v1/calls/{placed.json()['id']}"
    call: dict[str, Any] = placed.json()
    return call


async def test_an_answered_call_opens_with_the_disclosure_talks_and_is_recorded_outbound(
        direct: LiveServer, tmp_path: Path) -> None:
    speech = speak("hello this is the far end speaking", rate=8000)
    (tmp_path / "far.ulaw").write_bytes(ulaw_file(np.concatenate([silence(300, 8000), speech, silence(1200, 8000)])))
    xml = scenario("answer and talk", OFFER_CHECK, far_response(180, "Ringing"), far_response(200, "OK", sdp=True),
                   '  <recv request="ACK"/>\n', stream("far.ulaw"), '  <recv request="BYE"/>\n', reply(200, "OK"),
                   variables=("offer",))
    port, media = free_port(), free_port()
    gateway = direct.gateway
    with RtpCapture(media) as capture:
        far = await far_end(tmp_path, xml, port, media)
        call = await place(direct, f"sip:far@127.0.0.1:{port}", metadata={"campaign": "reminders"})
        assert call["status"] == "dialing" and call["metadata"]["direction"] == "outbound"
        call_id = call["id"]
        await eventually(lambda: call_id in gateway.sessions or far.done(), 30, "the call answered")
        assert not far.done(), far.result().messages[-3000:]
        session = gateway.sessions[call_id]
        await eventually(lambda: any(i.role == "assistant" for i in session.conversation.visible()), 10,
                         "the agent's first words")
        first = next(i for i in session.conversation.visible() if i.role == "assistant")
        assert first.text == f"{DISCLOSURE} {GREETING}"  # the AI disclosure is the first thing said
        async with http(direct) as client:  # the one call the gateway has room for is up: refused as elsewhere
            full = await client.post("/v1/calls", json={"to": f"sip:far@127.0.0.1:{port}"})
            shown = (await client.get(f"/v1/calls/{call_id}")).json()
        assert full.status_code == 503 and int(full.headers["Retry-After"]) > 0, full.text
        assert full.json()["error"]["type"] == "server_error"
        assert shown["metadata"]["dial"] == "answered"
        # The far end's words come back (the echo agent), as RTP to SIPp's media port.
        await eventually(lambda: any(p.packet.payload.count(SILENT) < len(p.packet.payload) // 2
                                     for p in capture.audio()) or far.done(), 30, "the far end's words echoed")
        assert not far.done(), far.result().messages[-3000:]
        await asyncio.to_thread(direct.embedded.run, session.caller.hang_up("test done"))
        outcome = await far
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
    record = await finished_call(direct, call_id)
    assert record["transport"] == "sip" and record["status"] == "completed", record
    assert record["caller"] == f"sip:far@127.0.0.1:{port}"
    facts = record["metadata"]
    assert facts["direction"] == "outbound" and facts["dial"] == "answered" and facts["sip_status"] == 200, facts
    assert facts["client_metadata"] == {"campaign": "reminders"}
    await idle(direct)


async def test_a_busy_far_end_is_recorded_busy_and_the_cli_says_so(direct: LiveServer, tmp_path: Path) -> None:
    xml = scenario("busy", '  <recv request="INVITE"/>\n', far_response(486, "Busy Here"), '  <recv request="ACK"/>\n')
    port = free_port()
    far = await far_end(tmp_path, xml, port)
    result = await asyncio.to_thread(CliRunner().invoke, cli_app, [
        "call", f"sip:far@127.0.0.1:{port}", "--url", direct.base_url, "--api-key", direct.api_key, "--wait",
        "--timeout", "60"])
    call_id, said = result.output.split()[0], result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and said == "busy", result.output
    outcome = await far
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
    record = await finished_call(direct, call_id)
    assert record["status"] == "failed" and record["outcome"] == "busy", record
    assert record["metadata"]["direction"] == "outbound" and record["metadata"]["sip_status"] == 486
    assert record["end_reason"] == "486 Busy Here"
    await idle(direct)


async def test_no_answer_within_the_ring_timeout_cancels_and_is_recorded(direct: LiveServer, tmp_path: Path) -> None:
    xml = scenario(
        "never answers",
        '  <recv request="INVITE"><action><ereg regexp="[0-9]+ INVITE" search_in="hdr" header="CSeq:" '
        'check_it="true" assign_to="invite_cseq"/></action></recv>\n',
        far_response(180, "Ringing"), '  <recv request="CANCEL"/>\n', far_response(200, "OK"),
        far_response(487, "Request Terminated", cseq="CSeq: [$invite_cseq]"), '  <recv request="ACK"/>\n',
        variables=("invite_cseq",))
    port = free_port()
    far = await far_end(tmp_path, xml, port)
    call = await place(direct, f"sip:far@127.0.0.1:{port}")

    async def ringing_seen() -> bool:
        async with http(direct) as client:
            shown = (await client.get(f"/v1/calls/{call['id']}")).json()
        return bool(shown["metadata"]["dial"] != "dialing")

    await eventually_true(ringing_seen, 30, "the call ringing")
    outcome = await far
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
    record = await finished_call(direct, call["id"])
    assert record["status"] == "failed" and record["outcome"] == "no_answer", record
    assert record["metadata"]["dial"] == "no_answer" and record["metadata"]["sip_status"] == 487
    await idle(direct)


def tone(hz: int) -> bytes:
    """One second of a µ-law tone (`rtp_stream` loops it)."""
    return ulaw_file((np.sin(np.arange(8000) * 2 * np.pi * hz / 8000) * 8000).astype(np.int16))


async def test_a_refused_refer_falls_back_to_a_second_invite_and_bridges_the_audio(
        direct: LiveServer, tmp_path: Path) -> None:
    """A caller's PBX declines the REFER (603): the gateway calls the person itself and relays RTP between
    the two legs (what the person sends reaches the caller byte for byte, both being PCMU); hanging up
    the caller's leg hangs up the person's too; the record says how the transfer was done."""
    caller_dir, person_dir = tmp_path / "caller", tmp_path / "person"
    caller_dir.mkdir()
    person_dir.mkdir()
    (caller_dir / "tone.ulaw").write_bytes(tone(440))
    person_tone = tone(1000)
    (person_dir / "tone.ulaw").write_bytes(person_tone)
    caller_xml = scenario("refer declined", invite(), answered(), request("ACK", 1),
                          '  <nop><action><exec rtp_stream="tone.ulaw,-1,0"/></action></nop>\n',
                          '  <recv request="REFER"/>\n', reply(603, "Decline"), '  <recv request="BYE"/>\n',
                          reply(200, "OK"))
    person_xml = scenario("person", OFFER_CHECK, far_response(200, "OK", sdp=True), '  <recv request="ACK"/>\n',
                          '  <nop><action><exec rtp_stream="tone.ulaw,-1,0"/></action></nop>\n',
                          '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("offer",))
    person_port, person_media, caller_media = free_port(), free_port(), free_port()
    gateway = direct.gateway
    before = set(gateway.sessions)
    with RtpCapture(person_media) as to_person, RtpCapture(caller_media) as to_caller:
        person = await far_end(person_dir, person_xml, person_port, person_media)
        caller = asyncio.create_task(run_sipp(caller_dir, caller_xml, gateway.sip.port, media_port=caller_media,
                                              service="echo"))
        await eventually(lambda: set(gateway.sessions) - before or caller.done(), 30, "the caller's call up")
        assert not caller.done(), caller.result().messages[-3000:]
        session = gateway.sessions[next(iter(set(gateway.sessions) - before))]
        call = session.caller
        await eventually(lambda: call.answered, 10, "the caller's call answered")
        await asyncio.to_thread(direct.embedded.run, call.transfer(f"sip:human@127.0.0.1:{person_port}", "test"),
                                60)
        assert call.bridged is not None, "the second leg was not answered"
        bridged_at = time.monotonic()
        loop = person_tone * 2  # what the person sends, as the caller must get it (any 20 ms slice of it)
        await eventually(lambda: any(c.packet.payload.count(SILENT) < len(c.packet.payload)
                                     for c in to_person.audio()), 30, "the caller's audio at the person")
        await eventually(lambda: sum(c.packet.payload in loop for c in to_caller.audio() if c.at > bridged_at) > 10,
                         30, "the person's audio at the caller")
        await asyncio.to_thread(direct.embedded.run, call.hang_up("test done"))
        caller_run, person_run = await caller, await person
    assert caller_run.returncode == 0, caller_run.output[-1500:] + caller_run.messages[-3000:]
    assert person_run.returncode == 0, person_run.output[-1500:] + person_run.messages[-3000:]
    record = await finished_call(direct, session.id)
    assert "REFER 603 Decline; bridged to sip:human@127.0.0.1" in record["end_reason"], record
    assert record["status"] == "transferred" and record["outcome"] == "escalated", record
    await idle(direct)


@pytest.mark.parametrize(("body", "status", "code", "param"), [
    ({}, 400, "missing_required_parameter", "to"),
    ({"to": "+15551234567"}, 400, "no_trunk", "to"),  # numbers need a trunk
    ({"to": "tel:+15551234567"}, 400, "no_trunk", "to"),
    ({"to": "sip:bob@192.0.2.1"}, 400, "destination_not_allowed", "to"),  # not a trusted host: no toll fraud
    ({"to": "mailto:bob@example.com"}, 400, "invalid_destination", "to"),
    ({"to": "sip:"}, 400, "invalid_destination", "to"),
    ({"to": "sips:bob@127.0.0.1"}, 400, "invalid_destination", "to"),
    ({"to": "sip:bob@127.0.0.1", "agent": "nobody"}, 400, "invalid_value", "agent"),
    ({"to": "sip:bob@127.0.0.1", "from": "<sip:x@y>"}, 400, "invalid_value", "from"),
    ({"to": "sip:bob@127.0.0.1", "metadata": ["a"]}, 400, "invalid_value", "metadata"),
])
async def test_bad_requests_are_problems_and_place_no_call(direct: LiveServer, body: dict[str, Any], status: int,
                                                           code: str, param: str) -> None:
    async with http(direct) as client:
        answer = await client.post("/v1/calls", json=body)
        not_json = await client.post("/v1/calls", content=b"to=sip:bob@127.0.0.1")
    async with httpx.AsyncClient(base_url=direct.base_url) as anonymous:
        no_key = await anonymous.post("/v1/calls", json={"to": "sip:bob@127.0.0.1"})
    assert answer.status_code == status, answer.text
    assert answer.json()["error"] == {"type": "invalid_request_error", "code": code, "param": param,
                                      "message": answer.json()["error"]["message"]}
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    assert no_key.status_code == 401
    assert not direct.gateway.sip.dialer.calls


# -- a gateway with a trunk --------------------------------------------------------------------------

def registrar_response(status: str, extra: str = "", then: str = "") -> str:
    """The registrar's answer to the REGISTER just received (its own To tag); `then` jumps to a label."""
    jump = f' next="{then}"' if then else ""
    head = "\n".join(["[last_Via:]", "[last_From:]", "[last_To:];tag=[pid]reg[call_number]", "[last_Call-ID:]",
                      "[last_CSeq:]", *([extra] if extra else [])])
    return f"  <send{jump}><![CDATA[\nSIP/2.0 {status}\n{head}\nContent-Length: 0\n]]></send>\n"


REGISTRAR = scenario(
    "registrar: challenges every REGISTER, grants 2 s, confirms the removal",
    '  <label id="next"/>\n',
    '  <recv request="REGISTER"><action><ereg regexp="Expires: 0[^0-9]" search_in="msg" assign_to="removal"/>'
    '</action></recv>\n',
    registrar_response("401 Unauthorized", 'WWW-Authenticate: Digest realm="trunk.test", nonce="n0nc3[call_number]", '
                       'algorithm=MD5, qop="auth"'),
    '  <recv request="REGISTER"><action><verifyauth assign_to="authvalid" username="alice" password="s3cret"/>'
    '</action></recv>\n',
    '  <nop test="authvalid" next="good"/>\n',
    registrar_response("403 Forbidden", then="done"),
    '  <label id="good"/>\n  <nop test="removal" next="removed"/>\n',
    registrar_response("200 OK", "[last_Contact:];expires=2", then="next"),
    '  <label id="removed"/>\n',
    registrar_response("200 OK"),
    '  <label id="done"/>\n',
    variables=("removal",))

# The trunk's proxy: challenges the INVITE (401: SIPp's verifyauth reads Authorization only; 407 has its unit
# tests), checks the answer, answers, then hangs up itself.
CHALLENGE = 'WWW-Authenticate: Digest realm="trunk.test", nonce="pr0xy", algorithm=MD5, qop="auth"'
FAR_BYE = """  <send retrans="500"><![CDATA[
BYE [$contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From:[$called];tag=[pid]far[call_number]
To:[$calling]
Call-ID: [call_id]
CSeq: 1 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
"""
TRUNK_CALL = scenario(
    "trunk proxy",
    '  <recv request="INVITE"><action><ereg regexp="^INVITE sip:\\+15551234567@127\\.0\\.0\\.1;user=phone SIP/2\\.0" '
    'search_in="msg" check_it="true" assign_to="number"/></action></recv>\n',
    far_response(401, "Unauthorized", extra=CHALLENGE), '  <recv request="ACK"/>\n',
    '  <recv request="INVITE"><action>'
    '<verifyauth assign_to="authvalid" username="alice" password="s3cret"/>'
    '<ereg regexp="sip:[^>]+" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>'
    '<ereg regexp=".+" search_in="hdr" header="From:" check_it="true" assign_to="calling"/>'
    '<ereg regexp=".+" search_in="hdr" header="To:" check_it="true" assign_to="called"/>'
    '</action></recv>\n',
    '  <nop test="authvalid" next="good"/>\n',
    far_response(403, "Forbidden").replace("<send>", '<send next="refused">'), '  <recv request="ACK"/>\n',
    '  <label id="good"/>\n', far_response(200, "OK", sdp=True), '  <recv request="ACK"/>\n',
    FAR_BYE, '  <label id="refused"/>\n',
    variables=("number", "contact", "calling", "called"))


@dataclass
class Trunked:
    live: LiveServer
    registrar: subprocess.Popen[bytes]  # SIPp, started before the gateway
    registrar_dir: Path
    proxy_port: int


@pytest.fixture(scope="module")
def trunked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trunked]:
    """A gateway registered with a SIPp registrar (started first) whose calls go to a SIPp proxy port."""
    tmp = tmp_path_factory.mktemp("sip-trunk")
    registrar_port, proxy_port = free_port(), free_port()
    (tmp / "scenario.xml").write_text(REGISTRAR)
    with (tmp / "sipp.out").open("wb") as out:
        registrar = subprocess.Popen([SIPP, *far_end_args(registrar_port, timeout_s=120)], cwd=tmp, stdout=out,
                                     stderr=subprocess.STDOUT)
    try:
        asyncio.run(eventually(lambda: port_taken(registrar_port) or registrar.poll() is not None, 15,
                               "the registrar"))
        live = start_server(tmp, engine="echo", default_agent="echo", sip_port=free_port(),
                            sip_trunk_registrar=f"sip:127.0.0.1:{registrar_port}", sip_trunk_user="alice",
                            sip_trunk_password="s3cret", sip_trunk_expires_s=60, sip_trunk_retry_s=0.5,
                            sip_trunk_proxy=f"127.0.0.1:{proxy_port}")
        yield Trunked(live, registrar, tmp, proxy_port)
        live.embedded.stop()
    finally:
        if registrar.poll() is None:
            registrar.kill()
        registrar.wait()


async def readiness(live: LiveServer) -> dict[str, Any]:
    async with http(live) as client:
        shown: dict[str, Any] = (await client.get("/readyz")).json()
    return shown


async def test_the_gateway_registers_with_its_trunk_answering_the_challenge(trunked: Trunked) -> None:
    live = trunked.live

    async def registered() -> bool:
        return bool((await readiness(live)).get("sip_trunk", {}).get("state") == "registered")

    await eventually_true(registered, 30, "registered with the trunk")
    trunk = (await readiness(live))["sip_trunk"]
    assert trunk["registrar"].startswith("sip:127.0.0.1:") and trunk["last_status"] == 200
    assert "s3cret" not in str(trunk)
    async with http(live) as client:
        scraped = (await client.get("/metrics")).text
    assert "voxgate_sip_trunk_registered 1.0" in scraped


async def test_a_number_goes_through_the_trunk_proxy_with_digest_and_the_far_end_hangs_up(
        trunked: Trunked, tmp_path: Path) -> None:
    live = trunked.live
    far = await far_end(tmp_path, TRUNK_CALL, trunked.proxy_port)
    call = await place(live, "+1 (555) 123-4567", **{"from": "+15550001111"})
    outcome = await far
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-4000:]
    assert "Authorization: Digest" in outcome.messages
    record = await finished_call(live, call["id"])
    assert record["status"] == "completed" and record["end_reason"] == "caller_hung_up", record
    facts = record["metadata"]
    assert facts["to"] == "sip:+15551234567@127.0.0.1;user=phone" and facts["from"] == "+15550001111"
    assert facts["dial"] == "answered" and facts["direction"] == "outbound"


async def test_the_binding_is_refreshed_and_removed_at_shutdown(trunked: Trunked) -> None:
    live = trunked.live

    async def refreshed() -> bool:  # granted 2 s, refreshed at 1.5 s
        return bool((await readiness(live)).get("sip_trunk", {}).get("registrations", 0) >= 3)

    await eventually_true(refreshed, 30, "two refreshes")
    await asyncio.to_thread(live.embedded.stop)  # unregisters: REGISTER with Expires: 0
    code = await asyncio.to_thread(trunked.registrar.wait, 60)
    messages = (trunked.registrar_dir / "messages.log").read_text(errors="replace")
    assert code == 0, (trunked.registrar_dir / "sipp.out").read_text(errors="replace")[-1500:] + messages[-3000:]
    assert "Expires: 0" in messages


def test_the_trunk_password_is_masked_in_config_show() -> None:
    shown = Settings(sip_trunk_password="s3cret", sip_trunk_registrar="sip:trunk.example").shown()  # type: ignore[arg-type]
    assert shown["sip_trunk_password"] == "****" and shown["sip_trunk_registrar"] == "sip:trunk.example"
