"""Two mono streams into one stereo recording: the caller left, the agent right, on one time line (sans-IO).

Both sides arrive at real time from the same call but in their own rhythm: the caller's line carries audio
all through the call, the agent's only while it speaks (a carrier sends nothing between replies) or
silence frames (a continuous RTP or WebRTC line). A side that falls more than `max_skew_ms` behind the
other is filled with silence up to that distance, so the agent's reply lands where it was played and a
client that stops sending does not hold the agent's side back. Each side is resampled to `rate` first.

A silenced span (PCI entry, a span marked sensitive) is written as zeros on both sides; `silenced` keeps
where, in seconds from the start, for the record.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxgate.audio.resample import StreamResampler

__all__ = ["RATE", "StereoMix"]

RATE = 16000  # the recording's rate: wideband speech; a phone's 8 kHz fits in it whole


class _Side:
    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.pending = np.zeros(0, dtype=np.int16)
        self._resampler: StreamResampler | None = None
        self._in_rate = rate

    def add(self, pcm: npt.NDArray[np.int16], rate: int) -> None:
        if rate != self.rate:
            if self._resampler is None or self._in_rate != rate:
                self._resampler, self._in_rate = StreamResampler(rate, self.rate), rate
            pcm = self._resampler.process(pcm)
        if pcm.size:
            self.pending = np.concatenate((self.pending, pcm.astype(np.int16, copy=False)))

    def pad_to(self, samples: int) -> None:
        short = samples - self.pending.size
        if short > 0:
            self.pending = np.concatenate((self.pending, np.zeros(short, dtype=np.int16)))

    def take(self, samples: int) -> npt.NDArray[np.int16]:
        out, self.pending = self.pending[:samples], self.pending[samples:]
        return out


class StereoMix:
    def __init__(self, rate: int = RATE, max_skew_ms: float = 120.0) -> None:
        self.rate = rate
        self.max_skew = int(rate * max_skew_ms / 1000)
        self._caller = _Side(rate)
        self._agent = _Side(rate)
        self.written = 0  # stereo samples handed out so far
        self.silenced: list[list[float]] = []  # [start_s, end_s] of each silenced span
        self._silent_since: int | None = None  # where the open silenced span started (samples), if one is

    def caller(self, pcm: npt.NDArray[np.int16], rate: int) -> None:
        self._caller.add(pcm, rate)
        self._keep_up(self._caller, self._agent)

    def agent(self, pcm: npt.NDArray[np.int16], rate: int) -> None:
        self._agent.add(pcm, rate)
        self._keep_up(self._agent, self._caller)

    def _keep_up(self, ahead: _Side, behind: _Side) -> None:
        behind.pad_to(ahead.pending.size - self.max_skew)

    def take(self, silenced: bool = False) -> npt.NDArray[np.int16]:
        """The stereo samples both sides have reached, as (n, 2) int16; zeros when `silenced`."""
        n = min(self._caller.pending.size, self._agent.pending.size)
        return self._frames(n, silenced)

    def flush(self, silenced: bool = False) -> npt.NDArray[np.int16]:
        """Everything left, the shorter side filled with silence (the call ended)."""
        n = max(self._caller.pending.size, self._agent.pending.size)
        self._caller.pad_to(n)
        self._agent.pad_to(n)
        frames = self._frames(n, silenced)
        self._mark(False)
        return frames

    def _frames(self, n: int, silenced: bool) -> npt.NDArray[np.int16]:
        self._mark(silenced)
        left, right = self._caller.take(n), self._agent.take(n)
        self.written += n
        if silenced:
            return np.zeros((n, 2), dtype=np.int16)
        return np.stack((left, right), axis=1)

    def _mark(self, silenced: bool) -> None:
        if silenced and self._silent_since is None:
            self._silent_since = self.written
        elif not silenced and self._silent_since is not None:
            self.silenced.append([round(self._silent_since / self.rate, 3), round(self.written / self.rate, 3)])
            self._silent_since = None
