"""The load test's arithmetic and bookkeeping, with no sockets: percentiles, how a call's ending is
classified, the ramp, the scenario mix, and what a report counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxgate.loadtest.report import CallRecord, Report
from voxgate.loadtest.scenario import Mix, Ramp, Scenario, Transport
from voxgate.loadtest.statistics import Ending, LatencyWindow, Outcome, classify, percentile


def test_percentiles_interpolate_between_ranks() -> None:
    values = [400.0, 100.0, 300.0, 200.0]
    assert percentile(values, 0) == 100.0
    assert percentile(values, 50) == 250.0
    assert percentile(values, 100) == 400.0
    assert percentile(values, 95) == pytest.approx(385.0)
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


@settings(deadline=None)  # timing is not what this checks, and the machine may be busy
@given(st.lists(st.floats(0, 1e5), min_size=1, max_size=200), st.sampled_from([50, 95, 99]))
def test_percentiles_agree_with_numpy(values: list[float], q: int) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


@pytest.mark.parametrize(("ending", "outcome", "reason"), [
    # Refusals: the gateway turned the call away cleanly, whatever else happened.
    (Ending(close_code=1013), Outcome.REFUSED, "ws_1013"),
    (Ending(close_code=1013, caller_hung_up=True), Outcome.REFUSED, "ws_1013"),
    (Ending(http_status=503), Outcome.REFUSED, "http_503"),
    (Ending(http_status=429), Outcome.REFUSED, "http_429"),
    (Ending(declined="reject:busy"), Outcome.REFUSED, "carrier_busy"),
    (Ending(declined="hangup"), Outcome.REFUSED, "carrier_busy"),
    # Completed: the caller hung up as scripted, or the agent ended the call through the carrier.
    (Ending(caller_hung_up=True), Outcome.COMPLETED, "caller_hung_up"),
    (Ending(agent_hung_up=True), Outcome.COMPLETED, "agent_hung_up"),
    # Drops: anything else ended the call.
    (Ending(close_code=1000), Outcome.DROPPED, "closed_1000"),
    (Ending(close_code=1008), Outcome.DROPPED, "closed_1008"),
    (Ending(close_code=1006), Outcome.DROPPED, "closed_1006"),
    (Ending(http_status=401), Outcome.DROPPED, "http_401"),
    (Ending(http_status=500), Outcome.DROPPED, "http_500"),
    (Ending(error="connect_ConnectionRefusedError"), Outcome.DROPPED, "connect_ConnectionRefusedError"),
    (Ending(), Outcome.DROPPED, "unknown"),
])
def test_an_ending_is_a_refusal_a_completion_or_a_drop(ending: Ending, outcome: Outcome, reason: str) -> None:
    assert classify(ending) == (outcome, reason)


def test_latency_window_forgets_what_is_older_than_its_span() -> None:
    window = LatencyWindow(10.0)
    window.add(0.0, [900.0, 800.0])
    window.add(8.0, [100.0])
    assert window.percentile(9.0, 50) == 800.0
    assert window.percentile(10.5, 50) == 100.0  # the first two are over ten seconds old
    assert window.percentile(30.0, 50) is None


def test_mix_deals_scenarios_by_weight_the_same_way_every_run() -> None:
    mix = Mix.parse("speak=4,tool=2,barge_in=2,listen=1")
    dealt = [mix.pick(n) for n in range(90)]
    assert dealt == [mix.pick(n) for n in range(90)]
    assert {s: dealt.count(s) for s in Scenario} == {Scenario.SPEAK: 40, Scenario.TOOL: 20, Scenario.BARGE_IN: 20,
                                                     Scenario.LISTEN: 10}
    assert dealt[:9].count(Scenario.SPEAK) == 4  # spread within each cycle, not in blocks
    assert Mix.parse("listen").pick(5) is Scenario.LISTEN
    for bad in ("shout=1", "speak=x", "speak=0", "speak=-1"):
        with pytest.raises(ValueError):
            Mix.parse(bad)


def test_ramp_starts_calls_at_its_rate_up_to_the_concurrency_and_stops_at_its_bounds() -> None:
    ramp = Ramp(rate=2.0, concurrency=3, max_calls=5, duration_s=60.0)
    started = live = 0
    timeline = []
    for tick in range(0, 41):  # 4 s in 0.1 s steps
        n = ramp.due(tick / 10, live, started)
        started += n
        live += n
        timeline.append(started)
    assert timeline[0] == 1 and timeline[4] == 1 and timeline[5] == 2 and timeline[10] == 3
    assert started == 3  # the concurrency holds it there
    live = 1  # two calls ended: at most a second's worth (2 calls) start at once, and never past max_calls
    assert ramp.due(30.0, live, started) == 2
    assert ramp.due(30.1, 0, 5) == 0 and ramp.over(30.1, 5)
    assert Ramp(1.0, 1, 10, 5.0).due(5.0, 0, 0) == 0
    for bad in ({"rate": 0.0}, {"concurrency": 0}, {"duration_s": 0.0}):
        with pytest.raises(ValueError):
            Ramp(**{"rate": 1.0, "concurrency": 1, "max_calls": 1, "duration_s": 1.0, **bad})  # type: ignore[arg-type]


def test_report_counts_refusals_apart_from_drops_and_summarises_latency() -> None:
    records = []
    for index, (ending, latencies) in enumerate([(Ending(caller_hung_up=True), [400.0, 500.0]),
                                                (Ending(caller_hung_up=True), [450.0]),
                                                (Ending(close_code=1013), []),
                                                (Ending(http_status=503), []),
                                                (Ending(close_code=1011), [])]):
        record = CallRecord(index, Transport.REALTIME, Scenario.SPEAK, 0.0, ended_s=1.0,
                            first_response_ms=latencies)
        record.outcome, record.reason = classify(ending)
        records.append(record)
    report = Report({}, records, [], 1.0).as_dict()
    calls = report["calls"]
    assert (calls["started"], calls["completed"], calls["dropped"], calls["refused"]) == (5, 2, 1, 2)
    assert calls["refusals"] == {"ws_1013": 1, "http_503": 1} and calls["drops"] == {"closed_1011": 1}
    assert report["first_response_ms"]["count"] == 3 and report["first_response_ms"]["p50"] == 450.0
    assert report["by_transport"]["realtime"]["completed"] == 2
