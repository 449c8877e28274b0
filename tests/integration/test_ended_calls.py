"""An ended call is freed as it ends: its session, its transport and their parts hold no reference cycles,
so reference counting frees them, not the cycle collector. A full pass of the collector walks every live
call (tens of ms with a few hundred up, a gap in every caller's audio; bench/sip_capacity.py prints the
pauses), and ended calls left in cycles are what make those passes come round under call churn.

Each test lets a call's agent answer a turn (so the reply's playout, the latency budget and the items have
been used), then has the collector keep what it finds (gc.DEBUG_SAVEALL) and ends the call. Whatever was
left in a cycle then stays alive, and the test fails naming it; an acyclic call is gone as soon as its
last reference goes.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server
from tests.phone_carrier import TwilioLine, eventually
from tests.sipp_caller import SippRun, answered, free_port, invite, reply, request, run_sipp, scenario, ulaw_file
from tests.speech import silence, speak
from tests.webrtc_client import WebRtcCaller

SPEECH = np.concatenate([speak("hello is anybody there", rate=8000), silence(16000, 8000)])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("ended-calls"), engine="echo", default_agent="echo",
                        sip_port=free_port(), dev_mode=True, verify_carrier_signatures=False,
                        webrtc_host_addresses=["127.0.0.1"])
    yield live
    live.embedded.stop()


class Call:
    """One call's session and transport, known by their ids (mypyc's compiled classes take no weak references,
    and holding the objects would keep them alive), and its parts by address and type: while the collector
    keeps what it finds, an object it found is alive, so a part found among them is that part."""

    def __init__(self, session: Any, transport_id: Callable[[Any], object] | None = None) -> None:
        self.session_type, self.session_id = type(session), session.id
        self.transport_type = type(session.caller) if transport_id is not None else None
        self.transport_id = transport_id(session.caller) if transport_id is not None else None
        self._transport_id = transport_id
        caller = session.caller
        parts = [session, session.listening, session.latency, session.conversation, session.outbound, caller,
                 caller.playback, *(getattr(caller, name, None) for name in ("rtp", "audio", "output", "playout"))]
        self.parts = {(id(part), type(part)) for part in parts if part is not None}

    def alive(self) -> list[str]:
        found = []
        for o in gc.get_objects():
            if type(o) is self.session_type and o.id == self.session_id:
                found.append("session")
            elif type(o) is self.transport_type and self._transport_id and self._transport_id(o) == self.transport_id:
                found.append("transport")
        return found


async def freed_when_ended(call: Call, end: Callable[[], Awaitable[None]]) -> None:
    """End the call with the collector keeping what it finds, wait for the session and the transport to be
    freed, and fail if a part of the call was found in a cycle meanwhile. (Other gateways of this test
    process may leave garbage of their own meanwhile: only this call's parts count.)"""
    gc.collect()  # what earlier tests and this one's caller left is not this call's
    flags = gc.get_debug()
    gc.set_debug(flags | gc.DEBUG_SAVEALL)
    try:
        await end()
        try:
            await eventually(lambda: not call.alive(), 30, "the ended call freed")
        finally:
            gc.collect()
            cyclic = sorted({type(o).__qualname__ for o in gc.garbage if (id(o), type(o)) in call.parts})
            others = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage
                             if type(o).__module__.startswith("voxgate")})
            assert not cyclic, f"the ended call left {cyclic} in cycles; alive: {call.alive()}; voxgate's " \
                               f"objects among all that was found: {others}"
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()


