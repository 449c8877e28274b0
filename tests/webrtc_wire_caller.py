"""A WebRTC caller that hears the agent on the wire: every RTP packet decoded as it arrives, no jitter buffer.

aiortc's receiver (tests/webrtc_client.py) holds four packets (80 ms) before it plays any; a browser's
NetEq holds 20-40 ms on a clean line. To measure what the gateway does, as the SIP rows of the barge-in
bench do (the last voiced RTP packet), this caller takes each packet when it lands. It is a full ICE
agent (aioice, controlling, as a browser is), the DTLS client, and opens `oai-events` itself: the roles
a browser takes, on voxgate's own DTLS and SCTP code in the client's seat. The answer's `a=setup` decides
its DTLS role, as a browser's does (voxgate answers passive; aiortc answers active, and then this caller
is the DTLS server and waits for the peer's SCTP INIT).

    caller = WireCaller(on_audio=lambda at, pcm: ...)       # 48 kHz mono int16 per packet, monotonic time
    caller = WireCaller(on_audio=None)                         # a load generator: packets counted, not decoded
    await caller.connect(http, "/v1/realtime/calls", key)
    caller.mic.append(packets)                                 # Opus packets to send, one per 20 ms
    await caller.wait_for("session.created")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from aioice import Candidate, Connection

from voxgate.audio.opus import OpusCodec
from voxgate.sip.rtp import RtpSender, parse_rtp
from voxgate.sip.srtp import SrtpContext
from voxgate.webrtc.data_channels import Channel, ChannelMessage, ChannelOpened, DataChannels
from voxgate.webrtc.dtls import ApplicationData, Connected, DtlsCertificate, DtlsEndpoint
from voxgate.webrtc.sctp import SctpAssociation

PAYLOAD_TYPE = 111
FRAME_S = 0.02


class WireCaller:
    def __init__(self, on_audio: Callable[[float, np.ndarray], None] | None, silence: bytes) -> None:
        self.on_audio = on_audio
        self.received = 0  # audio packets from the peer
        self.silence = silence  # the Opus packet sent when the mic has nothing to say
        self.mic: deque[bytes] = deque()
        self.sent = 0  # packets sent so far
        self.events: list[dict[str, Any]] = []
        self.location: str | None = None
        self._ice = Connection(ice_controlling=True)
        self._certificate = DtlsCertificate.generate()
        self._dtls: DtlsEndpoint | None = None
        self._srtp: SrtpContext | None = None
        self._sctp = SctpAssociation(mtu=1100)
        self._channels: DataChannels | None = None  # the answer's a=setup says which stream ids are ours
        self._channel: Channel | None = None
        self._opus = OpusCodec()
        self._sender = RtpSender(PAYLOAD_TYPE, 48000)
        self._new_event = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def connect(self, http: httpx.AsyncClient, url: str, key: str) -> httpx.Response:
        await self._ice.gather_candidates()
        fingerprint = " ".join(self._certificate.fingerprints()[0])
        transport = [f"a=ice-ufrag:{self._ice.local_username}", f"a=ice-pwd:{self._ice.local_password}",
                     f"a=fingerprint:{fingerprint}", "a=setup:actpass"]
        candidates = [f"a=candidate:{c.to_sdp()}" for c in self._ice.local_candidates]
        offer = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=group:BUNDLE 0 1",
                 "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", *transport, *candidates, "a=mid:0",
                 "a=sendrecv", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
                 "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", *transport, "a=mid:1",
                 "a=sctp-port:5000", "a=max-message-size:262144"]
        reply = await http.post(url, content="\r\n".join(offer) + "\r\n",
                                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"})
        if reply.status_code != 201:
            return reply
        self.location = reply.headers.get("location")
        lines = reply.text.split("\r\n")
        value = {line[2:].partition(":")[0]: line[2:].partition(":")[2] for line in lines if line.startswith("a=")}
        self._ice.remote_username, self._ice.remote_password = value["ice-ufrag"], value["ice-pwd"]
        for line in lines:
            if line.startswith("a=candidate:"):
                await self._ice.add_remote_candidate(Candidate.from_sdp(line[12:]))
        await self._ice.add_remote_candidate(None)
        algorithm, _, digest = value["fingerprint"].partition(" ")
        server = value.get("setup") == "active"  # the answerer connects: this caller accepts
        self._dtls = DtlsEndpoint(self._certificate, server=server, remote_fingerprints=[(algorithm, digest)])
        self._channels = DataChannels(self._sctp, dtls_client=not server)
        await self._ice.connect()
        self._dtls.start(time.monotonic())
        await self._flush()
        self._tasks = [asyncio.ensure_future(self._receive()), asyncio.ensure_future(self._tick())]
        return reply

    async def _flush(self) -> None:
        assert self._dtls is not None
        if self._dtls.state == "connected":
            for packet in self._sctp.datagrams_to_send(time.monotonic()):
                self._dtls.send(packet)
        for datagram in self._dtls.datagrams_to_send():
            await self._ice.send(datagram)

    async def _receive(self) -> None:
        assert self._dtls is not None
        while True:
            data = await self._ice.recv()
            now = time.monotonic()
            if 20 <= data[0] <= 63:
                self._dtls.receive(data, now)
                while (event := self._dtls.next_event()) is not None:
                    if isinstance(event, Connected):
                        self._srtp = SrtpContext(event.keys)
                        if not self._dtls.server:  # the DTLS client starts the association (RFC 8261)
                            self._sctp.connect(now)
                        self._channel = self.channels.open("oai-events", now)
                    elif isinstance(event, ApplicationData):
                        self.channels.receive(event.data, now)
                self._read_channel()
                await self._flush()
            elif 128 <= data[0] <= 191 and self._srtp is not None and not 192 <= data[1] <= 223:
                packet = parse_rtp(self._srtp.unprotect(data))
                self.received += 1
                if self.on_audio is not None:
                    self.on_audio(now, self._opus.decode(packet.payload))

    @property
    def channels(self) -> DataChannels:
        assert self._channels is not None, "connect() first"
        return self._channels

    def _read_channel(self) -> None:
        while (event := self.channels.next_event()) is not None:
            if isinstance(event, ChannelMessage) and event.channel is self._channel:
                text = event.data if isinstance(event.data, str) else event.data.decode()
                self.events.append(json.loads(text))
                self._new_event.set()
            elif isinstance(event, ChannelOpened):
                self._new_event.set()

    async def _tick(self) -> None:
        """The microphone, one packet every 20 ms on an absolute grid, and the transport's timers."""
        start = time.monotonic()
        while True:
            payload = self.mic.popleft() if self.mic else self.silence
            if self._srtp is not None:
                await self._ice.send(self._srtp.protect(self._sender.datagram(payload, 960)))
            self.sent += 1
            now = time.monotonic()
            due = self._sctp.next_timer()
            if due is not None and due <= now:
                self.channels.handle_timer(now)
                self._read_channel()
                await self._flush()
            await asyncio.sleep(max(0.0, start + self.sent * FRAME_S - time.monotonic()))

    def send(self, event: dict[str, Any]) -> None:
        assert self._channel is not None
        self.channels.send(self._channel, json.dumps(event), time.monotonic())
        self._tasks.append(asyncio.ensure_future(self._flush()))

    async def wait_for(self, kind: str, within: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while True:
            for event in self.events:
                if event.get("type") == kind:
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {kind} within {within} s; saw {[e.get('type') for e in self.events]}")
            self._new_event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_event.wait(), max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._dtls is not None and self._dtls.state == "connected":
            self._dtls.close()
            with contextlib.suppress(Exception):
                await self._flush()
        await self._ice.close()
