"""Errors over HTTP, in OpenAI's REST shape so SDK clients surface them properly."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

from voxgate.admission import Refusal


def problem(status: int, code: str, message: str, *, param: str | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"type": kind, "code": code, "message": message, "param": param}},
                        status_code=status, headers=headers)


def refused(refusal: Refusal) -> JSONResponse:
    """A call admission control turned away: 503 (gateway full or draining) or 429 (the key's own limit),
    with `Retry-After`."""
    status = 429 if refusal.reason == "key_limit" else 503
    return problem(status, refusal.code, refusal.message, headers={"Retry-After": str(refusal.retry_after_s)})