async def test_an_ended_sip_call_is_freed_without_the_cycle_collector(gateway: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "speech.ulaw").write_bytes(ulaw_file(SPEECH))
    xml = scenario("talk until the gateway hangs up", invite(), answered(), request("ACK", 1),
                   '  <nop><action><exec rtp_stream="speech.ulaw,-1,0"/></action></nop>\n',
                   '  <recv request="BYE"/>\n', reply(200, "OK"))
    before = set(gateway.gateway.sessions)
    sipp: asyncio.Task[SippRun] = asyncio.create_task(
        run_sipp(tmp_path, xml, gateway.gateway.sip.port, service="echo"))  # type: ignore[union-attr]
    await eventually(lambda: set(gateway.gateway.sessions) - before or sipp.done(), 30, "the call up")
    assert not sipp.done(), sipp.result().output[-2000:]
    session_id = next(iter(set(gateway.gateway.sessions) - before))
    await eventually(lambda: gateway.gateway.sessions[session_id].turns >= 1 or sipp.done(), 60, "a turn answered")
    call = Call(gateway.gateway.sessions[session_id], lambda sip: sip.dialog.call_id)

    async def hang_up() -> None:
        session = gateway.gateway.sessions[session_id]
        await asyncio.to_thread(gateway.embedded.run, session.caller.hang_up("test done"))
        del session
        outcome = await sipp
        assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]

    await freed_when_ended(call, hang_up)


async def test_an_ended_twilio_call_is_freed_without_the_cycle_collector(gateway: LiveServer) -> None:
    line = await TwilioLine.call(gateway.base_url, None, agent="echo")
    line.say(SPEECH)

    def session() -> Any:
        return next((s for s in list(gateway.gateway.sessions.values())
                     if getattr(getattr(s.caller, "started", None), "call_id", None) == line.call_sid), None)

    await eventually(lambda: session() is not None and session().turns >= 1, 60, "a turn answered")
    call = Call(session(), lambda carrier: carrier.started.call_id)
    await freed_when_ended(call, line.hang_up)


async def test_an_ended_websocket_session_is_freed_without_the_cycle_collector(gateway: LiveServer) -> None:
    before = set(gateway.gateway.sessions)
    client = AsyncOpenAI(api_key=gateway.api_key, base_url=f"{gateway.base_url}/v1",
                         websocket_base_url=f"{gateway.ws_url}/v1")
    async with client.realtime.connect(model="gpt-realtime") as conn:
        await conn.conversation.item.create(item={"type": "message", "role": "user",
                                                  "content": [{"type": "input_text", "text": "hello"}]})
        await conn.response.create()
        async for event in conn:
            assert event.type != "error", event
            if event.type == "response.done":
                break
        session_id = next(iter(set(gateway.gateway.sessions) - before))
        call = Call(gateway.gateway.sessions[session_id])
        connection = conn

        async def hang_up() -> None:
            await connection.close()

        await freed_when_ended(call, hang_up)


async def test_an_ended_webrtc_call_is_freed_without_the_cycle_collector(gateway: LiveServer) -> None:
    caller = WebRtcCaller()
    caller.mic.say(np.concatenate([silence(300, 48000), speak("hello is anybody there", rate=48000),
                                   silence(900, 48000)]))
    auth = {"Authorization": f"Bearer {gateway.api_key}"}
    try:
        async with httpx.AsyncClient(base_url=gateway.base_url) as http:
            key = (await http.post("/v1/realtime/client_secrets", headers=auth, json={})).json()["value"]
            assert (await caller.connect(http, "/v1/realtime/calls", key)).status_code == 201
            await caller.wait_for("output_audio_buffer.stopped", 30)  # the echo was played to the browser
            session = next(s for s in list(gateway.gateway.sessions.values()) if s.caller.transport == "webrtc")
            call = Call(session, lambda rtc: rtc.id)
            del session

            async def hang_up() -> None:
                assert (await http.post(f"/v1/realtime/calls/{caller.call_id}/hangup", headers=auth)).status_code == 200

            await freed_when_ended(call, hang_up)
    finally:
        await caller.close()


class _Cycle:
    """Garbage in a reference cycle, as a call's leftovers would be."""

    def __init__(self) -> None:
        self.me = self


def test_a_stopped_gateway_hands_what_it_froze_back_to_the_collector(tmp_path: Path) -> None:
    """The beat's collector tenures (freezes) what full collections leave, and a frozen cycle is never
    collected, not even at exit. Once the gateway has stopped, it is again."""
    import weakref

    live = start_server(tmp_path, engine="echo", default_agent="echo")
    try:
        leftover = weakref.ref(_Cycle())
        gc.freeze()  # as the beat's collector tenures what a full collection leaves
        gc.collect()
        assert leftover() is not None  # frozen: out of the collector's reach
    finally:
        live.embedded.stop()
    gc.collect()
    assert leftover() is None
