"""The gateway's side of a call that OpenAI's SIP answers: what to do about each sideband event. Sans-IO.

OpenAI holds the audio (the phone's RTP reaches OpenAI, not us); the gateway watches the call's
Realtime events on the sideband WebSocket (`/v1/realtime?call_id=...`) and steers it there, as it would
steer its own calls: gateway tools run validated and redacted, a transfer becomes a REFER to the agent's
escalation target, a hang-up ends the call, key presses act like the agent's keypad menu, and what was
said goes to the call record. Events come in as parsed JSON; actions come out for the shell
(transports/openai_sip.py) to carry out; nothing here reads a socket or a clock.

    events in                                   actions out
    response.function_call_arguments.done  ->   RunTool (once per call_id)
    (the shell runs it) tool_finished      ->   Send function_call_output, then response.create once no
                                                 response is active and no tool of the turn still runs
    transfer / hang_up (from a tool)        ->   Refer / HangUp, after the reply that follows the tool's
                                                 output has been played (output_audio_buffer.stopped)
    dtmf_event_received on a menu key      ->   Send a user item naming the choice, response.create
    transcripts, response.done              ->   RecordItem, RecordUsage
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from voxgate.engines.openai_upstream import SAY_INSTRUCTIONS
from voxgate.protocol.ids import new_id
from voxgate.protocol.items import ContentPart, Item
from voxgate.session.keypad import Keypad, KeyPress

__all__ = ["Action", "HangUp", "RecordItem", "RecordUsage", "Refer", "RunTool", "Send", "SidebandAgent",
           "target_uri"]


@dataclass(frozen=True, slots=True)
class Send:
    """A client event for the sideband."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunTool:
    """A function call the model made: run it through the agent's tools, then call `tool_finished`."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Refer:
    """Move the caller: `POST /v1/realtime/calls/{call_id}/refer` with this `target_uri`."""

    target_uri: str
    reason: str


@dataclass(frozen=True, slots=True)
class HangUp:
    reason: str


@dataclass(frozen=True, slots=True)
class RecordItem:
    item: Item


@dataclass(frozen=True, slots=True)
class RecordUsage:
    usage: dict[str, Any]


Action = Send | RunTool | Refer | HangUp | RecordItem | RecordUsage


def target_uri(target: str) -> str:
    """An escalation target as a REFER's `target_uri`: an E.164 number becomes `tel:`, a bare
    `user@host` becomes `sip:`. ValueError when it is neither a number nor a URI."""
    target = target.strip()
    if target.startswith(("sip:", "sips:", "tel:")):
        return target
    if target.startswith("+") and target[1:].isdigit():
        return f"tel:{target}"
    if "@" in target and " " not in target:
        return f"sip:{target}"
    raise ValueError(f"the escalation target {target!r} is neither an E.164 number nor a sip:/tel: URI")


class SidebandAgent:
    """The agent's side of one call behind OpenAI's SIP, as its sideband shows it. Every method returns
    the actions it leads to."""

    def __init__(self, *, opening: str | None = None, menu: Mapping[str, str] | None = None) -> None:
        self.opening = opening  # said first: the AI disclosure and the greeting
        self.menu = dict(menu or {})  # key -> intent or tool name ("press 1 for orders")
        self.keypad = Keypad()
        self.turns = 0
        self.interruptions = 0
        self.outcome = ""  # "escalated" once a transfer was asked for
        self.end_reason = ""
        self.ended = False  # a Refer or HangUp went out: nothing more is asked of the call
        self.usage_seen = False
        self._active: str | None = None  # the response the upstream is generating
        self._create_pending = False  # a response.create we sent, not yet seen as response.created
        self._create_event: str | None = None  # that create's event_id: an error naming it refused it
        self._playing: set[str] = set()  # responses whose audio the caller is still hearing
        self._running: set[str] = set()  # tool calls being run
        self._seen: set[str] = set()  # function calls run and items recorded (the upstream repeats them)
        self._needs_response = False  # outputs or key presses added since the last response.create
        self._deferred: list[Refer | HangUp] = []  # wait for the caller to hear the reply first

    # -- the shell reports ----------------------------------------------------------------------------

    def start(self) -> list[Action]:
        """The sideband is attached for the first time: say the opening lines."""
        if not self.opening:
            return []
        return [self._create({"instructions": SAY_INSTRUCTIONS.format(text=self.opening), "tool_choice": "none"})]

    def reattached(self) -> list[Action]:
        """A new sideband after a drop: what the old one had in flight may never be confirmed."""
        self._create_pending = False
        self._active = None
        self._playing.clear()
        return self._next()

    def tool_finished(self, call_id: str, output: str) -> list[Action]:
        self._running.discard(call_id)
        self._needs_response = True
        actions: list[Action] = [Send({"type": "conversation.item.create", "event_id": new_id("event"),
                                       "item": {"type": "function_call_output", "call_id": call_id,
                                                "output": output}})]
        return actions + self._next()

    def transfer(self, target: str, reason: str) -> list[Action]:
        """A tool moves the caller to `target` (a number or SIP URI) once the reply to it has been heard."""
        refer = Refer(target_uri(target), reason)  # a bad target fails the tool now, not the call later
        self.outcome = "escalated"
        self.end_reason = f"transferred: {reason}"
        self._deferred.append(refer)
        return self._next()

    def transfer_failed(self, why: str) -> list[Action]:
        """The REFER was not taken: the caller is still ours, and the tools go on answering."""
        self.ended = False
        self.outcome = ""
        self.end_reason = f"transfer failed: {why}"
        return self._next()

    def hang_up(self, reason: str) -> list[Action]:
        self.end_reason = self.end_reason or reason or "hung up by the agent"
        self._deferred.append(HangUp(reason))
        return self._next()

    # -- sideband events ---------------------------------------------------------------------------

    def receive(self, event: Mapping[str, Any]) -> list[Action]:
        kind = event.get("type")
        if kind == "response.created":
            response = event.get("response")
            self._create_pending = False
            self._active = (_str(response.get("id")) if isinstance(response, Mapping) else None) or "response"
            return []
        if kind == "response.done":
            return self._response_done(event.get("response"))
        if kind == "response.function_call_arguments.done":
            return self._function_call(event.get("call_id"), event.get("name"), event.get("arguments"))
        if kind in ("response.output_item.done", "conversation.item.done"):
            return self._item_done(event.get("item"))
        if kind == "output_audio_buffer.started":
            self._playing.add(_str(event.get("response_id")) or "response")
            return []
        if kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self._playing.discard(_str(event.get("response_id")) or "response")
            if kind == "output_audio_buffer.cleared":
                self._playing.clear()
            return self._next()
        if kind == "input_audio_buffer.speech_started":
            if self._active is not None or self._playing:
                self.interruptions += 1  # OpenAI's own VAD cuts the reply; the record counts it
            return []
        if kind == "input_audio_buffer.committed":
            self.turns += 1
            return []
        if kind == "conversation.item.input_audio_transcription.completed":
            return self._heard(event.get("item_id"), event.get("transcript"))
        if kind == "input_audio_buffer.dtmf_event_received":
            return self._key(event.get("event"))
        if kind == "error":
            return self._error(event.get("error"))
        return []

    # -- internals ---------------------------------------------------------------------------------

    def _response_done(self, response: Any) -> list[Action]:
        actions: list[Action] = []
        self._active = None  # one response at a time: whichever ended, none is active now
        if isinstance(response, Mapping):
            usage = response.get("usage")
            if isinstance(usage, Mapping) and usage:
                self.usage_seen = True
                actions.append(RecordUsage(dict(usage)))
            for item in response.get("output") or []:
                actions += self._item_done(item)
        return actions + self._next()

    def _item_done(self, item: Any) -> list[Action]:
        if not isinstance(item, Mapping):
            return []
        if item.get("type") == "function_call":
            return self._function_call(item.get("call_id"), item.get("name"), item.get("arguments"))
        if item.get("type") == "message" and item.get("role") == "assistant" and item.get("status") != "in_progress":
            item_id = _str(item.get("id"))
            words = " ".join(w for part in item.get("content") or [] if isinstance(part, Mapping)
                             for w in (_str(part.get("transcript")) or _str(part.get("text")) or "",) if w)
            if item_id and words and item_id not in self._seen:
                self._seen.add(item_id)  # an item is announced by both output_item.done and response.done
                return [RecordItem(Item(id=item_id, type="message", role="assistant",
                                        content=[ContentPart(type="output_audio", transcript=words)]))]
        return []

    def _function_call(self, call_id: Any, name: Any, arguments: Any) -> list[Action]:
        call_id, name = _str(call_id), _str(name)
        if not call_id or not name or call_id in self._seen or self.ended:
            return []
        self._seen.add(call_id)
        self._running.add(call_id)
        return [RunTool(call_id, name, arguments if isinstance(arguments, str) else "{}")]

    def _heard(self, item_id: Any, transcript: Any) -> list[Action]:
        item_id, text = _str(item_id), _str(transcript)
        if not item_id or text is None:
            return []
        return [RecordItem(Item(id=item_id, type="message", role="user",
                                content=[ContentPart(type="input_audio", transcript=text)]))]

    def _key(self, key: Any) -> list[Action]:
        key = _str(key)
        if not key or len(key) != 1 or self.ended:
            return []
        if self.keypad.press(key, self.menu) is not KeyPress.MENU:
            return []
        choice = self.menu[self.keypad.take_menu_key() or key]
        self.turns += 1
        self._needs_response = True
        item = {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"(The caller pressed {key} on the keypad: {choice}.)"}]}
        actions: list[Action] = [Send({"type": "conversation.item.create", "event_id": new_id("event"), "item": item})]
        if self._active is not None:  # a key press interrupts like speech does
            actions.append(Send({"type": "response.cancel", "event_id": new_id("event")}))
        return actions + self._next()

    def _error(self, error: Any) -> list[Action]:
        if not isinstance(error, Mapping):
            return []
        named = _str(error.get("event_id"))
        if named is not None and named == self._create_event:
            self._create_event = None
            self._create_pending = False
            if error.get("code") == "conversation_already_has_active_response":
                # The model was already answering (the caller spoke as we asked): ask again once it is done.
                self._needs_response = True
                return []
            return self._next()
        if named is None and self._create_pending:  # an upstream that does not say which event failed
            self._create_pending = False
            return self._next()
        return []

    def _create(self, response: dict[str, Any] | None = None) -> Send:
        self._create_pending = True
        self._create_event = new_id("event")
        event: dict[str, Any] = {"type": "response.create", "event_id": self._create_event}
        if response is not None:
            event["response"] = response
        return Send(event)

    def _next(self) -> list[Action]:
        """Ask for the next response, or carry out what waited for the last one to be heard."""
        if self.ended or self._running or self._active is not None or self._create_pending:
            return []
        if self._needs_response:
            self._needs_response = False
            return [self._create()]
        if self._deferred and not self._playing:
            first, self._deferred = self._deferred[0], []
            self.ended = True
            return [first]
        return []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
