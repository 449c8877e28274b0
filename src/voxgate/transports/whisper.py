"""The whisper of a warm transfer: what the person taking a phone call hears before the caller is put through.

Rendered in the gateway's own voice (Piper, in its worker pool, off the event loop). On SIP it is sent on the
person's leg as G.711 RTP at real time, one 20 ms packet per tick on an absolute clock (`play_whisper`); the
caller meanwhile hears the agent's handover line and then silence. A carrier that plays a file to the person
before bridging (Telnyx's `audio_url`) gets it as a WAV file (`whisper_wav`). A second or so of silence
after it, so the person can take it in.
"""

from __future__ import annotations

import asyncio
import io
import secrets
import wave
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import numpy as np

from voxgate.audio import g711
from voxgate.audio.resample import StreamResampler
from voxgate.engines.local.tts import PiperSynthesizer
from voxgate.transports.rtp_line import RtpLine

__all__ = ["KeptWhispers", "play_whisper", "whisper_wav"]

RATE = 8000
FRAME_SAMPLES = RATE * 20 // 1000
PAUSE_AFTER_S = 0.6

T = TypeVar("T")


class KeptWhispers(Generic[T]):
    """Whispers a carrier fetches from us (Twilio's TwiML text, Telnyx's WAV file), each under an unguessable
    token: served `fetches` times, within `ttl_s` of being kept (None: until newer ones push it out), the
    oldest forgotten first beyond `limit`."""

    def __init__(self, *, limit: int, fetches: int = 1, ttl_s: float | None = None,
                 clock: Callable[[], float] | None = None) -> None:
        if ttl_s is not None and clock is None:
            raise ValueError("a time to live needs a clock")
        self.limit, self.fetches, self.ttl_s = limit, fetches, ttl_s
        self._clock = clock
        self._kept: OrderedDict[str, tuple[T, float, int]] = OrderedDict()  # token -> (whisper, kept at, served)

    def keep(self, whisper: T) -> str:
        token = secrets.token_urlsafe(24)
        self._kept[token] = (whisper, self._clock() if self._clock is not None else 0.0, 0)
        while len(self._kept) > self.limit:
            self._kept.popitem(last=False)
        return token

    def take(self, token: str) -> T | None:
        """The whisper under `token`, or None (never kept, served its last time, or expired)."""
        kept = self._kept.get(token)
        if kept is None:
            return None
        whisper, at, served = kept
        if self.ttl_s is not None and self._clock is not None and self._clock() - at > self.ttl_s:
            del self._kept[token]
            return None
        if served + 1 >= self.fetches:
            del self._kept[token]
        else:
            self._kept[token] = (whisper, at, served + 1)
        return whisper


async def render(text: str, voice: str, *, deterministic: bool = False) -> np.ndarray:
    """`text` as 8 kHz int16 speech, then the pause (`deterministic`: the same every time, as
    `tts_variation: false` asks)."""
    synthesizer = await asyncio.to_thread(PiperSynthesizer.shared)  # loads the voices once, off the loop
    resampler = StreamResampler(synthesizer.sample_rate, RATE)
    pieces = [resampler.process(chunk)
              async for chunk in synthesizer.synthesize(text, voice, deterministic=deterministic)]
    pieces.append(resampler.flush())
    pieces.append(np.zeros(int(RATE * PAUSE_AFTER_S), dtype=np.int16))  # so the person can take it in
    return np.concatenate(pieces)


async def play_whisper(line: RtpLine, codec: str, text: str, voice: str, *, deterministic: bool = False) -> float:
    """Say `text` on `line` (a PCMU or PCMA leg); returns the seconds it took to play."""
    pcm = await render(text, voice, deterministic=deterministic)
    pcm = pcm[: pcm.size - pcm.size % FRAME_SAMPLES]
    coded = g711.alaw_encode(pcm) if codec == "PCMA" else g711.ulaw_encode(pcm)
    loop = asyncio.get_running_loop()
    started = loop.time()
    line.sender.talkspurt()
    for n, at in enumerate(range(0, len(coded), FRAME_SAMPLES)):
        line.send(line.sender.packet(coded[at:at + FRAME_SAMPLES], FRAME_SAMPLES))
        await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - loop.time()))
    return loop.time() - started


async def whisper_wav(text: str, voice: str, *, deterministic: bool = False) -> bytes:
    """`text` said, then the pause, as an 8 kHz 16-bit mono WAV file (what a carrier plays to the person)."""
    pcm = await render(text, voice, deterministic=deterministic)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(pcm.astype("<i2").tobytes())
    return out.getvalue()
