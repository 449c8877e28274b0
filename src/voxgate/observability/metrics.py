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
AGENT_PAUSES = Counter("voxgate_agent_pauses_total",
                       "The agent paused at the caller on the VAD's first trigger over it, by what it turned out "
                       "to be: barge_in, or played_on (too short for speech: a cough, a click, a noise)",
                       ["outcome"])
ESCALATIONS = Counter("voxgate_escalations_total", "Calls handed to a human")
RECORDING_BLOCKS_DROPPED = Counter("voxgate_recording_blocks_dropped_total",
                                   "Half-second blocks of call recordings dropped: the disk fell a minute behind")
PCI_SPOKEN_CARDS = Counter("voxgate_pci_spoken_cards_total",
                           "Card numbers callers said aloud (redacted before the model; told to use the keypad)")
PCI_TYPED_CARDS = Counter("voxgate_pci_typed_cards_total",
                          "Card numbers clients typed into conversation items (masked before any engine saw them)")
AUDIO_DROPPED = Counter("voxgate_audio_deltas_dropped_total", "Audio deltas dropped for a peer that did not read")
BUFFER_OVERFLOWS = Counter("voxgate_buffer_overflows_total", "Sessions closed because the peer stopped reading")
FIRST_RESPONSE_SECONDS = Histogram(
    "voxgate_first_response_seconds",
    "End of caller speech to the first agent audio (or text) sent",
    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0),
)
# The latency budget of each answered turn, stage by stage (observability/latency_budget.py), and barge-ins.
_BUDGET_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0)
TURN_STAGE_SECONDS = Histogram("voxgate_turn_stage_seconds",
                               "Latency budget of answered turns by stage (vad, transcript, first_token, "
                               "tts_first_audio, first_audio_sent, first_audio_heard)",
                               ["stage", "transport", "engine", "agent"], buckets=_BUDGET_BUCKETS)
TURN_SECONDS = Histogram("voxgate_turn_seconds",
                         "End of caller speech to the first agent audio heard at the caller (sent, where "
                         "the transport cannot tell)", ["transport", "engine", "agent"], buckets=_BUDGET_BUCKETS)
BARGE_IN_STOP_SECONDS = Histogram("voxgate_barge_in_stop_seconds",
                                  "Barge-in: start of the caller's speech to the agent's audio stopped at the caller",
                                  ["transport", "engine", "agent"], buckets=_BUDGET_BUCKETS)
CALL_OUTCOMES = Counter("voxgate_call_outcomes_total",
                        "Calls ended, by outcome (task_completed, escalated, no_task): task completion and escalation",
                        ["outcome"])
FALLTHROUGHS = Counter("voxgate_fallthroughs_total", "Turns answered with the agent's fallback line")
STT_SECONDS = Histogram("voxgate_stt_seconds", "Transcription time per user turn")
BRAIN_SECONDS = Histogram("voxgate_brain_seconds", "Local brain decision time",
                          buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25))
TTS_FIRST_CHUNK_SECONDS = Histogram("voxgate_tts_first_chunk_seconds", "Local TTS time to the first audio of a reply")
STORE_FAILURES = Counter("voxgate_store_failures_total",
                         "Call-record writes lost: the database refused them, or a call's write queue was full")
STORE_SLOW_WRITES = Counter("voxgate_store_slow_writes_total",
                            "Call-record writes not committed within store_write_timeout_s (they go on in the "
                            "background: slow, not lost)")

# Admission control and abuse limits (admission.py, control/rate_limit.py, server/listener.py).
CALLS_LIMIT = Gauge("voxgate_calls_limit", "Live calls the gateway takes at most (max_calls, or derived)")
CALLS_ADMITTED = Gauge("voxgate_calls_admitted", "Calls holding an admission ticket (live or about to connect)")
CALLS_REFUSED = Counter("voxgate_calls_refused_total", "New calls refused by admission control",
                        ["reason", "transport"])
RATE_LIMITED = Counter("voxgate_rate_limited_total", "Requests answered 429 by a rate limit", ["scope", "route"])
CONNECTIONS_CLOSED = Counter("voxgate_connections_closed_total",
                             "HTTP connections the gateway closed to protect itself", ["reason"])

# Phone carriers (Twilio, Telnyx): what went wrong on the wire, per carrier, without touching other calls.
CARRIER_MESSAGE_ERRORS = Counter("voxgate_carrier_message_errors_total",
                                 "Carrier media-stream messages rejected or dropped", ["carrier", "code"])
CARRIER_WEBHOOKS_REJECTED = Counter("voxgate_carrier_webhooks_rejected_total",
                                    "Carrier webhooks and media sockets refused", ["carrier", "reason"])
CARRIER_FRAMES_LOST = Counter("voxgate_carrier_frames_lost_total",
                              "Inbound media chunks that never arrived (filled with silence)", ["carrier"])
