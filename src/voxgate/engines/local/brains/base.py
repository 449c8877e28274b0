"""A brain decides what the agent does next in the local engine: say something, or call a tool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from voxgate.engines.base import ResponseRequest


@dataclass(frozen=True)
class Say:
    text: str
    # Set when the brain considers the caller's task finished (for the task-completion KPI).
    completes_task: bool = False


@dataclass(frozen=True)
class CallTool:
    name: str
    arguments: dict[str, Any]


BrainDecision = Say | CallTool


class Brain(Protocol):
    def decide(self, request: ResponseRequest) -> BrainDecision:
        """Decide from the history's latest entries (a user utterance or a tool's output)."""
        ...
