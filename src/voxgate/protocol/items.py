"""Conversation items and their wire shapes in both dialects.

An item keeps its audio as the bytes that crossed the wire (input or output format) so that
`conversation.item.retrieve` can return it and truncation can cut it at a millisecond.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from voxgate.audio.formats import AudioFormat

Dialect = Literal["ga", "beta"]
ItemType = Literal["message", "function_call", "function_call_output"]

# GA content types that beta spells differently (assistant side only).
_BETA_CONTENT = {"output_text": "text", "output_audio": "audio"}
_GA_CONTENT = {"text": "output_text", "audio": "output_audio"}


@dataclass
class ContentPart:
    type: str  # input_text | input_audio | output_text | output_audio
    text: str | None = None
    transcript: str | None = None
    audio: bytearray | None = None  # wire bytes in `audio_format`
    audio_format: AudioFormat | None = None
    # (audio ms where it starts, text) for each spoken segment, so truncation keeps the heard words.
    segments: list[tuple[float, str]] = field(default_factory=list)

    @property
    def audio_ms(self) -> float:
        if self.audio is None or self.audio_format is None:
            return 0.0
        return self.audio_format.duration_ms(len(self.audio))

    def to_wire(self, dialect: Dialect, include_audio: bool = False) -> dict[str, Any]:
        kind = _BETA_CONTENT.get(self.type, self.type) if dialect == "beta" else self.type
        out: dict[str, Any] = {"type": kind}
        if self.type in ("input_text", "output_text"):
            out["text"] = self.text or ""
        else:
            out["transcript"] = self.transcript
            if include_audio and self.audio is not None:
                out["audio"] = base64.b64encode(bytes(self.audio)).decode()
        return out


@dataclass
class Item:
    id: str
    type: ItemType
    role: Literal["user", "assistant", "system"] | None = None
    status: Literal["completed", "in_progress", "incomplete"] = "completed"
    content: list[ContentPart] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None

    @property
    def text(self) -> str:
        """What the item says, in words: typed text or an audio transcript."""
        return " ".join(
            (p.text if p.type.endswith("text") else p.transcript) or "" for p in self.content
        ).strip()

    def snapshot(self, include_audio: bool = False) -> Item:
        """A copy frozen in time for an event: the item may change before the event reaches the wire."""
        parts = [replace(p, audio=bytearray(p.audio) if include_audio and p.audio is not None else None,
                         segments=[]) for p in self.content]
        return replace(self, content=parts)

    def to_wire(self, dialect: Dialect, include_audio: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type}
        if self.type == "message":
            out.update(
                status=self.status,
                role=self.role,
                content=[p.to_wire(dialect, include_audio) for p in self.content],
            )
        elif self.type == "function_call":
            out.update(status=self.status, call_id=self.call_id, name=self.name, arguments=self.arguments or "")
        else:
            out.update(call_id=self.call_id, output=self.output or "")
        return out


def ga_content_type(kind: str) -> str:
    """Normalise a (possibly beta) content type to its GA name."""
    return _GA_CONTENT.get(kind, kind)