CARRIER_AUDIO_DROPPED = Counter("voxgate_carrier_audio_dropped_ms_total",
                                "Agent audio dropped because a call's playout buffer was full (ms)", ["carrier"])
CARRIER_CLEARS = Counter("voxgate_carrier_clears_total", "Playout cleared at the carrier (barge-in)", ["carrier"])
CARRIER_STALLS = Counter("voxgate_carrier_stalls_total", "Calls dropped because the carrier stopped reading",
                         ["carrier"])
CARRIER_API_REQUESTS = Counter("voxgate_carrier_api_requests_total", "Carrier REST commands, by result",
                               ["carrier", "action", "result"])
CARRIER_TICK_LATENESS = Histogram("voxgate_carrier_tick_lateness_seconds",
                                  "How late the shared 20 ms playout tick woke (event-loop load)",
                                  buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25))

GC_PAUSES = Histogram("voxgate_gc_pause_seconds",
                      "Cycle-collector pauses run on the audio beat (voxgate.garbage_collection), by generation",
                      ["generation"], buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1))

# OpenAI Realtime upstream (engine "openai"): connections, refusals, rate limits, failed responses.
UPSTREAM_CONNECTS = Counter("voxgate_upstream_connects_total", "Upstream connection attempts, by result",
                            ["result"])  # ok | refused | rate_limited | timeout | error | circuit_open
UPSTREAM_RATE_LIMITED = Counter("voxgate_upstream_rate_limited_total",
                                "Upstream rate limiting: 429 at the handshake or a rate-limit error", ["where"])
UPSTREAM_RATE_LIMIT_UPDATES = Counter("voxgate_upstream_rate_limit_updates_total",
                                      "rate_limits.updated events received from the upstream")
UPSTREAM_RATE_LIMIT_REMAINING = Gauge("voxgate_upstream_rate_limit_remaining",
                                      "Remaining requests or tokens in the last rate_limits.updated", ["name"])
UPSTREAM_FAILURES = Counter("voxgate_upstream_failures_total", "Upstream responses that failed, by reason",
                            ["reason"])  # lost | timeout | failed

# Phone systems over SIP (transports/sip_phone.py): calls, refusals and what the wire got wrong.
SIP_INVITES = Counter("voxgate_sip_invites_total", "Inbound SIP INVITEs, by outcome (answered, or why not)",
                      ["outcome"])
SIP_CALLS_ENDED = Counter("voxgate_sip_calls_ended_total", "SIP calls ended, by reason", ["reason"])
SIP_RTP_DROPPED = Counter("voxgate_sip_rtp_dropped_total", "Inbound RTP datagrams dropped, by reason", ["reason"])
# OpenAI's SIP call control served for our calls (control/webhook_delivery.py): each delivery attempt,
# `delivered` or `failed`, and `gave_up` once every attempt of one webhook failed
CALL_CONTROL_WEBHOOKS = Counter("voxgate_call_control_webhooks_total",
                                "realtime.call.incoming delivery attempts, by outcome", ["outcome"])
CASCADE_LLM_FIRST_TOKEN_SECONDS = Histogram("voxgate_cascade_llm_first_token_seconds",
                                            "Cascade engine: request to the LLM's first streamed token",
                                            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10))
SPEECH_REQUESTS = Counter("voxgate_speech_requests_total",
                          "Requests to /v1/audio/transcriptions and /v1/audio/speech, by result", ["result"])
SIP_TRANSFERS = Counter("voxgate_sip_transfers_total", "Transfers by REFER, by outcome", ["outcome"])
SIP_TRUNK_REGISTERED = Gauge("voxgate_sip_trunk_registered",
                             "1 while the gateway holds a registration with its SIP trunk, else 0")
SIP_REGISTRATIONS = Counter("voxgate_sip_registrations_total",
                            "REGISTER attempts with the trunk, by result (registered, failed, unregistered)",
                            ["result"])
SIP_OUTBOUND_CALLS = Counter("voxgate_sip_outbound_calls_total",
                             "Outbound SIP calls, by outcome (answered, busy, no_answer, failed)", ["outcome"])

# Agents behind OpenAI's SIP (transports/openai_sip.py): webhooks, and the call-control requests sent upstream.
OPENAI_SIP_WEBHOOKS = Counter("voxgate_openai_sip_webhooks_total",
                              "OpenAI webhooks received, by result: accepted, ignored (another event type or "
                              "a call already running), or why refused (bad_signature, missing_header, stale, "
                              "future, replayed, malformed, invalid_body, not_configured, not_ready)", ["result"])
OPENAI_SIP_REQUESTS = Counter("voxgate_openai_sip_requests_total",
                              "Call-control requests to the upstream (accept, refer, hangup), by result",
                              ["action", "result"])  # ok | error | timeout
OPENAI_SIP_SIDEBANDS = Counter("voxgate_openai_sip_sidebands_total",
                               "Sideband connections of calls behind OpenAI's SIP, by result "
                               "(attached, reattached, lost, ended, failed)", ["result"])
