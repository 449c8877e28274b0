"""Prometheus metrics: what operators track (sessions, latency, barge-in, tools, drops)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SESSIONS_STARTED = Counter("voxgate_sessions_total", "Sessions started", ["transport"])
SESSIONS_ACTIVE = Gauge("voxgate_sessions_active", "Sessions in progress")
SESSIONS_ENDED = Counter("voxgate_sessions_ended_total", "Sessions ended, by final status", ["status"])
EVENTS = Counter("voxgate_events_total", "Realtime events", ["direction", "type"])
ERRORS = Counter("voxgate_errors_total", "Error events sent to clients", ["code"])
RESPONSES = Counter("voxgate_responses_total", "Responses, by final status", ["status"])
TOOL_CALLS = Counter("voxgate_tool_calls_total", "Gateway tool calls", ["tool", "status"])
TOOL_SECONDS = Histogram("voxgate_tool_seconds", "Gateway tool call duration")
INTERRUPTIONS = Counter("voxgate_interruptions_total", "Barge-ins (caller spoke over the agent)")
ESCALATIONS = Counter("voxgate_escalations_total", "Calls handed to a human")
AUDIO_DROPPED = Counter("voxgate_audio_deltas_dropped_total", "Audio deltas dropped for a peer that did not read")
BUFFER_OVERFLOWS = Counter("voxgate_buffer_overflows_total", "Sessions closed because the peer stopped reading")
FIRST_RESPONSE_SECONDS = Histogram(
    "voxgate_first_response_seconds",
    "End of caller speech to the first agent audio (or text) sent",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0),
)
STT_SECONDS = Histogram("voxgate_stt_seconds", "Transcription time per user turn")
STORE_FAILURES = Counter("voxgate_store_failures_total", "Call-record writes that failed")
