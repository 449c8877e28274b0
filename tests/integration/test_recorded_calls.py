"""Recorded calls end to end, on a live gateway (local engine) with an agent that records: on each transport
the notice is the first thing the caller hears (its audio transcribed by Whisper), the recording is a
stereo file on disk that PyAV reads back (the caller's speech left, the agent's voice right), and the API
downloads it, deletes it and the call's data (each read and deletion audited), and the sweeper removes
calls past their agent's retention. A browser call an operator takes over from the escalation queue is
recorded on as the caller hears it: the operator's voice on the agent's side."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import CarrierServer, LiveServer, finished_call, start_carrier_server
from tests.integration.test_sip_calls import call_audio, captured_call
from tests.integration.test_telnyx import answered_line
from tests.integration.test_twilio import transcribe
from tests.integration.test_warm_transfer import heard_after
from tests.phone_carrier import PhoneLine, TwilioLine, eventually
from tests.recording_reader import read_back
from tests.sipp_caller import answered, invite, reply, request, scenario, stream
from tests.speech import silence, speak, utterances
from tests.webrtc_client import WebRtcCaller
from voxgate.audio.resample import StreamResampler

NOTICE = "This call is recorded for quality."
CALLER_SAYS = "hello I would like to check my order"
FRAME_MS = 20

AGENTS = {
    "recorded": f"""
name: recorded
greeting: "Hello there."
recording:
  enabled: true
  format: opus
  notice: "{NOTICE}"
retention_days: 30
turn_taking: {{vad: webrtc}}
""",
    "recorded-keypad": f"""
name: recorded-keypad
recording:
  enabled: true
  format: wav
  notice: "{NOTICE}"
  consent: keypad
turn_taking: {{vad: webrtc}}
""",
    "recorded-wav": f"""
name: recorded-wav
recording:
  enabled: true
  format: wav
  notice: "{NOTICE}"
