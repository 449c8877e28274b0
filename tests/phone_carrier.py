"""Test carriers: a phone line that speaks Twilio's or Telnyx's media-stream protocol as documented, and a
recorder that stands in for their REST APIs.

A call starts as a carrier starts it: with the webhook (`TwilioLine.call` posts the voice webhook and
follows its TwiML, sending the `<Parameter>`s, media token included, back in `start`; Telnyx tests
deliver `call.initiated` and take the stream URL and token from the answer command). `dial` opens a
media socket with whatever the caller of it says: what an attacker can do.

`PhoneLine` behaves like the carrier's side of a call: it streams the caller's audio in real time
(20 ms frames, silence when the caller says nothing, as a real line does), plays the agent's audio on
a real-time clock and echoes each mark when the audio before it has played, empties its buffer on
`clear` (echoing the discarded marks, as both carriers do), and sends key presses and `stop`.
Wire formats: ../shared/reference/telephony-protocols.md §1-2.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree

import httpx
import numpy as np
from websockets.asyncio.client import ClientConnection, connect

from voxgate.audio import g711

FRAME_S = 0.02


async def eventually(check: Callable[[], object], within_s: float, what: str) -> None:
    """Poll `check` until it is true; TimeoutError naming `what` if it never is."""
    deadline = time.monotonic() + within_s
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {within_s} s")
        await asyncio.sleep(0.01)


def twilio_sign(url: str, params: dict[str, str], auth_token: str) -> str:
    """X-Twilio-Signature, written out independently of the gateway's code (reference §1.5)."""
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


TWILIO_ACCOUNT = "AC" + "0" * 32


def twilio_voice_form(call_sid: str, account_sid: str = TWILIO_ACCOUNT, caller: str = "+15557654321",
                      called: str = "+15551234567") -> dict[str, str]:
    """The form Twilio posts to the voice webhook for a ringing inbound call."""
    return {"CallSid": call_sid, "AccountSid": account_sid, "From": caller, "To": called, "CallStatus": "ringing",
            "Direction": "inbound", "ApiVersion": "2010-04-01"}


async def twilio_voice_webhook(base_url: str, auth_token: str | None, form: dict[str, str],
                               agent: str = "acme") -> tuple[str, dict[str, str]]:
    """Post the voice webhook as Twilio does (signed when there is a token); the stream URL and the
    `<Parameter>`s of the `<Connect><Stream>` it answers with."""
    url = f"{base_url}/twilio/voice?agent={agent}"
    headers = {"X-Twilio-Signature": twilio_sign(url, form, auth_token)} if auth_token else {}
    async with httpx.AsyncClient() as http:
        response = await http.post(url, data=form, headers=headers)
    response.raise_for_status()
    stream = ElementTree.fromstring(response.text).find("./Connect/Stream")
    assert stream is not None, response.text
    return str(stream.get("url")), {str(p.get("name")): str(p.get("value")) for p in stream.findall("Parameter")}


@dataclass
class Played:
    at: float  # monotonic time the frame reached the line
    payload: bytes


