"""Typed values of the SIP header fields a user agent acts on (RFC 3261 §20, §25.1; RFC 3581 rport).

    vias = parse_via("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK77;rport")   # one Via per comma value
    frm = parse_name_address('"Alice" <sip:alice@example.com>;tag=88')
    frm.tag, frm.uri.user                                                   # '88', 'alice'
    parse_cseq("4711 INVITE")                                               # CSeq(4711, 'INVITE')

Input is a header value as message.py hands it over: line folding already replaced by spaces. Linear
white space is allowed where the grammar allows it (`SIP / 2.0 / UDP`, `tag = 1`); anything else raises
HeaderError, which the message layer turns into a 400. Values serialise back (`str(value)`) in the
canonical spacing.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from voxgate.sip.errors import SipError
from voxgate.sip.uri import Params, SipUri, Uri, UriError, param, parse_host, parse_uri, write_params

__all__ = [
    "MAGIC_COOKIE",
    "CSeq",
    "HeaderError",
    "NameAddress",
    "Params",
    "Via",
    "display_of",
    "is_token",
    "new_branch",
    "new_tag",
    "param",
    "parse_call_id",
    "parse_cseq",
    "parse_name_address",
    "parse_name_addresses",
    "parse_params",
    "parse_via",
    "quote",
    "split_list",
    "write_params",
]

MAGIC_COOKIE = "z9hG4bK"  # an RFC 3261 branch starts with it; others are RFC 2543 peers
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: the sequence number must be below 2**31

_WS = re.compile(r"[ \t]*")
_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_TOKEN = re.compile(rf"[{_TOKEN_CHARS}]+")
# gen-value = token / host / quoted-string; a host adds ':' and brackets for IPv6
_GEN_VALUE_CHARS = rf"{_TOKEN_CHARS}\[\]:"
_GEN_VALUE = re.compile(rf"[{_GEN_VALUE_CHARS}]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\[\x00-\x09\x0b\x0c\x0e-\x7f])*)"')
_QUOTED_PAIR = re.compile(r"\\(.)")
_CALL_ID_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID = re.compile(rf"{_CALL_ID_WORD}(?:@{_CALL_ID_WORD})?")
_METHOD = _TOKEN
_DISPLAY_TOKENS = re.compile(rf"[{_TOKEN_CHARS}]+(?:[ \t]+[{_TOKEN_CHARS}]+)*")


# Fast paths for the canonical spelling (no white space, no quoted parameter values): one regex instead of
# the scanner. Anything else, including everything malformed, goes through the scanner, which decides.
_FAST_PARAMS = rf"(?:;[{_TOKEN_CHARS}]+(?:=[{_GEN_VALUE_CHARS}]+)?)*"
_FAST_VIA = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{{1,5}}))?({_FAST_PARAMS})")
_FAST_ADDRESS = re.compile(rf'(?:"([^"\\]*)" ?|([{_TOKEN_CHARS}]+) ?)?<([^<>\s"]+)>({_FAST_PARAMS})')


def _fast_params(text: str) -> Params:
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name.lower(), value if eq else None))
    return tuple(out)


class HeaderError(SipError):
    """A header value that does not follow its grammar."""

    default_code = "bad_header"


def new_branch() -> str:
    """A fresh RFC 3261 Via branch (magic cookie + 96 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(12)


def new_tag() -> str:
    """A fresh From/To tag (RFC 3261 §19.3: at least 32 random bits; these carry 64)."""
    return secrets.token_hex(8)


def quote(text: str) -> str:
    """A quoted-string: backslash and double quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def split_list(value: str) -> list[str]:
    """A comma-separated header value split into its elements, respecting quotes and <...>."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    out: list[str] = []
    start, depth, in_quote, i = 0, 0, False, 0
    while i < len(value):
        c = value[i]
        if in_quote:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quote = False
        elif c == '"':
            in_quote = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quote:
        raise HeaderError("unterminated quoted string", "bad_quote")
    out.append(value[start:].strip())
    return [item for item in out if item]


class _Scanner:
    """A cursor over one header value; every method skips leading white space."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def ws(self) -> None:
        text, pos = self.text, self.pos
        if pos < len(text) and text[pos] in " \t":  # most values have no white space to skip
            match = _WS.match(text, pos)
            self.pos = match.end() if match else pos

    def at_end(self) -> bool:
        self.ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self.ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, char: str) -> bool:
        if self.peek() == char:
            self.pos += 1
            return True
        return False

    def expect(self, char: str, what: str) -> None:
        if not self.take(char):
            raise HeaderError(f"expected {char!r} {what} at {self.text[self.pos:self.pos + 20]!r}")

    def match(self, pattern: re.Pattern[str], what: str) -> str:
        self.ws()
        found = pattern.match(self.text, self.pos)
        if not found:
            raise HeaderError(f"expected {what} at {self.text[self.pos:self.pos + 20]!r}")
        self.pos = found.end()
        return found.group(0)

    def quoted(self) -> str:
        self.ws()
        found = _QUOTED.match(self.text, self.pos)
        if not found:
            raise HeaderError("unterminated or malformed quoted string", "bad_quote")
        self.pos = found.end()
        return _QUOTED_PAIR.sub(r"\1", found.group(1))

    def params(self) -> Params:
        """`*( SEMI generic-param )`, stopping at a comma or the end."""
        out: list[tuple[str, str | None]] = []
        while self.take(";"):
            name = self.match(_TOKEN, "a parameter name").lower()
            value: str | None = None
            if self.take("="):
                if self.peek() == '"':
                    value = quote(self.quoted())
                else:
                    value = self.match(_GEN_VALUE, f"a value for {name}")
            out.append((name, value))
        return tuple(out)


T = TypeVar("T")


def _comma_list(value: str, item: Callable[[_Scanner], T], code: str) -> list[T]:
    """`item *(COMMA item)` to the end of the value."""
    scanner = _Scanner(value)
    out = [item(scanner)]
    while scanner.take(","):
        out.append(item(scanner))
    if not scanner.at_end():
        raise HeaderError(f"junk in list: {value[scanner.pos:][:40]!r}", code)
    return out


def parse_params(text: str) -> Params:
    """Generic parameters written as `;a=1;b` (as after a Content-Type or Event value)."""
    scanner = _Scanner(text)
    params = scanner.params()
    if not scanner.at_end():
        raise HeaderError(f"junk after parameters: {text[scanner.pos:][:40]!r}")
    return params


# --- Via -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: who sent the request, over what, and its transaction's branch."""

    transport: str  # upper case: UDP, TCP, TLS, SCTP, WS, ...
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"

    @property
    def branch(self) -> str | None:
        return param(self.params, "branch")

    @property
    def received(self) -> str | None:
        return param(self.params, "received")

    @property
    def rport(self) -> int | None:
        """The rport a server filled in (RFC 3581); None when absent or still a bare request flag."""
        value = param(self.params, "rport")
        return int(value) if value else None

    @property
    def wants_rport(self) -> bool:
        return param(self.params, "rport") is not None

    @property
    def maddr(self) -> str | None:
        return param(self.params, "maddr")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port

    @property
    def rfc3261_branch(self) -> bool:
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE)

    def with_params(self, **params: str | None) -> Via:
        names = {name.lower() for name in params}
        kept = tuple((k, v) for k, v in self.params if k not in names)
        return replace(self, params=kept + tuple((k.lower(), v) for k, v in params.items()))

    def __str__(self) -> str:
        host = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"{self.protocol}/{self.transport} {host}{write_params(self.params)}"


