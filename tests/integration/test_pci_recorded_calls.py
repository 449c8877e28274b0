"""PCI on a recorded call, per transport (issue 15): the caller picks the payment on the keypad and types the
invoice and card numbers (Twilio and Telnyx media-stream events, SIP's RFC 4733 events from SIPp, a WebRTC
page's or a WebSocket client's `input_audio_buffer.dtmf_event`), the keys' in-band tones going down the
line with them as a handset sends them. The payment tool gets the card (it checks the Luhn digit and
answers with the last four); the recording read back with PyAV is silent on both channels over every entry
span (the agent's typing prompts and the caller's key tones fall inside them), and the card is in no stored
row, no debug log line, no conversation item and not in the history the brain reads. A card said aloud
anyway (the project's Piper voice, heard by the gateway's Whisper) is masked in the transcript before the
brain, the store, the events and the logs see it, and the caller is told to use the keypad (on every
transport)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.conftest import CarrierServer, LiveServer, finished_call, start_carrier_server
from tests.integration.test_debug_logs import debug_log
from tests.integration.test_recorded_calls import NOTICE, loud_s, recording_of
from tests.integration.test_sip_calls import captured_call
from tests.integration.test_telnyx import answered_line
from tests.integration.test_zero_retention import every_table
from tests.phone_carrier import PhoneLine, TwilioLine, eventually
from tests.recording_reader import read_back
from tests.sipp_caller import answered, cue, invite, reply, request, scenario, send_cue, stream, ulaw_file
from tests.speech import key_tones, silence, speak
from tests.webrtc_client import WebRtcCaller
from voxgate.session.session import Session

EXAMPLES = Path(__file__).parents[2] / "examples"
# A Luhn-valid test card with no key twice in a row: SIPp's stock RFC 4733 pcaps carry one fixed timestamp
# per key, so a key repeated is (rightly) taken for a retransmission of the first.
CARD_DIGITS = "4242424242424242"
INVOICE = "20931"
SAID = "my card number is " + " ".join(["four two"] * 8)
KEYPAD_LINE = "please don't say card numbers out loud"
# The keys' in-band tones on the caller's line: quiet enough that neither the VAD nor Whisper's energy gate
# (-50 dBFS) takes them for words (the flow brain answers words during an entry by asking again), loud
# enough that a recorder letting the caller's side through would write them: any sample not zero in an
# entry span fails the silence check, so the caller's channel is not silent only because the caller was.
KEY_TONE_DBFS = -56.0
AGENT = "acme-recorded"


@pytest.fixture(scope="module")
def carrier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CarrierServer]:
    """The demo agent (PCI keypad entry for its pay_invoice tool), recording in WAV, behind every door."""
    tmp = tmp_path_factory.mktemp("pci-recorded-gateway")
    shutil.copytree(EXAMPLES / "tools", tmp / "tools")  # the agent's handlers, as ../tools/ from its file
    agents = tmp / "agents"
    agents.mkdir()
    demo = (EXAMPLES / "agents" / "acme.yaml").read_text().replace("name: acme\n", f"name: {AGENT}\n", 1)
    (agents / f"{AGENT}.yaml").write_text(
        demo + f'recording: {{enabled: true, format: wav, notice: "{NOTICE}"}}\nturn_taking: {{vad: webrtc}}\n')
    server = start_carrier_server(tmp, agents_dir=agents, default_agent=AGENT, recordings_dir=tmp / "recordings",
                                  webrtc_host_addresses=["127.0.0.1"])
    yield server
    server.live.embedded.stop()
    server.api.stop()


def assert_no_card(**places: Any) -> None:
    """No place holds the card: its digits in a row once every other character is dropped (any grouping,
    separator or JSON escaping still counts), or its first two groups."""
    holding = [name for name, value in places.items()
               if CARD_DIGITS in re.sub(r"[^0-9]", "", text := value if isinstance(value, str) else repr(value))
               or "4242 4242" in text or "4242-4242" in text]
    assert not holding, f"the card is in: {holding}"


def waiting_for(session: Session) -> str | None:
    """The PCI argument the brain waits to be typed."""
    entry = session.keypad.entry
    return entry.argument if entry is not None else None


def settled(session: Session) -> bool:
    """Nothing left for the agent to say, and the line has played all it was given (a WebSocket client
    plays the audio itself: all of it sent)."""
    caller = session.caller
    line = caller.audio if caller.transport == "sip" else getattr(caller, "output", None)
    return session.response is None and len(session.outbound) == 0 and (line is None or line.playout.drained)


def paid(session: Session) -> bool:
    """The payment tool answered and the agent said so."""
    return any(i.role == "assistant" and "payment went through" in json.dumps(i.to_wire("ga"))
               for i in session.conversation.visible())


async def pay_by_keypad(session: Session, press: Callable[[str], Awaitable[None]]) -> None:
    """The caller waits out the notice and greeting, presses 3 (pay an invoice), then types the invoice
    and card numbers, each once the brain waits for it and its prompt has played, each ended with '#'.
    `press` puts the keys' tones on the caller's line first, then sends their events."""
    await eventually(lambda: settled(session), 60, "the notice and greeting played")
    await press("3")

    async def type_when_asked(argument: str, digits: str) -> None:
        await eventually(lambda: waiting_for(session) == argument, 30, f"the brain waiting for {argument}")
        await eventually(lambda: settled(session), 60, f"the prompt for {argument} played")  # in the span
        await press(digits + "#")

    await type_when_asked("invoice_id", INVOICE)
    await type_when_asked("card_number", CARD_DIGITS)
    await eventually(lambda: paid(session), 30, "the payment confirmed")
    await eventually(lambda: settled(session), 60, "the confirmation played")


async def assert_entry_silenced_and_card_nowhere(live: LiveServer, session: Session, log: str) -> None:
    """After the hang-up: the tool got the card, the recording is silent over both entries, and no row,
    log line, item or history entry holds the card."""
    record = await finished_call(live, session.id, wait_s=30)
    payments = [t for t in record["tool_calls"] if t["name"] == "pay_invoice"]
    assert len(payments) == 1 and payments[0]["status"] == "completed", payments  # the Luhn check passed
    assert json.loads(payments[0]["arguments"])["card_number"] == "****4242"
    # The tool ran on the typed digits: it answers an error for a masked or Luhn-invalid number.
    assert json.loads(payments[0]["output"])["card_last4"] == "4242", payments[0]["output"]
    pcm, rate = read_back(await recording_of(live, session.id))
    silenced = record["metadata"]["recording"]["silenced"]
    assert sum(end - start for start, end in silenced) >= 1.0, silenced  # the entries, prompts included
    for start, end in silenced:
        span = pcm[:, int((start + 0.001) * rate): int((end - 0.001) * rate)]  # the spans are kept to the ms
        assert span.size and not np.abs(span).max(), (start, end)  # the caller's channel and the agent's
    assert loud_s(pcm[1], rate) >= 2.0, "the agent's notice, greeting and confirmation are on the right"
    conversation = json.dumps([item.to_wire("ga") for item in session.conversation.visible()])
    brain = repr(session.conversation.history())
    assert "****4242" in brain  # the tool call is in what the brain reads, masked
    assert_no_card(brain=brain, items=conversation, record=record, log=log,
                   rows=every_table(live, {session.id}))


async def test_twilio_keypad_payment_is_silenced_in_the_recording_and_the_card_is_nowhere(
        carrier: CarrierServer) -> None:
    live = carrier.live
    with debug_log() as log:
        line = await TwilioLine.call(live.base_url, carrier.twilio_auth_token, agent=AGENT)
        session = await phone_call(carrier, line, "twilio", lambda session: pay_by_keypad(session, keys_on(line)))
    await assert_entry_silenced_and_card_nowhere(live, session, log.getvalue())


async def test_telnyx_keypad_payment_is_silenced_in_the_recording_and_the_card_is_nowhere(
        carrier: CarrierServer) -> None:
    with debug_log() as log:
        line = await answered_line(carrier, agent=AGENT)
        session = await phone_call(carrier, line, "telnyx", lambda session: pay_by_keypad(session, keys_on(line)))
    await assert_entry_silenced_and_card_nowhere(carrier.live, session, log.getvalue())


def keys_on(line: PhoneLine) -> Callable[[str], Awaitable[None]]:
    """A carrier line's keypad: the keys' tones in the caller's audio, then the carrier's DTMF events."""

    async def press(keys: str) -> None:
        line.say(key_tones(keys, 8000, KEY_TONE_DBFS))
        await line.done_speaking()
        for key in keys:
            await line.press(key)

    return press


async def phone_call(carrier: CarrierServer, line: PhoneLine, transport: str,
                     caller: Callable[[Session], Awaitable[None]]) -> Session:
    """A carrier's call: once the agent is heard, `caller` does its part with the session; then the hang-up."""
    dialled = time.monotonic()
    try:
        await line.wait_audio(dialled, min_s=1.0, within_s=30)
        session: Session = next(s for s in list(carrier.live.gateway.sessions.values())
                                if s.caller.transport == transport)
        await caller(session)
    finally:
        await line.hang_up()
    return session


