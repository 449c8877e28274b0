"""Pacing clock driven by a fake time sequence."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxgate.audio.clock import PacingClock


def test_on_time_wakeups_send_one_frame_each() -> None:
    clock = PacingClock(frame_ms=20)
    clock.start(100.0)
    sent = [clock.due(100.0 + k * 0.020) for k in range(50)]
    assert sent == [1] * 50
    assert clock.next_deadline == pytest.approx(100.0 + 50 * 0.020)


def test_early_wakeup_sends_nothing() -> None:
    clock = PacingClock()
    clock.start(0.0)
    assert clock.due(0.0) == 1
    assert clock.due(0.015) == 0
    assert clock.due(0.0199) == 0
    assert clock.due(0.020) == 1


def test_late_wakeup_catches_up_on_the_absolute_grid() -> None:
    clock = PacingClock(frame_ms=20)
    clock.start(0.0)
    assert clock.due(0.0) == 1
    assert clock.due(0.065) == 3  # frames due at 20, 40 and 60 ms
    assert clock.next_deadline == pytest.approx(0.080)  # no drift: the grid did not move
    assert clock.due(0.080) == 1
    assert clock.reanchors == 0


def test_stall_beyond_max_catchup_reanchors_instead_of_bursting() -> None:
    clock = PacingClock(frame_ms=20, max_catchup_ms=100)
    clock.start(0.0)
    assert clock.due(0.0) == 1
    assert clock.due(0.500) == 1  # 480 ms late: send one frame and restart the grid here
    assert clock.reanchors == 1
    assert clock.next_deadline == pytest.approx(0.520)
    assert clock.due(0.520) == 1


def test_lateness_up_to_max_catchup_is_caught_up() -> None:
    clock = PacingClock(frame_ms=20, max_catchup_ms=100)
    clock.start(0.0)
    clock.due(0.0)
    assert clock.due(0.120) == 6  # 100 ms past the 20 ms deadline: still within the limit
    assert clock.reanchors == 0


def test_restart_after_idle_does_not_count_the_gap() -> None:
    clock = PacingClock()
    clock.start(0.0)
    clock.due(0.0)
    clock.start(10.0)
    assert clock.due(10.0) == 1
    assert clock.reanchors == 0


def test_misuse_is_refused() -> None:
    with pytest.raises(RuntimeError):
        PacingClock().due(0.0)
    with pytest.raises(ValueError):
        PacingClock(frame_ms=0)
    with pytest.raises(ValueError):
        PacingClock(max_catchup_ms=-1)


@given(st.lists(st.floats(min_value=0.0, max_value=0.090), min_size=1, max_size=300))
def test_frames_sent_track_elapsed_time_under_jittery_wakeups(gaps: list[float]) -> None:
    # With wake-ups never later than max_catchup, the total sent is exactly the frames whose deadline
    # has passed: floor(elapsed / frame) + 1, however the wake-ups fall.
    clock = PacingClock(frame_ms=20, max_catchup_ms=100)
    start = 1000.0
    clock.start(start)
    now, total = start, 0
    for gap in gaps:
        now += gap
        total += clock.due(now)
        assert clock.next_deadline > now
    assert clock.reanchors == 0
    assert total == int((now - start) / 0.020 + 1e-9) + 1
