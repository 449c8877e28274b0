"""Barge-in on a phone line with echo: the agent's own voice leaking back into the caller's microphone
20 dB down (a handset, a hybrid) must not cut the agent off; the caller talking over it must.

The count of false interruptions is what the test asserts (none), never a time: bench/barge_in.py measures
how soon the agent stops at the caller.
"""

from __future__ import annotations

import time

from tests.conftest import CarrierServer
from tests.integration.test_twilio import wait_session
from tests.phone_carrier import TwilioLine, eventually
from tests.speech import speak

ECHO_DB = -20.0


async def test_the_agents_own_echo_does_not_interrupt_it_and_the_caller_does(carrier_server: CarrierServer) -> None:
    live, token = carrier_server.live, carrier_server.twilio_auth_token
    line = await TwilioLine.call(live.base_url, token, agent="acme", echo_db=ECHO_DB)
    try:
        session = await wait_session(carrier_server, line.call_sid)
        # The disclosure and the greeting (~10 s) play and leak back into the microphone all along.
        dialled = time.monotonic()
        await line.wait_audio(dialled, min_s=6.0, within_s=30)
        echo = line.codec.decode(b"".join(f.payload for f in line.frames))
        assert echo.size and abs(echo.astype(float)).max() > 3000, "the agent spoke out loud (the echo is real)"
        assert line.clears == [] and session.interruptions == 0, "the agent's own echo interrupted it"
        assert session.response is not None or not session.caller.output.playout.drained, "the agent is still talking"

        # The caller talks over it, as loud as the agent (the echo still leaking): that is a barge-in.
        line.say(speak("hold on a second please", rate=8000))
        await eventually(lambda: line.clears, 5, "a clear when the caller talks over the agent")
        # The clear is the pause at the first voiced frame; the barge-in is counted once the onset has
        # lasted `barge_in_min_speech_ms` (64 ms on a phone line), a few frames after the clear.
        await eventually(lambda: session.interruptions, 5, "the barge-in counted")
        assert session.interruptions == 1
    finally:
        await line.close()
