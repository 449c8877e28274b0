"""Gateway settings: defaults, then a YAML file, then ``VOXGATE_*`` environment variables."""

from __future__ import annotations

import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from voxgate.control.incoming_call import AgentRoute
from voxgate.hosts import is_loopback, origin_of
from voxgate.server.forwarded import TrustedProxies
from voxgate.sip.registration import trunk_uri

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_AGENTS_DIR = REPO_ROOT / "examples" / "agents"


DigestAlgorithm = Literal["SHA-256", "MD5"]
DIGEST_ALGORITHMS: tuple[DigestAlgorithm, ...] = ("SHA-256", "MD5")  # best first (RFC 8760)


class KpiTargets(BaseModel):
    """What the operators' KPIs are held to (GET /v1/stats says whether each is met); the seed playbook's."""

    first_response_p95_ms: float = Field(default=1200.0, gt=0)  # end of speech to first audio, 95th percentile
    interruption_stop_ms: float = Field(default=500.0, gt=0)  # a barge-in silences the agent within this...
    interruption_success_min: float = Field(default=0.95, ge=0, le=1)  # ...this often
    task_completion_min: float = Field(default=0.80, ge=0, le=1)
    drop_rate_max: float = Field(default=0.01, ge=0, le=1)  # calls ended by an error or the transport's loss
    buffer_overflows_max: int = Field(default=0, ge=0)
    tool_success_min: float = Field(default=0.98, ge=0, le=1)
    fallthrough_rate_max: float = Field(default=0.05, ge=0, le=1)  # turns answered "I didn't catch that"
    escalation_rate_min: float = Field(default=0.10, ge=0, le=1)  # fewer: callers who need a person may
    escalation_rate_max: float = Field(default=0.25, ge=0, le=1)  # not reach one; more: the agent does too little


class Prices(BaseModel):
    """What a call costs in USD (observability/cost.py). List prices as of late 2025: set your own."""

    # OpenAI gpt-realtime, per 1M tokens (gpt-realtime-mini: text 0.6/2.4, audio 10/20, cached 0.06/0.3).
    openai_text_in: float = Field(default=4.0, ge=0)
    openai_cached_text_in: float = Field(default=0.4, ge=0)
    openai_text_out: float = Field(default=16.0, ge=0)
    openai_audio_in: float = Field(default=32.0, ge=0)
    openai_cached_audio_in: float = Field(default=0.4, ge=0)
    openai_audio_out: float = Field(default=64.0, ge=0)
    # Per minute of call, by transport: carrier voice plus media streams (Twilio 0.0085 + 0.004, Telnyx
    # 0.0055 + 0.002), a SIP trunk's inbound rate; browsers and WebSocket clients cost the gateway nothing.
    transport_per_minute: dict[str, float] = Field(default_factory=lambda: {
        "twilio": 0.0125, "telnyx": 0.0075, "sip": 0.004, "webrtc": 0.0, "realtime_ws": 0.0})
    # The local and cascade engines' own compute per call minute: bench/turn_latency.py measures half a core
    # per live call, at $0.04 per core-hour (a cloud vCPU).
    local_compute_per_minute: float = Field(default=0.5 * 0.04 / 60, ge=0)
    # A loaded human agent per minute, the break-even baseline (the seed's example: $0.40).
    human_per_minute: float = Field(default=0.40, ge=0)


class UnsafeSettingsError(ValueError):
    """Settings that would open the gateway wider than its operator can have meant; the message says what to do."""


