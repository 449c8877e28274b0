"""What an engine is: given the conversation so far, stream the assistant's next output.

The Session owns items, responses and events; an engine only produces content. The local engine
composes VAD, STT, a brain and TTS behind this interface; the echo engine plays back what it heard.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from voxgate.session.keypad import Keypad

if TYPE_CHECKING:
    from voxgate.agents import AgentConfig
    from voxgate.audio.formats import AudioFormat


@dataclass(frozen=True)
class HistoryEntry:
    """One conversation item as the engine sees it: only what the caller actually heard."""

    kind: Literal["user", "assistant", "system", "function_call", "function_call_output"]
    text: str = ""
    name: str = ""  # tool name, for function_call
    call_id: str = ""
    arguments: str = ""  # JSON string, for function_call
    output: str = ""  # JSON string (usually), for function_call_output


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    server: bool  # True: the gateway runs it; False: the client declared it and runs it


@dataclass
class ResponseRequest:
    history: Sequence[HistoryEntry]
    instructions: str
    tools: Sequence[ToolSpec]
    tool_choice: str | dict[str, Any]
    modalities: Sequence[str]  # ["audio"] or ["text"]
    voice: str
    agent: AgentConfig
    # The engine's per-session scratchpad (e.g. the brain's pending slot filling). Engines own its keys.
    state: dict[str, Any] = field(default_factory=dict)
    # The caller's keypad (phones): the menu key to answer, the PCI entry being typed and its vault.
    keypad: Keypad = field(default_factory=Keypad)
    # Audio of the latest user turn as the caller sent it (wire bytes and their format), for engines
    # that answer from audio: the openai engine forwards 24 kHz PCM untouched, echo plays it back.
    user_audio_wire: bytes | None = None
    user_audio_format: AudioFormat | None = None
    # Speak exactly this (greetings, disclosures, handover lines) instead of deciding what to say.
    say: str | None = None
    speed: float = 1.0  # speaking rate (session audio.output.speed)
    # The session's sampling temperature and its cap on output tokens (None: no cap), for engines whose
    # model samples (the cascade's LLM); the flow brain and the echo engine do not.
    temperature: float = 0.8
    max_output_tokens: int | None = None
    # Zero data retention (voxgate/agents.py): a remote engine asks its upstream not to keep the call either.
    zero_retention: bool = False


@dataclass(frozen=True)
class TextDelta:
    """Assistant text (or the transcript of the audio that follows it)."""

    text: str


@dataclass(frozen=True)
class AudioChunk:
    """Assistant audio: mono int16 PCM at `rate` Hz."""

    pcm: np.ndarray
    rate: int


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON object as a string, as the model would emit it
    call_id: str


EngineOutput = TextDelta | AudioChunk | ToolCall


class EngineError(Exception):
    """The engine could not produce a response; the session reports it as a failed response."""


class Engine(ABC):
    name: str = "engine"
    transcribes: bool = False  # overrides transcribe(): the session then prepares 16 kHz audio for it

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load models once per process; called before the first session."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release models and threads."""

    def voices(self) -> Sequence[str]:
        """Voice names this engine can speak with."""
        return ()

    async def transcribe(self, pcm16k: np.ndarray, language: str | None = None) -> str | None:
        """Transcribe a committed user turn (16 kHz mono int16); None when the engine cannot."""
        return None

    async def close_session(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """The session that owns `state` has ended: release what the engine keeps there (connections)."""

    def take_usage(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """Token usage reported since the last call, in OpenAI's shape; None when the engine has none
        (the session then estimates it)."""
        return None

    @abstractmethod
    def respond(self, request: ResponseRequest) -> AsyncIterator[EngineOutput]:
        """Stream the assistant's output. Cancelled (task.cancel) on barge-in or response.cancel."""
