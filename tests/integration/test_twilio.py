"""Phone calls through Twilio Media Streams, with a test carrier that speaks the protocol as documented.

The carrier streams μ-law audio of spoken requests in real time, plays the agent's audio on a real-time
clock and echoes marks as Twilio does. One call covers the whole path: the greeting, a barge-in that
must produce `clear` and truncate the greeting at what was heard, a spoken order-status request whose
spoken answer is transcribed back, a key press, and a transfer that must reach Twilio's REST API (a
local recorder) with `<Dial>` TwiML only after the handover line was heard.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import CarrierServer, finished_call
from tests.phone_carrier import TwilioLine, eventually, twilio_sign, twilio_voice_form, twilio_voice_webhook
from tests.speech import speak
from voxgate.audio.resample import StreamResampler
from voxgate.engines.local.stt import WhisperTranscriber

REQUEST = "what is the status of order four five six seven"
HUMAN = "can I talk to a real person please"
ACCOUNT = "AC" + "0" * 32


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}}") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def transcribe(pcm8k: np.ndarray) -> str:
    resampler = StreamResampler(8000, 16000)
    pcm16k = np.concatenate([resampler.process(pcm8k), resampler.flush()])
    return (await WhisperTranscriber.shared().transcribe(pcm16k)).text


def session_of(server: CarrierServer, call_id: str) -> Any:
    for session in list(server.live.gateway.sessions.values()):
        started = getattr(session.caller, "started", None)
        if started is not None and started.call_id == call_id:
            return session
    return None


async def wait_session(server: CarrierServer, call_id: str) -> Any:
    await eventually(lambda: session_of(server, call_id), 10, f"a session for call {call_id}")
    return session_of(server, call_id)


async def test_voice_webhook_answers_signed_requests_with_stream_twiml(carrier_server: CarrierServer) -> None:
    live, token = carrier_server.live, carrier_server.twilio_auth_token
    url = f"{live.base_url}/twilio/voice?agent=acme"
    form = twilio_voice_form("CA" + "1" * 32, ACCOUNT)
    async with httpx.AsyncClient() as http:
        ok = await http.post(url, data=form, headers={"X-Twilio-Signature": twilio_sign(url, form, token)})
        assert ok.status_code == 200, ok.text
        assert ok.headers["content-type"].startswith("text/xml")
        stream = ET.fromstring(ok.text).find("./Connect/Stream")
        assert stream is not None
        assert stream.get("url") == f"{live.ws_url}/twilio/media"
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        media_token = parameters.pop("token")
        assert media_token and len(media_token) >= 40  # a fresh single-use token, for this call only
        assert parameters == {"agent": "acme", "from": "+15557654321", "to": "+15551234567",
                              "callSid": form["CallSid"]}

        # Replayed as captured, signature and all: Twilio signs no timestamp, so the CallSid tells.
        replays = metric((await http.get(f"{live.base_url}/metrics", headers=live.auth)).text,
                         "voxgate_carrier_webhooks_rejected_total", carrier="twilio", reason="replayed")
        replay = await http.post(url, data=form, headers={"X-Twilio-Signature": twilio_sign(url, form, token)})
        assert replay.status_code == 409 and replay.json()["error"]["code"] == "replayed"
        assert "token" not in replay.text
        assert metric((await http.get(f"{live.base_url}/metrics", headers=live.auth)).text,
                      "voxgate_carrier_webhooks_rejected_total", carrier="twilio", reason="replayed") == replays + 1

        before = metric((await http.get(f"{live.base_url}/metrics", headers=live.auth)).text,
                        "voxgate_carrier_webhooks_rejected_total", carrier="twilio", reason="invalid_signature")
        tampered = {**form, "From": "+15550000000"}  # signed for other parameters
        for headers, data in [({}, form), ({"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"}, form),
                              ({"X-Twilio-Signature": twilio_sign(url, form, token)}, tampered),
                              ({"X-Twilio-Signature": twilio_sign(url, form, "wrong-token")}, form)]:
            refused = await http.post(url, data=data, headers=headers)
            assert refused.status_code == 403
        after = metric((await http.get(f"{live.base_url}/metrics", headers=live.auth)).text,
                       "voxgate_carrier_webhooks_rejected_total", carrier="twilio", reason="invalid_signature")
        assert after - before == 4


async def test_media_socket_refuses_an_unsigned_upgrade(carrier_server: CarrierServer) -> None:
    url = f"{carrier_server.live.ws_url}/twilio/media"
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, additional_headers={"X-Twilio-Signature": twilio_sign(url, {}, "wrong")})
    assert refused.value.response.status_code == 403


async def test_call_barge_in_order_status_dtmf_and_transfer(carrier_server: CarrierServer) -> None:
    live, token = carrier_server.live, carrier_server.twilio_auth_token
    line = await TwilioLine.call(live.base_url, token, agent="acme", caller="+15557654321", account_sid=ACCOUNT)
    try:
        session = await wait_session(carrier_server, line.call_sid)
        assert session.caller.transport == "twilio"

        # 1. The disclosure and greeting play; the caller talks over them: `clear`, then truncation.
        dialled = time.monotonic()
        await line.wait_audio(dialled, min_s=1.5, within_s=20)
        greeting = [item for item in session.conversation.visible() if item.role == "assistant"][-1]
        said_at = time.monotonic()
        talk_s = line.say(speak(REQUEST, rate=8000))
        await eventually(lambda: line.clears, 5, "a clear on barge-in")
        cleared_at = line.clears[0]
        played_ms = 1000 * sum(len(f.payload) for f in line.frames if f.at < cleared_at) / 8000
        await asyncio.sleep(0.3)
        # Nothing more of the greeting reaches the caller, who is still talking.
        assert not [f for f in line.frames if cleared_at + 0.05 < f.at < said_at + talk_s]
        heard_ms = greeting.content[0].audio_ms
        assert greeting.status == "incomplete"
        # Truncated at what the gateway's playout clock had released to the line (a mark is named
        # "item:ms" and is sent right after the frame it follows): at least every mark the line echoed for
        # the greeting, before the caller spoke or after, and never beyond what reached the line.
        echoed = [(at, float(ms)) for at, (item, ms) in
                  ((at, name.rsplit(":", 1)) for at, name in line.marks_echoed) if item == greeting.id]
        assert echoed, "the line echoed the greeting's marks"
        assert max(ms for _, ms in echoed) <= heard_ms <= played_ms + 1, (heard_ms, echoed, played_ms)

        # 2. The request is answered by voice: transcribe what the caller heard.
        reply_at = await line.wait_audio(await line.done_speaking(), min_s=1.0, within_s=30)
        await line.wait_played(session, within_s=30)
        reply = await transcribe(line.pcm_since(reply_at))
        # Heard back through G.711 and Whisper tiny, "has shipped" sometimes reads "has ship": the status and
        # the date are what make it the order-status answer.
        arrives = carrier_server.live.gateway.clock.today() + timedelta(days=2)  # how the demo data dates it
        assert "ship" in reply.lower() and f"{arrives:%A}".lower() in reply.lower(), reply

        # 3. A key press reaches the session (and the brain's state), never a log line.
        await line.press("1")
        await eventually(lambda: session.keypad.pressed == ["1"], 5, "the key press reaching the session")

        # 4. Transfer: the handover line plays in full, then Twilio's REST API gets the <Dial>.
        asked_at = time.monotonic()
        line.say(speak(HUMAN, rate=8000))
        request = await carrier_server.api.wait_for(f"/Calls/{line.call_sid}.json", within_s=30)
        assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{line.call_sid}.json"
        assert request.form() == {"Twiml": "<Response><Dial>+15550100</Dial></Response>"}
        assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT}:{token}".encode()).decode()
        handover = [f for f in line.frames if f.at > asked_at]
        assert len(handover) * 0.02 > 1.5, "the handover line was not played"
        assert request.at >= handover[-1].at, "transferred before the handover line had played"
        assert all(at <= request.at for at, _ in line.marks_echoed), "transferred before every mark was heard"
        await asyncio.wait_for(line.closed.wait(), timeout=5)  # the gateway leaves the call to the carrier
        assert session.closed and session.end_reason.startswith("transferred")
    finally:
        await line.close()


async def test_rest_actions_use_the_webhooks_sids_whatever_the_stream_says(carrier_server: CarrierServer) -> None:
    """Whoever holds a media socket writes its `start`: the accountSid there must not steer REST calls made
    with the real auth token. The demo agent's key 0 asks for a person, which is a REST transfer."""
    live, token = carrier_server.live, carrier_server.twilio_auth_token
    claimed = "AC" + "f" * 32
    line = await TwilioLine.call(live.base_url, token, agent="acme", account_sid=ACCOUNT, stream_account_sid=claimed)
    try:
        await wait_session(carrier_server, line.call_sid)
        await line.wait_audio(time.monotonic(), min_s=0.5, within_s=20)
        await line.press("0")
        request = await carrier_server.api.wait_for(f"/Calls/{line.call_sid}.json", within_s=30)
        assert request.path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls/{line.call_sid}.json"
        assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{ACCOUNT}:{token}".encode()).decode()
        assert not [r for r in carrier_server.api.requests if claimed in r.path]
    finally:
        await line.close()


