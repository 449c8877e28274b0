"""Agent definitions loaded from YAML: what an agent says, which tools it may use, where it escalates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from voxgate.protocol.client_events import DTMF_KEYS


class WebhookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    method: Literal["POST", "GET"] = "POST"
    timeout_s: float = 5.0
    retries: int = Field(default=2, ge=0, le=5)
    headers: dict[str, str] = Field(default_factory=dict)
    # A larger answer is refused (the tool fails) before it is read whole: the endpoint is not trusted
    # to bound what it sends, and the body is held in memory and parsed on the event loop.
    max_response_bytes: int = Field(default=1 << 20, ge=1, le=16 << 20)


class ToolDefinition(BaseModel):
    """A server-side tool: exactly one of `handler` (Python), `webhook` (HTTP) or `builtin`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    handler: str | None = None  # "pkg.module:function" or "relative/file.py:function"
    webhook: WebhookSpec | None = None
    builtin: Literal["transfer_to_human", "end_call", "send_dtmf"] | None = None
    returns_pii: bool = False  # when false, card numbers, SSNs and emails are redacted from the output
    max_output_bytes: int | None = None
    # Roles (voxgate/roles.py) a call's key must hold for the tool to be offered and run; empty: any call.
    # Phone and SIP calls run with the role `app`; a key's sessions with the key's roles.
    roles: list[Literal["admin", "operator", "app", "read-only"]] = Field(default_factory=list)
    # What the tool touches: each call of a tool tagged pii or phi is written to the audit log (who, which
    # call, the outcome; never its arguments or result).
    data: list[Literal["pii", "phi"]] = Field(default_factory=list)
    pci: bool = False  # arguments are collected by DTMF in PCI mode and never shown to the model
    # Reply templates for the flow brain, formatted with the tool's arguments and result fields.
    say: str | None = None
    say_error: str | None = None

    @model_validator(mode="after")
    def _one_implementation(self) -> ToolDefinition:
        chosen = [x for x in (self.handler, self.webhook, self.builtin) if x is not None]
        if len(chosen) != 1:
            raise ValueError(f"tool {self.name!r}: give exactly one of handler, webhook, builtin")
        return self

    def as_function(self) -> dict[str, Any]:
        """The OpenAI `tools[]` entry for this tool."""
        return {"type": "function", "name": self.name, "description": self.description,
                "parameters": self.parameters}


class Intent(BaseModel):
    """Something callers ask for: either a tool to call or a templated reply."""

    model_config = ConfigDict(extra="forbid")
    name: str
    examples: list[str] = Field(default_factory=list)
    tool: str | None = None
    reply: str | None = None


class Escalation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = ""  # E.164 number or SIP URI of the human queue
    handover_line: str = "Let me connect you with a colleague. One moment please."
    # Warm transfer: the person first hears who is calling and why (the hand-off's summary). SIP: the gateway
    # calls the target itself, says it in the gateway's voice, then bridges the two legs; Twilio: a whisper
    # URL on the <Dial>; Telnyx: the transfer's audio_url. Off: a blind REFER (SIP) or transfer (carriers).
    # Browser calls are queued for an operator either way (GET /v1/escalations).
    warm: bool = False
    # Said to the caller when a warm transfer finds nobody (busy, no answer); the call stays with the agent,
    # which may offer to book a call back with its tools.
    unanswered_line: str = ("I'm sorry, nobody is free to take your call right now. I can book a call back "
                            "for you, or you can try again later.")


