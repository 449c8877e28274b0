"""Errors over HTTP, in OpenAI's REST shape so SDK clients surface them properly."""

from __future__ import annotations

from starlette.responses import JSONResponse


def problem(status: int, code: str, message: str, *, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"type": kind, "code": code, "message": message, "param": param}},
                        status_code=status)