def keys_played(directory: Path, keys: str) -> str:
    """SIPp plays the keys' tones (an RTP stream) in `directory`, then sends each key as RFC 4733 events (the
    pcap SIPp ships per key), one after another."""
    name = {"#": "pound", "*": "star"}
    tones, file = key_tones(keys, 8000, KEY_TONE_DBFS), "tones-" + "-".join(name.get(k, k) for k in keys) + ".ulaw"
    (directory / file).write_bytes(ulaw_file(tones))
    return (stream(file) + f'  <pause milliseconds="{tones.size // 8 + 200}"/>\n'  # the tones, then the keys
            + "".join(f'  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_{name.get(k, k)}.pcap"/>'
                      '</action></nop>\n  <pause milliseconds="400"/>\n' for k in keys))


async def test_sip_rfc4733_payment_is_silenced_in_the_recording_and_the_card_is_nowhere(
        carrier: CarrierServer, tmp_path: Path) -> None:
    """SIPp types each number once the test cues it, that is once the brain waits for that number."""
    live = carrier.live
    xml = scenario("pci by key", invite(), answered("m=audio [0-9]+ RTP/AVP 0 101"), request("ACK", 1),
                   cue(), keys_played(tmp_path, "3"), cue(), keys_played(tmp_path, INVOICE + "#"), cue(),
                   keys_played(tmp_path, CARD_DIGITS + "#"), '  <recv request="BYE"/>\n', reply(200, "OK"),
                   variables=("sdp",))
    with debug_log() as log:
        async with captured_call(carrier, tmp_path, xml, service=AGENT) as (_capture, caller, session):
            cues = iter(range(10, 20))

            async def press(_keys: str) -> None:  # SIPp has the keys: cue it to send the next number
                await send_cue(session.caller.invite, next(cues))

            await pay_by_keypad(session, press)
            await asyncio.to_thread(live.embedded.run, session.caller.hang_up("test done"))
            outcome = await caller
        assert outcome.returncode == 0, outcome.messages[-3000:]
    await assert_entry_silenced_and_card_nowhere(live, session, log.getvalue())


