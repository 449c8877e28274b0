"""Cost per call and per minute, against what a human agent would cost for the same minutes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# USD per 1M tokens (gpt-realtime list prices; configurable per deployment in the future).
OPENAI_PRICES = {
    "text_in": 4.0, "text_out": 16.0, "audio_in": 32.0, "audio_out": 64.0, "cached_in": 0.4,
}


@dataclass(frozen=True)
class CostModel:
    human_usd_per_minute: float = 0.40  # a loaded call-centre agent
    cpu_usd_per_core_hour: float = 0.04  # what a local-engine call costs in compute
    local_cores_per_call: float = 0.5  # measured by bench/turn_latency.py on 2 cores

    def call_cost(self, engine: str, duration_s: float, usage: dict[str, Any] | None) -> float:
        if engine == "openai" and usage:
            inp = usage.get("input_token_details") or {}
            out = usage.get("output_token_details") or {}
            # Cached tokens are part of the input counts, billed at the cached rate instead.
            cached = inp.get("cached_tokens", 0)
            text_in = inp.get("text_tokens", 0)
            audio_in = inp.get("audio_tokens", 0)
            cached_text = min(cached, text_in)
            cached_audio = min(cached - cached_text, audio_in)
            usd = ((text_in - cached_text) * OPENAI_PRICES["text_in"]
                   + (audio_in - cached_audio) * OPENAI_PRICES["audio_in"]
                   + cached * OPENAI_PRICES["cached_in"]
                   + out.get("text_tokens", 0) * OPENAI_PRICES["text_out"]
                   + out.get("audio_tokens", 0) * OPENAI_PRICES["audio_out"]) / 1e6
            return round(usd, 6)
        return round(duration_s / 3600.0 * self.cpu_usd_per_core_hour * self.local_cores_per_call, 6)

    def human_cost(self, duration_s: float) -> float:
        return round(duration_s / 60.0 * self.human_usd_per_minute, 6)
