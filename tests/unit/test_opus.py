"""Opus for SIP calls through PyAV: what one side encodes the other decodes to the same sound, a lost
packet's turn is silence, and garbage is a typed error."""

from __future__ import annotations

import numpy as np
import pytest

from voxgate.audio.opus import FRAME_SAMPLES, SETTLE_FRAMES, OpusCodec, OpusError


def tone(frames: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(frames * FRAME_SAMPLES) / 48000
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


@pytest.mark.parametrize("application", ["voip", "lowdelay"])
def test_a_tone_survives_the_round_trip(application: str) -> None:
    sender, receiver = OpusCodec(application=application), OpusCodec()
    sent = tone(50)
    packets = [sender.encode(sent[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) for i in range(50)]
    assert all(1 <= len(p) <= 1275 for p in packets) and sum(map(len, packets)) < sent.nbytes // 10
    heard = np.concatenate([receiver.decode(p) for p in packets])
    assert heard.size == sent.size
    # The codec delays the signal by a few ms: compare levels and the tone's frequency, past the start.
    settled = heard[4800:].astype(np.float64)
    assert 0.7 < np.sqrt(np.mean(settled ** 2)) / np.sqrt(np.mean(sent[4800:].astype(np.float64) ** 2)) < 1.3
    spectrum = np.abs(np.fft.rfft(settled))
    assert abs(np.argmax(spectrum) * 48000 / settled.size - 440) < 5


def test_silence_and_a_lost_packet_decode_to_silence() -> None:
    codec = OpusCodec()
    quiet = codec.decode(codec.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16)))
    assert quiet.size == FRAME_SAMPLES and np.abs(quiet).max() < 10
    assert np.array_equal(codec.decode(b""), np.zeros(FRAME_SAMPLES, dtype=np.int16))


def test_garbage_is_a_typed_error() -> None:
    with pytest.raises(OpusError):
        OpusCodec().decode(b"\xff" * 3)


def test_silence_is_coded_until_the_encoder_settles_then_sent_again_as_it_is() -> None:
    sender, receiver = OpusCodec(input_rate=24000), OpusCodec()
    assert sender.frame_samples == 480
    t = np.arange(10 * 480) / 24000
    speech = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    packets = [sender.encode(speech[i * 480:(i + 1) * 480]) for i in range(10)]
    quiet = [sender.encode_silence() for _ in range(SETTLE_FRAMES + 20)]
    assert len(set(quiet[SETTLE_FRAMES - 1:])) == 1  # settled: one packet, kept
    assert len(set(quiet[:SETTLE_FRAMES])) > 1  # the tone's tail was coded, not skipped
    heard = [receiver.decode(p) for p in packets + quiet]
    assert all(h.size == FRAME_SAMPLES for h in heard)  # 20 ms at 48 kHz whatever rate went in
    assert np.abs(np.concatenate(heard[:10])[4800:]).max() > 4000
    assert np.abs(np.concatenate(heard[10 + SETTLE_FRAMES:])).max() < 10  # the kept packet is silence
    sender.encode(speech[:480])  # sound again: the silence after it is coded anew (the tone's tail)
    assert sender.encode_silence() != quiet[-1]


def test_opus_takes_only_the_rates_it_codes() -> None:
    with pytest.raises(ValueError, match="44100"):
        OpusCodec(input_rate=44100)
