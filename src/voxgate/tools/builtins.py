"""Tools the gateway itself implements, acting on the call: transfer_to_human, end_call, send_dtmf.

They act through the `CallActions` the session hands in with each call, so the same tool works on a
phone line (SIP REFER, Twilio/Telnyx transfer), a browser call or a test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voxgate.tools.registry import ToolContext

__all__ = ["BUILTINS", "Builtin"]


@dataclass(frozen=True)
class Builtin:
    description: str  # used when the agent YAML gives none
    parameters: dict[str, Any]  # used when the agent YAML gives none
    run: Callable[[dict[str, Any], ToolContext], Awaitable[dict[str, Any]]]


async def _transfer_to_human(arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    target = ctx.agent.escalation.target
    await ctx.actions.transfer(target, arguments.get("reason", ""))
    return {"status": "transferring", "target": target}


async def _end_call(arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    await ctx.actions.hang_up(arguments.get("reason", ""))
    return {"status": "ending_call"}


async def _send_dtmf(arguments: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    digits = arguments["digits"]
    await ctx.actions.send_dtmf(digits)
    return {"status": "sent", "digits": digits}


def _reason_schema(what: str) -> dict[str, Any]:
    # The reason is optional: a transfer or hang-up must not fail because the model left it out.
    return {
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": 500, "description": what}},
        "additionalProperties": False,
    }


BUILTINS: dict[str, Builtin] = {
    "transfer_to_human": Builtin(
        description="Transfer the caller to a human colleague. Use when the caller asks for a person "
                    "or when you cannot help.",
        parameters=_reason_schema("Why the caller needs a human, for the colleague who picks up."),
        run=_transfer_to_human,
    ),
    "end_call": Builtin(
        description="End the call after saying goodbye, once the caller's request is complete.",
        parameters=_reason_schema("Why the call is ending."),
        run=_end_call,
    ),
    "send_dtmf": Builtin(
        description="Press keys on the phone keypad, e.g. to navigate a phone menu.",
        parameters={
            "type": "object",
            "properties": {"digits": {"type": "string", "pattern": "^[0-9*#A-D]+$", "maxLength": 64,
                                      "description": "Keys to press: 0-9, *, #, A-D."}},
            "required": ["digits"],
            "additionalProperties": False,
        },
        run=_send_dtmf,
    ),
}
