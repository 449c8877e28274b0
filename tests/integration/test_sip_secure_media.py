"""SRTP, RTCP, the RTP port range and Opus on real SIP calls over loopback.

baresip (the C libre stack, Debian's build with its `srtp` module) calls with `mediaenc=srtp-mand`
(RTP/SAVP with SDES keys): its audio reaches the echo agent through SRTP, and its RTCP receiver
reports, sent over SRTCP, show that it decrypted ours (a report block on our stream) and that it read
our sender reports (the LSR it echoes gives the round trip); all of it lands in the call record, and no
key in a log line or in the record. SIPp checks the policy (`sip_srtp: required`: a plain RTP offer gets
488, an SDES offer is answered with our key) and the port range (one pair: a second call gets 503).
baresip offering only Opus gets Opus: its words, decoded, reach the echo agent, and what comes back
(captured off loopback) is Opus we encoded, on the 48 kHz RTP clock, carrying the words again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import LiveServer, finished_call, start_server
from tests.integration.test_twilio import metric
from tests.phone_carrier import eventually
from tests.sipp_caller import (
    BARESIP,
    OFFER,
    RtpCapture,
    SippRun,
    answered,
    free_port,
    free_port_pair,
    invite,
    reply,
    request,
    run_sipp,
    scenario,
)
from tests.speech import silence, speak
from voxgate.audio.opus import OpusCodec

SUITE = "AES_CM_128_HMAC_SHA1_80"


@pytest.fixture(scope="module")
def media_ports() -> int:
    return free_port_pair()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, media_ports: int) -> Iterator[LiveServer]:
    """SRTP when offered (the default), Opus when offered, and one RTP/RTCP port pair for all its calls."""
    live = start_server(tmp_path_factory.mktemp("sip-media"), engine="echo", default_agent="echo",
                        sip_port=free_port(), sip_rtp_port_min=media_ports, sip_rtp_port_max=media_ports + 1,
                        sip_codecs=["opus", "PCMU", "PCMA"])
    yield live
    live.embedded.stop()


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("sip-srtp-required"), engine="echo", default_agent="echo",
                        sip_port=free_port(), sip_srtp="required")
    yield live
    live.embedded.stop()


def sip_port(live: LiveServer) -> int:
    assert live.gateway.sip is not None
    return int(live.gateway.sip.port)


def sip_sessions(live: LiveServer) -> list[Any]:
    return [s for s in list(live.gateway.sessions.values()) if s.caller.transport == "sip"]


async def new_session(live: LiveServer, before: list[Any]) -> Any:
    await eventually(lambda: any(s not in before for s in sip_sessions(live)), 30, "a SIP call's session")
    return next(s for s in sip_sessions(live) if s not in before)


class AllLogs(logging.Handler):
    """Every record voxgate logs, DEBUG included, from any thread (the gateway serves from its own)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[AllLogs]:
    handler = AllLogs()
    logger = logging.getLogger("voxgate")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)
    logger.setLevel(level)


