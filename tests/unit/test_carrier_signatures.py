"""Carrier webhook signatures: Twilio's documented vector, port variants, body hashes; Telnyx Ed25519."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from voxgate.transports.signatures import SignatureError, twilio_signature, twilio_signature_valid, verify_telnyx

# The worked example of twilio.com/docs/usage/security (auth token 12345).
DOCS_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOCS_PARAMS = [("CallSid", "CA1234567890ABCDE"), ("Caller", "+14158675310"), ("Digits", "1234"),
               ("From", "+14158675310"), ("To", "+18005551212")]
DOCS_SIGNATURE = "GvWf1cFY/Q7PnoempGyD5oXAezc="


def test_twilio_documented_vector() -> None:
    assert twilio_signature(DOCS_URL, DOCS_PARAMS, "12345") == DOCS_SIGNATURE
    assert twilio_signature(DOCS_URL, list(reversed(DOCS_PARAMS)), "12345") == DOCS_SIGNATURE  # order-free
    assert twilio_signature_valid(DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE, "12345")
    assert not twilio_signature_valid(DOCS_URL, [*DOCS_PARAMS[:2], ("Digits", "9999"), *DOCS_PARAMS[3:]],
                                      DOCS_SIGNATURE, "12345")
    assert not twilio_signature_valid(DOCS_URL.replace("https", "http"), DOCS_PARAMS, DOCS_SIGNATURE, "12345")
    assert not twilio_signature_valid(DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE, "54321")
    assert not twilio_signature_valid(DOCS_URL, DOCS_PARAMS, None, "12345")
    assert not twilio_signature_valid(DOCS_URL, DOCS_PARAMS, DOCS_SIGNATURE, "")  # no token: nothing is valid


def test_twilio_url_with_or_without_default_port() -> None:
    signed_without = twilio_signature("https://example.com/twilio/voice", [("A", "1")], "t")
    signed_with = twilio_signature("https://example.com:443/twilio/voice", [("A", "1")], "t")
    assert twilio_signature_valid("https://example.com:443/twilio/voice", [("A", "1")], signed_without, "t")
    assert twilio_signature_valid("https://example.com/twilio/voice", [("A", "1")], signed_with, "t")
    ws_signed = twilio_signature("wss://example.com/twilio/media", [], "t")  # the media socket upgrade
    assert twilio_signature_valid("wss://example.com:443/twilio/media", [], ws_signed, "t")
    assert not twilio_signature_valid("wss://example.com:8443/twilio/media", [], ws_signed, "t")


def test_twilio_repeated_parameters_are_sorted_by_value() -> None:
    manual = base64.b64encode(hmac.new(b"t", b"https://x.test/Aa1Aa2Bb", hashlib.sha1).digest()).decode()
    assert twilio_signature("https://x.test/", [("Bb", ""), ("Aa", "2"), ("Aa", "1")], "t") == manual


def test_twilio_json_body_webhooks_sign_the_url_and_hash_the_body() -> None:
    body = b'{"CallSid": "CA1"}'
    url = f"https://example.com/hook?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = twilio_signature(url, [], "t")
    assert twilio_signature_valid(url, [], signature, "t", body=body)
    assert not twilio_signature_valid(url, [], signature, "t", body=body + b" ")


@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6), st.text(min_size=1, max_size=10))
def test_twilio_any_parameters_round_trip(params: list[tuple[str, str]], token: str) -> None:
    url = "https://example.com/twilio/voice?agent=acme"
    assert twilio_signature_valid(url, params, twilio_signature(url, params, token), token)


KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def telnyx_sign(body: bytes, timestamp: str) -> str:
    return base64.b64encode(KEY.sign(timestamp.encode() + b"|" + body)).decode()


def test_telnyx_signature_checks() -> None:
    body = b'{"data":{"event_type":"call.initiated"}}'
    verify_telnyx(body, telnyx_sign(body, "1700000000"), "1700000000", PUBLIC, now=1700000100)
    cases = [
        ((body + b" ", telnyx_sign(body, "1700000000"), "1700000000"), "invalid"),  # re-serialised body
        ((body, telnyx_sign(body, "1700000000"), "1700000001"), "invalid"),  # timestamp swapped
        ((body, telnyx_sign(body, "1699990000"), "1699990000"), "stale"),
        ((body, None, "1700000000"), "missing"),
        ((body, telnyx_sign(body, "1700000000"), None), "missing"),
        ((body, "%%%", "1700000000"), "malformed"),
        ((body, telnyx_sign(body, "soon"), "soon"), "malformed"),
    ]
    for (raw, signature, timestamp), reason in cases:
        with pytest.raises(SignatureError) as error:
            verify_telnyx(raw, signature, timestamp, PUBLIC, now=1700000100)
        assert error.value.reason == reason
    with pytest.raises(SignatureError, match="base64"):
        verify_telnyx(body, telnyx_sign(body, "1700000000"), "1700000000", "not-a-key", now=1700000100)


@given(st.binary(max_size=300), st.binary(max_size=80))
def test_telnyx_bodies_round_trip_and_garbage_never_verifies(body: bytes, garbage: bytes) -> None:
    verify_telnyx(body, telnyx_sign(body, "1700000000"), "1700000000", PUBLIC, now=1700000000)
    with pytest.raises(SignatureError):
        verify_telnyx(body, base64.b64encode(garbage).decode(), "1700000000", PUBLIC, now=1700000000)


def test_telnyx_timestamps_too_far_ahead_or_behind_are_refused() -> None:
    body = b'{"data":{"event_type":"call.initiated"}}'
    now = 1700000000
    for offset, reason in [(200, "future"), (31, "future"), (-301, "stale"), (-3600, "stale")]:
        stamp = str(now + offset)
        with pytest.raises(SignatureError) as error:
            verify_telnyx(body, telnyx_sign(body, stamp), stamp, PUBLIC, now=now)
        assert error.value.reason == reason, offset
    for offset in (30, 0, -300):  # clock skew and Telnyx's customary five minutes
        verify_telnyx(body, telnyx_sign(body, str(now + offset)), str(now + offset), PUBLIC, now=now)
    stamp = str(now - 100)
    with pytest.raises(SignatureError, match="more than 60 s"):  # the tolerance is the caller's
        verify_telnyx(body, telnyx_sign(body, stamp), stamp, PUBLIC, now=now, tolerance_s=60)
