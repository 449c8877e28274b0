"""Agent audio towards a carrier: 20 ms frames on the pacing clock, marks, clear; the call's codecs; TwiML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from voxgate.audio import g711
from voxgate.audio.resample import StreamResampler
from voxgate.transports import twiml
from voxgate.transports.carrier_audio import CarrierAudio
from voxgate.transports.carrier_playout import CarrierPlayout


def playout(**kwargs: int) -> CarrierPlayout:
    return CarrierPlayout(frame_bytes=160, silence=b"\xff", **kwargs)  # type: ignore[arg-type]


def test_frames_leave_in_real_time_with_a_small_lead() -> None:
    p = playout(lead_frames=2, mark_every_frames=5)
    p.enqueue("item_a", bytes(range(160)) * 10)  # 200 ms
    first = p.due(100.0)
    assert len(first) == 3  # the frame due now and the two of lead
    assert p.due(100.005) == []
    second = p.due(100.020)
    assert len(second) == 1
    third = p.due(100.065)
    assert len(third) == 2  # a late wake-up sends what it owes, on the same grid
    rest = p.due(101.0)  # a long stall: no burst, one frame and a fresh grid
    assert len(rest) == 1 and p.clock.reanchors == 1
    assert [f.mark for f in first + second + third + rest] == [None] * 4 + ["item_a:100"] + [None] * 2


def test_marks_tell_what_was_heard_and_drain_at_the_end() -> None:
    p = playout(lead_frames=0, mark_every_frames=5)
    p.enqueue("a", b"\x01" * 1600)
    p.enqueue("a", b"\x02" * 50)  # a partial frame waits for the rest of the item
    p.end_item("a")  # ... then is padded with silence
    frames = [f for k in range(20) for f in p.due(k * 0.02)]
    assert len(frames) == 11
    assert frames[-1].payload == b"\x02" * 50 + b"\xff" * 110
    marks = [f.mark for f in frames if f.mark]
    assert marks == ["a:100", "a:200", "a:220"]
    assert not p.drained and p.all_sent
    assert p.mark_echoed("a:100") == ("a", 100.0)
    assert p.mark_echoed("a:200") == ("a", 200.0)
    assert p.mark_echoed("nonsense") is None and p.unknown_marks == 1
    assert p.mark_echoed("a:220") == ("a", 220.0)
    assert p.drained


def test_clear_drops_queued_audio_refuses_late_audio_and_ignores_discarded_marks() -> None:
    p = playout(lead_frames=2, mark_every_frames=1)
    p.enqueue("a", b"\x01" * 1600)
    sent = p.due(0.0)
    assert [f.mark for f in sent] == ["a:20", "a:40", "a:60"]
    assert p.mark_echoed("a:20") == ("a", 20.0)
    assert p.clear() == 7
    assert p.idle and p.due(0.1) == []
    assert p.mark_echoed("a:40") is None and p.mark_echoed("a:60") is None  # echoed by the clear: not heard
    assert p.unknown_marks == 0
    p.enqueue("a", b"\x01" * 320)  # the interrupted item's audio still in flight
    assert p.idle
    p.enqueue("b", b"\x03" * 320)  # the next reply plays
    assert [f.payload[0] for f in p.due(1.0)] == [3, 3]
    assert p.drained is False


def test_a_full_queue_drops_and_counts() -> None:
    p = playout(max_frames=3)
    assert p.enqueue("a", b"\x00" * 800) == 2
    assert p.frames_dropped == 2 and p.queued_ms == 60


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 700)), max_size=20),
       st.integers(0, 3), st.integers(1, 6))
def test_every_byte_goes_out_once_in_order(chunks: list[tuple[str, int]], lead: int, every: int) -> None:
    p = playout(lead_frames=lead, mark_every_frames=every)
    expected = bytearray()
    current = None
    counter = 0
    for item, size in chunks:
        if current is not None and item != current and len(expected) % 160:
            expected += b"\xff" * (160 - len(expected) % 160)  # the previous item's tail, padded
        current = item
        data = bytes((counter + i) % 251 for i in range(size))
        counter += size
        p.enqueue(item, data)
        expected += data
    if current is not None:
        p.end_item(current)
        if len(expected) % 160:
            expected += b"\xff" * (160 - len(expected) % 160)
    out = bytearray()
    now = 0.0
    last_ms: dict[str, float] = {}
    while not p.idle:
        for frame in p.due(now):
            assert len(frame.payload) == 160
            out += frame.payload
            if frame.mark:
                item, ms = frame.mark.rsplit(":", 1)
                assert float(ms) > last_ms.get(item, 0.0)
                last_ms[item] = float(ms)
                assert p.mark_echoed(frame.mark) == (item, float(ms))
        now += 0.02
    assert bytes(out) == bytes(expected)
    assert p.drained


def test_g711_passes_through_in_is_encoded_from_pcm_out_and_l16_is_resampled_big_endian() -> None:
    mulaw = CarrierAudio("pcmu", 8000, "pcmu", 8000)
    assert mulaw.to_session(b"\x01\x02") == b"\x01\x02"
    speech = (8000 * np.sin(np.arange(160) / 5)).astype(np.int16)
    assert mulaw.from_session(speech, 8000) == g711.ulaw_encode(speech)  # one table pass, no resampling
    alaw = CarrierAudio("pcma", 8000, "pcma", 8000)
    assert alaw.from_session(speech, 8000) == g711.alaw_encode(speech)
    wide = (8000 * np.sin(np.arange(4800) / 15)).astype(np.int16)  # a session at 24 kHz: resampled, then coded
    assert mulaw.from_session(wide, 24000) == g711.ulaw_encode(StreamResampler(24000, 8000).process(wide))
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
    down = np.frombuffer(l16.from_session(up, 24000), dtype=">i2")
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


@given(st.floats(0.0, 0.0199), st.floats(0.0, 0.0199), st.lists(st.floats(-0.009, 0.009), min_size=30, max_size=30))
@example(arrival=0.01, phase=1.9465661073005266e-15, noise=[0.0] * 30)  # a deadline a rounding error after now
def test_on_a_shared_beat_every_tick_sends_one_frame_despite_wakeup_noise(
        arrival: float, phase: float, noise: list[float]) -> None:
    """Deadlines sit half a frame before the beats, so a tick up to 9 ms early or late never sends 0 or 2."""
    p = playout(lead_frames=2)
    p.enqueue("a", b"\x01" * 160 * 40)
    beats = [phase + 0.02 * k for k in range(40)]  # the writer's next tick is always within a frame
    first_beat = next(b for b in beats if b > arrival)
    assert len(p.due(arrival, first_beat)) == 3  # the lead goes at once
    counts = [len(p.due(beat + jitter)) for beat, jitter in zip([b for b in beats if b >= first_beat], noise,
                                                                  strict=False)]
    # The first beat may come too soon after the lead (its frame goes on the next one); then one per beat.
    assert counts[0] in (0, 1) and counts[1:] == [1] * (len(counts) - 1)