def baresip_config(directory: Path, *, seconds: float, codec: str = "PCMU", srtp: bool = True) -> Path:
    """A baresip home on loopback that offers `codec` alone (PCMU, or opus) and plays speech then silence
    for `seconds` (then hangs up), over SDES-SRTP (`mediaenc=srtp-mand`: RTP/SAVP) unless told otherwise.
    Its aufile source takes the codec's own rate and channels (no resampling in baresip 1.0)."""
    rate, channels, name = (48000, 2, "opus/48000/2") if codec == "opus" else (8000, 1, "PCMU/8000/1")
    config = directory / "baresip"
    config.mkdir()
    speech = directory / "caller.wav"
    words = speak("one two three", rate=rate)
    pcm = np.concatenate([words, silence(seconds * 1000 - len(words) * 1000 // rate, rate)])
    with wave.open(str(speech), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(pcm, channels).tobytes())
    (config / "config").write_text(
        f"sip_listen 127.0.0.1:0\nnet_interface 127.0.0.1\naudio_source aufile,{speech}\n"
        "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule opus.so\nmodule aufile.so\n"
        "module srtp.so\nmodule account.so\nmodule_app menu.so\n")
    mediaenc = ";mediaenc=srtp-mand" if srtp else ""
    (config / "accounts").write_text(f"<sip:caller@127.0.0.1>;regint=0;audio_codecs={name}{mediaenc}\n")
    (config / "contacts").write_text("")
    return config


@contextlib.asynccontextmanager
async def baresip_call(config: Path, live: LiveServer) -> AsyncIterator[Any]:
    """baresip (home `config`) dials the gateway: the call's session while it lasts; baresip stopped after."""
    before = sip_sessions(live)
    process = await asyncio.create_subprocess_exec(
        BARESIP, "-f", str(config), "-e", f"/dial sip:echo@127.0.0.1:{sip_port(live)}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL)
    try:
        yield await new_session(live, before)
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def test_baresip_calls_over_srtp_and_its_rtcp_reports_reach_the_record(
        gateway: LiveServer, media_ports: int, tmp_path: Path, all_logs: AllLogs) -> None:
    async with baresip_call(baresip_config(tmp_path, seconds=30), gateway) as session:
        call = session.caller
        await eventually(lambda: call.rtp is not None and call.rtp.counters["received"] > 50, 20,
                         "a second of baresip's audio, decrypted")
        assert call.media.srtp is not None and call.media.srtp.suite in (SUITE, "AES_CM_128_HMAC_SHA1_32")
        assert call.rtp.local[1] == media_ports  # from the configured range, RTCP on the port above
        # baresip's SRTCP receiver reports: a block on our stream (it decrypted our SRTP) that echoes one
        # of our sender reports (it decrypted our SRTCP), so the round trip is known.
        await eventually(lambda: call.rtp.rtcp.round_trip_ms is not None, 30, "baresip's report on our SR")
        await asyncio.to_thread(gateway.embedded.run, call.hang_up("test done"))
        record = await finished_call(gateway, session.id)
    media = record["metadata"]["media"]
    assert media["srtp"] == call.media.srtp.suite and media["codec"] == "PCMU", media
    assert media["peer_report"] is not None and media["peer_report"]["highest_sequence"] > 0, media
    assert media["round_trip_ms"] is not None and media["rtcp"]["received"] >= 1 and media["rtcp"]["sent"] >= 1
    assert media["received"]["packets"] > 50 and media["sent"]["packets"] > 50
    assert not [reason for reason in media["dropped"] if reason.startswith("srtp_")], media  # every RTP packet
    # (libre sends an RTCP APP "PINGPONG" in clear as the call starts: refused and counted as srtcp_*)
    # The keys are in the SDP on the wire and nowhere else.
    assert any("answered for agent" in line for line in all_logs.lines)  # the handler did see the call
    shown = json.dumps(record) + "\n".join(all_logs.lines)
    for key in (call.media.srtp.local_key, call.media.srtp.remote_key):
        assert base64.b64encode(key).decode() not in shown
        assert base64.b64encode(key).decode().rstrip("=")[:20] not in shown


async def test_baresip_offering_opus_talks_opus(gateway: LiveServer, tmp_path: Path) -> None:
    async with baresip_call(baresip_config(tmp_path, seconds=12, codec="opus", srtp=False), gateway) as session:
        call = session.caller
        assert (call.media.codec.name, call.media.codec.clock_rate) == ("OPUS", 48000)
        await eventually(lambda: call.rtp is not None and call.rtp.latched is not None, 10, "baresip's RTP")
        with RtpCapture(call.rtp.latched[1]) as capture:
            # The echo agent answers a turn with what it heard: baresip's words, decoded by us, then
            # encoded again. Wait for the reply to have been played out.
            await eventually(lambda: any(i.role == "assistant" for i in session.conversation.visible())
                             and session.response is None and call.audio.playout.drained, 30, "the echo sent")
            await asyncio.to_thread(gateway.embedded.run, call.hang_up("test done"))
        record = await finished_call(gateway, session.id)
    packets = [c.packet for c in capture.audio(call.media.codec.payload_type)]
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)
             if (b.sequence - a.sequence) & 0xFFFF == 1}
    assert steps == {960}, steps  # 20 ms at 48 kHz
    decoder = OpusCodec()
    loudness = [float(np.sqrt(np.mean(decoder.decode(p.payload).astype(np.float64) ** 2))) for p in packets]
    assert max(loudness) > 300, "no words came back"  # silence decodes to near 0
    assert sum(level < 30 for level in loudness) > 10, "no silence between words"
    media = record["metadata"]["media"]
    assert media["codec"] == "OPUS" and media["srtp"] is None and not media["dropped"], media


SRTP_OFFER = OFFER.replace("RTP/AVP", "RTP/SAVP") + (
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + base64.b64encode(bytes(range(30))).decode() + "\n")


async def test_srtp_required_refuses_plain_rtp_and_answers_sdes(strict_gateway: LiveServer, tmp_path: Path) -> None:
    plain = scenario("plain refused", invite(), '  <recv response="100" optional="true"/>\n  <recv response="488"/>\n',
                     request("ACK", 1, branch="[branch-3]"))
    outcome = await run_sipp(tmp_path, plain, sip_port(strict_gateway))
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
    secure = scenario(
        "sdes answered",
        request("INVITE", 1, in_dialog=False, body=SRTP_OFFER.format(direction="sendrecv", version=1),
                content_type="application/sdp"),
        answered(f"m=audio [0-9]+ RTP/SAVP 0 101.*a=crypto:1 {SUITE} inline:[A-Za-z0-9+/]{{40}}"),
        request("ACK", 1), request("BYE", 2), '  <recv response="200"/>\n', variables=("sdp",))
    outcome = await run_sipp(tmp_path, secure, sip_port(strict_gateway))
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
    assert base64.b64encode(bytes(range(30))).decode() not in outcome.messages.split("SIP/2.0 200 OK", 1)[1]


async def test_a_call_finding_no_free_rtp_port_is_refused_503(gateway: LiveServer, media_ports: int,
                                                              tmp_path: Path) -> None:
    """The gateway has one port pair: the first call holds it, the second is answered 503 Retry-After;
    once the first ends its pair is free again."""
    held = scenario("holds the ports", invite(), answered(), request("ACK", 1), '  <recv request="BYE"/>\n',
                    reply(200, "OK"))
    refused = scenario("refused", invite(), '  <recv response="100" optional="true"/>\n'
                       '  <recv response="503"><action><ereg regexp="Retry-After: [0-9]+" search_in="msg" '
                       'check_it="true" assign_to="retry"/></action></recv>\n',
                       request("ACK", 1, branch="[branch-3]"), variables=("retry",))
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    metrics_url = f"{gateway.base_url}/metrics"
    async with httpx.AsyncClient() as http:
        refusals = metric((await http.get(metrics_url, headers=gateway.auth)).text,
                          "voxgate_sip_invites_total", outcome="no_rtp_port")
        before = sip_sessions(gateway)
        first: asyncio.Task[SippRun] = asyncio.create_task(run_sipp(first_dir, held, sip_port(gateway)))
        session = await new_session(gateway, before)
        assert session.caller.rtp.local[1] == media_ports
        second = await run_sipp(second_dir, refused, sip_port(gateway))
        assert second.returncode == 0, second.output[-1500:] + second.messages[-3000:]
        await asyncio.to_thread(gateway.embedded.run, session.caller.hang_up("test done"))
        outcome = await first
        assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
        assert metric((await http.get(metrics_url, headers=gateway.auth)).text,
                      "voxgate_sip_invites_total", outcome="no_rtp_port") == refusals + 1
    await finished_call(gateway, session.id)
    assert gateway.gateway.sip.rtp_ports.in_use == set()  # the pair went back
