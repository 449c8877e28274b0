"""The one root of every error the SIP and RTP cores raise on input they refuse.

Each core has its own subclass (UriError, HeaderError, MessageError, SdpError, RtpError, ...) with a
default `code`; a shell that only needs to count and carry on catches `SipError` and labels its counter
with `error.code`, a short stable name.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["SipError"]


class SipError(ValueError):
    """Input a core refuses. `code` is a short stable name (a metric label), `str(error)` the detail."""

    default_code: ClassVar[str] = "bad_input"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
