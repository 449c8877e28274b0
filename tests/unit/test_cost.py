"""Cost per call: OpenAI token prices (cached input billed once, at the cached rate), local compute, the
transport's minutes from the price table, and the cost report against a human agent."""

from __future__ import annotations

import pytest

from voxgate.config import Prices
from voxgate.observability.cost import CostModel, cost_report


def test_openai_cached_tokens_are_not_billed_twice() -> None:
    p = Prices()
    usage = {"input_token_details": {"text_tokens": 1000, "audio_tokens": 2000, "cached_tokens": 1500},
             "output_token_details": {"text_tokens": 100, "audio_tokens": 400}}
    # without the split, cached tokens count as text first: 1000 text + 500 audio
    expected = (1000 * p.openai_cached_text_in + 1500 * p.openai_audio_in + 500 * p.openai_cached_audio_in
                + 100 * p.openai_text_out + 400 * p.openai_audio_out) / 1e6
    assert CostModel().call_cost("openai", 60, usage) == pytest.approx(expected, abs=1e-6)
    split = {"input_token_details": {"text_tokens": 1000, "audio_tokens": 2000, "cached_tokens": 1500,
                                     "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 1500}}}
    assert CostModel().token_cost(split) == pytest.approx(
        (1000 * p.openai_text_in + 500 * p.openai_audio_in + 1500 * p.openai_cached_audio_in) / 1e6)


def test_local_transport_and_human_costs_scale_with_minutes() -> None:
    model = CostModel(Prices(human_per_minute=0.40, local_compute_per_minute=0.001,
                             transport_per_minute={"sip": 0.004}))
    assert model.human_cost(180) == pytest.approx(1.20)
    assert model.call_cost("local", 3600, None) == pytest.approx(0.06)
    assert model.call_cost("local", 3600, None, "sip") == pytest.approx(0.06 + 0.24)
    assert model.call_cost("echo", 60, None, "webrtc") == pytest.approx(0.001)  # no rate: free minutes


def test_a_scripted_month_breaks_even_against_a_human() -> None:
    """The seed's example: 10,000 minutes at $0.40 a minute is $4,000 of human time."""
    model = CostModel(Prices(human_per_minute=0.40))
    calls = [{"agent": "acme" if n % 2 else "billing", "transport": "sip" if n % 4 else "twilio",
              "engine": "local", "duration_s": 120.0, "cost_usd": 0.02, "usage": None} for n in range(5000)]
    report = cost_report(calls, model)
    total = report["total"]
    assert (total["calls"], total["minutes"], total["human_cost_usd"]) == (5000, 10_000.0, 4000.0)
    assert total["cost_usd"] == pytest.approx(100.0) and total["cost_per_minute_usd"] == pytest.approx(0.01)
    assert total["savings_usd"] == pytest.approx(3900.0) and report["saving_per_minute_usd"] == pytest.approx(0.39)
    assert report["by_agent"]["acme"]["calls"] == 2500 and report["by_transport"]["twilio"]["calls"] == 1250
    priced_now = cost_report([{**calls[0], "cost_usd": None, "transport": "sip"}], model)  # stored before costs
    assert priced_now["total"]["cost_usd"] == pytest.approx(model.call_cost("local", 120.0, None, "sip"), abs=1e-4)


def test_prices_and_targets_are_settings_shown_and_set_one_field_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    from voxgate.config import load_settings

    monkeypatch.setenv("VOXGATE_PRICES__HUMAN_PER_MINUTE", "0.35")
    monkeypatch.setenv("VOXGATE_KPI_TARGETS__DROP_RATE_MAX", "0.02")
    settings = load_settings()
    assert (settings.prices.human_per_minute, settings.prices.openai_audio_in) == (0.35, 32.0)
    assert (settings.kpi_targets.drop_rate_max, settings.kpi_targets.first_response_p95_ms) == (0.02, 1200.0)
    shown = settings.shown()
    assert shown["prices"]["transport_per_minute"]["sip"] == 0.004 and shown["kpi_targets"]["drop_rate_max"] == 0.02
