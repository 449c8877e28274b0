"""SIP, SIPS and tel URIs (RFC 3261 §19.1 and §25.1, RFC 3966), parsed to typed values and written back.

    uri = parse_uri("sip:+15551234567@trunk.example:5060;transport=tcp;user=phone")
    uri.user, uri.host, uri.port, uri.param("transport")   # '+15551234567', 'trunk.example', 5060, 'tcp'
    str(uri)                                               # the same text back

Components are kept as they were written (still %-escaped) so a URI serialises to the bytes that arrived;
`unescape` reads a component. Host names are compared case-insensitively, so they are lowercased.
A Request-URI may carry any absolute URI: schemes other than sip, sips and tel parse to `OtherUri`, which
a user agent answers with 416 Unsupported URI Scheme rather than 400.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from voxgate.sip.errors import SipError

__all__ = [
    "OtherUri",
    "Params",
    "SipUri",
    "TelUri",
    "Uri",
    "UriError",
    "param",
    "parse_host",
    "parse_uri",
    "unescape",
    "write_params",
]

MAX_URI_CHARS = 2048  # far beyond any real URI; bounds the work one header can cost

_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+")
_PASSWORD = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*")
_PARAM_CHARS = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+")
_HEADER_CHARS = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?")
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
# tel: global numbers start with '+', local ones carry phone-context; visual separators are allowed
_TEL_NUMBER = re.compile(r"\+?[0-9A-Fa-f*#\-.()]+")
_OPAQUE = re.compile(r"[!-~]+")  # an absolute URI of another scheme: visible ASCII, no spaces


class UriError(SipError):
    """A URI that does not follow the grammar."""

    default_code = "bad_uri"


def unescape(component: str) -> str:
    """A %-escaped URI component as text (UTF-8; undecodable bytes become U+FFFD)."""
    return unquote_to_bytes(component).decode("utf-8", "replace") if "%" in component else component


Params = tuple[tuple[str, str | None], ...]


def param(params: Params, name: str) -> str | None:
    """A parameter's value ("" for a flag such as `lr`), None when absent; names compare lowercased."""
    name = name.lower()
    for key, value in params:
        if key == name:
            return value if value is not None else ""
    return None


def write_params(params: Params) -> str:
    return "".join(f";{key}" if value is None else f";{key}={value}" for key, value in params)


@dataclass(frozen=True, slots=True)
class SipUri:
    """sip: or sips: URI. `params` are the URI parameters in order, names lowercased; `headers` the
    `?name=value` part. A parameter without a value (`;lr`) has the value None."""

    scheme: str  # "sip" | "sips"
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        """A parameter's value; "" for a flag parameter such as `lr`; None when absent."""
        return param(self.params, name)

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def with_params(self, **params: str | None) -> SipUri:
        """A copy with these parameters set (None: a flag parameter), replacing any of the same name."""
        names = {name.lower() for name in params}
        kept = tuple((key, value) for key, value in self.params if key not in names)
        return SipUri(self.scheme, self.host, self.user, self.password, self.port,
                      kept + tuple((key.lower(), value) for key, value in params.items()), self.headers)

    def without_headers(self) -> SipUri:
        """The URI as a request target: RFC 3261 §19.1.5 forbids headers in a Request-URI."""
        return SipUri(self.scheme, self.host, self.user, self.password, self.port, self.params)

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        text = f"{self.scheme}:{userinfo}{self.host_port}{write_params(self.params)}"
        if self.headers:
            text += "?" + "&".join(f"{name}={value}" for name, value in self.headers)
        return text


@dataclass(frozen=True, slots=True)
class TelUri:
    """tel: URI (RFC 3966): a phone number and its parameters (`phone-context`, `ext`, ...)."""

    number: str
    params: Params = ()
    scheme: str = "tel"

    def param(self, name: str) -> str | None:
        return param(self.params, name)

    @property
    def digits(self) -> str:
        """The number without visual separators, as routing compares it (`+1-555-0100` → `+15550100`)."""
        return re.sub(r"[\-.()]", "", self.number)

    def __str__(self) -> str:
        return f"tel:{self.number}{write_params(self.params)}"


