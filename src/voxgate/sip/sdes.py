"""SDES keying for SRTP (RFC 4568): the `a=crypto:` attribute, and the keys an offer/answer settles on.

    offered = parse_crypto("1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4")
    chosen = answer_crypto([offered], local_key=new_key())    # our line for the answer, same tag and suite
    keys = SrtpKeys(chosen.suite, local_key=chosen.key, remote_key=offered.key)

A key is the 30-byte master key and salt concatenated, as pylibsrtp's `Policy(key=...)` takes it;
`SrtpKeys.profile` is the pylibsrtp profile number of the suite. Lines with session parameters
(UNENCRYPTED_SRTP, KDR, ...) or several keys are not accepted: the answer simply does not pick them.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field

from voxgate.sip.errors import SipError

__all__ = [
    "SUITES",
    "CryptoAttribute",
    "SdesError",
    "SrtpKeys",
    "answer_crypto",
    "new_key",
    "parse_crypto",
]

KEY_BYTES = 30  # 128-bit master key + 112-bit master salt
# suite → pylibsrtp profile number (SRTP_PROFILE_AES128_CM_SHA1_80 = 1, _32 = 2), strongest tag first
SUITES = {"AES_CM_128_HMAC_SHA1_80": 1, "AES_CM_128_HMAC_SHA1_32": 2}
_LINE = re.compile(r"([0-9]{1,9}) ([A-Za-z0-9_]+) inline:([A-Za-z0-9+/=]+)((?:\|[^|\s;]+){0,2})((?: \S+)*)")


class SdesError(SipError):
    default_code = "bad_crypto"


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


@dataclass(frozen=True)
class CryptoAttribute:
    tag: int
    suite: str
    key: bytes = field(repr=False)  # a secret: never in a log line
    lifetime: str | None = None
    mki: str | None = None  # "value:length"
    session_params: tuple[str, ...] = ()

    @property
    def supported(self) -> bool:
        return self.suite in SUITES and len(self.key) == KEY_BYTES and not self.session_params and not self.mki

    def __str__(self) -> str:
        text = f"{self.tag} {self.suite} inline:{base64.b64encode(self.key).decode()}"
        if self.lifetime:
            text += f"|{self.lifetime}"
        if self.mki:
            text += f"|{self.mki}"
        return text + "".join(f" {param}" for param in self.session_params)


def parse_crypto(value: str) -> CryptoAttribute:
    """One `a=crypto:` value. Raises SdesError on malformed syntax (an unknown suite parses, unsupported)."""
    match = _LINE.fullmatch(value.strip())
    if match is None:
        raise SdesError(f"malformed crypto attribute {value[:60]!r}")
    tag, suite, key_text, extras, params = match.groups()
    try:
        key = base64.b64decode(key_text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SdesError("crypto key is not base64") from exc
    lifetime = mki = None
    for extra in filter(None, extras.split("|")):
        if ":" in extra:
            mki = extra
        else:
            lifetime = extra
    return CryptoAttribute(int(tag), suite.upper(), key, lifetime, mki, tuple(params.split()))


def answer_crypto(offered: list[CryptoAttribute], local_key: bytes) -> CryptoAttribute | None:
    """The crypto line to answer with: the first offered line we support (offer order is the offerer's
    preference), with its tag and suite and our key. None when nothing is usable."""
    for crypto in offered:
        if crypto.supported:
            return CryptoAttribute(crypto.tag, crypto.suite, local_key)
    return None


@dataclass(frozen=True)
class SrtpKeys:
    """What SRTP needs: protect our packets with `local_key`, unprotect theirs with `remote_key`."""

    suite: str
    local_key: bytes = field(repr=False)  # secrets: never in a log line or a record
    remote_key: bytes = field(repr=False)

    @property
    def profile(self) -> int:
        return SUITES[self.suite]
