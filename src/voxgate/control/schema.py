"""The operators' API as pydantic models: they validate what comes in, shape what goes out, and are the
source of `/openapi.json` (control/openapi.py), so the document cannot drift from the code."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Transport = Literal["realtime_ws", "webrtc", "twilio", "telnyx", "sip"]
CallStatus = Literal["active", "completed", "dropped", "transferred", "failed", "drained"]


class Window(BaseModel):
    """A time window and the slice of calls to look at (query parameters)."""

    model_config = ConfigDict(extra="ignore")

    since: datetime | None = Field(default=None, description="Calls started at or after this time (ISO 8601).")
    until: datetime | None = Field(default=None, description="Calls started before this time (ISO 8601).")
    agent: str | None = Field(default=None, max_length=200, description="Only this agent's calls.")
    transport: Transport | None = Field(default=None, description="Only calls on this transport.")

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        """A time without an offset is taken as UTC."""
        if value is None:
            return None
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # year 1 with an offset east of UTC has no UTC time
            raise ValueError("the time is out of range") from None


class CallsQuery(Window):
    """`GET /v1/calls`: the filters, then a page of at most `limit` calls from `cursor` on."""

    status: CallStatus | None = Field(default=None, description="Only calls with this status.")
    limit: int = Field(default=50, ge=1, le=500, description="Calls per page.")
    cursor: str | None = Field(default=None, max_length=200,
                               description="`next_cursor` of the previous page: the page after it.")


class HangupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="operator", max_length=200, description="Kept in the call record.")


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(min_length=1, max_length=200,
                        description="Where the call goes: a phone number or a SIP URI the carrier or PBX accepts.")
    reason: str = Field(default="operator", max_length=200, description="Kept in the call record.")


class CallAction(BaseModel):
    """A hang-up or transfer the live call has taken on (it happens once the agent's current reply ends)."""

    id: str
    status: Literal["hanging_up", "transferring"]


class Call(BaseModel):
    """One call's record, without its conversation."""

    id: str
    agent: str
    engine: str
    transport: str
    dialect: str | None
    caller: str | None
    started_at: str
    ended_at: str | None
    status: str
    outcome: str | None
    end_reason: str | None
    first_response_ms: float | None
    turns: int
    interruptions: int
    duration_s: float | None
    usage: dict[str, Any] | None
    cost_usd: float | None
    fallthroughs: int
    buffer_overflow: bool
    metadata: dict[str, Any] | None


class CallList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Call]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class CallItem(BaseModel):
    """A conversation item; text is redacted before it is stored."""

    item_id: str
    seq: int
    role: str | None
    type: str
    text: str | None
    audio_ms: int | None
    truncated_at_ms: int | None
    status: str | None
    created_at: str


class ToolCall(BaseModel):
    tool_call_id: str
    name: str
    side: str
    arguments: Any
    status: str
    output: str | None
    duration_ms: float | None
    created_at: str


class TurnLatency(BaseModel):
    """One answered turn's latency budget: ms per stage (null: the stage did not happen)."""

    seq: int
    at: str
    total_ms: float | None
    heard: bool | None
    stages: dict[str, float | None]


class BargeIn(BaseModel):
    seq: int
    at: str
    stop_ms: float | None = Field(description="Start of the caller's speech to the agent silenced at the caller.")


class CallDetail(Call):
    """The call with its redacted transcript, tool calls, latency per turn, barge-ins, cost and outcome."""

    items: list[CallItem]
    tool_calls: list[ToolCall]
    latency: list[TurnLatency]
    barge_ins: list[BargeIn]


class DialingCall(BaseModel):
    """An outbound call still ringing: it has no record yet."""

    id: str
    agent: str
    transport: str
    caller: str
    started_at: str
    ended_at: None
    status: str
    outcome: None
    metadata: dict[str, Any]


class Spread(BaseModel):
    count: int
    p50: float | None
    p95: float | None
    p99: float | None


class Histogram(BaseModel):
    """Answered turns by total latency: `counts[i]` from `bins_from_ms[i]` up to the next bin (the last open)."""

    bins_from_ms: list[int]
    counts: list[int]


class TargetCheck(BaseModel):
    value: float | None
    target: float | list[float]
    met: bool | None = Field(description="null: no calls to judge by.")


class Stats(BaseModel):
    """The KPIs over a window of calls, each with its target (from config) and whether it is met."""

    since: str | None
    until: str | None
    agent: str | None
    transport: str | None
    calls: int
    active: int
    by_status: dict[str, int]
    drop_rate: float | None
    task_completion_rate: float | None
    escalation_rate: float | None
    buffer_overflows: int
    average_handle_time_s: float | None
    tool_calls: int
    tool_success_rate: float | None
    turns: int
    fallthrough_rate: float | None
    barge_ins: int
    interruption_success_rate: float | None
    first_response_ms: Spread
    latency_histogram: Histogram
    latency_budget_ms: dict[str, Spread]
    targets: dict[str, TargetCheck]


class CostTally(BaseModel):
    calls: int
    minutes: float
    cost_usd: float
    cost_per_call_usd: float | None
    cost_per_minute_usd: float | None
    human_cost_usd: float
    savings_usd: float
    cost_share_of_human: float | None


class CostReport(BaseModel):
    """Cost in money over a window of finished calls, against a human agent's loaded cost per minute."""

    total: CostTally
    by_agent: dict[str, CostTally]
    by_transport: dict[str, CostTally]
    by_day: dict[str, CostTally]
    human_per_minute_usd: float
    saving_per_minute_usd: float | None


class ProblemDetail(BaseModel):
    type: str
    code: str
    message: str
    param: str | None


class Problem(BaseModel):
    """An error, in OpenAI's REST shape."""

    error: ProblemDetail
