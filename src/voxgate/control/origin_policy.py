"""Which browser pages may reach the gateway: the Host they name, the Origin they come from.

Any web page can make its browser send requests to a gateway on 127.0.0.1. Two things it cannot forge:

- the Host header. A page that rebinds its own domain to 127.0.0.1 (DNS rebinding) is same-origin with
  the gateway as far as its browser knows, but its requests still name its domain. So Host must be a
  loopback name, an IP literal (a rebinding page can only name its domain, never an address), `host`,
  the public_url host or one of `allowed_hosts`; anything else is refused (400) before a route runs.
- the Origin header. Browsers send it on every WebSocket handshake, and a handshake is not subject to
  CORS, so the gateway checks it itself: an Origin that is neither the gateway's own nor allowed is
  refused with 403. Clients that are not browsers (servers, carriers, SDKs) send none and pass.

Allowed origins are `cors_origins` ("*": any) plus, in dev mode, loopback origins. CORS answers the same
list, and never with credentials: the API takes keys in headers, not cookies.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from voxgate.config import Settings
from voxgate.control.problems import problem
from voxgate.hosts import DEFAULT_PORTS, host_name, host_port, ip_literal, is_loopback, origin_of

# What Starlette's CORS middleware matches loopback origins with (it full-matches the pattern).
LOOPBACK_ORIGIN_PATTERN = r"https?://(localhost|[a-z0-9.-]+\.localhost|127(\.[0-9]{1,3}){3}|\[::1\])(:[0-9]{1,5})?"


class OriginPolicy:
    """The settings' answer to "may this Host / this Origin talk to us?" (pure: no I/O)."""

    def __init__(self, settings: Settings) -> None:
        self._any_host = "*" in settings.allowed_hosts
        names = {host_name(h) for h in settings.allowed_hosts if h != "*"} | {host_name(settings.host)}
        self._public = origin_of(settings.public_url) if settings.public_url else None
        if self._public is not None:
            names.add(self._public[1])
        self._hosts = frozenset(names)
        self._any_origin = "*" in settings.cors_origins
        self._origins = frozenset(o for o in map(origin_of, settings.cors_origins) if o is not None)
        self._loopback_origins = settings.dev_mode
        self._cors_list = ["*"] if self._any_origin else list(settings.cors_origins)

    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None or self._any_host:  # no Host: not a browser (they always send one)
            return True
        name = host_name(host_header)
        return is_loopback(name) or ip_literal(name) or name in self._hosts

    def same_origin(self, origin: str, host_header: str | None) -> bool:
        """An Origin naming this gateway: as the browser reached it (its Host), or by its public URL."""
        parsed = origin_of(origin)
        if parsed is None:
            return False
        if parsed == self._public:
            return True
        if host_header is None:
            return False
        scheme, name, port = parsed
        return (name, port) == host_port(host_header, DEFAULT_PORTS[scheme])

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        if self._any_origin or self.same_origin(origin, host_header):
            return True
        parsed = origin_of(origin)
        if parsed is None:  # "null" (sandboxed frames, file: pages) or garbage
            return False
        return parsed in self._origins or (self._loopback_origins and is_loopback(parsed[1]))

    def cors_options(self) -> dict[str, Any]:
        """Starlette CORSMiddleware arguments for the same origins."""
        regex = LOOPBACK_ORIGIN_PATTERN if self._loopback_origins and not self._any_origin else None
        return {"allow_origins": self._cors_list, "allow_origin_regex": regex, "allow_credentials": False}


class BrowserGuard:
    """ASGI middleware: refuses a foreign Host on every request and a foreign Origin on WebSocket handshakes."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host")
        refusal: Response | None = None
        if not self.policy.host_allowed(host):
            refusal = problem(400, "invalid_host",
                              f"This gateway does not answer to the host {host!r}. If that is how clients reach "
                              "it, add the name to allowed_hosts (or set public_url).")
        elif scope["type"] == "websocket":
            origin = headers.get("origin")
            if origin is not None and not self.policy.origin_allowed(origin, host):
                refusal = problem(403, "origin_not_allowed",
                                  f"Pages from {origin} may not open this gateway's WebSockets. Add the origin "
                                  "to cors_origins, or open the socket from a server (no Origin header).")
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await refusal(scope, receive, send)
        else:
            await refuse_handshake(WebSocket(scope, receive, send), refusal)


async def refuse_handshake(websocket: WebSocket, response: Response) -> None:
    """Answer a WebSocket handshake with an HTTP response; a server without the denial extension sends 403."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(1008)
