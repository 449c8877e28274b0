"""The STUN a lite ICE agent speaks (RFC 8445 §2.5, RFC 8489): answer the browser's connectivity checks.

The gateway is an ICE-lite agent on a public (or LAN) address: it gathers no candidates beyond its own
host addresses and sends no checks. The browser, the full agent, checks each of our candidates with
a Binding request signed with our ICE password; we answer from the address it reached, saying where the
request came from (XOR-MAPPED-ADDRESS), signed the same way. The address whose check asked us to
USE-CANDIDATE is where media goes; later checks (consent freshness, RFC 7675, every few seconds) keep
the call alive.

    check = read_check(datagram, local_ufrag="abcd", local_password=pwd)   # StunError: drop, or answer_error
    reply = answer_check(check, source=("192.0.2.7", 50000), local_password=pwd)

Sans-IO: bytes in, bytes out.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass
from hashlib import sha1

__all__ = ["BindingCheck", "StunError", "answer_check", "answer_error", "is_stun", "read_check"]

MAGIC_COOKIE = 0x2112A442
HEADER = struct.Struct("!HHI12s")
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A
_FINGERPRINT_XOR = 0x5354554E
_INTEGRITY_BYTES = 20
MAX_MESSAGE_BYTES = 548  # a check is ~100 bytes; RFC 8489 asks every agent to take 548


class StunError(ValueError):
    """Not a check we answer: malformed, not for us, or not signed with our password. `status` is the error
    response it deserves (400, 401), or 0 when it gets none (dropped silently)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class BindingCheck:
    transaction_id: bytes
    remote_ufrag: str
    use_candidate: bool
    controlling: bool  # the peer says it is the controlling agent, as a full agent facing a lite one must
    priority: int


def is_stun(data: bytes) -> bool:
    """RFC 7983's demultiplexing: a first byte of 0-3 and the magic cookie is STUN."""
    return len(data) >= 20 and data[0] < 4 and data[4:8] == b"\x21\x12\xa4\x42"


def read_check(data: bytes, *, local_ufrag: str, local_password: str) -> BindingCheck:
    """A Binding request for this call, checked: our username fragment first, our password's signature, an
    intact fingerprint when there is one. Raises StunError otherwise."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise StunError("STUN message too large")
    if len(data) < HEADER.size:
        raise StunError("truncated STUN header")
    kind, length, cookie, transaction = HEADER.unpack_from(data)
    if cookie != MAGIC_COOKIE or length % 4 or HEADER.size + length != len(data):
        raise StunError("not a STUN message")
    if kind != BINDING_REQUEST:
        raise StunError(f"STUN message type {kind:#06x} is not a Binding request")
    username: str | None = None
    integrity_at = -1
    use_candidate = controlling = False
    priority = 0
    offset = HEADER.size
    while offset < len(data):
        if offset + 4 > len(data):
            raise StunError("truncated STUN attribute", 400)
        attribute, size = struct.unpack_from("!HH", data, offset)
        value = data[offset + 4:offset + 4 + size]
        if len(value) != size:
            raise StunError("truncated STUN attribute", 400)
        if integrity_at >= 0 and attribute != FINGERPRINT:
            raise StunError("attribute after MESSAGE-INTEGRITY", 400)  # RFC 8489 §14.5: only FINGERPRINT follows
        if attribute == USERNAME:
            username = value.decode("utf-8", "replace")
        elif attribute == MESSAGE_INTEGRITY:
            if size != _INTEGRITY_BYTES:
                raise StunError("bad MESSAGE-INTEGRITY size", 400)
            integrity_at = offset
        elif attribute == FINGERPRINT:
            if size != 4 or offset + 8 != len(data):
                raise StunError("FINGERPRINT is not the last attribute", 400)
            expected = (zlib.crc32(_with_length(data[:offset], offset + 8 - HEADER.size)) ^ _FINGERPRINT_XOR)
            if struct.unpack("!I", value)[0] != expected:
                raise StunError("bad STUN FINGERPRINT")
        elif attribute == USE_CANDIDATE:
            use_candidate = True
        elif attribute == ICE_CONTROLLING:
            controlling = True
        elif attribute == PRIORITY and size == 4:
            priority = struct.unpack("!I", value)[0]
        offset += 4 + size + (-size % 4)
    if username is None or integrity_at < 0:
        raise StunError("a check needs USERNAME and MESSAGE-INTEGRITY", 400)
    local, _, remote = username.partition(":")
    if not hmac.compare_digest(local.encode(), local_ufrag.encode()):
        raise StunError("check for another username fragment", 401)
    signed = _with_length(data[:integrity_at], integrity_at + 4 + _INTEGRITY_BYTES - HEADER.size)
    digest = hmac.new(local_password.encode(), signed, sha1).digest()
    if not hmac.compare_digest(digest, data[integrity_at + 4:integrity_at + 4 + _INTEGRITY_BYTES]):
        raise StunError("check not signed with our password", 401)
    return BindingCheck(transaction, remote, use_candidate, controlling, priority)


def answer_check(check: BindingCheck, *, source: tuple[str, int], local_password: str) -> bytes:
    """The success response: where the check came from, signed with our password, with a fingerprint."""
    return _message(BINDING_SUCCESS, check.transaction_id, [(XOR_MAPPED_ADDRESS,
                    _xor_address(source, check.transaction_id))], local_password)


def answer_error(data: bytes, status: int, *, local_password: str | None = None) -> bytes | None:
    """An error response to a request that was not answerable (None: the request is too broken to answer)."""
    if len(data) < HEADER.size or not is_stun(data) or struct.unpack_from("!H", data)[0] != BINDING_REQUEST:
        return None
    transaction = data[8:20]
    reason = {400: b"Bad Request", 401: b"Unauthorized"}.get(status, b"Error")
    value = struct.pack("!HBB", 0, status // 100, status % 100) + reason
    return _message(BINDING_ERROR, transaction, [(ERROR_CODE, value)], local_password if status != 401 else None)


def _message(kind: int, transaction: bytes, attributes: list[tuple[int, bytes]], password: str | None) -> bytes:
    body = b"".join(struct.pack("!HH", a, len(v)) + v + b"\x00" * (-len(v) % 4) for a, v in attributes)
    if password is not None:
        head = HEADER.pack(kind, len(body) + 4 + _INTEGRITY_BYTES, MAGIC_COOKIE, transaction)
        digest = hmac.new(password.encode(), head + body, sha1).digest()
        body += struct.pack("!HH", MESSAGE_INTEGRITY, _INTEGRITY_BYTES) + digest
    head = HEADER.pack(kind, len(body) + 8, MAGIC_COOKIE, transaction)
    crc = zlib.crc32(head + body) ^ _FINGERPRINT_XOR
    return head + body + struct.pack("!HHI", FINGERPRINT, 4, crc)


def _with_length(prefix: bytes, length: int) -> bytes:
    """The message up to an attribute, its header's length set as if that attribute ended the message
    (how MESSAGE-INTEGRITY and FINGERPRINT are computed)."""
    return prefix[:2] + struct.pack("!H", length) + prefix[4:]


def _xor_address(address: tuple[str, int], transaction: bytes) -> bytes:
    ip = ipaddress.ip_address(address[0])
    port = address[1] ^ (MAGIC_COOKIE >> 16)
    key = struct.pack("!I", MAGIC_COOKIE) + transaction
    packed = bytes(b ^ k for b, k in zip(ip.packed, key, strict=False))
    return struct.pack("!BBH", 0, 1 if ip.version == 4 else 2, port) + packed
