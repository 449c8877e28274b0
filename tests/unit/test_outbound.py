"""The outbound queue's policy: audio is dropped and counted when full, control events never, and a peer
that stops reading altogether trips the overflow that closes its connection."""

from __future__ import annotations

import asyncio

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from voxgate.audio.formats import PCM24K
from voxgate.protocol import server_events as se
from voxgate.session.outbound import Outbound
from voxgate.session.playback import PlaybackTracker


def _audio(n: int) -> se.ResponseOutputAudioDelta:
    return se.ResponseOutputAudioDelta(response_id="resp_1", item_id="item_1", output_index=0,
                                       pcm=np.full(480, n, dtype=np.int16), format=PCM24K)


def _control(n: int) -> se.ServerEvent:
    return se.ConversationItemDeleted(item_id=f"item_{n}")


def test_audio_is_dropped_and_counted_when_full_but_control_is_not() -> None:
    out = Outbound(max_events=3)
    assert all(out.put_audio(_audio(i)) for i in range(3))
    assert not out.put_audio(_audio(3))
    assert out.dropped_audio_events == 1
    out.put(_control(0))
    assert len(out) == 4 and not out.overflowed


def test_overflow_frees_the_queue_and_signals() -> None:
    out = Outbound(max_events=2)
    for i in range(4):
        out.put(_control(i))
    assert not out.overflowed
    out.put(_control(4))
    assert out.overflowed and out.overflow.is_set() and out.closed and len(out) == 0


async def test_get_returns_in_order_then_none_after_close() -> None:
    out = Outbound(max_events=8)
    first, second = _control(1), _audio(2)
    out.put(first)
    out.put_audio(second)
    assert (await out.get()) is first
    assert (await out.get()) is second
    waiter = asyncio.create_task(out.get())
    await asyncio.sleep(0)
    out.close()
    assert await waiter is None


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10)), max_size=200), st.integers(1, 20))
def test_memory_stays_bounded(ops: list[tuple[bool, int]], bound: int) -> None:
    out = Outbound(max_events=bound)
    for audio, n in ops:
        if audio:
            out.put_audio(_audio(n))
        else:
            out.put(_control(n))
        assert len(out) <= 2 * bound


def test_a_cut_drops_the_queued_audio_and_refuses_the_cut_response_s_later_audio() -> None:
    out = Outbound(max_events=10)
    out.put_audio(_audio(0))
    out.put(_control(0))
    out.put_audio(_audio(1))
    assert out.cut_audio("resp_1") == 2
    assert len(out) == 1  # control events stay
    assert not out.put_audio(_audio(2))  # the response being cancelled: refused, and not a loss
    assert out.dropped_audio_events == 0
    other = se.ResponseOutputAudioDelta(response_id="resp_2", item_id="item_2", output_index=0,
                                        pcm=np.zeros(480, dtype=np.int16), format=PCM24K)
    assert out.put_audio(other)  # the next response plays


async def test_emptied_waits_for_the_reader_to_take_everything() -> None:
    out = Outbound(max_events=10)
    await out.emptied()  # nothing queued: at once
    out.put(_control(0))
    out.put(_control(1))
    waiting = asyncio.ensure_future(out.emptied())
    await asyncio.sleep(0)
    assert not waiting.done()
    assert await out.get() is not None
    assert await out.get() is not None
    reader = asyncio.ensure_future(out.get())  # back for more with the queue empty: all handled
    for _ in range(3):
        await asyncio.sleep(0)
    assert waiting.done()
    out.close()
    assert await reader is None


class _Line:
    def __init__(self) -> None:
        self.heard: dict[str, float] = {}

    def heard_ms(self, item_id: str) -> float:
        return self.heard.get(item_id, 0.0)


def test_playback_heard_is_the_line_s_and_never_more_than_was_sent() -> None:
    playback = PlaybackTracker(server_side=True)
    playback.sent("item_a", 200)
    assert playback.heard_ms("item_a") == 0.0  # no line yet: nothing has been heard (not what was sent)
    line = _Line()
    playback.line = line
    line.heard["item_a"] = 120
    assert playback.heard_ms("item_a") == 120
    line.heard["item_a"] = 900  # never more than was sent
    assert playback.heard_ms("item_a") == 200
    assert playback.heard_ms("unknown") == 0.0
    client = PlaybackTracker()  # a WebSocket client plays it itself: what was sent is all the server knows
    client.sent("item_a", 200)
    assert client.heard_ms("item_a") == 200
