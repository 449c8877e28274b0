"""Digest authentication: RFC test vectors, both algorithms, the client's nonce count, the verifier's
stateless nonces, staleness and replay refusal."""

from __future__ import annotations

import pytest

from voxgate.sip.digest import (
    Challenge,
    DigestClient,
    DigestError,
    DigestVerifier,
    parse_challenge,
    parse_credentials,
    pick_challenge,
    response_digest,
)
from voxgate.sip.headers import NameAddress, Via
from voxgate.sip.message import make_response, new_request
from voxgate.sip.uri import parse_uri


def test_rfc2617_vector() -> None:
    """RFC 2617 §3.5 (HTTP GET, MD5, qop=auth): the hash rules are the same for SIP."""
    assert response_digest(algorithm="MD5", username="Mufasa", realm="testrealm@host.com",
                           password="Circle Of Life", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                           method="GET", uri="/dir/index.html", qop="auth", nc="00000001",
                           cnonce="0a4f113b") == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_sha256_vector() -> None:
    """RFC 7616 §3.9.1 (SHA-256)."""
    assert response_digest(algorithm="SHA-256", username="Mufasa", realm="http-auth@example.org",
                           password="Circle of Life", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                           method="GET", uri="/dir/index.html", qop="auth", nc="00000001",
                           cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
                           ) == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_challenge_round_trip_and_parsing() -> None:
    value = 'Digest realm="trunk.test", nonce="n0nc3xyz", algorithm=MD5, qop="auth,auth-int", opaque="o\\"p"'
    challenge = parse_challenge(value)
    assert challenge == Challenge("trunk.test", "n0nc3xyz", "MD5", ("auth", "auth-int"), 'o"p')
    assert parse_challenge(str(challenge)) == challenge
    assert parse_challenge('Digest realm="r",nonce="n",stale=TRUE').stale


@pytest.mark.parametrize("value", [
    "Basic realm=x", 'Digest realm="r"', 'Digest realm="r", nonce="n", algorithm=SHA-1',
    'Digest realm="r" nonce="n"', 'Digest realm="r", realm="s", nonce="n"', "NoOneKnowsThisScheme opaque-data=here",
    'Digest realm="unterminated, nonce="n"', "Digest " + "a=b, " * 2000,
])
def test_bad_challenges(value: str) -> None:
    with pytest.raises(DigestError):
        parse_challenge(value)


def test_client_answers_with_increasing_nonce_count() -> None:
    client = DigestClient("alice", "s3cret")
    with pytest.raises(DigestError):
        client.authorization("REGISTER", "sip:trunk.test")
    client.challenged(parse_challenge('Digest realm="trunk.test", nonce="abc", qop="auth", algorithm=MD5'))
    first = parse_credentials(client.authorization("REGISTER", "sip:trunk.test", cnonce="c1"))
    second = parse_credentials(client.authorization("REGISTER", "sip:trunk.test", cnonce="c2"))
    assert (first.nc, second.nc) == ("00000001", "00000002")
    assert first.response == response_digest(algorithm="MD5", username="alice", realm="trunk.test",
                                             password="s3cret", nonce="abc", method="REGISTER",
                                             uri="sip:trunk.test", qop="auth", nc="00000001", cnonce="c1")
    client.challenged(parse_challenge('Digest realm="trunk.test", nonce="new"'))
    third = parse_credentials(client.authorization("INVITE", "sip:+1555@trunk.test"))
    assert third.qop is None and third.nc is None  # RFC 2069 style when no qop is offered


