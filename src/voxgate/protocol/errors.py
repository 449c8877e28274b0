"""The `error` event: every bad client event is answered with one, and the session carries on."""

from __future__ import annotations

from typing import Any

from voxgate.protocol.ids import new_id


class RealtimeError(Exception):
    """A client mistake (or a server fault) to be reported as an `error` event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.type = type

    def to_event(self) -> dict[str, Any]:
        return error_event(self.code, self.message, param=self.param, event_id=self.event_id, type=self.type)


def error_event(
    code: str | None,
    message: str,
    *,
    param: str | None = None,
    event_id: str | None = None,
    type: str = "invalid_request_error",
) -> dict[str, Any]:
    return {
        "type": "error",
        "event_id": new_id("event"),
        "error": {"type": type, "code": code, "message": message, "param": param, "event_id": event_id},
    }
