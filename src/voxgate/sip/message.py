"""SIP requests and responses (RFC 3261 §7, §20, §25): parse, serialise, frame on streams, answer errors.

    message = parse_message(datagram)              # Request | Response; raises a MessageError
    message.via[0].branch, message.cseq, message.from_.tag
    reply = make_response(message, 200, to_tag=tag, headers=[("Contact", "<sip:bot@192.0.2.1>")])
    sock.sendto(reply.to_bytes(), addr)

    stream = MessageStream()                       # TCP / TLS: Content-Length framing
    stream.receive_data(chunk)
    while (item := stream.next_message()) is not None:
        ...                                        # Request | Response | KeepAlive

Errors are typed by what the receiver can do (RFC 3261 §16.3, §18, §21.4):
- `BadRequest`: a request that can be answered (its Via was readable): send `error.response()` (400, or
  505 for another SIP version) and carry on;
- `MalformedMessage`: nothing to answer (a broken response, or no usable Via): drop it and count it;
- `FramingError`: a stream whose message boundaries are lost (no Content-Length, oversized): close it.
All three carry a short stable `code` for counters. Every size is bounded (`MessageLimits`).

Header names are case-insensitive and have compact forms (`v` for Via, `i` for Call-ID, ...); lookups
take any spelling and serialisation writes the full canonical name. Folded lines become one space.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from voxgate.sip.errors import SipError
from voxgate.sip.headers import (
    CSeq,
    HeaderError,
    NameAddress,
    Via,
    is_token,
    parse_call_id,
    parse_cseq,
    parse_name_address,
    parse_name_addresses,
    parse_via,
    split_list,
)
from voxgate.sip.uri import SipUri, Uri, UriError, parse_uri

__all__ = [
    "COMPACT_FORMS",
    "BadRequest",
    "FramingError",
    "Headers",
    "KeepAlive",
    "MalformedMessage",
    "Message",
    "MessageError",
    "MessageLimits",
    "MessageStream",
    "Request",
    "Response",
    "is_keepalive",
    "make_response",
    "new_request",
    "parse_message",
    "reason_phrase",
]

SIP_VERSION = "SIP/2.0"

COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}
_SPELLINGS = [
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires",
    "From", "In-Reply-To", "Max-Forwards", "MIME-Version", "Min-Expires", "Min-SE", "Organization",
    "P-Asserted-Identity", "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require",
    "RAck", "Reason", "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After",
    "Route", "RSeq", "Server", "Session-Expires", "Subject", "Subscription-State", "Supported",
    "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate", "Allow-Events",
]
_CANONICAL = {name.lower(): name for name in _SPELLINGS} | {k: v for k, v in COMPACT_FORMS.items()}
# Headers that may appear once: a second copy is a 400 (RFC 4475 multi01, mcl01)
_SINGLE = frozenset({"call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type"})
_REQUIRED = ("Call-ID", "CSeq", "From", "To", "Via")

_REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 380: "Alternative Service", 400: "Bad Request", 401: "Unauthorized",
    402: "Payment Required", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout", 410: "Gone",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    484: "Address Incomplete", 485: "Ambiguous", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_BREAK = re.compile(r"\r?\n")
_VERSION = re.compile(r"SIP/([0-9]+)\.([0-9]+)", re.IGNORECASE)
_STATUS = re.compile(r"[1-6][0-9]{2}")
_REASON = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")  # TEXT-UTF8 plus SP and HT
_DIGITS = re.compile(r"[0-9]+")
_SIP_DATE = re.compile(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                       r"[0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT")


def reason_phrase(status: int) -> str:
    return _REASONS.get(status, "")


@dataclass(frozen=True)
class MessageLimits:
    """Bounds on what one message may cost. A UDP datagram cannot exceed 65 535 bytes; real INVITEs are
    1-4 kB, so the head and body bounds leave room for long Via chains and large SDP bodies."""

    max_message_bytes: int = 65_535
    max_head_bytes: int = 16_384
    max_headers: int = 128
    max_body_bytes: int = 32_768


DEFAULT_LIMITS = MessageLimits()


class MessageError(SipError):
    """A message this stack refuses."""

    default_code = "bad_message"


class MalformedMessage(MessageError):
    """Nothing to answer: drop the datagram (or the stream message) and count it."""


class FramingError(MessageError):
    """A stream that cannot be followed any further: close the connection."""


class BadRequest(MessageError):
    """A request that can be answered with `status` (400, or 505 for another SIP version)."""

    def __init__(self, message: str, code: str, *, status: int, method: str, headers: Headers) -> None:
        super().__init__(message, code)
        self.status = status
        self.method = method
        self.headers = headers  # as received: the response copies Via, From, To, Call-ID and CSeq

    def response(self, to_tag: str | None = None) -> Response:
        """The answer to send back: the status with the reason in a Warning-free reason phrase."""
        reason = reason_phrase(self.status) + ("" if self.status != 400 else f" ({self.code})")
        return _answer(self.headers, self.status, reason, to_tag=to_tag)


class KeepAlive:
    """A CRLF keep-alive on a stream (RFC 5626 §3.5.1): a double CRLF ping is answered with one CRLF."""

    __slots__ = ("ping",)

    def __init__(self, ping: bool) -> None:
        self.ping = ping


def canonical_name(name: str) -> str:
    return _CANONICAL.get(name.lower(), name)


_KEYS: dict[str, str] = {}  # the names code looks up (a small, fixed set) → their lowercase canonical key


def _key(name: str) -> str:
    key = _KEYS.get(name)
    if key is None:
        key = canonical_name(name).lower()
        if len(_KEYS) < 256:  # bounded, should a caller look up names it read off the wire
            _KEYS[name] = key
    return key


class Headers:
    """Header fields in order, with case-insensitive lookup by full or compact name. One entry per
    header line; `values` splits comma-separated lists across lines (Via, Contact, Allow, ...)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        name = canonical_name(name)
        self._items.append((name.lower(), name, str(value)))

    def set(self, name: str, value: str) -> None:
        """Replace every line of `name` with one line (kept where the first one was)."""
        name = canonical_name(name)
        key = name.lower()
        for index, item in enumerate(self._items):
            if item[0] == key:
                self._items[index] = (key, name, str(value))
                self._items = [entry for i, entry in enumerate(self._items) if i <= index or entry[0] != key]
                return
        self._items.append((key, name, str(value)))

    def remove(self, name: str) -> None:
        key = _key(name)
        self._items = [item for item in self._items if item[0] != key]

    def get(self, name: str) -> str | None:
        key = _key(name)
        for item in self._items:
            if item[0] == key:
                return item[2]
        return None

    def get_all(self, name: str) -> list[str]:
        key = _key(name)
        return [item[2] for item in self._items if item[0] == key]

    def values(self, name: str) -> list[str]:
        """Every element of a list-valued header, across all its lines, in order."""
        out: list[str] = []
        for line in self.get_all(name):
            out.extend(split_list(line))
        return out

    def count(self, name: str) -> int:
        key = _key(name)
        return sum(1 for item in self._items if item[0] == key)

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((name, value) for _, name, value in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


T = TypeVar("T")


class _Message:
    """What requests and responses share: headers, body, and typed views of the core header fields."""

    __slots__ = ("_typed", "body", "headers")

    def __init__(self, headers: Headers, body: bytes) -> None:
        self.headers = headers
        self.body = body
        self._typed: dict[str, tuple[str | None, Any]] = {}

    def _view(self, name: str, parse: Callable[[str], T], *, listed: bool = False) -> T | None:
        """A header parsed once per raw value (a later `headers.set` is seen on the next read)."""
        if listed:
            raw = ", ".join(self.headers.get_all(name)) or None
        else:
            raw = self.headers.get(name)
        cached = self._typed.get(name)
        if cached is not None and cached[0] == raw:
            return cached[1]  # type: ignore[no-any-return]
        value = parse(raw) if raw is not None else None
        self._typed[name] = (raw, value)
        return value

    @property
    def via(self) -> list[Via]:
        return self._view("Via", parse_via, listed=True) or []

    @property
    def from_(self) -> NameAddress:
        value = self._view("From", parse_name_address)
        if value is None:
            raise HeaderError("no From header", "missing_header")
        return value

    @property
    def to(self) -> NameAddress:
        value = self._view("To", parse_name_address)
        if value is None:
            raise HeaderError("no To header", "missing_header")
        return value

    @property
    def call_id(self) -> str:
        value = self._view("Call-ID", parse_call_id)
        if value is None:
            raise HeaderError("no Call-ID header", "missing_header")
        return value

    @property
    def cseq(self) -> CSeq:
        value = self._view("CSeq", parse_cseq)
        if value is None:
            raise HeaderError("no CSeq header", "missing_header")
        return value

    @property
    def contacts(self) -> list[NameAddress]:
        """Contact addresses; [] when absent or `*` (a REGISTER removing every binding)."""
        if (self.headers.get("Contact") or "").strip() == "*":
            return []
        return self._view("Contact", parse_name_addresses, listed=True) or []

    @property
    def record_route(self) -> list[NameAddress]:
        return self._view("Record-Route", parse_name_addresses, listed=True) or []

    @property
    def route(self) -> list[NameAddress]:
        return self._view("Route", parse_name_addresses, listed=True) or []

    @property
    def content_type(self) -> str | None:
        """The media type, lowercased, without parameters (`application/sdp`)."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value else None

    def _write(self, start_line: str) -> bytes:
        lines = [start_line]
        lines.extend(f"{name}: {value}" for key, name, value in self.headers._items if key != "content-length")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


class Request(_Message):
    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: Uri, headers: Headers, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri

    @property
    def max_forwards(self) -> int | None:
        return self._view("Max-Forwards", _max_forwards)

    def to_bytes(self) -> bytes:
        return self._write(f"{self.method} {self.uri} {SIP_VERSION}")

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(_Message):
    __slots__ = ("reason", "status")

    def __init__(self, status: int, reason: str, headers: Headers, body: bytes = b"") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = reason

    @property
    def provisional(self) -> bool:
        return self.status < 200

    def to_bytes(self) -> bytes:
        return self._write(f"{SIP_VERSION} {self.status} {self.reason}")

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


Message = Request | Response


def _max_forwards(value: str) -> int:
    value = value.strip()
    if not _DIGITS.fullmatch(value) or len(value) > 5 or int(value) > 255:
        raise HeaderError("Max-Forwards must be 0-255", "bad_max_forwards")
    return int(value)


def _content_length(value: str) -> int:
    value = value.strip()
    if not _DIGITS.fullmatch(value) or len(value) > 10:
        raise HeaderError("malformed Content-Length", "bad_content_length")
    return int(value)


# --- parsing ---------------------------------------------------------------------------------------------


def is_keepalive(data: bytes) -> bool:
    """A datagram of bare CRLFs (a NAT keep-alive): ignore it, never answer."""
    return not data.strip(b"\r\n")


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    end = _HEAD_END.search(data)
    if end is None:
        raise MalformedMessage("no empty line after the headers (truncated?)", "truncated")
    return data[: end.start()], data[end.end() :]


def _header_lines(head: str) -> tuple[str, list[tuple[str, str]], HeaderError | None]:
    """The start line, the (name, value) pairs with folded lines joined by one space, and the first
    malformed line's error (the lines after it are still read: they may hold the Via to answer)."""
    lines = head.replace("\r\n", "\n").split("\n")  # CRLF, or the bare LF some stacks send
    start = lines[0]
    fields: list[tuple[str, str]] = []
    problem: HeaderError | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not fields:
                problem = problem or HeaderError("a continuation line before any header", "bad_folding")
                continue
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not is_token(name):
            problem = problem or HeaderError(f"malformed header line {line[:40]!r}", "bad_header_line")
            continue
        fields.append((name, value.strip()))
    return start, fields, problem


def parse_message(data: bytes, limits: MessageLimits = DEFAULT_LIMITS, *, stream: bool = False) -> Message:
    """One message from a datagram (or from bytes MessageStream framed). Raises a MessageError subtype.

    On a datagram the body is what follows the headers, cut at Content-Length (extra octets are ignored,
    RFC 3261 §18.3); a Content-Length past the end is an error (RFC 4475 clerr)."""
    if len(data) > limits.max_message_bytes:
        raise MalformedMessage("message too large", "too_large")
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: CRLFs before the start line are ignored
    head_bytes, rest = _split_head(data)
    if len(head_bytes) > limits.max_head_bytes:
        raise MalformedMessage("header section too large", "head_too_large")
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedMessage("header section is not UTF-8", "not_utf8") from exc
    start = _LINE_BREAK.split(head, maxsplit=1)[0]
    if start.startswith("SIP/") or start[:4].upper() == "SIP/":
        return _parse_response(head, rest, limits, stream)
    return _parse_request(head, rest, limits, stream)


def _framed_body(headers: Headers, rest: bytes, limits: MessageLimits, stream: bool) -> bytes:
    raw = headers.get("Content-Length")
    if raw is None:
        if stream:
            return b""
        length = len(rest)
    else:
        length = _content_length(raw)
        if length > len(rest):
            raise HeaderError("Content-Length is larger than the message", "content_length_mismatch")
    if length > limits.max_body_bytes:
        raise HeaderError("body too large", "body_too_large")
    return rest[:length]


def _check_headers(headers: Headers, limits: MessageLimits) -> Headers:
    if len(headers) > limits.max_headers:
        raise HeaderError("too many header lines", "too_many_headers")
    seen: set[str] = set()
    for key, _, _ in headers._items:
        if key in _SINGLE:
            if key in seen:
                raise HeaderError(f"more than one {canonical_name(key)} header", "repeated_header")
            seen.add(key)
    for name in _REQUIRED:
        if headers.get(name) is None:
            raise HeaderError(f"missing {name} header", "missing_header")
    return headers


def _validate(message: _Message) -> None:
    """Parse every header the transaction and dialog layers read, so their errors surface here."""
    if not message.via:
        raise HeaderError("missing Via header", "missing_header")
    message.from_, message.to, message.call_id, message.contacts  # noqa: B018 - parsed for validation
    message.route, message.record_route  # noqa: B018
    date = message.headers.get("Date")
    if date is not None and not _SIP_DATE.fullmatch(date):
        raise HeaderError("Date must be an RFC 1123 date in GMT", "bad_date")  # RFC 4475 baddate


def _parse_request(head: str, rest: bytes, limits: MessageLimits, stream: bool) -> Request:
    start, fields, problem = _header_lines(head)
    parts = start.split(" ")
    method = parts[0]
    if not is_token(method):
        raise MalformedMessage(f"malformed request line {start[:60]!r}", "bad_request_line")
    # From here on the request is answerable if its Via is readable.
    headers = Headers(fields)
    try:
        if len(parts) != 3 or not all(parts):
            # RFC 4475 lwsstart, trws, lwsruri: exactly three parts separated by single spaces
            raise HeaderError(f"malformed request line {start[:60]!r}", "bad_request_line")
        _, uri_text, version = parts
        version_match = _VERSION.fullmatch(version)
        if version_match is None:
            raise HeaderError(f"malformed SIP version {version[:20]!r}", "bad_request_line")
        if version_match.groups() != ("2", "0"):
            raise _VersionNotSupported()
        if problem is not None:
            raise problem
        _check_headers(headers, limits)
        try:
            uri = parse_uri(uri_text)
        except UriError as exc:
            raise HeaderError(f"bad Request-URI: {exc}", exc.code) from exc
        if isinstance(uri, SipUri) and uri.headers:
            raise HeaderError("headers in a Request-URI (RFC 3261 §19.1.5)", "bad_uri")  # RFC 4475 escruri
        body = _framed_body(headers, rest, limits, stream)
        request = Request(method, uri, headers, body)
        _validate(request)
        request.max_forwards  # noqa: B018
        if request.cseq.method != method:
            raise HeaderError("CSeq method does not match the request method", "cseq_mismatch")
        return request
    except _VersionNotSupported as exc:
        raise _bad_request(505, "bad_version", "SIP version not supported", method, headers) from exc
    except HeaderError as exc:
        raise _bad_request(400, exc.code, str(exc), method, headers) from exc


class _VersionNotSupported(Exception):
    pass


def _bad_request(status: int, code: str, text: str, method: str, headers: Headers) -> MessageError:
    """A BadRequest when the top Via can be read (someone to answer), else MalformedMessage."""
    try:
        top = headers.get("Via")
        if top is None or method == "ACK":  # an ACK is never answered
            raise HeaderError("no usable Via")
        parse_via(top)
    except HeaderError:
        return MalformedMessage(text, code)
    return BadRequest(text, code, status=status, method=method, headers=headers)


def _parse_response(head: str, rest: bytes, limits: MessageLimits, stream: bool) -> Response:
    start, fields, problem = _header_lines(head)
    version, _, tail = start.partition(" ")
    status_text, _, reason = tail.partition(" ")
    if _VERSION.fullmatch(version) is None or version.upper() != SIP_VERSION:
        raise MalformedMessage("unsupported SIP version in a response", "bad_status_line")
    if not _STATUS.fullmatch(status_text) or not _REASON.fullmatch(reason):
        raise MalformedMessage(f"malformed status line {start[:60]!r}", "bad_status_line")
    try:
        if problem is not None:
            raise problem
        headers = _check_headers(Headers(fields), limits)
        response = Response(int(status_text), reason, headers, _framed_body(headers, rest, limits, stream))
        _validate(response)
        response.cseq  # noqa: B018
        return response
    except HeaderError as exc:
        raise MalformedMessage(str(exc), exc.code) from exc


# --- building --------------------------------------------------------------------------------------------


def _answer(request_headers: Headers, status: int, reason: str | None, *, to_tag: str | None,
            headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
            content_type: str | None = None) -> Response:
    """RFC 3261 §8.2.6.2: copy Via (all, in order), From, Call-ID and CSeq; copy To and add the tag."""
    out = Headers()
    for via in request_headers.get_all("Via"):
        out.add("Via", via)
    to = request_headers.get("To") or ""
    if to_tag is not None and status != 100:
        try:
            if parse_name_address(to).tag is None:
                to = f"{to};tag={to_tag}"
        except HeaderError:
            pass  # a To we cannot read is copied as it came
    copied: list[tuple[str, str | None]] = [("From", request_headers.get("From")), ("To", to),
                                            ("Call-ID", request_headers.get("Call-ID")),
                                            ("CSeq", request_headers.get("CSeq"))]
    for name, copy in copied:
        if copy is not None:
            out.add(name, copy)
    for name, value in headers:
        out.add(name, value)
    if body and (content_type is not None or "Content-Type" not in out):
        out.set("Content-Type", content_type or "application/sdp")
    return Response(status, reason if reason is not None else reason_phrase(status), out, body)


def make_response(request: Request, status: int, reason: str | None = None, *, to_tag: str | None = None,
                  headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                  content_type: str | None = None) -> Response:
    """A response to `request`. Pass the dialog's local tag as `to_tag` (ignored on 100 Trying, and when
    the To already has a tag: an in-dialog request). For 18x/2xx to INVITE, also copy Record-Route."""
    response = _answer(request.headers, status, reason, to_tag=to_tag, headers=headers, body=body,
                       content_type=content_type)
    if request.method == "INVITE" and 100 < status < 300:
        for value in request.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", value)
    return response


def new_request(method: str, uri: Uri, *, via: Via, from_: NameAddress, to: NameAddress, call_id: str,
                cseq: int, contact: NameAddress | None = None, route: Iterable[NameAddress] = (),
                max_forwards: int = 70, headers: Iterable[tuple[str, str]] = (), body: bytes = b"",
                content_type: str | None = None) -> Request:
    """A request with the header fields RFC 3261 §8.1.1 requires, in the usual order."""
    out = Headers([("Via", str(via)), ("Max-Forwards", str(max_forwards))])
    for hop in route:
        out.add("Route", str(hop))
    out.add("From", str(from_))
    out.add("To", str(to))
    out.add("Call-ID", call_id)
    out.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        out.add("Contact", str(contact))
    for name, value in headers:
        out.add(name, value)
    if body and (content_type is not None or "Content-Type" not in out):
        out.set("Content-Type", content_type or "application/sdp")
    return Request(method, uri, out, body)


# --- stream framing --------------------------------------------------------------------------------------


_CONTENT_LENGTH_LINE = re.compile(rb"^(?:content-length|l)[ \t]*:(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


class MessageStream:
    """Messages out of a TCP or TLS byte stream, framed by Content-Length (RFC 3261 §18.3).

    A message that frames but does not parse raises BadRequest or MalformedMessage and the stream goes on
    with the next one; FramingError means the boundaries are lost and the connection must close."""

    def __init__(self, limits: MessageLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._buffer = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > self.limits.max_message_bytes + self.limits.max_head_bytes:
            raise FramingError("receive buffer overflow", "buffer_overflow")

    def next_message(self) -> Message | KeepAlive | None:
        """The next complete message, a keep-alive, or None until more bytes arrive."""
        buffer = self._buffer
        if buffer[:1] in (b"\r", b"\n"):
            if buffer.startswith(b"\r\n\r\n"):
                del buffer[:4]
                return KeepAlive(ping=True)
            if buffer in (b"\r", b"\r\n", b"\r\n\r"):
                return None  # maybe the start of a ping: wait for the rest
            stripped = buffer.lstrip(b"\r\n")
            del buffer[: len(buffer) - len(stripped)]
            return KeepAlive(ping=False)
        end = _HEAD_END.search(buffer)
        if end is None:
            if len(buffer) > self.limits.max_head_bytes:
                raise FramingError("header section too large", "head_too_large")
            return None
        head = bytes(buffer[: end.start()])
        lengths = [value.strip(b" \t") for value in _CONTENT_LENGTH_LINE.findall(head)]
        if len(lengths) > 1:
            raise FramingError("more than one Content-Length", "repeated_header")
        if lengths and not (lengths[0].isdigit() and len(lengths[0]) <= 10):
            raise FramingError("malformed Content-Length", "bad_content_length")
        length = int(lengths[0]) if lengths else 0  # RFC 3261 requires it on streams; absent reads as 0
        if length > self.limits.max_body_bytes:
            raise FramingError("body too large", "body_too_large")
        total = end.end() + length
        if len(buffer) < total:
            return None
        data = bytes(buffer[:total])
        del buffer[:total]
        return parse_message(data, self.limits, stream=True)
