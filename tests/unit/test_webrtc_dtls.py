"""DTLS-SRTP (webrtc/dtls.py): two endpoints handshake in memory and agree on SRTP keys, carry records both
ways, refuse a certificate SDP did not promise, recover a lost flight, and shrug off whatever else comes."""

from __future__ import annotations

import datetime
import hashlib
import random
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from voxgate.sip.rtp import RtpSender, parse_rtp
from voxgate.sip.srtp import SrtpContext
from voxgate.webrtc.dtls import (
    ApplicationData,
    Closed,
    Connected,
    DtlsCertificate,
    DtlsEndpoint,
    DtlsError,
    DtlsEvent,
    Failed,
    parse_fingerprint,
)

Certs = tuple[DtlsCertificate, DtlsCertificate]
Fingerprints = list[tuple[str, str]]
Drop = Callable[[str, int, bytes], bool]  # (sender "client"/"server", flight number of that sender, datagram)


@pytest.fixture(scope="module")
def certs() -> Certs:
    return DtlsCertificate.generate(), DtlsCertificate.generate()


def make_pair(certs: Certs, *, client_expects: Fingerprints | None = None, server_expects: Fingerprints | None = None,
              mtu: int = 1200) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    client_cert, server_cert = certs
    client = DtlsEndpoint(client_cert, server=False, mtu=mtu,
                          remote_fingerprints=server_cert.fingerprints() if client_expects is None else client_expects)
    server = DtlsEndpoint(server_cert, server=True, mtu=mtu,
                          remote_fingerprints=client_cert.fingerprints() if server_expects is None else server_expects)
    return client, server


def shuttle(client: DtlsEndpoint, server: DtlsEndpoint, now: float, drop: Drop | None = None,
            wire: list[tuple[str, bytes]] | None = None) -> None:
    """Carry datagrams both ways until neither side has any to send. `drop` loses some; `wire` logs all."""
    flights = {"client": 0, "server": 0}
    for _ in range(50):
        moved = False
        for name, sender, receiver in (("client", client, server), ("server", server, client)):
            datagrams = sender.datagrams_to_send()
            if datagrams:
                flights[name] += 1
                moved = True
            for datagram in datagrams:
                assert len(datagram) <= sender.mtu or sender.state == "connected"
                if wire is not None:
                    wire.append((name, datagram))
                if drop is None or not drop(name, flights[name], datagram):
                    receiver.receive(datagram, now)
        if not moved:
            return
    raise AssertionError("the endpoints never went quiet")


def events(endpoint: DtlsEndpoint) -> list[DtlsEvent]:
    found = []
    while (event := endpoint.next_event()) is not None:
        found.append(event)
    return found


def connect(certs: Certs, now: float = 100.0,
            **kwargs: int) -> tuple[DtlsEndpoint, DtlsEndpoint]:
    client, server = make_pair(certs, **kwargs)
    server.start(now)
    client.start(now)
    shuttle(client, server, now)
    assert [type(e) for e in events(client)] == [Connected]
    assert [type(e) for e in events(server)] == [Connected]
    return client, server


def test_certificate_is_p256_self_signed_and_its_fingerprint_is_the_der_digest() -> None:
    now = datetime.datetime(2030, 5, 1, 12, 0, tzinfo=datetime.UTC)
    cert = DtlsCertificate.generate(now=now, valid_days=10)
    digest = hashlib.sha256(cert.der).hexdigest().upper()
    expected = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))  # `openssl x509 -fingerprint -sha256`
    assert cert.fingerprints() == [("sha-256", expected)]
    assert cert.certificate.not_valid_before_utc == now - datetime.timedelta(days=1)
    assert cert.expires == now + datetime.timedelta(days=10)
    assert cert.certificate.issuer == cert.certificate.subject
    public = cert.certificate.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert expected in repr(cert) and "PRIVATE" not in repr(cert)


