"""CPU cost of the SIP/RTP cores (src/voxgate/sip/), µs per operation, and what it means per call.

Signalling: parsing and writing a SIPp-style INVITE with its SDP, answering the offer, one UAS transaction
round (INVITE in, 100 out, 200 out). Media: RTP parse and build per 20 ms packet, a jitter-buffer
push+pop, an RFC 4733 packet. Each operation runs a few thousand times, timed one by one (p50/p95/mean);
the last lines turn the media costs into the share of one core a G.711 call spends on RTP headers
(50 packets in and 50 out per second), and the signalling cost into set-ups per second. A last run sends
RTP through real asyncio UDP sockets on loopback and reports CPU per packet, the socket path included. Run:

    .venv/bin/python bench/sip_cost.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable

import numpy as np

from voxgate.sip.dtmf import DtmfReceiver, TelephoneEvent
from voxgate.sip.jitter import JitterBuffer
from voxgate.sip.message import Request, make_response, parse_message
from voxgate.sip.rtp import RtpPacket, RtpSender, parse_rtp
from voxgate.sip.sdp import answer_offer, parse_sdp
from voxgate.sip.transaction import TransactionLayer

SDP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
       b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")


def invite(n: int) -> bytes:
    """What SIPp's uac scenarios send, with a Record-Route a trunk would add."""
    return (f"INVITE sip:bot@127.0.0.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bK-{n}-1-0;rport\r\n"
            f"Record-Route: <sip:sbc.example.com;lr>\r\n"
            f"From: sipp <sip:sipp@127.0.0.1:5062>;tag={n}SIPpTag001\r\n"
            f"To: <sip:bot@127.0.0.1:5060>\r\n"
            f"Call-ID: {n}-1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:sipp@127.0.0.1:5062>\r\nMax-Forwards: 70\r\n"
            f"Subject: Performance Test\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(SDP)}\r\n\r\n").encode() + SDP


WARM_UP = 200


def measure(step: Callable[[int], object], runs: int) -> tuple[float, float, float]:
    """Time `step(i)` for i in 0..runs+WARM_UP, each i once (inputs indexed by i are never reused)."""
    for i in range(WARM_UP):
        step(i)
    costs = np.empty(runs)
    clock = time.perf_counter_ns
    for i in range(runs):
        start = clock()
        step(WARM_UP + i)
        costs[i] = clock() - start
    p50, p95 = np.percentile(costs, [50, 95]) / 1000
    return float(p50), float(p95), float(costs.mean()) / 1000


class _RtpSink(asyncio.DatagramProtocol):
    """The receive path of a call: parse, jitter buffer, and one packet back per packet in (what a G.711
    call sends), through the event loop's real UDP sockets."""

    def __init__(self, expected: int, done: asyncio.Future[None]) -> None:
        self.jitter = JitterBuffer()
        self.sender = RtpSender(payload_type=0)
        self.expected, self.done, self.count = expected, done, 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
        packet = parse_rtp(data)
        now = self.count * 0.02
        self.jitter.push(packet, now)
        self.jitter.pop(now)
        assert self.transport is not None
        self.transport.sendto(self.sender.packet(packet.payload, 160).to_bytes(), addr)
        self.count += 1
        if self.count == self.expected and not self.done.done():
            self.done.set_result(None)


