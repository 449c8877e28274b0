"""OpenAI's `realtime.call.incoming` webhook as the gateway reads it, and which agent takes that call. Pure.

When an agent runs behind OpenAI's SIP (transports/openai_sip.py), OpenAI answers the phone and POSTs

    {"object": "event", "id": "evt_...", "type": "realtime.call.incoming", "created_at": 1700000000,
     "data": {"call_id": "rtc_...", "sip_headers": [{"name": "From", "value": "..."}, ...]}}

(xAI's voice agent SIP sends the same shape). The signature is checked before this module sees the body
(control/standard_webhooks.py); the SIP headers are still the caller's words: bounded, parsed leniently,
and only ever matched against the routes the operator configured, never used as agent names or URLs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voxgate.sip.errors import SipError
from voxgate.sip.headers import parse_name_addresses
from voxgate.sip.uri import SipUri, TelUri

__all__ = ["AgentRoute", "IncomingCall", "IncomingCallError", "choose_agent", "parse_incoming_call"]

INCOMING_TYPE = "realtime.call.incoming"
MAX_BODY_BYTES = 64 * 1024  # a webhook with a few dozen SIP headers is a few KiB
MAX_HEADERS = 100
MAX_CALL_ID_CHARS = 128
MAX_HEADER_CHARS = 2048
# The SIP headers a route may look at; compact forms (RFC 3261 7.3.3) mean the same header.
RoutedHeader = Literal["to", "from", "diversion"]
_COMPACT = {"t": "to", "f": "from"}


class IncomingCallError(ValueError):
    """A webhook body that is not a usable `realtime.call.incoming` event (the route answers 400)."""


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """One call OpenAI is ringing us about. `event_type` is not always an incoming call: OpenAI signs its
    other webhooks (`response.completed`, ...) with the same secret and may send them to the same URL."""

    event_type: str
    event_id: str
    call_id: str
    sip_headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> list[str]:
        """Every value of the header `name` (case-insensitive, compact forms included), in order."""
        wanted = name.lower()
        return [value for key, value in self.sip_headers if _COMPACT.get(key.lower(), key.lower()) == wanted]

    def numbers(self, name: RoutedHeader) -> list[str]:
        """The user parts (sip:) and numbers (tel:) of the addresses in header `name`; unparsable ones skipped."""
        found: list[str] = []
        for value in self.header(name):
            try:
                addresses = parse_name_addresses(value)
            except SipError:
                continue
            for address in addresses:
                uri = address.uri
                key = uri.user if isinstance(uri, SipUri) else uri.digits if isinstance(uri, TelUri) else None
                if key:
                    found.append(key)
        return found

    @property
    def caller(self) -> str | None:
        """The calling number (From), for the call record."""
        numbers = self.numbers("from")
        return numbers[0] if numbers else None


def parse_incoming_call(body: bytes) -> IncomingCall:
    """The webhook body as a typed event. Raises IncomingCallError naming what is wrong."""
    if len(body) > MAX_BODY_BYTES:
        raise IncomingCallError(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        raise IncomingCallError("the body is not JSON") from None
    if not isinstance(event, dict):
        raise IncomingCallError("the body must be a JSON object")
    event_type, event_id = event.get("type"), event.get("id", "")
    if not isinstance(event_type, str) or not event_type or not isinstance(event_id, str):
        raise IncomingCallError("'type' (a string) is required")
    if event_type != INCOMING_TYPE:
        return IncomingCall(event_type, event_id, "", ())
    data = event.get("data")
    if not isinstance(data, dict):
        raise IncomingCallError("'data' must be an object")
    call_id = data.get("call_id")
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID_CHARS or not call_id.isprintable():
        raise IncomingCallError(f"'data.call_id' must be a string of 1 to {MAX_CALL_ID_CHARS} characters")
    return IncomingCall(event_type, event_id, call_id, _sip_headers(data.get("sip_headers", [])))


def _sip_headers(raw: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list) or len(raw) > MAX_HEADERS:
        raise IncomingCallError(f"'data.sip_headers' must be a list of at most {MAX_HEADERS} headers")
    headers: list[tuple[str, str]] = []
    for index, entry in enumerate(raw):
        name = entry.get("name") if isinstance(entry, dict) else None
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not isinstance(value, str) or len(name) + len(value) > MAX_HEADER_CHARS:
            raise IncomingCallError(f"'data.sip_headers[{index}]' must be {{name, value}} strings "
                                    f"of at most {MAX_HEADER_CHARS} characters")
        headers.append((name, value))
    return tuple(headers)


class AgentRoute(BaseModel):
    """One routing rule: the call goes to `agent` when `header` carries a number (or sip: user) that is
    `match`, or starts with it when `match` ends in `*`. `Diversion` is the number the caller dialled
    before a forward; `From` the caller."""

    model_config = ConfigDict(extra="forbid")
    header: RoutedHeader
    match: str = Field(min_length=1, max_length=128)
    agent: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")

    def matches(self, call: IncomingCall) -> bool:
        numbers = call.numbers(self.header)
        if self.match.endswith("*"):
            prefix = self.match[:-1]
            return any(number.startswith(prefix) for number in numbers)
        return self.match in numbers


def choose_agent(call: IncomingCall, routes: Sequence[AgentRoute], agents: Iterable[str]) -> str | None:
    """The agent of the first route that matches and names a known agent; None: the gateway's choice."""
    known = set(agents)
    for route in routes:
        if route.agent in known and route.matches(call):
            return route.agent
    return None