async def test_webrtc_data_channel_payment_is_silenced_in_the_recording_and_the_card_is_nowhere(
        carrier: CarrierServer) -> None:
    """A browser page's keypad: the keys' tones on the microphone, then each key an
    `input_audio_buffer.dtmf_event` on the data channel; none of the typed keys comes back to the page as an
    event."""
    live = carrier.live
    caller = WebRtcCaller()

    async def press(keys: str) -> None:
        caller.mic.say(key_tones(keys, 48000, KEY_TONE_DBFS))
        await eventually(lambda: caller.mic.said, 30, "the key tones sent")
        for key in keys:
            caller.send({"type": "input_audio_buffer.dtmf_event", "event": key})

    with debug_log() as log:
        try:
            async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
                assert (await caller.connect(http, "/v1/realtime/calls", live.api_key)).status_code == 201
            session_id = (await caller.wait_for("session.created", 10))["session"]["id"]
            session = live.gateway.sessions[session_id]
            await pay_by_keypad(session, press)
        finally:
            await caller.close()
    assert_no_card(events=caller.events)
    await assert_entry_silenced_and_card_nowhere(live, session, log.getvalue())


async def test_websocket_keypad_payment_is_silenced_in_the_recording_and_the_card_is_nowhere(
        carrier: CarrierServer) -> None:
    """A Realtime WebSocket client's keypad: the keys' tones appended as its caller audio, then each key an
    `input_audio_buffer.dtmf_event`; none of the typed keys comes back as an event."""
    live = carrier.live
    events: list[str] = []

    async def read(ws: websockets.ClientConnection) -> None:
        async for raw in ws:
            events.append(str(raw))

    with debug_log() as log:
        async with websockets.connect(f"{live.ws_url}/v1/realtime?agent={AGENT}", additional_headers=live.auth,
                                      max_size=None) as ws:
            events.append(str(await ws.recv()))
            session = live.gateway.sessions[json.loads(events[0])["session"]["id"]]
            reader = asyncio.create_task(read(ws))

            async def press(keys: str) -> None:
                tones = key_tones(keys, 24000, KEY_TONE_DBFS)
                for start in range(0, tones.size, 24000 // 10):  # 100 ms an event, in order before the keys
                    await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(
                        tones[start:start + 24000 // 10].tobytes()).decode()}))
                for key in keys:
                    await ws.send(json.dumps({"type": "input_audio_buffer.dtmf_event", "event": key}))

            try:
                await pay_by_keypad(session, press)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    assert_no_card(events=events)
    await assert_entry_silenced_and_card_nowhere(live, session, log.getvalue())


def assert_spoken_card_masked(live: LiveServer, session: Session, record: dict[str, Any], log: str,
                              events: object = ()) -> None:
    """The caller's item holds the card masked, and nothing else holds it."""
    said = [i.content[0].transcript or "" for i in session.conversation.visible() if i.role == "user"]
    # Heard, and masked: Whisper hears 16 to 24 "four two"s on a phone line, and on Telnyx's A-law now and
    # then a digit swapped ("**** **** **** 2442"), so the last four shown vary; the card is in none of it.
    assert any(re.search(r"\*\*\*\* \*\*\*\* \*\*\*\* [0-9]{4}", text) for text in said), said
    assert_no_card(brain=repr(session.conversation.history()), said=said, record=record, log=log, events=events,
                   rows=every_table(live, {session.id}))


def keypad_asked(session: Session) -> bool:
    return any(i.role == "assistant" and KEYPAD_LINE in json.dumps(i.to_wire("ga"))
               for i in session.conversation.visible())


async def test_websocket_card_said_aloud_is_masked_before_the_brain_store_events_and_logs(
        carrier: CarrierServer) -> None:
    live = carrier.live
    said = np.concatenate([speak(SAID, rate=24000), silence(1200, 24000)])
    events: list[str] = []
    with debug_log() as log:
        async with websockets.connect(f"{live.ws_url}/v1/realtime?agent={AGENT}", additional_headers=live.auth,
                                      max_size=None) as ws:
            session = live.gateway.sessions[json.loads(await ws.recv())["session"]["id"]]
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime", "audio": {
                "input": {"transcription": {"model": "whisper-1"}}}}}))
            while json.loads(raw := await ws.recv())["type"] != "response.done":  # the notice and greeting
                events.append(str(raw))
            chunk = 24000 * 20 // 1000
            for start in range(0, said.size, chunk):  # in real time, as a caller speaks
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(said[start:start + chunk].tobytes()).decode()}))
                await asyncio.sleep(0.02)
            while not keypad_asked(session):  # the caller told to use the keypad
                events.append(str(await asyncio.wait_for(ws.recv(), 60)))
        record = await finished_call(live, session.id)
    assert_spoken_card_masked(live, session, record, log.getvalue(), events)