async def _udp_round(packets: list[bytes]) -> float:
    """CPU seconds (this process) per packet for: send one RTP packet, receive it in the sink, which
    answers with one; the answers are read and dropped. Sent in bursts of 50 to keep socket buffers sane."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    sink_transport, _ = await loop.create_datagram_endpoint(lambda: _RtpSink(len(packets), done),
                                                            local_addr=("127.0.0.1", 0))
    sink = sink_transport.get_extra_info("sockname")
    replies = asyncio.Queue[bytes]()

    class Caller(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:  # type: ignore[override]
            replies.put_nowait(data)

    caller, _ = await loop.create_datagram_endpoint(Caller, local_addr=("127.0.0.1", 0))
    start = time.process_time()
    for offset in range(0, len(packets), 50):
        batch = packets[offset : offset + 50]
        for data in batch:
            caller.sendto(data, sink)
        for _ in batch:
            await replies.get()
    await done
    spent = time.process_time() - start
    caller.close()
    sink_transport.close()
    return spent / len(packets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    args = parser.parse_args()
    runs = args.runs
    rows: dict[str, tuple[float, float, float]] = {}

    invites = [invite(n) for n in range(runs + WARM_UP)]
    request = parse_message(invites[0])
    assert isinstance(request, Request)
    offer = parse_sdp(SDP)
    layer = TransactionLayer()

    def transaction_round(i: int) -> None:
        message = parse_message(invites[i])
        assert isinstance(message, Request)
        layer.receive_request(message, ("127.0.0.1", 5062), float(i))
        layer.send_response(make_response(message, 200, to_tag="t", body=SDP), float(i))

    sender = RtpSender(payload_type=0)
    payload = b"\xff" * 160
    packets = [sender.packet(payload, 160).to_bytes() for _ in range(runs + WARM_UP)]
    jitter = JitterBuffer()
    stream = [parse_rtp(data) for data in packets]
    event = RtpPacket(101, 1, 1, 1, TelephoneEvent(5, False, 10, 160).to_bytes())
    receiver = DtmfReceiver()

    def jitter_step(i: int) -> None:
        jitter.push(stream[i], i * 0.02)
        jitter.pop(i * 0.02)

    rows["INVITE parse (1 kB with SDP)"] = measure(lambda i: parse_message(invites[i]), runs)
    rows["INVITE serialise"] = measure(lambda i: request.to_bytes(), runs)
    rows["200 OK build + serialise"] = measure(lambda i: make_response(request, 200, to_tag="t", body=SDP).to_bytes(),
                                               runs)
    rows["SDP parse"] = measure(lambda i: parse_sdp(SDP), runs)
    rows["SDP answer (offer/answer + write)"] = measure(
        lambda i: answer_offer(offer, address="127.0.0.1", port=40000, session_id=i, session_version=1)[0].to_bytes(),
        runs)
    rows["UAS transaction round (parse, 100, 200)"] = measure(transaction_round, runs)
    rows["RTP parse (172 B)"] = measure(lambda i: parse_rtp(packets[i]), runs)
    rows["RTP build (sender.packet + to_bytes)"] = measure(lambda i: sender.packet(payload, 160).to_bytes(), runs)
    rows["jitter buffer push + pop"] = measure(jitter_step, runs)
    rows["RFC 4733 packet receive"] = measure(lambda i: receiver.receive(event), runs)

    udp_packet = asyncio.run(_udp_round(packets[:runs]))
    width = max(len(name) for name in rows)
    print(f"{'operation':<{width}}  {'p50 µs':>8}  {'p95 µs':>8}  {'mean µs':>8}")
    for name, (p50, p95, mean) in rows.items():
        print(f"{name:<{width}}  {p50:8.2f}  {p95:8.2f}  {mean:8.2f}")
    rtp_in = rows["RTP parse (172 B)"][2] + rows["jitter buffer push + pop"][2]
    rtp_out = rows["RTP build (sender.packet + to_bytes)"][2]
    per_call = 50 * (rtp_in + rtp_out) / 1e6  # seconds of CPU per second of call
    setup = rows["UAS transaction round (parse, 100, 200)"][2] + rows["SDP answer (offer/answer + write)"][2]
    print()
    print(f"RTP header work per G.711 call (50 pkt/s each way, in: parse + jitter, out: build): "
          f"{100 * per_call:.3f} % of a core, {1 / per_call:,.0f} calls per core for this part alone")
    print(f"call set-up in the cores (transaction round + SDP answer): {setup:.0f} µs, "
          f"{1e6 / setup:,.0f} set-ups per second per core")
    # both ends of the loopback exchange run in this process, so a packet each way is counted once
    print(f"asyncio UDP, per 20 ms packet received and one sent (parse, jitter, build), both ends of the "
          f"loopback counted: {udp_packet * 1e6:.1f} µs CPU; a G.711 call (50 each way per second) costs at most "
          f"{100 * 50 * udp_packet:.2f} % of a core, at least {1 / (50 * udp_packet):,.0f} calls per core before "
          f"any audio work (decode, resample, VAD) or pacing")


if __name__ == "__main__":
    main()
