"""Barge-in as the caller hears it: caller's first voiced frame (sent) -> the agent's audio stopped at the caller.

One gateway in a child process (the echo engine, so no model but the VAD runs: the agent says back the
caller's turn; the agent uses the default turn taking, Silero VAD and the echo gate), and per transport
one caller in this process that, N times: says a prompt (~2.5 s), waits for the agent's reply to reach
its ear, waits a random 300-900 ms into it, and talks over it. The clock runs from the moment the first
voiced 20 ms frame of the interruption is sent (level above -40 dBFS) to the moment the agent's audio
stopped at the caller:

    WebSocket  `input_audio_buffer.speech_started` received (a Realtime client stops its player on it)
    Twilio     `clear` received            Telnyx   `clear` received
    SIP        the last RTP packet of the agent's reply with energy in it (above -40 dBFS)
    WebRTC     the last RTP packet of the reply with energy in it, taken as it lands (a browser's roles on
               voxgate's own DTLS/SCTP, tests/webrtc_wire_caller.py)
    webrtc-aiortc  the last 20 ms aiortc's receiver played with energy in it: what a client behind a jitter
               buffer of four packets hears (a browser's NetEq holds 20-40 ms on a clean line)

The speech is held out from the tests: espeak-ng voices (the tests speak with Piper), levelled to the
agent's: in this call the agent's voice is the caller's own, said back. On the phone and SIP lines the
agent's audio also leaks back into the caller's microphone 20 dB down (line echo), all the time; a barge-in
signalled while the caller was silent is a false interruption, counted per transport. Where the stop is the
end of the audio (SIP, WebRTC), audio half a second on is a miss, unless the agent had stopped and a new
reply began after a pause: the turn ended in a pause of the interruption ("wait, ..."), the agent said its
first words back, and the rest of the interruption cut that reply too (the gateway counted two barge-ins).
Those are stops, counted under "replied". The agent pauses at the caller on the VAD's first trigger over it
and plays on if that was too short to be speech: "paused" counts those pauses that were no barge-in (on
the gateway's counter, so on any call of the run), which a caller hears as a gap of ~60-100 ms.

Each transport runs twice in the same run (`--agents before,shipped`): the turn taking as it was before the
echo gate (200 ms of speech while the agent talks, no gate), and as shipped.

    .venv/bin/python bench/barge_in.py [--barge-ins 20] [--transports ws,twilio,telnyx,sip,webrtc,webrtc-aiortc]
        [--agents before,shipped] [--each] [--realtime]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the test callers live in tests/

from tests.phone_carrier import CarrierApiRecorder, PhoneLine, TelnyxLine, TwilioLine  # noqa: E402
from tests.webrtc_client import SILENCE, WebRtcCaller, coded  # noqa: E402
from tests.webrtc_wire_caller import WireCaller  # noqa: E402

from voxgate.audio import g711  # noqa: E402
from voxgate.audio.resample import StreamResampler  # noqa: E402
from voxgate.loadtest.carrier_webhook import telnyx_call_initiated  # noqa: E402
from voxgate.sip.headers import NameAddress, Via, new_branch, new_tag  # noqa: E402
from voxgate.sip.message import Request, Response, new_request, parse_message  # noqa: E402
from voxgate.sip.rtp import RtpSender, is_rtcp, parse_rtp  # noqa: E402
from voxgate.sip.uri import SipUri  # noqa: E402

KEY = "bench"
FRAME_S = 0.02
VOICED_DBFS = -40.0
ECHO_DB = -20.0
AGENT_PEAK_DBFS = -10.0  # the caller's lines are levelled to this loudest 20 ms (Piper's, the agent's voice)
PROMPT = ("I would like to check on an order I placed last week", "en-us+m3")
INTERRUPTIONS = [("wait, stop please", "en-gb+f2"), ("no no, hold on", "en-us+m5"),
                 ("sorry, one moment", "en-gb-scotland+m2"), ("excuse me", "en-us+f4")]
QUIET_S = 1.2  # agent silence that ends its reply
RESUMED_AFTER_S = 0.3  # agent audio after this much silence following a stop is a new reply, not the old one
RT_PRIORITY = 10
# Two agents, measured in the same run: the turn taking as shipped, and as it was before the echo gate
# (`--agents`): 200 ms of speech before a barge-in counted, every frame the VAD called speech counted.
AGENTS = {
    "shipped": "",
    "before": "turn_taking:\n  barge_in_min_speech_ms: 200\n  barge_in_echo_margin_db: null\n",
}


def level_db(pcm: np.ndarray) -> float:
    return float(10 * np.log10(max(float(np.mean(pcm.astype(np.float64) ** 2)) / 32768.0 ** 2, 1e-12))) \
        if pcm.size else -120.0


def espeak(text: str, voice: str, rate: int) -> np.ndarray:
    """`text` said by espeak-ng's `voice`, trimmed, at `rate`, its loudest 20 ms at AGENT_PEAK_DBFS."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "--stdout", text], check=True,
                         capture_output=True).stdout
    src_rate = int.from_bytes(wav[24:28], "little")
    pcm = np.frombuffer(wav[44:], dtype="<i2").astype(np.int16)
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    pcm = pcm[loud[0]:loud[-1] + 1]
    if src_rate != rate:
        resampler = StreamResampler(src_rate, rate)
        pcm = np.concatenate([resampler.process(pcm), resampler.flush()])
    block = rate // 50
    peak = max(level_db(pcm[i:i + block]) for i in range(0, pcm.size - block, block))
    scaled = pcm.astype(np.float64) * 10 ** ((AGENT_PEAK_DBFS - peak) / 20)
    return np.clip(scaled, -32768, 32767).astype(np.int16)