retention_days: 0.0000001
turn_taking: {{vad: webrtc}}
""",
}


@pytest.fixture(scope="module")
def carrier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarrierServer]:
    """The recording agents behind every door: WebSocket, WebRTC, Twilio and Telnyx (signed, through the test
    carrier) and SIP."""
    tmp = tmp_path_factory.mktemp("recorded-gateway")
    agents = tmp / "agents"
    agents.mkdir()
    for name, text in AGENTS.items():
        (agents / f"{name}.yaml").write_text(text)
    server = start_carrier_server(tmp, agents_dir=agents, default_agent="recorded", recordings_dir=tmp / "recordings")
    yield server
    server.live.embedded.stop()
    server.api.stop()


@pytest.fixture(scope="module")
def gateway(carrier: CarrierServer) -> LiveServer:
    return carrier.live


def loud_s(channel: np.ndarray, rate: int) -> float:
    """Seconds of the channel louder than a quiet room (20 ms windows)."""
    size = rate * FRAME_MS // 1000
    windows = channel[: channel.size - channel.size % size].reshape(-1, size)
    return float((np.abs(windows).max(axis=1) > 1500).sum() * FRAME_MS / 1000)


async def first_words(pcm: np.ndarray, rate: int) -> str:
    resampler = StreamResampler(rate, 8000)
    return (await transcribe(np.concatenate([resampler.process(pcm), resampler.flush()]))).lower()


async def recording_of(live: LiveServer, call_id: str) -> bytes:
    async with httpx.AsyncClient(base_url=live.base_url, headers=live.auth, timeout=20) as http:
        got = await http.get(f"/v1/calls/{call_id}/recording")
    assert got.status_code == 200, got.text
    return got.content


async def test_websocket_call_notice_first_recording_download_and_deletion(gateway: LiveServer) -> None:
    """A Realtime WebSocket client: the first response is the notice (before the client asked anything);
    its speech is on the left of the recording and the notice on the right; the recording downloads as
    Ogg Opus, is deleted (404 after), then the whole call is (404 after); the audit trail has all three."""
    said = np.concatenate([speak(CALLER_SAYS, rate=24000), silence(1200, 24000)])
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?agent=recorded",
                                  additional_headers=gateway.auth, max_size=None) as ws:
        created = json.loads(await ws.recv())
        call_id = created["session"]["id"]
        audio: list[bytes] = []
        while (event := json.loads(await ws.recv()))["type"] != "response.done":
            if event["type"] == "response.output_audio.delta":
                audio.append(base64.b64decode(event["delta"]))
        notice = await first_words(np.frombuffer(b"".join(audio), dtype="<i2"), 24000)
        assert "recorded" in notice, notice
        chunk = 24000 * FRAME_MS // 1000
        for start in range(0, said.size, chunk):  # in real time: the recording's time line is the call's
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(said[start:start + chunk].tobytes()).decode()}))
            await asyncio.sleep(FRAME_MS / 1000)
        while (event := json.loads(await ws.recv()))["type"] != "response.done":
            pass  # the agent's answer to the caller
    record = await finished_call(gateway, call_id)
    meta = record["metadata"]["recording"]
    assert meta["format"] == "opus" and meta["consent"]["state"] == "notice" and meta["bytes"] > 0
    pcm, rate = read_back(await recording_of(gateway, call_id))
    assert loud_s(pcm[0], rate) >= 1.0, "the caller's speech is on the left"
    assert loud_s(pcm[1], rate) >= 1.0, "the agent's voice is on the right"
    opening = pcm[1][: int(rate * 2.5)]
    assert "recorded" in await first_words(opening.astype(np.int16), rate)
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.auth, timeout=20) as http:
        assert (await http.get(f"/v1/calls/{call_id}/recording", headers={"authorization": "Bearer nope"})
                ).status_code == 401
        assert (await http.delete(f"/v1/calls/{call_id}/recording")).status_code == 204
        assert (await http.get(f"/v1/calls/{call_id}/recording")).status_code == 404
        assert not list((gateway.gateway.recordings_dir).glob(f"{call_id}.*")), "the file is gone"
        assert (await http.get(f"/v1/calls/{call_id}")).status_code == 200  # the record stays
        assert (await http.delete(f"/v1/calls/{call_id}")).status_code == 204
        assert (await http.get(f"/v1/calls/{call_id}")).status_code == 404
        assert (await http.delete(f"/v1/calls/{call_id}")).status_code == 404
    audit = gateway.embedded.run(gateway.gateway.calls.list_audit())
    actions = [(e["action"], e["subject"]) for e in audit if e["subject"] == call_id
               and e["action"].split(".")[0] in ("recording", "call")]  # not the session's and transcript's
    assert sorted(actions) == sorted([("recording.read", call_id), ("recording.deleted", call_id),
                                      ("call.deleted", call_id)]), actions  # one read: a refused one is none


async def test_twilio_call_notice_first_and_both_sides_recorded(carrier: CarrierServer) -> None:
    """The test carrier plays Twilio: the first audio on the line is the notice; the caller speaks; after
    the hang-up the recording holds the caller left and the agent right, as the line carried them."""
    gateway = carrier.live
    line = await TwilioLine.call(gateway.base_url, carrier.twilio_auth_token, agent="recorded")
    await both_sides_recorded(carrier, line, "twilio")


async def test_telnyx_call_notice_first_and_both_sides_recorded(carrier: CarrierServer) -> None:
    """The same through Telnyx: a signed call.initiated, the answer command over the REST API, then the
    media stream in A-law; the notice is the first audio on it, and the recording holds both sides."""
    line = await answered_line(carrier, agent="recorded")
    await both_sides_recorded(carrier, line, "telnyx")


async def both_sides_recorded(carrier: CarrierServer, line: PhoneLine, transport: str) -> None:
    """A carrier's call from its first audio: the notice first; the caller speaks; after the hang-up the
    recording holds the caller left and the agent right, the agent first."""
    gateway = carrier.live
    try:
        dialled = time.monotonic()
        await line.wait_audio(dialled, min_s=2.0, within_s=30)
        session = next(s for s in list(gateway.gateway.sessions.values()) if s.caller.transport == transport)
        heard = await transcribe(line.pcm_since(dialled)[: 8000 * 3])
        assert "recorded" in heard.lower(), heard
        await line.wait_played(session, 30)
        line.say(np.concatenate([speak(CALLER_SAYS, rate=8000), silence(600, 8000)]))
        await line.done_speaking()
        await eventually(lambda: any(i.role == "user" for i in session.conversation.visible()), 20, "the turn")
    finally:
        await line.hang_up()
    record = await finished_call(gateway, session.id)
    assert record["transport"] == transport
    pcm, rate = read_back(await recording_of(gateway, session.id))
    assert loud_s(pcm[0], rate) >= 1.0, "the caller's speech is on the left"
    assert loud_s(pcm[1], rate) >= 1.5, "the notice and greeting are on the right"
    left_first = np.argmax(np.abs(pcm[0]) > 1500) / rate
    right_first = np.argmax(np.abs(pcm[1]) > 1500) / rate
    assert right_first < left_first, "the agent spoke first: the notice, before the caller said anything"


async def test_the_sweeper_deletes_calls_past_their_agents_retention(gateway: LiveServer) -> None:
    """An agent keeping calls for a hundredth of a second: after one sweep its call, items and recording are
    gone, the file too; a call of an agent with 30 days stays."""
    async with websockets.connect(f"{gateway.ws_url}/v1/realtime?agent=recorded-wav",
                                  additional_headers=gateway.auth) as ws:
        call_id = json.loads(await ws.recv())["session"]["id"]
        while json.loads(await ws.recv())["type"] != "response.done":
            pass
    await finished_call(gateway, call_id)
    await eventually(lambda: gateway.embedded.run(gateway.gateway.recordings.get(call_id)) is not None, 10,
                     "the recording's row")
    path = gateway.embedded.run(gateway.gateway.recordings.get(call_id)).path
    assert path.suffix == ".wav" and path.is_file()
    kept = gateway.embedded.run(gateway.gateway.calls.list_calls(agent="recorded"))
    recordings, calls = gateway.embedded.run(gateway.gateway.retention.sweep())
    assert recordings >= 1 and calls >= 1
    assert not path.exists()
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=gateway.auth) as http:
        assert (await http.get(f"/v1/calls/{call_id}")).status_code == 404
        for call in kept:
            assert (await http.get(f"/v1/calls/{call['id']}")).status_code == 200


async def test_sip_call_consent_by_rfc4733_key_then_both_sides_recorded(carrier: CarrierServer,
                                                                       tmp_path: Path) -> None:
    """SIPp calls an agent that asks for consent: the first audio on the RTP is the notice; the caller
    presses 1 (RFC 4733) and speaks; the record keeps the keypad answer, and the WAV recording holds the
    caller's speech left and the agent's voice right."""
    gateway = carrier.live
    said = speak(CALLER_SAYS, rate=8000)
    call_audio(tmp_path, silence(300, 8000), said, silence(1500, 8000))
    xml = scenario("consent by key", invite(), answered("m=audio [0-9]+ RTP/AVP 0 101"), request("ACK", 1),
                   '  <pause milliseconds="3000"/>\n',
                   '  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_1.pcap"/></action></nop>\n',
                   '  <pause milliseconds="1500"/>\n', stream("caller.ulaw"),
                   '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("sdp",))
    async with captured_call(carrier, tmp_path, xml, service="recorded-keypad") as (capture, caller, session):
        dialled = time.monotonic()
        await eventually(lambda: session.consent.state == "agreed", 30, "consent by the keypad")
        await eventually(lambda: any(i.role == "user" for i in session.conversation.visible()), 30, "the turn")
        first = await transcribe(capture.pcm(since=dialled - 1.0)[: 8000 * 3])
        assert "recorded" in first.lower(), first
        await asyncio.to_thread(gateway.embedded.run, session.caller.hang_up("test done"))
        outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(gateway, session.id)
    assert record["transport"] == "sip"
    assert record["metadata"]["recording"]["consent"] == {"mode": "keypad", "state": "agreed", "by": "keypad",
                                                           "answer": "1"}
    pcm, rate = read_back(await recording_of(gateway, session.id))
    assert loud_s(pcm[0], rate) >= 1.0, "the caller's speech is on the left"
    assert loud_s(pcm[1], rate) >= 2.0, "the notice and question are on the right"


async def test_webrtc_call_notice_first_and_both_sides_recorded(gateway: LiveServer) -> None:
    """An aiortc caller (what a browser page does): the first audio on the track is the notice; the caller
    speaks after it; the recording holds the caller left and the agent right, as the track played them."""
    caller = WebRtcCaller(np.concatenate([silence(4000, 48000), speak(CALLER_SAYS, rate=48000),
                                          silence(1500, 48000)]))
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as http:
            answer = await caller.connect(http, "/v1/realtime/calls", gateway.api_key)
        assert answer.status_code == 201, answer.text
        call_id = (await caller.wait_for("session.created", 10))["session"]["id"]
        await caller.wait_for("output_audio_buffer.stopped", 30)  # the notice and greeting, played in full
        played = np.concatenate(caller.audio_pcm)
        loud = np.flatnonzero(np.abs(played) > 1500)
        assert loud.size, "no agent audio on the track"
        heard = await first_words(played[loud[0]: loud[0] + 48000 * 3], 48000)
        assert "recorded" in heard, heard
        await caller.wait_for("input_audio_buffer.committed", 30)
    finally:
        await caller.close()
    record = await finished_call(gateway, call_id, wait_s=30)
    assert record["transport"] == "webrtc"
    pcm, rate = read_back(await recording_of(gateway, call_id))
    assert loud_s(pcm[0], rate) >= 1.0, "the caller's speech is on the left"
    assert loud_s(pcm[1], rate) >= 1.0, "the notice is on the right"
    start = int(np.argmax(np.abs(pcm[1]) > 1500))
    assert "recorded" in await first_words(pcm[1][start: start + rate * 3].astype(np.int16), rate)


async def test_after_an_operator_takes_a_browser_call_over_the_operator_is_recorded_as_the_agent(
        gateway: LiveServer) -> None:
    """A browser call handed to a person waits on the queue; an operator's browser takes it over (the
    gateway's admin key, which may do what an operator does, places the call and takes it over). The
    recording goes on as the caller hears the call: the operator's voice (which the caller's track plays in
    the agent's place) on the right, the caller's (which now goes to the operator, not the session) on the
    left; the notice before them on the right."""
    operator_says = speak("hello this is dana from the billing team", rate=48000)  # rendered before the call
    caller_says = speak("my card was charged twice last week", rate=48000)
    caller, operator = WebRtcCaller(), WebRtcCaller()
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as http:
            assert (await caller.connect(http, "/v1/realtime/calls", gateway.api_key)).status_code == 201
        call_id = (await caller.wait_for("session.created", 10))["session"]["id"]
        session = gateway.gateway.sessions[call_id]
        await caller.wait_for("output_audio_buffer.stopped", 30)  # the notice and greeting, played in full
        gateway.embedded.run(session.transfer("sip:billing@127.0.0.1:5999", "the caller disputes a charge"))
        async with httpx.AsyncClient(base_url=gateway.base_url, timeout=20) as http:
            taken = await operator.connect(http, f"/v1/escalations/{call_id}/take_over", gateway.api_key)
        assert taken.status_code == 201, taken.text
        heard_from = len(caller.audio_pcm)
        operator.mic.say(operator_says)
        await heard_after(caller.audio_pcm, heard_from, ("dana", "billing"), 30)
        heard_from = len(operator.audio_pcm)
        caller.mic.say(caller_says)
        await heard_after(operator.audio_pcm, heard_from, ("charged", "twice"), 30)
        await operator.close()  # the operator hangs up: so does the call
        await eventually(lambda: call_id not in gateway.gateway.sessions, 15, "the call ended with the operator")
    finally:
        for peer in (caller, operator):
            await peer.close()
    await finished_call(gateway, call_id, wait_s=30)
    pcm, rate = read_back(await recording_of(gateway, call_id))
    left, right = np.clip(pcm, -32768, 32767).astype(np.int16)
    on_the_left = " ".join([await first_words(part, rate) for part in utterances(left, rate)])
    on_the_right = " ".join([await first_words(part, rate) for part in utterances(right, rate)])
    operator_at = max(on_the_right.find("dana"), on_the_right.find("billing"))
    assert 0 <= on_the_right.find("recorded") < operator_at, on_the_right  # the notice, later the operator
    assert "charged" in on_the_left or "twice" in on_the_left, on_the_left
