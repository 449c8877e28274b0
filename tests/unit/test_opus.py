"""Opus for SIP and browser calls, through the system's libopus and through PyAV alike: what one side
encodes the other decodes to the same sound (across the two backends too), at the rate asked for, a lost
packet's turn is silence, and garbage is a typed error."""

from __future__ import annotations

import numpy as np
import pytest

from voxgate.audio.opus import FRAME_SAMPLES, SETTLE_FRAMES, Backend, OpusCodec, OpusError

BACKENDS: list[Backend] = ["libopus", "pyav"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param  # type: ignore[no-any-return]


def tone(frames: int, hz: float = 440.0) -> np.ndarray:
    t = np.arange(frames * FRAME_SAMPLES) / 48000
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


@pytest.mark.parametrize("receiving", BACKENDS)
@pytest.mark.parametrize("application", ["voip", "lowdelay"])
def test_a_tone_survives_the_round_trip(application: str, backend: Backend, receiving: Backend) -> None:
    sender, receiver = OpusCodec(application=application, backend=backend), OpusCodec(backend=receiving)
    assert (sender.backend, receiver.backend) == (backend, receiving)
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


@pytest.mark.parametrize("output_rate", [48000, 24000, 16000])
def test_a_packet_decodes_to_the_rate_asked_for(backend: Backend, output_rate: int) -> None:
    sender, receiver = OpusCodec(backend=backend), OpusCodec(output_rate=output_rate, backend=backend)
    sent = tone(50)
    heard = [receiver.decode(sender.encode(sent[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])) for i in range(50)]
    # libopus decodes to the rate itself; PyAV's 48 kHz is resampled, which holds back a millisecond or so
    exact = backend == "libopus" or output_rate == 48000
    slack = 0 if exact else output_rate // 500
    assert all(abs(h.size - output_rate // 50) <= slack for h in heard)
    assert abs(sum(h.size for h in heard) - output_rate) <= slack
    assert receiver.decode(b"").size == output_rate // 50
    settled = np.concatenate(heard)[output_rate // 10:].astype(np.float64)
    assert abs(np.argmax(np.abs(np.fft.rfft(settled))) * output_rate / settled.size - 440) < 5


def test_a_stereo_packet_is_heard_as_one_channel(backend: Backend) -> None:
    """Browsers may send stereo Opus (`stereo=1` in their fmtp); the call hears it downmixed."""
    import av

    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format, encoder.bit_rate = 48000, "stereo", "s16", 64000
    encoder.open()
    left = tone(10)
    frames = [av.AudioFrame.from_ndarray(np.stack([left[i * 960:(i + 1) * 960]] * 2).T.reshape(1, -1).copy(),
                                         format="s16", layout="stereo") for i in range(10)]
    packets: list[bytes] = []
    for pts, frame in enumerate(frames):
        frame.sample_rate, frame.pts = 48000, pts * 960
        packets += [bytes(p) for p in encoder.encode(frame)]
    receiver = OpusCodec(backend=backend)
    heard = [receiver.decode(p) for p in packets]
    assert packets and all(h.size == FRAME_SAMPLES for h in heard)
    settled = np.concatenate(heard)[FRAME_SAMPLES:].astype(np.float64)
    assert np.sqrt(np.mean(settled ** 2)) > 3000  # both channels carried the tone: mono keeps its level


def test_silence_and_a_lost_packet_decode_to_silence(backend: Backend) -> None:
    codec = OpusCodec(backend=backend)
    quiet = codec.decode(codec.encode(np.zeros(FRAME_SAMPLES, dtype=np.int16)))
    assert quiet.size == FRAME_SAMPLES and np.abs(quiet).max() < 10
    assert np.array_equal(codec.decode(b""), np.zeros(FRAME_SAMPLES, dtype=np.int16))


def test_garbage_is_a_typed_error(backend: Backend) -> None:
    codec = OpusCodec(backend=backend)
    with pytest.raises(OpusError):
        codec.decode(b"\xff" * 3)
    assert codec.decode(codec.encode(tone(1))).size == FRAME_SAMPLES  # and the decoder carries on


def test_silence_is_coded_until_the_encoder_settles_then_sent_again_as_it_is(backend: Backend) -> None:
    sender, receiver = OpusCodec(input_rate=24000, backend=backend), OpusCodec(backend=backend)
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


def test_opus_takes_only_the_rates_and_applications_it_codes() -> None:
    with pytest.raises(ValueError, match="44100"):
        OpusCodec(input_rate=44100)
    with pytest.raises(ValueError, match="22050"):
        OpusCodec(output_rate=22050)
    with pytest.raises(ValueError, match="music"):
        OpusCodec(application="music")