def first_voiced_s(pcm: np.ndarray, rate: int) -> float:
    """Offset of the first 20 ms frame above VOICED_DBFS."""
    block = rate // 50
    for i in range(0, pcm.size, block):
        if level_db(pcm[i:i + block]) > VOICED_DBFS:
            return i / rate
    return 0.0


# -- the gateway ---------------------------------------------------------------------------------


def serve(data_dir: Path, config: dict[str, Any]) -> None:
    from pydantic import SecretStr

    from voxgate.app import create_app
    from voxgate.config import Settings
    from voxgate.server.listener import Listener, run

    settings = Settings(host="127.0.0.1", port=config["port"], engine="echo", default_agent="shipped",
                        agents_dir=data_dir / "agents", api_keys=SecretStr(KEY), max_calls=100,
                        sip_port=config["sip_port"], webrtc_host_addresses=["127.0.0.1"],
                        telnyx_api_key=SecretStr("KEYbench"), telnyx_api_base=config["api"],
                        database_url=f"sqlite+aiosqlite:///{data_dir}/vg.db")
    raise SystemExit(run(Listener(create_app(settings), settings)))


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the callers: each says a line and tells when the agent talks and when it stopped ---------------


@dataclass
class Ear:
    """What reached the caller: when audio with energy last arrived, and the gateway's stop signals."""

    last_voiced: float = 0.0
    first_voiced_since: Callable[[float], float | None] = field(default=lambda _: None)
    stops: list[float] = field(default_factory=list)  # clear / speech_started, by arrival
    voiced: list[float] = field(default_factory=list)

    def heard(self, now: float, pcm: np.ndarray) -> None:
        if level_db(pcm) > VOICED_DBFS:
            self.last_voiced = now
            self.voiced.append(now)

    def talking_since(self, since: float) -> float | None:
        return next((t for t in self.voiced if t >= since), None)


class Caller:
    transport = ""
    rate = 8000
    ear: Ear
    signals_stop = False  # the stop is a message (clear, speech_started), not the end of the audio

    async def say(self, pcm: np.ndarray) -> float:
        """Queue speech; returns the monotonic time its first voiced frame is sent (waits until it is)."""
        raise NotImplementedError

    async def close(self) -> None: ...


