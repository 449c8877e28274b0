"""A control request relayed to the node that holds the call, and that node's answer.

The node that received `POST /v1/realtime/calls/{id}/hangup` for a call it does not hold packs the HTTP
request (`RelayedRequest.of`), publishes it to the holder, and answers its client with what comes back
(`RelayedAnswer.response`). The holder runs it through its own app (`answer_here`), so the route's own
checks (the key, the call's owner) decide, exactly as for a request that reached it directly; the scope
is marked `RELAYED` so the route runs there and is never relayed again.

Both messages are JSON text (bodies base64) with a version field; `from_wire` refuses anything else
with `MalformedRelay`.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message

from voxgate.control.problems import problem

__all__ = ["RELAYED", "Headers", "MalformedRelay", "RelayedAnswer", "RelayedRequest", "answer_here", "binary_in",
           "headers_in", "headers_out", "relay_message", "unreachable"]

log = logging.getLogger("voxgate.cluster")

RELAYED = "voxgate.relayed"  # ASGI scope key: this request came from another node; run it here
VERSION = 1
# Not copied onto the relayed answer: the answering response sets its own framing.
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})

Headers = list[tuple[bytes, bytes]]


class MalformedRelay(ValueError):
    """A relay message that is not one of ours."""


def unreachable() -> Response:
    """The answer when the node holding a call cannot be reached: it may well be alive, so never a 404."""
    return problem(503, "call_node_unreachable", "The node holding this call cannot be reached; try again.",
                   headers={"Retry-After": "1"})


def headers_out(headers: Headers) -> list[list[str]]:
    """Headers as JSON can carry them (the relay's and the WebSocket tunnel's messages)."""
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers]


def headers_in(raw: Any) -> Headers:
    """`headers_out`'s JSON back as ASGI headers; MalformedRelay for anything else."""
    if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                                            for p in raw):
        raise MalformedRelay("headers must be a list of [name, value] strings")
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in raw]


def relay_message(data: bytes | str) -> dict[str, Any]:
    """A message between nodes as a dict: JSON, this version, with an id; MalformedRelay otherwise."""
    try:
        message = json.loads(data)
    except ValueError as exc:
        raise MalformedRelay("not JSON") from exc
    if not isinstance(message, dict) or message.get("v") != VERSION or not isinstance(message.get("id"), str):
        raise MalformedRelay("not a relay message of this version")
    return message


def binary_in(value: Any, name: str = "body") -> bytes:
    """A base64 field back as bytes; MalformedRelay when it is not base64."""
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError) as exc:
        raise MalformedRelay(f"{name} is not base64") from exc


def _body(message: dict[str, Any]) -> bytes:
    return binary_in(message.get("body", ""))


@dataclass(frozen=True, slots=True)
class RelayedRequest:
    """An HTTP control request, as the receiving node got it, to be run on the holding node."""

    id: str  # matches the answer to the request
    reply_to: str  # the channel the answer is published on
    method: str
    path: str
    query: bytes
    headers: Headers
    body: bytes
    client: str | None  # the caller's address, for the holder's logs

    @classmethod
    async def of(cls, request: Request, id: str, reply_to: str) -> RelayedRequest:
        return cls(id=id, reply_to=reply_to, method=request.method, path=request.url.path,
                   query=request.scope.get("query_string", b""), headers=list(request.scope["headers"]),
                   body=await request.body(), client=request.client.host if request.client else None)

    def to_wire(self) -> str:
        return json.dumps({"v": VERSION, "id": self.id, "reply_to": self.reply_to, "method": self.method,
                           "path": self.path, "query": self.query.decode("latin-1"),
                           "headers": headers_out(self.headers), "body": base64.b64encode(self.body).decode(),
                           "client": self.client})

    @classmethod
    def from_wire(cls, data: bytes | str) -> RelayedRequest:
        m = relay_message(data)
        fields = (m.get("reply_to"), m.get("method"), m.get("path"), m.get("query", ""))
        if not all(isinstance(f, str) for f in fields) or not str(m.get("path")).startswith("/"):
            raise MalformedRelay("reply_to, method, path and query must be strings (path absolute)")
        client = m.get("client")
        return cls(id=m["id"], reply_to=m["reply_to"], method=m["method"], path=m["path"],
                   query=str(m.get("query", "")).encode("latin-1"), headers=headers_in(m.get("headers", [])),
                   body=_body(m), client=client if isinstance(client, str) else None)

    def scope(self) -> dict[str, Any]:
        """The ASGI HTTP scope the holder's app runs this request in."""
        return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": self.method,
                "scheme": "http", "path": self.path, "raw_path": self.path.encode(), "root_path": "",
                "query_string": self.query, "headers": self.headers, "client": (self.client or "relay", 0),
                "server": None, "state": {}, RELAYED: True}


@dataclass(frozen=True, slots=True)
class RelayedAnswer:
    """What the holding node's app answered."""

    id: str
    status: int
    headers: Headers
    body: bytes

    def to_wire(self) -> str:
        return json.dumps({"v": VERSION, "id": self.id, "status": self.status,
                           "headers": headers_out(self.headers), "body": base64.b64encode(self.body).decode()})

    @classmethod
    def from_wire(cls, data: bytes | str) -> RelayedAnswer:
        m = relay_message(data)
        status = m.get("status")
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise MalformedRelay("status must be an HTTP status code")
        return cls(id=m["id"], status=status, headers=headers_in(m.get("headers", [])), body=_body(m))

    def response(self) -> Response:
        """The answer for the client of the node that relayed the request, as if that node had run it."""
        response = Response(self.body, status_code=self.status)
        response.raw_headers = [*((k, v) for k, v in response.raw_headers if k == b"content-length"),
                                *((k, v) for k, v in self.headers if k.lower() not in _FRAMING)]
        return response


async def answer_here(app: ASGIApp, request: RelayedRequest) -> RelayedAnswer:
    """Run a relayed request through this node's app (the ASGI interface) and collect its answer."""
    sent = started = False
    status = 500
    headers: Headers = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, headers, started
        if message["type"] == "http.response.start":
            started = True
            status = int(message["status"])
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers", [])]
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    try:
        await app(request.scope(), receive, send)
    except Exception:  # Starlette answers 500 and raises again: the answer stands, the error is logged here
        log.exception("relayed %s %s failed", request.method, request.path)
        if not started:
            status, headers, chunks = 500, [], []
    return RelayedAnswer(id=request.id, status=status, headers=headers, body=b"".join(chunks))
