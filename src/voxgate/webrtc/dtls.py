"""DTLS-SRTP for a browser call (RFC 6347 DTLS 1.2, RFC 5764 use_srtp, RFC 5705 exporter), sans-IO, through
pyOpenSSL's public API on memory BIOs: bytes in, bytes out, time passed in.

    certificate = DtlsCertificate.generate()                 # once per process; its fingerprint goes in SDP
    dtls = DtlsEndpoint(certificate, server=True, remote_fingerprints=[("sha-256", "AB:CD:...")])
    dtls.start(now)                                          # a client sends its ClientHello, a server waits
    dtls.receive(datagram, now)                              # each datagram whose first byte is 20..63
    for datagram in dtls.datagrams_to_send(): sock.sendto(datagram, remote)   # after every call above
    while (event := dtls.next_event()) is not None: ...      # Connected(keys) | ApplicationData | Closed | Failed
    dtls.handle_timer(now)                                   # once now >= dtls.next_timer()
    dtls.send(sctp_packet)                                   # once Connected: one packet, one record

The peer is trusted by the fingerprint its SDP gave for its (self-signed) certificate, not by any CA
(RFC 8842): the certificate it shows in the handshake must hash to one of `remote_fingerprints`, or the
handshake is refused with a fatal alert before either side has keys. Connected carries the SRTP
keys the exporter gives (RFC 5764 §4.2), ours and theirs by role, as `voxgate.sip.srtp.SrtpContext`
takes them. Input that is not DTLS records is dropped and counted (`dropped`); what OpenSSL refuses in a
record (a bad MAC, a wrong epoch, a replay) it drops itself; only a fatal error ends in Failed. Nothing
here raises on what the network sends.

Two things OpenSSL decides that a sans-IO caller should know:

- Retransmission runs on OpenSSL's own timer, measured on the system clock, not on `now`.
  `next_timer()` puts its deadline on the caller's clock (`now` + what OpenSSL says is left), which
  agrees with OpenSSL's as long as `now` is a real monotonic clock (the event loop's); a `handle_timer`
  that comes early by OpenSSL's measure retransmits nothing and re-arms for the rest. The first
  retransmission is after 1 s, each next one after twice as long (OpenSSL's default; pyOpenSSL does not
  expose DTLS_set_timer_cb), and `handshake_timeout` (30 s from `start`) gives up on our clock.
- A memory BIO is a byte stream: one bio_read returns every record written since the last one, with no
  datagram boundaries (checked: two writes come back as one read). So what OpenSSL writes is split back
  into records (each sized by OpenSSL to fit `mtu`) and packed, in order, into datagrams of at most `mtu`
  bytes, several records to a datagram as RFC 6347 §4.1.1 allows.

The handshake's ECDHE and ECDSA sign and verify cost under a millisecond of CPU a side, once per call
(1.3 ms for both sides of a whole handshake, measured): fine on the event loop, no thread needed.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import logging
import re
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from voxgate.sip.sdes import SrtpKeys

__all__ = [
    "ApplicationData",
    "Closed",
    "Connected",
    "DtlsCertificate",
    "DtlsEndpoint",
    "DtlsError",
    "DtlsEvent",
    "Failed",
    "parse_fingerprint",
]

log = logging.getLogger(__name__)

DEFAULT_MTU = 1200  # UDP payload bytes: what WebRTC stacks assume fits any path (Chrome's SCTP uses 1200 too)
MAX_RECORD_PLAINTEXT = 1 << 14  # RFC 6347 §4.1 (as TLS): the most one record carries
HANDSHAKE_TIMEOUT = 30.0  # seconds from start(): after 1+2+4+8 s of retransmissions, the 16 s wait ends here

_DTLS1_2_VERSION = 0xFEFD  # pyOpenSSL names TLS1_2_VERSION but not the DTLS one; this is the wire value
# Forward-secret AEAD first, as browsers order them. We sign with ECDSA, so as a server only the ECDSA
# suites can be chosen; the RSA ones are offered as a client, for peers with RSA certificates. The CBC
# suites are for old DTLS stacks only; OP_CIPHER_SERVER_PREFERENCE makes ours the order that counts.
_CIPHERS = b":".join([
    b"ECDHE-ECDSA-AES128-GCM-SHA256", b"ECDHE-RSA-AES128-GCM-SHA256",
    b"ECDHE-ECDSA-AES256-GCM-SHA384", b"ECDHE-RSA-AES256-GCM-SHA384",
    b"ECDHE-ECDSA-CHACHA20-POLY1305", b"ECDHE-RSA-CHACHA20-POLY1305",
    b"ECDHE-ECDSA-AES128-SHA", b"ECDHE-RSA-AES128-SHA", b"ECDHE-ECDSA-AES256-SHA", b"ECDHE-RSA-AES256-SHA",
])
# OpenSSL profile name → sdes suite name, our preference first (the server picks from the client's list)
_SRTP_PROFILES = {b"SRTP_AES128_CM_SHA1_80": "AES_CM_128_HMAC_SHA1_80",
                  b"SRTP_AES128_CM_SHA1_32": "AES_CM_128_HMAC_SHA1_32"}
_SRTP_KEY, _SRTP_SALT = 16, 14  # both profiles: AES-128 master key, 112-bit master salt
_EXPORTER_LABEL = b"EXTRACTOR-dtls_srtp"  # RFC 5764 §4.2
# RFC 8122's hash names → hashlib's; md5 and md2 are in the registry but not trusted
_DIGESTS = {"sha-1": "sha1", "sha-224": "sha224", "sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}
_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
_RECORD_HEADER = 13  # type, version, epoch, sequence number (48 bits), length


class DtlsError(ValueError):
    """A misuse of the endpoint by its caller (sending before the handshake finished, an oversized record)."""


def parse_fingerprint(algorithm: str, value: str) -> tuple[str, bytes] | None:
    """An SDP `a=fingerprint:` pair as (hashlib name, digest), or None when the hash is one we do not
    trust or the value is malformed; signaling can use it to refuse an offer none of whose fingerprints
    is usable (the endpoint would only fail its handshake)."""
    name = _DIGESTS.get(algorithm.strip().lower())
    value = value.strip()
    if name is None or not _HEX_PAIRS.fullmatch(value):
        return None
    digest = bytes.fromhex(value.replace(":", ""))
    return (name, digest) if len(digest) == hashlib.new(name).digest_size else None


def _format_digest(digest: bytes) -> str:
    return ":".join(f"{byte:02X}" for byte in digest)


class DtlsCertificate:
    """An ECDSA P-256 self-signed certificate for DTLS, made per process (or per call) — WebRTC peers
    trust it by the fingerprint in SDP, not by a CA. Holds the one SSL context every endpoint using it
    shares (an SSL_CTX is safe to share; building one per call would cost as much as the handshake)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> None:
        self._key = key  # a secret: never in repr
        self.certificate = certificate
        self.der = certificate.public_bytes(Encoding.DER)
        self.context = _context(key, certificate)

    @classmethod
    def generate(cls, *, now: datetime.datetime | None = None, valid_days: int = 30) -> DtlsCertificate:
        """A new key and certificate valid from a day before `now` (clock skew at the peer) for `valid_days`."""
        now = now or datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        # a random name, as Chrome and aiortc do: nothing in the handshake says "voxgate"
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, secrets.token_hex(16))])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @property
    def expires(self) -> datetime.datetime:
        return self.certificate.not_valid_after_utc

    def fingerprints(self) -> list[tuple[str, str]]:
        """[("sha-256", "AB:CD:...")], as SDP's a=fingerprint writes it (what every browser checks)."""
        return [("sha-256", _format_digest(hashlib.sha256(self.der).digest()))]

    def __repr__(self) -> str:
        return f"<DtlsCertificate sha-256 {self.fingerprints()[0][1]}>"


