"""The HTTP listener: uvicorn as `voxgate serve` and the embedded gateway run it, with the limits that keep
one client from locking out the rest.

- **Open files**: the soft `RLIMIT_NOFILE` is raised to the hard limit at start (1,100 idle connections
  used to hit a 1,024 soft limit and lock everyone out).
- **Connection cap**: at most `max_connections` open at once (never more than the file limit allows).
  At the cap, a new connection first evicts the oldest one that has not yet sent a whole request (an idle
  or trickling socket, answered 408); when every open connection is busy (a call, a request being
  served) the newcomer gets a 503 with `Retry-After` and is closed. uvicorn's own `limit_concurrency`
  (twice the cap: connections and requests in flight) is a backstop.
- **Request timeout**: a request must arrive whole (head and body) within `http_request_timeout_s` of
  its first byte, and a new connection must send one within that time of connecting: otherwise 408 and
  closed. This covers slowloris, which uvicorn (no header timeout of its own) does not. Idle time
  between requests is uvicorn's `timeout_keep_alive` (`http_keep_alive_s`).

The guard is an asyncio protocol wrapped around uvicorn's own HTTP protocol (uvicorn takes a protocol
class as its `http` setting): it sees the bytes first (`request_framing.py` says where requests end),
forwards everything, and lets go of a connection once it is upgraded to a WebSocket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from collections import OrderedDict
from typing import Any, ClassVar, cast

import uvicorn
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

from voxgate.config import Settings
from voxgate.observability import metrics
from voxgate.request_framing import RequestFraming

__all__ = ["ConnectionGuard", "GuardedHttpProtocol", "raise_open_file_limit", "server_config"]

log = logging.getLogger("voxgate")

FD_RESERVE = 256  # descriptors kept back from connections: database, models, carrier REST, logs
RETRY_AFTER_S = 5
GRACEFUL_SHUTDOWN_S = 5  # after a drain, what uvicorn waits for leftover requests before cancelling them


def _response(status: str, code: str, message: str, extra: str = "") -> bytes:
    kind = "invalid_request_error" if status.startswith("4") else "server_error"
    body = json.dumps({"error": {"type": kind, "code": code, "message": message, "param": None}}).encode()
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"{extra}connection: close\r\n\r\n").encode() + body


REFUSED = _response("503 Service Unavailable", "too_many_connections",
                    "The gateway has too many open connections; try again later.", f"retry-after: {RETRY_AFTER_S}\r\n")
TIMED_OUT = _response("408 Request Timeout", "request_timeout", "The request did not arrive in time.")


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


class ConnectionGuard:
    """The listener's open connections, capped; oldest-first so the longest idle goes first."""

    def __init__(self, max_connections: int, request_timeout_s: float) -> None:
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self._open: OrderedDict[GuardedHttpProtocol, None] = OrderedDict()
        self._prune_at = 64  # when to look for ended WebSockets again: amortised O(1) per connection

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, protocol: GuardedHttpProtocol) -> bool:
        """Room for one more connection, making it if it must; False when every slot is busy."""
        if len(self._open) >= min(self.max_connections, self._prune_at):
            for gone in [p for p in self._open if p.closing]:  # WebSockets end without telling us
                del self._open[gone]
            self._prune_at = max(64, 2 * len(self._open))
        if len(self._open) >= self.max_connections:
            idle = next((p for p in self._open if p.evictable), None)
            if idle is None:
                return False
            del self._open[idle]
            idle.close(TIMED_OUT, "evicted")
        self._open[protocol] = None
        return True

    def forget(self, protocol: GuardedHttpProtocol) -> None:
        self._open.pop(protocol, None)


class GuardedHttpProtocol(asyncio.Protocol):
    """uvicorn's HTTP protocol behind the guard. Subclassed per server by `server_config` (the guard)."""

    guard: ClassVar[ConnectionGuard]
    inner_class: ClassVar[type[asyncio.Protocol]]

    def __init__(self, **kwargs: Any) -> None:
        # config, server_state, app_state: what uvicorn gives the protocol class it is configured with
        self._inner: asyncio.Protocol | None = self.inner_class(**kwargs)  # type: ignore[call-arg]
        self._framing = RequestFraming()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._released = False  # upgraded or closed: the guard no longer times this connection

    @property
    def closing(self) -> bool:
        return self._transport is None or self._transport.is_closing()

    @property
    def evictable(self) -> bool:
        """Open but not yet a whole request: an idle or trickling socket, not a client being served."""
        return not self._released and self._framing.completed == 0 and not self.closing

    def close(self, response: bytes, reason: str) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        metrics.CONNECTIONS_CLOSED.labels(reason).inc()
        if self._framing.completed == 0:  # nothing answered yet on this connection: room for our answer
            transport.write(response)
        transport.close()

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's classes, same API
        transport = self._transport
        if not self.guard.admit(self):
            metrics.CONNECTIONS_CLOSED.labels("over_capacity").inc()
            transport.write(REFUSED)
            transport.close()
            self._inner = None
            return
        assert self._inner is not None
        self._inner.connection_made(transport)
        self._arm()  # a new connection must send a whole request in time, like a trickled one

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is None:
            return
        if not self._released:
            if self._framing.receive(data) and self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._framing.reading and self._timer is None:
                self._arm()
        inner.data_received(data)
        transport = self._transport
        if transport is not None and transport.get_protocol() is not self:
            # Now a WebSocket, served by its own protocol (pings, the app's timeouts): the transport no
            # longer calls this one, so let go of the HTTP protocol; the guard keeps counting the connection.
            self._release()
            self._inner = None
        elif not self._framing.watching:
            self._release()  # an upgrade this framing cannot follow; uvicorn serves (or refuses) it

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        self.guard.forget(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    # -- the request deadline -----------------------------------------------------------------------

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.guard.request_timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        if not self._released:
            log.info("closing a connection whose request did not arrive within %.1f s", self.guard.request_timeout_s)
            self.close(TIMED_OUT, "request_timeout")

    def _release(self) -> None:
        self._released = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def connection_cap(settings: Settings, open_files: int) -> int:
    """`max_connections`, within what the open-file limit leaves after the reserve."""
    cap = min(settings.max_connections, max(16, open_files - FD_RESERVE))
    if cap < settings.max_connections:
        log.warning("max_connections lowered to %d: the open-file limit is %d", cap, open_files)
    return cap


def server_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn's config for `app` with the listener's limits; `options` are uvicorn settings (ws, log_level)."""
    cap = connection_cap(settings, raise_open_file_limit())
    guarded = type("GuardedHttp", (GuardedHttpProtocol,), {
        "guard": ConnectionGuard(cap, settings.http_request_timeout_s),
        "inner_class": import_from_string(HTTP_PROTOCOLS["auto"]),
    })
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, http=guarded, ws_max_size=settings.max_message_bytes * 2,
        # A backstop on requests in flight. Above the guard's cap: uvicorn counts a closed connection until
        # its connection_lost, a loop iteration later, and must not answer 503 for one being replaced.
        limit_concurrency=2 * cap,
        timeout_keep_alive=settings.http_keep_alive_s, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        **options)