async def test_a_carrier_that_stops_reading_is_hung_up_on_and_other_calls_go_on(
        carrier_server: CarrierServer) -> None:
    """The carrier keeps sending but stops reading while the agent talks: once its socket has been full for
    carrier_stall_timeout_s (2 s here) the call is dropped, counted and recorded; another call is unaffected."""
    live, token = carrier_server.live, carrier_server.twilio_auth_token
    host, port = live.base_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a small window, so the gateway's side fills
    sock.connect((host, int(port)))
    deaf = await TwilioLine.call(live.base_url, token, agent="echo", sock=sock)
    other = await TwilioLine.call(live.base_url, token, agent="echo")
    try:
        session = await wait_session(carrier_server, deaf.call_sid)
        deaf._tasks[1].cancel()  # its listener: the client library soon stops reading the socket
        words = " ".join(["testing the line one two three four five six seven eight nine ten eleven twelve"] * 2)
        deaf.say(speak(words, rate=8000))  # one turn, no pause: ~10 s echoed back, more than socket buffers hold
        talk_s = other.say(speak("testing the line, one two three", rate=8000))
        await eventually(lambda: session.closed, 60, "the deaf call being dropped")
        assert session.end_reason == "carrier_not_reading"
        call = await finished_call(live, session.id)
        assert call["status"] == "dropped"
        text = (await httpx.AsyncClient().get(f"{live.base_url}/metrics", headers=live.auth)).text
        assert metric(text, "voxgate_carrier_stalls_total", carrier="twilio") >= 1

        # The other call was answered meanwhile, in full.
        reply_at = await other.wait_audio(await other.done_speaking(), min_s=1.0, within_s=20)
        await other.wait_played(session_of(carrier_server, other.call_sid), within_s=20)
        assert talk_s * 0.7 < len(other.audio_since(reply_at)) / 8000 < talk_s + 1.5
    finally:
        await deaf.close()
        await other.close()


