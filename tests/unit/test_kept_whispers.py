"""Warm-transfer whispers kept for a carrier to fetch (Twilio's TwiML text, Telnyx's WAV file)."""

from __future__ import annotations

import pytest

from voxgate.transports.whisper import KeptWhispers


def test_a_whisper_is_served_its_number_of_times_then_forgotten() -> None:
    once: KeptWhispers[str] = KeptWhispers(limit=10)
    token = once.keep("Incoming call")
    assert once.take(token) == "Incoming call" and once.take(token) is None
    thrice: KeptWhispers[bytes] = KeptWhispers(limit=10, fetches=3)
    token = thrice.keep(b"RIFF")
    assert [thrice.take(token) for _ in range(4)] == [b"RIFF", b"RIFF", b"RIFF", None]
    assert thrice.take("a guess") is None


def test_a_whisper_expires_and_the_oldest_go_first_beyond_the_limit() -> None:
    now = [0.0]
    kept: KeptWhispers[str] = KeptWhispers(limit=2, fetches=3, ttl_s=600.0, clock=lambda: now[0])
    first, second = kept.keep("a"), kept.keep("b")
    now[0] = 600.0
    assert kept.take(first) == "a"  # within its time
    now[0] = 600.5
    assert kept.take(second) is None  # expired
    third, fourth = kept.keep("c"), kept.keep("d")
    assert kept.take(first) is None and kept.take(third) == "c" and kept.take(fourth) == "d"  # first pushed out
    with pytest.raises(ValueError):
        KeptWhispers(limit=1, ttl_s=1.0)  # a time to live needs a clock
