"""A caller made of real SIP software: SIPp scenarios built from parts, run against the gateway on loopback,
with what the gateway sends back over RTP captured off the loopback interface.

SIPp reads an `rtp_stream` file relative to its working directory and cannot take the path from the
command line, so every scenario is written into the run's own directory beside its audio. SIPp cannot
record the RTP it receives, so `RtpCapture` reads the loopback interface with a raw packet socket (what
tcpdump does; it needs root or CAP_NET_RAW, as the reference set-up does) and keeps the datagrams sent to
SIPp's media port.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxgate.audio import g711
from voxgate.sip.message import Request
from voxgate.sip.rtp import RtpError, RtpPacket, parse_rtp

SIPP = "/usr/bin/sipp"  # Debian sip-tester
CAPTURE_BUFFER_BYTES = 32 << 20
SO_RCVBUFFORCE = 33  # Linux's; Python's socket module does not name it
BARESIP = "/usr/bin/baresip"

_HEADERS = """Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>{to_tag}
Call-ID: [call_id]
CSeq: {cseq} {method}
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70"""

OFFER = """v=0
o=caller 53655765 {version} IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a={direction}
"""


def request(method: str, cseq: int, *, in_dialog: bool = True, body: str = "", content_type: str = "",
            extra: str = "", branch: str = "[branch]", target: str = "[service]@[remote_ip]:[remote_port]") -> str:
    """One request the caller sends (`retrans` for UDP); `in_dialog` adds the gateway's To tag."""
    head = _HEADERS.format(to_tag="[peer_tag_param]" if in_dialog else "", cseq=cseq, method=method)
    head = head.replace("branch=[branch]", f"branch={branch}")
    if extra:
        head += "\n" + extra.strip()
    if content_type:
        head += f"\nContent-Type: {content_type}"
    length = "[len]" if body else "0"
    retrans = "" if method == "ACK" else ' retrans="500"'
    return f"""  <send{retrans}><![CDATA[
{method} sip:{target} SIP/2.0
{head}
Content-Length: {length}

{body}]]></send>
"""


def invite(direction: str = "sendrecv", cseq: int = 1, version: int = 1, *, in_dialog: bool | None = None,
           extra: str = "") -> str:
    """An INVITE with a PCMU + telephone-event offer; a re-INVITE (in the dialog) from CSeq 2 on, unless
    `in_dialog` says otherwise (a new INVITE after a challenge, with `extra="[authentication]"`)."""
    return request("INVITE", cseq, in_dialog=cseq > 1 if in_dialog is None else in_dialog, extra=extra,
                   body=OFFER.format(direction=direction, version=version), content_type="application/sdp")


def answered(expect_sdp: str = "") -> str:
    """100 and 180 (optional), then the 200 OK, its SDP checked against `expect_sdp` (a regexp)."""
    check = (f'<action><ereg regexp="{expect_sdp}" search_in="body" check_it="true" assign_to="sdp"/></action>'
             if expect_sdp else "")
    return f"""  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true">{check}</recv>
"""


def reply(status: int, reason: str, *, extra: str = "", body: str = "", content_type: str = "") -> str:
    """Our answer to the request just received (its headers copied, as a UAS does), with `extra` header
    lines and a body if given."""
    head = "".join(f"{line}\n" for line in [*extra.strip().splitlines(),
                                              *([f"Content-Type: {content_type}"] if content_type else [])])
    return f"""  <send><![CDATA[
SIP/2.0 {status} {reason}
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Contact: <sip:caller@[local_ip]:[local_port]>
{head}Content-Length: {"[len]" if body else "0"}

{body}]]></send>
"""


def stream(file: str) -> str:
    return f'  <nop><action><exec rtp_stream="{file},1,0"/></action></nop>\n'


def cue() -> str:
    """The caller waits here until the test cues it (`send_cue`): its next step happens on an event of the
    test's choosing (the agent ready to listen, its answer heard) rather than at a fixed time."""
    return '  <recv request="INFO" timeout="180000"/>\n' + reply(200, "OK")


async def send_cue(invite: Request, cseq: int) -> None:
    """Move the SIPp caller that sent `invite` past its next `cue()`: an INFO in its dialog (SIPp finds the
    call by its Call-ID). SIPp sends its 200 to the gateway, not to us (a UAC talks to its remote end only),
    so the INFO goes three times: SIPp takes the copies as retransmissions, and loopback loses none of
    three unless SIPp's socket is full."""
    caller = invite.via[0]
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        local = transport.get_extra_info("sockname")[1]
        message = (f"INFO sip:caller@{caller.host}:{caller.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKcue{cseq}{local}\r\n"
                   f"From: {invite.headers.get('To')};tag=cue\r\nTo: {invite.headers.get('From')}\r\n"
                   f"Call-ID: {invite.call_id}\r\nCSeq: {cseq} INFO\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n").encode()
        for _ in range(3):
            transport.sendto(message, (caller.host, caller.port or 5060))
            await asyncio.sleep(0.02)
    finally:
        transport.close()


def scenario(name: str, *parts: str, variables: tuple[str, ...] = ()) -> str:
    refs = f'  <Reference variables="{",".join(variables)}"/>\n' if variables else ""
    return (f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
            f'<scenario name="{name}">\n{"".join(parts)}{refs}</scenario>\n')


def ulaw_file(pcm8k: np.ndarray) -> bytes:
    """Headerless µ-law, as `rtp_stream` sends a file byte for byte."""
    return g711.ulaw_encode(pcm8k.astype(np.int16))


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port free for `kind`; a UDP one is also free for TCP, since a SIP door binds both (an
    outgoing TCP connection of another test may hold the same number as its local port)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            if kind != socket.SOCK_DGRAM:
                return port
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as stream:
                try:
                    stream.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AssertionError("no loopback port free for both UDP and TCP")