def _context(key: ec.EllipticCurvePrivateKey, certificate: x509.Certificate) -> SSL.Context:
    context = SSL.Context(SSL.DTLS_METHOD)
    # DTLS 1.2 only: what RFC 5764's exporter and this endpoint's timer handling are written for (DTLS 1.3
    # acknowledges records after the handshake), and what browsers negotiate
    context.set_min_proto_version(_DTLS1_2_VERSION)
    context.set_max_proto_version(_DTLS1_2_VERSION)
    # no tickets or session cache (WebRTC never resumes); no renegotiation; NO_QUERY_MTU so the MTU each
    # connection sets is kept (a memory BIO knows no path MTU, and OpenSSL would fall back to its minimum)
    context.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_QUERY_MTU | SSL.OP_NO_RENEGOTIATION
                        | SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # a certificate is required of the peer (a server asks for one), checked against the fingerprints of the
    # connection's own call (its app data). One callback on the shared context, not one per connection:
    # pyOpenSSL's per-connection verify helper is a reference cycle, which only the collector would free.
    context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _verify_peer)
    context.use_certificate(certificate)
    context.use_privatekey(key)
    context.check_privatekey()
    context.set_cipher_list(_CIPHERS)
    context.set_tlsext_use_srtp(b":".join(_SRTP_PROFILES))
    return context


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake finished with the certificate SDP promised: SRTP may start with these keys."""

    keys: SrtpKeys  # its keys are repr=False


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """One record's payload (for WebRTC, one SCTP packet)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer said close_notify (and was answered with ours)."""


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


