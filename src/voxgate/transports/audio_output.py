"""The agent's voice on a paced line: the thin asyncio shell every paced transport puts round a `Playout`.

A carrier's media stream, a browser's and a SIP call's RTP differ in how a frame leaves (a media message
with marks, an SRTP packet of Opus, a datagram) but not in anything else, which lives here once:

    the transport's pump  session events -> take(): audio encoded for the line (PCM in, bytes queued),
                          items and responses closed as the session closes them (`take_from`: a phone
                          line's whole pump, where only the audio matters)
    the line's sender     due(now) / pop(): frames at the pace; `output_audio_buffer.stopped` once a
                          response's last frame is out
    barge-in              clear(): the line's queue dropped, the encoder's state with it
    call actions          until_heard(): everything the session has queued has been played (and, on a
                          line that confirms, confirmed); a futures wait, no polling

The caller's heard position is the `Playout`'s, handed to the call's `PlaybackTracker` for the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from voxgate.audio.playout import Frame, Playout
from voxgate.protocol import server_events as se
from voxgate.session.playback import PlaybackTracker

if TYPE_CHECKING:
    from voxgate.session.session import Session

__all__ = ["AudioOutput", "LineEncoder"]

log = logging.getLogger("voxgate.transports")

SILENCE_RATE = 16000  # a silent frame's rate, for the recording (which mixes at this rate)


class LineEncoder(Protocol):
    """The session's PCM in the line's bytes (G.711, L16, PCM16 at the track's rate)."""

    def encode(self, pcm: npt.NDArray[np.int16], rate: int) -> bytes: ...

    def flush(self) -> bytes:
        """The tail a streaming resampler still holds, at the end of an item."""
        ...

    def reset(self) -> None:
        """Forget any state (a barge-in cut the stream)."""
        ...

    def decode(self, payload: bytes) -> tuple[npt.NDArray[np.int16], int]:
        """A frame of the line's bytes back as PCM and its rate: the recording hears what the caller did."""
        ...


class AudioOutput:
    def __init__(self, playout: Playout, encoder: LineEncoder, playback: PlaybackTracker) -> None:
        self.playout = playout
        self.encoder = encoder
        self.session: Session | None = None  # set by the transport once the call's session is open
        self.ready = asyncio.Event()  # set when audio is queued (a non-continuous sender waits on it)
        self._audio_responses: set[str] = set()  # responses that announced output_audio_buffer.started
        self._silence = np.zeros(int(SILENCE_RATE * playout.frame_ms / 1000), dtype=np.int16)
        playback.line = playout
        playout.on_item_heard = playback.heard_from

    # -- the session's events ----------------------------------------------------------------------

    def take(self, event: se.ServerEvent) -> int | None:
        """Feed one session event, in order; the frames dropped (queue full) when it was an audio delta
        (the line's, not to be forwarded as an event), None for every other event."""
        playout = self.playout
        if isinstance(event, se.ResponseOutputAudioDelta):
            dropped = playout.push(self.encoder.encode(event.pcm, event.format.rate), event.item_id)
            self.ready.set()
            return dropped
        if isinstance(event, se.ResponseOutputAudioDone):
            tail = self.encoder.flush()
            if tail:
                playout.push(tail, event.item_id)
            playout.end_item(event.item_id)
            self.ready.set()
        elif isinstance(event, se.OutputAudioBufferStarted):
            self._audio_responses.add(event.response_id)
        elif isinstance(event, se.ResponseDone) and event.response.id in self._audio_responses:
            self._audio_responses.discard(event.response.id)
            playout.end_response(event.response.id)
            self._report_stopped()
        return None

    async def take_from(self, session: Session, on_dropped: Callable[[int], None] | None = None,
                        on_event: Callable[[se.ServerEvent], None] | None = None) -> None:
        """A phone line's pump: every event the session queues, in order, until the session closes. Only
        audio matters on a phone line; the rest is the session's record (an error is logged) and goes to
        `on_event` (an app's sideband). `on_dropped(frames)` hears of audio the line's queue had no room for."""
        while True:
            event = await session.outbound.get()
            if event is None:
                return
            dropped = self.take(event)
            if dropped:
                if on_dropped is not None:
                    on_dropped(dropped)
            elif dropped is None:
                if isinstance(event, se.ErrorEvent):
                    log.warning("session %s: error %s", session.id, event.code)
                if on_event is not None:
                    on_event(event)

    # -- the line ----------------------------------------------------------------------------------

    def due(self, now: float, beat: float | None = None) -> int:
        return self.playout.due(now, beat)

    def pop(self, instead: bytes | None = None) -> Frame | None:
        """The agent's next frame (None: the line's silence). `instead`: what the line plays this beat in the
        agent's place (an operator's voice on a taken-over call), which the recording hears instead."""
        frame = self.playout.pop()
        session = self.session
        if session is not None and session.recording is not None:
            if instead is not None:
                session.recording.agent(*self.encoder.decode(instead))
            elif frame is not None:
                session.recording.agent(*self.encoder.decode(frame.payload))
            elif self.playout.continuous:  # the line's silence keeps the agent's side on time
                session.recording.agent(self._silence, SILENCE_RATE)
        if self.playout.stopped:
            self._report_stopped()
        return frame

    def _report_stopped(self) -> None:
        stopped, self.playout.stopped = self.playout.stopped, []
        session = self.session
        if session is not None and not session.closed:
            for response_id in stopped:
                session.emit(se.OutputAudioBufferStopped(response_id=response_id))

    def hold(self) -> None:
        """The caller may be barging in: pause the line where it is (see `Playout.hold`)."""
        self.playout.hold()

    def resume(self) -> None:
        """It was not a barge-in: play on from where the line paused."""
        self.playout.resume()

    def clear(self) -> int:
        """Barge-in: drop what the line has not played; returns the frames dropped. The responses cut end
        with the session's `output_audio_buffer.cleared`, never `stopped`."""
        self._audio_responses.clear()
        self.encoder.reset()
        return self.playout.clear()

    async def until_heard(self, max_wait_s: float, confirm_grace_s: float = 0.0) -> bool:
        """Wait until the caller has heard everything the session queued so far: the transport's pump has
        handed it all to the line, the line has played it, and (on a line that confirms) confirmed it
        within `confirm_grace_s` of the last frame, so a far end that never confirms costs that, not a
        stuck call. False when it did not come to pass within `max_wait_s` or a barge-in cut it."""
        session = self.session
        try:
            async with asyncio.timeout(max_wait_s):
                if session is not None:
                    await session.outbound.emptied()
                if not await self.playout.until_sent():
                    return False
                if not self.playout.confirm_every:
                    return True
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(confirm_grace_s):
                        return await self.playout.until_heard()
                return True
        except TimeoutError:
            return False