class Recording(BaseModel):
    """A call's audio kept on disk (off unless `enabled`): the notice is played first, then stereo
    (caller left, agent right, as the caller heard it), PCI entry and sensitive spans silenced."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    format: Literal["opus", "wav"] = "opus"  # Ogg Opus (small) or 16-bit WAV
    # Played before anything else on every call while recording is on, whatever the transport.
    notice: str = "This call is recorded, and you are speaking with an automated assistant."
    # "notice": the notice is enough (one-party consent). "keypad", "voice" or "either": the caller must
    # agree, by a key or by saying yes; their answer is kept in the call record. Until they do, the agent
    # answers nothing else; a caller who declines is not recorded (the audio so far is deleted).
    consent: Literal["notice", "keypad", "voice", "either"] = "notice"
    agree_key: str = Field(default="1", pattern=r"^[0-9*]$")
    decline_key: str = Field(default="2", pattern=r"^[0-9*]$")
    consent_prompt: str = "Press 1 or say yes to agree, or press 2 or say no to continue unrecorded."
    agreed_line: str = "Thank you."
    declined_line: str = "All right, this call will not be recorded."
    on_decline: Literal["continue", "hang_up"] = "continue"  # an unrecorded call, or a goodbye and hang-up
    max_prompts: int = Field(default=2, ge=1, le=5)  # unclear answers before it counts as declined

    @model_validator(mode="after")
    def _keys_differ(self) -> Recording:
        if self.agree_key == self.decline_key:
            raise ValueError("recording: agree_key and decline_key must differ")
        return self


class TurnTaking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Caller speech shorter than this during agent playback does not interrupt (clicks, coughs). Unset: 64 ms
    # where the gateway plays the audio (phone, SIP, WebRTC: the agent pauses at the caller on the first
    # speech frame while it is checked), none where the client does (the Realtime WebSocket: it stops its
    # player on `speech_started`, which is then sent on the first frame, as OpenAI's server VAD does).
    barge_in_min_speech_ms: int | None = Field(default=None, ge=0, le=2000)
    # While the agent talks, caller audio quieter than the agent's loudest audio minus this many dB may be
    # the agent's own echo (a line's echo loss is ~20 dB) and does not count as speech; null: no echo gate.
    barge_in_echo_margin_db: float | None = Field(default=14.0, ge=0.0, le=60.0)
    silence_duration_ms: int = Field(default=300, ge=100, le=5000)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Which voice activity detector hears the caller: Silero (gated by webrtcvad: robust to noise, the
    # default) or webrtcvad alone (no model at all: line tests, the echo agent, the bridge benchmark).
    vad: Literal["silero", "webrtc"] = "silero"


class CascadeServices(BaseModel):
    """This agent's own services for the cascade engine; a field left out keeps the gateway's `cascade_*`
    setting. Keys are named by environment variable, so agent files can be committed without secrets."""

    model_config = ConfigDict(extra="forbid")
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key_env: str | None = None
    llm_seed: int | None = None
    stt_base_url: str | None = None
    stt_model: str | None = None
    stt_api_key_env: str | None = None
    tts_base_url: str | None = None
    tts_model: str | None = None
    tts_api_key_env: str | None = None

    @model_validator(mode="after")
    def _keys_present(self) -> CascadeServices:
        for field in ("llm_api_key_env", "stt_api_key_env", "tts_api_key_env"):
            name = getattr(self, field)
            if name is not None and name not in os.environ:
                raise ValueError(f"cascade.{field}: the environment has no variable {name!r}")
        return self

    def settings_update(self) -> dict[str, Any]:
        """The gateway settings this agent overrides, as `Settings.model_copy(update=...)` takes them."""
        update: dict[str, Any] = {}
        for field, value in self.model_dump(exclude_none=True).items():
            if field.endswith("_api_key_env"):
                update[f"cascade_{field.removesuffix('_env')}"] = SecretStr(os.environ[value])
            else:
                update[f"cascade_{field}"] = value
        return update


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    instructions: str = "You are a helpful voice agent."
    voice: str = "joe"
    engine: Literal["local", "echo", "openai", "cascade"] | None = None  # None: the gateway's default
    greeting: str | None = None  # spoken first on phone and browser calls
    disclosure: str | None = None  # AI/recording disclosure, always played at call start on phone calls
    fallback: str = "Sorry, I didn't catch that. Could you say it another way?"
    idle_prompt: str = "Are you still there?"  # said when turn_detection.idle_timeout_ms passes in silence
    # Said in the local voice when the engine fails on a call the gateway plays out (phone, browser),
    # before the call goes to the escalation target: a caller must never be left in silence.
    apology: str = "I'm sorry, I'm having trouble right now. Let me connect you with a colleague."
    # Said to callers still on the line when the gateway shuts down (SIGTERM drain); phone callers go to
    # `escalation.target` after its handover line instead, when there is one.
    goodbye: str = "I'm sorry, this line has to close for a moment. Please call back shortly. Goodbye."
    tools: list[ToolDefinition] = Field(default_factory=list)
    # When a session's client declares function tools (session.update, a minted key's session): "replace"
    # gives the session the client's tools alone, as OpenAI does, so the agent's gateway tools and the
    # intents that call them do not answer for the client's app; "extend" keeps them beside the client's.
    client_tools: Literal["replace", "extend"] = "replace"
    intents: list[Intent] = Field(default_factory=list)
    escalation: Escalation = Field(default_factory=Escalation)
    turn_taking: TurnTaking = Field(default_factory=TurnTaking)
    # In PCI mode the arguments of `pci` tools are typed on the keypad (ended by '#'), never spoken, and
    # never reach a transcript, a log, a stored record or the model's context.
    pci_mode: bool = False
    # Said in PCI mode when a caller reads a card number out (it is redacted before the model, the record
    # and the logs see it): the agent's reply to those words is cut, and this is said instead.
    pci_keypad_line: str = "For your security, please don't say card numbers out loud. Type them on your keypad."
    recording: Recording = Field(default_factory=Recording)
    # Days a call's data (record, items, tool calls, recording) is kept; the sweeper deletes it after
    # that. None: kept until deleted through the API.
    retention_days: float | None = Field(default=None, gt=0)
    # Zero data retention for this agent's calls (or every agent's: the gateway's `zero_retention`): the call
    # record keeps counters and timings only, logs name no words, and the openai/cascade upstream is asked
    # not to keep them either (docs/compliance.md).
    zero_retention: bool = False
    # Key -> intent or tool name: a key press acts like the caller asking for it ("press 1 for orders").
    dtmf_menu: dict[str, str] = Field(default_factory=dict)
    # Engine "cascade": this agent's own STT/LLM/TTS services (e.g. its own fine-tuned model); unset: the
    # gateway's cascade_* settings.
    cascade: CascadeServices | None = None
    source: Path | None = None  # the YAML file it came from, to resolve relative handler paths

    @model_validator(mode="after")
    def _menu_names_known(self) -> AgentConfig:
        known = {i.name for i in self.intents} | {t.name for t in self.tools}
        for key, target in self.dtmf_menu.items():
            if key not in DTMF_KEYS or key == "#":
                raise ValueError(f"dtmf_menu: {key!r} is not a keypad key (0-9, *, A-D)")
            if target not in known:
                raise ValueError(f"dtmf_menu[{key!r}]: {target!r} is neither an intent nor a tool of this agent")
        return self

    def tool(self, name: str) -> ToolDefinition | None:
        return next((t for t in self.tools if t.name == name), None)


def load_agent(path: Path) -> AgentConfig:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: an agent file must be a mapping")
    agent = AgentConfig.model_validate({**data, "source": path.resolve()})
    return agent


def load_agents(directory: Path) -> dict[str, AgentConfig]:
    agents: dict[str, AgentConfig] = {}
    for path in sorted(directory.glob("*.y*ml")):
        agent = load_agent(path)
        if agent.name in agents:
            raise ValueError(f"{path}: agent name {agent.name!r} is defined twice")
        agents[agent.name] = agent
    return agents
