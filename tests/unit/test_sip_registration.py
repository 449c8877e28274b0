"""The trunk registration core on an explicit clock: digest challenges answered (checked by the server side's
own verifier), the grant read from the Contact or Expires, refresh at 3/4 of it, backoff on failures
(doubling, capped, a 503's Retry-After respected), 423 Min-Expires, and the unregistration at shutdown."""

from __future__ import annotations

import pytest

from voxgate.sip.digest import DigestClient, DigestVerifier, parse_credentials
from voxgate.sip.headers import NameAddress, Via
from voxgate.sip.message import Request, Response, make_response
from voxgate.sip.registration import Registration, RegistrationPolicy, RegistrationState, trunk_uri
from voxgate.sip.uri import SipUri, UriError, parse_uri

REGISTRAR = SipUri("sip", "trunk.test")
AOR = SipUri("sip", "trunk.test", "alice")
CONTACT = NameAddress(parse_uri("sip:alice@192.0.2.5:5060"))
VIA = Via("UDP", "192.0.2.5", 5060, (("rport", None),))
SECRET = b"k" * 32


def registration(password: str | None = "s3cret", **policy: float) -> Registration:
    return Registration(registrar=REGISTRAR, aor=AOR, contact=CONTACT, via=VIA,
                        credentials=DigestClient("alice", password) if password is not None else None,
                        policy=RegistrationPolicy(expires=600, **policy))  # type: ignore[arg-type]


def challenge(request: Request, verifier: DigestVerifier, now: float, *, stale: bool = False,
              status: int = 401) -> Response:
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    return make_response(request, status, to_tag="reg", headers=[(name, str(verifier.challenge(now, stale=stale)))])


def granted(request: Request, *, contact_expires: int | None = 120, header: int | None = None) -> Response:
    headers = []
    if contact_expires is not None:
        headers.append(("Contact", f"{CONTACT};expires={contact_expires}"))
    if header is not None:
        headers.append(("Expires", str(header)))
    return make_response(request, 200, to_tag="reg", headers=headers)


def verify(request: Request, verifier: DigestVerifier, now: float, password: str = "s3cret") -> bool:
    value = request.headers.get("Authorization") or request.headers.get("Proxy-Authorization")
    assert value is not None, "the REGISTER carries no credentials"
    return verifier.verify(parse_credentials(value), method="REGISTER", password=password, now=now).ok


def test_a_challenged_register_is_answered_and_the_binding_refreshed_at_three_quarters() -> None:
    verifier = DigestVerifier("trunk.test", SECRET, algorithm="MD5")
    reg = registration()
    first = reg.start(0.0)
    assert first.method == "REGISTER" and str(first.uri) == "sip:trunk.test"
    assert first.headers.get("Expires") == "600" and "Authorization" not in first.headers
    assert str(first.to.uri) == "sip:alice@trunk.test" and first.contacts[0].uri == CONTACT.uri
    assert reg.state == RegistrationState.REGISTERING and reg.next_deadline() is None
    second = reg.receive(challenge(first, verifier, 0.0), 0.1)
    assert second is not None and verify(second, verifier, 0.1)
    assert second.cseq.number == first.cseq.number + 1 and second.call_id == first.call_id
    assert second.from_.tag == first.from_.tag and second.via[0].branch != first.via[0].branch
    assert reg.receive(granted(second), 0.2) is None
    assert reg.state == RegistrationState.REGISTERED and reg.granted == 120
    assert reg.expires_at == pytest.approx(120.2) and reg.next_deadline() == pytest.approx(90.2)
    assert reg.handle_timer(90.0) is None
    refresh = reg.handle_timer(90.2)
    assert refresh is not None and refresh.call_id == first.call_id and refresh.from_.tag == first.from_.tag
    assert refresh.cseq.number == second.cseq.number + 1
    assert reg.state == RegistrationState.REGISTERED  # the binding holds while it is refreshed
    assert reg.handle_timer(91.0) is None  # one refresh at a time
    assert reg.receive(granted(refresh, contact_expires=None, header=300), 90.3) is None
    assert reg.granted == 300 and reg.next_deadline() == pytest.approx(90.3 + 225)


def test_without_a_grant_in_the_answer_the_asked_time_counts() -> None:
    reg = registration(password=None)
    first = reg.start(0.0)
    reg.receive(granted(first, contact_expires=None), 1.0)
    assert reg.granted == 600 and reg.next_deadline() == pytest.approx(451.0)


def test_refused_credentials_back_off_doubling_up_to_the_cap() -> None:
    verifier = DigestVerifier("trunk.test", SECRET, algorithm="MD5")
    reg = registration(password="wrong", retry_min_s=5.0, retry_max_s=30.0)
    now = 0.0
    request: Request | None = reg.start(now)
    delays = []
    for _ in range(5):
        assert request is not None
        answer = reg.receive(challenge(request, verifier, now), now)
        assert answer is not None and not verify(answer, verifier, now)
        assert reg.receive(challenge(answer, verifier, now), now) is None  # a fresh challenge: refused, no loop
        assert reg.state == RegistrationState.FAILED and reg.last_reason == "credentials refused"
        deadline = reg.next_deadline()
        assert deadline is not None
        delays.append(deadline - now)
        assert reg.handle_timer(deadline - 0.01) is None
        now = deadline
        request = reg.handle_timer(now)
    assert delays == [5.0, 10.0, 20.0, 30.0, 30.0]


