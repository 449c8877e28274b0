"""Playout, the sans-IO core of every paced line: frames at the pace on a fake clock, the heard position,
clear mid-item, confirmations, `stopped`, and futures resolved when a position is heard."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from voxgate.audio.playout import MAX_HOLD_S, Frame, Playout

FRAME = 160  # 20 ms of G.711 at 8 kHz, as a carrier or RTP line carries it
SILENCE = b"\xff"


def line(**kwargs: int | bool) -> Playout:
    return Playout(frame_bytes=FRAME, silence=SILENCE, **kwargs)  # type: ignore[arg-type]


def release(p: Playout, now: float, beat: float | None = None) -> list[Frame]:
    frames = []
    for _ in range(p.due(now, beat)):
        frame = p.pop()
        assert frame is not None
        frames.append(frame)
    return frames


def test_frames_leave_in_real_time_with_a_small_lead() -> None:
    p = line(lead_frames=2, confirm_every_frames=5)
    p.push(bytes(range(160)) * 10, "item_a")  # 200 ms
    first = release(p, 100.0)
    assert len(first) == 3  # the frame due now and the two of lead
    assert release(p, 100.005) == []
    assert len(release(p, 100.020)) == 1
    third = release(p, 100.065)
    assert len(third) == 2  # a late wake-up sends what it owes, on the same grid
    rest = release(p, 101.0)  # a long stall: no burst, one frame and a fresh grid
    assert len(rest) == 1 and p.clock.reanchors == 1
    assert p.heard_ms("item_a") == 140.0  # what the clock has released is what the caller has heard


def test_the_heard_position_is_the_clock_s_from_the_first_frame() -> None:
    """No report from the far end is needed: before any confirmation, what was sent ahead is not heard."""
    p = line(confirm_every_frames=5)
    p.push(b"\x01" * FRAME * 50, "a")  # a second of audio handed over at once
    assert p.heard_ms("a") == 0.0
    for tick in range(5):  # 100 ms of the line's clock
        release(p, tick * 0.02)
    assert p.heard_ms("a") == 100.0
    assert p.heard_ms("never played") == 0.0


def test_a_continuous_line_ticks_silence_and_stays_on_its_grid() -> None:
    p = Playout(frame_bytes=8, silence=b"\x00\x00", frame_ms=20, continuous=True)
    assert p.due(10.0) == 1 and p.pop() is None  # nothing queued: the line plays silence
    p.push(b"\x01\x00" * 6, "a")  # a frame and a half
    assert p.due(10.01) == 0 and p.next_deadline == pytest.approx(10.02)
    assert p.due(10.02) == 1
    frame = p.pop()
    assert frame is not None and (frame.item_id, frame.heard_ms) == ("a", 20.0)
    p.end_item("a")  # the half frame is padded with silence; only its real audio counts as heard
    assert p.due(10.04) == 1
    tail = p.pop()
    assert tail is not None and tail.payload == b"\x01\x00" * 2 + b"\x00\x00" * 2 and tail.heard_ms == 30.0
    assert p.heard_ms("a") == 30.0


@pytest.mark.parametrize("wobble_s", [-0.004, -0.0001, 0.0, 0.0001, 0.004])
def test_a_continuous_line_on_a_shared_beat_sends_one_frame_per_beat_however_the_beat_wobbles(
        wobble_s: float) -> None:
    """An RTP call started exactly on a beat of the shared ticker: its deadlines sit half a frame before
    each beat, so a beat a few ms early or late finds one frame, never none and then two (a 40 ms gap
    the caller's jitter buffer must hide)."""
    p = Playout(frame_bytes=8, silence=b"\x00\x00", frame_ms=20, continuous=True)
    beat = 10.0
    counts = []
    for n in range(50):
        now = beat + n * 0.02 + (wobble_s if n % 2 else -wobble_s)
        counts.append(p.due(now, beat + (n + 1) * 0.02))
    assert counts == [1] * 50


def test_confirmations_at_every_nth_frame_and_at_each_item_end() -> None:
    p = line(confirm_every_frames=5)
    p.push(b"\x01" * 1600, "a")
    p.push(b"\x02" * 50, "a")  # a partial frame waits for the rest of the item
    p.end_item("a")  # ... then is padded with silence
    frames = [f for k in range(20) for f in release(p, k * 0.02)]
    assert len(frames) == 11
    assert frames[-1].payload == b"\x02" * 50 + b"\xff" * 110
    assert [f.confirm for f in frames if f.confirm] == ["a:100", "a:200", "a:206"]
    assert not p.drained
    assert p.confirmed("a:100") and p.confirmed("a:200")
    assert not p.confirmed("nonsense") and p.unknown_confirmations == 1
    assert p.confirmed("a:206") and p.drained


def test_clear_mid_item_drops_what_was_not_played_and_keeps_what_was() -> None:
    p = line(lead_frames=2, confirm_every_frames=1)
    p.push(b"\x01" * 1600 + b"\x01" * 30, "a")  # 10 frames and a partial one
    sent = release(p, 0.0)
    assert [f.confirm for f in sent] == ["a:20", "a:40", "a:60"]
    assert p.confirmed("a:20")
    assert p.clear() == 8  # 7 queued frames and the partial one
    assert p.idle and release(p, 0.1) == []
    assert p.heard_ms("a") == 60.0  # released before the clear: heard
    assert not p.confirmed("a:40") and not p.confirmed("a:60")  # echoed by the clear: not a stranger
    assert p.unknown_confirmations == 0
    p.push(b"\x03" * 320, "b")  # the next reply plays at once, on a fresh grid
    assert [f.payload[0] for f in release(p, 1.0)] == [3, 3]
    assert p.heard_ms("a") == 60.0 and p.heard_ms("b") == 40.0


def test_a_held_continuous_line_plays_silence_and_plays_on_from_the_same_frame() -> None:
    p = Playout(frame_bytes=8, silence=b"\x00\x00", frame_ms=20, continuous=True)
    p.push(bytes([1]) * 8 + bytes([2]) * 8 + bytes([3]) * 8, "a")
    assert p.due(10.0) == 1 and (frame := p.pop()) is not None and frame.payload[0] == 1
    p.hold()
    for now in (10.02, 10.04, 10.06):  # the grid keeps its ticks: silence, and nothing more is heard
        assert p.due(now) == 1 and p.pop() is None
    assert p.heard_ms("a") == 20.0 and len(p) == 2
    p.resume()
    assert p.due(10.08) == 1 and (frame := p.pop()) is not None and frame.payload[0] == 2
    assert p.heard_ms("a") == 40.0


def test_a_held_carrier_line_sends_nothing_then_starts_a_fresh_grid_with_its_lead() -> None:
    p = line(lead_frames=2)
    p.push(bytes(range(160)) * 10, "a")
    assert len(release(p, 100.0)) == 3
    p.hold()
    assert p.due(100.02) == 0 and p.due(100.2) == 0 and not p.idle
    assert p.next_deadline is None
    p.resume()
    assert len(release(p, 100.21)) == 3  # as after any pause: the frame due and its lead
    assert p.heard_ms("a") == 120.0


def test_a_hold_lifts_by_itself_when_nothing_decides_it() -> None:
    p = Playout(frame_bytes=8, silence=b"\x00\x00", frame_ms=20, continuous=True)
    p.push(bytes([1]) * 8 * 40, "a")
    p.due(0.0)
    p.hold()
    held = [p.due(t / 1000) and p.pop() for t in range(20, 20 + round(MAX_HOLD_S * 1000), 20)]
    assert held and not any(held)
    assert p.due(0.02 + MAX_HOLD_S + 0.001) == 1 and p.pop() is not None and not p.held


def test_a_clear_ends_a_hold() -> None:
    p = line(lead_frames=0)
    p.push(bytes(160) * 5, "a")
    release(p, 0.0)
    p.hold()
    assert p.clear() == 4 and not p.held
    p.push(bytes([7]) * 160, "b")
    assert [f.payload[0] for f in release(p, 1.0)] == [7]


async def test_futures_resolve_when_a_position_is_sent_and_heard() -> None:
    p = line(lead_frames=0, confirm_every_frames=5)
    p.push(b"\x01" * FRAME * 3 + b"\x01" * 10, "a")
    sent, heard = p.until_sent(), p.until_heard()  # "here": everything queued so far, the partial padded
    release(p, 0.0)
    release(p, 0.02)
    assert not sent.done()
    frames = release(p, 0.06)
    assert sent.done() and sent.result() is True
    assert not heard.done()  # released, not yet confirmed by the line
    assert frames[-1].confirm is not None and p.confirmed(frames[-1].confirm)
    assert heard.result() is True
    already = p.until_heard()
    assert already.done() and already.result() is True  # nothing left to hear


async def test_a_clear_answers_waiters_with_false() -> None:
    p = Playout(frame_bytes=4, silence=b"\x00\x00", continuous=True)
    p.push(b"\x01" * 40, "a")
    heard = p.until_heard()
    assert p.due(0.0) == 1 and p.pop() is not None
    p.clear()
    assert heard.done() and heard.result() is False
    await asyncio.sleep(0)


def test_stopped_comes_once_the_last_frame_of_a_response_is_out() -> None:
    p = Playout(frame_bytes=4, silence=b"\x00\x00", continuous=True)
    p.push(b"\x01" * 12, "a")
    p.end_response("resp_1")
    assert p.stopped == []
    assert p.due(0.0) == 1 and p.pop() is not None
    assert p.due(0.04) == 2
    p.pop()
    assert p.stopped == []
    p.pop()
    assert p.stopped == ["resp_1"]
    p.stopped.clear()
    p.end_response("resp_2")  # nothing queued: it stops at once
    assert p.stopped == ["resp_2"]


def test_a_cleared_response_never_stops() -> None:
    p = Playout(frame_bytes=4, silence=b"\x00\x00", continuous=True)
    p.push(b"\x01" * 40, "a")
    p.end_response("resp_1")
    p.clear()
    assert p.due(1.0) == 1 and p.pop() is None and p.stopped == []


def test_a_full_queue_drops_and_counts_and_never_hears_the_dropped() -> None:
    p = line(max_frames=3)
    assert p.push(b"\x00" * 800, "a") == 2
    assert p.frames_dropped == 2 and p.queued_ms == 60 and p.dropped_ms == 40
    release(p, 0.0)
    release(p, 1.0)
    release(p, 2.0)
    assert p.heard_ms("a") == 60.0


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError):
        Playout(frame_bytes=161, silence=b"\x00\x00")


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 700)), max_size=20),
       st.integers(0, 3), st.integers(0, 6))
