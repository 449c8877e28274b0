"""The caller's consent to being recorded: asked after the notice, answered by a key or by voice (pure state).

Two-party-consent states want the caller's agreement, not just a notice; the answer (how it was given,
and what was pressed or said, redacted) goes into the call record as the proof.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from voxgate.agents import Recording
from voxgate.session.yes_no import read_yes_no

__all__ = ["Consent", "ConsentState", "spoken_answer"]

ConsentState = Literal["notice", "pending", "agreed", "declined"]


def spoken_answer(text: str) -> bool | None:
    """True for a yes, False for a no, None when the words are neither (or the caller is unsure)."""
    return read_yes_no(text)


@dataclass
class Consent:
    policy: Recording
    state: ConsentState = "notice"
    by: Literal["keypad", "voice"] | None = None
    answer: str | None = None
    prompts: int = 1  # times the question was asked (the notice asks it first)

    def __post_init__(self) -> None:
        if self.policy.consent != "notice":
            self.state = "pending"

    @property
    def pending(self) -> bool:
        return self.state == "pending"

    def key(self, digit: str) -> bool | None:
        """A key pressed while the answer is awaited: agreed, declined, or None (not an answer)."""
        if not self.pending or self.policy.consent not in ("keypad", "either"):
            return None
        if digit in (self.policy.agree_key, self.policy.decline_key):
            return self._settle(digit == self.policy.agree_key, "keypad", digit)
        return None

    def heard(self, transcript: str) -> bool | None:
        """What the caller said while the answer is awaited: agreed, declined, or None (ask again, or, once
        asked `max_prompts` times, declined: no recording without a clear yes)."""
        if not self.pending:
            return None
        verdict = spoken_answer(transcript) if self.policy.consent in ("voice", "either") else None
        if verdict is not None:
            return self._settle(verdict, "voice", transcript)
        if self.prompts >= self.policy.max_prompts:
            return self._settle(False, "voice", transcript)
        self.prompts += 1
        return None

    def _settle(self, agreed: bool, by: Literal["keypad", "voice"], answer: str) -> bool:
        self.state = "agreed" if agreed else "declined"
        self.by, self.answer = by, answer
        return agreed

    def record(self) -> dict[str, Any]:
        """The call record's account of it (the answer as given: the session redacts a spoken one)."""
        return {"mode": self.policy.consent, "state": self.state, "by": self.by, "answer": self.answer}
