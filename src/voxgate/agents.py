"""Agent definitions loaded from YAML: what an agent says, which tools it may use, where it escalates."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DTMF_KEYS = frozenset("0123456789*#ABCD")


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
    roles: list[str] = Field(default_factory=list)  # empty: any caller may trigger it
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


class TurnTaking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Caller speech shorter than this during agent playback does not interrupt (clicks, coughs).
    barge_in_min_speech_ms: int = Field(default=64, ge=0, le=2000)
    # While the agent talks, caller audio quieter than the agent's loudest audio minus this many dB may be
    # the agent's own echo (a line's echo loss is ~20 dB) and does not count as speech; null: no echo gate.
    barge_in_echo_margin_db: float | None = Field(default=14.0, ge=0.0, le=60.0)
    silence_duration_ms: int = Field(default=300, ge=100, le=5000)
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # Which voice activity detector hears the caller: Silero (gated by webrtcvad: robust to noise, the
    # default) or webrtcvad alone (no model at all: line tests, the echo agent, the bridge benchmark).
    vad: Literal["silero", "webrtc"] = "silero"


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
    # Key -> intent or tool name: a key press acts like the caller asking for it ("press 1 for orders").
    dtmf_menu: dict[str, str] = Field(default_factory=dict)
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