class PhoneCaller(Caller):
    signals_stop = True

    def __init__(self, transport: str, line: PhoneLine) -> None:
        self.transport, self.line, self.ear = transport, line, Ear()
        self._seen = 0

    def poll(self) -> None:
        frames = self.line.frames
        for played in frames[self._seen:]:
            self.ear.heard(played.at, self.line.codec.decode(played.payload))
        self._seen = len(frames)
        self.ear.stops = self.line.clears

    async def say(self, pcm: np.ndarray) -> float:
        skip = int(first_voiced_s(pcm, 8000) / FRAME_S)
        self.line.say(pcm)
        left = len(self.line.codec.frames(pcm[: pcm.size - pcm.size % 160])) - skip - 1
        await until(lambda: self.line._speech_unsent <= left)  # the line's clock sends what is before it first
        return self.line._spoke_at

    async def close(self) -> None:
        await self.line.hang_up()


class SipCaller(Caller, asyncio.DatagramProtocol):
    transport = "sip"

    def __init__(self) -> None:
        self.ear = Ear()
        self.sender = RtpSender(0)
        self.speech: deque[np.ndarray] = deque()
        self.leak: deque[np.ndarray] = deque()
        self.sent_voiced: float | None = None
        self.voiced_index = -1
        self.sent = 0
        self.rtp: asyncio.DatagramTransport | None = None
        self.remote: tuple[str, int] | None = None
        self._ticker: asyncio.Task[None] | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        if is_rtcp(data):
            return
        pcm = g711.ulaw_decode(parse_rtp(data).payload)
        self.ear.heard(time.monotonic(), pcm)
        self.leak.append((pcm * 10 ** (ECHO_DB / 20)).astype(np.int32))

    async def dial(self, sip_port: int, agent: str) -> None:
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Response] = loop.create_future()

        class Signalling(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
                message = parse_message(data)
                if isinstance(message, Response) and message.status >= 200 and not answered.done():
                    answered.set_result(message)

        sip, _ = await loop.create_datagram_endpoint(Signalling, local_addr=("127.0.0.1", 0))
        self.sip = cast(asyncio.DatagramTransport, sip)
        rtp, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        self.rtp = cast(asyncio.DatagramTransport, rtp)
        port = self.rtp.get_extra_info("sockname")[1]
        self.local = self.sip.get_extra_info("sockname")[:2]
        sdp = (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n").encode()
        me = SipUri("sip", self.local[0], "bench", port=self.local[1])
        self.gateway = ("127.0.0.1", sip_port)
        invite = new_request("INVITE", SipUri("sip", "127.0.0.1", agent, port=sip_port),
                             via=Via("UDP", self.local[0], self.local[1], (("branch", new_branch()), ("rport", None))),
                             from_=NameAddress(me).with_tag(new_tag()),
                             to=NameAddress(SipUri("sip", "127.0.0.1", agent)),
                             call_id=secrets.token_hex(8), cseq=1, contact=NameAddress(me), body=sdp,
                             content_type="application/sdp")
        self.sip.sendto(invite.to_bytes(), self.gateway)
        self.ok = await asyncio.wait_for(answered, 30)
        if self.ok.status != 200:
            raise RuntimeError(f"SIP call refused: {self.ok.status} {self.ok.reason}")
        rport = int(next(x for x in self.ok.body.decode().splitlines() if x.startswith("m=audio")).split()[1])
        self.remote = ("127.0.0.1", rport)
        self.sip.sendto(self._in_dialog("ACK", 1).to_bytes(), self.gateway)
        self._ticker = asyncio.ensure_future(self._tick())

    def _in_dialog(self, method: str, cseq: int) -> Request:
        ok = self.ok
        return new_request(method, ok.contacts[0].uri,
                           via=Via("UDP", self.local[0], self.local[1], (("branch", new_branch()),)),
                           from_=ok.from_, to=ok.to, call_id=ok.call_id, cseq=cseq)

    async def _tick(self) -> None:
        start = time.monotonic()
        while True:
            frame = self.speech.popleft() if self.speech else np.zeros(160, np.int32)
            index = self.sent
            if self.leak:
                frame = frame + self.leak.popleft()
            payload = g711.ulaw_encode(np.clip(frame, -32768, 32767).astype(np.int16))
            assert self.rtp is not None and self.remote is not None
            self.rtp.sendto(self.sender.packet(payload, 160).to_bytes(), self.remote)
            if index == self.voiced_index:
                self.sent_voiced = time.monotonic()
            self.sent += 1
            await asyncio.sleep(max(0.0, start + self.sent * FRAME_S - time.monotonic()))

    async def say(self, pcm: np.ndarray) -> float:
        pcm = pcm[: pcm.size - pcm.size % 160].astype(np.int32)
        self.sent_voiced = None
        self.voiced_index = self.sent + len(self.speech) + int(first_voiced_s(pcm, 8000) / FRAME_S)
        self.speech.extend(pcm[i:i + 160] for i in range(0, pcm.size, 160))
        await until(lambda: self.sent_voiced is not None)
        assert self.sent_voiced is not None
        return self.sent_voiced

    async def close(self) -> None:
        if self._ticker:
            self._ticker.cancel()
        self.sip.sendto(self._in_dialog("BYE", 2).to_bytes(), self.gateway)
        await asyncio.sleep(0.2)
        self.sip.close()
        if self.rtp:
            self.rtp.close()


class BrowserCaller(Caller):
    """aiortc as the browser: what a caller behind a jitter buffer of four packets (80 ms) hears."""

    transport = "webrtc-aiortc"
    rate = 48000

    def __init__(self) -> None:
        self.ear = Ear()
        self.client = WebRtcCaller()
        self.client._read = self._read  # type: ignore[method-assign]

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().reshape(-1)[:: len(frame.layout.channels)]
                self.ear.heard(time.monotonic(), pcm)

    async def dial(self, url: str, agent: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            reply = await self.client.connect(http, f"/v1/realtime/calls?agent={agent}", KEY)
            if reply.status_code != 201:
                raise RuntimeError(reply.text)
        await self.client.wait_for("session.created", 20)

    async def say(self, pcm: np.ndarray) -> float:
        mic = self.client.mic
        mic.say(pcm)
        start_frame = mic._offset + int(first_voiced_s(pcm, 48000) / FRAME_S)
        await until(lambda: mic._sent > start_frame)
        return time.monotonic()

    async def close(self) -> None:
        await self.client.close()


class WireBrowserCaller(BrowserCaller):
    """A browser's roles (full ICE agent, DTLS client, opens `oai-events`) hearing each RTP packet as it lands:
    what the gateway sends, without a client's jitter buffer in the figure (tests/webrtc_wire_caller.py)."""

    transport = "webrtc"

    def __init__(self) -> None:
        self.ear = Ear()
        self.client = WireCaller(on_audio=self.ear.heard, silence=SILENCE)  # type: ignore[assignment]

    async def say(self, pcm: np.ndarray) -> float:
        wire = cast(WireCaller, self.client)
        wire.mic.clear()
        wire.mic.extend(coded(pcm))
        start_frame = wire.sent + int(first_voiced_s(pcm, 48000) / FRAME_S)
        await until(lambda: wire.sent > start_frame)
        return time.monotonic()


class SocketCaller(Caller):
    """The Realtime WebSocket: pcm16 at 24 kHz in 20 ms appends, real time."""

    transport = "ws"
    rate = 24000
    signals_stop = True

    def __init__(self) -> None:
        self.ear = Ear()
        self.speech: deque[np.ndarray] = deque()
        self.sent_voiced: float | None = None
        self.voiced_at_frame = -1
        self.sent = 0

    async def dial(self, ws_url: str, agent: str) -> None:
        self.ws = await websockets.connect(f"{ws_url}/v1/realtime?model=gpt-realtime&agent={agent}",
                                           additional_headers={"Authorization": f"Bearer {KEY}"}, max_size=None)
        self._tasks = [asyncio.ensure_future(self._mic()), asyncio.ensure_future(self._listen())]

    async def _mic(self) -> None:
        start = time.monotonic()
        silence = np.zeros(480, np.int16)
        while True:
            frame = self.speech.popleft() if self.speech else silence
            await self.ws.send(json.dumps({"type": "input_audio_buffer.append",
                                           "audio": base64.b64encode(frame.astype("<i2").tobytes()).decode()}))
            if self.sent == self.voiced_at_frame:
                self.sent_voiced = time.monotonic()
            self.sent += 1
            await asyncio.sleep(max(0.0, start + self.sent * FRAME_S - time.monotonic()))

    async def _listen(self) -> None:
        async for raw in self.ws:
            now = time.monotonic()
            event = json.loads(raw)
            if event["type"] == "response.output_audio.delta":
                # a Realtime client plays deltas as they come: count them as heard when they arrive
                self.ear.heard(now, np.frombuffer(base64.b64decode(event["delta"]), "<i2").astype(np.int16))
            elif event["type"] == "input_audio_buffer.speech_started":
                self.ear.stops.append(now)

    async def say(self, pcm: np.ndarray) -> float:
        pcm = pcm[: pcm.size - pcm.size % 480]
        frames = [pcm[i:i + 480] for i in range(0, pcm.size, 480)]
        self.sent_voiced = None
        self.voiced_at_frame = self.sent + len(self.speech) + int(first_voiced_s(pcm, 24000) / FRAME_S)
        self.speech.extend(frames)
        await until(lambda: self.sent_voiced is not None)
        assert self.sent_voiced is not None
        return self.sent_voiced

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.ws.close()


# -- one run per transport -------------------------------------------------------------------------


@dataclass
class Result:
    transport: str
    agent: str
    stop_ms: list[float] = field(default_factory=list)
    missed: int = 0  # the reply had ended before the caller spoke, or the gateway never stopped it
    false: int = 0  # stops signalled while the caller was silent (its echo only)
    misses: list[str] = field(default_factory=list)  # each miss: which attempt, and what the ear heard
    replied: int = 0  # stopped, then a new reply to the interruption's first words after a pause in it
    paused: int = 0  # the agent paused on a VAD trigger that turned out no barge-in, then played on


async def until(check: Callable[[], bool], every_s: float = 0.001) -> None:
    """Poll `check`: the callers' clocks run in their own tasks, and 1 ms is finer than any figure here."""
    while not check():  # noqa: ASYNC110 - a poll of state other tasks and threads change, not an event
        await asyncio.sleep(every_s)


async def quiet(caller: Caller, poll: Callable[[], None], quiet_s: float, within_s: float = 30.0) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        poll()
        if time.monotonic() - caller.ear.last_voiced > quiet_s:
            return
        await asyncio.sleep(0.02)


async def interruptions(url: str) -> float:
    """The gateway's barge-in count (every call's): what a false interruption is counted by."""
    return await counted(url, "voxgate_interruptions_total")


async def played_on(url: str) -> float:
    """How often the agent paused on the VAD's first trigger and then played on: no barge-in after all."""
    return await counted(url, 'voxgate_agent_pauses_total{outcome="played_on"}')


async def counted(url: str, series: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {KEY}"})).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series))


async def measure(caller: Caller, agent: str, n: int, lines: dict[str, np.ndarray], seed: int, url: str) -> Result:
    draw = random.Random(seed)
    poll: Callable[[], None] = caller.poll if isinstance(caller, PhoneCaller) else (lambda: None)
    result = Result(caller.transport, agent)
    await quiet(caller, poll, 1.0)
    paused_before = await played_on(url)
    for attempt in range(n):
        stops_before = len(caller.ear.stops)
        await caller.say(lines["prompt"])
        said = time.monotonic() + len(lines["prompt"]) / caller.rate
        await asyncio.sleep(len(lines["prompt"]) / caller.rate)
        # the reply (the prompt said back) reaches the ear
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until(lambda at=said: poll() or caller.ear.talking_since(at) is not None,
                                         0.005), 15)
        talking = caller.ear.talking_since(said)
        if talking is None:
            result.missed += 1
            result.misses.append(f"#{attempt}: no reply to the prompt within 15 s")
            continue
        # false interruptions: barge-ins while only the agent's echo was on the caller's line
        counted = await interruptions(url)
        await asyncio.sleep(draw.uniform(0.3, 0.9))
        barge_ins_before = await interruptions(url)
        result.false += int(barge_ins_before - counted)
        poll()
        stops_before = len(caller.ear.stops)
        interruption = lines[f"barge{attempt % len(INTERRUPTIONS)}"]
        voiced_at = await caller.say(interruption)
        await asyncio.sleep(1.0)
        poll()
        if caller.signals_stop:
            stop = next((t for t in caller.ear.stops[stops_before:] if t >= voiced_at), None)
        else:
            after = [t for t in caller.ear.voiced if voiced_at <= t <= voiced_at + 1.0]
            stop = after[-1] if after else voiced_at
            if caller.ear.talking_since(voiced_at + 0.5) is not None:
                # Audio half a second later: not stopped, unless it stopped first and a new reply began after a
                # pause (the turn ended in a pause of the interruption, "wait, ..." said back): a stop, counted.
                # The gateway's barge-in count tells them apart: the new reply is interrupted too (the rest of the
                # interruption talks over it), where a stop that never was counts once.
                # The agent may have paused before the caller's first voiced frame (on a quieter onset): the
                # last audio before that frame is where such a gap begins.
                edge = [t for t in caller.ear.voiced if t < voiced_at][-1:] + after
                gaps = [(b, a) for a, b in itertools.pairwise(edge) if b - a >= RESUMED_AFTER_S]
                stop = None
                if gaps and gaps[0][1] - voiced_at <= 0.5 and await interruptions(url) - barge_ins_before >= 2:
                    stop = max(gaps[0][1], voiced_at)
                    result.replied += 1
        if stop is None:
            result.missed += 1
            heard = [round((t - voiced_at) * 1000) for t in caller.ear.voiced if t >= voiced_at - 0.1]
            stops = [round((t - voiced_at) * 1000) for t in caller.ear.stops[stops_before:]]
            result.misses.append(f"#{attempt} ({INTERRUPTIONS[attempt % len(INTERRUPTIONS)][0]!r}): agent audio "
                                 f"at ms {heard[:8]}...{heard[-3:]}, stop signals at ms {stops}")
        else:
            result.stop_ms.append((stop - voiced_at) * 1000)
        await quiet(caller, poll, QUIET_S)  # the interruption said back, then quiet
    result.paused = int(await played_on(url) - paused_before)
    return result


async def run_transport(name: str, agent: str, url: str, ws_url: str, sip_port: int, n: int, seed: int) -> Result:
    rate = {"ws": 24000, "webrtc": 48000, "webrtc-aiortc": 48000}.get(name, 8000)
    lines = {"prompt": espeak(*PROMPT, rate)}
    for i, (text, voice) in enumerate(INTERRUPTIONS):
        lines[f"barge{i}"] = espeak(text, voice, rate)
    caller: Caller
    if name == "twilio":
        caller = PhoneCaller(name, await TwilioLine.call(url, None, agent=agent, echo_db=ECHO_DB))
    elif name == "telnyx":
        call_control_id = "v3:" + uuid.uuid4().hex
        async with httpx.AsyncClient() as http:
            body = telnyx_call_initiated(call_control_id)
            reply = await http.post(f"{url}/telnyx/webhook?agent={agent}", content=body,
                                    headers={"content-type": "application/json"})
            reply.raise_for_status()
        command = await API.wait_for(call_control_id)
        caller = PhoneCaller(name, await TelnyxLine.dial(command["stream_url"], command["stream_auth_token"],
                                                         call_control_id, {"agent": agent}, echo_db=ECHO_DB))
    elif name == "sip":
        sip = SipCaller()
        await sip.dial(sip_port, agent)
        caller = sip
    elif name == "webrtc":
        wire = WireBrowserCaller()
        await wire.dial(url, agent)
        caller = wire
    elif name == "webrtc-aiortc":
        browser = BrowserCaller()
        await browser.dial(url, agent)
        caller = browser
    else:
        socket_caller = SocketCaller()
        await socket_caller.dial(ws_url, agent)
        caller = socket_caller
    try:
        return await measure(caller, agent, n, lines, seed, url)
    finally:
        await caller.close()


class Answers:
    """The Telnyx REST API on loopback: the answer command per call."""

    def __init__(self) -> None:
        self.recorder = CarrierApiRecorder()

    async def wait_for(self, call_control_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        request = await self.recorder.wait_for(f"/v2/calls/{quote(call_control_id, safe='')}/actions/answer",
                                               within_s=10)
        return cast(dict[str, Any], request.json())


API: Answers


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def start_gateway(data: Path, config: dict[str, Any]) -> subprocess.Popen[bytes]:
    (data / "agents").mkdir()
    for agent, turn_taking in AGENTS.items():
        (data / "agents" / f"{agent}.yaml").write_text(
            f"name: {agent}\ndescription: Barge-in benchmark - says the caller's turn back.\nengine: echo\n"
            + turn_taking)
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(data), json.dumps(config)],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


async def main(args: argparse.Namespace) -> None:
    global API
    API = Answers()
    API.recorder.start()
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        config = {"port": free_port(socket.SOCK_STREAM), "sip_port": free_port(socket.SOCK_DGRAM),
                  "api": API.recorder.url}
        child = start_gateway(data, config)
        url, ws_url = f"http://127.0.0.1:{config['port']}", f"ws://127.0.0.1:{config['port']}"
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(600):
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{url}/healthz")).status_code < 500:
                            break
                    await asyncio.sleep(0.1)
            results = []
            for name in args.transports.split(","):
                for agent in args.agents.split(","):
                    results.append(await run_transport(name, agent, url, ws_url, config["sip_port"], args.barge_ins,
                                                       args.seed))
                    r = results[-1]
                    print(f"  {name} ({agent}): {len(r.stop_ms)} barge-ins measured", flush=True)
        finally:
            child.terminate()
            child.wait(30)
            API.recorder.stop()
    print(f"voxgate barge-in, caller's first voiced frame (sent) -> agent audio stopped at the caller; "
          f"{args.barge_ins} barge-ins per transport, held-out espeak-ng voices, line echo {ECHO_DB:.0f} dB on "
          f"phone and SIP lines; {os.cpu_count()} CPUs{', SCHED_FIFO' if args.realtime else ''}")
    print(f"{'transport':<14} {'agent':<8} {'stopped at':<26} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'missed':>7} "
          f"{'false':>6} {'replied':>8} {'paused':>7}")
    what = {"ws": "speech_started received", "twilio": "clear received", "telnyx": "clear received",
            "sip": "last voiced RTP packet", "webrtc": "last voiced RTP packet",
            "webrtc-aiortc": "last voiced frame played"}
    for r in results:
        print(f"{r.transport:<14} {r.agent:<8} {what[r.transport]:<26} {pct(r.stop_ms, 50):>7.0f} "
              f"{pct(r.stop_ms, 95):>7.0f} {max(r.stop_ms, default=float('nan')):>7.0f} {r.missed:>7} {r.false:>6} "
              f"{r.replied:>8} {r.paused:>7}")
    if args.each:
        for r in results:
            print(f"{r.transport} {r.agent}: {' '.join(f'{v:.0f}' for v in r.stop_ms)}")
            for miss in r.misses:
                print(f"  missed {miss}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), json.loads(sys.argv[3]))
    else:
        if shutil.which("espeak-ng") is None:  # the callers' voices; Piper's own espeak-ng is a library, not this
            raise SystemExit("bench/barge_in.py speaks its callers with the espeak-ng program: "
                             "apt-get install espeak-ng (Debian)")
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--barge-ins", type=int, default=20)
        parser.add_argument("--transports", default="ws,twilio,telnyx,sip,webrtc")
        parser.add_argument("--seed", type=int, default=17)
        parser.add_argument("--agents", default="before,shipped", help="turn taking before the echo gate, as shipped")
        parser.add_argument("--each", action="store_true", help="print every barge-in's time")
        parser.add_argument("--realtime", action="store_true", help="callers (and the gateway) under SCHED_FIFO")
        asyncio.run(main(parser.parse_args()))
