"""Cost per call: OpenAI token prices (cached input billed once, at the cached rate) and local compute."""

from __future__ import annotations

import pytest

from voxgate.observability.cost import OPENAI_PRICES, CostModel


def test_openai_cached_tokens_are_not_billed_twice() -> None:
    usage = {"input_token_details": {"text_tokens": 1000, "audio_tokens": 2000, "cached_tokens": 1500},
             "output_token_details": {"text_tokens": 100, "audio_tokens": 400}}
    expected = (0 * OPENAI_PRICES["text_in"] + 1500 * OPENAI_PRICES["audio_in"] + 1500 * OPENAI_PRICES["cached_in"]
                + 100 * OPENAI_PRICES["text_out"] + 400 * OPENAI_PRICES["audio_out"]) / 1e6
    assert CostModel().call_cost("openai", 60, usage) == pytest.approx(expected, abs=1e-6)


def test_local_and_human_costs_scale_with_minutes() -> None:
    model = CostModel(human_usd_per_minute=0.40, cpu_usd_per_core_hour=0.04, local_cores_per_call=0.5)
    assert model.human_cost(180) == pytest.approx(1.20)
    assert model.call_cost("local", 3600, None) == pytest.approx(0.02)