def card_said(rate: int) -> np.ndarray:
    """The caller reading the card out, then a pause that ends the turn."""
    return np.concatenate([speak(SAID, rate=rate), silence(1200, rate)])


async def say_card(session: Session, say: Callable[[], Awaitable[None]]) -> None:
    """Once the notice and greeting have played, the caller reads the card out (`say`); the agent tells them
    to use the keypad."""
    await eventually(lambda: settled(session), 60, "the notice and greeting played")
    await say()
    await eventually(lambda: keypad_asked(session), 60, "the caller told to use the keypad")


def card_said_on(line: PhoneLine) -> Callable[[Session], Awaitable[None]]:
    async def say() -> None:
        line.say(card_said(8000))
        await line.done_speaking()

    return lambda session: say_card(session, say)


async def test_twilio_card_said_aloud_is_masked_before_the_brain_store_and_logs(carrier: CarrierServer) -> None:
    live = carrier.live
    with debug_log() as log:
        line = await TwilioLine.call(live.base_url, carrier.twilio_auth_token, agent=AGENT)
        session = await phone_call(carrier, line, "twilio", card_said_on(line))
        record = await finished_call(live, session.id, wait_s=30)
    assert_spoken_card_masked(live, session, record, log.getvalue())


async def test_telnyx_card_said_aloud_is_masked_before_the_brain_store_and_logs(carrier: CarrierServer) -> None:
    with debug_log() as log:
        line = await answered_line(carrier, agent=AGENT)
        session = await phone_call(carrier, line, "telnyx", card_said_on(line))
        record = await finished_call(carrier.live, session.id, wait_s=30)
    assert_spoken_card_masked(carrier.live, session, record, log.getvalue())


