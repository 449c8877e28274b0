"""The listener: voxgate's own server for its ASGI app, HTTP/1.1 and WebSocket on one port, with the limits
that keep one client from locking out the rest.

Built on public, sans-IO protocol cores under plain asyncio protocols: h11 reads and writes HTTP/1.1
(`HttpConnection`), websockets' `ServerProtocol` does the WebSocket handshake and its odd frames
(`WebSocketConnection`). Owning the connections is what lets a phone call's 50 media messages a second
skip ASGI's per-message queue and task switch (the `DirectSocket` extension), and what lets the guard
below see every connection from its first byte, with no other server's internals to lean on.

- **Open files**: the soft `RLIMIT_NOFILE` is raised to the hard limit at start (1,100 idle connections
  used to hit a 1,024 soft limit and lock everyone out).
- **Connection cap**: at most `max_connections` open at once (never more than the file limit allows).
  At the cap, a new connection first evicts the oldest one that has not yet sent a whole request (an idle
  or trickling socket, answered 408); when every open connection is busy (a call, a request being
  served) the newcomer gets a 503 with `Retry-After` and is closed.
- **Request timeout**: a request must arrive whole (head and body) within `http_request_timeout_s` of
  its first byte, and a new connection must send one within that time of connecting: otherwise 408 and
  closed (slowloris). Idle time between requests is `http_keep_alive_s`.
- **WebSockets**: a ping every `ws_ping_interval_s`; a peer that has not answered by the next is dropped.
- **Proxies**: `X-Forwarded-For` / `-Proto` are believed from `forwarded_allow_ips` only (forwarded.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import ssl
import threading
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, Protocol
from urllib.parse import unquote

from voxgate.config import Settings
from voxgate.server.forwarded import TrustedProxies
from voxgate.server.http_connection import HttpConnection
from voxgate.server.lifespan import ASGIApp, Lifespan, LifespanFailed
from voxgate.server.websocket_connection import WebSocketConnection

__all__ = ["ConnectionGuard", "Listener", "new_event_loop", "raise_open_file_limit", "run"]

log = logging.getLogger("voxgate.server")

FD_RESERVE = 256  # descriptors kept back from connections: database, models, carrier REST, logs
GRACEFUL_SHUTDOWN_S = 5  # on stopping, what requests and WebSocket handlers in flight get before they are cancelled
BACKLOG = 2048


class Guarded(Protocol):
    """A connection as the guard sees it."""

    @property
    def evictable(self) -> bool: ...

    def evict(self) -> None: ...


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


def connection_cap(settings: Settings, open_files: int) -> int:
    """`max_connections`, within what the open-file limit leaves after the reserve."""
    cap = min(settings.max_connections, max(16, open_files - FD_RESERVE))
    if cap < settings.max_connections:
        log.warning("max_connections lowered to %d: the open-file limit is %d", cap, open_files)
    return cap


class ConnectionGuard:
    """The listener's open connections, capped; oldest-first so the longest idle goes first."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._open: OrderedDict[Guarded, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, connection: Guarded) -> bool:
        """Room for one more connection, making it if it must; False when every slot is busy."""
        if len(self._open) >= self.max_connections:
            idle = next((c for c in self._open if c.evictable), None)
            if idle is None:
                return False
            del self._open[idle]
            idle.evict()
        self._open[connection] = None
        return True

    def replace(self, old: Guarded, new: Guarded) -> None:
        """`old` became `new` (an HTTP connection upgraded to a WebSocket): the same slot, still counted."""
        if old in self._open:
            del self._open[old]
            self._open[new] = None

    def forget(self, connection: Guarded) -> None:
        self._open.pop(connection, None)


