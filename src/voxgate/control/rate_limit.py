"""Rate limits on the routes that open calls or mint keys: per key and per source address, 429 beyond.

Each limit is a token bucket (`rate` a second, up to `burst` at once) per key or per address. The source
is checked before the key is looked up, so a flood of made-up keys costs a dictionary lookup, not a
database query; the key is bucketed by a hash of what the client presented (the secret itself is never
kept). Carrier webhooks are not limited here: they come from the carrier's few addresses, are signed,
and admission control bounds the calls they open.

    limits = RateLimits(key_rate=20, key_burst=100, source_rate=20, source_burst=100)
    Route("/v1/realtime/calls", rate_limited(create_call, "calls"), methods=["POST"])

The buckets read time only through `now`, so tests run them on their own clock.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from voxgate.control.auth import bearer_token
from voxgate.control.problems import problem
from voxgate.observability import metrics

__all__ = ["RateLimiter", "RateLimits", "TokenBucket", "rate_limited", "rate_limited_websocket"]

MAX_TRACKED = 10_000  # buckets kept per limiter; the least recently used is forgotten beyond it


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; one request takes one token."""

    rate: float
    burst: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """0 if a token was taken; otherwise the seconds until one will be there (nothing taken)."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """A token bucket per key (a source address, a hashed API key), in bounded memory."""

    def __init__(self, rate: float, burst: int, *, max_tracked: int = MAX_TRACKED,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._max_tracked = max_tracked
        self._now = now
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, key: str) -> float:
        """0 when `key` may go ahead (a token is taken); else seconds to wait before trying again."""
        if not self.enabled:
            return 0.0
        now = self._now()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, float(self.burst), now)
            if len(self._buckets) > self._max_tracked:
                self._buckets.popitem(last=False)  # forgetting a bucket only ever lets its owner in
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)


class RateLimits:
    """The gateway's two limits on call-opening and key-minting routes. A rate of 0 turns one off."""

    def __init__(self, *, key_rate: float, key_burst: int, source_rate: float, source_burst: int,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.by_key = RateLimiter(key_rate, key_burst, now=now)
        self.by_source = RateLimiter(source_rate, source_burst, now=now)

    def check(self, source: str | None, token: str | None, route: str) -> float:
        """0 to go ahead, else the seconds to wait (the request is counted as limited)."""
        for scope, limiter, key in (("source", self.by_source, source),
                                    ("key", self.by_key, _token_key(token) if token else None)):
            if key is None:
                continue
            wait_s = limiter.check(key)
            if wait_s:
                metrics.RATE_LIMITED.labels(scope, route).inc()
                return wait_s
        return 0.0


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def _wait(connection: HTTPConnection, route: str) -> float:
    limits: RateLimits = connection.app.state.rate_limits
    subprotocols = list(connection.scope.get("subprotocols") or [])
    source = connection.client.host if connection.client else None
    return limits.check(source, bearer_token(connection.headers, subprotocols), route)


def _too_many(wait_s: float) -> Response:
    retry_after = max(1, math.ceil(wait_s))
    return problem(429, "rate_limit_exceeded", f"Too many requests; try again in {retry_after} s.",
                   headers={"Retry-After": str(retry_after)})


def rate_limited(endpoint: Callable[[Request], Awaitable[Response]],
                 route: str) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint` behind the rate limits (`route` labels the metric)."""

    async def limited(request: Request) -> Response:
        wait_s = _wait(request, route)
        return _too_many(wait_s) if wait_s else await endpoint(request)

    return limited


def rate_limited_websocket(endpoint: Callable[[WebSocket], Awaitable[None]],
                           route: str) -> Callable[[WebSocket], Awaitable[None]]:
    """A WebSocket `endpoint` behind the rate limits: refused with HTTP 429 at the handshake."""

    async def limited(websocket: WebSocket) -> None:
        wait_s = _wait(websocket, route)
        if wait_s:
            await websocket.send_denial_response(_too_many(wait_s))
            return
        await endpoint(websocket)

    return limited