def test_handshake_gives_both_sides_mirrored_keys(certs: Certs) -> None:
    client, server = make_pair(certs)
    assert client.state == server.state == "new" and client.next_timer() is None
    server.start(0.0)
    assert server.datagrams_to_send() == [] and server.state == "connecting"
    client.start(0.0)
    wire: list[tuple[str, bytes]] = []
    shuttle(client, server, 0.0, wire=wire)
    (client_event,), (server_event,) = events(client), events(server)
    assert isinstance(client_event, Connected) and isinstance(server_event, Connected)
    ours, theirs = client_event.keys, server_event.keys
    assert ours.suite == theirs.suite == "AES_CM_128_HMAC_SHA1_80"
    assert ours.local_key == theirs.remote_key and ours.remote_key == theirs.local_key
    assert len(ours.local_key) == len(ours.remote_key) == 30 and ours.local_key != ours.remote_key
    assert client.state == server.state == "connected" and client.keys == ours
    assert client.next_timer() is None and server.next_timer() is None
    assert client.cipher == server.cipher == "ECDHE-ECDSA-AES128-GCM-SHA256"
    # flights: ClientHello; the server's five messages packed in one datagram; the client's five; CCS+Finished
    assert [sender for sender, _ in wire] == ["client", "server", "client", "server"]
    assert all(datagram[0] in (20, 22) and len(datagram) <= 1200 for _, datagram in wire)
    # nothing secret in what a log line would show
    for text in (repr(client_event), repr(ours), repr(client)):
        assert ours.local_key.hex() not in text and ours.remote_key.hex() not in text and "local_key" not in text


def test_the_keys_protect_and_unprotect_real_srtp(certs: Certs) -> None:
    client, server = connect(certs)
    assert client.keys is not None and server.keys is not None
    browser, gateway = SrtpContext(client.keys), SrtpContext(server.keys)
    sender = RtpSender(111)
    packet = sender.packet(b"\x55" * 160, 960).to_bytes()
    assert parse_rtp(gateway.unprotect(browser.protect(packet))).payload == b"\x55" * 160
    reply = sender.packet(b"\x66" * 160, 960).to_bytes()
    assert gateway.unprotect(browser.protect(reply)) == reply
    assert browser.unprotect(gateway.protect(reply)) == reply


def test_application_data_both_ways(certs: Certs) -> None:
    client, server = connect(certs)
    big = bytes(range(256)) * 4 + b"\xab" * 76  # 1100 bytes: a full SCTP packet
    assert len(big) == 1100 <= client.max_application_data
    client.send(big)
    (datagram,) = client.datagrams_to_send()
    assert datagram[0] == 23 and len(datagram) <= 1200 and big not in datagram
    server.receive(datagram, 101.0)
    assert events(server) == [ApplicationData(big)]
    server.send(b"first")
    server.send(b"second")  # two small records: packed in one datagram, still two records
    (datagram,) = server.datagrams_to_send()
    client.receive(datagram, 101.0)
    assert events(client) == [ApplicationData(b"first"), ApplicationData(b"second")]
    assert client.datagrams_to_send() == [] and server.datagrams_to_send() == []


def test_send_is_refused_before_the_handshake_and_out_of_bounds(certs: Certs) -> None:
    client, server = make_pair(certs)
    with pytest.raises(DtlsError):
        client.send(b"too early")
    client.start(0.0)
    with pytest.raises(DtlsError):
        client.send(b"still too early")
    shuttle(client, server, 0.0)
    with pytest.raises(DtlsError):
        client.send(b"")
    with pytest.raises(DtlsError):
        client.send(b"x" * (16384 + 1))
    client.send(b"x" * 16384)  # allowed, as one oversized datagram
    assert [len(d) for d in client.datagrams_to_send()] == [16384 + 13 + 8 + 16]  # header, GCM nonce and tag
    client.close()
    client.send(b"after close")  # a flush racing the close: dropped, not an error
    assert client.datagrams_to_send() != []  # only the close_notify


@pytest.mark.parametrize("wrong_side", ["client", "server"])
def test_a_certificate_sdp_did_not_promise_fails_both_sides(certs: Certs,
                                                            wrong_side: str) -> None:
    stranger = DtlsCertificate.generate().fingerprints()
    if wrong_side == "client":  # the client expects another server certificate
        client, server = make_pair(certs, client_expects=stranger)
    else:
        client, server = make_pair(certs, server_expects=stranger)
    client.start(0.0)
    shuttle(client, server, 0.0)
    checker, other = (client, server) if wrong_side == "client" else (server, client)
    assert events(checker) == [Failed("fingerprint mismatch")]
    (event,) = events(other)
    assert isinstance(event, Failed) and "alert" in event.reason  # our alert told it the handshake is off
    assert client.state == server.state == "failed" and client.keys is None and server.keys is None
    assert client.next_timer() is None and server.next_timer() is None
    other.send(b"no")  # a failed endpoint drops it, as a closed one does
    assert other.datagrams_to_send() == []