class Listener:
    """Serves one ASGI app on `settings.host`:`settings.port` until `stop_soon()`."""

    def __init__(self, app: ASGIApp, settings: Settings, *, tls: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.host, self.port = settings.host, settings.port
        self.tls = tls
        self.guard = ConnectionGuard(connection_cap(settings, raise_open_file_limit()))
        self.request_timeout_s = settings.http_request_timeout_s
        self.keep_alive_s = float(settings.http_keep_alive_s)
        # The WebSocket frame limit; a message between max_message_bytes and this gets the app's own error.
        self.max_message_bytes = 2 * settings.max_message_bytes
        self.ping_interval_s = settings.ws_ping_interval_s
        self.proxies = TrustedProxies(settings.forwarded_allow_ips)
        self.lifespan = Lifespan(app)
        self.connections: set[HttpConnection | WebSocketConnection] = set()
        self.started = threading.Event()  # listening (set from the loop's thread; waited on from any)
        self._tasks: set[asyncio.Task[None]] = set()  # requests and WebSocket handlers running
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_asked = False
        self._force = False
        self._server: asyncio.Server | None = None

    # -- for the connections -----------------------------------------------------------------------

    def scope(self, kind: str, transport: asyncio.BaseTransport, target: str, headers: list[tuple[bytes, bytes]],
              http_version: str) -> dict[str, Any]:
        """The ASGI scope of a request (`kind` "http") or a WebSocket handshake ("websocket")."""
        path, _, query = target.partition("?")
        tls = transport.get_extra_info("sslcontext") is not None
        if kind == "websocket":
            scheme = "wss" if tls else "ws"
        else:
            scheme = "https" if tls else "http"
        client, scheme = self.proxies.resolve(_address(transport.get_extra_info("peername")), headers, scheme)
        return {
            "type": kind,
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": http_version,
            "server": _address(transport.get_extra_info("sockname")),
            "client": client,
            "scheme": scheme,
            "root_path": "",
            "path": unquote(path),
            "raw_path": path.encode("latin-1", "surrogateescape"),
            "query_string": query.encode("latin-1", "surrogateescape"),
            "headers": headers,
            "state": self.lifespan.state.copy(),
        }

    def run_app(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- running -----------------------------------------------------------------------------------

    async def serve(self) -> None:
        """The app's start-up, listen, serve until `stop_soon()`, stop. Raises what stops it starting
        (`LifespanFailed`, an `OSError` binding the port)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_asked:
            self._stop.set()
        await self.lifespan.startup()
        try:
            self._server = await self._loop.create_server(lambda: HttpConnection(self), self.host, self.port,
                                                          ssl=self.tls, backlog=BACKLOG)
        except OSError:
            await self.lifespan.shutdown()
            raise
        scheme = "https" if self.tls else "http"
        log.info("listening on %s://%s:%d", scheme, self.host, self.port)
        self.started.set()
        await self._stop.wait()
        await self._shut_down()

    def stop_soon(self, force: bool = False) -> None:
        """Stop serving (from any thread): requests and WebSocket handlers in flight get
        GRACEFUL_SHUTDOWN_S to finish, none with `force`."""
        self._stop_asked = True
        self._force = self._force or force
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to stop
                loop.call_soon_threadsafe(stop.set)

    async def _shut_down(self) -> None:
        log.info("stopping: %d connections open", len(self.connections))
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.stop()
        if self._tasks and not self._force:
            await asyncio.wait(set(self._tasks), timeout=GRACEFUL_SHUTDOWN_S)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=GRACEFUL_SHUTDOWN_S)
        for connection in list(self.connections):
            connection.abort()
        await self.lifespan.shutdown()


def run(listener: Listener, *, signals: bool = True) -> int:
    """Serve in this thread until stopped: 0 once stopped, 3 when it could not start (the app's start-up
    failed, or the port could not be bound). With `signals` (the main thread), SIGINT and SIGTERM stop it
    (until the app takes SIGTERM over to drain first); a second one stops it at once."""

    async def main() -> int:
        if signals:
            loop = asyncio.get_running_loop()
            asked: list[int] = []

            def on_signal(number: int) -> None:
                asked.append(number)
                listener.stop_soon(force=len(asked) > 1)

            for number in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                    loop.add_signal_handler(number, on_signal, number)
        try:
            await listener.serve()
        except (LifespanFailed, OSError) as exc:
            log.error("the gateway could not start: %s", exc)
            return 3
        return 0

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main())


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - not on this platform
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _address(address: Any) -> tuple[str, int] | None:
    return (str(address[0]), int(address[1])) if isinstance(address, tuple) and len(address) >= 2 else None