@dataclass(frozen=True, slots=True)
class OtherUri:
    """An absolute URI of a scheme this stack does not speak (answer 416 when it is a Request-URI)."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | OtherUri


def _full(pattern: re.Pattern[str], text: str) -> bool:
    return pattern.fullmatch(text) is not None


def _parse_params(text: str, value_chars: re.Pattern[str]) -> Params:
    """`;name=value;flag` (text starts after the first ';')."""
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, sep, value = item.partition("=")
        if not _full(value_chars, name) or (sep and not _full(value_chars, value)):
            raise UriError(f"malformed URI parameter {item!r}", "bad_uri_param")
        out.append((name.lower(), value if sep else None))
    return tuple(out)


def parse_host(text: str) -> tuple[str, int | None]:
    """`host[:port]` (a name, an IPv4 address or a bracketed IPv6 reference); host lowercased."""
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UriError("unterminated IPv6 reference", "bad_host")
        host, rest = text[: end + 1], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError as exc:
            raise UriError(f"malformed IPv6 address {host!r}", "bad_host") from exc
        host = host.lower()
        if rest:
            if not rest.startswith(":"):
                raise UriError(f"junk after IPv6 reference {rest!r}", "bad_host")
            port = _parse_port(rest[1:])
        return host, port
    host, sep, port_text = text.partition(":")
    if sep:
        port = _parse_port(port_text)
    if _full(_IPV4, host):
        if any(int(part) > 255 for part in host.split(".")):
            raise UriError(f"malformed IPv4 address {host!r}", "bad_host")
    elif not _full(_HOSTNAME, host):
        raise UriError(f"malformed host {host!r}", "bad_host")
    return host.lower(), port


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 5 or int(text) > 65535:
        raise UriError(f"malformed port {text!r}", "bad_port")
    return int(text)


def _parse_sip(scheme: str, rest: str) -> SipUri:
    headers: tuple[tuple[str, str], ...] = ()
    user = password = None
    # '@' may appear only in the userinfo: parameters and headers must escape it
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, sep, pw = userinfo.partition(":")
        if not _full(_USER, user):
            raise UriError(f"malformed user part {user!r}", "bad_user")
        if sep:
            if not _full(_PASSWORD, pw):
                raise UriError("malformed password", "bad_user")
            password = pw
    rest, qmark, header_text = rest.partition("?")
    if qmark:
        pairs = []
        for item in header_text.split("&"):
            name, eq, value = item.partition("=")
            if not eq or not name or not _full(_HEADER_CHARS, name) or not _full(_HEADER_CHARS, value):
                raise UriError(f"malformed URI header {item!r}", "bad_uri_header")
            pairs.append((name, value))
        headers = tuple(pairs)
    host_text, semi, param_text = rest.partition(";")
    host, port = parse_host(host_text)
    params = _parse_params(param_text, _PARAM_CHARS) if semi else ()
    return SipUri(scheme, host, user, password, port, params, headers)


def _parse_tel(rest: str) -> TelUri:
    number, semi, param_text = rest.partition(";")
    if not _full(_TEL_NUMBER, number) or not any(c.isalnum() or c in "*#" for c in number):
        raise UriError(f"malformed telephone number {number!r}", "bad_tel")
    params = _parse_params(param_text, _PARAM_CHARS) if semi else ()
    if not number.startswith("+") and param(params, "phone-context") is None:
        raise UriError("a local tel: number needs phone-context", "bad_tel")
    return TelUri(number, params)


def parse_uri(text: str) -> Uri:
    """Parse an absolute URI; raises UriError. Whitespace anywhere is an error (RFC 4475 lwsruri)."""
    if len(text) > MAX_URI_CHARS:
        raise UriError("URI too long", "uri_too_long")
    scheme, colon, rest = text.partition(":")
    if not colon or not _full(_SCHEME, scheme) or not rest:
        raise UriError(f"not an absolute URI: {text[:80]!r}")
    if not text.isascii() or not _full(_OPAQUE, rest):
        raise UriError("whitespace or non-ASCII characters in a URI", "bad_uri_chars")
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        return _parse_sip(scheme, rest)
    if scheme == "tel":
        return _parse_tel(rest)
    return OtherUri(scheme, rest)
