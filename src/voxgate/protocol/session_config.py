"""The session's effective configuration, and its two wire shapes (GA nested, beta flat).

`session.update` is a partial merge: only the fields present change. Each field is checked here so a
bad update is refused as a whole (nothing applied) with an error naming the offending parameter.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from voxgate.audio.formats import PCM24K, AudioFormat, AudioFormatError
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.items import Dialect

_VAD_TYPES = ("server_vad", "semantic_vad")
# OpenAI's built-in voices (the local engine speaks them in its own voice)
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
# The beta SDK types `session.model` as a closed list; strict beta clients drop any other name.
BETA_MODELS = (
    "gpt-realtime", "gpt-realtime-2025-08-28", "gpt-4o-realtime-preview", "gpt-4o-realtime-preview-2024-10-01",
    "gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview-2025-06-03", "gpt-4o-mini-realtime-preview",
    "gpt-4o-mini-realtime-preview-2024-12-17",
)
_EAGERNESS = ("low", "medium", "high", "auto")


def default_turn_detection(silence_duration_ms: int = 300, threshold: float = 0.5) -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": threshold,
        "prefix_padding_ms": 300,
        "silence_duration_ms": silence_duration_ms,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


@dataclass
class SessionConfig:
    id: str
    model: str = "voxgate-local"
    instructions: str = ""
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    voice: str = "joe"
    speed: float = 1.0
    input_format: AudioFormat = PCM24K
    output_format: AudioFormat = PCM24K
    transcription: dict[str, Any] | None = field(default_factory=lambda: {"model": "whisper-1"})
    noise_reduction: dict[str, Any] | None = None
    turn_detection: dict[str, Any] | None = field(default_factory=default_turn_detection)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    max_output_tokens: int | str = "inf"
    temperature: float = 0.8
    tracing: Any = None
    truncation: Any = "auto"
    prompt: Any = None
    include: list[str] | None = None
    expires_at: int = 0

    # -- rendering ---------------------------------------------------------------------------------

    def to_wire(self, dialect: Dialect) -> dict[str, Any]:
        return self.to_beta() if dialect == "beta" else self.to_ga()

    def to_ga(self) -> dict[str, Any]:
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.id,
            "model": self.model,
            "output_modalities": list(self.output_modalities),
            "instructions": self.instructions,
            "audio": {
                "input": {
                    "format": self.input_format.to_ga(),
                    "transcription": copy.deepcopy(self.transcription),
                    "noise_reduction": copy.deepcopy(self.noise_reduction),
                    "turn_detection": copy.deepcopy(self.turn_detection),
                },
                "output": {"format": self.output_format.to_ga(), "voice": self.voice, "speed": self.speed},
            },
            "tools": copy.deepcopy(self.tools),
            "tool_choice": copy.deepcopy(self.tool_choice),
            "max_output_tokens": self.max_output_tokens,
            "tracing": self.tracing,
            "truncation": self.truncation,
            "prompt": self.prompt,
            "expires_at": self.expires_at,
            "include": self.include,
        }

    def to_beta(self) -> dict[str, Any]:
        td = copy.deepcopy(self.turn_detection)
        if td is not None:
            td.pop("idle_timeout_ms", None)
        return {
            "id": self.id,
            "object": "realtime.session",
            "model": self.model if self.model in BETA_MODELS else "gpt-4o-realtime-preview",
            "modalities": ["text", "audio"] if "audio" in self.output_modalities else ["text"],
            "instructions": self.instructions,
            "voice": self.voice,
            "speed": self.speed,
            "input_audio_format": self.input_format.to_beta(),
            "output_audio_format": self.output_format.to_beta(),
            "input_audio_transcription": copy.deepcopy(self.transcription),
            "input_audio_noise_reduction": copy.deepcopy(self.noise_reduction),
            "turn_detection": td,
            "tools": copy.deepcopy(self.tools),
            "tool_choice": copy.deepcopy(self.tool_choice),
            "temperature": self.temperature,
            "max_response_output_tokens": self.max_output_tokens,
            "tracing": self.tracing,
            "expires_at": self.expires_at,
        }

    # -- updating ----------------------------------------------------------------------------------

    def updated(self, patch: Any, dialect: Dialect, voices: set[str] | None = None) -> SessionConfig:
        """A copy with `patch` (the `session` object of session.update) applied; raises RealtimeError."""
        if not isinstance(patch, dict):
            raise RealtimeError("invalid_type", "session must be an object", param="session")
        new = copy.deepcopy(self)
        if dialect == "beta":
            _apply_beta(new, patch)
        else:
            _apply_ga(new, patch)
        if voices is not None and new.voice not in voices:
            raise RealtimeError(
                "invalid_value",
                f"Unsupported voice {new.voice!r}; available voices: {', '.join(sorted(voices))}",
                param="session.audio.output.voice" if dialect == "ga" else "session.voice",
            )
        return new


# --- field checks ---------------------------------------------------------------------------------


def _unknown(obj: dict[str, Any], allowed: set[str], prefix: str) -> None:
    for key in obj:
        if key not in allowed:
            raise RealtimeError("unknown_parameter", f"Unknown parameter: '{prefix}.{key}'.", param=f"{prefix}.{key}")


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise RealtimeError("invalid_type", f"Invalid type for '{param}': expected a string.", param=param)
    return value


def _number(value: Any, param: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise RealtimeError(
            "invalid_value", f"Invalid value for '{param}': expected a number in [{lo}, {hi}].", param=param
        )
    return float(value)


def _int(value: Any, param: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise RealtimeError(
            "invalid_value", f"Invalid value for '{param}': expected an integer in [{lo}, {hi}].", param=param
        )
    return value


def _bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise RealtimeError("invalid_type", f"Invalid type for '{param}': expected a boolean.", param=param)
    return value


def _format(value: Any, param: str, dialect: Dialect) -> AudioFormat:
    try:
        if dialect == "beta":
            return AudioFormat.from_beta(_str(value, param))
        if not isinstance(value, dict):
            raise RealtimeError("invalid_type", f"Invalid type for '{param}': expected an object.", param=param)
        return AudioFormat.from_ga(value)
    except AudioFormatError as exc:
        raise RealtimeError("invalid_value", f"Invalid value for '{param}': {exc}", param=param) from exc


def check_turn_detection(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RealtimeError("invalid_type", f"Invalid type for '{param}': expected an object or null.", param=param)
    kind = value.get("type", "server_vad")
    if kind not in _VAD_TYPES:
        raise RealtimeError(
            "invalid_value", f"Invalid value for '{param}.type': expected one of {_VAD_TYPES}.", param=f"{param}.type"
        )
    if kind == "server_vad":
        _unknown(value, {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms",
                         "create_response", "interrupt_response"}, param)
        out = default_turn_detection()
        for key in ("threshold",):
            if key in value:
                out[key] = _number(value[key], f"{param}.{key}", 0.0, 1.0)
        for key, hi in (("prefix_padding_ms", 5000), ("silence_duration_ms", 10000)):
            if key in value:
                out[key] = _int(value[key], f"{param}.{key}", 0, hi)
        if value.get("idle_timeout_ms") is not None:
            out["idle_timeout_ms"] = _int(value["idle_timeout_ms"], f"{param}.idle_timeout_ms", 5000, 30000)
    else:
        _unknown(value, {"type", "eagerness", "create_response", "interrupt_response"}, param)
        eagerness = value.get("eagerness", "auto")
        if eagerness not in _EAGERNESS:
            raise RealtimeError("invalid_value", f"Invalid value for '{param}.eagerness'.", param=f"{param}.eagerness")
        out = {"type": "semantic_vad", "eagerness": eagerness, "create_response": True, "interrupt_response": True}
    for key in ("create_response", "interrupt_response"):
        if key in value:
            out[key] = _bool(value[key], f"{param}.{key}")
    return out


def check_tools(value: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise RealtimeError("invalid_type", f"Invalid type for '{param}': expected an array.", param=param)
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for i, tool in enumerate(value):
        p = f"{param}[{i}]"
        if not isinstance(tool, dict):
            raise RealtimeError("invalid_type", f"Invalid type for '{p}': expected an object.", param=p)
        if tool.get("type", "function") != "function":
            raise RealtimeError("invalid_value", f"Only function tools are supported ('{p}.type').", param=f"{p}.type")
        _unknown(tool, {"type", "name", "description", "parameters"}, p)
        name = _str(tool.get("name"), f"{p}.name")
        if not name or name in names:
            raise RealtimeError("invalid_value", f"'{p}.name' must be non-empty and unique.", param=f"{p}.name")
        names.add(name)
        params = tool.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise RealtimeError("invalid_type", f"'{p}.parameters' must be a JSON schema object.",
                                param=f"{p}.parameters")
        tools.append({"type": "function", "name": name, "description": _str(tool.get("description", ""),
                      f"{p}.description"), "parameters": params})
    return tools


def check_tool_choice(value: Any, param: str) -> str | dict[str, Any]:
    if value in ("auto", "none", "required"):
        return str(value)
    if isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("name"), str):
        return {"type": "function", "name": value["name"]}
    raise RealtimeError("invalid_value", f"Invalid value for '{param}'.", param=param)


def check_modalities(value: Any, param: str, dialect: Dialect) -> list[str]:
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise RealtimeError("invalid_value", f"Invalid value for '{param}': expected ['audio'] or ['text'].",
                            param=param)
    if dialect == "ga" and len(value) != 1:
        raise RealtimeError("invalid_value", f"'{param}' takes exactly one of 'audio' or 'text'.", param=param)
    return ["audio"] if "audio" in value else ["text"]


def _max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    return _int(value, param, 1, 4096)


def _optional_object(value: Any, param: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise RealtimeError("invalid_type", f"Invalid type for '{param}': expected an object or null.", param=param)
    return value


def _apply_ga(cfg: SessionConfig, s: dict[str, Any]) -> None:
    _unknown(s, {"type", "model", "instructions", "output_modalities", "audio", "tools", "tool_choice",
                 "max_output_tokens", "tracing", "truncation", "prompt", "include", "id", "object",
                 "expires_at"}, "session")
    if "type" in s and s["type"] != "realtime":
        raise RealtimeError("invalid_value", "session.type must be 'realtime' on a realtime session.",
                            param="session.type")
    _apply_common(cfg, s)
    if "output_modalities" in s:
        cfg.output_modalities = check_modalities(s["output_modalities"], "session.output_modalities", "ga")
    if "max_output_tokens" in s:
        cfg.max_output_tokens = _max_tokens(s["max_output_tokens"], "session.max_output_tokens")
    if "audio" in s:
        audio = s["audio"]
        if not isinstance(audio, dict):
            raise RealtimeError("invalid_type", "session.audio must be an object.", param="session.audio")
        _unknown(audio, {"input", "output"}, "session.audio")
        inp = audio.get("input") or {}
        out = audio.get("output") or {}
        if not isinstance(inp, dict) or not isinstance(out, dict):
            raise RealtimeError("invalid_type", "session.audio.input/output must be objects.", param="session.audio")
        _unknown(inp, {"format", "transcription", "noise_reduction", "turn_detection"}, "session.audio.input")
        _unknown(out, {"format", "voice", "speed"}, "session.audio.output")
        if "format" in inp:
            cfg.input_format = _format(inp["format"], "session.audio.input.format", "ga")
        if "transcription" in inp:
            cfg.transcription = _optional_object(inp["transcription"], "session.audio.input.transcription")
        if "noise_reduction" in inp:
            cfg.noise_reduction = _optional_object(inp["noise_reduction"], "session.audio.input.noise_reduction")
        if "turn_detection" in inp:
            cfg.turn_detection = check_turn_detection(inp["turn_detection"], "session.audio.input.turn_detection")
        if "format" in out:
            cfg.output_format = _format(out["format"], "session.audio.output.format", "ga")
        if "voice" in out:
            voice = out["voice"]
            cfg.voice = voice["id"] if isinstance(voice, dict) and isinstance(voice.get("id"), str) else _str(
                voice, "session.audio.output.voice")
        if "speed" in out:
            cfg.speed = _number(out["speed"], "session.audio.output.speed", 0.25, 1.5)
    for key in ("tracing", "truncation", "prompt", "include"):
        if key in s:
            setattr(cfg, key, s[key])


def _apply_beta(cfg: SessionConfig, s: dict[str, Any]) -> None:
    _unknown(s, {"model", "instructions", "modalities", "voice", "speed", "input_audio_format",
                 "output_audio_format", "input_audio_transcription", "input_audio_noise_reduction",
                 "turn_detection", "tools", "tool_choice", "temperature", "max_response_output_tokens",
                 "tracing", "client_secret", "id", "object", "expires_at", "include"}, "session")
    _apply_common(cfg, s)
    if "modalities" in s:
        cfg.output_modalities = check_modalities(s["modalities"], "session.modalities", "beta")
    if "voice" in s:
        cfg.voice = _str(s["voice"], "session.voice")
    if "speed" in s:
        cfg.speed = _number(s["speed"], "session.speed", 0.25, 1.5)
    if "input_audio_format" in s:
        cfg.input_format = _format(s["input_audio_format"], "session.input_audio_format", "beta")
    if "output_audio_format" in s:
        cfg.output_format = _format(s["output_audio_format"], "session.output_audio_format", "beta")
    if "input_audio_transcription" in s:
        cfg.transcription = _optional_object(s["input_audio_transcription"], "session.input_audio_transcription")
    if "input_audio_noise_reduction" in s:
        cfg.noise_reduction = _optional_object(s["input_audio_noise_reduction"],
                                               "session.input_audio_noise_reduction")
    if "turn_detection" in s:
        cfg.turn_detection = check_turn_detection(s["turn_detection"], "session.turn_detection")
    if "temperature" in s:
        cfg.temperature = _number(s["temperature"], "session.temperature", 0.6, 1.2)
    if "max_response_output_tokens" in s:
        cfg.max_output_tokens = _max_tokens(s["max_response_output_tokens"], "session.max_response_output_tokens")
    if "tracing" in s:
        cfg.tracing = s["tracing"]


def _apply_common(cfg: SessionConfig, s: dict[str, Any]) -> None:
    if "model" in s:
        _str(s["model"], "session.model")  # fixed at connect time, like OpenAI: accepted, not changed
    if "instructions" in s:
        cfg.instructions = _str(s["instructions"], "session.instructions")
    if "tools" in s:
        cfg.tools = check_tools(s["tools"], "session.tools")
    if "tool_choice" in s:
        cfg.tool_choice = check_tool_choice(s["tool_choice"], "session.tool_choice")