def test_pick_challenge_prefers_sha256_and_knows_the_proxy_header() -> None:
    invite = new_request("INVITE", parse_uri("sip:x@trunk.test"), via=Via("UDP", "192.0.2.1", 5060),
                         from_=NameAddress(parse_uri("sip:a@b"), params=(("tag", "1"),)),
                         to=NameAddress(parse_uri("sip:x@trunk.test")), call_id="c", cseq=1)
    challenge = make_response(invite, 407, to_tag="t", headers=[
        ("Proxy-Authenticate", 'Digest realm="r", nonce="1", algorithm=MD5'),
        ("Proxy-Authenticate", 'Digest realm="r", nonce="2", algorithm=SHA-256'),
        ("Proxy-Authenticate", 'Newfangled realm="r"')])
    header, chosen = pick_challenge(challenge)
    assert header == "Proxy-Authorization" and chosen.algorithm == "SHA-256" and chosen.nonce == "2"
    with pytest.raises(DigestError):
        pick_challenge(make_response(invite, 401, to_tag="t"))


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_verifier_accepts_the_right_password_once_per_count(algorithm: str) -> None:
    verifier = DigestVerifier("voxgate", b"k" * 32, algorithm=algorithm)
    client = DigestClient("alice", "pw")
    client.challenged(verifier.challenge(100.0))
    value = client.authorization("INVITE", "sip:bot@192.0.2.10", cnonce="cn")
    creds = parse_credentials(value)
    assert verifier.verify(creds, method="INVITE", password="pw", now=101.0).ok
    replay = verifier.verify(creds, method="INVITE", password="pw", now=102.0)
    assert not replay.ok and replay.reason == "nonce count replayed"
    assert verifier.verify(parse_credentials(client.authorization("INVITE", "sip:bot@192.0.2.10")),
                           method="INVITE", password="pw", now=103.0).ok
    assert verifier.verify(creds, method="BYE", password="pw", now=101.0).reason == "wrong credentials"


def test_verifier_refuses_wrong_passwords_forged_and_expired_nonces() -> None:
    verifier = DigestVerifier("voxgate", b"k" * 32, nonce_lifetime=300)
    client = DigestClient("alice", "pw")
    client.challenged(verifier.challenge(0.0))
    creds = parse_credentials(client.authorization("INVITE", "sip:bot@h"))
    assert verifier.verify(creds, method="INVITE", password="wrong", now=1).reason == "wrong credentials"
    assert verifier.verify(creds, method="INVITE", password=None, now=1).reason == "wrong credentials"
    stale = verifier.verify(creds, method="INVITE", password="pw", now=301)
    assert not stale.ok and stale.stale  # right password, old nonce: challenge again with stale=true
    other = DigestVerifier("voxgate", b"x" * 32)
    assert other.verify(creds, method="INVITE", password="pw", now=1).reason == "not our nonce"
    forged = parse_credentials(str(creds).replace(creds.nonce, "AAAA"))
    assert verifier.verify(forged, method="INVITE", password="pw", now=1).reason == "not our nonce"
    elsewhere = DigestVerifier("other-realm", b"k" * 32)
    assert elsewhere.verify(creds, method="INVITE", password="pw", now=1).reason == "wrong realm"
    no_qop = parse_credentials(f'Digest username="alice", realm="voxgate", nonce="{creds.nonce}", '
                               f'uri="sip:bot@h", response="00"')
    assert verifier.verify(no_qop, method="INVITE", password="pw", now=1).reason == "qop required"


def test_verifier_memory_of_counts_is_bounded() -> None:
    verifier = DigestVerifier("voxgate", b"k" * 32, max_tracked_nonces=3)
    for n in range(10):
        client = DigestClient("alice", "pw")
        client.challenged(verifier.challenge(float(n)))
        assert verifier.verify(parse_credentials(client.authorization("INVITE", "sip:h")), method="INVITE",
                               password="pw", now=float(n)).ok
    assert len(verifier._counts) == 3


@pytest.mark.parametrize("value", [
    'Digest username="a", realm="r", nonce="n", uri="u"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="zz"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=auth',
    'Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=auth, nc=1, cnonce="c"',
    'Digest username="a", realm="r", nonce="n", uri="u", response="00", qop=weird, nc=00000001, cnonce="c"',
])
def test_bad_credentials(value: str) -> None:
    with pytest.raises(DigestError):
        parse_credentials(value)
