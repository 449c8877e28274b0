"""PCI (issue 15): a card number a client types into a text item reaches no engine, row or log line.

One typed request per engine path, each over a live gateway: the local brain (the shared demo gateway), the
cascade's LLM (a chat service on loopback that keeps every request body; typed over the WebSocket and over
the WebRTC data channel) and the openai engine's upstream (a second voxgate behind a WebSocket relay that
keeps every frame the front gateway sent it). Each test then reads what that engine was given, every row
the gateway stored of the call, and the gateway's debug log (every logger, as `voxgate serve --log-level
debug` writes it): none holds the card, in any of its forms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.server import ServerConnection

from tests.conftest import LiveServer, finished_call, start_server
from tests.integration.test_cascade_engine import recording_llm
from tests.integration.test_debug_logs import debug_log
from tests.integration.test_input_bounds import connect, item_event, next_of
from tests.integration.test_zero_retention import every_table
from tests.webrtc_client import typed_turn as typed_turn_over_webrtc

CARD_DIGITS = "5555555555554444"  # a Luhn-valid test card
TYPED = "charge my card 5555 5555 5555 4444, or 5555-5555-5555-4444 if that one fails"


def holds_card(text: str) -> bool:
    """Does `text` hold the card: its digits in a row once every other character is dropped (so that any
    grouping, separator or JSON escaping of them still counts), or its first group?"""
    return CARD_DIGITS in re.sub(r"[^0-9]", "", text) or "5555 5555" in text or "5555-5555" in text


async def typed_turn(live: LiveServer, api_key: str | None = None) -> tuple[str, list[str]]:
    """A client types TYPED and asks for a text reply: the session id and every event it read."""
    headers = {"Authorization": f"Bearer {api_key or live.api_key}"}
    seen: list[str] = []
    async with websockets.connect(f"{live.ws_url}/v1/realtime", additional_headers=headers) as ws:
        session_id = (await next_of(ws, "session.created"))["session"]["id"]
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                        "output_modalities": ["text"]}}))
        await ws.send(item_event(TYPED, "evt_card"))
        await ws.send(json.dumps({"type": "response.create"}))
        while True:
            raw = await ws.recv()
            seen.append(str(raw))
            event = json.loads(raw)
            assert event["type"] != "error", event
            if event["type"] == "response.done":
                break
    return session_id, seen


def assert_no_card(**places: Any) -> None:
    holding = [name for name, value in places.items() if holds_card(value if isinstance(value, str) else repr(value))]
    assert not holding, f"the card is in: {holding}"


async def test_the_local_brain_reads_no_typed_card(live_server: LiveServer) -> None:
    brain_read: list[str] = []
    with debug_log() as log:
        async with connect(live_server) as ws:
            session_id = (await next_of(ws, "session.created"))["session"]["id"]
            await ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime",
                                                                            "output_modalities": ["text"]}}))
            await ws.send(item_event(TYPED, "evt_card"))
            added = await next_of(ws, "conversation.item.added")
            session = live_server.gateway.sessions[session_id]
            brain_read = [repr(session.conversation.history())]
            await ws.send(json.dumps({"type": "response.create"}))
            done = await next_of(ws, "response.done")
        call = await finished_call(live_server, session_id)
    assert "**** **** **** 4444" in added["item"]["content"][0]["text"]  # masked, not dropped
    assert_no_card(brain=brain_read, item=added, reply=done, record=call, log=log.getvalue(),
                   rows=every_table(live_server, {session_id}))


async def typed_over_data_channel(live: LiveServer) -> tuple[str, list[str]]:
    """`typed_turn` over WebRTC: the events go on the peer connection's `oai-events` data channel."""
    session_id, caller = await typed_turn_over_webrtc(live.base_url, live.api_key, TYPED)
    assert "error" not in caller.types(), [e for e in caller.events if e["type"] == "error"]
    return session_id, caller.raw_messages


@pytest.mark.parametrize("door", ["websocket", "data_channel"])
async def test_the_cascade_llm_is_sent_no_typed_card(tmp_path: Path, door: str) -> None:
    async with recording_llm() as (llm_url, received):
        live = start_server(tmp_path, engine="cascade", default_agent="acme", cascade_llm_base_url=llm_url,
                            cascade_llm_model="my-model", webrtc_host_addresses=["127.0.0.1"])
        try:
            with debug_log() as log:
                session_id, seen = await (typed_turn(live) if door == "websocket" else typed_over_data_channel(live))
                call = await finished_call(live, session_id)
            rows = every_table(live)
        finally:
            live.embedded.stop()
    assert received and any("**** **** **** 4444" in json.dumps(body) for body in received)  # the turn was sent
    assert_no_card(llm=json.dumps(received), events=seen, record=call, log=log.getvalue(), rows=rows)


class Relay:
    """A WebSocket relay on loopback in front of a Realtime server: it passes each connection through
    (path and Authorization kept) and keeps every frame the client side sent, as sent."""

    def __init__(self, upstream_ws_url: str) -> None:
        self.upstream = upstream_ws_url
        self.sent: list[str] = []
        self.connections = 0

    async def _relay(self, client: ServerConnection) -> None:
        assert client.request is not None
        self.connections += 1
        headers = {"Authorization": client.request.headers["Authorization"]}
        async with websockets.connect(self.upstream + client.request.path, additional_headers=headers,
                                      max_size=None) as upstream:
            async def forward() -> None:
                async for message in client:
                    self.sent.append(str(message))
                    await upstream.send(message)

            async def back() -> None:
                async for message in upstream:
                    await client.send(message)

            tasks = [asyncio.create_task(forward()), asyncio.create_task(back())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        """Serve; yields the relay's base URL for `openai_base_url`."""
        async with websockets.serve(self._relay, "127.0.0.1", 0, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            yield f"http://127.0.0.1:{port}/v1"


async def test_the_openai_upstream_is_sent_no_typed_card(tmp_path: Path) -> None:
    back_key, front_key = "back-key-typed-cards", "front-key-typed-cards"
    back = start_server(tmp_path / "back", engine="echo", api_keys=back_key)  # any Realtime server will do
    relay = Relay(back.ws_url)
    try:
        async with relay.serving() as relay_url:
            front = start_server(tmp_path / "front", engine="openai", api_keys=front_key, openai_api_key=back_key,
                                 openai_base_url=relay_url, openai_response_timeout_s=15.0)
            try:
                with debug_log() as log:
                    session_id, seen = await typed_turn(front, front_key)
                    call = await finished_call(front, session_id)
                rows = every_table(front)
            finally:
                front.embedded.stop()
    finally:
        back.embedded.stop()
    assert relay.connections and any("**** **** **** 4444" in frame for frame in relay.sent)  # the turn went up
    assert_no_card(upstream=relay.sent, events=seen, record=call, log=log.getvalue(), rows=rows)
