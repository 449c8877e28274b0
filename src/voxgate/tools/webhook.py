"""Tools that live behind an HTTP endpoint, named in the agent YAML by `webhook`.

POST sends the arguments as a JSON body; GET sends them as query parameters. Every attempt carries
`Idempotency-Key: <call_id>`, so the endpoint can recognise a retry of a call it already served.
Connection failures, 429 and 5xx are retried with exponential backoff (honouring a short Retry-After);
other 4xx answers are final. An attempt that times out is not retried: a hung endpoint usually stays
hung, and the caller is waiting on the line. A JSON body is the tool's result; any other body comes
back as {"text": ...}. An answer over the spec's `max_response_bytes` fails the tool without being read
further, and a JSON body nested deeper than the project's bound is treated as text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from voxgate.agents import WebhookSpec
from voxgate.protocol.errors import RealtimeError
from voxgate.protocol.json_text import parse_json

__all__ = ["WebhookError", "WebhookTool"]

_MAX_BACKOFF_S = 2.0
_ERROR_BODY_CHARS = 200


class WebhookError(Exception):
    """The endpoint failed after every allowed attempt; the message says how."""

    def __init__(self, message: str, *, status_code: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.attempts = attempts


def _retryable(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


def _retry_after(response: _Answer) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: use our own backoff rather than parse clocks
    return max(0.0, seconds)


def _query(arguments: dict[str, Any]) -> dict[str, Any]:
    # Scalars and lists of scalars map onto query strings as they are; objects travel as JSON text.
    return {key: json.dumps(value) if isinstance(value, dict) else value for key, value in arguments.items()}


class _Answer:
    """What the endpoint answered: its status, headers and a body read up to the spec's bound."""

    def __init__(self, response: httpx.Response, body: bytes) -> None:
        self.status_code = response.status_code
        self.is_success = response.is_success
        self.headers = response.headers
        self.text = body.decode(response.encoding or "utf-8", errors="replace")


def _body_result(answer: _Answer) -> Any:
    try:
        return parse_json(answer.text, "The tool's answer")
    except RealtimeError:
        return {"text": answer.text}


class WebhookTool:
    """Calls one endpoint. `client` is asked for the shared httpx client on each call."""

    def __init__(self, spec: WebhookSpec, client: Callable[[], httpx.AsyncClient], *,
                 backoff_s: float = 0.25, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.spec = spec
        self._client = client
        self._backoff_s = backoff_s
        self._sleep = sleep

    async def run(self, arguments: dict[str, Any], call_id: str) -> Any:
        """Return the endpoint's result; raise WebhookError, or TimeoutError when an attempt times out."""
        attempts = self.spec.retries + 1
        for attempt in range(1, attempts + 1):
            delay = self._backoff_s * 2 ** (attempt - 1)
            try:
                async with asyncio.timeout(self.spec.timeout_s):
                    response = await self._send(arguments, call_id)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                if attempt == attempts:
                    raise WebhookError(f"cannot reach {self.spec.url}: {type(exc).__name__}",
                                       attempts=attempt) from exc
            except httpx.TimeoutException as exc:
                raise TimeoutError(f"{self.spec.url} did not answer in {self.spec.timeout_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise WebhookError(f"request to {self.spec.url} failed: {type(exc).__name__}: {exc}",
                                   attempts=attempt) from exc
            else:
                if response.is_success:
                    return _body_result(response)
                if not _retryable(response.status_code) or attempt == attempts:
                    body = response.text[:_ERROR_BODY_CHARS]
                    raise WebhookError(f"{self.spec.url} answered HTTP {response.status_code}: {body}",
                                       status_code=response.status_code, attempts=attempt)
                retry_after = _retry_after(response)
                if retry_after is not None:
                    delay = retry_after
            await self._sleep(min(delay, _MAX_BACKOFF_S))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send(self, arguments: dict[str, Any], call_id: str) -> _Answer:
        headers = {**self.spec.headers, "Idempotency-Key": call_id}
        client = self._client()
        if self.spec.method == "GET":
            request = client.build_request("GET", self.spec.url, params=_query(arguments), headers=headers,
                                           timeout=httpx.Timeout(self.spec.timeout_s))
        else:
            request = client.build_request("POST", self.spec.url, json=arguments, headers=headers,
                                           timeout=httpx.Timeout(self.spec.timeout_s))
        response = await client.send(request, stream=True)
        try:
            limit = self.spec.max_response_bytes
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise WebhookError(f"{self.spec.url} answered {declared} bytes, over the {limit}-byte limit",
                                   status_code=response.status_code)
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    raise WebhookError(f"{self.spec.url} answered more than the {limit}-byte limit",
                                       status_code=response.status_code)
            return _Answer(response, bytes(body))
        finally:
            await response.aclose()