def test_every_byte_goes_out_once_in_order(chunks: list[tuple[str, int]], lead: int, every: int) -> None:
    p = line(lead_frames=lead, confirm_every_frames=every)
    expected = bytearray()
    current = None
    counter = 0
    names = [name for name, _ in chunks]
    for n, (name, size) in enumerate(chunks):
        item = current if n and names[n - 1] == name and current else f"{name}{n}"  # items never resume
        if current is not None and item != current and len(expected) % FRAME:
            expected += SILENCE * (FRAME - len(expected) % FRAME)  # the previous item's tail, padded
        current = item
        data = bytes((counter + i) % 251 for i in range(size))
        counter += size
        p.push(data, item)
        expected += data
    if current is not None:
        p.end_item(current)
        if len(expected) % FRAME:
            expected += SILENCE * (FRAME - len(expected) % FRAME)
    out = bytearray()
    now = 0.0
    last_ms: dict[str, float] = {}
    while not p.idle:
        frames = release(p, now)
        for frame in frames:
            assert len(frame.payload) == FRAME
            out += frame.payload
            assert frame.heard_ms > last_ms.get(frame.item_id, 0.0)
            last_ms[frame.item_id] = frame.heard_ms
            if frame.confirm:
                assert p.confirmed(frame.confirm)
        if frames:
            assert p.heard_ms(frames[-1].item_id) == frames[-1].heard_ms
        now += 0.02
    assert bytes(out) == bytes(expected)
    assert p.drained


@given(st.floats(0.0, 0.0199), st.floats(0.0, 0.0199), st.lists(st.floats(-0.009, 0.009), min_size=30, max_size=30))
@example(arrival=0.01, phase=1.9465661073005266e-15, noise=[0.0] * 30)  # a deadline a rounding error after now
def test_on_a_shared_beat_every_tick_sends_one_frame_despite_wakeup_noise(
        arrival: float, phase: float, noise: list[float]) -> None:
    """Deadlines sit half a frame before the beats, so a tick up to 9 ms early or late never sends 0 or 2."""
    p = line(lead_frames=2)
    p.push(b"\x01" * FRAME * 40, "a")
    beats = [phase + 0.02 * k for k in range(40)]  # the writer's next tick is always within a frame
    first_beat = next(b for b in beats if b > arrival)
    assert len(release(p, arrival, first_beat)) == 3  # the lead goes at once
    counts = [len(release(p, beat + jitter)) for beat, jitter in zip([b for b in beats if b >= first_beat], noise,
                                                                       strict=False)]
    # The first beat may come too soon after the lead (its frame goes on the next one); then one per beat.
    assert counts[0] in (0, 1) and counts[1:] == [1] * (len(counts) - 1)
