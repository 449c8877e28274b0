"""WebRTC calls over real loopback sockets: aiortc on both ends, the echo engine behind the session.

Signalling (GA, beta, multipart), bad offers, audio both ways with `output_audio_buffer.*`, barge-in
truncated by the server at what it played, data channel garbage, sideband, hang-up, and a peer that
never connects.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection

from tests.conftest import LiveServer, finished_call, start_server
from tests.speech import silence, speak
from tests.webrtc_client import WebRtcCaller
from voxgate.transports.webrtc import calls_of

API = {"Authorization": "Bearer sk-test-voxgate"}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("webrtc"), engine="echo", webrtc_host_addresses=["127.0.0.1"],
                        webrtc_connect_timeout_s=2.0)
    yield live
    live.embedded.stop()


@pytest.fixture
async def caller() -> AsyncIterator[WebRtcCaller]:
    client = WebRtcCaller()
    yield client
    await client.close()


def utterance(text: str, lead_ms: float = 300) -> np.ndarray:
    return np.concatenate([silence(lead_ms, 48000), speak(text, rate=48000), silence(900, 48000)])


async def ephemeral(http: httpx.AsyncClient, session: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"expires_after": {"anchor": "created_at", "seconds": 60}}
    if session:
        body["session"] = session
    return str((await http.post("/v1/realtime/client_secrets", headers=API, json=body)).json()["value"])


async def wait_until(predicate: Any, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return bool(predicate())


def live_calls(gateway: LiveServer) -> int:
    return len(getattr(gateway.app.state, "webrtc_calls", ()))


# -- bad offers ----------------------------------------------------------------------------------------


async def real_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def no_audio_offer() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


def only_codecs(sdp: str, formats: str) -> str:
    out = re.sub(r"^(m=audio \d+ \S+) .*$", rf"\1 {formats}", sdp, flags=re.M)
    return re.sub(r"^a=(rtpmap|fmtp|rtcp-fb):.*\r?\n", "", out, flags=re.M)


async def test_bad_offers_get_a_clear_400_and_spend_no_key(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    key = await ephemeral(http)
    offer = await real_offer()
    cases = {
        "not sdp": ("hello there", "not an SDP offer"),
        "garbage lines": ("v=0\r\n!!!\r\n", "not of the form"),
        "no audio": (await no_audio_offer(), "no audio section"),
        "unsupported codecs": (only_codecs(offer, "9 18"), "g722, g729"),
        "no fingerprint": (re.sub(r"^a=fingerprint:.*\r?\n", "", offer, flags=re.M), "DTLS fingerprint"),
        "no ice": (re.sub(r"^a=ice-pwd:.*\r?\n", "", offer, flags=re.M), "ICE credentials"),
        "bad port": (re.sub(r"^m=audio \d+ ", "m=audio 99999 ", offer, flags=re.M), "Port out of range"),
        "lite peer": (offer.replace("t=0 0\r\n", "t=0 0\r\na=ice-lite\r\n"), "ICE-lite"),  # the answer's plan
    }
    for name, (sdp, message) in cases.items():
        reply = await http.post("/v1/realtime/calls", content=sdp,
                                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"})
        assert reply.status_code == 400, name
        error = reply.json()["error"]
        assert error["code"] == "invalid_offer" and message in error["message"], (name, error)
    reply = await http.post("/v1/realtime/calls", content=b"v=0", headers={**API, "Content-Type": "image/png"})
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "unsupported_content_type"
    # None of that spent the key.
    client = WebRtcCaller()
    try:
        assert (await client.connect(http, "/v1/realtime/calls", key)).status_code == 201
    finally:
        await client.close()
    assert await wait_until(lambda: live_calls(gateway) == 0)
    # The call leaves the registry before its session has closed (that awaits the record): wait for both.
    assert await wait_until(lambda: not gateway.gateway.sessions)


async def test_keys_are_checked(http: httpx.AsyncClient, caller: WebRtcCaller) -> None:
    sdp = await caller.offer()
    for auth in ({}, {"Authorization": "Bearer ek_forged"}, {"Authorization": "Bearer nope"}):
        reply = await http.post("/v1/realtime/calls", content=sdp, headers={**auth, "Content-Type": "application/sdp"})
        assert reply.status_code == 401
    key = await ephemeral(http)
    ok = await http.post("/v1/realtime/calls", content=sdp,
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"})
    assert ok.status_code == 201
    again = await http.post("/v1/realtime/calls", content=sdp,
                            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"})
    assert again.status_code == 401  # single use


# -- a whole call -----------------------------------------------------------------------------------


async def test_echo_call_audio_both_ways(gateway: LiveServer, http: httpx.AsyncClient, caller: WebRtcCaller) -> None:
    caller.mic.say(utterance("testing one two three"))
    reply = await caller.connect(http, "/v1/realtime/calls", await ephemeral(http))
    assert reply.status_code == 201 and reply.headers["content-type"].startswith("application/sdp")
    assert reply.headers["location"].startswith("/v1/realtime/calls/rtc_")
    created = await caller.wait_for("session.created", 5)
    assert created["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    stopped = await caller.wait_for("output_audio_buffer.stopped", 20)
    types = caller.types()
    assert types[0] == "session.created"
    assert types.index("output_audio_buffer.started") < types.index("response.done") < types.index(
        "output_audio_buffer.stopped")
    done = next(e for e in caller.events if e["type"] == "response.done")
    assert stopped["response_id"] == done["response"]["id"]
    assert "response.output_audio.delta" not in types  # audio rides RTP
    # The echo came back as audio on the track: loud frames, about as long as what was said.
    loud = sum(1 for rms in caller.audio_energy if rms > 300)
    assert loud * 20 > 600, loud
    # RTCP both ways over SRTCP: aiortc's report echoes one of our sender reports, so the round trip is known,
    # and the call's record keeps the media's figures (never a key).
    call = calls_of(gateway.app.state).get(caller.call_id)
    assert call is not None and call.session is not None and call.rtcp is not None
    rtcp, session_id = call.rtcp, call.session.id
    assert await wait_until(lambda: rtcp.round_trip_ms is not None, 15)
    assert (await http.post(f"/v1/realtime/calls/{caller.call_id}/hangup", headers=API)).status_code == 200
    media = (await finished_call(gateway, session_id))["metadata"]["media"]
    assert media["codec"] == "opus" and media["srtp"] == "AES_CM_128_HMAC_SHA1_80", media
    assert media["received"]["packets"] > 50 and media["sent"]["packets"] > 50, media
    assert media["rtcp"]["sent"] >= 1 and media["rtcp"]["received"] >= 1 and media["round_trip_ms"] is not None
    assert media["peer_report"]["highest_sequence"] > 0 and not media["dropped"], media


async def test_barge_in_is_truncated_at_what_was_played(http: httpx.AsyncClient, caller: WebRtcCaller) -> None:
    caller.mic.say(utterance("this is a long sentence that the echo engine will play back to me in full"))
    assert (await caller.connect(http, "/v1/realtime/calls", await ephemeral(http))).status_code == 201
    started = await caller.wait_for("output_audio_buffer.started", 20)
    await asyncio.sleep(1.0)
    caller.mic.say(utterance("stop, wait a moment please", lead_ms=0))
    cleared = await caller.wait_for("output_audio_buffer.cleared", 10)
    truncated = await caller.wait_for("conversation.item.truncated", 5)
    assert cleared["response_id"] == started["response_id"]
    done = await caller.wait_for("response.output_audio.done", 5)
    item = truncated["item_id"]
    assert item == done["item_id"]
    # Heard: about a second plus the time to detect the barge-in; far less than the whole reply.
    assert 700 <= truncated["audio_end_ms"] <= 3500, truncated
    after = caller.events.index(cleared)
    assert not any(e["type"] == "output_audio_buffer.stopped" and e["response_id"] == started["response_id"]
                   for e in caller.events[after:])


async def test_data_channel_garbage_gets_errors_and_the_call_goes_on(http: httpx.AsyncClient,
                                                                    caller: WebRtcCaller) -> None:
    assert (await caller.connect(http, "/v1/realtime/calls", await ephemeral(http))).status_code == 201
    await caller.wait_for("session.created", 5)
    await asyncio.wait_for(caller.channel_open.wait(), 5)
    mark = len(caller.events)
    caller.send("not json at all")
    caller.channel.send(b"\xff\xfe\x00")
    caller.send({"type": "no.such.event"})
    caller.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Still here."}})
    updated = await caller.wait_for("session.updated", 5, after=mark)
    errors = [e for e in caller.events[mark:] if e["type"] == "error"]
    assert len(errors) == 3 and {e["error"]["code"] for e in errors} >= {"invalid_json"}
    assert updated["session"]["instructions"] == "Still here."


async def test_an_event_over_the_browsers_message_size_is_replaced_by_an_error_and_the_call_goes_on(
        http: httpx.AsyncClient, caller: WebRtcCaller) -> None:
    """A browser that takes 64 KiB messages (a=max-message-size:65536) may send us a 100 KB item (our answer
    allows 256 KiB); the item's echo cannot be sent back whole, so the page gets an error that says why."""
    offer = caller.offer

    async def smaller() -> str:
        sdp = await offer()
        assert "a=max-message-size:262144" in sdp
        return sdp.replace("a=max-message-size:262144", "a=max-message-size:65536")

    caller.offer = smaller  # type: ignore[method-assign]
    assert (await caller.connect(http, "/v1/realtime/calls", await ephemeral(http))).status_code == 201
    await caller.wait_for("session.created", 5)
    await asyncio.wait_for(caller.channel_open.wait(), 5)
    mark = len(caller.events)
    text = "words " * 17_000
    caller.send({"type": "conversation.item.create",
                 "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})
    error = await caller.wait_for("error", 10, after=mark)
    assert error["error"]["code"] == "event_too_large" and "max-message-size" in error["error"]["message"]
    caller.send({"type": "session.update", "session": {"type": "realtime", "instructions": "Still here."}})
    assert (await caller.wait_for("session.updated", 5, after=mark))["session"]["instructions"] == "Still here."
    assert all(len(raw) <= 65536 for raw in caller.raw_messages)


async def test_multipart_session_and_bound_keys(http: httpx.AsyncClient) -> None:
    # API key + session part: the part configures the call.
    client = WebRtcCaller()
    try:
        reply = await client.connect(http, "/v1/realtime/calls", "sk-test-voxgate",
                                     session={"type": "realtime", "instructions": "From the part."})
        assert reply.status_code == 201
        assert (await client.wait_for("session.created", 5))["session"]["instructions"] == "From the part."
    finally:
        await client.close()
    # Ephemeral key + a part that contradicts what the key was minted for: refused, key not spent.
    key = await ephemeral(http, {"type": "realtime", "instructions": "Minted."})
    client = WebRtcCaller()
    try:
        reply = await client.connect(http, "/v1/realtime/calls", key,
                                     session={"type": "realtime", "instructions": "Overridden."})
        assert reply.status_code == 400
        assert reply.json()["error"] == {"type": "invalid_request_error", "code": "session_mismatch",
                                         "message": reply.json()["error"]["message"], "param": "session.instructions"}
    finally:
        await client.close()
    # ...while a part that only adds to it is applied on top.
    client = WebRtcCaller()
    try:
        reply = await client.connect(http, "/v1/realtime/calls", key,
                                     session={"type": "realtime", "instructions": "Minted.",
                                              "audio": {"output": {"speed": 1.2}}})
        assert reply.status_code == 201
        session = (await client.wait_for("session.created", 5))["session"]
        assert session["instructions"] == "Minted." and session["audio"]["output"]["speed"] == 1.2
    finally:
        await client.close()


async def test_beta_signalling(http: httpx.AsyncClient, caller: WebRtcCaller) -> None:
    beta = (await http.post("/v1/realtime/sessions", headers=API, json={"voice": "joe"})).json()
    caller.mic.say(utterance("hello there"))
    reply = await caller.connect(http, "/v1/realtime?model=gpt-4o-realtime-preview", beta["client_secret"]["value"])
    assert reply.status_code == 201
    created = await caller.wait_for("session.created", 5)
    assert "modalities" in created["session"] and "type" not in created["session"]
    await caller.wait_for("output_audio_buffer.stopped", 20)
    types = set(caller.types())
    assert "response.audio_transcript.done" in types and "conversation.item.created" in types
    assert not {"response.output_audio_transcript.done", "conversation.item.added", "conversation.item.done"} & types


# -- sideband, hang-up, peers that go away -------------------------------------------------------------


async def test_sideband_watches_and_steers_a_call(gateway: LiveServer, http: httpx.AsyncClient,
                                                  caller: WebRtcCaller) -> None:
    key = await ephemeral(http)
    assert (await caller.connect(http, "/v1/realtime/calls", key)).status_code == 201
    await caller.wait_for("session.created", 5)
    url = f"{gateway.ws_url}/v1/realtime?call_id={caller.call_id}"
    async with websockets.connect(url, additional_headers=API) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["type"] == "session.created"
        mark = len(caller.events)
        await ws.send(json.dumps({"type": "session.update",
                                  "session": {"type": "realtime", "instructions": "Set by the app server."}}))
        seen = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert seen["type"] == "session.updated" and seen["session"]["instructions"] == "Set by the app server."
        on_channel = await caller.wait_for("session.updated", 5, after=mark)
        assert on_channel["session"]["instructions"] == "Set by the app server."
    for headers, status in ((API, 404), ({"Authorization": f"Bearer {await ephemeral(http)}"}, 403)):
        target = "rtc_nosuchcall" if status == 404 else caller.call_id
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{gateway.ws_url}/v1/realtime?call_id={target}", additional_headers=headers)
        assert refused.value.response.status_code == status
        if status == 404:
            assert json.loads(refused.value.response.body)["error"]["code"] == "call_id_not_found"


async def test_hangup_frees_everything(gateway: LiveServer, http: httpx.AsyncClient, caller: WebRtcCaller) -> None:
    assert (await caller.connect(http, "/v1/realtime/calls", await ephemeral(http))).status_code == 201
    await caller.wait_for("session.created", 5)
    assert (await http.post(f"/v1/realtime/calls/{caller.call_id}/hangup")).status_code == 401
    # OpenAI's other call-control routes: a browser call was accepted when it was made, and has no phone
    # line to transfer. Each is refused with a problem that says so, and the call goes on.
    refer = await http.post(f"/v1/realtime/calls/{caller.call_id}/refer", headers=API,
                            json={"target_uri": "tel:+15550100"})
    assert refer.status_code == 400 and refer.json()["error"]["code"] == "refer_not_supported", refer.text
    for action in ("accept", "reject"):
        answer = await http.post(f"/v1/realtime/calls/{caller.call_id}/{action}", headers=API,
                                 json={"type": "realtime"})
        assert answer.status_code == 409 and "WebRTC" in answer.json()["error"]["message"], answer.text
    assert live_calls(gateway) == 1
    reply = await http.post(f"/v1/realtime/calls/{caller.call_id}/hangup", headers=API)
    assert reply.status_code == 200 and reply.content == b""
    assert await wait_until(lambda: live_calls(gateway) == 0 and not gateway.gateway.sessions)
    assert await wait_until(lambda: caller.pc.connectionState == "closed", 10)
    assert (await http.post(f"/v1/realtime/calls/{caller.call_id}/hangup", headers=API)).status_code == 404


async def test_peer_that_leaves_or_never_connects_is_dropped(gateway: LiveServer, http: httpx.AsyncClient) -> None:
    client = WebRtcCaller()
    reply = await client.connect(http, "/v1/realtime/calls", await ephemeral(http))
    assert reply.status_code == 201
    port = int(re.search(r"^a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 (\d+) typ host", reply.text, re.M).group(1))  # type: ignore[union-attr]
    await client.wait_for("session.created", 5)
    await client.close()  # the browser tab goes away (its DTLS close_notify and SCTP ABORT end the call)
    assert await wait_until(lambda: live_calls(gateway) == 0 and not gateway.gateway.sessions)
    # ...and the call's media socket with it: its port can be bound again.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        assert await wait_until(lambda: _binds(probe, port))

    ghost = WebRtcCaller()  # posts an offer and never applies the answer: ICE never starts
    try:
        sdp = await ghost.offer()
        reply = await http.post("/v1/realtime/calls", content=sdp, headers={**API, "Content-Type": "application/sdp"})
        assert reply.status_code == 201 and live_calls(gateway) == 1
        assert await wait_until(lambda: live_calls(gateway) == 0 and not gateway.gateway.sessions, 6)
    finally:
        await ghost.close()


def _binds(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True
