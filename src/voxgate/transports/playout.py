"""Agent audio waiting to be played on a server-paced track, and what the caller has heard of it (sans-IO).

When the server owns playback (WebRTC, RTP), audio arrives from the session faster than real time and
leaves one fixed frame per tick of the pacing clock. `Playout` is the queue between the two: it cuts
each item's audio into frames, says for every frame how far into its item the caller will have heard
once it is out (what truncation on barge-in reads), drops everything at once on barge-in, and reports
a response's audio as finished only when its last frame has left (`output_audio_buffer.stopped`).

Bound: at most `max_ms` of audio is queued; audio beyond it is dropped and counted in `dropped_ms`
(and, never having been played, is never counted as heard).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Playout", "PlayoutFrame"]


@dataclass(frozen=True)
class PlayoutFrame:
    pcm: npt.NDArray[np.int16]
    item_id: str
    response_id: str
    heard_ms: float  # how much of the item the caller has heard once this frame is played


class Playout:
    def __init__(self, rate: int, frame_ms: int = 20, max_ms: float = 60_000.0) -> None:
        if rate <= 0 or frame_ms <= 0 or (rate * frame_ms) % 1000:
            raise ValueError(f"a {frame_ms} ms frame at {rate} Hz is not a whole number of samples")
        self.rate = rate
        self.frame_ms = frame_ms
        self.frame_samples = rate * frame_ms // 1000
        self.max_frames = max(1, int(max_ms // frame_ms))
        self.dropped_ms = 0.0
        self._frames: deque[PlayoutFrame] = deque()
        self._queued: Counter[str] = Counter()  # frames queued per response
        self._partial: list[npt.NDArray[np.int16]] = []  # samples short of a whole frame, current item
        self._partial_samples = 0
        self._partial_owner: tuple[str, str] | None = None  # (item_id, response_id)
        self._item_ms: dict[str, float] = {}  # audio queued so far per item (ms)
        self._done: set[str] = set()  # responses whose audio is complete, waiting to drain
        self._stopped: list[str] = []

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def queued_ms(self) -> float:
        return len(self._frames) * self.frame_ms

    def push(self, pcm: npt.NDArray[np.int16], item_id: str, response_id: str) -> None:
        """Queue `pcm` (at `rate`) as the next audio of `item_id`."""
        if self._partial_owner is not None and self._partial_owner[0] != item_id:
            self.end_item(self._partial_owner[0])
        self._partial_owner = (item_id, response_id)
        if pcm.size:
            self._partial.append(pcm.astype(np.int16, copy=False))
            self._partial_samples += pcm.size
        if self._partial_samples < self.frame_samples:
            return
        samples = np.concatenate(self._partial)
        whole = samples.size - samples.size % self.frame_samples
        rest = samples[whole:]
        self._partial = [rest] if rest.size else []
        self._partial_samples = rest.size
        for start in range(0, whole, self.frame_samples):
            self._append(samples[start:start + self.frame_samples], item_id, response_id)

    def end_item(self, item_id: str) -> None:
        """The item's audio is complete: its last partial frame is padded with silence and queued."""
        if self._partial_owner is None or self._partial_owner[0] != item_id:
            return
        _, response_id = self._partial_owner
        if self._partial_samples:
            frame = np.zeros(self.frame_samples, dtype=np.int16)
            tail = np.concatenate(self._partial)
            frame[:tail.size] = tail
            self._append(frame, item_id, response_id, real_samples=tail.size)
        self._partial, self._partial_samples, self._partial_owner = [], 0, None

    def response_done(self, response_id: str) -> None:
        """No more audio will come for this response; it stops once its queued frames have played."""
        if self._partial_owner is not None and self._partial_owner[1] == response_id:
            self.end_item(self._partial_owner[0])
        if self._queued[response_id]:
            self._done.add(response_id)
        else:
            del self._queued[response_id]
            self._stopped.append(response_id)

    def next_frame(self) -> PlayoutFrame | None:
        """The frame to play now, or None when nothing is queued (play silence)."""
        if not self._frames:
            return None
        frame = self._frames.popleft()
        self._queued[frame.response_id] -= 1
        if not self._queued[frame.response_id]:
            del self._queued[frame.response_id]
            if frame.response_id in self._done:
                self._done.discard(frame.response_id)
                self._stopped.append(frame.response_id)
        return frame

    def take_stopped(self) -> list[str]:
        """Responses whose audio has been played to the end since the last call."""
        stopped, self._stopped = self._stopped, []
        return stopped

    def clear(self) -> set[str]:
        """Barge-in: drop all queued audio; returns the responses it belonged to (they never 'stop')."""
        responses = set(self._queued) | self._done
        if self._partial_owner is not None:
            responses.add(self._partial_owner[1])
        self._frames.clear()
        self._queued.clear()
        self._done.clear()
        self._partial, self._partial_samples, self._partial_owner = [], 0, None
        return responses

    def _append(self, pcm: npt.NDArray[np.int16], item_id: str, response_id: str,
                real_samples: int | None = None) -> None:
        ms = (self.frame_samples if real_samples is None else real_samples) * 1000.0 / self.rate
        if len(self._frames) >= self.max_frames:
            self.dropped_ms += ms
            return
        heard = self._item_ms.get(item_id, 0.0) + ms
        self._item_ms[item_id] = heard
        self._frames.append(PlayoutFrame(pcm, item_id, response_id, heard))
        self._queued[response_id] += 1
