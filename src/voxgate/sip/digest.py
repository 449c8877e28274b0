"""HTTP digest authentication as SIP uses it (RFC 3261 §22, RFC 7616, RFC 8760: MD5 and SHA-256), both ways.

As a client (REGISTER to a trunk, an outbound INVITE challenged with 407):

    client = DigestClient("alice", "s3cret")
    name, challenge = pick_challenge(response_401_or_407)   # the strongest challenge we can answer
    client.challenged(challenge)
    request.headers.set(name, client.authorization("REGISTER", "sip:trunk.example"))  # nc counts up per nonce

As a server (inbound INVITEs must authenticate):

    verifier = DigestVerifier(realm="voxgate", secret=os.urandom(32))
    reply 401 with ("WWW-Authenticate", str(verifier.challenge(now)))
    verdict = verifier.verify(parse_credentials(value), method="INVITE", password=..., now=now)
    verdict.ok / verdict.stale (challenge again with stale=true) / verdict.reason

Nonces are stateless (a timestamp and an HMAC over it), expire after `nonce_lifetime`, and a nonce count
may not repeat (replays are refused; the memory of counts is bounded). Malformed header values raise
DigestError; comparisons are constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from voxgate.sip.errors import SipError
from voxgate.sip.message import Response

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "Credentials",
    "DigestClient",
    "DigestError",
    "DigestVerifier",
    "Verdict",
    "parse_challenge",
    "parse_credentials",
    "pick_challenge",
    "response_digest",
]

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
ALGORITHMS = ("SHA-256", "MD5")  # strongest first
MAX_HEADER_CHARS = 4096

_PARAM = re.compile(r'[ \t]*([A-Za-z0-9\-.!%*_+`\'~]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^\s,"]+)[ \t]*')
_HEX = re.compile(r"[0-9a-fA-F]+")


class DigestError(SipError):
    """A challenge or credentials header that cannot be used."""

    default_code = "bad_digest"


def _split_algorithm(name: str) -> tuple[str, bool]:
    upper = name.upper()
    session = upper.endswith("-SESS")
    base = upper[:-5] if session else upper
    if base not in _HASHES:
        raise DigestError(f"unsupported digest algorithm {name!r}", "unsupported_algorithm")
    return base, session


def _parse_auth(value: str) -> dict[str, str]:
    """`Digest a="b", c=d` → {"a": "b", "c": "d"} (names lowercased, quotes and escapes removed)."""
    if len(value) > MAX_HEADER_CHARS:
        raise DigestError("authentication header too long")
    scheme, _, rest = value.strip().replace("\t", " ").partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest header (scheme {scheme[:20]!r})", "unsupported_scheme")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None:
            raise DigestError(f"malformed auth-param at {rest[pos:pos + 20]!r}")
        name, raw = match.group(1).lower(), match.group(2)
        if name in params:
            raise DigestError(f"repeated auth-param {name}")
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        pos = match.end()
        if pos < len(rest):
            if rest[pos] != ",":
                raise DigestError("auth-params must be separated by commas")
            pos += 1
    return params


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Challenge:
    """A WWW-Authenticate or Proxy-Authenticate value."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()  # offered: "auth", "auth-int"
    opaque: str | None = None
    stale: bool = False

    def __str__(self) -> str:
        parts = [f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}", f"algorithm={self.algorithm}"]
        if self.qop:
            parts.append(f'qop="{",".join(self.qop)}"')
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)


def parse_challenge(value: str) -> Challenge:
    params = _parse_auth(value)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("a challenge needs realm and nonce")
    algorithm = params.get("algorithm", "MD5")
    _split_algorithm(algorithm)
    qop = tuple(item.strip().lower() for item in params.get("qop", "").split(",") if item.strip())
    return Challenge(params["realm"], params["nonce"], algorithm.upper(), qop, params.get("opaque"),
                     params.get("stale", "").lower() == "true")