def test_a_stale_nonce_is_answered_again() -> None:
    verifier = DigestVerifier("trunk.test", SECRET, algorithm="MD5")
    reg = registration()
    first = reg.start(0.0)
    second = reg.receive(challenge(first, verifier, 0.0), 0.0)
    assert second is not None
    third = reg.receive(challenge(second, verifier, 1.0, stale=True), 1.0)
    assert third is not None and verify(third, verifier, 1.0)
    reg.receive(granted(third), 1.0)
    assert reg.registered


def test_a_timeout_and_a_503_with_retry_after_schedule_the_retry() -> None:
    reg = registration(retry_min_s=5.0)
    first = reg.start(0.0)
    reg.timed_out(32.0)
    assert reg.state == RegistrationState.FAILED and reg.last_status == 408
    assert reg.next_deadline() == pytest.approx(37.0)
    retry = reg.handle_timer(37.0)
    assert retry is not None and retry.cseq.number == first.cseq.number + 1
    busy = make_response(retry, 503, to_tag="reg", headers=[("Retry-After", "120")])
    reg.receive(busy, 38.0)
    assert reg.next_deadline() == pytest.approx(158.0) and reg.last_status == 503


def test_interval_too_brief_asks_again_for_min_expires() -> None:
    reg = registration()
    first = reg.start(0.0)
    again = reg.receive(make_response(first, 423, to_tag="reg", headers=[("Min-Expires", "1800")]), 0.1)
    assert again is not None and again.headers.get("Expires") == "1800"
    reg.receive(granted(again, contact_expires=1800), 0.2)
    assert reg.registered and reg.granted == 1800


def test_a_challenge_without_credentials_and_a_grant_of_nothing_fail() -> None:
    verifier = DigestVerifier("trunk.test", SECRET)
    reg = registration(password=None)
    reg.receive(challenge(reg.start(0.0), verifier, 0.0), 0.0)
    assert reg.state == RegistrationState.FAILED and reg.last_status == 401
    retry = reg.handle_timer(5.0)
    assert retry is not None
    reg.receive(granted(retry, contact_expires=0), 5.0)
    assert reg.state == RegistrationState.FAILED


def test_stale_and_provisional_responses_change_nothing() -> None:
    reg = registration()
    first = reg.start(0.0)
    assert reg.receive(make_response(first, 100), 0.0) is None
    second = reg.receive(challenge(first, DigestVerifier("trunk.test", SECRET), 0.0), 0.0)
    assert second is not None
    assert reg.receive(granted(first), 0.1) is None  # an answer to the REGISTER we replaced
    assert reg.state == RegistrationState.REGISTERING


def test_unregistering_removes_the_binding_with_expires_zero() -> None:
    verifier = DigestVerifier("trunk.test", SECRET, algorithm="MD5")
    reg = registration()
    first = reg.start(0.0)
    reg.receive(granted(first), 0.1)
    bye = reg.unregister(10.0)
    assert bye is not None and bye.headers.get("Expires") == "0" and bye.contacts[0].uri == CONTACT.uri
    assert reg.state == RegistrationState.UNREGISTERING and reg.next_deadline() is None
    answered = reg.receive(challenge(bye, verifier, 10.0), 10.0)  # the registrar challenges the removal too
    assert answered is not None and answered.headers.get("Expires") == "0" and verify(answered, verifier, 10.0)
    reg.receive(granted(answered, contact_expires=None), 10.1)
    assert reg.state == RegistrationState.UNREGISTERED and reg.expires_at is None


def test_nothing_to_unregister_before_a_binding() -> None:
    reg = registration()
    reg.start(0.0)
    reg.timed_out(32.0)
    assert reg.unregister(33.0) is None and reg.state == RegistrationState.UNREGISTERED


@pytest.mark.parametrize(("text", "host", "port"), [
    ("sip:trunk.example", "trunk.example", None), ("trunk.example:5070", "trunk.example", 5070),
    ("127.0.0.1", "127.0.0.1", None), ("sip:alice@trunk.example:5080;transport=udp", "trunk.example", 5080),
])
def test_trunk_addresses_parse(text: str, host: str, port: int | None) -> None:
    uri = trunk_uri(text)
    assert (uri.host, uri.port) == (host, port)


@pytest.mark.parametrize("text", ["mailto:alice@example.com", "sips:trunk.example", "sip:trunk.example;transport=tcp",
                                  "tel:+15551234567", "trunk.example:port"])
def test_trunk_addresses_we_cannot_use_are_refused(text: str) -> None:
    with pytest.raises(UriError):
        trunk_uri(text)
