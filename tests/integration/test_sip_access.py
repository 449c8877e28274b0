"""Who may call over SIP, against SIPp: a gateway that trusts no loopback source (only 192.0.2.0/24) and
takes digest credentials instead, with room for one call. An INVITE without credentials is challenged
(401), SIPp's answer to the challenge is let in, a wrong password is refused 403, and a call beyond the
limit is answered 503 with Retry-After while the first goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import LiveServer, finished_call, start_server
from tests.phone_carrier import eventually
from tests.sipp_caller import (
    SippRun,
    answered,
    free_port,
    invite,
    reply,
    request,
    run_sipp,
    scenario,
    ulaw_file,
)

TONE = ulaw_file((np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16))  # 1 s, looped
CHALLENGED = '''  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
'''


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = start_server(tmp_path_factory.mktemp("sip-access"), engine="echo", default_agent="echo", max_calls=1,
                        sip_port=free_port(), sip_allowed_sources=["192.0.2.0/24"], sip_digest_user="pbx",
                        sip_digest_password="s3cret", sip_digest_algorithms=["MD5"],  # all SIPp speaks
                        sip_media_timeout_s=2.0)
    yield live
    live.embedded.stop()


def port(live: LiveServer) -> int:
    assert live.gateway.sip is not None
    return int(live.gateway.sip.port)


AUTHENTICATED = invite(cseq=2, in_dialog=False, extra="[authentication]")


def authenticated_call(*, gateway_hangs_up: bool = False, talking: bool = False) -> str:
    """INVITE, 401, ACK, INVITE with SIPp's [authentication], 200, ACK, (a tone streamed for as long as
    the call lasts), then BYE (from SIPp, or the gateway's awaited)."""
    ending = (['  <recv request="BYE"/>\n', reply(200, "OK")] if gateway_hangs_up
              else [request("BYE", 3), '  <recv response="200"/>\n'])
    tone = '  <nop><action><exec rtp_stream="tone.ulaw,-1,0"/></action></nop>\n' if talking else ""
    return scenario("digest", invite(), CHALLENGED, request("ACK", 1, branch="[branch-3]"), AUTHENTICATED,
                    answered(), request("ACK", 2), tone, *ending)


async def run(directory: Path, xml: str, live: LiveServer, password: str = "s3cret") -> SippRun:
    return await run_sipp(directory, xml, port(live), service="echo", extra=("-au", "pbx", "-ap", password))


async def test_digest_credentials_let_a_call_in(gateway: LiveServer, tmp_path: Path) -> None:
    outcome = await run(tmp_path, authenticated_call(), gateway)
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
    assert 'WWW-Authenticate: Digest realm="voxgate"' in outcome.messages
    assert "Authorization: Digest" in outcome.messages


async def test_a_wrong_password_is_refused(gateway: LiveServer, tmp_path: Path) -> None:
    xml = scenario(
        "wrong password", invite(), CHALLENGED, request("ACK", 1, branch="[branch-3]"),
        AUTHENTICATED,
        '  <recv response="100" optional="true"/>\n  <recv response="403"/>\n',
        request("ACK", 2, branch="[branch-2]"))
    outcome = await run(tmp_path, xml, gateway, password="wrong")
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]


async def test_a_call_beyond_the_limit_gets_503_and_the_first_goes_on(gateway: LiveServer, tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    (first_dir / "tone.ulaw").write_bytes(TONE)  # the first call talks: no media timeout may end it
    first = asyncio.create_task(run(first_dir, authenticated_call(gateway_hangs_up=True, talking=True), gateway))
    await eventually(lambda: gateway.gateway.sessions or first.done(), 30, "the first call up")
    assert not first.done(), first.result().output[-2000:]
    busy = scenario(
        "busy", invite(), CHALLENGED, request("ACK", 1, branch="[branch-3]"),
        AUTHENTICATED,
        '  <recv response="100" optional="true"/>\n  <recv response="503">\n    <action><ereg regexp="[0-9]+" '
        'search_in="hdr" header="Retry-After:" check_it="true" assign_to="retry"/></action>\n  </recv>\n',
        request("ACK", 2, branch="[branch-2]"), variables=("retry",))
    outcome = await run(second_dir, busy, gateway)
    assert outcome.returncode == 0, outcome.output[-1500:] + outcome.messages[-3000:]
    assert gateway.gateway.sessions and not first.done()  # the first call never noticed
    session = next(iter(gateway.gateway.sessions.values()))
    await asyncio.to_thread(gateway.embedded.run, session.caller.hang_up("test done"))
    done = await first
    assert done.returncode == 0, done.messages[-3000:]


async def test_a_call_whose_rtp_stops_is_hung_up_and_recorded_as_dropped(gateway: LiveServer, tmp_path: Path) -> None:
    """No RTP at all for sip_media_timeout_s (2 s here): the gateway sends BYE (a lost BYE must not keep a
    call, and its admission ticket, forever)."""
    before = set(gateway.gateway.sessions)
    caller = asyncio.create_task(run(tmp_path, authenticated_call(gateway_hangs_up=True), gateway))
    await eventually(lambda: set(gateway.gateway.sessions) - before or caller.done(), 30, "the call up")
    session_id = next(iter(set(gateway.gateway.sessions) - before))
    outcome = await caller
    assert outcome.returncode == 0, outcome.messages[-3000:]
    record = await finished_call(gateway, session_id)
    assert record["end_reason"] == "media_timeout" and record["status"] == "dropped", record
