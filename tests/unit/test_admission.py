"""Admission control's core: the gateway and per-key limits, draining, and phone-call reservations, on a
test clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from voxgate.admission import Admission, Refusal, Ticket


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def refused_count(reason: str, transport: str) -> float:
    return REGISTRY.get_sample_value("voxgate_calls_refused_total", {"reason": reason, "transport": transport}) or 0.0


def test_calls_beyond_the_limit_are_refused_until_one_ends() -> None:
    admission = Admission(2)
    first, second = admission.try_admit("k", "realtime_ws"), admission.try_admit("k", "webrtc")
    assert isinstance(first, Ticket) and isinstance(second, Ticket)
    before = refused_count("capacity", "twilio")
    third = admission.try_admit(None, "twilio")
    assert isinstance(third, Refusal)
    assert (third.reason, third.code, third.retry_after_s) == ("capacity", "server_at_capacity", 5)
    assert "2 live calls" in third.message
    assert refused_count("capacity", "twilio") == before + 1
    first.release()
    first.release()  # every end path may release: counted once
    assert admission.in_use == 1
    assert isinstance(admission.try_admit(None, "twilio"), Ticket)
    assert isinstance(admission.try_admit(None, "twilio"), Refusal)


def test_a_key_at_its_own_limit_leaves_room_for_other_keys() -> None:
    admission = Admission(10, max_calls_per_key=2)
    held = [admission.try_admit("a", "realtime_ws") for _ in range(2)]
    refusal = admission.try_admit("a", "realtime_ws")
    assert isinstance(refusal, Refusal) and refusal.reason == "key_limit" and refusal.code == "key_call_limit_reached"
    assert isinstance(admission.try_admit("b", "realtime_ws"), Ticket)
    assert isinstance(admission.try_admit(None, "telnyx"), Ticket)  # carrier calls count against the gateway only
    assert isinstance(held[0], Ticket)
    held[0].release()
    assert isinstance(admission.try_admit("a", "realtime_ws"), Ticket)


def test_draining_refuses_new_calls_and_lets_live_ones_end() -> None:
    admission = Admission(5)
    live = admission.try_admit("k", "realtime_ws")
    assert isinstance(live, Ticket)
    admission.start_draining()
    refusal = admission.try_admit("k", "realtime_ws")
    assert isinstance(refusal, Refusal) and (refusal.reason, refusal.retry_after_s) == ("draining", 30)
    assert admission.snapshot() == {"active": 1, "limit": 5, "available": 4, "per_key_limit": 0, "accepting": False}
    live.release()
    assert admission.in_use == 0


def reserved(call_id: str, clock: Clock) -> tuple[Admission, Ticket]:
    """A one-call gateway whose call was admitted at its webhook and awaits its media socket."""
    admission = Admission(1, reservation_ttl_s=30, now=clock)
    ticket = admission.try_admit(None, "twilio")
    assert isinstance(ticket, Ticket)
    admission.reserve(call_id, ticket)
    return admission, ticket


def test_a_phone_call_reserved_at_its_webhook_is_claimed_by_its_media_socket() -> None:
    admission, ticket = reserved("CA1", Clock())
    assert isinstance(admission.try_admit(None, "twilio"), Refusal)  # the reserved call holds the only slot
    assert admission.claim("CA2") is None
    assert admission.claim("CA1") is ticket
    assert admission.claim("CA1") is None  # claimed once


def test_an_unclaimed_reservation_lapses_and_frees_its_slot() -> None:
    clock = Clock()
    admission, _ = reserved("v3:1", clock)
    clock.t += 29.9
    assert admission.in_use == 1
    clock.t += 0.2
    assert admission.in_use == 0
    assert admission.claim("v3:1") is None
    assert isinstance(admission.try_admit(None, "telnyx"), Ticket)


def test_a_cancelled_or_repeated_reservation_holds_one_slot() -> None:
    admission = Admission(3)
    first, again = admission.try_admit(None, "twilio"), admission.try_admit(None, "twilio")
    assert isinstance(first, Ticket) and isinstance(again, Ticket)
    admission.reserve("CA1", first)
    admission.reserve("CA1", again)  # the carrier retried its webhook
    assert admission.in_use == 1
    admission.cancel("CA1")  # hung up while ringing
    admission.cancel("CA1")
    assert admission.in_use == 0


@given(st.lists(st.tuples(st.sampled_from(["admit", "release"]), st.sampled_from(["a", "b", None]),
                          st.integers(0, 20)), max_size=200),
       st.integers(1, 6), st.integers(0, 3))
def test_usage_never_exceeds_the_limits(ops: list[tuple[str, str | None, int]], limit: int, per_key: int) -> None:
    admission = Admission(limit, max_calls_per_key=per_key)
    live: list[Ticket] = []
    for op, key, pick in ops:
        if op == "admit":
            result = admission.try_admit(key, "realtime_ws")
            if isinstance(result, Ticket):
                live.append(result)
            else:
                full = len(live) >= limit
                key_full = key is not None and per_key and sum(t.key == key for t in live) >= per_key
                assert (result.reason == "capacity" and full) or (result.reason == "key_limit" and key_full)
        elif live:
            live.pop(pick % len(live)).release()
        assert admission.in_use == len(live) <= limit
        if per_key:
            assert all(sum(t.key == k for t in live) <= per_key for k in ("a", "b"))
