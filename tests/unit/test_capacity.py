"""The default call limit: the README's measured per-call costs set against a host's cores and memory."""

from __future__ import annotations

from voxgate.capacity import CallLimit, CallProfile, Host, derive_call_limit

GIB = 1024**3
LOCAL = CallProfile("local", "silero")
ECHO_SILERO = CallProfile("echo", "silero")
ECHO_WEBRTC = CallProfile("echo", "webrtc")


def limit(*profiles: CallProfile, cores: float = 2, memory: int = 16 * GIB, stt: int = 1, tts: int = 1) -> CallLimit:
    return derive_call_limit(profiles, Host(cores, memory), stt_concurrency=stt, tts_concurrency=tts)


def test_the_local_engine_is_held_by_its_measured_cost_per_turn() -> None:
    # 30 such callers on 2 cores waited 6.5 s for first audio, and 5 on one core 2.4 s (median): a turn
    # costs 1.7 core-seconds, and the cores are kept half idle so that a turn rarely queues.
    result = limit(LOCAL)
    assert (result.calls, result.bound) == (3, "local engine: CPU")
    assert limit(LOCAL, cores=1).calls == 1
    assert limit(LOCAL, cores=8).calls == 10  # more cores: the STT/TTS workers bind next
    assert limit(LOCAL, cores=8).bound == "local engine: STT/TTS throughput"


def test_echo_calls_are_held_by_the_event_loop_whatever_the_core_count() -> None:
    assert limit(ECHO_WEBRTC).calls == 160  # 0.25 % of a core each, 40 % of the loop's core
    assert limit(ECHO_SILERO).calls == 85  # Silero on every call: 0.47 %
    assert limit(ECHO_SILERO, cores=16).calls == 85  # one loop, one core
    assert limit(ECHO_WEBRTC, ECHO_SILERO, LOCAL).calls == 3  # the costliest agent decides


def test_memory_bounds_a_small_machine_and_the_limit_is_never_zero() -> None:
    result = limit(ECHO_WEBRTC, memory=1 * GIB)
    assert (result.calls, result.bound) == (61, "memory")
    assert limit(ECHO_WEBRTC, memory=100 * 1024 * 1024).calls == 1
