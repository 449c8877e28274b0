"""The `error` event: every bad client event is answered with one, and the session carries on."""

from __future__ import annotations

from voxgate.protocol.server_events import ErrorEvent


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

    def to_event(self) -> ErrorEvent:
        return ErrorEvent(error_type=self.type, code=self.code, message=self.message, param=self.param,
                          client_event_id=self.event_id)