_VIA_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+")
_DIGITS = re.compile(r"[0-9]{1,5}")


def _via_params_problem(params: Params) -> str | None:
    for key, value in params:
        if key == "ttl" and (value is None or not value.isdigit() or int(value) > 255):
            return "Via ttl out of range"
        if key == "rport" and value is not None and (not value.isdigit() or int(value) > 65535):
            return "Via rport out of range"
        if key == "branch" and not value:
            return "empty Via branch"
    return None


def _via(scanner: _Scanner) -> Via:
    name = scanner.match(_TOKEN, "a protocol name")
    scanner.expect("/", "in the Via protocol")
    version = scanner.match(_TOKEN, "a protocol version")
    scanner.expect("/", "in the Via protocol")
    transport = scanner.match(_TOKEN, "a transport").upper()
    if name.upper() != "SIP":  # another version is still readable: its request is answered 505
        raise HeaderError(f"unsupported Via protocol {name}/{version}", "bad_via")
    host = scanner.match(_VIA_HOST, "a sent-by host")
    try:
        host = parse_host(host)[0]
    except UriError as exc:
        raise HeaderError(f"malformed Via host {host!r}", "bad_via") from exc
    port = None
    if scanner.take(":"):
        port = int(scanner.match(_DIGITS, "a port"))
        if port > 65535:
            raise HeaderError("Via port out of range", "bad_via")
    params = scanner.params()
    problem = _via_params_problem(params)
    if problem is not None:
        raise HeaderError(problem, "bad_via")
    return Via(transport, host, port, params, f"SIP/{version}")


def parse_via(value: str) -> list[Via]:
    """Every Via in one header value (a proxy may fold several into one line, comma-separated)."""
    fast = _FAST_VIA.fullmatch(value)
    if fast is not None:
        transport, host, port, params = fast.groups()
        try:
            host = parse_host(host)[0]
        except UriError:
            fast = None  # let the scanner say what is wrong
        else:
            port_number = int(port) if port else None
            parsed = _fast_params(params)
            if (port_number is None or port_number <= 65535) and _via_params_problem(parsed) is None:
                return [Via(transport.upper(), host, port_number, parsed)]
    return _comma_list(value, _via, "bad_via")


