"""Sending a signed webhook to an app, Standard Webhooks style, until it takes it: the thin shell round
`standard_webhooks.sign` and `call_control.retry_delays`.

Every attempt carries the same `webhook-id` (so an app tells a retry from a new event) and a fresh
timestamp and signature (so a retry minutes later still passes the app's ±300 s check). An attempt that
fails (no connection, a timeout, any status but 2xx) is retried after a backoff; 4xx are retried too, as
OpenAI and Standard Webhooks senders do, since an app that is still starting answers them. The secret never
reaches a log: only the URL's host and the status do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from voxgate.control.call_control import retry_delays
from voxgate.control.standard_webhooks import sign
from voxgate.observability import metrics

__all__ = ["USER_AGENT", "deliver"]

log = logging.getLogger("voxgate.call_control")

USER_AGENT = "voxgate/1.0 (call control webhooks)"


async def deliver(http: httpx.AsyncClient, url: str, secret: str, webhook_id: str, body: bytes, *,
                  attempts: int, first_retry_s: float, timeout_s: float, now: Callable[[], float]) -> bool:
    """POST `body` to `url` until a 2xx, at most `attempts` times; True when the app took it. `now` is the
    wall clock the timestamps come from. Cancel the task to stop retrying (the call was decided)."""
    host = urlsplit(url).hostname or "?"
    waits = retry_delays(attempts, first_retry_s)
    for attempt in range(1, attempts + 1):
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   **sign(secret, webhook_id, int(now()), body)}
        try:
            response = await http.post(url, content=body, headers=headers, timeout=timeout_s)
            if 200 <= response.status_code < 300:
                metrics.CALL_CONTROL_WEBHOOKS.labels("delivered").inc()
                return True
            outcome = f"answered {response.status_code}"
        except httpx.HTTPError as exc:
            outcome = f"failed ({type(exc).__name__})"
        metrics.CALL_CONTROL_WEBHOOKS.labels("failed").inc()
        log.warning("webhook %s to %s %s (attempt %d of %d)", webhook_id, host, outcome, attempt, attempts)
        if attempt <= len(waits):
            await asyncio.sleep(waits[attempt - 1])
    metrics.CALL_CONTROL_WEBHOOKS.labels("gave_up").inc()
    return False