@dataclass(frozen=True)
class Credentials:
    """An Authorization or Proxy-Authorization value."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None  # 8 hex digits
    cnonce: str | None = None
    opaque: str | None = None

    def __str__(self) -> str:
        parts = [f"username={_quote(self.username)}", f"realm={_quote(self.realm)}", f"nonce={_quote(self.nonce)}",
                 f"uri={_quote(self.uri)}", f'response="{self.response}"', f"algorithm={self.algorithm}"]
        if self.qop is not None:
            parts += [f"qop={self.qop}", f"nc={self.nc}", f"cnonce={_quote(self.cnonce or '')}"]
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        return "Digest " + ", ".join(parts)


def parse_credentials(value: str) -> Credentials:
    params = _parse_auth(value)
    missing = [name for name in ("username", "realm", "nonce", "uri", "response") if name not in params]
    if missing:
        raise DigestError(f"credentials lack {', '.join(missing)}")
    algorithm = params.get("algorithm", "MD5").upper()
    _split_algorithm(algorithm)
    qop = params.get("qop")
    if qop is not None:
        qop = qop.lower()
        nc, cnonce = params.get("nc"), params.get("cnonce")
        if qop not in ("auth", "auth-int") or nc is None or cnonce is None or len(nc) != 8 or not _HEX.fullmatch(nc):
            raise DigestError("qop needs a known value, an 8-hex-digit nc and a cnonce")
    if not _HEX.fullmatch(params["response"]):
        raise DigestError("response is not hex")
    return Credentials(params["username"], params["realm"], params["nonce"], params["uri"],
                       params["response"].lower(), algorithm, qop, params.get("nc"), params.get("cnonce"),
                       params.get("opaque"))


def response_digest(*, algorithm: str, username: str, realm: str, password: str, nonce: str, method: str,
                    uri: str, qop: str | None = None, nc: str | None = None, cnonce: str | None = None,
                    body: bytes = b"") -> str:
    """The `response` value (RFC 7616 §3.4.1; RFC 2617 without qop)."""
    base, session = _split_algorithm(algorithm)
    h = _HASHES[base]
    ha1 = h(f"{username}:{realm}:{password}".encode())
    if session:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}".encode())
    ha2 = h(f"{method}:{uri}:{h(body)}".encode()) if qop == "auth-int" else h(f"{method}:{uri}".encode())
    if qop is None:
        return h(f"{ha1}:{nonce}:{ha2}".encode())
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}".encode())


def pick_challenge(response: Response) -> tuple[str, Challenge]:
    """The header to answer with (Authorization or Proxy-Authorization) and the strongest challenge of a
    401/407 we support (RFC 8760 §2.4: SHA-256 before MD5)."""
    source, answer = ("Proxy-Authenticate", "Proxy-Authorization") if response.status == 407 else (
        "WWW-Authenticate", "Authorization")
    usable: list[Challenge] = []
    for value in response.headers.get_all(source):
        try:
            usable.append(parse_challenge(value))
        except DigestError:
            continue  # another scheme or algorithm: skip it
    if not usable:
        raise DigestError(f"no usable {source} challenge", "no_challenge")
    usable.sort(key=lambda c: ALGORITHMS.index(_split_algorithm(c.algorithm)[0]))
    return answer, usable[0]


@dataclass
class DigestClient:
    """Our credentials for one realm, answering its challenges with an increasing nonce count."""

    username: str
    password: str
    challenge: Challenge | None = None
    _counts: dict[str, int] = field(default_factory=dict)

    def challenged(self, challenge: Challenge) -> None:
        self.challenge = challenge

    def authorization(self, method: str, uri: str, *, body: bytes = b"", cnonce: str | None = None) -> str:
        """The Authorization value for a request to `uri`, or DigestError before any challenge."""
        challenge = self.challenge
        if challenge is None:
            raise DigestError("no challenge to answer", "no_challenge")
        qop = "auth" if "auth" in challenge.qop else ("auth-int" if "auth-int" in challenge.qop else None)
        nc = cnonce_value = None
        if qop is not None:
            count = self._counts.get(challenge.nonce, 0) + 1
            self._counts = {challenge.nonce: count}  # only the current nonce's count matters
            nc, cnonce_value = f"{count:08x}", cnonce or secrets.token_hex(8)
        digest = response_digest(algorithm=challenge.algorithm, username=self.username, realm=challenge.realm,
                                 password=self.password, nonce=challenge.nonce, method=method, uri=uri, qop=qop,
                                 nc=nc, cnonce=cnonce_value, body=body)
        return str(Credentials(self.username, challenge.realm, challenge.nonce, uri, digest, challenge.algorithm,
                               qop, nc, cnonce_value, challenge.opaque))


@dataclass(frozen=True)
class Verdict:
    ok: bool
    stale: bool = False  # a valid answer to an expired nonce: challenge again with stale=true
    reason: str = ""


@dataclass
class DigestVerifier:
    """Challenges and checks callers for one realm, without storing nonces."""

    realm: str
    secret: bytes
    algorithm: str = "SHA-256"
    nonce_lifetime: float = 300.0
    qop: tuple[str, ...] = ("auth",)
    max_tracked_nonces: int = 10_000
    _counts: OrderedDict[str, int] = field(default_factory=OrderedDict)

    def _mac(self, stamp: bytes) -> bytes:
        return hmac.new(self.secret, stamp + self.realm.encode(), hashlib.sha256).digest()[:16]

    def challenge(self, now: float, *, stale: bool = False) -> Challenge:
        stamp = struct.pack(">d", now)
        nonce = base64.urlsafe_b64encode(stamp + self._mac(stamp) + secrets.token_bytes(4)).decode().rstrip("=")
        return Challenge(self.realm, nonce, self.algorithm, self.qop, None, stale)

    def _nonce_time(self, nonce: str) -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != 28 or not hmac.compare_digest(raw[8:24], self._mac(raw[:8])):
            return None
        return float(struct.unpack(">d", raw[:8])[0])

    def verify(self, credentials: Credentials, *, method: str, password: str | None, now: float,
               body: bytes = b"") -> Verdict:
        """Check `credentials` for `method`; `password` None means an unknown user (refused the same way)."""
        if credentials.realm != self.realm:
            return Verdict(False, reason="wrong realm")
        issued = self._nonce_time(credentials.nonce)
        if issued is None or issued > now:
            return Verdict(False, reason="not our nonce")
        if credentials.qop is None and self.qop:
            return Verdict(False, reason="qop required")
        expected = response_digest(algorithm=credentials.algorithm, username=credentials.username,
                                   realm=self.realm, password=password or secrets.token_hex(16),
                                   nonce=credentials.nonce, method=method, uri=credentials.uri,
                                   qop=credentials.qop, nc=credentials.nc, cnonce=credentials.cnonce, body=body)
        if password is None or not hmac.compare_digest(expected, credentials.response):
            return Verdict(False, reason="wrong credentials")
        if now - issued > self.nonce_lifetime:
            return Verdict(False, stale=True, reason="nonce expired")
        if credentials.nc is not None:
            count = int(credentials.nc, 16)
            if count <= self._counts.get(credentials.nonce, 0):
                return Verdict(False, reason="nonce count replayed")
            self._counts[credentials.nonce] = count
            self._counts.move_to_end(credentials.nonce)
            while len(self._counts) > self.max_tracked_nonces:
                self._counts.popitem(last=False)
        return Verdict(True)
