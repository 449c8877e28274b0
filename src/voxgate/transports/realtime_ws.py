"""The Realtime WebSocket transport: OpenAI's protocol over `/v1/realtime`, GA or beta.

The client owns playback here (it plays the audio deltas itself), so barge-in is the session's
`speech_started` plus the client's own `conversation.item.truncate`; the server only knows what it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.items import Dialect
from voxgate.protocol.serialiser import encode_event
from voxgate.session.outbound import Outbound
from voxgate.session.playback import PlaybackTracker

if TYPE_CHECKING:
    from voxgate.admission import Refusal
    from voxgate.session.session import Session

log = logging.getLogger("voxgate.ws")


class WebSocketCaller:
    """A Realtime WebSocket client, as the session sees it."""

    transport = "realtime_ws"

    def __init__(self, websocket: WebSocket, now: Callable[[], float] = time.monotonic) -> None:
        self.websocket = websocket
        self.playback = PlaybackTracker(server_side=False)
        self.hangup_requested = asyncio.Event()
        self._now = now
        self.last_heard = now()  # when the client last sent an event (the idle timeout's clock)

    def heard(self) -> None:
        self.last_heard = self._now()

    async def interrupt_playback(self) -> None:
        """Nothing to do server-side: the client stops its player on `speech_started`."""

    async def hold_playback(self) -> None:
        """Nothing to pause server-side: the client plays the audio."""

    async def resume_playback(self) -> None:
        """As `hold_playback`."""

    async def transfer(self, target: str, reason: str) -> None:
        # A WebSocket client is an app, not a phone line: it learns of the transfer from the
        # agent's reply and the call record; there is no carrier to move the call.
        log.info("transfer requested on a WebSocket session (target %s)", target)

    async def hang_up(self, reason: str) -> None:
        self.hangup_requested.set()

    async def send_dtmf(self, digits: str) -> None:
        raise RealtimeError("unsupported", "DTMF cannot be sent on a WebSocket session.")


async def pump_outbound(outbound: Outbound, websocket: WebSocket, dialect: Dialect) -> None:
    """Drain an outbound queue onto the socket (one writer, so one slow peer waits alone)."""
    while True:
        event = await outbound.get()
        if event is None:
            return
        text = encode_event(event, dialect)
        if text is not None:
            await websocket.send_text(text)


async def refuse_call(websocket: WebSocket, refusal: Refusal) -> None:
    """Admission said no: accept only to say why (an `error` event), then close 1013 (try again later)."""
    subprotocols = list(websocket.scope.get("subprotocols") or [])
    error = RealtimeError(refusal.code, refusal.message,
                          type="invalid_request_error" if refusal.reason == "key_limit" else "server_error")
    text = encode_event(error.to_event(), "ga")  # an `error` reads the same in both dialects
    assert text is not None
    with contextlib.suppress(Exception):  # a client already gone needs no answer
        await websocket.accept(subprotocol="realtime" if "realtime" in subprotocols else None)
        await websocket.send_text(text)
        await asyncio.wait_for(websocket.close(1013, f"try again later: {refusal.reason}"), timeout=2.0)


async def run_websocket_session(session: Session, websocket: WebSocket, caller: WebSocketCaller,
                                max_seconds: float, idle_timeout_s: float = 0.0,
                                now: Callable[[], float] = time.monotonic) -> None:
    """Serve one accepted socket until either side goes away, the session's time is up, or the client has
    sent nothing for `idle_timeout_s` (0: no limit); the session is closed on every path."""
    writer = asyncio.create_task(pump_outbound(session.outbound, websocket, session.dialect))
    hangup = asyncio.create_task(caller.hangup_requested.wait())
    reader = asyncio.create_task(read_client_events(session, websocket, caller.heard))
    overflow = asyncio.create_task(session.outbound.overflow.wait())
    close_code, close_reason = 1000, ""
    deadline = now() + max_seconds
    try:
        while True:
            wake_at = min(deadline, caller.last_heard + idle_timeout_s) if idle_timeout_s else deadline
            done, _ = await asyncio.wait({writer, reader, hangup, overflow}, timeout=max(0.0, wake_at - now()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if done:
                break
            if now() >= deadline:
                session.error(RealtimeError("session_expired", "The session reached its maximum duration."))
                close_reason = "session expired"
                break
            if idle_timeout_s and now() - caller.last_heard >= idle_timeout_s:
                session.error(RealtimeError("session_idle_timeout",
                                            f"No client event for {idle_timeout_s:.0f} s; the session is closed."))
                close_reason = "idle timeout"
                break
        if session.outbound.overflowed:
            close_code, close_reason = 1008, "client is not reading"
        elif hangup in done:
            # Let the goodbye play out: wait for the response to finish before closing.
            if session.response is not None and session.response.task is not None:
                await asyncio.wait({session.response.task}, timeout=30)
            if session.draining:
                close_code, close_reason = 1001, "gateway shutting down"
    finally:
        reason = "client_closed" if reader.done() else "server_closed"
        await session.close(reason, status="dropped" if session.outbound.overflowed else "completed")
        reader.cancel()
        hangup.cancel()
        overflow.cancel()
        if session.outbound.overflowed:
            writer.cancel()  # the client is not reading: nothing queued will reach it
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(writer, timeout=2.0)  # flush what is queued (response.done, errors)
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                # A peer that stopped reading may never take the close frame either: bounded wait.
                await asyncio.wait_for(websocket.close(close_code, close_reason), timeout=2.0)


async def read_client_events(session: Session, websocket: WebSocket,
                             heard: Callable[[], None] | None = None) -> None:
    """Hand every client event on the socket to the session until the client goes away; `heard` is
    called on each one."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if heard is not None:
                heard()
            text = message.get("text")
            if text is None:
                data = message.get("bytes") or b""
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    session.error(RealtimeError("invalid_json", "Binary frames must hold UTF-8 JSON."))
                    continue
            await session.handle_message(text)
    except WebSocketDisconnect:
        return
