"""How many live calls this machine holds: the default gateway limit when `max_calls` is not set.

The limit is the smallest of four bounds, each a measured per-call cost (README "Benchmarks", on the
project's 2-core x86-64 machine) set against what this host offers:

- **event loop**: one thread runs every call's audio path (codecs, VAD, pacing, events), so it can use
  one core at most, whatever the machine has: `LOOP_HEADROOM / loop cost per call`. Loop cost per call:
  0.25 % of a core for the bridge with webrtcvad (`bench/bridge_capacity.py`: 350 calls on one core),
  0.47 % with Silero VAD on every call (150 calls), 1 % estimated for the openai relay (base64 audio
  both ways; not benchmarked).
- **worker threads** (local engine): Whisper and Piper run outside the loop on every core:
  `cores × LOCAL_CPU_SHARE / (core-seconds per turn / TURN_INTERVAL_S)`. A turn costs 1.7 core-seconds
  as callers really talk (`bench/soak.py --engine local`: 68 % of a core for 351 turns in 15 minutes:
  speculative and final Whisper decodes, the whole reply's synthesis, VAD), twice the sum of one decode
  and one first sentence (`bench/models_cost.py`). The share is half the cores, not three quarters: a
  turn is over a second of work, so a turn that finds the cores busy waits a long time (at 75 %, five
  callers on one core waited 2.4 s median for first audio).
- **STT/TTS throughput** (local engine): decodes queue on `stt_max_concurrency` workers, syntheses on
  `tts_max_concurrency`; kept at `UTILISATION` so a turn rarely waits behind another:
  `UTILISATION × TURN_INTERVAL_S × min(stt workers / 0.282 s, tts workers / 0.29 s)`.
- **memory**: `(available − MEMORY_RESERVE) × MEMORY_HEADROOM / CALL_MEMORY`, with `CALL_MEMORY` the
  worst case one call may hold (its input buffer at the limit, playout queues).

Every agent the gateway serves counts: the limit is that of the costliest agent (engine and VAD), since
any call may be for it. WebRTC calls cost more than these figures (Opus both ways: 4 % of a core per call
in `bench/webrtc_capacity.py`): a gateway that mostly serves browsers should set `max_calls`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CallLimit", "CallProfile", "Host", "derive_call_limit", "probe_host"]

# Of the loop's one core. Not a throughput figure: with callers beyond the limit redialling, the admitted
# calls' p99 first response must stay within 20 % of an unloaded gateway's (bench/overload.py: at 159
# Silero calls, 0.75 of the core, it was 1.89x; at 100, 1.22x on a busy machine), and the rest of the
# core absorbs bursts, collections, refusals and HTTP.
LOOP_HEADROOM = 0.4
LOCAL_CPU_SHARE = 0.5  # of all cores, for the local engine's worker threads (latency, not throughput)
LOCAL_TURN_CORE_S = 1.7  # core-seconds per turn of a real conversation (bench/soak.py, local engine)
LOOP_CORE_PER_CALL = {"webrtc": 0.0025, "silero": 0.0047}  # by VAD, bridge included
OPENAI_RELAY_CORE_PER_CALL = 0.01  # an estimate: relaying base64 audio costs about twice the bridge
STT_DECODE_S = 0.282  # Whisper tiny.en int8, a ~3 s utterance, 2 threads
TTS_REPLY_S = 0.29  # Piper, a two-sentence reply (145 ms per 60-character sentence)
TURN_INTERVAL_S = 6.0  # a caller's turn comes every ~6 s (talk 2 s, listen 4 s, as in the benchmarks)
UTILISATION = 0.5  # of the STT/TTS workers: queueing stays under half a decode on average
CALL_MEMORY = 10 * 1024 * 1024  # worst case per call: 120 s of input buffered (wire + PCM), queues
MEMORY_RESERVE = 256 * 1024 * 1024  # for the process beyond its calls (models are loaded already)
MEMORY_HEADROOM = 0.8


@dataclass(frozen=True, slots=True)
class Host:
    """What the process may use: cores (affinity and CPU quota) and memory still available."""

    cores: float
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class CallProfile:
    """What a call to one agent costs: its engine and its VAD."""

    engine: str  # local | echo | openai
    vad: str  # silero | webrtc


@dataclass(frozen=True, slots=True)
class CallLimit:
    calls: int
    bound: str  # which bound set it, for the start-up log line


def derive_call_limit(profiles: Iterable[CallProfile], host: Host, *, stt_concurrency: int,
                      tts_concurrency: int) -> CallLimit:
    """The largest number of live calls that keeps every call's latency near its unloaded figure."""
    bounds: list[tuple[float, str]] = [
        ((host.memory_bytes - MEMORY_RESERVE) * MEMORY_HEADROOM / CALL_MEMORY, "memory"),
    ]
    for profile in set(profiles):
        loop_cost = LOOP_CORE_PER_CALL.get(profile.vad, LOOP_CORE_PER_CALL["silero"])
        if profile.engine == "openai":
            loop_cost += OPENAI_RELAY_CORE_PER_CALL
        bounds.append((LOOP_HEADROOM / loop_cost, f"event loop ({profile.engine} engine, {profile.vad} VAD)"))
        if profile.engine == "local":
            bounds.append((host.cores * LOCAL_CPU_SHARE * TURN_INTERVAL_S / LOCAL_TURN_CORE_S, "local engine: CPU"))
            rate = min(stt_concurrency / STT_DECODE_S, tts_concurrency / TTS_REPLY_S)  # turns a second
            bounds.append((UTILISATION * TURN_INTERVAL_S * rate, "local engine: STT/TTS throughput"))
    value, bound = min(bounds)
    return CallLimit(max(1, math.floor(value)), bound)


def probe_host() -> Host:
    """This process's cores and available memory, cgroup (container) limits included."""
    return Host(cores=_usable_cores(), memory_bytes=_available_memory())


def _usable_cores() -> float:
    cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    quota = _read("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
    if quota and not quota.startswith("max"):
        limit, period = quota.split()[:2]
        cores = min(cores, int(limit) / int(period))
    else:  # cgroup v1
        v1_quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        v1_period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
        if v1_quota and v1_period and int(v1_quota) > 0:
            cores = min(cores, int(v1_quota) / int(v1_period))
    return max(cores, 0.1)


def _available_memory() -> int:
    available = _meminfo_available()
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read(limit_file), _read(usage_file)
        if limit and usage and limit.isdigit() and usage.isdigit():
            available = min(available, int(limit) - int(usage))
            break
    return max(available, 0)


def _meminfo_available() -> int:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62  # no /proc: memory does not bound the limit


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except (OSError, ValueError):
        return None
