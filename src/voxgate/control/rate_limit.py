"""Rate limits on the routes that open calls or mint keys: per key and per source address, 429 beyond.

Each limit is a token bucket (`rate` a second, up to `burst` at once) per key or per address. The source
is checked before the key is looked up, so a flood of made-up keys costs a dictionary lookup, not a
database query; the key is bucketed by a hash of what the client presented (the secret itself is never
kept). Carrier webhooks are not limited here: they come from the carrier's few addresses, are signed,
and admission control bounds the calls they open.

    limits = RateLimits(key_rate=20, key_burst=100, source_rate=20, source_burst=100)
    Route("/v1/realtime/calls", rate_limited(create_call, "calls"), methods=["POST"])

The buckets read time only through `now`, so tests run them on their own clock.

Several gateways sharing a Redis (`redis_url`) share their buckets too (`SharedRateLimits`): the same
token bucket, kept in Redis and updated by one script on Redis's clock, so a client spreading its
requests over the nodes gets no more than from one. If Redis fails, each node falls back to its own
buckets (logged) rather than refusing everyone or letting everyone in.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from voxgate.cluster.relay import RELAYED
from voxgate.control.auth import bearer_token
from voxgate.control.problems import problem
from voxgate.observability import metrics

if TYPE_CHECKING:
    from voxgate.config import Settings

__all__ = ["RateLimiter", "RateLimits", "SharedRateLimits", "TokenBucket", "rate_limited", "rate_limited_websocket"]

log = logging.getLogger("voxgate")

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

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(key_rate=settings.rate_limit_per_key, key_burst=settings.rate_limit_per_key_burst,
                   source_rate=settings.rate_limit_per_source, source_burst=settings.rate_limit_per_source_burst)

    def _buckets(self, source: str | None, token: str | None) -> Iterator[tuple[str, RateLimiter, str]]:
        """(scope, limiter, bucket key) to check, the source first; limits turned off are left out."""
        for scope, limiter, key in (("source", self.by_source, source),
                                    ("key", self.by_key, _token_key(token) if token else None)):
            if key is not None and limiter.enabled:
                yield scope, limiter, key

    def check(self, source: str | None, token: str | None, route: str) -> float:
        """0 to go ahead, else the seconds to wait (the request is counted as limited)."""
        for scope, limiter, key in self._buckets(source, token):
            wait_s = limiter.check(key)
            if wait_s:
                metrics.RATE_LIMITED.labels(scope, route).inc()
                return wait_s
        return 0.0

    async def wait_s(self, source: str | None, token: str | None, route: str) -> float:
        """`check`, for callers that serve every kind of limits (the shared ones ask Redis)."""
        return self.check(source, token, route)


# The token buckets of one request in Redis, on Redis's clock (every node agrees on it), in one round trip:
# KEYS are the buckets in order, ARGV (rate, burst, expiry ms) for each. Like `RateLimits.check`, it stops
# at the first bucket that is empty; returns {its position from 1, the wait as a string} (Lua numbers
# come back as integers), or {0, "0"} when every bucket gave a token.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local held = redis.call('HMGET', key, 'tokens', 'updated')
  local tokens, updated = tonumber(held[1]) or burst, tonumber(held[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
  local wait = 0
  if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'updated', tostring(now))
  redis.call('PEXPIRE', key, ARGV[3 * i])
  if wait > 0 then return {i, tostring(wait)} end
end
return {0, '0'}
"""


class SharedRateLimits(RateLimits):
    """`RateLimits` whose buckets live in Redis, shared by every node (this node's own are the fallback)."""

    def __init__(self, redis: Any, limits: RateLimits) -> None:
        """`limits`' rates and bursts, kept in `redis` (a redis.asyncio client); its buckets are the fallback."""
        self.by_key, self.by_source = limits.by_key, limits.by_source
        self._take = redis.register_script(_TAKE)
        self._failing = False

    async def wait_s(self, source: str | None, token: str | None, route: str) -> float:
        from redis.exceptions import RedisError

        buckets = list(self._buckets(source, token))
        if not buckets:
            return 0.0
        args: list[float | int] = []
        for _, limiter, _ in buckets:  # a full bucket refills in burst/rate s: after that its entry says nothing
            args += [limiter.rate, limiter.burst, math.ceil(limiter.burst / limiter.rate * 1000) + 1000]
        try:
            empty, wait = await self._take(keys=[f"voxgate:rate:{scope}:{key}" for scope, _, key in buckets],
                                           args=args)
        except (RedisError, OSError) as exc:
            if not self._failing:
                log.warning("shared rate limits unreachable (%s): this node's own limits apply", exc)
            self._failing = True
            return self.check(source, token, route)
        self._failing = False
        if int(empty):
            metrics.RATE_LIMITED.labels(buckets[int(empty) - 1][0], route).inc()
        return float(wait)


def _token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


async def _wait(connection: HTTPConnection, route: str) -> float:
    if connection.scope.get(RELAYED):  # counted on the node the client reached, which carried it here
        return 0.0
    limits: RateLimits = connection.app.state.rate_limits
    subprotocols = list(connection.scope.get("subprotocols") or [])
    source = connection.client.host if connection.client else None
    return await limits.wait_s(source, bearer_token(connection.headers, subprotocols), route)


def _too_many(wait_s: float) -> Response:
    retry_after = max(1, math.ceil(wait_s))
    return problem(429, "rate_limit_exceeded", f"Too many requests; try again in {retry_after} s.",
                   headers={"Retry-After": str(retry_after)})


def rate_limited(endpoint: Callable[[Request], Awaitable[Response]],
                 route: str) -> Callable[[Request], Awaitable[Response]]:
    """`endpoint` behind the rate limits (`route` labels the metric)."""

    async def limited(request: Request) -> Response:
        wait_s = await _wait(request, route)
        return _too_many(wait_s) if wait_s else await endpoint(request)

    return limited


def rate_limited_websocket(endpoint: Callable[[WebSocket], Awaitable[None]],
                           route: str) -> Callable[[WebSocket], Awaitable[None]]:
    """A WebSocket `endpoint` behind the rate limits: refused with HTTP 429 at the handshake."""

    async def limited(websocket: WebSocket) -> None:
        wait_s = await _wait(websocket, route)
        if wait_s:
            await websocket.send_denial_response(_too_many(wait_s))
            return
        await endpoint(websocket)

    return limited