def test_fingerprints_match_by_any_trusted_hash_in_any_case(certs: Certs) -> None:
    client_cert, server_cert = certs
    sha1 = hashlib.sha1(server_cert.der).hexdigest()
    sha512 = hashlib.sha512(client_cert.der).hexdigest()
    colon = lambda hexa: ":".join(hexa[i:i + 2] for i in range(0, len(hexa), 2))  # noqa: E731
    client, server = make_pair(
        certs,
        client_expects=[("md5", "00:11"), ("SHA-1", colon(sha1).lower())],  # an untrusted hash is skipped
        server_expects=[("sha-256", "AB:" * 31 + "AB"), ("Sha-512", colon(sha512))],  # another certificate too
    )
    client.start(0.0)
    shuttle(client, server, 0.0)
    assert isinstance(client.next_event(), Connected) and isinstance(server.next_event(), Connected)
    assert parse_fingerprint("sha-256", "AB:CD") is None  # wrong length
    assert parse_fingerprint("md5", "00:" * 15 + "00") is None
    assert parse_fingerprint(" SHA-256 ", "ab:" * 31 + "ab") == ("sha256", b"\xab" * 32)


def test_no_usable_fingerprint_fails_at_start(certs: Certs) -> None:
    client, _ = make_pair(certs, client_expects=[("md5", "00:" * 15 + "00"), ("sha-256", "nonsense")])
    client.start(0.0)
    assert events(client) == [Failed("no usable remote fingerprint")]
    assert client.datagrams_to_send() == [] and client.state == "failed"


def test_a_server_started_by_the_client_hello_itself(certs: Certs) -> None:
    client, server = make_pair(certs)
    client.start(5.0)  # the server's shell has not called start() yet
    shuttle(client, server, 5.0)
    assert client.state == server.state == "connected"


def test_timer_is_on_the_callers_clock_and_the_handshake_gives_up(
        certs: Certs) -> None:
    client, _ = make_pair(certs)
    client.start(1000.0)
    assert len(client.datagrams_to_send()) == 1  # the ClientHello
    timer = client.next_timer()
    assert timer is not None and 1000.9 < timer <= 1001.0  # OpenSSL's first retransmission, after 1 s
    client.handle_timer(1000.5)  # early: nothing happens
    assert client.datagrams_to_send() == [] and client.next_timer() == timer
    client.handle_timer(1029.9)  # OpenSSL's clock has not moved: it re-arms instead of retransmitting
    assert client.state == "connecting" and 1029.9 < (client.next_timer() or 0) <= 1030.0  # the deadline
    client.handle_timer(1030.0)
    assert events(client) == [Failed("handshake timeout")] and client.next_timer() is None
    client.receive(b"\x16\xfe\xfd" + bytes(10), 1030.5)
    assert client.dropped == 1


def _wait_for(endpoints: list[DtlsEndpoint]) -> float:
    """Sleep until the earliest retransmission is due. OpenSSL measures its retransmission timer on the
    system clock, so these tests run on the real monotonic clock, as the shell does."""
    due = min(t for t in (e.next_timer() for e in endpoints) if t is not None)
    time.sleep(max(0.0, due - time.monotonic()) + 0.02)
    return time.monotonic()


def test_a_lost_server_flight_is_sent_again(certs: Certs) -> None:
    client, server = make_pair(certs)
    now = time.monotonic()
    client.start(now)
    shuttle(client, server, now, drop=lambda sender, flight, _: sender == "server" and flight == 1)
    assert client.state == server.state == "connecting"
    assert events(client) == events(server) == []
    now = _wait_for([client, server])
    client.handle_timer(now)
    server.handle_timer(now)
    shuttle(client, server, now)
    assert isinstance(client.next_event(), Connected) and isinstance(server.next_event(), Connected)
    assert client.keys is not None and server.keys is not None and client.keys.local_key == server.keys.remote_key


def test_a_lost_last_flight_is_asked_for_again(certs: Certs) -> None:
    """The server is done once the client's Finished came; if its own Finished is lost, only the client's
    retransmission (received while connected) makes it send it again."""
    client, server = make_pair(certs)
    now = time.monotonic()
    client.start(now)
    shuttle(client, server, now, drop=lambda sender, flight, _: sender == "server" and flight == 2)
    assert server.state == "connected" and client.state == "connecting" and server.next_timer() is None
    now = _wait_for([client])
    client.handle_timer(now)
    shuttle(client, server, now)
    assert isinstance(client.next_event(), Connected)
    client.send(b"hello")
    shuttle(client, server, now)
    assert events(server)[-1] == ApplicationData(b"hello")


