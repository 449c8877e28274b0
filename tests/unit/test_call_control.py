"""The call-control core (control/call_control.py): an app's word on a ringing SIP call, the webhook's
body as the official SDK reads it, the routes' bodies, and which routes an app controls (settings)."""

from __future__ import annotations

import base64
import json
from types import ModuleType
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.test_sip_phone import invite
from voxgate.config import Settings
from voxgate.control.call_control import (
    Accepted,
    CallControl,
    CallControlError,
    FellBack,
    Rejected,
    incoming_event,
    refer_target,
    reject_status,
    retry_delays,
    session_of,
)
from voxgate.control.standard_webhooks import sign
from voxgate.sip.message import parse_message
from voxgate.transports.controlled_sip_calls import call_control_route

SECRET = "whsec_" + base64.b64encode(b"unit test secret").decode()
APP = "http://127.0.0.1:9/hooks"


def pending(fallback_status: int | None = None) -> CallControl:
    return CallControl("rtc_1", deadline=10.0, fallback_status=fallback_status)


def test_the_first_word_counts_and_later_ones_conflict() -> None:
    control = pending()
    assert control.accept({"instructions": "hi"}) == Accepted({"instructions": "hi"})
    assert control.state == "accepted"
    for late in (lambda: control.accept({}), lambda: control.reject(486)):
        with pytest.raises(CallControlError) as conflict:
            late()
        assert conflict.value.status == 409 and "already accepted" in conflict.value.message
    assert control.expire(99.0) is None  # an accepted call never falls back
    control.check_refer()  # refer: only on an accepted call
    assert control.hang_up() is None and control.state == "ended"  # the shell hangs up the line
    with pytest.raises(CallControlError) as ended:
        control.hang_up()
    assert ended.value.status == 409 and ended.value.code == "call_ended"


def test_a_ringing_call_is_rejected_declined_or_falls_back() -> None:
    assert pending().reject() == Rejected(603)
    assert pending().reject(486) == Rejected(486)
    declined = pending()
    assert declined.hang_up() == Rejected(603) and declined.state == "rejected"
    with pytest.raises(CallControlError):
        declined.accept({})
    with pytest.raises(CallControlError):
        pending().check_refer()  # nothing to transfer yet
    to_agent, refused = pending(), pending(fallback_status=480)
    assert to_agent.expire(9.99) is None and to_agent.state == "pending"
    assert to_agent.expire(10.0) == FellBack(None) and to_agent.expire(11.0) is None  # once
    assert refused.expire(10.0) == FellBack(480)
    with pytest.raises(CallControlError) as late:
        to_agent.accept({})
    assert "answered by the gateway" in late.value.message
    cancelled = pending()
    cancelled.ended()
    assert cancelled.expire(99.0) is None
    with pytest.raises(CallControlError):
        cancelled.accept({})


def test_the_webhook_is_the_one_the_official_sdk_unwraps(openai_sdk: ModuleType) -> None:
    sip = parse_message(invite("sip:acme@gw", "sip:acme@gw", "Authorization: Digest username=\"pbx\"",
                               "X-Account: 42"))
    body = incoming_event("evt_1", "rtc_1", 1_700_000_000, sip.headers)
    headers = sign(SECRET, "wh_1", 1_700_000_000, body)
    sdk = openai_sdk.OpenAI(api_key="unused", webhook_secret=SECRET)
    sdk.webhooks.verify_signature(body, headers, tolerance=10**10)  # the fixed time is long past
    event = json.loads(body)
    assert event["type"] == "realtime.call.incoming" and event["data"]["call_id"] == "rtc_1"
    names = [h["name"] for h in event["data"]["sip_headers"]]
    assert names[:3] == ["Via", "From", "To"] and "X-Account" in names  # in the INVITE's order
    assert "Authorization" not in names  # the PBX's credentials are not the app's


@pytest.mark.parametrize(("body", "expected"), [
    (b"", 603), (b"{}", 603), (b'{"status_code": null}', 603), (b'{"status_code": 486}', 486),
])
def test_reject_status(body: bytes, expected: int) -> None:
    assert reject_status(body) == expected