# --- name-addr: From, To, Contact, Route, Record-Route, Refer-To, Referred-By -----------------------------


@dataclass(frozen=True, slots=True)
class NameAddress:
    """`"Display" <uri>;params`: the value of From, To, Contact, Route and their kin."""

    uri: Uri
    display_name: str | None = None  # unquoted text
    params: Params = ()

    @property
    def tag(self) -> str | None:
        value = param(self.params, "tag")
        return value or None

    def param(self, name: str) -> str | None:
        return param(self.params, name)

    def with_tag(self, tag: str) -> NameAddress:
        kept = tuple((k, v) for k, v in self.params if k != "tag")
        return replace(self, params=(*kept, ("tag", tag)))

    def without_params(self) -> NameAddress:
        return replace(self, params=())

    def __str__(self) -> str:
        display = ""
        if self.display_name:
            name = self.display_name
            display = (name if _DISPLAY_TOKENS.fullmatch(name) else quote(name)) + " "
        return f"{display}<{self.uri}>{write_params(self.params)}"


def _address_uri(text: str) -> Uri:
    try:
        return parse_uri(text)
    except UriError as exc:
        raise HeaderError(f"bad URI in address: {exc}", exc.code) from exc


def _name_address(scanner: _Scanner) -> NameAddress:
    display: str | None = None
    nxt = scanner.peek()
    if nxt == '"':
        display = scanner.quoted()
        if scanner.peek() != "<":
            raise HeaderError("a quoted display name must be followed by <uri>", "bad_address")
    elif nxt != "<":
        # either `tokens <uri>` or a bare addr-spec, which ends at ';', ',' or white space
        lt = scanner.text.find("<", scanner.pos)
        if lt >= 0:
            candidate = scanner.text[scanner.pos : lt].strip()
            if candidate and _DISPLAY_TOKENS.fullmatch(candidate):
                display = candidate
                scanner.pos = lt
        if scanner.peek() != "<":
            end = scanner.pos
            text = scanner.text
            while end < len(text) and text[end] not in ";, \t":
                end += 1
            uri_text = text[scanner.pos : end]
            if not uri_text:
                raise HeaderError("missing address", "bad_address")
            scanner.pos = end
            uri = _address_uri(uri_text)
            if isinstance(uri, SipUri) and uri.headers:
                raise HeaderError("an addr-spec with headers must be enclosed in <>", "bad_address")
            return NameAddress(uri, None, scanner.params())
    scanner.expect("<", "before the address")
    end = scanner.text.find(">", scanner.pos)
    if end < 0:
        raise HeaderError("missing '>'", "bad_address")
    uri = _address_uri(scanner.text[scanner.pos : end])  # white space inside <> is a URI error
    scanner.pos = end + 1
    return NameAddress(uri, display, scanner.params())


def _fast_name_address(value: str) -> NameAddress | None:
    fast = _FAST_ADDRESS.fullmatch(value)
    if fast is None:
        return None
    quoted, token, uri_text, params = fast.groups()
    try:
        uri = parse_uri(uri_text)
    except UriError:
        return None
    return NameAddress(uri, quoted if quoted is not None else token, _fast_params(params))


def parse_name_address(value: str) -> NameAddress:
    """One name-addr or addr-spec (From, To, Refer-To, Referred-By)."""
    fast = _fast_name_address(value)
    if fast is not None:
        return fast
    scanner = _Scanner(value)
    address = _name_address(scanner)
    if not scanner.at_end():
        raise HeaderError(f"junk after address: {value[scanner.pos:][:40]!r}", "bad_address")
    return address


def parse_name_addresses(value: str) -> list[NameAddress]:
    """A comma-separated list of addresses (Contact, Route, Record-Route)."""
    if "," not in value:
        fast = _fast_name_address(value)
        if fast is not None:
            return [fast]
    return _comma_list(value, _name_address, "bad_address")


# --- CSeq, Call-ID ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    scanner = _Scanner(value)
    number_text = scanner.match(re.compile(r"[0-9]+"), "a CSeq number")
    if len(number_text) > 10 or int(number_text) > MAX_CSEQ:
        raise HeaderError("CSeq number out of range", "bad_cseq")
    method = scanner.match(_METHOD, "a CSeq method")
    if not scanner.at_end():
        raise HeaderError("junk after CSeq method", "bad_cseq")
    return CSeq(int(number_text), method)


def parse_call_id(value: str) -> str:
    value = value.strip()
    if not _CALL_ID.fullmatch(value):
        raise HeaderError("malformed Call-ID", "bad_call_id")
    return value


def is_token(text: str) -> bool:
    return _TOKEN.fullmatch(text) is not None


def display_of(address: NameAddress) -> str:
    """What to show for an address: its display name, else its user part, else the URI."""
    if address.display_name:
        return address.display_name
    uri = address.uri
    if isinstance(uri, SipUri) and uri.user:
        return uri.user
    return str(uri)