def test_small_mtu_fragments_the_flights(certs: Certs) -> None:
    client, server = make_pair(certs, mtu=300)
    client.start(0.0)
    wire: list[tuple[str, bytes]] = []
    shuttle(client, server, 0.0, wire=wire)
    assert client.state == server.state == "connected"
    assert all(len(datagram) <= 300 for _, datagram in wire) and len(wire) > 4


def test_garbage_does_not_hurt_a_connected_endpoint(certs: Certs) -> None:
    client, server = connect(certs)
    client.send(b"genuine")
    (record,) = client.datagrams_to_send()
    wrong_epoch = record[:3] + (7).to_bytes(2, "big") + record[5:]
    forged = record[:-1] + bytes([record[-1] ^ 1])
    replayed = record
    server.receive(record, 101.0)
    assert events(server) == [ApplicationData(b"genuine")]
    refused = [b"", b"\x17", b"\x17\xfe\xfd" + bytes(5), record[:-1], record + b"\x00", b"\x40" * 40,
               bytes([25]) + record[1:], b"\x17\x03\x03" + record[3:]]  # TLS's version, not DTLS's
    for datagram in refused:
        server.receive(datagram, 101.0)
    assert server.dropped == len(refused)
    for datagram in (wrong_epoch, forged, replayed):  # well formed: OpenSSL drops them itself
        server.receive(datagram, 101.0)
    assert server.state == "connected" and events(server) == [] and server.datagrams_to_send() == []
    client.send(b"still here")
    shuttle(client, server, 101.0)
    assert events(server) == [ApplicationData(b"still here")]


def test_close_notify_closes_the_peer(certs: Certs) -> None:
    client, server = connect(certs)
    client.close()
    assert client.state == "closed"
    (datagram,) = client.datagrams_to_send()
    server.receive(datagram, 101.0)
    assert events(server) == [Closed()] and server.state == "closed"
    (answer,) = server.datagrams_to_send()  # its own close_notify, answered
    client.receive(answer, 101.0)
    assert events(client) == [] and client.dropped == 1  # nothing is read after we closed
    server.send(b"late")  # dropped: the shell may flush after the peer left
    assert server.datagrams_to_send() == []
    client.close()  # idempotent


def _mutate(rng: random.Random, datagram: bytes) -> bytes:
    data = bytearray(datagram)
    choice = rng.randrange(5)
    if choice == 0 and data:  # flip bits
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif choice == 1:  # truncate
        del data[rng.randrange(len(data) + 1):]
    elif choice == 2:  # overwrite a header field (epoch, sequence number, length)
        position = rng.choice([3, 4, 5, 10, 11, 12]) % max(len(data), 1)
        if data:
            data[position] = rng.randrange(256)
    elif choice == 3:  # random bytes that look like DTLS at first glance
        data = bytearray(rng.choice([b"\x14\xfe\xfd", b"\x15\xfe\xfd", b"\x16\xfe\xff", b"\x17\xfe\xfd"])
                         + rng.randbytes(rng.randrange(0, 200)))
    else:  # anything at all
        data = bytearray(rng.randbytes(rng.randrange(0, 300)))
        if data:
            data[0] = rng.randrange(20, 64)
    return bytes(data)


def test_fuzzed_datagrams_never_raise(certs: Certs) -> None:
    rng = random.Random(6347)
    # a handshake to learn real datagrams from
    wire: list[tuple[str, bytes]] = []
    client, server = make_pair(certs)
    client.start(0.0)
    shuttle(client, server, 0.0, wire=wire)
    client.send(b"payload" * 20)
    wire += [("client", d) for d in client.datagrams_to_send()]
    samples = [datagram for sender, datagram in wire if sender == "client"]

    # mid-handshake: a server that has only read a ClientHello
    outcomes = set()
    for _ in range(60):
        client, server = make_pair(certs)
        client.start(0.0)
        for datagram in client.datagrams_to_send():
            server.receive(datagram, 0.0)
        server.datagrams_to_send()
        for _ in range(10):
            server.receive(_mutate(rng, rng.choice(samples)), 0.5)
            server.handle_timer(0.6)
            server.datagrams_to_send()
            events(server)
        outcomes.add(server.state)
    assert outcomes <= {"connecting", "failed"} and "connecting" in outcomes

    # connected: nothing forged can pass the record MAC, so the association survives it all
    client, server = connect(certs)
    for _ in range(600):
        server.receive(_mutate(rng, rng.choice(samples)), 101.0)
        server.datagrams_to_send()
        assert events(server) == []
    assert server.state == "connected"
    client.send(b"after the storm")
    shuttle(client, server, 101.0)
    assert events(server) == [ApplicationData(b"after the storm")]