@pytest.mark.parametrize("body", [b'{"status_code": 200}', b'{"status_code": "486"}', b'{"status_code": true}',
                                  b"[486]", b"{nope"])
def test_a_bad_reject_is_a_400(body: bytes) -> None:
    with pytest.raises(CallControlError) as bad:
        reject_status(body)
    assert bad.value.status == 400


@pytest.mark.parametrize("target", ["tel:+14155550123", "sip:agent@example.com", "sips:desk@pbx.example;transport=tls"])
def test_refer_targets(target: str) -> None:
    assert refer_target(json.dumps({"target_uri": target}).encode()) == target


@pytest.mark.parametrize("body", [{}, {"target_uri": ""}, {"target_uri": "http://evil.example/"},
                                  {"target_uri": "sip:a@b>\r\nX-Injected: 1"}, {"target_uri": 5}])
def test_a_bad_refer_target_is_a_400_naming_it(body: dict[str, Any]) -> None:
    with pytest.raises(CallControlError) as bad:
        refer_target(json.dumps(body).encode())
    assert bad.value.status == 400 and bad.value.param == "target_uri"


def test_an_accept_needs_a_realtime_session() -> None:
    assert session_of(b'{"type": "realtime", "instructions": "hi"}')["instructions"] == "hi"
    for body in (b'{"instructions": "hi"}', b'{"type": "transcription"}'):
        with pytest.raises(CallControlError) as bad:
            session_of(body)
        assert bad.value.status == 400 and bad.value.param == "type"


def test_retries_back_off() -> None:
    assert retry_delays(1, 0.5) == []
    assert retry_delays(4, 0.5) == [0.5, 1.0, 2.0]
    assert retry_delays(10, 20.0)[-1] == 60.0


def test_which_calls_an_app_controls() -> None:
    settings = Settings(sip_webhook_secret=SECRET, sip_call_control={
        "7000": {"url": APP}, "+15551234567": {"url": APP, "fallback": "reject"},
        "7001": {"call_control": "gateway"}})
    routes = settings.sip_call_control
    assert call_control_route(parse_message(invite("sip:7000@gw", "sip:7000@gw")), routes) is routes["7000"]
    assert call_control_route(parse_message(invite("sip:gw", "tel:+15551234567")), routes) is routes["+15551234567"]
    assert call_control_route(parse_message(invite("sip:7001@gw", "sip:7001@gw")), routes) is None
    assert call_control_route(parse_message(invite("sip:9@gw", "sip:9@gw")), routes) is None
    # "*": every other call is the app's; a route may still keep its calls the gateway's
    everything = Settings(sip_webhook_secret=SECRET,
                          sip_call_control={"*": {"url": APP}, "7001": {"call_control": "gateway"}}).sip_call_control
    assert call_control_route(parse_message(invite("sip:9@gw", "sip:9@gw")), everything) is everything["*"]
    assert call_control_route(parse_message(invite("sip:7001@gw", "sip:7001@gw")), everything) is None


@pytest.mark.parametrize(("values", "complaint"), [
    ({"sip_call_control": {"*": {"url": APP}}}, "sip_webhook_secret"),  # unsigned webhooks: never
    ({"sip_call_control": {"*": {"url": APP}}, "sip_webhook_secret": "whsec_!!"}, "base64"),
    ({"sip_call_control": {"*": {"url": "ftp://app.example/"}}, "sip_webhook_secret": SECRET}, "http(s) url"),
    ({"sip_call_control": {"*": {}}, "sip_webhook_secret": SECRET}, "http(s) url"),
    ({"sip_call_control": {"*": {"url": APP, "fallback_status": 200}}, "sip_webhook_secret": SECRET}, "400"),
])
def test_call_control_settings_are_checked(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        Settings(**values)


def test_the_secret_is_masked_when_shown() -> None:
    shown = Settings(sip_webhook_secret=SECRET, sip_call_control={"*": {"url": APP}}).shown()
    assert shown["sip_webhook_secret"] == "****" and SECRET not in json.dumps(shown)
    assert shown["sip_call_control"]["*"]["url"] == APP
