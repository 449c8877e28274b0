"""Server events as the gateway holds them: typed, one class per GA wire name, PCM for audio.

The session and its responses build these; a transport hands them to `protocol/serialiser.py`, which
spells them for the client's dialect (GA or beta) at the edge. Nothing inside the process builds a
server event as a dict, and audio stays int16 PCM until the serialiser (or a carrier's codec) encodes it.

Objects that carry a resource (an item, a session, a response) hold a snapshot taken when the event
was made, so the wire shows the resource as it was then, not as it is when the writer gets to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from voxgate.audio.formats import AudioFormat
from voxgate.protocol.ids import new_id

if TYPE_CHECKING:
    from voxgate.protocol.items import Item
    from voxgate.protocol.session_config import SessionConfig


def _event_id() -> str:
    return new_id("event")


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerEventBase:
    type: ClassVar[str]  # the GA wire name; the serialiser renames for beta
    event_id: str = field(default_factory=_event_id)


# -- session ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionCreated(ServerEventBase):
    type: ClassVar[str] = "session.created"
    session: SessionConfig  # immutable once made (updates make a new one)


@dataclass(frozen=True, kw_only=True, slots=True)
class SessionUpdated(ServerEventBase):
    type: ClassVar[str] = "session.updated"
    session: SessionConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class TranscriptionSessionUpdated(ServerEventBase):
    type: ClassVar[str] = "transcription_session.updated"
    session: SessionConfig


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorEvent(ServerEventBase):
    """`error`: what went wrong with a client event (`client_event_id`), or with the session."""

    type: ClassVar[str] = "error"
    error_type: str
    code: str | None
    message: str
    param: str | None = None
    client_event_id: str | None = None


# -- input audio buffer -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class InputAudioBufferCleared(ServerEventBase):
    type: ClassVar[str] = "input_audio_buffer.cleared"


@dataclass(frozen=True, kw_only=True, slots=True)
class InputAudioBufferCommitted(ServerEventBase):
    type: ClassVar[str] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class InputAudioBufferSpeechStarted(ServerEventBase):
    type: ClassVar[str] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class InputAudioBufferSpeechStopped(ServerEventBase):
    type: ClassVar[str] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class InputAudioBufferTimeoutTriggered(ServerEventBase):
    type: ClassVar[str] = "input_audio_buffer.timeout_triggered"
    audio_start_ms: int
    audio_end_ms: int
    item_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class InputAudioBufferDtmfEventReceived(ServerEventBase):
    """A key press; the one server event OpenAI sends without an event_id (the serialiser leaves it out)."""

    type: ClassVar[str] = "input_audio_buffer.dtmf_event_received"
    event: str
    received_at: int


# -- conversation items -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemAdded(ServerEventBase):
    type: ClassVar[str] = "conversation.item.added"
    previous_item_id: str | None
    item: Item  # a snapshot (Item.snapshot)


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemDone(ServerEventBase):
    type: ClassVar[str] = "conversation.item.done"
    previous_item_id: str | None
    item: Item


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemRetrieved(ServerEventBase):
    type: ClassVar[str] = "conversation.item.retrieved"
    item: Item  # a snapshot with its audio: the one event that carries an item's audio


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemDeleted(ServerEventBase):
    type: ClassVar[str] = "conversation.item.deleted"
    item_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemTruncated(ServerEventBase):
    type: ClassVar[str] = "conversation.item.truncated"
    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemInputAudioTranscriptionDelta(ServerEventBase):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.delta"
    item_id: str
    content_index: int
    delta: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemInputAudioTranscriptionCompleted(ServerEventBase):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.completed"
    item_id: str
    content_index: int
    transcript: str
    audio_seconds: float  # usage, billed by duration


@dataclass(frozen=True, kw_only=True, slots=True)
class ConversationItemInputAudioTranscriptionFailed(ServerEventBase):
    type: ClassVar[str] = "conversation.item.input_audio_transcription.failed"
    item_id: str
    content_index: int
    error_type: str
    code: str
    message: str


# -- output audio buffer (server-playback transports) -----------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputAudioBufferStarted(ServerEventBase):
    type: ClassVar[str] = "output_audio_buffer.started"
    response_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputAudioBufferStopped(ServerEventBase):
    type: ClassVar[str] = "output_audio_buffer.stopped"
    response_id: str


@dataclass(frozen=True, kw_only=True, slots=True)
class OutputAudioBufferCleared(ServerEventBase):
    type: ClassVar[str] = "output_audio_buffer.cleared"
    response_id: str


# -- responses --------------------------------------------------------------------------------------

ResponseStatus = Literal["in_progress", "completed", "cancelled", "failed", "incomplete"]


@dataclass(frozen=True, slots=True)
class ResponseResource:
    """A response as `response.created` / `response.done` show it (the serialiser spells it per dialect)."""

    id: str
    status: ResponseStatus
    output: tuple[Item, ...]  # snapshots
    conversation_id: str | None
    max_output_tokens: int | str
    metadata: dict[str, str] | None
    modalities: tuple[str, ...]
    voice: str
    output_format: AudioFormat
    temperature: float
    usage: dict[str, Any] | None = None  # OpenAI's usage shape; None while in progress
    cancel_reason: str | None = None  # status "cancelled": why (turn_detected, client_cancelled)
    error_type: str | None = None  # status "failed": the error's type and code
    error_code: str | None = None

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseCreated(ServerEventBase):
    type: ClassVar[str] = "response.created"
    response: ResponseResource


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseDone(ServerEventBase):
    type: ClassVar[str] = "response.done"
    response: ResponseResource


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseOutputItemAdded(ServerEventBase):
    type: ClassVar[str] = "response.output_item.added"
    response_id: str
    output_index: int
    item: Item  # a snapshot


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseOutputItemDone(ServerEventBase):
    type: ClassVar[str] = "response.output_item.done"
    response_id: str
    output_index: int
    item: Item


@dataclass(frozen=True, kw_only=True, slots=True)
class ContentEventBase(ServerEventBase):
    """Where a content event belongs: the response, its output item and the part within it."""

    response_id: str
    item_id: str
    output_index: int
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class OutputPart:
    """A content part as `response.content_part.*` show it: spoken (`audio`, with its transcript) or text."""

    type: Literal["audio", "text"]
    text: str  # the transcript of an audio part


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseContentPartAdded(ContentEventBase):
    type: ClassVar[str] = "response.content_part.added"
    part: OutputPart


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseContentPartDone(ContentEventBase):
    type: ClassVar[str] = "response.content_part.done"
    part: OutputPart


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class ResponseOutputAudioDelta(ContentEventBase):
    """Agent audio: int16 PCM at `format.rate`; the serialiser encodes it to `format` and base64 for the
    wire, a carrier encodes it to its own codec."""

    type: ClassVar[str] = "response.output_audio.delta"
    pcm: npt.NDArray[np.int16]
    format: AudioFormat


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseOutputAudioDone(ContentEventBase):
    type: ClassVar[str] = "response.output_audio.done"


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseOutputAudioTranscriptDelta(ContentEventBase):
    type: ClassVar[str] = "response.output_audio_transcript.delta"
    delta: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseOutputAudioTranscriptDone(ContentEventBase):
    type: ClassVar[str] = "response.output_audio_transcript.done"
    transcript: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseOutputTextDelta(ContentEventBase):
    type: ClassVar[str] = "response.output_text.delta"
    delta: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseOutputTextDone(ContentEventBase):
    type: ClassVar[str] = "response.output_text.done"
    text: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseFunctionCallArgumentsDelta(ServerEventBase):
    type: ClassVar[str] = "response.function_call_arguments.delta"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    delta: str


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseFunctionCallArgumentsDone(ServerEventBase):
    type: ClassVar[str] = "response.function_call_arguments.done"
    response_id: str
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str


ServerEvent = (
    SessionCreated | SessionUpdated | TranscriptionSessionUpdated | ErrorEvent
    | InputAudioBufferCleared | InputAudioBufferCommitted | InputAudioBufferSpeechStarted
    | InputAudioBufferSpeechStopped | InputAudioBufferTimeoutTriggered | InputAudioBufferDtmfEventReceived
    | ConversationItemAdded | ConversationItemDone | ConversationItemRetrieved | ConversationItemDeleted
    | ConversationItemTruncated | ConversationItemInputAudioTranscriptionDelta
    | ConversationItemInputAudioTranscriptionCompleted | ConversationItemInputAudioTranscriptionFailed
    | OutputAudioBufferStarted | OutputAudioBufferStopped | OutputAudioBufferCleared
    | ResponseCreated | ResponseDone | ResponseOutputItemAdded | ResponseOutputItemDone
    | ResponseContentPartAdded | ResponseContentPartDone | ResponseOutputAudioDelta | ResponseOutputAudioDone
    | ResponseOutputAudioTranscriptDelta | ResponseOutputAudioTranscriptDone
    | ResponseOutputTextDelta | ResponseOutputTextDone
    | ResponseFunctionCallArgumentsDelta | ResponseFunctionCallArgumentsDone
)