def free_port_pair(pairs: int = 1) -> int:
    """An even UDP port from which `pairs` RTP/RTCP pairs (2 x `pairs` ports) are free on loopback."""
    for _ in range(200):
        base = free_port()
        if base % 2 or base + 2 * pairs > 65535:
            continue
        probes: list[socket.socket] = []
        try:
            for offset in range(2 * pairs):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(probe)
                probe.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return base
    raise AssertionError("no free run of UDP ports on loopback")


@dataclass
class SippRun:
    returncode: int
    output: str
    messages: str  # SIPp's -trace_msg log: every message it sent and received


async def run_sipp(directory: Path, xml: str, sip_port: int, *, media_port: int | None = None,
                   transport: str = "u1", timeout_s: int = 90, service: str = "acme",
                   extra: tuple[str, ...] = ()) -> SippRun:
    """One SIPp call of the scenario `xml` to the gateway at 127.0.0.1:`sip_port`, run in `directory`."""
    args = [f"127.0.0.1:{sip_port}", "-sf", "scenario.xml", "-s", service, "-i", "127.0.0.1", "-mi", "127.0.0.1",
            "-p", str(free_port(socket.SOCK_STREAM if transport == "t1" else socket.SOCK_DGRAM)),
            "-mp", str(media_port or free_port()), "-t", transport, "-m", "1", "-nostdin",
            "-timeout", f"{timeout_s}s", "-timeout_error", "-trace_msg", "-message_file", "messages.log", *extra]
    return await _sipp(directory, xml, args, timeout_s)


async def _sipp(directory: Path, xml: str, args: list[str], timeout_s: int) -> SippRun:
    """Run SIPp with `args` in `directory`, the scenario `xml` written there as scenario.xml; its
    -message_file is messages.log there."""
    (directory / "scenario.xml").write_text(xml)
    messages = directory / "messages.log"
    with contextlib.suppress(FileNotFoundError):
        messages.unlink()
    process = await asyncio.create_subprocess_exec(SIPP, *args, cwd=directory, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(timeout_s + 15):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    log = messages.read_text(errors="replace") if messages.exists() else ""
    return SippRun(process.returncode or 0, output.decode(errors="replace"), log)


def port_taken(port: int) -> bool:
    """Whether something listens on UDP `port` on loopback (SIPp, once it is up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def far_end_args(sip_port: int, *, media_port: int | None = None, timeout_s: int = 60) -> list[str]:
    """SIPp's arguments as a UAS on 127.0.0.1:`sip_port` for one call of scenario.xml (messages.log beside)."""
    return ["-sf", "scenario.xml", "-i", "127.0.0.1", "-mi", "127.0.0.1", "-p", str(sip_port),
            "-mp", str(media_port or free_port()), "-t", "u1", "-m", "1", "-nostdin", "-timeout", f"{timeout_s}s",
            "-timeout_error", "-trace_msg", "-message_file", "messages.log"]


async def run_far_end(directory: Path, xml: str, sip_port: int, *, media_port: int | None = None,
                      timeout_s: int = 60) -> SippRun:
    """SIPp as the far end of a call the gateway places: the UAS scenario `xml` listening on
    127.0.0.1:`sip_port`, for one call, run in `directory`."""
    return await _sipp(directory, xml, far_end_args(sip_port, media_port=media_port, timeout_s=timeout_s),
                       timeout_s)


@dataclass
class Captured:
    at: float  # time.monotonic() when read
    source_port: int
    packet: RtpPacket


@dataclass
class RtpCapture:
    """Every RTP datagram sent to `port` on loopback while running (a raw packet socket on `lo`)."""

    port: int
    packets: list[Captured] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._socket = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        # Every loopback packet queues here, not only the call's: room for seconds of them, so a reader
        # thread the busy test process starves for a while loses none (root may pass net.core.rmem_max).
        self._socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, CAPTURE_BUFFER_BYTES)
        self._socket.bind(("lo", 0))
        self._socket.settimeout(0.1)
        self._thread = threading.Thread(target=self._read, name="rtp-capture", daemon=True)

    def __enter__(self) -> RtpCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _read(self) -> None:
        while True:
            try:
                frame, address = self._socket.recvfrom(65535)
            except TimeoutError:
                if self._stop.is_set():
                    return  # stopped, and what was queued before the stop has all been read
                continue
            except OSError:
                return
            if address[2] == socket.PACKET_OUTGOING:  # loopback shows each packet twice: keep the arrival
                continue
            self._take(frame)

    def _take(self, frame: bytes) -> None:
        if len(frame) < 14 + 20 + 8 or struct.unpack_from("!H", frame, 12)[0] != 0x0800:
            return  # not IPv4
        ihl = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 17:
            return  # not UDP
        udp = 14 + ihl
        source, destination = struct.unpack_from("!HH", frame, udp)
        if destination != self.port:
            return
        with contextlib.suppress(RtpError):
            self.packets.append(Captured(time.monotonic(), source, parse_rtp(frame[udp + 8:])))

    def audio(self, payload_type: int = 0) -> list[Captured]:
        return [c for c in self.packets if c.packet.payload_type == payload_type]

    def pcm(self, since: float = 0.0) -> np.ndarray:
        """The µ-law audio received since `since`, decoded, in arrival order (loopback does not reorder)."""
        chosen = [c for c in self.audio() if c.at >= since]
        if not chosen:
            return np.zeros(0, dtype=np.int16)
        return g711.ulaw_decode(b"".join(c.packet.payload for c in chosen))
