"""Playout: frames out in order, heard position per item, `stopped` only once played, barge-in clears."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.transports.playout import Playout

RATE = 48000
FRAME = 960


def tone(samples: int, value: int = 1000) -> np.ndarray:
    return np.full(samples, value, dtype=np.int16)


def drain(playout: Playout) -> list:
    frames = []
    while (frame := playout.next_frame()) is not None:
        frames.append(frame)
    return frames


def test_frames_carry_the_heard_position() -> None:
    p = Playout(RATE, 20)
    p.push(tone(FRAME * 2 + 480), "item_a", "resp_1")
    assert len(p) == 2  # the half frame waits for more audio or the end of the item
    p.end_item("item_a")
    frames = drain(p)
    assert [f.heard_ms for f in frames] == [20.0, 40.0, 50.0]  # the padded tail counts only its real audio
    assert frames[-1].pcm[480:].tolist() == [0] * 480 and frames[-1].pcm.size == FRAME


def test_stopped_comes_after_the_last_frame_has_been_taken() -> None:
    p = Playout(RATE, 20)
    p.push(tone(FRAME * 3), "item_a", "resp_1")
    p.response_done("resp_1")
    assert p.take_stopped() == []
    p.next_frame()
    p.next_frame()
    assert p.take_stopped() == []
    p.next_frame()
    assert p.take_stopped() == ["resp_1"]
    assert p.take_stopped() == []


def test_a_response_with_nothing_queued_stops_at_once() -> None:
    p = Playout(RATE, 20)
    p.response_done("resp_1")
    assert p.take_stopped() == ["resp_1"]


def test_clear_drops_everything_and_names_the_responses() -> None:
    p = Playout(RATE, 20)
    p.push(tone(FRAME * 5 + 10), "item_a", "resp_1")
    p.response_done("resp_1")
    assert p.clear() == {"resp_1"}
    assert len(p) == 0 and p.next_frame() is None and p.take_stopped() == []


def test_a_new_item_closes_the_previous_partial_frame() -> None:
    p = Playout(RATE, 20)
    p.push(tone(100), "item_a", "resp_1")
    p.push(tone(FRAME), "item_b", "resp_2")
    frames = drain(p)
    assert [(f.item_id, f.heard_ms) for f in frames] == [("item_a", pytest.approx(100 / 48)), ("item_b", 20.0)]


def test_the_bound_drops_and_counts() -> None:
    p = Playout(RATE, 20, max_ms=100)
    p.push(tone(FRAME * 8), "item_a", "resp_1")
    assert len(p) == 5 and p.dropped_ms == 60.0
    assert drain(p)[-1].heard_ms == 100.0  # dropped audio is never counted as heard


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError):
        Playout(44100, 7)


@given(st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 2)), max_size=25), st.booleans())
def test_every_pushed_sample_comes_out_once_in_order(pushes: list[tuple[int, int]], finish: bool) -> None:
    p = Playout(RATE, 20, max_ms=10**9)
    sent: list[np.ndarray] = []
    counter = 0
    for size, item in pushes:
        chunk = (np.arange(counter, counter + size) % 30000 + 1).astype(np.int16)
        counter += size
        sent.append(chunk)
        p.push(chunk, f"item_{item}", f"resp_{item}")
    if finish:
        for item_id in {f"item_{i}" for _, i in pushes}:
            p.end_item(item_id)
    frames = drain(p)
    assert all(f.pcm.size == FRAME for f in frames)
    out = np.concatenate([f.pcm for f in frames]) if frames else np.zeros(0, np.int16)
    audio = out[out != 0]
    queued = np.concatenate([np.zeros(0, np.int16), *sent])
    # Frames come out in push order; only the last item's partial frame may still be held.
    assert audio.tolist() == queued[: audio.size].tolist()
    if finish:
        assert audio.size == queued.size
    last: dict[str, float] = {}
    for f in frames:
        assert f.heard_ms > last.get(f.item_id, 0.0)
        last[f.item_id] = f.heard_ms
