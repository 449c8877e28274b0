"""The lite agent's STUN: checks as aioice (aiortc's ICE, a full agent) builds them, answered so it accepts them."""

from __future__ import annotations

import random

import pytest
from aioice import stun as aioice_stun

from voxgate.webrtc.stun import StunError, answer_check, answer_error, is_stun, read_check

UFRAG, PASSWORD = "gw01", "0123456789abcdef0123456789abcdef"


def request(username: str = f"{UFRAG}:brow", password: str = PASSWORD, *, use_candidate: bool = True,
            fingerprint: bool = True) -> bytes:
    message = aioice_stun.Message(aioice_stun.Method.BINDING, aioice_stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1853817087
    message.attributes["ICE-CONTROLLING"] = 0x1234
    if use_candidate:
        message.attributes["USE-CANDIDATE"] = None
    message.add_message_integrity(password.encode())
    if fingerprint:
        message.add_fingerprint()
    return bytes(message)


def test_a_check_signed_with_our_password_is_answered_as_the_browser_expects() -> None:
    data = request()
    assert is_stun(data)
    check = read_check(data, local_ufrag=UFRAG, local_password=PASSWORD)
    assert check.remote_ufrag == "brow" and check.use_candidate and check.controlling
    assert check.priority == 1853817087
    reply = answer_check(check, source=("192.0.2.7", 50123), local_password=PASSWORD)
    parsed = aioice_stun.parse_message(reply)
    assert parsed.check_message_integrity(PASSWORD.encode())
    assert parsed.message_class == aioice_stun.Class.RESPONSE
    assert parsed.transaction_id == check.transaction_id
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == ("192.0.2.7", 50123)
    assert "FINGERPRINT" in parsed.attributes


def test_ipv6_sources_are_mapped() -> None:
    check = read_check(request(), local_ufrag=UFRAG, local_password=PASSWORD)
    reply = answer_check(check, source=("2001:db8::7", 4000), local_password=PASSWORD)
    parsed = aioice_stun.parse_message(reply)
    assert parsed.check_message_integrity(PASSWORD.encode())
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == ("2001:db8::7", 4000)


def test_checks_for_others_or_unsigned_are_refused_with_401() -> None:
    for data in (request(username="other:brow"), request(password="x" * 32)):
        with pytest.raises(StunError) as caught:
            read_check(data, local_ufrag=UFRAG, local_password=PASSWORD)
        assert caught.value.status == 401
        reply = answer_error(data, 401)
        assert reply is not None
        parsed = aioice_stun.parse_message(reply)
        assert parsed.message_class == aioice_stun.Class.ERROR and parsed.attributes["ERROR-CODE"][0] == 401


def test_a_check_without_fingerprint_is_still_a_check() -> None:
    assert read_check(request(fingerprint=False), local_ufrag=UFRAG, local_password=PASSWORD).use_candidate


def test_a_corrupted_fingerprint_or_signature_is_refused() -> None:
    data = bytearray(request())
    data[-1] ^= 1
    with pytest.raises(StunError):
        read_check(bytes(data), local_ufrag=UFRAG, local_password=PASSWORD)
    data = bytearray(request(fingerprint=False))
    data[-3] ^= 1
    with pytest.raises(StunError):
        read_check(bytes(data), local_ufrag=UFRAG, local_password=PASSWORD)


def test_fuzzed_checks_raise_only_stun_errors() -> None:
    rng = random.Random(7)
    good = request()
    for _ in range(5000):
        data = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.3:
            del data[rng.randrange(len(data)):]
        if rng.random() < 0.1:
            data = bytearray(rng.randbytes(rng.randint(0, 600)))
        try:
            read_check(bytes(data), local_ufrag=UFRAG, local_password=PASSWORD)
        except StunError as error:
            answer_error(bytes(data), error.status or 400)
