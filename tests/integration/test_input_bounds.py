"""Bounded input on a live gateway: oversized items, deep nesting, bad multipart and SDP get clear answers,
a maximal item is redacted off the event loop while another call goes on being served (issue 10, H4), and
numbers as speech recognition writes them are masked in transcripts, replies and records (H3)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import ErrorRecords, LiveServer, finished_call, start_server
from tests.integration.test_webrtc_calls import real_offer
from tests.speech import silence, speak
from voxgate.protocol.json_text import MAX_JSON_DEPTH


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("bounds"), engine="echo", default_agent="echo",
                        webrtc_host_addresses=["127.0.0.1"])
    yield live
    live.embedded.stop()


def connect(gateway: LiveServer) -> Any:
    return websockets.connect(f"{gateway.ws_url}/v1/realtime", max_size=None, additional_headers=gateway.auth)


async def next_of(ws: Any, kind: str, event_id: str | None = None) -> dict[str, Any]:
    """The next event of this type (and, for errors, answering this event id), skipping others."""
    while True:
        event = json.loads(await ws.recv())
        if event["type"] == kind and (event_id is None or event["error"]["event_id"] == event_id):
            return event


def item_event(text: str, event_id: str) -> str:
    return json.dumps({"type": "conversation.item.create", "event_id": event_id, "item": {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}})


def ping(n: int) -> str:
    """A cheap event the session must answer: retrieving an item that is not there."""
    return json.dumps({"type": "conversation.item.retrieve", "item_id": "item_absent", "event_id": f"ping-{n}"})


async def test_an_oversized_item_is_refused_before_any_work(gateway: LiveServer, error_logs: ErrorRecords) -> None:
    async with connect(gateway) as ws:
        await next_of(ws, "session.created")
        await ws.send(item_event("@" * 15_000_000, "evt_huge"))  # froze every call for 26 s (H4)
        await ws.send(ping(0))
        error = (await next_of(ws, "error"))["error"]
        assert error == {"type": "invalid_request_error", "code": "string_above_max_length",
                         "param": "item.content[0].text", "event_id": "evt_huge", "message": error["message"]}
        assert f"at most {gateway.gateway.settings.max_item_text_chars} characters" in error["message"]
        # The next event is the answer to the ping: nothing was added to the conversation.
        assert (await next_of(ws, "error"))["error"]["event_id"] == "ping-0"
    assert not error_logs.records


async def test_another_call_is_served_while_a_maximal_item_is_redacted(gateway: LiveServer,
                                                                       http: httpx.AsyncClient) -> None:
    limit = gateway.gateway.settings.max_item_text_chars
    card = " and 4111 1111 1111 1111"
    # Digits in single-digit groups are redaction's slowest input: every group starts a card window.
    text = ("1 " * limit)[:limit - len(card)] + card
    async with connect(gateway) as heavy, connect(gateway) as other:
        heavy_id = (await next_of(heavy, "session.created"))["session"]["id"]
        await next_of(other, "session.created")
        await heavy.send(item_event(text, "evt_max"))
        # The other caller keeps asking; count its answers until the heavy item is in the call record.
        answered = 0
        while True:
            await other.send(ping(answered))
            await next_of(other, "error", f"ping-{answered}")
            answered += 1
            items = (await http.get(f"/v1/calls/{heavy_id}", headers=gateway.auth)).json().get("items") or []
            if items and items[0]["text"]:
                break
        print(f"the other call was answered {answered} times while a {limit}-character item was redacted")
        # Redaction on the loop would hold the other call's first ping until the item was stored: answered
        # once. Off the loop it is answered while the redaction runs, however fast the machine (a fixed
        # higher count measured the machine's speed: 4 on a fast hour of CI).
        assert answered >= 2
        stored = items[0]["text"]
        assert stored == text[:-len(card)] + " and **** **** **** 1111"
        added = await next_of(heavy, "conversation.item.added")
        # The client's own item comes back as every engine reads it: its card masked as it arrived.
        assert added["item"]["content"][0]["text"] == stored


async def test_deep_nesting_is_answered_without_a_traceback(gateway: LiveServer, error_logs: ErrorRecords) -> None:
    async with connect(gateway) as ws:
        await next_of(ws, "session.created")
        for n, depth in enumerate((MAX_JSON_DEPTH + 1, 1000, 100_000)):
            await ws.send('{"type":"session.update","event_id":"deep","session":{"instructions":'
                          + "[" * depth + "]" * depth + "}}")
            error = (await next_of(ws, "error"))["error"]
            assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_json"), depth
            assert "deeper than" in error["message"] and "Traceback" not in error["message"]
            await ws.send(ping(n))
            assert (await next_of(ws, "error"))["error"]["event_id"] == f"ping-{n}"
    assert not error_logs.records


def multipart(boundary: str, *parts: tuple[str, bytes]) -> bytes:
    body = b""
    for name, payload in parts:
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n".encode() + payload + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


async def test_bad_multipart_and_sdp_get_a_400_problem_without_library_internals(
        gateway: LiveServer, http: httpx.AsyncClient, error_logs: ErrorRecords) -> None:
    offer = (await real_offer()).encode()
    form = "multipart/form-data; boundary=xyz"
    deep = b'{"type":"realtime","instructions":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lines = offer.decode().split("\r\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("m=application"))
    def with_sections(count: int) -> bytes:
        extra = [f"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:x{k}" for k in range(count)]
        return "\r\n".join(lines[:at] + extra + lines[at:]).encode()

    # An audio section outside the offer's BUNDLE group would need a transport of its own.
    unbundled = offer.decode().replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 1")
    # The module's gateway is shared: an earlier test's WebSocket session may still be closing (a CI run on a
    # loaded machine saw one). What counts is that none of these offers left a session behind.
    earlier = set(gateway.gateway.sessions)
    cases: list[tuple[str, bytes, str, str]] = [
        (form, multipart("xyz", ("sdp", offer), ("session", deep)), "invalid_json", "deeper than"),
        (form, multipart("xyz", ("sdp", offer), ("session", b"[1,")), "invalid_json", "not valid JSON"),
        (form, multipart("xyz", ("session", b"{}")), "missing_required_parameter", "no 'sdp' part"),
        (form, b"--xyz\r\nnot a part at all", "missing_required_parameter", "no 'sdp' part"),
        ("multipart/form-data", multipart("xyz", ("sdp", offer)), "invalid_body", "boundary"),
        (form, multipart("xyz", ("sdp", offer), ("session", b'{"audio": [1]}')), "invalid_type", ""),
        (form, multipart("xyz", ("sdp", b"\xff\xfe not sdp")), "invalid_offer", "not an SDP offer"),
        ("application/sdp", with_sections(10), "invalid_offer", "12 media sections; at most 8 are accepted"),
        ("application/sdp", with_sections(700), "invalid_offer", "lines; at most 300 are accepted"),  # stalled 0.5 s
        ("application/sdp", b"v=0\r\n" + b"a=x\r\n" * 400, "invalid_offer", "at most 300 are accepted"),
        ("application/sdp", unbundled.encode(), "invalid_offer", "not in its BUNDLE group"),
    ]
    for content_type, body, code, message in cases:
        reply = await http.post("/v1/realtime/calls", content=body,
                                headers={**gateway.auth, "Content-Type": content_type})
        assert reply.status_code == 400, (code, reply.text[:300])
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == code, (code, error)
        assert message in error["message"], (message, error)
        assert not any(word in error["message"] for word in ("aiortc", "Traceback", "username fragment", "mid"))
    assert not error_logs.records
    assert set(gateway.gateway.sessions) <= earlier


# -- what speech recognition writes (H3) ------------------------------------------------------------------

PLAIN_AGENT = """\
name: plain
description: No tools and no PCI mode, so only redaction stands between a caller's numbers and the record.
engine: local
fallback: "Sorry, I didn't catch that."
"""


@pytest.fixture(scope="module")
def plain_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("plain")
    (tmp / "agents").mkdir()
    (tmp / "agents" / "plain.yaml").write_text(PLAIN_AGENT)
    live = start_server(tmp, engine="local", agents_dir=tmp / "agents", default_agent="plain")
    yield live
    live.embedded.stop()


@pytest.mark.parametrize("said", [
    "my card number is four one one one, one one one one, one one one one, one one one one",
    "my social is one two three, four five, six seven eight nine",
])
async def test_spoken_numbers_are_masked_in_transcripts_replies_and_records(plain_gateway: LiveServer,
                                                                            said: str) -> None:
    audio = np.concatenate([silence(300, 24000), speak(said, rate=24000), silence(300, 24000)]).astype("<i2")
    async with connect(plain_gateway) as ws:
        session_id = (await next_of(ws, "session.created"))["session"]["id"]
        # One manual turn: what is tested is what Whisper writes, not where a VAD ends the turn.
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"], "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1"},
                "turn_detection": None}}}}))
        await next_of(ws, "session.updated")
        chunk = 24000 // 50 * 2
        data = audio.tobytes()
        for start in range(0, len(data), chunk):
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(data[start:start + chunk]).decode()}))
        await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        await ws.send(json.dumps({"type": "response.create"}))
        transcript = (await next_of(ws, "conversation.item.input_audio_transcription.completed"))["transcript"]
        reply = (await next_of(ws, "response.done"))["response"]
    print(f"{said!r} was transcribed and masked as {transcript!r}")
    # Whisper writes these as digits ("My card number is 4-1-1-1-1. 1-1-1-...", "My social is 1-2-3, 4-5, ..."):
    # at most a card's last four may be left of them, wherever they go.
    assert sum(ch.isdigit() for ch in transcript) <= 4, transcript
    spoken_back = " ".join(part.get("text") or part.get("transcript") or ""
                           for item in reply["output"] for part in item.get("content", []))
    assert sum(ch.isdigit() for ch in spoken_back) <= 4, spoken_back
    call = await finished_call(plain_gateway, session_id)
    stored = " ".join(item["text"] or "" for item in call["items"])
    assert sum(ch.isdigit() for ch in stored) <= 4, stored


async def test_a_card_in_a_typed_request_reaches_no_argument_reply_or_end_reason(live_server: LiveServer) -> None:
    said = "get me a person, my card 4,111,111,111,111,111 was charged twice"
    async with connect(live_server) as ws:
        session_id = (await next_of(ws, "session.created"))["session"]["id"]
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["text"]}}))
        await ws.send(item_event(said, "evt_card"))
        await ws.send(json.dumps({"type": "response.create"}))
        reply = (await next_of(ws, "response.done"))["response"]
    spoken_back = " ".join(part.get("text") or "" for item in reply["output"] for part in item.get("content", []))
    call = await finished_call(live_server, session_id)
    transfer = next(t for t in call["tool_calls"] if t["name"] == "transfer_to_human")
    for field in (spoken_back, transfer["arguments"], call["end_reason"], call["items"][0]["text"]):
        assert sum(ch.isdigit() for ch in field) <= 4, field  # a card's last four at most
    assert call["end_reason"].startswith("transferred: ") and "**** **** ****" in call["end_reason"]
