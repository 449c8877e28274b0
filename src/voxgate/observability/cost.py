"""Cost per call and per minute in money, from recorded usage and the price table, against a human agent."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from voxgate.config import Prices

# Engines that bill per token upstream; every other engine runs on the gateway's own compute.
TOKEN_ENGINES = frozenset({"openai"})


@dataclass(frozen=True)
class CostModel:
    prices: Prices = field(default_factory=Prices)

    def call_cost(self, engine: str, duration_s: float, usage: Mapping[str, Any] | None,
                  transport: str = "") -> float:
        """USD for one call: the engine's tokens (or compute per minute) and the transport's minutes."""
        minutes = max(0.0, duration_s) / 60.0
        engine_usd = (self.token_cost(usage or {}) if engine in TOKEN_ENGINES
                      else minutes * self.prices.local_compute_per_minute)
        return round(engine_usd + minutes * self.prices.transport_per_minute.get(transport, 0.0), 6)

    def token_cost(self, usage: Mapping[str, Any]) -> float:
        """OpenAI usage in USD. Cached tokens are part of the input counts, billed at the cached rate instead."""
        p = self.prices
        inp = usage.get("input_token_details") or {}
        out = usage.get("output_token_details") or {}
        text_in, audio_in = inp.get("text_tokens", 0), inp.get("audio_tokens", 0)
        cached = inp.get("cached_tokens", 0)
        split = inp.get("cached_tokens_details") or {}
        cached_text = split.get("text_tokens", min(cached, text_in))  # without the split: text first
        cached_audio = split.get("audio_tokens", min(cached - cached_text, audio_in))
        usd = ((text_in - cached_text) * p.openai_text_in + cached_text * p.openai_cached_text_in
               + (audio_in - cached_audio) * p.openai_audio_in + cached_audio * p.openai_cached_audio_in
               + out.get("text_tokens", 0) * p.openai_text_out + out.get("audio_tokens", 0) * p.openai_audio_out)
        return usd / 1e6

    def human_cost(self, duration_s: float) -> float:
        return round(duration_s / 60.0 * self.prices.human_per_minute, 6)


@dataclass
class CostTally:
    """Calls, minutes and dollars summed, with what a human would have cost for the same minutes."""

    calls: int = 0
    minutes: float = 0.0
    usd: float = 0.0
    human_usd: float = 0.0

    def add(self, duration_s: float, usd: float, human_usd: float) -> None:
        self.calls += 1
        self.minutes += duration_s / 60.0
        self.usd += usd
        self.human_usd += human_usd

    def view(self) -> dict[str, Any]:
        return {"calls": self.calls, "minutes": round(self.minutes, 2), "cost_usd": round(self.usd, 4),
                "cost_per_call_usd": round(self.usd / self.calls, 4) if self.calls else None,
                "cost_per_minute_usd": round(self.usd / self.minutes, 4) if self.minutes else None,
                "human_cost_usd": round(self.human_usd, 2), "savings_usd": round(self.human_usd - self.usd, 2),
                "cost_share_of_human": round(self.usd / self.human_usd, 4) if self.human_usd else None}


def cost_report(calls: Iterable[Mapping[str, Any]], model: CostModel) -> dict[str, Any]:
    """Totals, per agent, per transport and per day, and break-even against a human agent, over finished call
    records (`duration_s`, `cost_usd`, `agent`, `transport`). A record without a stored cost (written before
    costs were kept) is priced now from its usage."""
    total = CostTally()
    by_agent: dict[str, CostTally] = {}
    by_transport: dict[str, CostTally] = {}
    by_day: dict[str, CostTally] = {}
    for call in calls:
        duration = float(call.get("duration_s") or 0.0)
        usd = call.get("cost_usd")
        if usd is None:
            usd = model.call_cost(call.get("engine", ""), duration, call.get("usage"), call.get("transport", ""))
        human = model.human_cost(duration)
        for tally in (total, by_agent.setdefault(call["agent"], CostTally()),
                      by_transport.setdefault(call["transport"], CostTally()),
                      by_day.setdefault(str(call.get("started_at") or "")[:10], CostTally())):
            tally.add(duration, float(usd), human)
    per_minute = total.usd / total.minutes if total.minutes else None
    human_rate = model.prices.human_per_minute
    return {
        "total": total.view(),
        "by_agent": {name: tally.view() for name, tally in sorted(by_agent.items())},
        "by_transport": {name: tally.view() for name, tally in sorted(by_transport.items())},
        "by_day": {day: tally.view() for day, tally in sorted(by_day.items())},  # UTC dates the calls started
        "human_per_minute_usd": human_rate,
        # Below the human rate every minute saves money; at or above it the gateway never breaks even.
        "saving_per_minute_usd": round(human_rate - per_minute, 4) if per_minute is not None else None,
    }


def cost_table(report: dict[str, Any], window: str) -> str:
    """`cost_report` as `voxgate report cost` prints it: totals, per agent, per transport, break-even."""
    head = f"{'':<22}{'calls':>8}{'minutes':>11}{'cost $':>11}{'$/call':>9}{'$/min':>8}{'human $':>11}{'saved $':>11}"

    def row(name: str, tally: dict[str, Any]) -> str:
        per_call, per_min = tally["cost_per_call_usd"], tally["cost_per_minute_usd"]
        return (f"{name:<22}{tally['calls']:>8,}{tally['minutes']:>11,.1f}{tally['cost_usd']:>11,.2f}"
                f"{per_call if per_call is not None else 0:>9.4f}{per_min if per_min is not None else 0:>8.4f}"
                f"{tally['human_cost_usd']:>11,.2f}{tally['savings_usd']:>11,.2f}")

    lines = [f"voxgate cost, {window}", head, row("total", report["total"])]
    for title, key in (("agent", "by_agent"), ("transport", "by_transport")):
        lines.append(f"by {title}:")
        lines += [row(f"  {name}", tally) for name, tally in report[key].items()]
    total, human = report["total"], report["human_per_minute_usd"]
    saving = report["saving_per_minute_usd"]
    if saving is None:
        lines.append(f"break-even: no finished calls (a human agent costs ${human:.2f}/min)")
    elif saving > 0:
        lines.append(f"break-even: from the first minute. A human agent at ${human:.2f}/min would have cost "
                     f"${total['human_cost_usd']:,.2f} for these minutes; the gateway cost ${total['cost_usd']:,.2f} "
                     f"(${total['cost_per_minute_usd']:.4f}/min), saving ${saving:.4f} a minute.")
    else:
        lines.append(f"break-even: never. The gateway costs ${total['cost_per_minute_usd']:.4f}/min, a human "
                     f"agent ${human:.2f}/min.")
    return "\n".join(lines)