DtlsEvent = Connected | ApplicationData | Closed | Failed
State = Literal["new", "connecting", "connected", "closed", "failed"]


def _verify_peer(connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int, ok: int) -> bool:
    check = connection.get_app_data()
    return isinstance(check, _PeerCheck) and check(connection, certificate, error, depth, ok)


class _PeerCheck:
    """The verify callback: a chain is not judged (self-signed is the rule), the leaf certificate is, by its
    digest against the SDP's fingerprints. Refusing it here has OpenSSL abort the handshake with a fatal
    alert (unknown_ca, as OpenSSL names the self-signed leaf's complaint), before the peer could think it
    connected: it never gets our Finished. Holds no reference to the endpoint."""

    def __init__(self, fingerprints: list[tuple[str, str]]) -> None:
        self.expected = [fp for fp in (parse_fingerprint(a, v) for a, v in fingerprints) if fp is not None]
        self.mismatched = False

    def matches(self, der: bytes) -> bool:
        # every expected digest is compared (in constant time each): which one matched is nobody's business
        found = False
        for name, digest in self.expected:
            found |= hmac.compare_digest(hashlib.new(name, der).digest(), digest)
        return found

    def __call__(self, connection: SSL.Connection, certificate: crypto.X509, error: int, depth: int,
                 ok: int) -> bool:
        if depth != 0:
            return True
        try:
            der = certificate.to_cryptography().public_bytes(Encoding.DER)
        except ValueError:
            der = b""
        if self.matches(der):
            return True
        self.mismatched = True
        return False


def _split_records(data: bytes) -> list[bytes] | None:
    """The DTLS records a datagram holds, whole, or None when it is not a sequence of DTLS 1.x records."""
    records: list[bytes] = []
    offset, size = 0, len(data)
    while offset < size:
        if size - offset < _RECORD_HEADER or not 20 <= data[offset] <= 23 or data[offset + 1] != 0xFE:
            return None  # content types 20..23 are all DTLS 1.2 uses here; 0xFE is DTLS's major version
        end = offset + _RECORD_HEADER + int.from_bytes(data[offset + 11:offset + 13], "big")
        if end > size:
            return None  # truncated
        records.append(data[offset:end])
        offset = end
    return records or None


def _reason(error: SSL.Error) -> str:
    """OpenSSL's reason strings ("tlsv1 alert unknown ca"), without the library and function names, the
    ASN.1 parser's nesting, or more than a log line's worth."""
    args = error.args[0] if error.args else None
    if isinstance(args, list):  # SSL.Error: OpenSSL's error queue, [(library, function, reason), ...]
        reasons = dict.fromkeys(str(entry[-1]) for entry in args if isinstance(entry, tuple) and entry)
        reasons.pop("nested asn1 error", None)
        text = "; ".join(reasons)
    elif isinstance(error, SSL.SysCallError) and len(error.args) == 2:
        text = str(error.args[1])  # (-1, "Unexpected EOF"): OpenSSL gave up without saying why
    else:
        text = str(error)
    return text[:120] or type(error).__name__