async def test_sip_card_said_aloud_is_masked_before_the_brain_store_and_logs(
        carrier: CarrierServer, tmp_path: Path) -> None:
    """SIPp reads the card out (an RTP stream of the Piper voice) once the test cues it."""
    live = carrier.live
    (tmp_path / "said.ulaw").write_bytes(ulaw_file(card_said(8000)))
    xml = scenario("card said", invite(), answered("m=audio [0-9]+ RTP/AVP 0 101"), request("ACK", 1),
                   cue(), stream("said.ulaw"), '  <recv request="BYE"/>\n', reply(200, "OK"), variables=("sdp",))
    with debug_log() as log:
        async with captured_call(carrier, tmp_path, xml, service=AGENT) as (_capture, caller, session):
            await say_card(session, lambda: send_cue(session.caller.invite, 10))
            await asyncio.to_thread(live.embedded.run, session.caller.hang_up("test done"))
            outcome = await caller
        assert outcome.returncode == 0, outcome.messages[-3000:]
        record = await finished_call(live, session.id, wait_s=30)
    assert_spoken_card_masked(live, session, record, log.getvalue())


async def test_webrtc_card_said_aloud_is_masked_before_the_brain_store_events_and_logs(
        carrier: CarrierServer) -> None:
    live = carrier.live
    caller = WebRtcCaller()

    async def say() -> None:
        caller.mic.say(card_said(48000))

    with debug_log() as log:
        try:
            async with httpx.AsyncClient(base_url=live.base_url, timeout=20) as http:
                assert (await caller.connect(http, "/v1/realtime/calls", live.api_key)).status_code == 201
            session = live.gateway.sessions[(await caller.wait_for("session.created", 10))["session"]["id"]]
            await say_card(session, say)
        finally:
            await caller.close()
        record = await finished_call(live, session.id, wait_s=30)
    assert_spoken_card_masked(live, session, record, log.getvalue(), caller.events)