class CallControlRoute(BaseModel):
    """Who answers the SIP calls of a route (`sip_call_control`): the gateway's agent, or an app through
    OpenAI's SIP call control (a signed `realtime.call.incoming` webhook to `url`, then the app's accept,
    reject, refer and hangup on /v1/realtime/calls/{call_id}/...). docs/openai.md, "SIP"."""

    model_config = ConfigDict(extra="forbid")

    call_control: Literal["webhook", "gateway"] = "webhook"
    # The app's webhook URL (http or https). Configuration only, never taken from a request: the gateway
    # posts nowhere else.
    url: str = ""
    answer_timeout_s: float = Field(default=10.0, gt=0, le=300)  # ringing this long with no word from the app...
    fallback: Literal["agent", "reject"] = "agent"  # ... then the route's agent answers, or the call is refused
    fallback_status: int = Field(default=480, ge=400, le=699)  # with this code (480 Temporarily Unavailable)

    @model_validator(mode="after")
    def _webhook_has_url(self) -> CallControlRoute:
        if self.call_control == "webhook":
            parts = urlsplit(self.url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"call_control webhook needs the app's http(s) url; not {self.url!r}")
        return self


class Settings(BaseSettings):
    """Every port, timeout, bound and model choice, with a sane default."""

    model_config = SettingsConfigDict(env_prefix="VOXGATE_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""  # what carriers and browsers use to reach us; derived from host/port when empty
    # Pins the wall clock at start-up to this local time, which then runs on (reproducing a call on the day
    # it happened; tests). Empty: the machine's clock. Relative dates, opening hours and demo data read it.
    clock_start: datetime | None = None
    # The loopback demo's conveniences: the console page mints keys without an API key (same-origin only),
    # loopback origins pass CORS and WebSocket Origin checks, unsigned carrier webhooks pass when no secret
    # is set. A gateway bound beyond loopback or given a public_url refuses to start with it on...
    dev_mode: bool = True
    # ...unless this says so (and the log says it loudly at start).
    allow_dev_mode_beyond_loopback: bool = False

    # Comma-separated list of accepted client API keys. Empty: `serve` mints one and stores its hash.
    api_keys: SecretStr = SecretStr("")
    # Origins whose pages may call the gateway (CORS) and open its WebSockets (Origin check), besides the
    # gateway's own origin; "*" for any. Dev mode adds the loopback origins.
    cors_origins: list[str] = Field(default_factory=list)
    # Host header values accepted besides loopback names, IP literals, `host` and the public_url host: a
    # name no one configured is DNS rebinding. "*" turns the check off.
    allowed_hosts: list[str] = Field(default_factory=list)
    metrics_public: bool = False  # serve /metrics without an API key (a scraper on a private network)

    # TLS for `serve` (clients that insist on wss://, the npm openai SDK among them): a certificate and its
    # key in PEM, or a self-signed localhost certificate made once in data_dir.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_self_signed: bool = False
    data_dir: Path = Path(".voxgate")  # files the gateway makes for itself (the self-signed certificate)

    database_url: str = "sqlite+aiosqlite:///./voxgate.db"
    # Zero data retention for every agent (an agent can also ask for it alone, `zero_retention: true`): no
    # audio, transcript, tool argument or tool result is stored or logged, only counters and timings.
    zero_retention: bool = False
    agents_dir: Path = DEFAULT_AGENTS_DIR
    default_agent: str = "acme"
    engine: Literal["local", "echo", "openai", "cascade"] = "local"

    # Realtime protocol limits
    max_message_bytes: int = 16 * 1024 * 1024  # OpenAI accepts 15 MiB of base64 per append
    # Text one conversation item may hold (texts, transcripts, arguments, output together); larger items are
    # refused with `string_above_max_length`. 512 Ki characters is about the 128k-token context of OpenAI's
    # largest Realtime model: no longer item could be of use, and each is kept, redacted and stored whole.
    max_item_text_chars: int = Field(default=512 * 1024, ge=1)
    outbound_queue_events: int = 512  # per session; audio deltas beyond it are dropped and counted
    session_max_seconds: int = 60 * 60
    max_input_buffer_seconds: int = 120  # a monologue longer than this is committed in pieces
    audio_lead_ms: int = 1500  # how far agent audio may run ahead of real time (barge-in cuts the rest)

    # Admission control (admission.py, capacity.py): a call beyond these is refused, never slowed down
    max_calls: int = Field(default=0, ge=0)  # live calls at most; 0: derived at start from cores and memory
    max_calls_per_key: int = Field(default=0, ge=0)  # live calls one API key may hold; 0: max_calls only
    # Rate limits on the routes that open calls or mint keys (token buckets; a rate of 0 turns one off)
    rate_limit_per_key: float = Field(default=20.0, ge=0)  # requests a second per key presented
    rate_limit_per_key_burst: int = Field(default=100, ge=1)
    rate_limit_per_source: float = Field(default=20.0, ge=0)  # requests a second per client address
    rate_limit_per_source_burst: int = Field(default=100, ge=1)

    # Connections (server/listener.py). The soft open-file limit is raised to the hard one at start.
    max_connections: int = Field(default=4096, ge=1)  # open at once; lowered to fit the open-file limit
    http_request_timeout_s: float = Field(default=10.0, gt=0)  # a request must arrive whole within this
    http_keep_alive_s: int = Field(default=5, ge=1)  # an idle keep-alive connection is closed after this
    ws_idle_timeout_s: float = Field(default=300.0, ge=0)  # a Realtime WebSocket silent this long is closed; 0: never
    # Every WebSocket is pinged this often; a peer that has not answered by the next ping is dropped (a
    # half-open TCP connection would otherwise hold its call until the session's own limits). 0: no pings.
    ws_ping_interval_s: float = Field(default=20.0, ge=0)
    # Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed: comma-separated addresses or
    # networks, "*" for any. Rate limits and logs see the client's address, not the proxy's. The
    # FORWARDED_ALLOW_IPS variable (uvicorn's name) is read too.
    forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        validation_alias=AliasChoices("forwarded_allow_ips", "VOXGATE_FORWARDED_ALLOW_IPS", "FORWARDED_ALLOW_IPS"))

    # Drain on SIGTERM, and crash recovery
    drain_timeout_s: float = Field(default=30.0, ge=0)  # live calls may end on their own for this long
    drain_goodbye_timeout_s: float = Field(default=15.0, ge=0)  # then the goodbye or hand-over gets this long
    # This gateway's name in call records; empty: "<host name>:<port>". At start, calls this node left
    # `active` (a crash) are closed as `dropped`. Keep it stable across restarts of one node.
    node_id: str = ""

    # Several gateways as one (cluster/): a Redis URL (redis://[:password@]host:port/db, rediss:// for TLS)
    # shares rate limits and the registry of live calls, and carries call control to the node holding a
    # call. Empty: one node, all of it in this process. The nodes must share database_url too (PostgreSQL).
    redis_url: str = ""
    # Each node says it is alive this often; one silent for three beats is lost: its calls are closed as
    # `dropped` by a survivor, and control actions for them are answered as for unknown calls.
    cluster_heartbeat_s: float = Field(default=2.0, gt=0)
    # How long a control action relayed to the node holding the call may take before the caller gets 503,
    # and how long any one Redis command may take (a stalled Redis never holds a call's set-up longer).
    cluster_relay_timeout_s: float = Field(default=5.0, gt=0)
    # HAProxy's agent-check: a TCP port answering this node's spare capacity ("up 40%", "drain" while
    # draining) so the balancer weighs nodes by how idle they are. 0: off.
    load_report_port: int = Field(default=0, ge=0, le=65535)

    # Local engine
    # The Whisper model: "" is tiny.en from its package; else a CTranslate2 Whisper model directory an
    # operator placed on disk (base.en, small.en, distil-whisper): the lever for noisy real phone lines.
    stt_model: str = ""
    stt_threads: int = 2
    tts_voice: str = "joe"
    tts_max_concurrency: int = 1
    # Piper's natural variation between renderings of the same text. Off: every rendering is identical,
    # for tests and demos that compare what was said (a varied rendering is now and then misheard by STT).
    tts_variation: bool = True
    stt_max_concurrency: int = 1
    # voxgate as a speech service (speech_service.py: /v1/audio/transcriptions and /v1/audio/speech with an
    # API key): requests waiting for the models beyond this get 503; uploads and their audio are bounded.
    speech_max_waiting: int = Field(default=8, ge=1)
    speech_max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)  # OpenAI's 25 MB
    speech_max_audio_s: float = Field(default=600.0, gt=0)

    # Tools
    tool_timeout_s: float = 5.0
    tool_max_output_bytes: int = 4096

    # Browser calls (ephemeral keys, WebRTC)
    ephemeral_ttl_s: int = 60  # a key a browser holds lives this long unless the minting server asks otherwise
    ephemeral_max_ttl_s: int = 600
    key_purge_interval_s: float = Field(default=60.0, gt=0)  # expired keys (spent browser keys, mostly) go this often
    # Call recordings (agents with `recording.enabled`) are written here as the call goes, one file per call
    # named by its id. Empty: `data_dir`/recordings.
    recordings_dir: Path | None = None
    # How often the retention sweeper deletes recordings and call records past their agent's retention.
    retention_sweep_interval_s: float = Field(default=300.0, gt=0)
    # RTCIceServer dicts ({"urls": ..., "username": ..., "credential": ...}); empty on a LAN, STUN/TURN elsewhere
    ice_servers: list[dict[str, Any]] = Field(default_factory=list)
    webrtc_connect_timeout_s: float = 15.0  # a peer that has not connected by then is dropped
    # Addresses browsers reach the gateway's media on, offered as its ICE candidates (the gateway is an
    # ICE-lite agent: behind a 1:1 NAT, name the public address). Empty: every interface's IPv4 address,
    # loopback excluded.
    webrtc_host_addresses: list[str] = Field(default_factory=list)
    # UDP ports browser calls take for their media, one per call; 0-0: ephemeral ports (the kernel's pick)
    webrtc_port_min: int = Field(default=0, ge=0, le=65535)
    webrtc_port_max: int = Field(default=0, ge=0, le=65535)
    webrtc_playout_buffer_s: float = 60.0  # agent audio queued on a call's track; beyond it, dropped and counted

    # Phone carriers (Twilio Media Streams, Telnyx media streaming)
    # Webhooks and media-socket upgrades must be signed; with this off, or in dev mode with no secret set,
    # unsigned ones are let through (a secret that is set is always checked while this is on).
    verify_carrier_signatures: bool = True
    twilio_auth_token: SecretStr = SecretStr("")  # signs webhooks; with the AccountSid, authenticates REST
    twilio_api_base: str = "https://api.twilio.com"
    telnyx_api_key: SecretStr = SecretStr("")  # Bearer key for call commands
    telnyx_public_key: str = ""  # base64 Ed25519 public key from the portal, checks webhook signatures
    telnyx_api_base: str = "https://api.telnyx.com"
    telnyx_codec: Literal["PCMU", "PCMA", "L16"] = "PCMU"  # asked of Telnyx both ways; L16 at telnyx_sample_rate
    telnyx_sample_rate: int = 16000  # for L16 only (G.711 is 8000)
    carrier_lead_frames: int = 2  # 20 ms frames sent ahead of real time, so the carrier never starves
    carrier_mark_interval_ms: int = 100  # how often a mark asks "heard up to here?"; the truncation grain
    carrier_playout_buffer_s: float = 60.0  # agent audio queued per call; beyond it, dropped and counted
    carrier_stall_timeout_s: float = 5.0  # a carrier that has not taken a frame for this long is hung up on
    carrier_api_timeout_s: float = 5.0
    # Every carrier media socket must present a single-use token that the (signed) webhook minted for its
    # call, whatever dev_mode and verify_carrier_signatures say: the webhook's answer to the stream's `start`.
    carrier_media_token_ttl_s: float = 60.0
    carrier_replay_cache_max: int = 100_000  # entries per cache: live media tokens, Twilio CallSids, Telnyx events
    twilio_replay_window_s: float = 3600.0  # a voice webhook for a CallSid answered this recently is a replay
    telnyx_webhook_tolerance_s: float = 300.0  # a signed Telnyx webhook older than this is refused as stale
    telnyx_webhook_max_future_s: float = 30.0  # ... and one stamped further ahead of our clock than this
    # Bytes held for a carrier that stops reading, in the kernel and in the process each (~1 s of audio):
    # small, so a stall is noticed in seconds, not after the kernel has buffered minutes of audio.
    carrier_send_buffer_bytes: int = 16384
    # Phone systems over SIP (transports/sip_phone.py, docs/sip.md): a SIP user agent on UDP and TCP (and TLS).
    sip_port: int = Field(default=5060, ge=0, le=65535)  # UDP and TCP; 0: no SIP door
    sip_host: str = ""  # the address SIP and RTP listen on; empty: `host`
    # The address put in Contact, Via and SDP (what the PBX or trunk reaches us at); empty: the listen
    # address. Set it when listening on 0.0.0.0 or behind NAT.
    sip_public_address: str = ""
    # Who may place calls without digest authentication: addresses or networks (CIDR). Empty: loopback
    # only. With sip_digest_password set, everyone else must authenticate; without it, they get 403.
    sip_allowed_sources: list[str] = Field(default_factory=list)
    sip_digest_user: str = ""  # the user name a trunk or PBX authenticates as (any, when empty)
    sip_digest_password: SecretStr = SecretStr("")
    sip_digest_realm: str = "voxgate"
    # Challenges offered, best first (RFC 8760). A client that reads only the first one and knows only
    # MD5 (SIPp, older PBXs) needs ["MD5"].
    sip_digest_algorithms: list[DigestAlgorithm] = Field(default_factory=lambda: list(DIGEST_ALGORITHMS),
                                                         min_length=1)
    # Which agent takes a call: request-URI user or called number (To user) -> agent name; no match: the
    # default agent. A header named by sip_agent_header, when present, names the agent directly.
    sip_routes: dict[str, str] = Field(default_factory=dict)
    sip_agent_header: str = ""  # e.g. "X-Voxgate-Agent"; empty: routing by URI and number only
    # Answered in this order of preference: PCMU, PCMA, and "opus" (RFC 7587, 48 kHz) where a PBX offers it.
    sip_codecs: list[str] = Field(default_factory=lambda: ["PCMU", "PCMA"])
    # RFC 3389 comfort noise on G.711 lines whose far end lists CN: the agent's silence goes as a CN packet
    # where it starts and every 5 s after, not a packet every 20 ms (a listening call sends a third of the
    # packets). False: CN is neither offered nor accepted, and silence is sent as audio.
    sip_comfort_noise: bool = True
    sip_ring_ms: int = Field(default=0, ge=0, le=60_000)  # 180 Ringing this long before the 200 OK
    sip_media_timeout_s: float = Field(default=30.0, gt=0)  # a call with no RTP for this long is hung up (not on hold)
    sip_transfer_timeout_s: float = Field(default=30.0, gt=0)  # a REFER whose outcome is not known by then failed
    # SDES-SRTP (RFC 4568): "optional" takes an RTP/SAVP offer with a=crypto (and plain RTP too), "required"
    # answers plain RTP offers 488, "off" refuses SRTP offers. Keys never reach logs or call records.
    sip_srtp: Literal["optional", "required", "off"] = "optional"
    # The UDP ports calls' media use: RTP on even ports, RTCP on the odd one above, so a firewall or NAT
    # forwards exactly this range (the PBX convention, as Asterisk's default: 5,000 concurrent calls).
    # Both 0: ephemeral ports from the kernel. A call that finds no free pair is answered 503.
    sip_rtp_port_min: int = Field(default=10000, ge=0, le=65534)
    sip_rtp_port_max: int = Field(default=20000, ge=0, le=65535)
    # Session timers (RFC 4028): the call's refresher re-INVITEs or UPDATEs every half interval, and the
    # other side hangs up when no refresh came, so a far end that vanished without a BYE is noticed.
    # 0: we ask for none (a caller's own Session-Expires is still granted).
    sip_session_expires_s: int = Field(default=1800, ge=0, le=86_400)
    sip_min_se_s: int = Field(default=90, ge=90, le=86_400)  # shorter intervals are refused 422 (90: the RFC's floor)
    # SIP over TLS (5061) when a certificate is set: sip_tls_cert/sip_tls_key, else the gateway's own
    # (tls_cert/tls_key, tls_self_signed). Its own pair lets HTTPS end at a reverse proxy while SIP's TLS
    # ends here. 0: no TLS listener.
    sip_tls_port: int = Field(default=5061, ge=0, le=65535)
    sip_tls_cert: Path | None = None
    sip_tls_key: Path | None = None
    # When the PBX refuses our REFER: call the escalation target ourselves (through the trunk, or a host in
    # sip_allowed_sources) and relay RTP between the caller and the person. Off: the caller is told it failed.
    sip_transfer_bridge: bool = False
    # An upstream trunk (docs/sip.md): REGISTER to `sip_trunk_registrar` (a sip: URI; empty: no registration)
    # as `sip_trunk_user`, answering its digest challenges with `sip_trunk_password`; refreshed at 3/4 of
    # the granted time, retried after failures from sip_trunk_retry_s doubling to 5 minutes, removed at stop.
    sip_trunk_registrar: str = ""
    sip_trunk_user: str = ""
    sip_trunk_password: SecretStr = SecretStr("")
    sip_trunk_expires_s: int = Field(default=600, ge=1, le=86_400)  # the binding's lifetime we ask for
    sip_trunk_retry_s: float = Field(default=5.0, gt=0)  # first retry after a failed REGISTER
    # Where outbound calls go (host[:port] or a sip: URI): the trunk's proxy. Empty: the registrar's host.
    # With neither set, calls go only to sip: URIs whose host is in sip_allowed_sources (default loopback).
    sip_trunk_proxy: str = ""
    sip_ring_timeout_s: float = Field(default=30.0, gt=0, le=600)  # an outbound call unanswered this long: CANCEL
    # OpenAI's SIP call control for our own calls (docs/openai.md "SIP"): route key -> CallControlRoute. Keys
    # are those of sip_routes (request-URI user or called number), "*" for every other call. Unset: the
    # gateway answers every call itself, as before.
    sip_call_control: dict[str, CallControlRoute] = Field(default_factory=dict)
    # Signs the webhooks (Standard Webhooks: a "whsec_" + base64 secret, as OpenAI's, or any text); the app
    # verifies with it (`client.webhooks.unwrap`). Required when a route uses webhook call control.
    sip_webhook_secret: SecretStr = SecretStr("")
    sip_webhook_attempts: int = Field(default=4, ge=1, le=20)  # deliveries tried per call (one webhook-id)
    sip_webhook_retry_s: float = Field(default=0.5, gt=0, le=60)  # the first retry's wait, doubling after
    sip_webhook_timeout_s: float = Field(default=5.0, gt=0, le=60)  # one attempt's limit
    # Run Python's cycle collector just after each 20 ms audio beat rather than mid-beat (see
    # voxgate/garbage_collection.py); off gives CPython's automatic collection back.
    gc_on_beat: bool = True

    # The cascade engine (engines/cascade.py): STT -> an LLM -> TTS over OpenAI-compatible services. Base URLs
    # end in /v1 (llama.cpp server http://127.0.0.1:8080/v1, Ollama http://127.0.0.1:11434/v1, vLLM, OpenAI,
    # another voxgate). STT and TTS left empty use the in-process local models. Keys stay in the gateway.
    cascade_llm_base_url: str = ""
    cascade_llm_model: str = ""  # empty: the server's default (llama.cpp serves one model)
    cascade_llm_api_key: SecretStr = SecretStr("")
    cascade_stt_base_url: str = ""
    cascade_stt_model: str = "whisper-1"
    cascade_stt_api_key: SecretStr = SecretStr("")
    cascade_tts_base_url: str = ""
    cascade_tts_model: str = "tts-1"
    cascade_tts_api_key: SecretStr = SecretStr("")
    cascade_connect_timeout_s: float = Field(default=5.0, gt=0)
    cascade_timeout_s: float = Field(default=30.0, gt=0)  # a service silent this long (between bytes) has failed
    cascade_max_retries: int = Field(default=1, ge=0, le=5)  # an LLM request that failed before any token
    # Sent as the request's `seed` (llama.cpp, vLLM and OpenAI honour it): the same conversation then samples
    # the same reply, for reproducible tests and incident replays. None: the server draws.
    cascade_llm_seed: int | None = None

    # OpenAI Realtime upstream (engine "openai"). The key stays in the gateway: clients never see it.
    openai_api_key: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("openai_api_key", "VOXGATE_OPENAI_API_KEY", "OPENAI_API_KEY"),
    )
    openai_base_url: str = "https://api.openai.com/v1"  # any server speaking the protocol, another voxgate too
    openai_model: str = "gpt-realtime"
    openai_connect_timeout_s: float = 10.0
    openai_max_retries: int = 2  # handshake retries per connect, with exponential backoff and jitter
    openai_response_timeout_s: float = 30.0  # an upstream response silent for this long has failed
    # Agents behind OpenAI's SIP (transports/openai_sip.py, docs/openai.md "SIP"): OpenAI answers the phone
    # and POSTs a signed `realtime.call.incoming` to /openai/sip/webhook; the gateway accepts the call with
    # an agent (at openai_base_url, with openai_api_key) and runs its tools over the call's sideband.
    # The Standard Webhooks secret (whsec_...) from OpenAI's webhook settings; several, comma-separated,
    # while one rotates. Empty: the route refuses every delivery (503).
    openai_webhook_secret: SecretStr = SecretStr("")
    openai_webhook_tolerance_s: int = Field(default=300, ge=1, le=3600)  # a delivery this old (or ahead) is stale
    # Which agent takes a call, by its SIP headers: the first rule that matches wins, e.g.
    # {header: to, match: "+14155550100", agent: support}; `match` ending in * is a prefix. No match:
    # openai_sip_agent, else default_agent.
    openai_sip_routes: list[AgentRoute] = Field(default_factory=list)
    openai_sip_agent: str = ""
    openai_sip_api_timeout_s: float = Field(default=10.0, gt=0)  # accept, refer, hangup: no answer by then failed
    # Transcribes the caller upstream, for the call record (the audio never reaches the gateway); empty: off
    openai_sip_transcription_model: str = "gpt-4o-mini-transcribe"

    # The operators' view (GET /v1/stats, /dashboard, `voxgate report cost`): KPI targets and the price
    # table, each field also settable alone (VOXGATE_KPI_TARGETS__DROP_RATE_MAX, VOXGATE_PRICES__HUMAN_PER_MINUTE...).
    kpi_targets: KpiTargets = Field(default_factory=KpiTargets)
    # OpenTelemetry spans per call, turn and tool call, to this OTLP/HTTP traces URL (a collector's
    # http://host:4318/v1/traces); empty: no spans. Needs the `otel` extra installed.
    otel_endpoint: str = ""
    otel_service_name: str = "voxgate"  # the spans' service.name
    prices: Prices = Field(default_factory=Prices)

    @field_validator("sip_trunk_registrar", "sip_trunk_proxy")
    @classmethod
    def _trunk_parses(cls, value: str) -> str:
        if value:
            trunk_uri(value)  # says what is wrong with the address (a sip: URI or host[:port], over UDP)
        return value

    @model_validator(mode="after")
    def _call_control_is_signed(self) -> Settings:
        if any(route.call_control == "webhook" for route in self.sip_call_control.values()):
            from voxgate.control.standard_webhooks import secret_bytes

            secret = self.sip_webhook_secret.get_secret_value()
            if not secret:
                raise ValueError("sip_call_control sends webhooks: set sip_webhook_secret (e.g. whsec_ + base64)")
            secret_bytes(secret)  # says what is wrong with a whsec_ secret
        return self

    @field_validator("sip_codecs")
    @classmethod
    def _codecs_known(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name.upper() not in ("PCMU", "PCMA", "OPUS")]
        if unknown or not value:
            raise ValueError(f"sip_codecs takes PCMU, PCMA and opus (at least one); not {unknown}")
        return value

    @model_validator(mode="after")
    def _rtp_ports_form_a_range(self) -> Settings:
        low, high = self.sip_rtp_port_min, self.sip_rtp_port_max
        if (low == 0) != (high == 0) or (low and (low < 1024 or high < low + low % 2 + 1)):
            raise ValueError(f"sip_rtp_port_min/max ({low}-{high}) must both be 0 (ephemeral ports) or a range "
                             "from 1024 up holding at least one even RTP port and the RTCP port above it")
        low, high = self.webrtc_port_min, self.webrtc_port_max
        if (low == 0) != (high == 0) or (low and (low < 1024 or high < low + low % 2)):
            raise ValueError(f"webrtc_port_min/max ({low}-{high}) must both be 0 (ephemeral ports) or a range "
                             "from 1024 up holding at least one even port")
        return self

    @field_validator("stt_model")
    @classmethod
    def _stt_model_is_a_model(cls, value: str) -> str:
        if value:  # refused at start, not at the first call's first turn
            from voxgate.engines.local.stt import check_model_directory

            return str(check_model_directory(value))
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        TrustedProxies(value)  # says which entry is not an address or network
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]

    def node(self) -> str:
        return self.node_id or f"{socket.gethostname()}:{self.port}"

    def base_url(self) -> str:
        scheme = "https" if self.tls_cert or self.tls_self_signed else "http"
        return self.public_url.rstrip("/") or f"{scheme}://{self.host}:{self.port}"

    def exposure(self) -> str | None:
        """Why the gateway can be reached from beyond this machine, or None when it is on loopback only."""
        if not is_loopback(self.host):
            return f"it listens on {self.host}"
        public = origin_of(self.public_url) if self.public_url else None
        if self.public_url and (public is None or not is_loopback(public[1])):
            return f"its public_url is {self.public_url}"
        return None

    def check_exposure(self) -> None:
        """Refuse dev mode on a gateway others can reach, unless the operator said so explicitly."""
        reason = self.exposure()
        if self.dev_mode and reason and not self.allow_dev_mode_beyond_loopback:
            raise UnsafeSettingsError(
                f"dev_mode is on and {reason}. Dev mode is for a demo on this machine: its console page mints "
                "keys without an API key and loopback pages pass CORS. Turn it off for a gateway others can "
                "reach (VOXGATE_DEV_MODE=false, or dev_mode: false in the settings file), or listen on "
                "127.0.0.1 with no public_url. To keep dev mode anyway, set "
                "VOXGATE_ALLOW_DEV_MODE_BEYOND_LOOPBACK=true.")

    def shown(self) -> dict[str, Any]:
        """The effective settings with secrets masked, for `voxgate config show`."""
        data = self.model_dump(mode="json")
        data["api_keys"] = "****" if self.api_key_list() else ""
        data["sip_digest_password"] = "****" if self.sip_digest_password.get_secret_value() else ""
        data["sip_trunk_password"] = "****" if self.sip_trunk_password.get_secret_value() else ""
        data["sip_webhook_secret"] = "****" if self.sip_webhook_secret.get_secret_value() else ""
        data["ice_servers"] = [{**s, "credential": "****"} if s.get("credential") else s for s in self.ice_servers]
        if "@" in self.redis_url:  # mask a password in the Redis URL
            scheme, rest = self.redis_url.split("://", 1)
            data["redis_url"] = f"{scheme}://****@{rest.rsplit('@', 1)[1]}"
        if "@" in self.database_url:  # mask a password in a database URL
            scheme, rest = self.database_url.split("://", 1)
            creds, host = rest.rsplit("@", 1)
            user = creds.split(":", 1)[0]
            data["database_url"] = f"{scheme}://{user}:****@{host}"
        return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional YAML file; environment variables win over the file."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        loaded = yaml.safe_load(config_file.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{config_file}: expected a mapping of settings")
        file_values = loaded
    env_settings = Settings()  # environment only
    explicit_env = env_settings.model_fields_set
    merged = {**file_values, **{k: getattr(env_settings, k) for k in explicit_env}, **overrides}
    return Settings(**merged)