class DtlsEndpoint:
    """One DTLS association, client or server (SDP's a=setup decides). See the module docstring."""

    def __init__(self, certificate: DtlsCertificate, *, server: bool, remote_fingerprints: list[tuple[str, str]],
                 handshake_timeout: float = HANDSHAKE_TIMEOUT, mtu: int = DEFAULT_MTU) -> None:
        if not 256 <= mtu <= 65507:
            raise DtlsError(f"mtu {mtu} is not a usable UDP payload size")  # OpenSSL ignores one under its minimum
        self.certificate = certificate
        self.server = server
        self.handshake_timeout = handshake_timeout
        self.mtu = mtu
        self.state: State = "new"
        self.dropped = 0  # datagrams refused before OpenSSL saw them: not DTLS records, or nothing to take them
        self.keys: SrtpKeys | None = None
        self._check = _PeerCheck(remote_fingerprints)
        self._connection = SSL.Connection(certificate.context, None)  # None: memory BIOs
        self._connection.set_app_data(self._check)  # what the context's verify callback checks the peer by
        self._connection.set_ciphertext_mtu(mtu)
        if server:
            self._connection.set_accept_state()
        else:
            self._connection.set_connect_state()
        self._events: deque[DtlsEvent] = deque()
        self._records: list[bytes] = []  # written by OpenSSL, not yet taken by datagrams_to_send
        self._deadline: float | None = None  # the handshake's, on the caller's clock
        self._retransmit_at: float | None = None  # OpenSSL's timer, on the caller's clock

    def __repr__(self) -> str:
        return f"<DtlsEndpoint {'server' if self.server else 'client'} {self.state}>"

    @property
    def cipher(self) -> str | None:
        """The negotiated cipher suite's OpenSSL name, for logs."""
        return self._connection.get_cipher_name()

    @property
    def max_application_data(self) -> int:
        """The largest send() whose record still fits `mtu` (0 before the handshake: no cipher yet).
        Larger ones, up to 16 KiB, go out as one oversized datagram for IP to fragment."""
        return self._connection.get_cleartext_mtu()

    # -- the caller's calls ------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Begin: a client emits its ClientHello, a server waits for one. Once only."""
        if self.state != "new":
            return
        self.state = "connecting"
        self._deadline = now + self.handshake_timeout
        if not self._check.expected:
            self._fail("no usable remote fingerprint")  # no certificate could pass: do not even try
        elif not self.server:
            self._handshake(now)

    def receive(self, datagram: bytes, now: float) -> None:
        """One UDP datagram whose first byte is 20..63 (RFC 7983). Never raises on its content."""
        if self.state == "new" and self.server:
            self.start(now)  # a ClientHello that beat our start(): the shell's order should not matter
        if self.state not in ("connecting", "connected") or _split_records(datagram) is None:
            self.dropped += 1
            return
        self._connection.bio_write(datagram)
        if self.state == "connecting":
            self._handshake(now)
        else:
            self._read()  # data, and whatever the peer's records make OpenSSL answer (a repeated Finished)
            self._arm(now)

    def datagrams_to_send(self) -> list[bytes]:
        """What must go on the wire now, one datagram per element, each at most `mtu` bytes unless one
        record alone is larger (an oversized send()). Call after every other call."""
        datagrams: list[bytes] = []
        current = b""
        for record in self._records:
            if current and len(current) + len(record) > self.mtu:
                datagrams.append(current)
                current = b""
            current += record
        if current:
            datagrams.append(current)
        self._records = []
        return datagrams

    def next_timer(self) -> float | None:
        """When handle_timer is due, on the caller's clock: a retransmission or the handshake's deadline."""
        if self.state == "connecting":
            due = [t for t in (self._retransmit_at, self._deadline) if t is not None]
            return min(due) if due else None
        return self._retransmit_at if self.state == "connected" else None

    def handle_timer(self, now: float) -> None:
        if self.state == "connecting" and self._deadline is not None and now >= self._deadline:
            self._fail("handshake timeout")
            return
        if self.state not in ("connecting", "connected") or self._retransmit_at is None or now < self._retransmit_at:
            return
        try:
            self._connection.DTLSv1_handle_timeout()  # retransmits the last flight if OpenSSL's timer expired
        except SSL.Error:
            self._collect()
            self._fail("handshake timeout")  # OpenSSL's own limit on retransmissions
            return
        self._collect()
        self._arm(now)

    def send(self, data: bytes) -> None:
        """Application data, one record (one SCTP packet). DtlsError before Connected; after the endpoint
        closed or failed it is dropped silently (the shell may still flush while the peer goes away)."""
        if self.state in ("new", "connecting"):
            raise DtlsError("DTLS is not connected yet")
        if self.state != "connected":
            return
        if not data or len(data) > MAX_RECORD_PLAINTEXT:
            raise DtlsError(f"a record carries 1 to {MAX_RECORD_PLAINTEXT} bytes, not {len(data)}")
        try:
            self._connection.send(data)
        except SSL.Error as error:
            self._collect()
            self._fail(f"send failed: {_reason(error)}")
            return
        self._collect()

    def next_event(self) -> DtlsEvent | None:
        return self._events.popleft() if self._events else None

    def close(self) -> None:
        """Say close_notify (only once connected: mid-handshake there is no one to say it to) and stop."""
        if self.state in ("closed", "failed"):
            return
        if self.state == "connected":
            self._shutdown()
        self.state = "closed"
        self._deadline = self._retransmit_at = None

    # -- inside ------------------------------------------------------------------------------------------

    def _handshake(self, now: float) -> None:
        try:
            self._connection.do_handshake()
        except SSL.WantReadError:
            self._collect()
            self._arm(now)
            return
        except SSL.Error as error:
            self._collect()  # the alert OpenSSL wrote goes to the peer
            self._fail("fingerprint mismatch" if self._check.mismatched else f"handshake failed: {_reason(error)}")
            return
        self._collect()
        self._established(now)

    def _established(self, now: float) -> None:
        """The handshake is over: check again what the verify callback checked, take the SRTP keys."""
        connection = self._connection
        certificate = connection.get_peer_certificate(as_cryptography=True)
        if certificate is None or not self._check.matches(certificate.public_bytes(Encoding.DER)):
            self._shutdown()
            self._fail("fingerprint mismatch")
            return
        suite = _SRTP_PROFILES.get(connection.get_selected_srtp_profile())
        if suite is None:
            self._shutdown()
            self._fail("no SRTP profile negotiated")
            return
        material = connection.export_keying_material(_EXPORTER_LABEL, 2 * (_SRTP_KEY + _SRTP_SALT))
        # client key, server key, client salt, server salt (RFC 5764 §4.2)
        keys, salts = material[:2 * _SRTP_KEY], material[2 * _SRTP_KEY:]
        client = keys[:_SRTP_KEY] + salts[:_SRTP_SALT]
        server = keys[_SRTP_KEY:] + salts[_SRTP_SALT:]
        if self.server:
            self.keys = SrtpKeys(suite, local_key=server, remote_key=client)
        else:
            self.keys = SrtpKeys(suite, local_key=client, remote_key=server)
        self.state = "connected"
        self._deadline = None
        self._events.append(Connected(self.keys))
        log.debug("DTLS connected as %s: %s, %s", "server" if self.server else "client", self.cipher, suite)
        self._read()  # records that came with the last flight (an SCTP INIT right behind the Finished)
        self._arm(now)

    def _read(self) -> None:
        while self.state == "connected":
            try:
                data = self._connection.recv(MAX_RECORD_PLAINTEXT)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self._shutdown()  # answer close_notify with ours
                self.state = "closed"
                self._retransmit_at = None
                self._events.append(Closed())
            except SSL.Error as error:
                self._collect()
                self._fail(f"connection failed: {_reason(error)}")  # a fatal alert, or OpenSSL gave up
            else:
                self._events.append(ApplicationData(data))
        self._collect()

    def _shutdown(self) -> None:
        try:
            self._connection.shutdown()
        except SSL.Error:
            pass  # nothing more to say to a connection that is already broken
        self._collect()

    def _collect(self) -> None:
        """Take what OpenSSL wrote, as records (see the module docstring on memory BIOs)."""
        written = b""
        while True:
            try:
                written += self._connection.bio_read(65536)
            except SSL.WantReadError:
                break
        if written:
            # OpenSSL writes whole records; were it ever not so, the bytes go out as they are, in one piece
            self._records.extend(_split_records(written) or [written])

    def _arm(self, now: float) -> None:
        remaining = self._connection.DTLSv1_get_timeout()
        self._retransmit_at = None if remaining is None else now + remaining

    def _fail(self, reason: str) -> None:
        if self.state in ("closed", "failed"):
            return
        self.state = "failed"
        self._deadline = self._retransmit_at = None
        self._events.append(Failed(reason))
        log.debug("DTLS %s failed: %s", "server" if self.server else "client", reason)
