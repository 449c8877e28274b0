"""A carrier call's codecs both ways, and TwiML. (Its playout is the paced line's: test_playout.py.)"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from voxgate.audio import g711
from voxgate.audio.resample import StreamResampler
from voxgate.transports import twiml
from voxgate.transports.carrier_audio import CarrierAudio


def test_g711_passes_through_in_is_encoded_from_pcm_out_and_l16_is_resampled_big_endian() -> None:
    mulaw = CarrierAudio("pcmu", 8000, "pcmu", 8000)
    assert mulaw.to_session(b"\x01\x02") == b"\x01\x02"
    speech = (8000 * np.sin(np.arange(160) / 5)).astype(np.int16)
    assert mulaw.encode(speech, 8000) == g711.ulaw_encode(speech)  # one table pass, no resampling
    alaw = CarrierAudio("pcma", 8000, "pcma", 8000)
    assert alaw.encode(speech, 8000) == g711.alaw_encode(speech)
    wide = (8000 * np.sin(np.arange(4800) / 15)).astype(np.int16)  # a session at 24 kHz: resampled, then coded
    assert mulaw.encode(wide, 24000) == g711.ulaw_encode(StreamResampler(24000, 8000).process(wide))
    assert mulaw.session_config()["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert (mulaw.frame_bytes, mulaw.silence) == (160, b"\xff")
    assert CarrierAudio("pcma", 8000, "pcma", 8000).inbound_silence(20) == b"\xd5" * 160

    l16 = CarrierAudio("l16", 16000, "l16", 16000)
    assert l16.session_config()["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert l16.frame_bytes == 640
    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    up = np.frombuffer(l16.to_session(tone.astype(">i2").tobytes()), dtype="<i2")
    assert abs(up.size - 24000) < 50
    assert np.abs(up).max() == pytest.approx(8000, rel=0.05)  # big-endian read right: not byte-swapped noise
    down = np.frombuffer(l16.encode(up, 24000), dtype=">i2")
    assert abs(down.size - 16000) < 50
    assert np.abs(down).max() == pytest.approx(8000, rel=0.05)


def test_twiml_documents() -> None:
    doc = ET.fromstring(twiml.connect_stream("wss://gw.example/twilio/media", {"agent": 'a"&<b', "from": "+1"}))
    stream = doc.find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://gw.example/twilio/media"
    assert [(p.get("name"), p.get("value")) for p in stream] == [("agent", 'a"&<b'), ("from", "+1")]
    assert twiml.dial("+15550100") == "<Response><Dial>+15550100</Dial></Response>"
    assert twiml.dial("sip:desk@pbx.example") == "<Response><Dial><Sip>sip:desk@pbx.example</Sip></Dial></Response>"
    assert ET.fromstring(twiml.dial("<x>&")).find("Dial").text == "<x>&"  # type: ignore[union-attr]
