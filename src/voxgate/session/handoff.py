"""The hand-off to a person: who is calling and why, as a summary card and as the words a person hears.

When the agent hands a call over (the `transfer_to_human` tool, an engine failure), the session makes a
`Handoff`: the caller, the agent, the reason in the model's words and the caller's last words, all
redacted. The gateway queues it for operators (`voxgate.escalations`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from voxgate.protocol.items import Item
from voxgate.tools.redaction import redact

__all__ = ["BROWSER_TRANSPORTS", "Handoff", "HandoffState", "handoff_of"]

SUMMARY_TURNS = 3  # the caller's last turns on the card
MAX_TURN_CHARS = 240
BROWSER_TRANSPORTS = frozenset({"webrtc", "realtime_ws"})

HandoffState = Literal["waiting", "taken_over", "transferred", "ended"]


@dataclass
class Handoff:
    call_id: str
    agent: str
    transport: str
    caller: str | None
    reason: str
    said: list[str]  # the caller's last turns, oldest first
    owner: str | None = None  # the key whose call it is (None: the gateway's own)
    requested_at: float = field(default_factory=time.time)
    state: HandoffState = "waiting"
    taken_by: str | None = None  # the key of the operator who took a browser call over

    def whisper(self) -> str:
        """What a person hears before the caller is put through (a SIP whisper), and the card's headline."""
        who = f"a caller at {self.caller}" if self.caller else "a caller"
        text = f"Incoming call: {self.reason.rstrip('.')}. From {who}, handed over by the {self.agent} agent."
        if self.said:
            text += f" They said: {self.said[-1]}"
        return text

    def card(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "agent": self.agent, "transport": self.transport, "caller": self.caller,
                "reason": self.reason, "said": list(self.said), "summary": self.whisper(),
                "requested_at": int(self.requested_at), "state": self.state,
                "taken_by": self.taken_by}


def handoff_of(*, call_id: str, agent: str, transport: str, caller: str | None, reason: str,
               items: list[Item], owner: str | None = None) -> Handoff:
    """The summary card of a call being handed over, from its conversation (every text redacted)."""
    said = [item.text for item in items if item.type == "message" and item.role == "user" and item.text]
    turns = [redact(text[:MAX_TURN_CHARS])[0] for text in said[-SUMMARY_TURNS:]]
    return Handoff(call_id, agent, transport, redact(caller)[0] if caller else None, redact(reason)[0], turns, owner,
                   state="waiting" if transport in BROWSER_TRANSPORTS else "transferred")
