"""Which agent takes a call behind OpenAI's SIP: the `realtime.call.incoming` body read strictly, the SIP
headers (To, From, Diversion) matched against the configured routes, first match winning."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from voxgate.config import Settings
from voxgate.control.incoming_call import (
    AgentRoute,
    IncomingCallError,
    choose_agent,
    parse_incoming_call,
)

AGENTS = ("support", "sales", "vip", "forwarded", "demo")
ROUTES = [
    AgentRoute(header="from", match="+4930111222", agent="vip"),  # a known caller first, whatever they dialled
    AgentRoute(header="diversion", match="+14155550199", agent="forwarded"),  # forwarded from the old number
    AgentRoute(header="to", match="+14155550100", agent="support"),
    AgentRoute(header="to", match="+1415555*", agent="sales"),  # the rest of the block
    AgentRoute(header="to", match="ghost", agent="nobody"),  # names no agent: skipped, never chosen
]


def webhook(*headers: tuple[str, str], call_id: str = "rtc_abc", **extra: Any) -> bytes:
    return json.dumps({"object": "event", "id": "evt_1", "type": "realtime.call.incoming", "created_at": 1,
                       "data": {"call_id": call_id, "sip_headers": [{"name": n, "value": v} for n, v in headers]},
                       **extra}).encode()


@pytest.mark.parametrize(("headers", "expected"), [
    ([("To", "<sip:+14155550100@sip.api.openai.com>")], "support"),
    ([("To", "<sip:+14155550142@sip.api.openai.com>;tag=x")], "sales"),  # prefix
    ([("To", "<tel:+14155550100>")], "support"),  # tel: URIs name the number too
    ([("t", "sip:+14155550100@sip.api.openai.com")], "support"),  # compact form, bare addr-spec
    ([("to", '"Support line" <sip:+14155550100@h>')], "support"),  # names are case-insensitive
    ([("From", "<sip:+4930111222@carrier>"), ("To", "<sip:+14155550100@h>")], "vip"),  # rule order, not header order
    ([("To", "<sip:+14155550100@h>"), ("Diversion", "<sip:+14155550199@old>;reason=unconditional")], "forwarded"),
    ([("Diversion", "<sip:+1999@a>, <sip:+14155550199@b>")], "forwarded"),  # any entry of a list
    ([("To", "<sip:+4420000000@h>")], None),  # no route: the gateway's choice
    ([("To", "<sip:ghost@h>")], None),  # a route to an unknown agent is not taken
    ([("To", "not an address <<")], None),  # unparsable: ignored, not an error
    ([("X-Agent", "vip"), ("To", "<sip:+4420000000@h>")], None),  # other headers never pick an agent
    ([], None),
])
def test_the_first_matching_route_picks_the_agent(headers: list[tuple[str, str]], expected: str | None) -> None:
    assert choose_agent(parse_incoming_call(webhook(*headers)), ROUTES, AGENTS) == expected


def test_an_exact_match_is_not_a_prefix() -> None:
    call = parse_incoming_call(webhook(("To", "<sip:+141555501000@h>")))
    assert not AgentRoute(header="to", match="+14155550100", agent="support").matches(call)
    assert AgentRoute(header="to", match="+14155550100*", agent="support").matches(call)


def test_the_caller_is_the_from_number() -> None:
    call = parse_incoming_call(webhook(("From", '"Alice" <sip:+4930111222@carrier>;tag=1'), ("To", "<sip:x@h>")))
    assert call.caller == "+4930111222"
    assert call.call_id == "rtc_abc"
    assert parse_incoming_call(webhook(("To", "<sip:x@h>"))).caller is None


def test_other_event_types_parse_without_a_call() -> None:
    call = parse_incoming_call(json.dumps({"type": "response.completed", "id": "evt_2", "data": {"id": "r"}}).encode())
    assert (call.event_type, call.call_id) == ("response.completed", "")


@pytest.mark.parametrize(("body", "says"), [
    (b"", "not JSON"),
    (b"{", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b'{"id": "evt"}', "'type'"),
    (json.dumps({"type": "realtime.call.incoming"}).encode(), "'data'"),
    (json.dumps({"type": "realtime.call.incoming", "data": {}}).encode(), "call_id"),
    (json.dumps({"type": "realtime.call.incoming", "data": {"call_id": 7}}).encode(), "call_id"),
    (json.dumps({"type": "realtime.call.incoming", "data": {"call_id": "x" * 500}}).encode(), "call_id"),
    (json.dumps({"type": "realtime.call.incoming", "data": {"call_id": "a\nb"}}).encode(), "call_id"),
    (json.dumps({"type": "realtime.call.incoming", "data": {"call_id": "c", "sip_headers": {}}}).encode(),
     "sip_headers"),
    (json.dumps({"type": "realtime.call.incoming",
                 "data": {"call_id": "c", "sip_headers": [{"name": "To"}]}}).encode(), "sip_headers[0]"),
    (json.dumps({"type": "realtime.call.incoming",
                 "data": {"call_id": "c", "sip_headers": [{"name": "To", "value": "v"}] * 101}}).encode(),
     "at most 100"),
    (b" " * 70_000, "larger than"),
    (b"[" * 60_000, "not JSON"),  # nesting deep enough to exhaust the parser
])
def test_malformed_bodies_are_refused_with_the_reason(body: bytes, says: str) -> None:
    with pytest.raises(IncomingCallError) as raised:
        parse_incoming_call(body)
    assert says in str(raised.value)


def test_the_webhook_secret_is_masked_in_config_show() -> None:
    shown = Settings(openai_webhook_secret="whsec_c2VjcmV0").shown()
    assert "c2VjcmV0" not in str(shown) and shown["openai_webhook_secret"]


def test_routes_come_from_settings_and_are_checked() -> None:
    settings = Settings(openai_sip_routes=[{"header": "to", "match": "+1415*", "agent": "sales"}])
    assert settings.openai_sip_routes == [AgentRoute(header="to", match="+1415*", agent="sales")]
    with pytest.raises(ValidationError, match="header"):
        Settings(openai_sip_routes=[{"header": "contact", "match": "x", "agent": "sales"}])
    with pytest.raises(ValidationError):
        Settings(openai_sip_routes=[{"header": "to", "match": "", "agent": "sales"}])
