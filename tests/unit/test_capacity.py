"""The default call limit: the README's measured per-call costs set against a host's cores and memory."""

from __future__ import annotations

from voxgate.capacity import CallLimit, CallProfile, Host, derive_call_limit

GIB = 1024**3
LOCAL = CallProfile("local", "silero")
ECHO_SILERO = CallProfile("echo", "silero")
ECHO_WEBRTC = CallProfile("echo", "webrtc")


def limit(*profiles: CallProfile, cores: float = 2, memory: int = 16 * GIB, stt: int = 1, tts: int = 1) -> CallLimit:
    return derive_call_limit(profiles, Host(cores, memory), stt_threads=2, stt_concurrency=stt, tts_concurrency=tts)


def test_the_local_engine_on_two_cores_is_held_by_stt_and_tts_throughput() -> None:
    # 30 such callers waited 6.5 s for first audio; the limit keeps the decoder queue half idle.
    result = limit(LOCAL)
    assert (result.calls, result.bound) == (10, "local engine: STT/TTS throughput")
    assert limit(LOCAL, stt=2, tts=2).bound == "local engine: CPU"  # more workers: the cores bind next
    assert limit(LOCAL, cores=1).calls == 5


def test_echo_calls_are_held_by_the_event_loop_whatever_the_core_count() -> None:
    assert limit(ECHO_WEBRTC).calls == 300  # 0.25 % of a core each (the bridge benchmark held 350 at 90-97 %)
    assert limit(ECHO_SILERO).calls == 159  # Silero on every call: 0.47 %
    assert limit(ECHO_SILERO, cores=16).calls == 159  # one loop, one core
    assert limit(ECHO_WEBRTC, ECHO_SILERO, LOCAL).calls == 10  # the costliest agent decides


def test_memory_bounds_a_small_machine_and_the_limit_is_never_zero() -> None:
    result = limit(ECHO_WEBRTC, memory=1 * GIB)
    assert (result.calls, result.bound) == (61, "memory")
    assert limit(ECHO_WEBRTC, memory=100 * 1024 * 1024).calls == 1