@dataclass
class PhoneLine:
    """One call's carrier side. Subclasses spell the messages."""

    ws: ClientConnection
    encoding: str = "pcmu"  # what the line sends and expects back: "pcmu" or "pcma"
    frames: list[Played] = field(default_factory=list)
    marks_echoed: list[tuple[float, str]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    other: list[dict[str, Any]] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    _speech: deque[bytes] = field(default_factory=deque)
    _speech_unsent: int = 0  # queued speech frames not yet written to the socket
    _spoke_at: float = 0.0  # when the last speech frame was written
    _pending_marks: deque[tuple[float, str]] = field(default_factory=deque)  # (plays at, name)
    _play_until: float = 0.0
    _sequence: int = 0
    _chunk: int = 0
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reorder: bool = False  # Telnyx does not promise order: swap neighbouring media frames now and then

    # -- to be spelled by a carrier ------------------------------------------------------------

    def connected_message(self) -> dict[str, Any]:
        raise NotImplementedError

    def start_message(self) -> dict[str, Any]:
        raise NotImplementedError

    def media_message(self, payload: bytes) -> dict[str, Any]:
        raise NotImplementedError

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        raise NotImplementedError

    def mark_message(self, name: str) -> dict[str, Any]:
        raise NotImplementedError

    def stop_message(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- the call --------------------------------------------------------------------------------

    def next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def next_chunk(self) -> tuple[str, str]:
        self._chunk += 1
        return str(self._chunk), str(int(self._chunk * FRAME_S * 1000))

    async def begin(self) -> None:
        await self.send(self.connected_message())
        await self.send(self.start_message())
        self._tasks = [asyncio.create_task(self._line()), asyncio.create_task(self._listen()),
                       asyncio.create_task(self._echo_marks())]

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    def say(self, pcm8k: np.ndarray) -> float:
        """Queue caller speech (8 kHz int16); returns how long it takes to say it, in seconds."""
        data = g711.ulaw_encode(pcm8k) if self.encoding == "pcmu" else g711.alaw_encode(pcm8k)
        for start in range(0, len(data) - len(data) % 160, 160):
            self._speech.append(data[start:start + 160])
            self._speech_unsent += 1
        return len(data) / 8000

    async def press(self, digit: str) -> None:
        await self.send(self.dtmf_message(digit))

    async def hang_up(self) -> None:
        with contextlib.suppress(Exception):
            await self.send(self.stop_message())
        await self.close()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ws.close()

    async def _line(self) -> None:
        """The caller's microphone: a frame every 20 ms on an absolute clock, speech when queued."""
        silence = (b"\xff" if self.encoding == "pcmu" else b"\xd5") * 160
        started = time.monotonic()
        sent = 0
        held: tuple[dict[str, Any], bool] | None = None
        while True:
            speech = bool(self._speech)
            message = self.media_message(self._speech.popleft() if speech else silence)
            if self.reorder and held is None and sent % 7 == 3:
                held = (message, speech)  # send the next frame first
            else:
                await self._send_frame(message, speech)
                if held is not None:
                    await self._send_frame(*held)
                    held = None
            sent += 1
            await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.monotonic()))

    async def _send_frame(self, message: dict[str, Any], speech: bool) -> None:
        await self.send(message)
        if speech:
            self._speech_unsent -= 1
            self._spoke_at = time.monotonic()

    async def _listen(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                now = time.monotonic()
                kind = message.get("event")
                if kind == "media":
                    payload = base64.b64decode(message["media"]["payload"])
                    self.frames.append(Played(now, payload))
                    self._play_until = max(self._play_until, now) + len(payload) / 8000
                elif kind == "mark":
                    self._pending_marks.append((max(self._play_until, now), message["mark"]["name"]))
                elif kind == "clear":
                    self.clears.append(now)
                    self._play_until = now
                    pending, self._pending_marks = list(self._pending_marks), deque()
                    for _, name in pending:  # discarded marks come back at once
                        await self._echo(name)
                else:
                    self.other.append(message)
        except Exception:
            pass
        finally:
            self.closed.set()

    async def _echo_marks(self) -> None:
        while True:
            now = time.monotonic()
            while self._pending_marks and self._pending_marks[0][0] <= now:
                _, name = self._pending_marks.popleft()
                await self._echo(name)
            await asyncio.sleep(0.005)

    async def _echo(self, name: str) -> None:
        self.marks_echoed.append((time.monotonic(), name))
        with contextlib.suppress(Exception):
            await self.send(self.mark_message(name))

    # -- what the caller heard -------------------------------------------------------------------

    def audio_since(self, since: float) -> bytes:
        return b"".join(f.payload for f in self.frames if f.at >= since)

    def pcm_since(self, since: float) -> np.ndarray:
        data = self.audio_since(since)
        return g711.ulaw_decode(data) if self.encoding == "pcmu" else g711.alaw_decode(data)

    async def wait_audio(self, after: float, min_s: float, within_s: float) -> float:
        """Wait until at least `min_s` of agent audio has arrived after `after`; returns its first frame time."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            got = [f for f in self.frames if f.at >= after]
            if sum(len(f.payload) for f in got) >= min_s * 8000:
                return got[0].at
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {min_s} s of agent audio within {within_s} s")

    async def done_speaking(self, within_s: float = 60.0) -> float:
        """Wait until every queued speech frame has been written; returns when the last one was.

        Under load this line's 20 ms clock falls behind and catches up in bursts, so the end of what was
        said is when it was sent, not when `say` was called plus its length.
        """
        await eventually(lambda: self._speech_unsent <= 0, within_s, "the caller finishing speaking")
        return self._spoke_at

    async def wait_played(self, session: Any, within_s: float) -> None:
        """Wait until the agent has nothing left to say on this call and the line has played all of it.

        Decided by the gateway's state, not by a quiet spell on the line: under load, frames can arrive in
        bursts with gaps that look like the end of a reply. The carrier playout marks the end of every item
        and this line echoes marks only after the frames before them, so "every mark echoed" means every
        frame arrived.
        """
        call = session.caller
        await eventually(lambda: session.response is None and len(session.outbound) == 0
                         and call.playout.all_sent and call.playout.drained, within_s, "the reply played in full")



@dataclass
class TwilioLine(PhoneLine):
    stream_sid: str = field(default_factory=lambda: "MZ" + uuid.uuid4().hex)
    call_sid: str = field(default_factory=lambda: "CA" + uuid.uuid4().hex)
    account_sid: str = TWILIO_ACCOUNT
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def call(cls, base_url: str, auth_token: str | None, *, agent: str = "acme",
                   caller: str = "+15557654321", account_sid: str = TWILIO_ACCOUNT,
                   stream_account_sid: str | None = None, **kwargs: Any) -> TwilioLine:
        """Place a call as Twilio does: the voice webhook, then the media socket its TwiML names, with the
        TwiML's `<Parameter>`s (the media token among them) sent back in `start`. `stream_account_sid`:
        what `start` claims instead of the webhook's account (a forger's edit). `kwargs` go to `dial`."""
        call_sid = kwargs.pop("call_sid", None) or "CA" + uuid.uuid4().hex
        ws_url, parameters = await twilio_voice_webhook(
            base_url, auth_token, twilio_voice_form(call_sid, account_sid, caller), agent)
        return await cls.dial(ws_url, auth_token, parameters, call_sid=call_sid,
                              account_sid=stream_account_sid or account_sid, **kwargs)

    @classmethod
    async def dial(cls, ws_url: str, auth_token: str | None, parameters: dict[str, str], *,
                   sock: socket.socket | None = None, **kwargs: Any) -> TwilioLine:
        """Open the media socket as Twilio does (upgrade signed over the ws URL) and send connected + start
        with these `customParameters`: a real call takes them from the webhook's TwiML (`call`).

        `sock`: an already connected socket to speak over (e.g. one with a tiny receive buffer)."""
        headers = {"X-Twilio-Signature": twilio_sign(ws_url, {}, auth_token)} if auth_token else {}
        ws = await connect(ws_url, additional_headers=headers, compression=None, max_size=None, sock=sock)
        line = cls(ws=ws, parameters=parameters, **kwargs)
        await line.begin()
        return line

    def connected_message(self) -> dict[str, Any]:
        return {"event": "connected", "protocol": "Call", "version": "1.0.0"}

    def start_message(self) -> dict[str, Any]:
        return {"event": "start", "sequenceNumber": self.next_sequence(), "streamSid": self.stream_sid,
                "start": {"accountSid": self.account_sid, "streamSid": self.stream_sid, "callSid": self.call_sid,
                          "tracks": ["inbound"], "customParameters": self.parameters,
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}

    def media_message(self, payload: bytes) -> dict[str, Any]:
        chunk, timestamp = self.next_chunk()
        return {"event": "media", "sequenceNumber": self.next_sequence(), "streamSid": self.stream_sid,
                "media": {"track": "inbound", "chunk": chunk, "timestamp": timestamp,
                          "payload": base64.b64encode(payload).decode()}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "streamSid": self.stream_sid, "sequenceNumber": self.next_sequence(),
                "dtmf": {"track": "inbound_track", "digit": digit}}

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "sequenceNumber": self.next_sequence(), "streamSid": self.stream_sid,
                "mark": {"name": name}}

    def stop_message(self) -> dict[str, Any]:
        return {"event": "stop", "sequenceNumber": self.next_sequence(), "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid}}


@dataclass
class TelnyxLine(PhoneLine):
    stream_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_control_id: str = field(default_factory=lambda: "v3:" + uuid.uuid4().hex)
    parameters: dict[str, str] = field(default_factory=dict)
    auth_token: str | None = None

    @classmethod
    async def dial(cls, ws_url: str, auth_token: str | None, call_control_id: str, parameters: dict[str, str],
                   **kwargs: Any) -> TelnyxLine:
        headers = {"x-telnyx-streaming-auth-token": auth_token} if auth_token else {}
        ws = await connect(ws_url, additional_headers=headers, compression=None, max_size=None)
        line = cls(ws=ws, call_control_id=call_control_id, parameters=parameters, auth_token=auth_token, **kwargs)
        await line.begin()
        return line

    def connected_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
        if self.auth_token:
            message["x-telnyx-streaming-auth-token"] = self.auth_token
        return message

    def start_message(self) -> dict[str, Any]:
        return {"event": "start", "sequence_number": self.next_sequence(), "stream_id": self.stream_id,
                "start": {"user_id": str(uuid.uuid4()), "call_control_id": self.call_control_id,
                          "call_session_id": str(uuid.uuid4()), "client_state": None,
                          "from": "+15557654321", "to": "+15551234567", "custom_parameters": self.parameters,
                          "media_format": {"encoding": self.encoding.upper(), "sample_rate": 8000, "channels": 1}}}

    def media_message(self, payload: bytes) -> dict[str, Any]:
        chunk, timestamp = self.next_chunk()
        return {"event": "media", "sequence_number": self.next_sequence(), "stream_id": self.stream_id,
                "media": {"track": "inbound", "chunk": chunk, "timestamp": timestamp,
                          "payload": base64.b64encode(payload).decode()}}

    def dtmf_message(self, digit: str) -> dict[str, Any]:
        return {"event": "dtmf", "stream_id": self.stream_id, "sequence_number": self.next_sequence(),
                "dtmf": {"digit": digit}}

    def mark_message(self, name: str) -> dict[str, Any]:
        return {"event": "mark", "stream_id": self.stream_id, "mark": {"name": name}}

    def stop_message(self) -> dict[str, Any]:
        return {"event": "stop", "sequence_number": self.next_sequence(), "stream_id": self.stream_id,
                "stop": {"user_id": "", "call_control_id": self.call_control_id}}


# -- the carriers' REST APIs -----------------------------------------------------------------------


@dataclass
class ApiRequest:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode()))

    def json(self) -> Any:
        return json.loads(self.body)


class CarrierApiRecorder:
    """A loopback HTTP server that records every request and answers 200 `{}` (or what `reply` says)."""

    def __init__(self) -> None:
        self.requests: list[ApiRequest] = []
        self.reply: tuple[int, dict[str, Any]] = (200, {})
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                recorder.requests.append(ApiRequest(time.monotonic(), "POST", self.path,
                                                    {k.lower(): v for k, v in self.headers.items()}, body))
                status, payload = recorder.reply
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> CarrierApiRecorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    async def wait_for(self, path_part: str, within_s: float) -> ApiRequest:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for request in self.requests:
                if path_part in request.path:
                    return request
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no request to {path_part!r} within {within_s} s; got {[r.path for r in self.requests]}")
