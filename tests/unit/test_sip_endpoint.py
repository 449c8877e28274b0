"""What the SIP endpoint answers outside a dialog, as a pure decision (the shell's sockets are tested in
tests/integration/test_sip_endpoint.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxgate.sip.endpoint import ALLOW, answer_out_of_dialog
from voxgate.sip.headers import NameAddress, Via, new_branch
from voxgate.sip.message import Request, new_request, parse_message
from voxgate.sip.uri import parse_uri

TORTURE = Path(__file__).parent.parent / "data" / "sip" / "rfc4475"


def request(method: str, *headers: tuple[str, str], to_tag: str | None = None) -> Request:
    to = NameAddress(parse_uri("sip:bot@192.0.2.10"), params=(("tag", to_tag),) if to_tag else ())
    return new_request(method, parse_uri("sip:bot@192.0.2.10"), via=Via("UDP", "192.0.2.1", 5060,
                                                                           (("branch", new_branch()),)),
                       from_=NameAddress(parse_uri("sip:a@example.com"), params=(("tag", "a"),)), to=to,
                       call_id="c", cseq=1, headers=list(headers))


def test_options_advertises_what_we_speak() -> None:
    answer = answer_out_of_dialog(request("OPTIONS"))
    assert answer is not None and answer.status == 200 and answer.headers.get("Allow") == ALLOW
    assert answer.headers.get("Accept") == "application/sdp" and answer.to.tag is not None


def test_invite_is_503_until_calls_are_wired() -> None:
    answer = answer_out_of_dialog(request("INVITE"))
    assert answer is not None and answer.status == 503 and answer.headers.get("Retry-After") == "60"
    assert answer_out_of_dialog(request("INVITE"), accepting_calls=True) is None


@pytest.mark.parametrize(("method", "status"), [("BYE", 481), ("INFO", 481), ("REFER", 481), ("NOTIFY", 481),
                                                ("UPDATE", 481), ("REGISTER", 405), ("SUBSCRIBE", 405)])
def test_other_methods(method: str, status: int) -> None:
    answer = answer_out_of_dialog(request(method))
    assert answer is not None and answer.status == status
    if status == 405:
        assert answer.headers.get("Allow") == ALLOW


def test_no_answer_for_ack_and_cancel_and_481_for_a_stray_reinvite() -> None:
    assert answer_out_of_dialog(request("ACK")) is None and answer_out_of_dialog(request("CANCEL")) is None
    reinvite = answer_out_of_dialog(request("INVITE", to_tag="gone"))
    assert reinvite is not None and reinvite.status == 481 and reinvite.to.tag == "gone"


@pytest.mark.parametrize(("name", "status", "header"), [
    ("bext01", 420, ("Unsupported", "nothingSupportedHere")), ("unkscm", 416, None), ("novelsc", 416, None),
    ("zeromf", 200, None), ("inv2543", 503, None)])
def test_rfc4475_application_layer_answers(name: str, status: int, header: tuple[str, str] | None) -> None:
    message = parse_message((TORTURE / f"{name}.dat").read_bytes())
    assert isinstance(message, Request)
    answer = answer_out_of_dialog(message)
    assert answer is not None and answer.status == status
    if header:
        assert answer.headers.get(header[0]) == header[1]


def test_supported_requirements_are_accepted() -> None:
    answer = answer_out_of_dialog(request("OPTIONS", ("Require", "timer")))
    assert answer is not None and answer.status == 200