@pytest.mark.parametrize("server", ["carrier_server", "carrier_server_asgi"])
async def test_bad_frames_are_counted_and_the_call_goes_on(server: str, request: pytest.FixtureRequest) -> None:
    """On voxgate's direct media sockets and on the stock ASGI path alike."""
    carrier_server: CarrierServer = request.getfixturevalue(server)
    live, token = carrier_server.live, carrier_server.twilio_auth_token
    line = await TwilioLine.call(live.base_url, token, agent="echo")
    # A second call on another socket: media before start, then a proper start; it must be unaffected.
    other_sid = "CA" + uuid.uuid4().hex
    other_url, other_parameters = await twilio_voice_webhook(live.base_url, token, twilio_voice_form(other_sid),
                                                             agent="echo")
    other = await websockets.connect(other_url, compression=None,
                                     additional_headers={"X-Twilio-Signature": twilio_sign(other_url, {}, token)})
    try:
        sid = line.stream_sid
        good = base64.b64encode(b"\xff" * 160).decode()
        bad_frames: list[str] = [
            "not json at all",
            json.dumps(["an", "array"]),
            json.dumps({"event": "sing"}),
            json.dumps({"event": "media", "streamSid": "MZ" + "f" * 32, "media": {"chunk": "99", "payload": good}}),
            json.dumps({"event": "media", "streamSid": sid, "media": {"chunk": "99999", "payload": "%%not base64"}}),
            json.dumps({"event": "media", "streamSid": sid, "media": {"chunk": "99999", "payload": ""}}),
            json.dumps({"event": "media", "streamSid": sid,
                        "media": {"chunk": "99999", "payload": base64.b64encode(b"\xff" * 9000).decode()}}),
            json.dumps({"event": "media", "streamSid": sid, "media": {"chunk": "1", "payload": good}}),  # late
            json.dumps({"event": "dtmf", "streamSid": sid, "dtmf": {"digit": "X"}}),
            json.dumps({"event": "mark", "streamSid": sid}),
        ]
        for frame in bad_frames:
            await line.ws.send(frame)
        await other.send(json.dumps({"event": "media", "streamSid": "MZ1", "media": {"chunk": "1", "payload": good}}))
        other_line = TwilioLine(ws=other, call_sid=other_sid, parameters=other_parameters)
        await other_line.begin()

        # The echo agent still answers the first call: the garbage cost frames, not the call.
        talk_s = line.say(speak("testing the line, one two three", rate=8000))
        reply_at = await line.wait_audio(await line.done_speaking(), min_s=1.0, within_s=20)
        await line.wait_played(session_of(carrier_server, line.call_sid), within_s=20)
        echoed_s = len(line.audio_since(reply_at)) / 8000
        assert talk_s * 0.7 < echoed_s < talk_s + 1.5, (talk_s, echoed_s)

        text = (await httpx.AsyncClient().get(f"{live.base_url}/metrics", headers=live.auth)).text
        for code in ("invalid_json", "unknown_event", "unknown_stream", "invalid_base64", "bad_payload_size",
                     "out_of_order", "invalid_digit", "missing_field", "media_before_start"):
            assert metric(text, "voxgate_carrier_message_errors_total", carrier="twilio", code=code) >= 1, code
        assert session_of(carrier_server, other_line.call_sid) is not None
        assert session_of(carrier_server, line.call_sid) is not None

        # The carrier hangs up: `stop`, and the session closes.
        session = session_of(carrier_server, other_line.call_sid)
        await other_line.hang_up()
        await eventually(lambda: session.closed, 5, "the session closing")
        assert session.end_reason == "caller_hung_up"  # as a SIP caller's BYE is recorded
    finally:
        await line.close()
        await other.close()
